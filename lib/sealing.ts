// Sealing of integration secrets (Notion and Confluence OAuth tokens) at rest, so that a database dump, a backup
// or a read through some other bug yields nothing usable without SEALING_KEYS, which only the application holds.
// - XChaCha20-Poly1305 (libsodium's IETF AEAD) with a fresh random 24-byte nonce per seal: nonces that large can
//   be drawn at random without any risk of reuse, so sealing needs no counter or state.
// - The associated data binds a ciphertext to its key id, organization, integration, provider and purpose: copied
//   to another row, organization or provider, or swapped between the access and the refresh token, it fails to
//   open instead of handing one tenant's token to another.
// - Keys carry ids, so they can rotate: the first key of SEALING_KEYS seals, all of them open, and needsReseal()
//   tells which stored secrets the worker's reseal_secrets task must seal again with the current key.
// - Opening never falls back to treating stored bytes as plaintext, and no error message holds a plaintext, a key
//   or a ciphertext.
import { randomBytes } from "node:crypto";
import sodium from "libsodium-wrappers";

const keyBytes = 32; // crypto_aead_xchacha20poly1305_ietf_KEYBYTES
const nonceBytes = 24; // crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
const tagBytes = 16; // crypto_aead_xchacha20poly1305_ietf_ABYTES
const keyIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
/** Tags the associated data's layout, so that a future layout can never be confused with this one. */
const adVersion = "quire.sealing.v1";

/** libsodium's WebAssembly initializes once, at first import; every operation awaits this same promise. */
const ready = sodium.ready;

/** Returns the key `keyId` names in `keys`; assigned by SealingKeys' static block, the one place that sees #keys. */
let keyFor: (keys: SealingKeys, keyId: string) => Uint8Array | undefined;

/**
 * Parsed SEALING_KEYS. Only {@link parseSealingKeys} makes one (the class is exported as a type only), and the key
 * bytes sit in a private field: logging or serializing the configuration shows the key ids and never a key.
 */
class SealingKeys {
  /** The id of the key {@link seal} uses: the first entry of SEALING_KEYS. */
  readonly currentKeyId: string;
  /** Every configured key id, the current one first. */
  readonly keyIds: readonly string[];
  readonly #keys: ReadonlyMap<string, Uint8Array>;

  static {
    keyFor = (keys, keyId) => keys.#keys.get(keyId);
  }

  constructor(keys: ReadonlyMap<string, Uint8Array>) {
    this.keyIds = [...keys.keys()];
    this.currentKeyId = this.keyIds[0]!;
    this.#keys = keys;
  }
}
export type { SealingKeys };

/** Where a sealed value belongs; bound to it as associated data, so it opens only in the same place. */
export interface SealContext {
  readonly orgId: string;
  readonly integrationId: string;
  /** The integration's provider, e.g. "notion" or "confluence". */
  readonly provider: string;
  /** Which secret of the integration this is, e.g. "access" or "refresh". */
  readonly purpose: string;
}

/**
 * The contexts of the secrets that are not integration tokens, in one place for the code that seals them and the
 * worker that re-seals them. The fields keep their integration names; the values say what they bind to.
 */
export const sealContexts = {
  /** A person's TOTP secret: bound to the person, so a sealing copied to another person does not open. */
  totp: (userId: string): SealContext => ({ orgId: "", integrationId: userId, provider: "totp", purpose: "mfa_secret" }),
  /** An organization's identity-provider client secret: bound to the organization. */
  oidc: (orgId: string): SealContext => ({ orgId, integrationId: orgId, provider: "oidc", purpose: "client_secret" }),
  /** An organization's own LLM API key: bound to the organization. */
  llm: (orgId: string): SealContext => ({ orgId, integrationId: orgId, provider: "llm", purpose: "api_key" }),
} as const;

/** A sealed value, as stored: key_id, *_nonce and *_ciphertext of app_private.integration_secrets. */
export interface Sealed {
  /** The id of the key that sealed it. */
  readonly keyId: string;
  /** 24 random bytes. */
  readonly nonce: Buffer;
  /** The ciphertext followed by its 16-byte Poly1305 tag. */
  readonly ciphertext: Buffer;
}

export type SealErrorCode = "UNKNOWN_KEY" | "TAMPERED";

/**
 * A sealed value that cannot be opened. UNKNOWN_KEY: its key id is not in SEALING_KEYS (a key removed before the
 * reseal_secrets task re-sealed everything with the current key). TAMPERED: authentication failed — the wrong key
 * under that id, altered or truncated bytes, or a value sealed for another context.
 */
export class SealError extends Error {
  readonly code: SealErrorCode;
  constructor(code: SealErrorCode, message: string) {
    super(message);
    this.name = "SealError";
    this.code = code;
  }
}

/** Decodes standard or url-safe base64 (padding optional, alphabets not mixed); null for anything else. */
function decodeBase64(text: string): Buffer | null {
  const body = text.replace(/={1,2}$/, "");
  if (body.length % 4 === 1 || (body !== text && text.length % 4 !== 0)) return null;
  if (!/^[A-Za-z0-9+/]*$/.test(body) && !/^[A-Za-z0-9_-]*$/.test(body)) return null;
  return Buffer.from(body, "base64");
}

/**
 * Parses SEALING_KEYS: comma-separated `keyId:base64key` entries (whitespace around entries ignored). The first
 * entry's key seals; the others only open, during a rotation. Key ids are 1–64 characters of A-Z a-z 0-9 . _ -
 * and unique; each key is 32 bytes in standard or url-safe base64 (see {@link generateSealingKey}). Throws an
 * Error whose message is a phrase for the operator that names the entry by position and never repeats its text.
 */
export function parseSealingKeys(value: string): SealingKeys {
  const entries = value.split(",").map((entry) => entry.trim());
  if (entries.length === 1 && entries[0] === "") throw new Error("must be comma-separated keyId:base64key entries");
  const keys = new Map<string, Uint8Array>();
  const positions = new Map<string, number>();
  entries.forEach((entry, index) => {
    const n = index + 1;
    if (entry === "") throw new Error(`entry ${n} is empty (expected keyId:base64key)`);
    const colon = entry.indexOf(":");
    if (colon < 0) throw new Error(`entry ${n} must be keyId:base64key`);
    const keyId = entry.slice(0, colon).trim();
    if (!keyIdPattern.test(keyId)) throw new Error(`entry ${n} has an invalid key id (must be 1–64 characters of A-Z a-z 0-9 . _ -)`);
    const earlier = positions.get(keyId);
    if (earlier !== undefined) throw new Error(`entries ${earlier} and ${n} have the same key id`);
    const key = decodeBase64(entry.slice(colon + 1).trim());
    if (!key) throw new Error(`entry ${n}'s key is not base64 (standard or url-safe)`);
    if (key.length !== keyBytes) throw new Error(`entry ${n}'s key must be ${keyBytes} bytes, not ${key.length}`);
    keys.set(keyId, new Uint8Array(key));
    positions.set(keyId, n);
  });
  return new SealingKeys(keys);
}

/** A fresh random 32-byte key in standard base64, for a SEALING_KEYS entry. */
export function generateSealingKey(): string {
  return randomBytes(keyBytes).toString("base64");
}

/** The associated data: a JSON array in a fixed order, which no two different contexts can share. */
function associatedData(keyId: string, context: SealContext): string {
  const { orgId, integrationId, provider, purpose } = context;
  return JSON.stringify([adVersion, keyId, orgId, integrationId, provider, purpose]);
}

/** Seals `plaintext` (well-formed Unicode, or the UTF-8 would not round-trip) with the current key for `context`. */
export async function seal(keys: SealingKeys, plaintext: string, context: SealContext): Promise<Sealed> {
  if (!plaintext.isWellFormed()) throw new TypeError("cannot seal a string that is not well-formed Unicode");
  await ready;
  const keyId = keys.currentKeyId;
  const nonce = randomBytes(nonceBytes);
  const ciphertext = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
    Buffer.from(plaintext, "utf8"),
    associatedData(keyId, context),
    null,
    nonce,
    keyFor(keys, keyId)!,
  );
  return { keyId, nonce, ciphertext: Buffer.from(ciphertext) };
}

/** Opens what {@link seal} sealed for the same `context`, with any configured key; throws {@link SealError}. */
export async function open(keys: SealingKeys, sealed: Sealed, context: SealContext): Promise<string> {
  const key = keyFor(keys, sealed.keyId);
  if (!key) throw new SealError("UNKNOWN_KEY", `sealed with key id ${JSON.stringify(sealed.keyId)}, which SEALING_KEYS does not hold`);
  const tampered = () => new SealError("TAMPERED", "cannot open: wrong key, altered data, or sealed for another context");
  if (sealed.nonce.length !== nonceBytes || sealed.ciphertext.length < tagBytes) throw tampered();
  await ready;
  let plaintext: Uint8Array;
  try {
    plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.ciphertext, associatedData(sealed.keyId, context), sealed.nonce, key);
  } catch {
    throw tampered();
  }
  return Buffer.from(plaintext).toString("utf8");
}

/** Whether `sealed` was sealed with a key other than the current one, and so should be sealed again. */
export function needsReseal(keys: SealingKeys, sealed: Pick<Sealed, "keyId">): boolean {
  return sealed.keyId !== keys.currentKeyId;
}
