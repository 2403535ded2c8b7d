// Both object-store backends against real storage: the local one on a temporary directory, the S3 one against an
// S3-compatible server on loopback (s3rver). Objects are whole or absent, keys cannot leave their prefix, deletes
// are idempotent, and download URLs work until they expire and not once altered.
import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { loadConfig, type LocalStorageConfig, type S3StorageConfig } from "../../lib/config.ts";
import { createLocalStore, downloadUrlKey, signDownload, verifyDownload } from "../../lib/storage/local-store.ts";
import { StorageError, type ObjectStore } from "../../lib/storage/object-store.ts";
import { createS3Store } from "../../lib/storage/s3-store.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";

const org = randomUUID();
const keyOf = () => `orgs/${org}/files/${randomUUID()}`;
const sha = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");
const put = (store: ObjectStore, key: string, data: string) => store.put(key, Buffer.from(data), { contentType: "text/plain", sha256: sha(data) });

const storageError = (code: string) => expect.objectContaining({ name: "StorageError", code });

describe("local backend", () => {
  let dir: string;
  let store: ObjectStore;
  const urlKey = downloadUrlKey("a-jwt-secret-that-is-at-least-32-characters");
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "quire-local-store-"));
    const config: LocalStorageConfig = { backend: "local", dir, urlTtlSeconds: 60 };
    store = createLocalStore(config, { publicUrl: "https://quire.example.com", urlKey });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  test("put then get returns the bytes; delete removes them and deleting again is fine", async () => {
    const key = keyOf();
    await put(store, key, "the original");
    expect(await text(await store.get(key))).toBe("the original");
    await store.delete([key]);
    await expect(store.get(key)).rejects.toEqual(storageError("NOT_FOUND"));
    await expect(store.delete([key])).resolves.toBeUndefined();
  });

  test("a body that fails mid-way leaves no object and no partial file", async () => {
    const key = keyOf();
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(64 * 1024, 1));
        this.destroy(new Error("client went away"));
      },
    });
    await expect(store.put(key, failing, { contentType: "text/plain", sha256: sha("x") })).rejects.toEqual(storageError("UNAVAILABLE"));
    await expect(store.get(key)).rejects.toEqual(storageError("NOT_FOUND"));
    const files = await readdir(join(dir, "orgs", org, "files"));
    expect(files.filter((f) => f.startsWith(key.split("/").pop()!))).toEqual([]);
  });

  test.each(["../../etc/passwd", `orgs/${org}/files/../../x`, "orgs/x/files/y", `orgs/${org}/FILES/${randomUUID()}`, ""])(
    "a key the database could not have made is refused: %j",
    async (key) => {
      await expect(put(store, key, "x")).rejects.toEqual(storageError("BAD_KEY"));
      await expect(store.get(key)).rejects.toEqual(storageError("BAD_KEY"));
      await expect(store.signedUrl(key, { filename: null, contentType: "text/plain" })).rejects.toEqual(storageError("BAD_KEY"));
    },
  );

  test("a download token verifies until it expires, and not once altered or made with another key", async () => {
    const key = keyOf();
    const { url, expiresAt } = await store.signedUrl(key, { filename: "notes.md", contentType: "text/markdown" });
    expect(url).toMatch(/^https:\/\/quire\.example\.com\/api\/v1\/files\/download\?token=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(expiresAt.getTime() - Date.now()).toBeGreaterThan(55_000);
    const token = new URL(url).searchParams.get("token")!;
    expect(verifyDownload(urlKey, token)).toEqual({
      key,
      filename: "notes.md",
      contentType: "text/markdown",
      expiresAt: new Date(Math.floor(expiresAt.getTime() / 1000) * 1000),
    });
    expect(verifyDownload(urlKey, token, new Date(expiresAt.getTime() + 1000))).toBeNull();
    expect(verifyDownload(downloadUrlKey("another-secret-that-is-at-least-32-characters"), token)).toBeNull();
    const [payload, mac] = token.split(".");
    const altered = Buffer.from(JSON.stringify({ k: keyOf(), n: "x", t: "text/html", e: 4102444800 })).toString("base64url");
    expect(verifyDownload(urlKey, `${altered}.${mac}`)).toBeNull();
    expect(verifyDownload(urlKey, `${payload}.${mac}.x`)).toBeNull();
    expect(verifyDownload(urlKey, "not a token")).toBeNull();
    expect(verifyDownload(urlKey, "x".repeat(5000))).toBeNull();
    const expired = signDownload(urlKey, { key, filename: null, contentType: "text/plain", expiresAt: new Date(Date.now() - 1000) });
    expect(verifyDownload(urlKey, expired)).toBeNull();
  });
});

describe("S3 backend (s3rver on loopback)", () => {
  let s3: S3TestServer;
  let store: ObjectStore;
  let config: S3StorageConfig;
  beforeAll(async () => {
    s3 = await startS3Server();
    config = loadConfig({ NODE_ENV: "test", JWT_SECRET: "x".repeat(32), DATABASE_URL: "postgres://u@127.0.0.1/db", ...s3.env() }).storage as S3StorageConfig;
    store = createS3Store(config);
  });
  afterAll(async () => {
    store.close();
    await s3.stop();
  });

  test("put then get returns the bytes; delete removes them and deleting again is fine", async () => {
    const keys = [keyOf(), keyOf()];
    await put(store, keys[0]!, "first");
    await put(store, keys[1]!, "second");
    expect(await text(await store.get(keys[1]!))).toBe("second");
    await store.delete(keys);
    for (const key of keys) await expect(store.get(key)).rejects.toEqual(storageError("NOT_FOUND"));
    await expect(store.delete(keys)).resolves.toBeUndefined();
  });

  test("a presigned URL downloads the object as an attachment with its name and type, signed for its key and expiry", async () => {
    const key = keyOf();
    await put(store, key, "# Notes");
    const { url, expiresAt } = await store.signedUrl(key, { filename: "Café notes.md", contentType: "text/markdown" });
    expect(expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(config.urlTtlSeconds * 1000);
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("# Notes");
    expect(response.headers.get("content-disposition")).toBe(`attachment; filename="Caf_ notes.md"; filename*=UTF-8''Caf%C3%A9%20notes.md`);
    expect(response.headers.get("content-type")).toBe("text/markdown");
    // The signature itself is S3's to check (s3rver does not): the URL carries one, for this key and expiry.
    const signed = new URL(url);
    expect(signed.pathname).toBe(`/${config.bucket}/${key}`);
    expect(signed.searchParams.get("X-Amz-Expires")).toBe(String(config.urlTtlSeconds));
    expect(signed.searchParams.get("X-Amz-Signature")).toMatch(/^[0-9a-f]{64}$/);
  });

  test("an unreachable server fails with UNAVAILABLE, naming neither the key nor the bucket", async () => {
    const down = createS3Store({ ...config, endpoint: "http://127.0.0.1:9" });
    const key = keyOf();
    const failure = put(down, key, "x");
    await expect(failure).rejects.toEqual(storageError("UNAVAILABLE"));
    const message = await failure.catch((error: StorageError) => error.message);
    expect(message).not.toContain(key);
    expect(message).not.toContain(config.bucket);
    down.close();
  });
});
