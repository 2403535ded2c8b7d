// TOTP as authenticator apps compute it (RFC 6238's SHA-1 test vector), the ±1 step window at its exact edges, and
// recovery codes: their alphabet, their entropy's shape, and a digest that ignores case, spaces and hyphens.
import { Secret } from "otpauth";
import { looksLikeRecoveryCode, newRecoveryCodes, newTotpSecret, otpauthUri, recoveryCodeDigest, totpCode, totpStep } from "../../lib/totp.ts";

// RFC 6238 appendix B: the ASCII secret "12345678901234567890"; at T = 59 s the 8-digit SHA-1 code is 94287082.
const rfcSecret = Secret.fromLatin1("12345678901234567890").base32;

test("codes match RFC 6238's SHA-1 vectors (their last six digits)", () => {
  expect(totpCode(rfcSecret, 59_000)).toBe("287082");
  expect(totpCode(rfcSecret, 1_111_111_109_000)).toBe("081804");
  expect(totpCode(rfcSecret, 2_000_000_000_000)).toBe("279037");
});

test("a code is accepted one step either side of now, with the step it belongs to, and not two", () => {
  const now = 1_700_000_015_000; // 15 s into step 56666667
  const step = Math.floor(now / 30_000);
  for (const offset of [-1, 0, 1]) expect(totpStep(rfcSecret, totpCode(rfcSecret, now + offset * 30_000), now)).toBe(step + offset);
  for (const offset of [-2, 2]) expect(totpStep(rfcSecret, totpCode(rfcSecret, now + offset * 30_000), now)).toBeNull();
  // The edge: at the last millisecond of a step, the code of two steps back is already out.
  const last = (step + 1) * 30_000 - 1;
  expect(totpStep(rfcSecret, totpCode(rfcSecret, last - 60_000), last)).toBeNull();
  expect(totpStep(rfcSecret, totpCode(rfcSecret, last - 30_000), last)).toBe(step - 1);
});

test("anything but six digits is no code; spaces are ignored", () => {
  const now = 1_700_000_015_000;
  const code = totpCode(rfcSecret, now);
  expect(totpStep(rfcSecret, `${code.slice(0, 3)} ${code.slice(3)}`, now)).toBe(Math.floor(now / 30_000));
  for (const bad of ["", "12345", "1234567", "abcdef", `${code}\n1`, "１２３４５６"]) expect(totpStep(rfcSecret, bad, now)).toBeNull();
});

test("a fresh secret is 160 bits of base32 and the otpauth URI carries it with the issuer and account", () => {
  const secret = newTotpSecret();
  expect(secret).toMatch(/^[A-Z2-7]{32}$/);
  expect(newTotpSecret()).not.toBe(secret);
  const uri = new URL(otpauthUri(secret, "Quire", "ann@acme.example"));
  expect(uri.href.startsWith("otpauth://totp/Quire:ann%40acme.example?")).toBe(true);
  expect(uri.searchParams.get("secret")).toBe(secret);
});

test("recovery codes: ten distinct XXXX-XXXX-XXXX-XXXX of an unambiguous alphabet, digested alike however typed", () => {
  const codes = newRecoveryCodes();
  expect(codes).toHaveLength(10);
  expect(new Set(codes).size).toBe(10);
  for (const code of codes) {
    expect(code).toMatch(/^[ABCDEFGHJKMNPQRSTVWXYZ2-9]{4}(-[ABCDEFGHJKMNPQRSTVWXYZ2-9]{4}){3}$/);
    expect(looksLikeRecoveryCode(code)).toBe(true);
  }
  const code = codes[0]!;
  expect(recoveryCodeDigest(` ${code.toLowerCase().replaceAll("-", " ")} `).equals(recoveryCodeDigest(code))).toBe(true);
  expect(recoveryCodeDigest(codes[1]!).equals(recoveryCodeDigest(code))).toBe(false);
  expect(looksLikeRecoveryCode("123456")).toBe(false);
});
