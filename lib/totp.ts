// Time-based one-time passwords (RFC 6238) as authenticator apps make them: SHA-1, 6 digits, 30-second steps, a
// 20-byte secret. The otpauth package does the arithmetic; this module fixes the parameters, says which time step a
// code belongs to (the database refuses a step at or before the last one accepted, so a code works once), and makes
// the recovery codes.
import { createHash, randomBytes } from "node:crypto";
import { Secret, TOTP } from "otpauth";

/** Seconds per step: what every authenticator app assumes. */
export const totpPeriodSeconds = 30;
const digits = 6;
/** Steps either side of now a code may be from: ±1 absorbs a phone clock off by up to 30 s, and typing time. */
const driftSteps = 1;

const totpFor = (secretBase32: string, label = "", issuer = "") =>
  new TOTP({ issuer, label, algorithm: "SHA1", digits, period: totpPeriodSeconds, secret: Secret.fromBase32(secretBase32) });

/** A fresh secret (160 random bits, as RFC 4226 recommends), in base32 as apps take it. */
export const newTotpSecret = (): string => new Secret({ size: 20 }).base32;

/** The `otpauth://totp/…` URI an authenticator app scans as a QR code. */
export const otpauthUri = (secretBase32: string, issuer: string, accountName: string): string => totpFor(secretBase32, accountName, issuer).toString();

/**
 * The time step `code` is valid for, at `now` (ms since the epoch) within ±1 step; null for anything else,
 * including text that is not six digits (spaces are ignored).
 */
export function totpStep(secretBase32: string, code: string, now: number = Date.now()): number | null {
  const token = code.replace(/\s+/g, "");
  if (!/^\d{6}$/.test(token)) return null;
  const delta = totpFor(secretBase32).validate({ token, timestamp: now, window: driftSteps });
  return delta === null ? null : Math.floor(now / 1000 / totpPeriodSeconds) + delta;
}

/** The code for `now`: what an authenticator app would show (tests use it in place of a phone). */
export const totpCode = (secretBase32: string, now: number = Date.now()): string => totpFor(secretBase32).generate({ timestamp: now });

const recoveryAlphabet = "ABCDEFGHJKMNPQRSTVWXYZ23456789"; // no 0/O, 1/I/L, U: read back from paper without doubt
const recoveryLength = 16; // 16 of 30 symbols: 78 bits, beyond an offline search of the stored digests

/** Ten fresh recovery codes, `XXXX-XXXX-XXXX-XXXX`. */
export function newRecoveryCodes(count = 10): string[] {
  return Array.from({ length: count }, () => {
    // 256 % 30 ≠ 0: bytes at or above 240 are drawn again, so every symbol is equally likely.
    const symbols: string[] = [];
    while (symbols.length < recoveryLength) {
      for (const byte of randomBytes(recoveryLength)) {
        if (byte < 240 && symbols.length < recoveryLength) symbols.push(recoveryAlphabet[byte % 30]!);
      }
    }
    return symbols.join("").match(/.{4}/g)!.join("-");
  });
}

/** Whether `text` has the shape of a recovery code (case, spaces and hyphens aside) rather than a TOTP code. */
export const looksLikeRecoveryCode = (text: string): boolean => normalizedRecoveryCode(text).length === recoveryLength;

const normalizedRecoveryCode = (text: string) => text.toUpperCase().replace(/[\s-]+/g, "");

/** The SHA-256 the database keeps of a recovery code, case, spaces and hyphens aside. */
export const recoveryCodeDigest = (code: string): Buffer => createHash("sha256").update(normalizedRecoveryCode(code)).digest();
