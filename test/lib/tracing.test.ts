// Tracing end to end, through the real entry points run as processes (`node bin/server.ts`, `node bin/worker.ts`,
// `node bin/start.ts`) against a local HTTP server that receives OTLP/HTTP JSON exports like a collector. In processes
// because that is what production runs, and because the instrumentations patch Node's own module loader, which
// Jest's module registry bypasses: only a real process shows that pg under ESM is traced. With the endpoint set: one
// GraphQL request is one trace (HTTP server span → GraphQL operation → SQL), its request log line carries that trace
// id, and a summary job is a job span with its LLM call (to a fake OpenAI-compatible server, whose HTTP request is
// traced and carries the trace on) and SQL inside, none carrying the document or a credential.
// Unset: nothing is exported, no log line has a trace id, and no tracing SDK module is even loaded.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SpanKind } from "@opentelemetry/api";
import { ConfigError, loadConfig } from "../../lib/config.ts";
import { currentTraceId, isTracingEnabled, tracer, withSpan } from "../../lib/tracing.ts";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { startFakeLlmServer, type FakeLlmServer } from "../support/fake-llm-server.ts";
import { freePort } from "../support/ports.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const secretContent = "Confidential: the merger with Initech closes in May. Nobody outside the board knows yet.";
const oauthCode = "oauth-code-that-must-not-leak";
const apiKey = "sk-tracing-test-key-never-exported";

interface Export {
  readonly path: string;
  readonly contentType: string;
  readonly body: string;
}

interface Receiver {
  readonly url: string;
  readonly exports: Export[];
  close(): Promise<void>;
}

/** An OTLP/HTTP endpoint that keeps every export it is sent and answers 200, as a collector does. */
async function startReceiver(): Promise<Receiver> {
  const exports: Export[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      exports.push({ path: req.url ?? "", contentType: req.headers["content-type"] ?? "", body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    exports,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

type AttributeValue = string | number | boolean;

interface ExportedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | null;
  readonly name: string;
  readonly kind: number;
  readonly status: number;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpRequest {
  resourceSpans: Array<{
    resource: { attributes: OtlpAttribute[] };
    scopeSpans: Array<{
      spans: Array<{
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        status?: { code?: number };
        attributes?: OtlpAttribute[];
      }>;
    }>;
  }>;
}

const valueOf = (v: OtlpValue): AttributeValue => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.doubleValue ?? v.boolValue ?? ""));
const attributesOf = (list: OtlpAttribute[] = []) => Object.fromEntries(list.map((a) => [a.key, valueOf(a.value)]));

/** Every span of every export (OTLP JSON: ids are hex strings). */
function spansOf(exports: readonly Export[]): ExportedSpan[] {
  return exports.flatMap(({ body }) =>
    (JSON.parse(body) as OtlpRequest).resourceSpans.flatMap((rs) => {
      const service = String(attributesOf(rs.resource.attributes)["service.name"]);
      return rs.scopeSpans.flatMap((ss) =>
        ss.spans.map((s) => ({
          service,
          traceId: s.traceId,
          spanId: s.spanId,
          parentSpanId: s.parentSpanId ? s.parentSpanId : null,
          name: s.name,
          kind: s.kind,
          status: s.status?.code ?? 0,
          attributes: attributesOf(s.attributes),
        })),
      );
    }),
  );
}

/** OTLP's span kinds are the API's plus one (0 is UNSPECIFIED). */
const otlpKind = (kind: SpanKind) => kind + 1;

/** Whether `span` is `ancestor` or below it, following parent ids within `spans`. */
function isUnder(span: ExportedSpan, ancestor: ExportedSpan, spans: readonly ExportedSpan[]): boolean {
  for (let s: ExportedSpan | undefined = span; s; s = spans.find((p) => p.spanId === s!.parentSpanId)) {
    if (s.spanId === ancestor.spanId) return true;
  }
  return false;
}

interface LogLine {
  msg: string;
  traceId?: string;
  spanId?: string;
  req?: { id?: string; path?: string };
  [key: string]: unknown;
}

interface Quire {
  readonly url: string;
  lines(): LogLine[];
  /** SIGTERM, as an orchestrator stops it; resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Runs an entry point with `env` (and nothing else of ours) until `ready` says it is. */
async function startQuire(script: string, env: Record<string, string>, ready: (quire: Quire) => Promise<boolean>): Promise<Quire> {
  const child: ChildProcess = spawn(process.execPath, [script], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const quire: Quire = {
    url: `http://127.0.0.1:${env.PORT ?? "0"}`,
    lines: () =>
      output
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as LogLine),
    stop() {
      child.kill("SIGTERM");
      return exited;
    },
  };
  const deadline = Date.now() + 60_000;
  while (!(await ready(quire))) {
    if (child.exitCode !== null) throw new Error(`${script} exited early (${child.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`${script} not ready within 60 s:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return quire;
}

const serving = (quire: Quire) =>
  fetch(`${quire.url}/health`).then(
    (r) => r.status === 200,
    () => false,
  );
const workerStarted = async (quire: Quire) => quire.lines().some((line) => line.msg === "worker started");

/** What a Quire process needs to run on the test database (as the authenticator, like production). */
const quireEnv = (db: TestDatabase, dataDir: string): Record<string, string> => ({
  NODE_ENV: "test",
  LOG_PRETTY: "false",
  LOG_LEVEL: "info",
  HOST: "127.0.0.1",
  DATA_DIR: dataDir,
  JWT_SECRET: db.config.jwt.secret,
  DATABASE_URL: urlFor(roles.authenticator, db.name),
  DATABASE_AUTHENTICATED_ROLE: roles.authenticated,
  DATABASE_ANONYMOUS_ROLE: roles.anonymous,
  WORKER_HEARTBEAT_SECONDS: "1",
});

async function graphql(url: string, text: string, variables: Record<string, unknown>, token: string, requestId: string) {
  const response = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "x-request-id": requestId },
    body: JSON.stringify({ query: text, variables }),
  });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { data?: Record<string, unknown>; errors?: unknown[] };
  expect(body.errors).toBeUndefined();
  return body.data!;
}

const listDocuments = "query TracedDocuments { documents(first: 10) { nodes { rowId title } } }";
const createDocument = "mutation CreateSecret($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }";
const summarize = "mutation Summarize($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId } } }";

/** Creates a document and has it summarized, waiting for the job to succeed; returns the job's id. */
async function summarizeSecret(url: string, t: Tenant, db: TestDatabase): Promise<string> {
  const token = t.members.member.accessToken;
  const created = await graphql(url, createDocument, { d: { title: "Board notes", content: secretContent } }, token, "create-secret");
  const documentId = (created.createDocument as { document: { rowId: string } }).document.rowId;
  const asked = await graphql(url, summarize, { d: documentId }, token, "summarize-secret");
  const jobId = (asked.summarizeDocument as { job: { rowId: string } }).job.rowId;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [job] = await query<{ status: string }>(db.name, "select status from app_public.jobs where id = $1", [jobId], "root");
    if (job!.status === "succeeded") return jobId;
    if (job!.status === "failed" || Date.now() > deadline) throw new Error(`job ${jobId} is ${job!.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

let db: TestDatabase;
let t: Tenant;
let dataDir: string;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Traced");
  dataDir = mkdtempSync(join(tmpdir(), "quire-tracing-"));
});
afterAll(async () => {
  await db?.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe("configuration", () => {
  test("off by default, service name quire; the endpoint must be an http(s) URL and loses a trailing slash", () => {
    expect(db.config.tracing).toEqual({ endpoint: null, serviceName: "quire" });
    const env = { NODE_ENV: "test", JWT_SECRET: db.config.jwt.secret, DATABASE_URL: db.config.database.url };
    expect(loadConfig({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.example.com:4318/", OTEL_SERVICE_NAME: "quire-eu" }).tracing).toEqual({
      endpoint: "https://otel.example.com:4318",
      serviceName: "quire-eu",
    });
    expect(() => loadConfig({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: "localhost:4318" })).toThrow(
      new ConfigError(['OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL (got "localhost:4318")']),
    );
  });

  test("while tracing is off, withSpan runs its function with a span that records nothing, and there is no trace id", async () => {
    expect(isTracingEnabled()).toBe(false);
    const seen = await withSpan("anything", { a: 1 }, (span) => ({ recording: span.isRecording(), traceId: currentTraceId() }));
    expect(seen).toEqual({ recording: false, traceId: null });
    await expect(withSpan("failing", {}, () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(tracer.startSpan("manual").isRecording()).toBe(false);
  });
});

describe("with OTEL_EXPORTER_OTLP_ENDPOINT set (server and worker processes)", () => {
  let receiver: Receiver;
  let llm: FakeLlmServer;
  let spans: ExportedSpan[];
  let serverLines: LogLine[];
  let jobId: string;
  const exitCodes: Array<number | null> = [];

  beforeAll(async () => {
    receiver = await startReceiver();
    llm = await startFakeLlmServer(() => ({
      json: {
        model: "fake-model",
        choices: [{ index: 0, message: { role: "assistant", content: "A summary." }, finish_reason: "stop" }],
        usage: { prompt_tokens: 42, completion_tokens: 7, total_tokens: 49 },
      },
    }));
    const env = {
      ...quireEnv(db, dataDir),
      OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/`,
      OTEL_SERVICE_NAME: "quire-traced",
      LLM_PROVIDER: "openai",
      LLM_BASE_URL: `${llm.url}/v1`,
      LLM_API_KEY: apiKey,
    };
    const server = await startQuire("bin/server.ts", { ...env, PORT: String(await freePort()) }, serving);
    const worker = await startQuire("bin/worker.ts", { ...env, PORT: String(await freePort()) }, workerStarted);
    try {
      await graphql(server.url, listDocuments, {}, t.members.member.accessToken, "traced-request");
      await fetch(`${server.url}/oauth/notion/callback?code=${oauthCode}&state=opaque`, { redirect: "manual" });
      jobId = await summarizeSecret(server.url, t, db);
    } finally {
      // Stopping flushes what is still batched: every span below arrived by the time both have exited.
      exitCodes.push(await server.stop(), await worker.stop());
    }
    serverLines = server.lines();
    spans = spansOf(receiver.exports);
  }, 120_000);
  afterAll(async () => {
    await receiver?.close();
    await llm?.close();
  });

  test("exports OTLP/HTTP JSON to <endpoint>/v1/traces under OTEL_SERVICE_NAME, and both processes stop cleanly", () => {
    expect(exitCodes).toEqual([0, 0]);
    expect(receiver.exports.length).toBeGreaterThan(0);
    for (const e of receiver.exports) {
      expect(e.path).toBe("/v1/traces");
      expect(e.contentType).toBe("application/json");
    }
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(["quire-traced"]));
  });

  test("one GraphQL request is one trace: the HTTP server span, the operation under it, and its SQL under that", () => {
    const operation = spans.find((s) => s.name === "query TracedDocuments")!;
    expect(operation).toBeDefined();
    expect(operation.attributes).toMatchObject({ "graphql.operation.name": "TracedDocuments", "graphql.operation.type": "query" });
    expect(operation.status).toBe(0);

    const http = spans.find((s) => s.spanId === operation.parentSpanId)!;
    expect(http).toMatchObject({ name: "POST /graphql", kind: otlpKind(SpanKind.SERVER), traceId: operation.traceId, parentSpanId: null });
    expect(http.attributes).toMatchObject({ "http.route": "/graphql", "http.request.method": "POST", "http.response.status_code": 200 });

    const sql = spans.filter((s) => s.attributes["db.system.name"] === "postgresql" && isUnder(s, operation, spans));
    expect(sql.length).toBeGreaterThan(0);
    for (const s of sql) expect(s.traceId).toBe(http.traceId);
    expect(sql.some((s) => /documents/.test(String(s.attributes["db.query.text"])))).toBe(true);
    // Health probes (the test polled /health) are not traced.
    expect(spans.some((s) => s.attributes["url.path"] === "/health")).toBe(false);
  });

  test("server spans are named by route pattern, and query strings (an OAuth code here) keep their keys only", () => {
    const callback = spans.find((s) => s.attributes["url.path"] === "/oauth/notion/callback")!;
    expect(callback).toMatchObject({ name: "GET /oauth/:provider/callback", kind: otlpKind(SpanKind.SERVER) });
    expect(callback.attributes).toMatchObject({ "http.route": "/oauth/:provider/callback", "url.query": "code=REDACTED&state=REDACTED" });
    expect(receiver.exports.map((e) => e.body).join("\n")).not.toContain(oauthCode);
  });

  test("the request's log line carries the trace id and span id of its exported HTTP span", () => {
    const line = serverLines.find((l) => l.req?.id === "traced-request")!;
    expect(line).toMatchObject({ req: { path: "/graphql" }, res: { status: 200 } });
    const operation = spans.find((s) => s.name === "query TracedDocuments")!;
    const http = spans.find((s) => s.spanId === operation.parentSpanId)!;
    expect(line.traceId).toBe(http.traceId);
    expect(line.spanId).toBe(http.spanId);
    // Lines written outside any span (start-up, shutdown) have none.
    expect(serverLines.find((l) => l.msg === "server listening")).not.toHaveProperty("traceId");
  });

  test("a summary job is a job span with its LLM call (and that call's HTTP request) and its SQL inside", () => {
    const job = spans.find((s) => s.name === "job summarize" && s.attributes["quire.job.id"] === jobId)!;
    expect(job).toMatchObject({ kind: otlpKind(SpanKind.CONSUMER), status: 0 });
    expect(job.attributes).toMatchObject({ "quire.job.task": "summarize", "quire.job.attempt": 1 });
    expect(spans.some((s) => s.attributes["db.system.name"] === "postgresql" && isUnder(s, job, spans))).toBe(true);

    const call = spans.find((s) => s.attributes["gen_ai.provider.name"] !== undefined && isUnder(s, job, spans))!;
    expect(call).toMatchObject({ name: "chat gpt-4o-mini", kind: otlpKind(SpanKind.CLIENT), status: 0 });
    expect(call.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.response.model": "fake-model",
      "gen_ai.usage.input_tokens": 42,
      "gen_ai.usage.output_tokens": 7,
    });
    const request = spans.find((s) => s.parentSpanId === call.spanId)!;
    expect(request).toMatchObject({ kind: otlpKind(SpanKind.CLIENT), traceId: job.traceId });
    expect(request.attributes).toMatchObject({ "http.request.method": "POST", "url.full": `${llm.url}/v1/chat/completions`, "http.response.status_code": 200 });
    // The LLM service is told the trace (W3C traceparent), so its own spans could join it.
    expect(llm.requests).toHaveLength(1);
    expect(llm.requests[0]!.headers.traceparent).toBe(`00-${job.traceId}-${request.spanId}-01`);
  });

  test("no export holds the document's text, the prompt, a token or a key", () => {
    // The mutation that created the document was traced, and the job sent the document to the LLM…
    expect(spans.some((s) => s.name === "mutation CreateSecret")).toBe(true);
    expect(JSON.stringify(llm.requests[0]!.body)).toContain("Initech");
    // …yet no export holds its text, the caller's token, the API key or the signing secret.
    const everything = receiver.exports.map((e) => e.body).join("\n");
    for (const secret of [secretContent, "Initech", t.members.member.accessToken, apiKey, db.config.jwt.secret]) expect(everything).not.toContain(secret);
  });
});

describe("with OTEL_EXPORTER_OTLP_ENDPOINT unset (npm start: server and worker in one process)", () => {
  test("nothing is exported, no log line has a trace id, and no tracing SDK module is loaded", async () => {
    const receiver = await startReceiver();
    const probe = join(dataDir, "probe.mjs");
    const loaded = join(dataDir, "loaded.txt");
    // Lists, as the process exits, every CommonJS module it loaded (the SDK would be among them: lib/tracing.ts
    // requires it). The API is loaded regardless: prom-client requires it, and it is what makes `tracer` a no-op.
    writeFileSync(
      probe,
      `import { createRequire } from "node:module"; import { writeFileSync } from "node:fs";
       const require = createRequire(import.meta.url);
       process.on("exit", () => writeFileSync(${JSON.stringify(loaded)}, Object.keys(require.cache).join("\\n")));`,
    );
    try {
      const quire = await startQuire(
        "bin/start.ts",
        {
          ...quireEnv(db, dataDir),
          PORT: String(await freePort()),
          NODE_OPTIONS: `--import=${probe}`,
          // Where an OTLP exporter created anyway would send (the SDK reads it): only OTEL_EXPORTER_OTLP_ENDPOINT
          // turns tracing on.
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces`,
        },
        async (q) => (await serving(q)) && (await workerStarted(q)),
      );
      let code: number | null;
      try {
        await graphql(quire.url, listDocuments, {}, t.members.member.accessToken, "untraced-request");
        await summarizeSecret(quire.url, t, db);
      } finally {
        code = await quire.stop();
      }
      expect(code).toBe(0);
      expect(receiver.exports).toEqual([]);
      const lines = quire.lines();
      expect(lines.find((l) => l.req?.id === "untraced-request")).toMatchObject({ req: { path: "/graphql" }, res: { status: 200 } });
      for (const line of lines) {
        expect(line).not.toHaveProperty("traceId");
        expect(line).not.toHaveProperty("spanId");
      }
      const modules = readFileSync(loaded, "utf8").split("\n");
      expect(modules.some((m) => m.includes("/node_modules/pg/"))).toBe(true);
      expect(modules.filter((m) => m.includes("/node_modules/@opentelemetry/") && !m.includes("/node_modules/@opentelemetry/api/"))).toEqual([]);
    } finally {
      await receiver.close();
    }
  }, 120_000);
});
