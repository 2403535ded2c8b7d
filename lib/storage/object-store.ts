// Object storage for the originals of uploaded files and for organization exports: one interface, two backends
// chosen by STORAGE_BACKEND (lib/storage/local-store.ts, lib/storage/s3-store.ts). Keys are made by the database
// (`orgs/<organization id>/<kind>/<uuid>`), never by a client; a backend only checks their shape, so no key can
// leave its prefix or the store's root.
import type { Readable } from "node:stream";
import type { StorageConfig } from "../config.ts";

/** The shape of every key the database hands out (app_hidden.reserve_upload and its siblings). */
export const storageKeyPattern = /^orgs\/[0-9a-f-]{36}\/[a-z]+\/[0-9a-f-]{36}(\.[a-z0-9]{1,10})?$/;

export interface PutOptions {
  /** The media type detected from the bytes. */
  readonly contentType: string;
  /** SHA-256 of the body, hex: the backend checks what it stored against it where it can. */
  readonly sha256: string;
  /** The body's length, required for a stream body of the S3 backend (a Buffer knows its own). */
  readonly bytes?: number;
}

export interface DownloadOptions {
  /** Offered to the browser as the saved file's name (Content-Disposition: attachment). */
  readonly filename: string | null;
  readonly contentType: string;
}

export interface SignedUrl {
  readonly url: string;
  readonly expiresAt: Date;
}

export interface ObjectStore {
  readonly backend: StorageConfig["backend"];
  /** Stores `body` under `key` whole or not at all: a failure leaves no object (or an earlier one) behind. */
  put(key: string, body: Buffer | Readable, options: PutOptions): Promise<void>;
  /** The object's bytes; StorageError NOT_FOUND when there is none. */
  get(key: string): Promise<Readable>;
  /** Deletes the objects; deleting one that is not there is not an error. */
  delete(keys: readonly string[]): Promise<void>;
  /** A URL that downloads the object without any other credential until it expires (FILE_URL_TTL_SECONDS). */
  signedUrl(key: string, options: DownloadOptions): Promise<SignedUrl>;
  /** Releases sockets and handles. */
  close(): void;
}

export type StorageErrorCode = "NOT_FOUND" | "UNAVAILABLE" | "BAD_KEY";

/** A storage failure, with what a caller may say about it (never a key, URL or credential in the message). */
export class StorageError extends Error {
  readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StorageError";
    this.code = code;
  }
}

/** Throws BAD_KEY for anything but a key the database could have made. */
export function checkKey(key: string): void {
  if (!storageKeyPattern.test(key)) throw new StorageError("BAD_KEY", "Not a storage key.");
}

/** `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): a safe ASCII fallback and the exact name. */
export function attachmentDisposition(filename: string | null): string {
  if (!filename) return "attachment";
  const ascii = filename.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}
