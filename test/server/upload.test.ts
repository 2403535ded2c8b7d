// POST /api/v1/documents/upload end to end: real HTTP, real PostgreSQL. Each accepted type lands as a row with its
// extracted text; every refusal has its stable code and status, leaves no row, and says nothing internal.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { connect } from "node:net";
import { query } from "../support/database.ts";
import { useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";
import { makeDocx, makeEncryptedPdf, makeExe, makePdf, makeZip, png } from "../extract/fixtures.ts";

let a: Tenant;
let b: Tenant;
const maxUpload = 64 * 1024;
const maxDocument = 16 * 1024;
const fx = useQuireServer({ env: { UPLOAD_MAX_BYTES: String(maxUpload), DOCUMENT_MAX_BYTES: String(maxDocument), UPLOAD_MAX_PDF_PAGES: "3" } });
beforeAll(async () => {
  a = await createTenant(fx.db, "Upload Alpha");
  b = await createTenant(fx.db, "Upload Bravo");
});

/** The media type the server records for each detected type. */
const mediaTypes = {
  text: "text/plain",
  markdown: "text/markdown",
  html: "text/html",
  pdf: "application/pdf",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
} as const;

interface FilePart {
  readonly data: Uint8Array | string;
  readonly filename?: string;
  readonly field?: string;
  readonly type?: string;
}

interface Answer {
  readonly status: number;
  readonly body: {
    document?: { id: string; title: string; format: string; bytes: number };
    file?: { id: string; bytes: number; sha256: string; contentType: string };
    error?: { code: string; message: string };
  };
  readonly headers: Headers;
}

/** POSTs a multipart form with `files` (field `file` unless said otherwise) and optional `title`. */
async function upload(token: string | null, files: FilePart | readonly FilePart[], title?: string): Promise<Answer> {
  const form = new FormData();
  for (const file of Array.isArray(files) ? files : [files as FilePart]) {
    form.append(file.field ?? "file", new Blob([file.data], { type: file.type ?? "application/octet-stream" }), file.filename ?? "upload.bin");
  }
  if (title !== undefined) form.append("title", title);
  return send(token, form);
}

async function send(token: string | null, body: RequestInit["body"], headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(`${fx.app.url}/api/v1/documents/upload`, {
    method: "POST",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body,
    ...init,
  });
  return { status: response.status, body: (await response.json()) as Answer["body"], headers: response.headers };
}

const uploads = async () =>
  (await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.documents where source = 'upload'", [], "root"))[0]!.n;

interface Row {
  title: string;
  content: string;
  format: string;
  source: string;
  metadata: { upload: Record<string, unknown> };
  org_id: string;
  author_id: string;
  revision: number;
}
const row = async (id: string) => (await query<Row>(fx.db.name, "select * from app_public.documents where id = $1", [id], "root"))[0];

/**
 * Asserts an error answer: its status, its code, exactly two keys (three with a refused token's `reason`), and
 * nothing internal in the message.
 */
function expectError(answer: Answer, status: number, code: string, reason?: string) {
  expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status, code });
  expect(Object.keys(answer.body)).toEqual(["error"]);
  expect(Object.keys(answer.body.error!).sort()).toEqual(reason ? ["code", "message", "reason"] : ["code", "message"]);
  if (reason) expect((answer.body.error as { reason?: string }).reason).toBe(reason);
  expect(answer.body.error!.message).not.toMatch(
    /app_public|app_private|quire_|postgres|select |insert |\bat \w+ \(|node_modules|\/work\/|Error:|pdfjs|yauzl|mammoth|busboy/i,
  );
  expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
}

describe("a member uploads each accepted type", () => {
  test.each([
    [
      "plain text",
      { data: "Line one\nLine two ✓\n", filename: "notes.txt" },
      { format: "plain", detectedType: "text", content: "Line one\nLine two ✓\n", title: "notes" },
    ],
    [
      "Markdown",
      { data: "# Plan\n\n- ship\n", filename: "plan.md" },
      { format: "markdown", detectedType: "markdown", content: "# Plan\n\n- ship\n", title: "plan" },
    ],
    [
      "HTML",
      {
        data: "<!doctype html><title>Team page</title><h1>Team</h1><p>We <em>ship</em>.</p><script>steal()</script>",
        filename: "team.html",
        type: "text/html",
      },
      { format: "plain", detectedType: "html", content: "Team\n\nWe ship.", title: "Team page" },
    ],
    [
      "PDF",
      { data: makePdf({ pages: [["Quarterly numbers"], ["Page two"]] }), filename: "q3.pdf", type: "application/pdf" },
      { format: "plain", detectedType: "pdf", content: "Quarterly numbers\n\nPage two", title: "q3", pages: 2 },
    ],
    [
      "DOCX",
      { data: makeDocx(["Onboarding", "Day one: laptop"]), filename: "Onboarding guide.docx" },
      { format: "plain", detectedType: "docx", content: "Onboarding\n\nDay one: laptop", title: "Onboarding guide" },
    ],
  ] as const)("%s", async (_name, file, expected) => {
    const before = await uploads();
    const answer = await upload(a.members.member.accessToken, file);
    expect(answer.status).toBe(201);
    const original = typeof file.data === "string" ? Buffer.from(file.data) : Buffer.from(file.data);
    expect(answer.body).toEqual({
      document: { id: expect.any(String), title: expected.title, format: expected.format, bytes: Buffer.byteLength(expected.content) },
      file: {
        id: expect.any(String),
        bytes: original.length,
        sha256: createHash("sha256").update(original).digest("hex"),
        contentType: mediaTypes[expected.detectedType],
      },
    });
    expect(await uploads()).toBe(before + 1);
    const stored = await row(answer.body.document!.id);
    expect(stored).toMatchObject({
      title: expected.title,
      content: expected.content,
      format: expected.format,
      source: "upload",
      org_id: a.orgId,
      author_id: a.members.member.userId,
      revision: 1,
    });
    const size = typeof file.data === "string" ? Buffer.byteLength(file.data) : file.data.length;
    expect(stored!.metadata).toEqual({
      upload: { filename: file.filename, detectedType: expected.detectedType, bytes: size, ...("pages" in expected ? { pages: expected.pages } : {}) },
    });
  });

  test("owners and admins may upload too", async () => {
    expect((await upload(a.members.owner.accessToken, { data: "by the owner", filename: "o.txt" })).status).toBe(201);
    expect((await upload(a.members.admin.accessToken, { data: "by an admin", filename: "a.txt" })).status).toBe(201);
  });
});

describe("the title", () => {
  const pdf = makePdf({ title: "Annual report 2025" });
  test("the title field wins, trimmed", async () => {
    const answer = await upload(a.members.member.accessToken, { data: pdf, filename: "r.pdf" }, "  Given title ");
    expect(answer.body.document?.title).toBe("Given title");
  });
  test("then the PDF's or HTML page's own title", async () => {
    expect((await upload(a.members.member.accessToken, { data: pdf, filename: "r.pdf" })).body.document?.title).toBe("Annual report 2025");
  });
  test("then the file name without its extension or path", async () => {
    expect((await upload(a.members.member.accessToken, { data: "x", filename: "C:\\Users\\me\\Résumé final.v2.txt" })).body.document?.title).toBe(
      "Résumé final.v2",
    );
  });
  test("else 'Untitled upload'; a blank title field counts as none", async () => {
    expect((await upload(a.members.member.accessToken, { data: "x", filename: ".txt" }, "   ")).body.document?.title).toBe("Untitled upload");
  });
  test("a title over 500 characters is BAD_INPUT", async () => {
    const before = await uploads();
    expectError(await upload(a.members.member.accessToken, { data: "x", filename: "x.txt" }, "t".repeat(501)), 400, "BAD_INPUT");
    expect((await upload(a.members.member.accessToken, { data: "x", filename: "x.txt" }, "é".repeat(500))).status).toBe(201);
    expect(await uploads()).toBe(before + 1);
  });
});

describe("who may upload", () => {
  test("a viewer is refused by the database's policy: 403, no row", async () => {
    const before = await uploads();
    expectError(await upload(a.members.viewer.accessToken, { data: "viewer text", filename: "v.txt" }), 403, "FORBIDDEN");
    expect(await uploads()).toBe(before);
  });

  test("no token, a malformed one, or a forged one: 401, no row", async () => {
    const before = await uploads();
    const file = { data: "anonymous text", filename: "n.txt" };
    expectError(await upload(null, file), 401, "UNAUTHENTICATED");
    expectError(await upload("not-a-jwt", file), 401, "UNAUTHENTICATED", "TOKEN_INVALID");
    const [header, payload] = a.members.member.accessToken.split(".");
    expectError(await upload(`${header}.${payload}.forgedsignature`, file), 401, "UNAUTHENTICATED", "TOKEN_INVALID");
    const basic = await send(
      null,
      (() => {
        const f = new FormData();
        f.append("file", new Blob(["x"]), "x.txt");
        return f;
      })(),
      { authorization: "Basic dXNlcjpwYXNz" },
    );
    expectError(basic, 401, "UNAUTHENTICATED", "TOKEN_INVALID");
    expect(await uploads()).toBe(before);
  });

  test("a token whose session has ended is refused by the database: 401, no row", async () => {
    const c = await createTenant(fx.db, "Upload Ended");
    await query(fx.db.name, "update app_private.sessions set revoked_at = now() where id = $1", [c.members.member.sessionId], "root");
    const before = await uploads();
    expectError(await upload(c.members.member.accessToken, { data: "late", filename: "late.txt" }), 401, "UNAUTHENTICATED");
    expect(await uploads()).toBe(before);
  });

  test("another organization cannot read the uploaded document", async () => {
    const answer = await upload(a.members.member.accessToken, { data: "Alpha's secret plan", filename: "secret.txt" });
    const id = answer.body.document!.id;
    const read = "query ($id: UUID!) { document(rowId: $id) { title content } }";
    expect((await fx.app.graphql(read, { id }, a.members.viewer.accessToken)).body.data).toEqual({
      document: { title: "secret", content: "Alpha's secret plan" },
    });
    expect((await fx.app.graphql(read, { id }, b.members.owner.accessToken)).body.data).toEqual({ document: null });
    const search = '{ findDocuments(search: "secret") { nodes { rowId } } }';
    expect((await fx.app.graphql(search, {}, b.members.owner.accessToken)).body.data).toEqual({ findDocuments: { nodes: [] } });
  });
});

describe("sizes", () => {
  test("a file over UPLOAD_MAX_BYTES is 413 and leaves no row", async () => {
    const before = await uploads();
    expectError(await upload(a.members.member.accessToken, { data: "a".repeat(maxUpload + 1), filename: "big.txt" }), 413, "TOO_LARGE");
    // Far over: refused from its Content-Length, before the body is read.
    const huge = await upload(a.members.member.accessToken, { data: Buffer.alloc(4 * maxUpload, 0x61), filename: "huge.txt" });
    expectError(huge, 413, "TOO_LARGE");
    expect(huge.headers.get("connection")).toBe("close");
    expect(await uploads()).toBe(before);
  });

  test("a file of exactly UPLOAD_MAX_BYTES passes the upload limit (and meets the document limit next)", async () => {
    const answer = await upload(a.members.member.accessToken, { data: "a".repeat(maxUpload), filename: "edge.txt" });
    expectError(answer, 413, "TOO_LARGE");
    expect(answer.body.error!.message).toBe(`The document is larger than the limit of ${maxDocument} bytes.`);
  });

  test("a streamed body without Content-Length is cut off as soon as it crosses the limit", async () => {
    const boundary = "quire-test-boundary";
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="stream.txt"\r\nContent-Type: text/plain\r\n\r\n`);
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        // Up to 4 MiB, far past the limit; the server answers long before the end.
        if (sent === 0) controller.enqueue(head);
        if (sent >= 4 * 1024 * 1024) controller.close();
        else {
          controller.enqueue(chunk);
          sent += chunk.length;
        }
      },
    });
    const before = await uploads();
    const answer = await send(a.members.member.accessToken, body, { "content-type": `multipart/form-data; boundary=${boundary}` }, {
      duplex: "half",
    } as RequestInit);
    expectError(answer, 413, "TOO_LARGE");
    expect(answer.headers.get("connection")).toBe("close");
    expect(await uploads()).toBe(before);
  });

  test("extracted text over DOCUMENT_MAX_BYTES is 413 from the database's size trigger", async () => {
    const before = await uploads();
    const answer = await upload(a.members.member.accessToken, { data: makeDocx(["x".repeat(maxDocument + 1)]), filename: "long.docx" });
    expectError(answer, 413, "TOO_LARGE");
    expect(await uploads()).toBe(before);
  });

  test("a PDF over UPLOAD_MAX_PDF_PAGES is 413", async () => {
    const before = await uploads();
    expectError(await upload(a.members.member.accessToken, { data: makePdf({ pages: [["1"], ["2"], ["3"], ["4"]] }), filename: "long.pdf" }), 413, "TOO_LARGE");
    expect(await uploads()).toBe(before);
  });
});

describe("types decided from the bytes", () => {
  test("an EXE named .pdf, a PNG named .txt, a plain ZIP named .docx: 415, no row", async () => {
    const before = await uploads();
    expectError(await upload(a.members.member.accessToken, { data: makeExe(), filename: "invoice.pdf", type: "application/pdf" }), 415, "UNSUPPORTED_TYPE");
    expectError(await upload(a.members.member.accessToken, { data: png, filename: "notes.txt", type: "text/plain" }), 415, "UNSUPPORTED_TYPE");
    const zip = makeZip([{ name: "payload.txt", data: "hi" }]);
    expectError(await upload(a.members.member.accessToken, { data: zip, filename: "report.docx" }), 415, "UNSUPPORTED_TYPE");
    expect(await uploads()).toBe(before);
  });

  test("a real PDF named .txt and sent as text/plain is extracted as a PDF", async () => {
    const answer = await upload(a.members.member.accessToken, { data: makePdf(), filename: "actually.txt", type: "text/plain" });
    expect(answer.status).toBe(201);
    expect((await row(answer.body.document!.id))!.metadata.upload).toMatchObject({ detectedType: "pdf", pages: 1 });
  });
});

describe("bad requests: 400 BAD_INPUT, no row", () => {
  let before: number;
  beforeEach(async () => {
    before = await uploads();
  });
  afterEach(async () => {
    expect(await uploads()).toBe(before);
  });
  const member = () => a.members.member.accessToken;

  test("HTML nested 10,000 levels deep (which overflows the converter's stack) is BAD_INPUT, not INTERNAL", async () => {
    const depth = 10_000;
    // Unclosed, to fit the test's 64 KiB upload limit: the parser closes them all at the end, ten thousand deep.
    const html = `<!doctype html><title>Deep</title>${"<div>".repeat(depth)}deep`;
    const answer = await upload(member(), { data: html, filename: "deep.html", type: "text/html" });
    expectError(answer, 400, "BAD_INPUT");
    expect(answer.body.error!.message).toMatch(/nested too deeply/);
  });

  test("not multipart", async () => {
    expectError(await send(member(), JSON.stringify({ file: "x" }), { "content-type": "application/json" }), 400, "BAD_INPUT");
    expectError(await send(member(), "x", { "content-type": "multipart/form-data" }), 400, "BAD_INPUT");
  });
  test("no file, a file in another field, or two files", async () => {
    const form = new FormData();
    form.append("title", "Only a title");
    expectError(await send(member(), form), 400, "BAD_INPUT");
    expectError(await upload(member(), { data: "x", filename: "x.txt", field: "document" }), 400, "BAD_INPUT");
    expectError(
      await upload(member(), [
        { data: "one", filename: "1.txt" },
        { data: "two", filename: "2.txt" },
      ]),
      400,
      "BAD_INPUT",
    );
  });
  test("a malformed multipart body", async () => {
    const body = '--b\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n\r\nno closing boundary';
    expectError(await send(member(), body, { "content-type": "multipart/form-data; boundary=b" }), 400, "BAD_INPUT");
  });
  test("text that is not UTF-8, or has a NUL byte; an empty file", async () => {
    expectError(await upload(member(), { data: Buffer.from([0x63, 0x61, 0x66, 0xe9]), filename: "latin1.txt" }), 400, "BAD_INPUT");
    expectError(await upload(member(), { data: "a\u0000b", filename: "nul.txt" }), 400, "BAD_INPUT");
    expectError(await upload(member(), { data: "", filename: "empty.txt" }), 400, "BAD_INPUT");
  });
  test("an encrypted or corrupt PDF, a corrupt DOCX, a PDF without text", async () => {
    expectError(await upload(member(), { data: makeEncryptedPdf(), filename: "locked.pdf" }), 400, "BAD_INPUT");
    expectError(await upload(member(), { data: "%PDF-1.7\ncorrupt", filename: "broken.pdf" }), 400, "BAD_INPUT");
    const docx = makeDocx(["x"]);
    expectError(await upload(member(), { data: docx.subarray(0, docx.length - 40), filename: "broken.docx" }), 400, "BAD_INPUT");
    expectError(await upload(member(), { data: makePdf({ pages: [[]] }), filename: "scan.pdf" }), 400, "BAD_INPUT");
  });
});

test("a client that hangs up mid-upload leaves nothing behind, and the server carries on", async () => {
  const before = await uploads();
  const { port } = new URL(fx.app.url);
  const socket = connect(Number(port), "127.0.0.1");
  await once(socket, "connect");
  const boundary = "quire-abort";
  socket.write(
    `POST /api/v1/documents/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${a.members.member.accessToken}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 40000\r\n\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.txt"\r\n\r\n${"partial ".repeat(1000)}`,
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 100));
  expect(await uploads()).toBe(before);
  expect((await upload(a.members.member.accessToken, { data: "after the hang-up", filename: "after.txt" })).status).toBe(201);
});

test("other methods on the upload path are 405 METHOD_NOT_ALLOWED, with Allow: POST", async () => {
  const response = await fetch(`${fx.app.url}/api/v1/documents/upload`, { headers: { authorization: `Bearer ${a.members.member.accessToken}` } });
  expect(response.status).toBe(405);
  expect(response.headers.get("allow")).toBe("POST");
  expect(await response.json()).toEqual({ error: { code: "METHOD_NOT_ALLOWED", message: "Upload files with POST." } });
});
