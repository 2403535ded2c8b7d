// `npm run chaos`: Quire's fault and abuse run. A fresh deployment (its own embedded PostgreSQL, the API server and
// two workers as separate processes, on loopback only) is put through what an attacker and an ordinary operator do
// to it, then checked:
//   1. a stream of malformed WebSocket frames from many bare connections;
//   2. distinct, oversized anonymous GraphQL documents;
//   3. huge responses (every document's content in one list, several aliases deep);
//   4. mixed load (document writes, summaries) through a PostgreSQL restart while the two workers are SIGTERMed
//      and restarted in turn.
// Afterwards: the server process never exited, every job is finished and finished exactly once (one summary and
// one usage record per succeeded job, none left queued or running), every acknowledged write is in the database,
// the server's heap is back near its baseline, and every organization's audit chain verifies.
// Every loop is bounded in count and time; the whole run takes about two minutes. Exit 0 when every check passed.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../db/embedded.ts";
import { createLogger } from "../lib/logger.ts";
import { freePort } from "../test/support/ports.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (message: string) => process.stderr.write(`[chaos] ${message}\n`);
const quiet = createLogger({ level: "silent", pretty: false });

// --- the deployment ------------------------------------------------------------------------------------------

interface Deployment {
  readonly url: string;
  readonly metricsUrl: string;
  readonly rootUrl: string;
  readonly server: ChildProcess;
  readonly workers: ChildProcess[];
  restartWorker(index: number): Promise<void>;
  stopPostgres(): Promise<void>;
  startPostgres(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

async function deploy(): Promise<Deployment> {
  const dataDir = mkdtempSync(join(tmpdir(), "quire-chaos-"));
  chmodSync(dataDir, 0o755); // PostgreSQL runs as its own user when this runs as root
  const [pgPort, http, metrics] = [await freePort(), await freePort(), await freePort()];
  const embedded = { dataDir: join(dataDir, "postgres"), port: pgPort, superuserPassword: "chaos-root" };
  let postgres: EmbeddedPostgres | null = await startEmbeddedPostgres(embedded, quiet);
  const at = (user: string, password: string, database: string) => `postgres://${user}:${password}@127.0.0.1:${pgPort}/${database}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: "production",
    DATA_DIR: dataDir,
    HOST: "127.0.0.1",
    LOG_PRETTY: "false",
    LOG_LEVEL: "warn",
    JWT_SECRET: randomBytes(32).toString("hex"),
    FRONTEND_ORIGINS: "http://127.0.0.1:5173",
    DATABASE_URL: at("chaos_authenticator", "a-pass", "quire_chaos"),
    DATABASE_AUTHENTICATED_ROLE: "chaos_authenticated",
    DATABASE_ANONYMOUS_ROLE: "chaos_anonymous",
    DATABASE_POOL_WAIT_MS: "1000",
    WORKER_HEARTBEAT_SECONDS: "1",
    READY_WORKER_MAX_AGE_SECONDS: "3",
    SHUTDOWN_TIMEOUT_SECONDS: "5",
    BCRYPT_COST: "10",
    RATE_LIMITS: "false",
  };
  const migrate = spawn(process.execPath, ["bin/migrate.ts"], {
    cwd: root,
    env: { ...env, OWNER_DATABASE_URL: at("chaos_owner", "o-pass", "quire_chaos"), ROOT_DATABASE_URL: at("postgres", "chaos-root", "postgres") },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const migrated = await new Promise<number | null>((resolve) => migrate.once("exit", resolve));
  if (migrated !== 0) throw new Error(`npm run migrate exited ${migrated}`);

  let output = "";
  const start = (script: string, extra: NodeJS.ProcessEnv, node: string[] = []) => {
    const child = spawn(process.execPath, [...node, script], { cwd: root, env: { ...env, ...extra }, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-200_000)));
    child.stderr!.on("data", (chunk: Buffer) => (output = (output + chunk.toString()).slice(-200_000)));
    return child;
  };
  // A small heap makes a memory leak a crash rather than a slow drift.
  const server = start("bin/server.ts", { PORT: String(http), METRICS_PORT: String(metrics) }, ["--max-old-space-size=384"]);
  const workers = [start("bin/worker.ts", {}), start("bin/worker.ts", {})];
  const url = `http://127.0.0.1:${http}`;
  const deadline = Date.now() + 60_000;
  while (
    (await fetch(`${url}/health/ready`).then(
      (r) => r.status,
      () => 0,
    )) !== 200
  ) {
    if (server.exitCode !== null) throw new Error(`the server exited (${server.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`the server was not ready within 60 s:\n${output}`);
    await sleep(200);
  }
  const stopped = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    url,
    metricsUrl: `http://127.0.0.1:${metrics}/metrics`,
    rootUrl: at("postgres", "chaos-root", "quire_chaos"),
    server,
    workers,
    async restartWorker(index) {
      const worker = workers[index]!;
      worker.kill("SIGTERM");
      await stopped(worker);
      workers[index] = start("bin/worker.ts", {});
    },
    async stopPostgres() {
      await postgres?.stop();
      postgres = null;
    },
    async startPostgres() {
      postgres = await startEmbeddedPostgres(embedded, quiet);
    },
    async stop() {
      for (const child of [server, ...workers]) child.kill("SIGTERM");
      await Promise.all([server, ...workers].map(stopped));
      await postgres?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
    output: () => output,
  };
}

// --- clients ---------------------------------------------------------------------------------------------------

interface GraphQLAnswer {
  readonly status: number;
  readonly body: { data?: Record<string, unknown> | null; errors?: Array<{ message: string; extensions?: { code?: string } }> } | null;
}

async function graphql(url: string, query: string, variables: Record<string, unknown> = {}, token?: string): Promise<GraphQLAnswer> {
  try {
    const response = await fetch(`${url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await response.text();
    let body: GraphQLAnswer["body"] = null;
    try {
      body = JSON.parse(text) as GraphQLAnswer["body"];
    } catch {
      body = null;
    }
    return { status: response.status, body };
  } catch {
    return { status: 0, body: null };
  }
}

const codeOf = (answer: GraphQLAnswer) => answer.body?.errors?.[0]?.extensions?.code ?? null;

async function register(url: string, name: string): Promise<string> {
  const credentials = { email: `${name.toLowerCase()}-${randomUUID()}@example.com`, password: "a long enough chaos passphrase" };
  const registered = await graphql(url, "mutation ($i: RegisterInput!) { register(input: $i) { success } }", {
    i: { organizationName: name, fullName: name, ...credentials },
  });
  if (registered.body?.data?.register == null) throw new Error(`register failed: ${registered.status} ${JSON.stringify(registered.body)}`);
  const answer = await graphql(url, "mutation ($i: LoginInput!) { login(input: $i) { accessToken } }", { i: credentials });
  const token = (answer.body?.data?.login as { accessToken?: string } | undefined)?.accessToken;
  if (!token) throw new Error(`login failed: ${answer.status} ${JSON.stringify(answer.body)}`);
  return token;
}

async function heapUsedBytes(metricsUrl: string): Promise<number> {
  const text = await fetch(metricsUrl).then((r) => r.text());
  const line = text.split("\n").find((l) => l.startsWith("nodejs_heap_size_used_bytes"));
  return line ? Number(line.split(" ").at(-1)) : NaN;
}

/** Opens a bare WebSocket (no token, no Origin, no connection_init) and sends `bytes`; resolves when it closes. */
function badFrames(url: string, bytes: Buffer): Promise<void> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), "127.0.0.1");
    const timer = setTimeout(() => socket.destroy(), 5_000);
    socket.on("error", () => undefined);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
    let upgraded = false;
    socket.on("data", (chunk: Buffer) => {
      if (!upgraded && chunk.toString("latin1").startsWith("HTTP/1.1 101")) {
        upgraded = true;
        socket.write(bytes);
      }
    });
    socket.once("connect", () =>
      socket.write(
        `GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`,
      ),
    );
  });
}

const malformed: Buffer[] = [
  Buffer.from("818200000000fffe", "hex"), // text frame, invalid UTF-8
  Buffer.from("838100000000" + "78", "hex"), // reserved opcode
  Buffer.from("c18100000000" + "78", "hex"), // RSV1 set
  Buffer.concat([Buffer.from("89fe00c800000000", "hex"), Buffer.alloc(200)]), // control frame over 125 bytes
  Buffer.from("810178", "hex"), // unmasked
  Buffer.concat([Buffer.from("81ff", "hex"), Buffer.from("0000000040000000", "hex"), Buffer.alloc(4)]), // 1 GiB announced
];

// --- checks ----------------------------------------------------------------------------------------------------

const results: Array<{ name: string; ok: boolean; detail: string }> = [];
function check(name: string, ok: boolean, detail: string) {
  results.push({ name, ok, detail });
  say(`${ok ? "PASS" : "FAIL"} ${name}: ${detail}`);
}

async function main() {
  const started = Date.now();
  const d = await deploy();
  try {
    const tokens = [await register(d.url, "ChaosA"), await register(d.url, "ChaosB")];
    await sleep(2_000);
    const baselineHeap = await heapUsedBytes(d.metricsUrl);
    say(`deployed; server heap ${(baselineHeap / 1e6).toFixed(1)} MB`);

    // 1. Malformed frames: 300 bare connections, 50 at a time.
    for (let i = 0; i < 300; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => badFrames(d.url, malformed[(i + j) % malformed.length]!)));
    }
    const health1 = await fetch(`${d.url}/health`).then(
      (r) => r.status,
      () => 0,
    );
    check(
      "malformed WebSocket frames",
      d.server.exitCode === null && health1 === 200,
      `300 connections, server ${d.server.exitCode === null ? "up" : "exited"}, /health ${health1}`,
    );

    // 2. Distinct oversized documents: 150 anonymous ~2 MB query documents, each different.
    const statuses = new Map<number, number>();
    for (let i = 0; i < 150; i += 10) {
      const batch = await Promise.all(
        Array.from({ length: 10 }, (_, j) => graphql(d.url, `# ${randomUUID()} ${"x".repeat(2_000_000)}\n{ __typename }`, { n: i + j })),
      );
      for (const answer of batch) statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
    }
    const refusedLarge = [...statuses.entries()].every(([status]) => status >= 400 && status < 500);
    check("distinct oversized documents", d.server.exitCode === null && refusedLarge, `statuses ${JSON.stringify(Object.fromEntries(statuses))}`);

    // 3. Huge responses: twenty 1 MB documents, then every content in one list under six aliases.
    const body = "Chaos sentence number one is here. ".repeat(30_000);
    for (let i = 0; i < 20; i++) {
      await graphql(
        d.url,
        "mutation ($t: String!, $c: String!) { createDocument(input: { document: { title: $t, content: $c } }) { document { rowId } } }",
        { t: `Big ${i}`, c: body },
        tokens[0],
      );
    }
    const aliases = Array.from({ length: 6 }, (_, i) => `a${i}: documents(first: 20) { nodes { content } }`).join(" ");
    const huge = await Promise.all([
      graphql(d.url, `{ ${aliases} }`, {}, tokens[0]),
      fetch(`${d.url}/health`).then(
        (r) => r.status,
        () => 0,
      ),
    ]);
    check(
      "huge responses",
      d.server.exitCode === null && huge[0].status !== 500 && huge[0].status !== 0 && codeOf(huge[0]) !== "INTERNAL" && huge[1] === 200,
      `status ${huge[0].status} code ${codeOf(huge[0])}, /health ${huge[1]}`,
    );

    // 4. Mixed load through a PostgreSQL restart and two worker restarts.
    const acknowledged: string[] = [];
    const jobs: string[] = [];
    let loading = true;
    let serverErrors = 0;
    const load = tokens.map(async (token, t) => {
      let n = 0;
      while (loading) {
        const created = await graphql(
          d.url,
          "mutation ($t: String!, $c: String!) { createDocument(input: { document: { title: $t, content: $c } }) { document { rowId } } }",
          { t: `Load ${t}-${n++}`, c: "Quire keeps documents. Workers summarize them with a language model. Summaries arrive live." },
          token,
        );
        const id = (created.body?.data?.createDocument as { document?: { rowId?: string } } | undefined)?.document?.rowId;
        if (created.status >= 500 && created.status !== 503) serverErrors++;
        if (!id) {
          await sleep(100);
          continue;
        }
        acknowledged.push(id);
        const job = await graphql(d.url, "mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId } } }", { d: id }, token);
        const jobId = (job.body?.data?.summarizeDocument as { job?: { rowId?: string } } | undefined)?.job?.rowId;
        if (jobId) jobs.push(jobId);
        if (job.status >= 500 && job.status !== 503) serverErrors++;
        await sleep(20);
      }
    });
    await sleep(4_000);
    say("SIGTERM worker 1");
    await d.restartWorker(0);
    await sleep(3_000);
    say("stopping PostgreSQL");
    await d.stopPostgres();
    await sleep(3_000);
    say("starting PostgreSQL");
    await d.startPostgres();
    await sleep(4_000);
    say("SIGTERM worker 2");
    await d.restartWorker(1);
    await sleep(4_000);
    loading = false;
    await Promise.all(load);
    check("no 5xx but 503 under load", serverErrors === 0, `${serverErrors} other 5xx answers`);

    // Every job finishes (or fails with a code) within 90 s; each succeeded job made exactly one summary and one usage record.
    const db = new pg.Client({ connectionString: d.rootUrl });
    await db.connect();
    try {
      const deadline = Date.now() + 90_000;
      let open = -1;
      while (Date.now() < deadline) {
        const { rows } = await db.query<{ n: number }>("select count(*)::int as n from app_public.jobs where status in ('queued', 'running')");
        open = rows[0]!.n;
        if (open === 0) break;
        await sleep(1_000);
      }
      const { rows: counts } = await db.query<{ status: string; n: number }>(
        "select status::text, count(*)::int as n from app_public.jobs where id = any($1::uuid[]) group by status order by status",
        [jobs],
      );
      check(
        "every job finished",
        open === 0,
        `${jobs.length} jobs acknowledged; by status ${JSON.stringify(Object.fromEntries(counts.map((r) => [r.status, r.n])))}`,
      );
      const { rows: exact } = await db.query<{ bad: number; succeeded: number }>(
        `select count(*) filter (where s.n <> 1 or u.n <> 1)::int as bad, count(*)::int as succeeded
           from app_public.jobs j
           cross join lateral (select count(*) as n from app_public.summaries s where s.job_id = j.id) s
           cross join lateral (select count(*) as n from app_public.usage_records u where u.job_id = j.id) u
          where j.status = 'succeeded'`,
      );
      check(
        "each succeeded job made one summary and one charge",
        exact[0]!.bad === 0,
        `${exact[0]!.succeeded} succeeded, ${exact[0]!.bad} with other than one summary or usage record`,
      );
      const { rows: present } = await db.query<{ n: number }>("select count(*)::int as n from app_public.documents where id = any($1::uuid[])", [acknowledged]);
      check("every acknowledged write is there", present[0]!.n === acknowledged.length, `${present[0]!.n} of ${acknowledged.length}`);
      const { rows: chains } = await db.query<{ org_id: string; valid: boolean; problem: string | null }>(
        "select o.id as org_id, v.valid, v.problem from app_public.organizations o cross join lateral app_admin.verify_audit_chain(o.id) v",
      );
      check(
        "audit chains verify",
        chains.length > 0 && chains.every((c) => c.valid),
        chains.map((c) => `${c.valid ? "valid" : `broken (${c.problem})`}`).join(", "),
      );
    } finally {
      await db.end();
    }

    await sleep(5_000);
    const heap = await heapUsedBytes(d.metricsUrl);
    const ok = heap < baselineHeap + 64e6;
    check("server heap back near its baseline", ok, `${(baselineHeap / 1e6).toFixed(1)} MB before, ${(heap / 1e6).toFixed(1)} MB after (bound: +64 MB)`);
    check("the server process stayed up", d.server.exitCode === null && d.server.signalCode === null, `exit ${d.server.exitCode}`);
  } catch (error) {
    check("the run itself", false, String(error));
    say(d.output().slice(-4_000));
  } finally {
    await d.stop();
  }
  const failed = results.filter((r) => !r.ok).length;
  say(`done in ${Math.round((Date.now() - started) / 1000)} s`);
  process.stdout.write(`chaos: ${results.length - failed} passed, ${failed} failed\n`);
  process.exit(failed === 0 ? 0 : 1);
}

await main();
