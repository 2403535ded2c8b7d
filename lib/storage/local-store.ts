// STORAGE_BACKEND=local: objects are files under STORAGE_DIR, at their key's path. A put writes a temporary file
// beside the target and renames it into place, so an object is whole or absent, never half-written. Download URLs
// are this server's own (`/api/v1/files/download?token=…`, server/file-download.ts; the token rides in the query string, which access lines never show): the token names the key, the name and
// type to send and the expiry, under an HMAC-SHA256 with a key derived from JWT_SECRET, so any server of the
// deployment can check a URL another one made, and none can be altered or outlive its expiry.
import { createHmac, hkdfSync, randomUUID, timingSafeEqual } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { LocalStorageConfig } from "../config.ts";
import { checkKey, StorageError, type DownloadOptions, type ObjectStore, type PutOptions, type SignedUrl } from "./object-store.ts";

/** The path under which the local backend's download URLs are served. */
export const localDownloadPath = "/api/v1/files/download";

/** What a download URL of the local backend grants: one object, sent under this name and type, until `expiresAt`. */
export interface LocalDownload {
  readonly key: string;
  readonly filename: string | null;
  readonly contentType: string;
  readonly expiresAt: Date;
}

/** The MAC key of download URLs, derived from JWT_SECRET for this use alone. */
export function downloadUrlKey(jwtSecret: string): Buffer {
  return Buffer.from(hkdfSync("sha256", jwtSecret, "quire", "quire/local-download-url/v1", 32));
}

const mac = (key: Buffer, payload: string) => createHmac("sha256", key).update(payload).digest();

/** The token of a download URL (`<payload>.<mac>`, both base64url). */
export function signDownload(key: Buffer, download: LocalDownload): string {
  const payload = Buffer.from(
    JSON.stringify({ k: download.key, n: download.filename, t: download.contentType, e: Math.floor(download.expiresAt.getTime() / 1000) }),
  ).toString("base64url");
  return `${payload}.${mac(key, payload).toString("base64url")}`;
}

/** The download a token grants, or null when it was not made with `key`, is malformed, or has expired. */
export function verifyDownload(key: Buffer, token: string, now = new Date()): LocalDownload | null {
  if (token.length > 4096) return null;
  const [payload, signature, extra] = token.split(".");
  if (!payload || !signature || extra !== undefined) return null;
  const expected = mac(key, payload);
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let claims: { k?: unknown; n?: unknown; t?: unknown; e?: unknown };
  try {
    claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as typeof claims;
  } catch {
    return null;
  }
  if (typeof claims.k !== "string" || typeof claims.t !== "string" || typeof claims.e !== "number") return null;
  if (claims.n !== null && typeof claims.n !== "string") return null;
  const expiresAt = new Date(claims.e * 1000);
  if (expiresAt.getTime() <= now.getTime()) return null;
  return { key: claims.k, filename: claims.n, contentType: claims.t, expiresAt };
}

export interface LocalStoreOptions {
  /** This server's public origin: download URLs start with it. */
  readonly publicUrl: string;
  /** downloadUrlKey(JWT_SECRET). */
  readonly urlKey: Buffer;
}

export function createLocalStore(config: LocalStorageConfig, options: LocalStoreOptions): ObjectStore {
  const root = resolve(config.dir);
  const pathOf = (key: string) => {
    checkKey(key);
    return join(root, key);
  };
  return {
    backend: "local",
    async put(key: string, body: Buffer | Readable, _options: PutOptions): Promise<void> {
      const path = pathOf(key);
      await mkdir(dirname(path), { recursive: true });
      const partial = `${path}.${randomUUID()}.partial`;
      try {
        await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, createWriteStream(partial, { flags: "wx", mode: 0o600 }));
        await rename(partial, path);
      } catch (error) {
        await rm(partial, { force: true }).catch(() => undefined);
        throw new StorageError("UNAVAILABLE", "The file could not be stored.", { cause: error });
      }
    },
    async get(key: string): Promise<Readable> {
      const path = pathOf(key);
      try {
        await stat(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new StorageError("NOT_FOUND", "No such object.");
        throw new StorageError("UNAVAILABLE", "The file could not be read.", { cause: error });
      }
      return createReadStream(path);
    },
    async delete(keys: readonly string[]): Promise<void> {
      for (const key of keys) await rm(pathOf(key), { force: true });
    },
    async signedUrl(key: string, download: DownloadOptions): Promise<SignedUrl> {
      checkKey(key);
      const expiresAt = new Date(Date.now() + config.urlTtlSeconds * 1000);
      const token = signDownload(options.urlKey, { key, filename: download.filename, contentType: download.contentType, expiresAt });
      return { url: `${options.publicUrl}${localDownloadPath}?token=${token}`, expiresAt };
    },
    close() {},
  };
}
