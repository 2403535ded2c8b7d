// Originals in object storage, end to end over real HTTP and a real PostgreSQL: an upload keeps its original beside
// the document (the local backend by default, S3 against s3rver on loopback), fileDownloadUrl signs a short-lived
// link that only the file's organization gets, the storage allowance refuses what does not fit, and no failure
// (storage down mid-upload, the database refusing the document, a full allowance) leaves a row or an object behind.
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import type { Config } from "../../lib/config.ts";
import { downloadUrlKey, signDownload } from "../../lib/storage/local-store.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { query, silentLogger, storageDirOf, testConfig } from "../support/database.ts";
import { until } from "../support/poll.ts";
import { startS3Server, type S3TestServer } from "../support/s3-server.ts";
import { codeOf, startTestServer, useQuireServer, type TestServer } from "../support/server.ts";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const maxDocument = 16 * 1024;
const env = { UPLOAD_MAX_BYTES: String(256 * 1024), DOCUMENT_MAX_BYTES: String(maxDocument), FILE_URL_TTL_SECONDS: "60" };
const fx = useQuireServer({ env });
let s3: S3TestServer;
let proxy: TcpProxy;
let s3Server: TestServer;
let s3Config: Config;
let s3Client: S3Client;
let a: Tenant;
let b: Tenant;

beforeAll(async () => {
  a = await createTenant(fx.db, "Files Alpha");
  b = await createTenant(fx.db, "Files Bravo");
  s3 = await startS3Server();
  proxy = await startTcpProxy("127.0.0.1", s3.port);
  s3Config = testConfig(fx.db.name, { ...env, ...s3.env(`http://127.0.0.1:${proxy.port}`) });
  s3Server = await startTestServer(s3Config, silentLogger);
  s3Client = new S3Client({ ...s3ClientOptions(s3) });
});
afterAll(async () => {
  await s3Server?.close();
  s3Client?.destroy();
  await proxy?.close();
  await s3?.stop();
});

function s3ClientOptions(server: S3TestServer) {
  return {
    endpoint: server.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  };
}

interface UploadAnswer {
  readonly status: number;
  readonly body: {
    document?: { id: string };
    file?: { id: string; bytes: number; sha256: string; contentType: string };
    error?: { code: string; message: string };
  };
}

async function upload(baseUrl: string, token: string, data: string | Buffer, filename: string): Promise<UploadAnswer> {
  const form = new FormData();
  form.append("file", new Blob([data]), filename);
  const response = await fetch(`${baseUrl}/api/v1/documents/upload`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
  return { status: response.status, body: (await response.json()) as UploadAnswer["body"] };
}

const sha256 = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

const counts = async (orgId: string) =>
  (
    await query<{ documents: number; files: number; reserved: number; pending: number }>(
      fx.db.name,
      `select (select count(*)::int from app_public.documents where org_id = $1) as documents,
              (select count(*)::int from app_public.files where org_id = $1) as files,
              (select coalesce(sum(reserved_bytes), 0)::int from app_private.storage_usage where org_id = $1) as reserved,
              (select count(*)::int from app_private.pending_uploads where org_id = $1) as pending`,
      [orgId],
      "root",
    )
  )[0]!;

/** The names of the objects stored under the organization's prefix by the local backend. */
const localObjects = async (orgId: string) => readdir(join(storageDirOf(fx.db.name), "orgs", orgId, "files")).catch(() => [] as string[]);

const s3Objects = async (orgId: string) =>
  ((await s3Client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: `orgs/${orgId}/` }))).Contents ?? []).map((o) => o.Key!);

/** Runs a worker with `config` until the queue of objects to delete is empty. */
async function drainDeletions(config: Config): Promise<void> {
  const pool: pg.Pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    const left = async () =>
      (await query<{ left: number }>(fx.db.name, "select count(*)::int as left from app_private.storage_deletions", [], "root"))[0]!.left;
    expect(await until(left, (n) => n === 0, "the objects' deletion")).toBe(0);
  } finally {
    await worker.stop();
    await pool.end();
  }
}

const downloadUrl = `query ($id: UUID!) { fileDownloadUrl(fileId: $id) { url expiresAt } }`;

describe("local backend (the default)", () => {
  let fileId: string;
  let documentId: string;
  const original = "# Handbook\n\nHow we work, with ünïcödé.\n";

  test("an upload keeps the original under the organization's prefix, recorded with its size, hash and detected type", async () => {
    const before = await counts(a.orgId);
    const answer = await upload(fx.app.url, a.members.member.accessToken, original, "dir/handbook.md");
    expect(answer.status).toBe(201);
    const bytes = Buffer.byteLength(original);
    expect(answer.body.file).toEqual({ id: expect.any(String), bytes, sha256: sha256(original), contentType: "text/markdown" });
    fileId = answer.body.file!.id;
    documentId = answer.body.document!.id;
    const [row] = await query(fx.db.name, "select * from app_public.files where id = $1", [fileId], "root");
    expect(row).toMatchObject({
      org_id: a.orgId,
      document_id: answer.body.document!.id,
      name: "handbook.md",
      content_type: "text/markdown",
      bytes: String(bytes),
      sha256: sha256(original),
      created_by: a.members.member.userId,
      trashed_at: null,
    });
    expect(row!.storage_key).toMatch(new RegExp(`^orgs/${a.orgId}/files/[0-9a-f-]{36}$`));
    expect(await readFile(join(storageDirOf(fx.db.name), row!.storage_key))).toEqual(Buffer.from(original));
    expect(await counts(a.orgId)).toEqual({ ...before, documents: before.documents + 1, files: before.files + 1 });
    // The fixture's file (20 bytes), revision and export archive (10240 bytes) count too.
    const usage = await fx.gql(a.members.viewer.accessToken, "{ organizationStorage { usedBytes reservedBytes allowanceBytes } }");
    expect(usage.data).toEqual({
      organizationStorage: { usedBytes: String(20 + "An earlier draft.".length + 10240 + bytes), reservedBytes: "0", allowanceBytes: String(1024 ** 3) },
    });
  });

  test("the document lists its file, never the storage key", async () => {
    const listed = await fx.gql(
      a.members.viewer.accessToken,
      "query ($id: UUID!) { document(rowId: $id) { files { nodes { rowId name bytes sha256 contentType } } } }",
      { id: documentId },
    );
    expect(listed.data).toEqual({
      document: {
        files: {
          nodes: [{ rowId: fileId, name: "handbook.md", bytes: String(Buffer.byteLength(original)), sha256: sha256(original), contentType: "text/markdown" }],
        },
      },
    });
    const storageKey = await fx.gql(a.members.viewer.accessToken, "query ($id: UUID!) { document(rowId: $id) { files { nodes { storageKey } } } }", {
      id: documentId,
    });
    expect(codeOf(storageKey)).toBe("BAD_REQUEST");
  });

  test("fileDownloadUrl signs a link that downloads the original as an attachment, to anyone in the organization", async () => {
    const body = await fx.gql(a.members.viewer.accessToken, downloadUrl, { id: fileId });
    const { url, expiresAt } = (body.data as { fileDownloadUrl: { url: string; expiresAt: string } }).fileDownloadUrl;
    expect(new Date(expiresAt).getTime() - Date.now()).toBeGreaterThan(50_000);
    expect(new Date(expiresAt).getTime() - Date.now()).toBeLessThanOrEqual(60_000);
    const response = await fetch(url.replace(/^https?:\/\/[^/]+/, fx.app.url));
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer())).toEqual(Buffer.from(original));
    expect(response.headers.get("content-type")).toBe("text/markdown");
    expect(response.headers.get("content-disposition")).toBe(`attachment; filename="handbook.md"; filename*=UTF-8''handbook.md`);
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    expect(response.headers.get("content-security-policy")).toBe("default-src 'none'; sandbox");
  });

  test("another organization's file id, an unknown one, and no session get nothing", async () => {
    expect(codeOf(await fx.gql(b.members.owner.accessToken, downloadUrl, { id: fileId }))).toBe("NOT_FOUND");
    expect(codeOf(await fx.gql(b.members.owner.accessToken, downloadUrl, { id: "00000000-0000-4000-8000-000000000000" }))).toBe("NOT_FOUND");
    expect(codeOf(await fx.gql(null, downloadUrl, { id: fileId }))).toBe("UNAUTHENTICATED");
    expect(codeOf(await fx.gql(a.members.viewer.accessToken, downloadUrl, { id: "not-a-uuid" }))).toBe("BAD_REQUEST");
  });

  test("a link that was altered or has expired answers 403 FORBIDDEN and sends nothing", async () => {
    const body = await fx.gql(a.members.viewer.accessToken, downloadUrl, { id: fileId });
    const url = new URL((body.data as { fileDownloadUrl: { url: string } }).fileDownloadUrl.url);
    const token = url.searchParams.get("token")!;
    const [payload] = token.split(".");
    const key = JSON.parse(Buffer.from(payload!, "base64url").toString()).k as string;
    const urlKey = downloadUrlKey(fx.db.config.jwt.secret);
    const expired = signDownload(urlKey, { key, filename: null, contentType: "text/plain", expiresAt: new Date(Date.now() - 1000) });
    const forged = signDownload(downloadUrlKey("someone-elses-secret-of-at-least-32-chars"), {
      key,
      filename: null,
      contentType: "text/html",
      expiresAt: new Date(Date.now() + 60_000),
    });
    for (const bad of [expired, forged, `${token}x`, ""]) {
      const response = await fetch(`${fx.app.url}/api/v1/files/download?token=${encodeURIComponent(bad)}`);
      expect(response.status).toBe(403);
      expect(await response.json()).toEqual({ error: { code: "FORBIDDEN", message: "This download link is invalid or has expired." } });
    }
  });

  test("a viewer cannot upload: 403 before anything is stored", async () => {
    const before = await counts(a.orgId);
    const objects = await localObjects(a.orgId);
    const answer = await upload(fx.app.url, a.members.viewer.accessToken, "viewer's file", "v.txt");
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 403, code: "FORBIDDEN" });
    expect(await counts(a.orgId)).toEqual(before);
    expect(await localObjects(a.orgId)).toEqual(objects);
  });

  test("the database refusing the document after the original was stored leaves neither behind", async () => {
    const before = await counts(a.orgId);
    const objects = await localObjects(a.orgId);
    const answer = await upload(fx.app.url, a.members.member.accessToken, "x".repeat(maxDocument + 1), "big.txt");
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 413, code: "TOO_LARGE" });
    expect(await counts(a.orgId)).toEqual(before);
    expect(await localObjects(a.orgId)).toEqual(objects);
  });

  test("a file that does not fit the storage allowance is refused with 422 QUOTA_EXCEEDED and nothing is kept", async () => {
    const [usage] = await query<{ bytes: string }>(fx.db.name, "select bytes from app_private.storage_usage where org_id = $1", [a.orgId], "root");
    await query(fx.db.name, "select app_admin.set_tier_storage('free', $1)", [Number(usage!.bytes) + 100]);
    try {
      const before = await counts(a.orgId);
      const objects = await localObjects(a.orgId);
      const answer = await upload(fx.app.url, a.members.member.accessToken, "y".repeat(101), "full.txt");
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 422, code: "QUOTA_EXCEEDED" });
      expect(answer.body.error!.message).toMatch(/storage allowance/);
      expect(await counts(a.orgId)).toEqual(before);
      expect(await localObjects(a.orgId)).toEqual(objects);
      // What fits still does.
      expect((await upload(fx.app.url, a.members.member.accessToken, "z".repeat(100), "fits.txt")).status).toBe(201);
    } finally {
      await query(fx.db.name, "select app_admin.set_tier_storage('free', $1)", [1024 ** 3]);
    }
  });

  test("emptying the trash deletes the original from storage (the worker, after commit)", async () => {
    const answer = await upload(fx.app.url, a.members.member.accessToken, "to be deleted", "gone.txt");
    const [row] = await query<{ storage_key: string }>(fx.db.name, "select storage_key from app_public.files where id = $1", [answer.body.file!.id], "root");
    const path = join(storageDirOf(fx.db.name), row!.storage_key);
    expect((await readFile(path)).toString()).toBe("to be deleted");
    const link = (
      (await fx.gql(a.members.viewer.accessToken, downloadUrl, { id: answer.body.file!.id })).data as { fileDownloadUrl: { url: string } }
    ).fileDownloadUrl.url.replace(/^https?:\/\/[^/]+/, fx.app.url);
    expect((await fetch(link)).status).toBe(200);
    expect(
      codeOf(
        await fx.gql(a.members.member.accessToken, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { document { rowId } } }", {
          id: answer.body.document!.id,
        }),
      ),
    ).toBeNull();
    // In the trash, the original is kept (a restore brings it back), but a link issued before stops at once.
    expect((await readFile(path)).toString()).toBe("to be deleted");
    const refused = await fetch(link);
    expect({ status: refused.status, body: await refused.json() }).toEqual({
      status: 404,
      body: { error: { code: "NOT_FOUND", message: "The file no longer exists." } },
    });
    const emptied = await fx.gql(a.members.admin.accessToken, "mutation { emptyTrash(input: {}) { deletedCount } }");
    expect(emptied.data).toEqual({ emptyTrash: { deletedCount: 1 } });
    expect(await query(fx.db.name, "select storage_key from app_private.storage_deletions", [], "root")).toContainEqual({ storage_key: row!.storage_key });
    await drainDeletions(fx.db.config);
    await expect(readFile(path)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("S3 backend (s3rver on loopback, through a proxy that can cut it off)", () => {
  test("an upload stores the original in the bucket; its download URL is a presigned GET of it", async () => {
    const data = Buffer.from("%PDF? no: plain text stored in S3\n");
    const answer = await upload(s3Server.url, b.members.member.accessToken, data, "s3.txt");
    expect(answer.status).toBe(201);
    const [row] = await query<{ storage_key: string }>(fx.db.name, "select storage_key from app_public.files where id = $1", [answer.body.file!.id], "root");
    expect(await s3Objects(b.orgId)).toEqual([row!.storage_key]);
    const body = await s3Server.graphql(downloadUrl, { id: answer.body.file!.id }, b.members.viewer.accessToken);
    const url = new URL((body.body.data as { fileDownloadUrl: { url: string } }).fileDownloadUrl.url);
    expect(url.searchParams.get("X-Amz-Expires")).toBe("60");
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(Buffer.from(await response.arrayBuffer())).toEqual(data);
    expect(response.headers.get("content-disposition")).toBe(`attachment; filename="s3.txt"; filename*=UTF-8''s3.txt`);
  });

  test("storage going down mid-upload: 503 UNAVAILABLE, no document, no file row, no object, the reservation given back", async () => {
    const before = await counts(b.orgId);
    const objects = await s3Objects(b.orgId);
    const marker = "STORAGE-OUTAGE-MARKER";
    const data = Buffer.concat([Buffer.alloc(7 * 1024, "a"), Buffer.from(marker), Buffer.alloc(7 * 1024, "b")]);
    const cut = proxy.cutOn(marker);
    try {
      const answer = await upload(s3Server.url, b.members.member.accessToken, data, "outage.txt");
      await cut;
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 503, code: "UNAVAILABLE" });
      expect(answer.body.error!.message).toBe("File storage is unavailable; try again shortly.");
    } finally {
      proxy.restore();
    }
    expect(await counts(b.orgId)).toEqual(before);
    // Whatever reached the store is deleted: at once when storage answers, else by the worker from the queue (s3rver,
    // unlike S3, keeps the part of a body it received before the connection was cut).
    await drainDeletions(s3Config);
    expect(await s3Objects(b.orgId)).toEqual(objects);
    // And once storage is back, the same upload goes through.
    expect((await upload(s3Server.url, b.members.member.accessToken, data, "outage.txt")).status).toBe(201);
  });
});
