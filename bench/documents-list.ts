// `node bench/documents-list.ts`: how many "list my 20 newest documents with their latest summary" GraphQL requests
// Quire serves per second, through row-level security, and at what latency, against a hand-written Express + pg
// route that does the same database work (bench/documents-list-baseline.ts), measured in the same run. The
// baseline is the floor for this request on this machine; the ratio says what Quire's layers (pino-http, grafserv,
// Grafast, PostGraphile's SQL) cost on top of it.
//
// 1. starts Quire (`node bin/start.ts`) as a child process with a fresh DATA_DIR under the OS temp directory, free
//    ports, LOG_LEVEL=warn, GRAPHILE_ENV=production and BCRYPT_COST=10 (only the setup signs in), and waits for
//    /health/ready;
// 2. setup, not measured: registers BENCH_ORGS organizations with the GraphQL `register` mutation (each answer
//    carries its owner's access token); then, as the PostgreSQL superuser, loads BENCH_DOCUMENTS documents per
//    organization, one or two finished summaries (a succeeded job and its summary) for two documents in three,
//    and runs ANALYZE;
// 3. forks the baseline, and bare PostGraphile serving the same schema with none of Quire's plugins
//    (bench/documents-list-bare.ts), with Quire's environment (same database, JWT secret, issuer, audience, pool
//    size);
// 4. checks by hand, with every organization's token, that all three answer 200 with exactly
//    that organization's 20 newest documents and their latest summaries, as the superuser reads them with an
//    explicit organization filter;
// 5. per target (baseline, bare PostGraphile, Quire), BENCH_ROUNDS times (default 1): BENCH_CONNECTIONS connections (default 50), a
//    2 s warm-up thrown away, then BENCH_DURATION s (default 10) measured with autocannon; each connection sends
//    the organizations' tokens in turn, and every answer must be the body checked by hand for its token. CPU use
//    of the target's Node process, PostgreSQL, this bench and everything else comes from /proc; a target measured
//    while other processes used more than 0.2 cores is marked disturbed;
// 6. prints the table and the two targets of the issue (reported, not asserted; the median over rounds) and,
//    when the run was clean, writes them with the machine's facts to bench/results/documents-list-latest.md;
// 7. stops both servers with SIGTERM (exit code 0 expected) and removes the temp DATA_DIR.
// It exits 1 if a server fails to start or stop cleanly, the hand check fails, or a measured run saw connection
// errors, timeouts, non-2xx answers or wrong bodies. Progress goes to stderr; only the results go to stdout.
import { fork, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import autocannon, { type Instance, type Options, type RequestSpec, type Result } from "autocannon";
import pg from "pg";
import { loadConfig } from "../lib/config.ts";
import type { BaselineMessage } from "./documents-list-baseline.ts";
import { cpuBetween, cpuSnapshot, DISTURBED_CORES, type CpuUse } from "./proc-cpu.ts";
import { envInt, freePort, log, running, whole, finishRun, machineFacts } from "./support.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

const WARMUP_SECONDS = 2;
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 45_000; // Quire gives itself SHUTDOWN_TIMEOUT_SECONDS (10) + 15 s before it gives up
const PREFERRED_QUIRE_PORT = 56810;
const PREFERRED_POSTGRES_PORT = 54420;
const PAGE_SIZE = 20;
const PASSWORD = "bench passphrase 2026";
const REGISTRATIONS_AT_ONCE = 4;

const durationSeconds = envInt("BENCH_DURATION", 10, 1, 600);
const connections = envInt("BENCH_CONNECTIONS", 50, 1, 1000);
const organizationCount = envInt("BENCH_ORGS", 100, 1, 1000);
const documentsPerOrganization = envInt("BENCH_DOCUMENTS", 50, 1, 10_000);
// Rounds of (baseline, Quire): on a shared machine, alternating spreads other work over both targets.
const rounds = envInt("BENCH_ROUNDS", 1, 1, 20);
// The tokens must outlive every measured run, with 15 minutes to spare for the setup (at most a day: Quire's limit).
const accessTokenTtlSeconds = Math.min(86_400, rounds * 2 * (durationSeconds + WARMUP_SECONDS) + 900);
const graphileEnv = process.env["GRAPHILE_ENV"] || "production";

/** The request measured; Quire's schema names (schema.graphql). */
const listQuery =
  "{ documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId title createdAt " +
  "summaries(first: 1, orderBy: CREATED_AT_DESC) { nodes { content } } } } }";
const listBody = JSON.stringify({ query: listQuery });

let interrupted = false;
let current: Instance | null = null;

// --- child processes ------------------------------------------------------------------------------------------

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Child {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<Exit>;
  /** The last lines the child wrote (at LOG_LEVEL=warn, normally none), for error reports. */
  readonly tail: string[];
}

/** Forwards a child's output to stderr, prefixed with its name, and keeps the last 30 lines. */
function watch(name: string, child: ChildProcess): Child {
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  const tail: string[] = [];
  const forward = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue;
      process.stderr.write(`[${name}] ${line}\n`);
      tail.push(line);
      if (tail.length > 30) tail.shift();
    }
  };
  child.stdout?.on("data", forward);
  child.stderr?.on("data", forward);
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { name, child, pid: child.pid, exited, tail };
}

/** Quire's environment: the embedded PostgreSQL under `dataDir`; the baseline gets the same one. */
function quireEnv(port: number, postgresPort: number, dataDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: dataDir,
    EMBEDDED_POSTGRES_PORT: String(postgresPort),
    LOG_LEVEL: "warn",
    LOG_PRETTY: "false",
    GRAPHILE_ENV: graphileEnv,
    BCRYPT_COST: "10",
    ACCESS_TOKEN_TTL_SECONDS: String(accessTokenTtlSeconds),
    // Empty counts as unset for Quire, and keeps a `.env` from supplying these: always the embedded PostgreSQL,
    // and HS256 tokens signed with the generated secret, which the baseline verifies the same way.
    DATABASE_URL: "",
    OWNER_DATABASE_URL: "",
    ROOT_DATABASE_URL: "",
    JWT_SECRET: "",
    JWT_PRIVATE_KEY: "",
    JWT_KEY_ID: "",
  };
  delete env["NODE_ENV"]; // Quire's default (development); production would demand DATABASE_URL
  return env;
}

/** `node bin/start.ts`, exactly what `npm start` runs. */
function spawnQuire(env: NodeJS.ProcessEnv): Child {
  // Its own process group: a Ctrl-C at the terminal reaches only the bench, which then stops Quire itself.
  return watch("quire", spawn(process.execPath, ["bin/start.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"], detached: true }));
}

/** Polls Quire's /health/ready until it answers 200; resolves with how long that took. */
async function waitUntilReady(quire: Child, url: string): Promise<number> {
  const started = Date.now();
  let last = "no answer yet";
  while (Date.now() - started < READY_TIMEOUT_MS) {
    if (interrupted) throw new Error("interrupted");
    if (!running(quire.child)) {
      const { code, signal } = await quire.exited;
      throw new Error(`Quire exited (code ${code}, signal ${signal}) before it was ready:\n${quire.tail.join("\n")}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      const body = await response.text();
      if (response.status === 200) return Date.now() - started;
      last = `${response.status} ${body.slice(0, 300)}`;
    } catch (error) {
      last = String((error as Error).cause ?? error);
    }
    await sleep(250);
  }
  throw new Error(`Quire was not ready within ${READY_TIMEOUT_MS / 1000} s (last answer: ${last})`);
}

/** Forks `script` (the baseline, or bare PostGraphile) and waits for its port. */
async function startForked(script: string, name: string, env: NodeJS.ProcessEnv): Promise<{ baseline: Child; port: number }> {
  const child = fork(path.join(root, "bench", script), [], {
    cwd: root,
    env,
    execArgv: [],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true,
    serialization: "json",
  });
  const baseline = watch(name, child);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ${name} did not start within 30 s`)), 30_000);
    child.once("message", (message: BaselineMessage) => {
      clearTimeout(timer);
      if (message.type === "ready") resolve(message.port);
      else reject(new Error(`the ${name} failed to start: ${message.message}`));
    });
    void baseline.exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`the ${name} exited with code ${code} before it was ready:\n${baseline.tail.join("\n")}`));
    });
  });
  return { baseline, port };
}

/** SIGTERM, then waits for the exit (SIGKILL after STOP_TIMEOUT_MS). */
async function stopChild(target: Child): Promise<Exit & { ms: number }> {
  const started = Date.now();
  if (running(target.child)) target.child.kill("SIGTERM");
  const timedOut = Symbol("timed out");
  const result = await Promise.race([target.exited, sleep(STOP_TIMEOUT_MS, undefined, { ref: false }).then(() => timedOut)]);
  if (result === timedOut) {
    log(`${target.name} did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM: sending SIGKILL`);
    target.child.kill("SIGKILL");
    return { ...(await target.exited), ms: Date.now() - started };
  }
  return { ...(result as Exit), ms: Date.now() - started };
}

// --- setup ----------------------------------------------------------------------------------------------------

interface Tenant {
  readonly orgId: string;
  readonly userId: string;
  readonly token: string;
}

async function post(url: string, body: string, token?: string): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
  if (token) headers["authorization"] = `Bearer ${token}`;
  const response = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(30_000) });
  return { status: response.status, text: await response.text() };
}

const registerMutation = "mutation Register($input: RegisterInput!) { register(input: $input) { success } }";
const loginMutation = "mutation Login($input: LoginInput!) { login(input: $input) { accessToken user { rowId } organization { rowId } } }";

/** One organization per call of the real sign-up mutation, then the owner's sign-in, whose answer carries the token. */
async function register(graphqlUrl: string, n: number): Promise<Tenant> {
  const input = { organizationName: `Bench Org ${n}`, email: `owner${n}@bench.example`, password: PASSWORD, fullName: `Owner ${n}` };
  const registered = await post(graphqlUrl, JSON.stringify({ query: registerMutation, variables: { input } }));
  if (registered.status !== 200 || !registered.text.includes('"success":true'))
    throw new Error(`register ${n}: ${registered.status} ${registered.text.slice(0, 300)}`);
  const { status, text } = await post(graphqlUrl, JSON.stringify({ query: loginMutation, variables: { input: { email: input.email, password: PASSWORD } } }));
  const payload = (JSON.parse(text) as { data?: { login?: { accessToken: string; user: { rowId: string }; organization: { rowId: string } } } }).data?.login;
  if (status !== 200 || !payload) throw new Error(`login ${n}: ${status} ${text.slice(0, 300)}`);
  return { orgId: payload.organization.rowId, userId: payload.user.rowId, token: payload.accessToken };
}

async function registerAll(graphqlUrl: string): Promise<Tenant[]> {
  const tenants: Tenant[] = [];
  for (let first = 1; first <= organizationCount; first += REGISTRATIONS_AT_ONCE) {
    if (interrupted) throw new Error("interrupted");
    const batch = Array.from({ length: Math.min(REGISTRATIONS_AT_ONCE, organizationCount - first + 1) }, (_, i) => first + i);
    tenants.push(...(await Promise.all(batch.map((n) => register(graphqlUrl, n)))));
  }
  return tenants;
}

/**
 * Documents, and finished summaries for two in three of them, loaded as the superuser. Triggers are skipped
 * (session_replication_role = replica) so each document gets its own creation time, a minute apart; the columns
 * they maintain (content_hash, revision, updated_at) are filled the same way here, and `search` is generated.
 */
async function loadDocuments(db: pg.Client, tenants: readonly Tenant[]): Promise<{ documents: number; summaries: number }> {
  await db.query("begin");
  await db.query("set local session_replication_role = replica");
  const documents = await db.query(
    `insert into app_public.documents (org_id, title, content, author_id, revision, content_hash, created_at, updated_at)
     select t.org_id, d.title, d.content, t.user_id, 1, encode(sha256(convert_to(d.content, 'UTF8')), 'hex'), d.created_at, d.created_at
       from unnest($1::uuid[], $2::uuid[]) as t(org_id, user_id)
      cross join generate_series(1, $3::int) as n
      cross join lateral (
        select format('Document %s', n) as title,
               format(E'# Document %s\\n\\n%s', n, repeat('Notes and decisions of the team, kept for later reference. ', 8)) as content,
               now() - make_interval(mins => n) - random() * interval '50 seconds' as created_at
      ) as d`,
    [tenants.map((t) => t.orgId), tenants.map((t) => t.userId), documentsPerOrganization],
  );
  // Per organization, counting from the oldest: documents 1, 4, 7, … get one summary, 2, 5, 8, … two, 3, 6, 9, … none.
  const summaries = await db.query(
    `with picked as (
       select d.org_id, d.id as document_id, d.author_id, d.title, d.created_at + make_interval(secs => k) as made_at, k
         from (select d.*, row_number() over (partition by d.org_id order by d.created_at) as rn
                 from app_public.documents d where d.org_id = any($1::uuid[])) as d
        cross join generate_series(1, (d.rn % 3)::int) as k
     ), made as (
       select gen_random_uuid() as job_id, gen_random_uuid() as summary_id, p.*,
              (select v.id from app_public.global_template_versions v order by v.created_at limit 1) as template_version_id
         from picked p
     ), jobs as (
       insert into app_public.jobs (id, org_id, kind, status, document_id, global_template_version_id, summary_id, requested_by,
                                    attempts, created_at, updated_at, started_at, finished_at)
       select m.job_id, m.org_id, 'summarize', 'succeeded', m.document_id, m.template_version_id, m.summary_id, m.author_id,
              1, m.made_at, m.made_at, m.made_at, m.made_at
         from made m
     )
     insert into app_public.summaries (id, org_id, document_id, job_id, global_template_version_id, content, provider, model,
                                       prompt_tokens, completion_tokens, latency_ms, document_revision, created_at)
     select m.summary_id, m.org_id, m.document_id, m.job_id, m.template_version_id,
            format('Summary %s of %s: %s', m.k, m.title, repeat('The team agreed on the plan and its owners. ', 6)),
            'extractive', 'extractive-v1', 180, 60, 5, 1, m.made_at
       from made m`,
    [tenants.map((t) => t.orgId)],
  );
  await db.query("commit");
  await db.query("analyze app_public.documents, app_public.summaries, app_public.jobs");
  return { documents: documents.rowCount ?? 0, summaries: summaries.rowCount ?? 0 };
}

interface Page {
  readonly data: { readonly documents: { readonly nodes: ReadonlyArray<unknown> } };
}

/** What an organization's list must be, read by the superuser (no RLS) with an explicit organization filter. */
async function expectedPage(db: pg.Client, orgId: string): Promise<Page> {
  const { rows } = await db.query<{ id: string; title: string; created_at: string; summary: string | null }>(
    `select d.id, d.title, to_char(d.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM') as created_at,
            (select s.content from app_public.summaries s
              where s.org_id = d.org_id and s.document_id = d.id
              order by s.created_at desc, s.id desc limit 1) as summary
       from app_public.documents d
      where d.org_id = $1
      order by d.created_at desc, d.id desc
      limit ${PAGE_SIZE}`,
    [orgId],
  );
  const nodes = rows.map((r) => ({
    rowId: r.id,
    title: r.title,
    createdAt: r.created_at,
    summaries: { nodes: r.summary === null ? [] : [{ content: r.summary }] },
  }));
  return { data: { documents: { nodes } } };
}

// --- load -----------------------------------------------------------------------------------------------------

interface Target {
  readonly name: string;
  readonly url: string;
  readonly pid: number;
  /** Per tenant, the body checked by hand: every measured answer for that token must be exactly this. */
  readonly bodies: string[];
}

interface Tally {
  mismatches: number;
  sample: string | null;
}

function cannon(options: Options): Promise<Result> {
  return new Promise((resolve, reject) => {
    let guard: NodeJS.Timeout | undefined;
    const instance = autocannon(options, (error, result) => {
      clearTimeout(guard);
      current = null;
      if (error) reject(error);
      else resolve(result);
    });
    current = instance;
    // autocannon ends on its own after `duration`; this only bounds a run that somehow does not.
    guard = setTimeout(() => instance.stop(), ((options.duration ?? 10) + 30) * 1000);
  });
}

/** autocannon options: each connection cycles through the tenants' tokens; answers are checked against `bodies`. */
function loadOptions(target: Target, tenants: readonly Tenant[], tally: Tally, duration: number): Options {
  const requests: RequestSpec[] = tenants.map((tenant, i) => ({
    method: "POST",
    path: "/graphql",
    headers: { "content-type": "application/json", accept: "application/json", authorization: `Bearer ${tenant.token}` },
    body: listBody,
    onResponse(status, body) {
      if (status === 200 && body !== target.bodies[i]) {
        tally.mismatches++;
        tally.sample ??= body.slice(0, 300);
      }
    },
  }));
  return { url: target.url, connections, duration, requests, title: target.name };
}

interface Measured {
  readonly round: number;
  readonly target: Target;
  readonly result: Result;
  readonly tally: Tally;
  readonly cpu: CpuUse | null;
}

async function measure(round: number, target: Target, tenants: readonly Tenant[], postgresParent: number): Promise<Measured> {
  log(`${target.name}: warm-up ${WARMUP_SECONDS} s`);
  const warmup: Tally = { mismatches: 0, sample: null };
  const warm = await cannon(loadOptions(target, tenants, warmup, WARMUP_SECONDS));
  if (interrupted) throw new Error("interrupted");
  if (warm.errors > 0 || warm.non2xx > 0 || warmup.mismatches > 0) {
    throw new Error(`${target.name} warm-up: ${warm.errors} errors, ${warm.non2xx} non-2xx, ${warmup.mismatches} wrong bodies (${warmup.sample})`);
  }
  log(`${target.name}: measuring ${durationSeconds} s with ${connections} connections (round ${round} of ${rounds})`);
  const tally: Tally = { mismatches: 0, sample: null };
  // PostgreSQL is every process under Quire's, which started it; the baseline's connections are served there too.
  const groups = {
    server: { pid: target.pid, descendants: false },
    postgres: { pid: postgresParent, descendants: true },
    bench: { pid: process.pid, descendants: false },
  };
  const before = cpuSnapshot(groups);
  const result = await cannon(loadOptions(target, tenants, tally, durationSeconds));
  const cpu = cpuBetween(before, cpuSnapshot(groups));
  if (interrupted) throw new Error("interrupted");
  return { round, target, result, tally, cpu };
}

// --- report ---------------------------------------------------------------------------------------------------

const ratio = (n: number) => `${n.toFixed(2)}×`;

function table(rows: readonly Measured[]): string {
  const lines = [
    "| Round | Target | Req/s (mean ± sd) | vs baseline | Latency p50 | p97.5 | p99 | Requests | Errors | Non-2xx | Wrong bodies | " +
      "CPU cores: all / server / PostgreSQL / bench / other | CPU ms per request: server / PostgreSQL |",
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const { round, target, result, tally, cpu } of rows) {
    const { requests, latency } = result;
    const baseline = rows.find((r) => r.round === round)!.result.requests.average;
    const group = (name: string) => cpu?.groups.get(name) ?? 0;
    const cores = cpu ? [cpu.all, group("server"), group("postgres"), group("bench"), cpu.other].map((n) => n.toFixed(2)).join(" / ") : "–";
    const perRequest = (name: string) => ((group(name) * (cpu?.seconds ?? 0) * 1000) / Math.max(1, latency.totalCount)).toFixed(2);
    lines.push(
      `| ${round} | ${target.name} | ${whole(requests.average)} ± ${whole(requests.stddev)} | ${ratio(requests.average / baseline)} | ` +
        `${latency.p50} ms | ${latency.p97_5} ms | ${latency.p99} ms | ${whole(latency.totalCount)} | ${result.errors} | ` +
        `${result.non2xx} | ${tally.mismatches} | ${cores} | ${cpu ? `${perRequest("server")} / ${perRequest("postgres")}` : "–"} |`,
    );
  }
  return lines.join("\n");
}

const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

const baselineName = "baseline: Express + pg, same SQL work";
const bareName = "bare PostGraphile, same schema, no Quire plugins";
const quireName = "Quire `POST /graphql`";

/** The issue's targets, from each round's three runs (the median over rounds when there are several). */
function targetLines(rows: readonly Measured[]): string[] {
  const triples: Array<{ baseline: Measured; bare: Measured; quire: Measured }> = [];
  for (let round = 1; round <= rounds; round++) {
    const of = (name: string) => rows.find((r) => r.round === round && r.target.name === name);
    const [b, p, q] = [of(baselineName), of(bareName), of(quireName)];
    if (b && p && q) triples.push({ baseline: b, bare: p, quire: q });
  }
  if (triples.length === 0) return [];
  const reqs = (m: Measured) => m.result.requests.average;
  const p99 = (m: Measured) => Math.max(1, m.result.latency.p99);
  const throughput = triples.map((t) => reqs(t.quire) / reqs(t.baseline));
  const tail = triples.map((t) => p99(t.quire) / p99(t.baseline));
  const bareCost = triples.map((t) => reqs(t.bare) / reqs(t.quire));
  const bareThroughput = triples.map((t) => reqs(t.bare) / reqs(t.baseline));
  const bareTail = triples.map((t) => p99(t.quire) / p99(t.bare));
  const of = (values: number[]) => (values.length > 1 ? `median of ${values.map(ratio).join(", ")}: ` : "");
  return [
    `- Requests per second, Quire ÷ baseline: ${of(throughput)}${ratio(median(throughput))} ` +
      `(target ≥ 0.60×: ${median(throughput) >= 0.6 ? "met" : "missed"})`,
    `- Latency p99, Quire ÷ baseline: ${of(tail)}${ratio(median(tail))} (target ≤ 2.00×: ${median(tail) <= 2 ? "met" : "missed"})`,
    `- Cost per request, Quire ÷ bare PostGraphile (bare req/s ÷ Quire req/s): ${of(bareCost)}${ratio(median(bareCost))} ` +
      `(target ≤ 1.30×: ${median(bareCost) <= 1.3 ? "met" : "missed"}); latency p99, Quire ÷ bare: ${of(bareTail)}${ratio(median(bareTail))}`,
    `- Requests per second, bare PostGraphile ÷ baseline (PostGraphile's own share): ${of(bareThroughput)}${ratio(median(bareThroughput))}`,
  ];
}

function packageVersion(name: string): string {
  try {
    const manifest = JSON.parse(readFileSync(path.join(root, "node_modules", name, "package.json"), "utf8")) as { version?: unknown };
    return String(manifest.version ?? "?");
  } catch {
    return "?";
  }
}

// --- main -----------------------------------------------------------------------------------------------------

const failures: string[] = [];
const rows: Measured[] = [];
const notes: string[] = [];
let quire: Child | null = null;
let baseline: Child | null = null;
let bare: Child | null = null;
let dataDir: string | null = null;
let postgresVersion = "?";
let poolMax = 0;

const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping the run and cleaning up`);
  current?.stop();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// Last resort if this process ends some other way: the servers must not outlive it.
process.on("exit", () => {
  for (const child of [quire, baseline, bare]) if (child && running(child.child)) child.child.kill("SIGTERM");
});

try {
  // How busy the machine is before anything starts: on two cores, other work changes the result completely.
  const quietFrom = cpuSnapshot({ bench: { pid: process.pid, descendants: false } });
  await sleep(1_000);
  const quiet = cpuBetween(quietFrom, cpuSnapshot({ bench: { pid: process.pid, descendants: false } }));
  if (quiet) {
    notes.push(`before the run, other processes used ${quiet.other.toFixed(2)} of ${os.availableParallelism()} cores`);
    log(notes.at(-1)!);
    if (quiet.other > DISTURBED_CORES) log("WARNING: the machine is not idle; the results will be disturbed by that other work");
  }
  dataDir = await mkdtemp(path.join(os.tmpdir(), "quire-bench-"));
  // Run as root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter DATA_DIR.
  await chmod(dataDir, 0o755);
  const quirePort = await freePort(PREFERRED_QUIRE_PORT, []);
  const postgresPort = await freePort(PREFERRED_POSTGRES_PORT, [quirePort]);
  const env = quireEnv(quirePort, postgresPort, dataDir);
  const graphqlUrl = `http://127.0.0.1:${quirePort}/graphql`;
  log(`starting Quire on 127.0.0.1:${quirePort} (embedded PostgreSQL on ${postgresPort}, DATA_DIR ${dataDir})`);
  quire = spawnQuire(env);
  const readyMs = await waitUntilReady(quire, `http://127.0.0.1:${quirePort}/health/ready`);
  log(`Quire ready after ${(readyMs / 1000).toFixed(1)} s`);

  // The bench reads the same settings Quire derived (secrets.json under DATA_DIR now exists).
  const config = loadConfig(env);
  poolMax = config.database.poolMax;
  const superuserUrl = new URL(config.database.rootUrl!);
  superuserUrl.pathname = `/${config.database.name}`;

  log(`registering ${organizationCount} organizations through GraphQL \`register\``);
  let started = Date.now();
  const tenants = await registerAll(graphqlUrl);
  notes.push(`${tenants.length} organizations registered in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const db = new pg.Client({ connectionString: superuserUrl.href, application_name: "bench-setup" });
  await db.connect();
  let expected: Page[];
  try {
    postgresVersion = (await db.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]!.v;
    started = Date.now();
    const loaded = await loadDocuments(db, tenants);
    notes.push(`${whole(loaded.documents)} documents and ${whole(loaded.summaries)} summaries loaded in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    expected = [];
    for (const tenant of tenants) expected.push(await expectedPage(db, tenant.orgId));
  } finally {
    await db.end();
  }
  log(notes.slice(-2).join("; "));

  const forked = await startForked("documents-list-baseline.ts", "baseline", env);
  baseline = forked.baseline;
  log(`baseline Express route on 127.0.0.1:${forked.port} (pid ${baseline.pid})`);
  const forkedBare = await startForked("documents-list-bare.ts", "bare PostGraphile", env);
  bare = forkedBare.baseline;
  log(`bare PostGraphile on 127.0.0.1:${forkedBare.port} (pid ${bare.pid})`);

  const targets: Target[] = [
    { name: baselineName, url: `http://127.0.0.1:${forked.port}/graphql`, pid: baseline.pid, bodies: [] },
    { name: bareName, url: `http://127.0.0.1:${forkedBare.port}/graphql`, pid: bare.pid, bodies: [] },
    { name: quireName, url: graphqlUrl, pid: quire.pid, bodies: [] },
  ];

  // The check by hand: every token, both targets, against what the superuser reads.
  let identical = 0;
  for (const [i, tenant] of tenants.entries()) {
    for (const target of targets) {
      const { status, text } = await post(target.url, listBody, tenant.token);
      if (status !== 200 || !isDeepStrictEqual(JSON.parse(text), expected[i])) {
        throw new Error(`${target.name} answered organization ${i + 1} wrongly: ${status} ${text.slice(0, 300)}`);
      }
      target.bodies.push(text);
    }
    if (targets[0]!.bodies[i] === targets[2]!.bodies[i]) identical++;
  }
  const shown = expected[0]!.data.documents.nodes.length;
  notes.push(
    `checked by hand: for each of the ${tenants.length} tokens both answered 200 with the organization's ${shown} newest documents ` +
      `(same ids, same order) and their latest summaries, as the superuser reads them; ${identical} of ${tenants.length} bodies byte-identical`,
  );
  log(notes.at(-1)!);

  for (let round = 1; round <= rounds; round++) {
    for (const target of targets) {
      if (interrupted) throw new Error("interrupted");
      const row = await measure(round, target, tenants, quire.pid);
      rows.push(row);
      const { result, tally } = row;
      if (result.errors > 0 || result.non2xx > 0 || tally.mismatches > 0) {
        failures.push(
          `round ${round}, ${target.name}: ${result.errors} errors (${result.timeouts} timeouts), ${result.non2xx} non-2xx, ` +
            `${tally.mismatches} wrong bodies${tally.sample ? ` (first: ${tally.sample})` : ""}; status codes ${JSON.stringify(result.statusCodeStats)}`,
        );
      }
    }
  }
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  for (const child of [baseline, bare, quire]) {
    if (!child) continue;
    log(`stopping ${child.name} (SIGTERM)`);
    const stopped = await stopChild(child);
    if (stopped.code !== 0) failures.push(`${child.name} exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
    else log(`${child.name} exited with code 0 after ${(stopped.ms / 1000).toFixed(1)} s`);
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
}

const facts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  `- autocannon ${packageVersion("autocannon")}, PostgreSQL ${postgresVersion} (embedded), ` +
    `express ${packageVersion("express")}, pg ${packageVersion("pg")}`,
  `- Load: ${connections} connections, ${WARMUP_SECONDS} s warm-up then ${durationSeconds} s measured per target and round ` +
    `(${rounds} round${rounds === 1 ? "" : "s"} of baseline then Quire), ` +
    `generated by this process on the same machine, to 127.0.0.1; each connection cycles through the organizations' tokens`,
  `- Data: ${organizationCount} organizations × ${documentsPerOrganization} documents; ` +
    `Quire: \`node bin/start.ts\`, LOG_LEVEL=warn, GRAPHILE_ENV=${graphileEnv}, DATABASE_POOL_MAX=${poolMax}; the baseline's pool has the same size`,
  ...notes.map((n) => `- ${n[0]!.toUpperCase()}${n.slice(1)}`),
];
const disturbed = rows
  .filter(({ cpu }) => cpu && cpu.other > DISTURBED_CORES)
  .map(({ round, target, cpu }) => `- **Disturbed**: other processes used ${cpu!.other.toFixed(2)} cores while ${target.name} was measured (round ${round})`);
const targetsText = [...targetLines(rows), ...disturbed];
const output = [table(rows), "", ...targetsText, "", ...facts].join("\n");
process.stdout.write(`${output}\n`);

await finishRun("documents-list-latest.md", failures, () =>
  [
    "# Documents list through RLS: latest run",
    "",
    "Written by `node bench/documents-list.ts`; see bench/results/rls.md for what is measured and how to read it.",
    "",
    output,
    "",
  ].join("\n"),
);
