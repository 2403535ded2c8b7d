// Sealing of integration secrets: what seals opens, only with the right key and the same context; any change to
// the stored bytes is detected; keys rotate; and SEALING_KEYS mistakes are named without repeating key material.
import { inspect } from "node:util";
import { generateSealingKey, needsReseal, open, parseSealingKeys, seal, SealError, type SealContext, type Sealed } from "../../lib/sealing.ts";

const keyA = generateSealingKey();
const keyB = generateSealingKey();
const keys = parseSealingKeys(`current:${keyA}`);
const context: SealContext = {
  orgId: "6f1c2b0e-3a4d-4e5f-8a9b-0c1d2e3f4a5b",
  integrationId: "0b9e8d7c-6b5a-4f3e-9d2c-1b0a9f8e7d6c",
  provider: "notion",
  purpose: "access",
};

/** The SealError `promise` rejects with; fails the test if it resolves or rejects with something else. */
async function sealErrorOf(promise: Promise<string>): Promise<SealError> {
  const error: unknown = await promise.then(
    () => new Error("expected the seal not to open"),
    (reason: unknown) => reason,
  );
  if (!(error instanceof SealError)) throw error;
  return error;
}

/** A copy of `bytes` with one bit of the byte at `index` flipped. */
function flipped(bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = copy[index]! ^ 0x01;
  return copy;
}

/** The message `parseSealingKeys(value)` throws. */
function parseError(value: string): string {
  try {
    parseSealingKeys(value);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("expected parseSealingKeys to throw");
}

describe("seal and open", () => {
  test.each([
    ["an ASCII token", "secret_4fJk2LmNpQrStUvWxYz0123456789abcdef"],
    ["Unicode", "clé 🔑 ключ 鍵 \u0000 end"],
    ["the empty string", ""],
  ])("round trip: %s opens to the same text", async (_name, plaintext) => {
    const sealed = await seal(keys, plaintext, context);
    expect(sealed.keyId).toBe("current");
    expect(sealed.nonce).toHaveLength(24);
    expect(sealed.ciphertext).toHaveLength(Buffer.byteLength(plaintext, "utf8") + 16);
    await expect(open(keys, sealed, context)).resolves.toBe(plaintext);
  });

  test("two seals of the same text differ (random nonce) and both open", async () => {
    const first = await seal(keys, "same token", context);
    const second = await seal(keys, "same token", context);
    expect(first.nonce.equals(second.nonce)).toBe(false);
    expect(first.ciphertext.equals(second.ciphertext)).toBe(false);
    await expect(open(keys, first, context)).resolves.toBe("same token");
    await expect(open(keys, second, context)).resolves.toBe("same token");
  });

  test("a plaintext that is not well-formed Unicode is refused rather than altered", async () => {
    await expect(seal(keys, "half a pair \uD83D", context)).rejects.toThrow(TypeError);
  });
});

describe("open refuses", () => {
  test("the wrong key under the same key id: TAMPERED", async () => {
    const sealed = await seal(keys, "token", context);
    const error = await sealErrorOf(open(parseSealingKeys(`current:${keyB}`), sealed, context));
    expect(error.code).toBe("TAMPERED");
  });

  test("an unknown key id: UNKNOWN_KEY", async () => {
    const sealed = await seal(keys, "token", context);
    const error = await sealErrorOf(open(parseSealingKeys(`other:${keyA}`), sealed, context));
    expect(error.code).toBe("UNKNOWN_KEY");
    expect(error.message).toContain('"current"');
  });

  test.each([
    ["orgId", { orgId: "a2b3c4d5-e6f7-4a8b-9c0d-1e2f3a4b5c6d" }],
    ["integrationId", { integrationId: "c4d5e6f7-a8b9-4c0d-8e1f-2a3b4c5d6e7f" }],
    ["provider", { provider: "confluence" }],
    ["purpose", { purpose: "refresh" }],
  ])("a ciphertext moved to another %s: TAMPERED", async (_field, change) => {
    const sealed = await seal(keys, "token", context);
    const error = await sealErrorOf(open(keys, sealed, { ...context, ...change }));
    expect(error.code).toBe("TAMPERED");
  });

  test("a relabelled key id, even naming the very same key bytes: TAMPERED", async () => {
    const sealed = await seal(keys, "token", context);
    const twoNames = parseSealingKeys(`current:${keyA},alias:${keyA}`);
    const error = await sealErrorOf(open(twoNames, { ...sealed, keyId: "alias" }, context));
    expect(error.code).toBe("TAMPERED");
  });

  test("a flipped byte in the ciphertext (first, middle, tag): TAMPERED", async () => {
    const sealed = await seal(keys, "a token of some length", context);
    for (const index of [0, 10, sealed.ciphertext.length - 1]) {
      const error = await sealErrorOf(open(keys, { ...sealed, ciphertext: flipped(sealed.ciphertext, index) }, context));
      expect(error.code).toBe("TAMPERED");
    }
  });

  test("a flipped byte in the nonce (first, last): TAMPERED", async () => {
    const sealed = await seal(keys, "token", context);
    for (const index of [0, 23]) {
      const error = await sealErrorOf(open(keys, { ...sealed, nonce: flipped(sealed.nonce, index) }, context));
      expect(error.code).toBe("TAMPERED");
    }
  });

  test("a truncated ciphertext or nonce, down to nothing: TAMPERED", async () => {
    const sealed = await seal(keys, "token", context);
    const cases: Sealed[] = [
      { ...sealed, ciphertext: sealed.ciphertext.subarray(0, sealed.ciphertext.length - 1) },
      { ...sealed, ciphertext: sealed.ciphertext.subarray(1) },
      { ...sealed, ciphertext: sealed.ciphertext.subarray(0, 15) },
      { ...sealed, ciphertext: Buffer.alloc(0) },
      { ...sealed, nonce: sealed.nonce.subarray(0, 23) },
      { ...sealed, nonce: Buffer.alloc(0) },
    ];
    for (const truncated of cases) {
      const error = await sealErrorOf(open(keys, truncated, context));
      expect(error.code).toBe("TAMPERED");
    }
  });

  test("error messages hold no plaintext, key or ciphertext", async () => {
    const plaintext = "notion-secret-plaintext-token";
    const sealed = await seal(keys, plaintext, context);
    const errors = [
      await sealErrorOf(open(parseSealingKeys(`current:${keyB}`), sealed, context)),
      await sealErrorOf(open(keys, sealed, { ...context, purpose: "refresh" })),
      await sealErrorOf(open(parseSealingKeys(`other:${keyA}`), sealed, context)),
    ];
    for (const { message, stack } of errors) {
      for (const text of [message, stack ?? ""]) {
        for (const secret of [plaintext, keyA, keyB, sealed.ciphertext.toString("base64"), sealed.ciphertext.toString("hex")]) {
          expect(text).not.toContain(secret);
        }
      }
    }
  });
});

describe("rotation", () => {
  test("sealed with the old key: opens with [new, old], needs a reseal, and re-sealing uses the new key id", async () => {
    const before = parseSealingKeys(`2024:${keyA}`);
    const sealed = await seal(before, "token", context);
    expect(needsReseal(before, sealed)).toBe(false);

    const after = parseSealingKeys(`2025:${keyB},2024:${keyA}`);
    expect(after.currentKeyId).toBe("2025");
    await expect(open(after, sealed, context)).resolves.toBe("token");
    expect(needsReseal(after, sealed)).toBe(true);

    const resealed = await seal(after, await open(after, sealed, context), context);
    expect(resealed.keyId).toBe("2025");
    expect(needsReseal(after, resealed)).toBe(false);
    await expect(open(after, resealed, context)).resolves.toBe("token");
    // Once the old key is dropped, only the re-sealed value still opens.
    const onlyNew = parseSealingKeys(`2025:${keyB}`);
    await expect(open(onlyNew, resealed, context)).resolves.toBe("token");
    expect((await sealErrorOf(open(onlyNew, sealed, context))).code).toBe("UNKNOWN_KEY");
  });
});

describe("parseSealingKeys", () => {
  test("accepts standard and url-safe base64, with or without padding, and spaces around entries", () => {
    const bytes = Buffer.alloc(32, 0xfb); // encodes with + and / (standard) or - and _ (url-safe)
    const standard = bytes.toString("base64");
    const urlSafe = bytes.toString("base64url");
    expect(standard).toMatch(/[+/]/);
    const parsed = parseSealingKeys(` a:${standard} , b.2_x-y:${urlSafe}, c:${standard.replace(/=+$/, "")},d:${urlSafe}=`);
    expect(parsed.currentKeyId).toBe("a");
    expect(parsed.keyIds).toEqual(["a", "b.2_x-y", "c", "d"]);
  });

  test("generateSealingKey gives distinct 32-byte base64 keys that parse", () => {
    const key = generateSealingKey();
    expect(Buffer.from(key, "base64")).toHaveLength(32);
    expect(key).not.toBe(generateSealingKey());
    expect(parseSealingKeys(`k:${key}`).keyIds).toEqual(["k"]);
  });

  test("logging or serializing parsed keys shows key ids, never key material", () => {
    const parsed = parseSealingKeys(`current:${keyA}`);
    const hex = Buffer.from(keyA, "base64").toString("hex");
    for (const shown of [inspect(parsed, { depth: null, showHidden: true }), JSON.stringify(parsed)]) {
      expect(shown).toContain("current");
      expect(shown).not.toContain(keyA);
      expect(shown).not.toContain(hex);
    }
  });

  const short = Buffer.alloc(16, 7).toString("base64");
  const long = Buffer.alloc(33, 7).toString("base64");
  test.each([
    ["empty", "", /must be comma-separated keyId:base64key entries/, []],
    ["an empty entry", `a:${keyA},`, /entry 2 is empty/, [keyA]],
    ["an entry without a colon", `a:${keyA},${keyB}`, /entry 2 must be keyId:base64key/, [keyA, keyB]],
    ["bad base64", `a:${keyA.slice(0, 20)}*${keyA.slice(21)}`, /entry 1's key is not base64/, [keyA.slice(0, 20), keyA.slice(21)]],
    ["mixed base64 alphabets", `a:+${keyA.slice(1, 42)}_`, /entry 1's key is not base64/, [keyA.slice(1, 42)]],
    ["a key too short", `a:${short}`, /entry 1's key must be 32 bytes, not 16/, [short]],
    ["a key too long", `a:${keyA},b:${long}`, /entry 2's key must be 32 bytes, not 33/, [keyA, long]],
    ["a duplicate id", `a:${keyA},b:${keyB},a:${keyB}`, /entries 1 and 3 have the same key id/, [keyA, keyB]],
    ["a bad id", `bad id!:${keyA}`, /entry 1 has an invalid key id/, [keyA, "bad id!"]],
    ["an empty id", `:${keyA}`, /entry 1 has an invalid key id/, [keyA]],
    ["an id over 64 characters", `${"k".repeat(65)}:${keyA}`, /entry 1 has an invalid key id/, [keyA, "k".repeat(65)]],
    ["key and id swapped", `${keyA}:a`, /entry 1 has an invalid key id/, [keyA]],
  ])("rejects %s, naming the problem without the key text", (_name, value, expected, secrets) => {
    const message = parseError(value);
    expect(message).toMatch(expected);
    for (const secret of secrets) expect(message).not.toContain(secret);
  });
});
