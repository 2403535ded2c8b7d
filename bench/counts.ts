// `node bench/counts.ts`: what one documents-list request and one summary job cost PostgreSQL, counted rather than
// timed, so the figures are the same from run to run on a shared machine where timings are not (issue 12).
//
// 1. starts its own embedded PostgreSQL (db/embedded.ts, a fresh DATA_DIR under the OS temp directory, a free port)
//    and restarts it once with shared_preload_libraries = pg_stat_statements, pg_stat_statements.track = all (so
//    statements inside functions are counted too, as toplevel = false), track_functions = all, and autovacuum off
//    (its work would land in whichever phase it happened to run in); then runs Quire (`node bin/start.ts`, server and
//    worker in one process, quire-child.ts) on that server through DATABASE_URL, OWNER_DATABASE_URL and
//    ROOT_DATABASE_URL, with the zero-latency fake LLM (fake-llm.ts) as its provider, as bench/job-pipeline.ts does.
//    With DATABASE_URL (or `--url <url>`) set instead, Quire runs on that server (OWNER_DATABASE_URL and
//    ROOT_DATABASE_URL as for `npm start`), which must already preload pg_stat_statements: if it does not, the bench
//    says how to enable it and exits 2 before touching anything;
// 2. setup, not counted: BENCH_ORGS organizations with a member and BENCH_DOCS_PER_ORG documents each, through the
//    public API (live-support.ts), and a free-tier allowance large enough for every job;
// 3. two phases, each after BENCH_WARMUP unmeasured rounds, a CHECKPOINT (so full-page images start from the same
//    point) and a wait until Quire's idle connections have reported their statistics:
//    - jobs: BENCH_JOBS summarizeDocument mutations, one at a time, each waited for until its job succeeded
//      (through pg_stat_statements, so the waiting adds nothing to Quire's database), round-robin over the
//      organizations' documents: the mutation, the worker's statements and graphile-worker's own, per job;
//    - list: BENCH_REQUESTS of the documents-list query of bench (a) (documents-list.ts: 20 newest documents with
//      their latest summary), one at a time, round-robin over the organizations' member tokens;
//    pg_stat_statements is reset at the start of a phase and read the moment it ends (it counts at once); the
//    cumulative statistics (pg_stat_database, pg_stat_wal, pg_stat_io, pg_stat_user_functions) are read before and
//    after, the second time once every backend has reported (PostgreSQL holds an idle backend's counts for up to
//    10 s). What Quire did meanwhile on its own (heartbeats, rate-limit syncs) is shown as the statements it ran
//    during that wait: when there were none, the after-phase figures are exactly the phase's;
// 4. prints, per request and per job: round trips (top-level statements in Quire's database), transactions
//    committed and rolled back, statements run inside functions, WAL records, full-page images, bytes, writes and
//    flushes, then the top-level and nested statements and the functions called, each per request or job; and
//    writes them with the machine's facts to bench/results/counts-latest.md when the run was clean;
// 5. stops Quire (exit code 0 expected) and its PostgreSQL, and removes the temp directories.
// Exits 1 when a mutation fails, a job does not succeed within BENCH_JOB_TIMEOUT_SECONDS, a list answer is not 20
// documents, or Quire fails to start or stop; 2 on a server without pg_stat_statements. Progress goes to stderr;
// only the results go to stdout.
import { execFileSync } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../db/embedded.ts";
import { loadConfig } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { FAKE_MODEL } from "./fake-llm.ts";
import { createTenants, graphql, startFakeLlm, type FakeLlm, type Tenant } from "./live-support.ts";
import { startQuire, type ExitStatus, type Quire } from "./quire-child.ts";
import { envInt, freePort, log, machineFacts, watchInterrupts, whole, finishRun } from "./support.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

const requestCount = envInt("BENCH_REQUESTS", 200, 1, 100_000);
const jobCount = envInt("BENCH_JOBS", 200, 1, 100_000);
const warmup = envInt("BENCH_WARMUP", 20, 0, 10_000);
const orgCount = envInt("BENCH_ORGS", 5, 1, 100);
// The list shows 20 documents: more than that per organization makes every page full.
const documentsPerOrg = envInt("BENCH_DOCS_PER_ORG", 25, 1, 100);
// As bench/job-pipeline.ts: 4 workers, so graphile-worker's wake-ups are the ones that bench sees.
const workerConcurrency = envInt("WORKER_CONCURRENCY", 4, 1, 100);
const jobTimeoutSeconds = envInt("BENCH_JOB_TIMEOUT_SECONDS", 30, 1, 600);

const PREFERRED_POSTGRES_PORT = 54440;
/** PGSTAT_IDLE_INTERVAL (10 s): how long an idle backend may hold statistics it has not reported, plus a margin. */
const STATS_SETTLE_MS = 11_500;
const TOP_ROWS = 12;

/** The request of bench (a), bench/documents-list.ts. */
const LIST_QUERY =
  "{ documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId title createdAt " +
  "summaries(first: 1, orderBy: CREATED_AT_DESC) { nodes { content } } } } }";
const SUMMARIZE = `mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId status } } }`;
/** The worker's last statement of a job (worker/tasks/summarize.ts): its calls say how many jobs finished. */
const FINISH_STATEMENT = "%finish_summary_job%";

const ENABLE_HINT = [
  "The counts need pg_stat_statements loaded at server start. On that server, as a superuser:",
  "  alter system set shared_preload_libraries = 'pg_stat_statements';  -- keep any libraries already listed",
  "  alter system set pg_stat_statements.track = 'all';",
  "  alter system set track_functions = 'all';",
  "then restart PostgreSQL (a reload is not enough for shared_preload_libraries). Or leave DATABASE_URL unset:",
  "the bench then starts an embedded PostgreSQL of its own with those settings.",
].join("\n");

const interrupt = watchInterrupts();
const checkInterrupted = interrupt.check;

// --- the server -----------------------------------------------------------------------------------------------

interface Server {
  /** What Quire is given: DATABASE_URL, OWNER_DATABASE_URL, ROOT_DATABASE_URL. */
  readonly quireEnv: Readonly<Record<string, string>>;
  /** A superuser login on a database other than Quire's where possible, so its own work is not counted. */
  readonly observerUrl: string;
  readonly database: string;
  readonly description: string;
  stop(): Promise<void>;
}

function externalUrl(): string | null {
  const flag = process.argv.indexOf("--url");
  if (flag >= 0) {
    const value = process.argv[flag + 1];
    if (!value) {
      process.stderr.write("--url needs a postgres:// URL (Quire's runtime login, as DATABASE_URL)\n");
      process.exit(2);
    }
    return value;
  }
  return process.env["DATABASE_URL"] || null;
}

/** The embedded PostgreSQL, started, given the settings, and restarted so the library is loaded. */
async function startOwnPostgres(): Promise<Server> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "quire-counts-"));
  // Run as root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter DATA_DIR.
  await chmod(dataDir, 0o755);
  const port = await freePort(PREFERRED_POSTGRES_PORT, []);
  const { database } = loadConfig({ DATA_DIR: dataDir, EMBEDDED_POSTGRES_PORT: String(port) });
  const logger = createLogger({ level: "warn", pretty: false });
  let embedded: EmbeddedPostgres | null = null;
  try {
    log(`starting embedded PostgreSQL on 127.0.0.1:${port} (DATA_DIR ${dataDir})`);
    embedded = await startEmbeddedPostgres(database.embedded!, logger);
    const admin = new pg.Client({ connectionString: database.rootUrl!, application_name: "bench-counts-setup" });
    await admin.connect();
    try {
      // This cluster is the bench's alone; ALTER SYSTEM writes postgresql.auto.conf, read at the restart below.
      for (const setting of [
        "shared_preload_libraries = 'pg_stat_statements'",
        "pg_stat_statements.track = 'all'",
        "track_functions = 'all'",
        "autovacuum = off",
      ]) {
        await admin.query(`alter system set ${setting}`);
      }
    } finally {
      await admin.end();
    }
    await embedded.stop();
    embedded = null;
    log("restarting it with pg_stat_statements loaded");
    embedded = await startEmbeddedPostgres(database.embedded!, logger);
  } catch (error) {
    await embedded?.stop();
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    throw error;
  }
  const running = embedded;
  return {
    quireEnv: { DATABASE_URL: database.url, OWNER_DATABASE_URL: database.ownerUrl!, ROOT_DATABASE_URL: database.rootUrl! },
    observerUrl: database.rootUrl!, // the `postgres` database
    database: database.name,
    description: "embedded, started by the bench with pg_stat_statements preloaded, autovacuum off",
    async stop() {
      await running.stop();
      await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

/** A server given through DATABASE_URL / --url; exits 2, having changed nothing, when it cannot count. */
async function useExternalPostgres(url: string): Promise<Server> {
  const ownerUrl = process.env["OWNER_DATABASE_URL"] || "";
  const rootUrl = process.env["ROOT_DATABASE_URL"] || "";
  const observerUrl = rootUrl || url;
  const client = new pg.Client({ connectionString: observerUrl, application_name: "bench-counts-check" });
  await client.connect();
  let settings: { libraries: string; track: string | null; functions: string; superuser: string };
  try {
    settings = (
      await client.query<{ libraries: string; track: string | null; functions: string; superuser: string }>(
        `select current_setting('shared_preload_libraries') as libraries,
                current_setting('pg_stat_statements.track', true) as track,
                current_setting('track_functions') as functions,
                current_setting('is_superuser') as superuser`,
      )
    ).rows[0]!;
  } finally {
    await client.end();
  }
  const loaded = settings.libraries.split(",").some((name) => name.trim() === "pg_stat_statements");
  const problems = [
    ...(loaded ? [] : [`shared_preload_libraries is ${JSON.stringify(settings.libraries)}: pg_stat_statements is not loaded`]),
    ...(loaded && settings.track !== "all" ? [`pg_stat_statements.track is ${settings.track}, not all: statements inside functions are not counted`] : []),
    ...(settings.functions !== "all" ? [`track_functions is ${settings.functions}, not all: function calls are not counted`] : []),
    ...(settings.superuser !== "on" ? ["the bench reads and resets statistics: ROOT_DATABASE_URL (or the URL given) must be a superuser's"] : []),
    ...(ownerUrl && rootUrl ? [] : ["Quire needs OWNER_DATABASE_URL and ROOT_DATABASE_URL besides DATABASE_URL to set up its database there"]),
  ];
  if (problems.length > 0) {
    process.stderr.write(`bench/counts.ts cannot count on ${new URL(url).host}:\n${problems.map((p) => `- ${p}`).join("\n")}\n\n${ENABLE_HINT}\n`);
    process.exit(2);
  }
  const database = decodeURIComponent(new URL(url).pathname.slice(1));
  return {
    quireEnv: { DATABASE_URL: url, OWNER_DATABASE_URL: ownerUrl, ROOT_DATABASE_URL: rootUrl },
    observerUrl: rootUrl,
    database,
    description: `given (${new URL(url).host}), shared with whatever else runs there`,
    stop: async () => undefined,
  };
}

// --- counting -------------------------------------------------------------------------------------------------

interface Statement {
  readonly query: string;
  readonly toplevel: boolean;
  readonly calls: number;
  readonly walRecords: number;
  readonly walBytes: number;
}

/** The cumulative statistics, read before and after a phase. */
interface Cumulative {
  readonly commits: number;
  readonly rollbacks: number;
  readonly walRecords: number;
  readonly walFpi: number;
  readonly walBytes: number;
  /** WAL write() and fsync calls: by client backends (pg_stat_io, object wal) from PostgreSQL 18, where a commit
   *  that waits for its flush does it; by every process (pg_stat_wal) before. */
  readonly walWrites: number;
  readonly walSyncs: number;
  readonly functions: ReadonlyMap<string, number>;
}

class Counter {
  private readonly observer: pg.Client;
  /** On Quire's database: pg_stat_user_functions shows only the current database's functions. */
  private readonly local: pg.Client;
  private readonly databaseOid: number;
  readonly walFromIo: boolean;

  private constructor(observer: pg.Client, local: pg.Client, databaseOid: number, walFromIo: boolean) {
    this.observer = observer;
    this.local = local;
    this.databaseOid = databaseOid;
    this.walFromIo = walFromIo;
  }

  static async open(observerUrl: string, database: string): Promise<Counter> {
    const observer = new pg.Client({ connectionString: observerUrl, application_name: "bench-counts" });
    await observer.connect();
    const localUrl = new URL(observerUrl);
    localUrl.pathname = `/${database}`;
    const local = new pg.Client({ connectionString: localUrl.href, application_name: "bench-counts-functions" });
    await local.connect();
    await observer.query("create extension if not exists pg_stat_statements");
    const { rows } = await observer.query<{ oid: number; version: number }>(
      "select oid::int, current_setting('server_version_num')::int as version from pg_database where datname = $1",
      [database],
    );
    if (!rows[0]) throw new Error(`database ${database} not found`);
    return new Counter(observer, local, rows[0].oid, rows[0].version >= 180000);
  }

  async close(): Promise<void> {
    await Promise.all([this.observer.end(), this.local.end()]);
  }

  async serverVersion(): Promise<string> {
    return (await this.observer.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]!.v;
  }

  /** Quire's statements since the last reset (the observer's own run elsewhere, or as another user). */
  async statements(): Promise<Statement[]> {
    const { rows } = await this.observer.query<{ query: string; toplevel: boolean; calls: string; wal_records: string; wal_bytes: string }>(
      `select s.query, s.toplevel, sum(s.calls) as calls, sum(s.wal_records) as wal_records, sum(s.wal_bytes) as wal_bytes
         from pg_stat_statements s
        where s.dbid = $1 and s.userid <> (select oid from pg_roles where rolname = current_user)
        group by s.query, s.toplevel
        order by sum(s.calls) desc, s.query`,
      [this.databaseOid],
    );
    return rows.map((r) => ({
      query: r.query,
      toplevel: r.toplevel,
      calls: Number(r.calls),
      walRecords: Number(r.wal_records),
      walBytes: Number(r.wal_bytes),
    }));
  }

  /** Calls so far of the top-level statements matching `pattern` (ILIKE) in Quire's database. */
  async callsOf(pattern: string): Promise<number> {
    const { rows } = await this.observer.query<{ calls: string }>(
      "select coalesce(sum(calls), 0) as calls from pg_stat_statements where dbid = $1 and toplevel and query ilike $2",
      [this.databaseOid, pattern],
    );
    return Number(rows[0]!.calls);
  }

  async cumulative(): Promise<Cumulative> {
    const db = await this.observer.query<{ commits: string; rollbacks: string }>(
      "select xact_commit as commits, xact_rollback as rollbacks from pg_stat_database where datid = $1",
      [this.databaseOid],
    );
    const wal = await this.observer.query<{ records: string; fpi: string; bytes: string; writes: string; syncs: string }>(
      this.walFromIo
        ? `select w.wal_records as records, w.wal_fpi as fpi, w.wal_bytes as bytes,
                  (select coalesce(sum(writes), 0) from pg_stat_io where object = 'wal' and backend_type = 'client backend') as writes,
                  (select coalesce(sum(fsyncs), 0) from pg_stat_io where object = 'wal' and backend_type = 'client backend') as syncs
             from pg_stat_wal w`
        : "select wal_records as records, wal_fpi as fpi, wal_bytes as bytes, wal_write as writes, wal_sync as syncs from pg_stat_wal",
    );
    const functions = await this.local.query<{ name: string; calls: string }>(
      "select schemaname || '.' || funcname as name, calls from pg_stat_user_functions",
    );
    const d = db.rows[0]!;
    const w = wal.rows[0]!;
    return {
      commits: Number(d.commits),
      rollbacks: Number(d.rollbacks),
      walRecords: Number(w.records),
      walFpi: Number(w.fpi),
      walBytes: Number(w.bytes),
      walWrites: Number(w.writes),
      walSyncs: Number(w.syncs),
      functions: new Map(functions.rows.map((r) => [r.name, Number(r.calls)])),
    };
  }

  /** Flushes dirty pages so the next phase's full-page images start from the same point, lets every backend report
   *  what it holds, then starts pg_stat_statements afresh and reads the cumulative statistics. */
  async start(): Promise<Cumulative> {
    await this.observer.query("checkpoint");
    await sleep(STATS_SETTLE_MS);
    await this.observer.query("select pg_stat_statements_reset()");
    return this.cumulative();
  }
}

interface PhaseCounts {
  readonly name: string;
  readonly unit: string;
  readonly n: number;
  /** pg_stat_statements the moment the phase ended. */
  readonly statements: readonly Statement[];
  readonly before: Cumulative;
  /** The cumulative statistics once every backend had reported. */
  readonly after: Cumulative;
  /** Top-level statements Quire ran on its own during that wait (included in `after`), by text. */
  readonly tail: readonly Statement[];
  /** Statements run inside functions during that wait. */
  readonly nestedDuringTail: number;
  readonly seconds: number;
}

async function countPhase(
  counter: Counter,
  name: string,
  unit: string,
  n: number,
  one: (i: number) => Promise<void>,
  settle: () => Promise<void>,
): Promise<PhaseCounts> {
  checkInterrupted();
  log(`${name}: CHECKPOINT, then ${STATS_SETTLE_MS / 1000} s for the statistics to settle`);
  const before = await counter.start();
  log(`${name}: counting ${n} ${unit}s, one at a time`);
  const started = Date.now();
  for (let i = 0; i < n; i++) {
    checkInterrupted();
    await one(i);
  }
  await settle();
  const statements = await counter.statements();
  const seconds = (Date.now() - started) / 1000;
  log(`${name}: done in ${seconds.toFixed(1)} s; ${STATS_SETTLE_MS / 1000} s for every backend to report`);
  await sleep(STATS_SETTLE_MS);
  const after = await counter.cumulative();
  const atEnd = new Map(statements.filter((s) => s.toplevel).map((s) => [s.query, s.calls]));
  const settled = await counter.statements();
  const nestedCalls = (list: readonly Statement[]) => list.filter((s) => !s.toplevel).reduce((n, s) => n + s.calls, 0);
  const nestedDuringTail = nestedCalls(settled) - nestedCalls(statements);
  const tail = settled
    .filter((s) => s.toplevel)
    .map((s) => ({ ...s, calls: s.calls - (atEnd.get(s.query) ?? 0) }))
    .filter((s) => s.calls > 0);
  return { name, unit, n, statements, before, after, tail, nestedDuringTail, seconds };
}

/** Waits until the top-level statements matching `pattern` have been called `calls` times. */
async function waitForCalls(counter: Counter, pattern: string, calls: number, what: string): Promise<void> {
  const deadline = Date.now() + jobTimeoutSeconds * 1000;
  while ((await counter.callsOf(pattern)) < calls) {
    checkInterrupted();
    if (Date.now() > deadline) throw new Error(`${what} did not finish within ${jobTimeoutSeconds} s`);
    await sleep(2);
  }
}

/** Waits until Quire's database has seen no new top-level statement for `quietMs`. */
async function waitForQuiet(counter: Counter, quietMs: number): Promise<void> {
  const total = async () => (await counter.statements()).filter((s) => s.toplevel).reduce((sum, s) => sum + s.calls, 0);
  let last = await total();
  for (;;) {
    await sleep(quietMs);
    const now = await total();
    if (now === last) return;
    last = now;
  }
}

// --- report ---------------------------------------------------------------------------------------------------

const per = (value: number, n: number) => {
  const x = value / n;
  return Number.isInteger(x) ? String(x) : x >= 100 ? whole(x) : x.toFixed(2);
};

/** A statement's text on one line, at most 110 characters, safe inside a markdown table cell. */
function shorten(query: string): string {
  const line = query.replace(/\s+/g, " ").trim();
  const cut = line.length > 110 ? `${line.slice(0, 107)}…` : line;
  return `\`${cut.replaceAll("|", "\\|").replaceAll("`", "'")}\``;
}

/** The rate-limit sync (server/rate-limits.ts): one round trip every RATE_LIMIT_SYNC_MS while keys are in use, and
 *  one when a key is new in its minute, whatever the number of requests: time-based, so counted apart. */
const isSync = (s: Statement) => s.query.includes("app_private.sync_rate_limits(");
const SYNC_FUNCTION = "app_private.sync_rate_limits";

/** The phase's figures with the rate-limit syncs, and what Quire ran on its own while the statistics settled,
 *  taken out. Each of those is a single statement in a transaction of its own (checked: no `begin` among them),
 *  so it adds exactly one commit; statements inside a sync are estimated from the settle wait, when nothing else
 *  ran inside functions. */
function netOf(p: PhaseCounts) {
  const top = p.statements.filter((s) => s.toplevel);
  const nested = p.statements.filter((s) => !s.toplevel);
  const calls = (list: readonly Statement[]) => list.reduce((n, s) => n + s.calls, 0);
  const syncs = calls(top.filter(isSync));
  const tailSyncs = calls(p.tail.filter(isSync));
  const tailOthers = calls(p.tail.filter((s) => !isSync(s)));
  const tailHasBegin = p.tail.some((s) => s.query.trim().toLowerCase() === "begin");
  // Statements inside functions per sync, from the wait: there, only the tail ran, and only syncs call functions.
  const nestedPerSync = tailSyncs > 0 ? p.nestedDuringTail / tailSyncs : 0;
  const functionCalls = [...p.after.functions]
    .filter(([name]) => name !== SYNC_FUNCTION)
    .reduce((n, [name, after]) => n + after - (p.before.functions.get(name) ?? 0), 0);
  return {
    roundTrips: calls(top) - syncs,
    syncs,
    tailSyncs,
    tailOthers,
    tailHasBegin,
    commits: p.after.commits - p.before.commits - syncs - tailSyncs - tailOthers,
    nested: calls(nested) - syncs * nestedPerSync,
    nestedPerSync,
    functionCalls,
    walRecords: top.filter((s) => !isSync(s)).reduce((n, s) => n + s.walRecords, 0),
    walBytes: top.filter((s) => !isSync(s)).reduce((n, s) => n + s.walBytes, 0),
  };
}

function summaryTable(phases: readonly PhaseCounts[]): string {
  const head = `| Per request / job | ${phases.map((p) => `${p.name} (${whole(p.n)} ${p.unit}s)`).join(" | ")} |`;
  const rule = `| --- | ${phases.map(() => "---:").join(" | ")} |`;
  const row = (label: string, value: (p: PhaseCounts, net: ReturnType<typeof netOf>) => string) =>
    `| ${label} | ${phases.map((p) => value(p, netOf(p))).join(" | ")} |`;
  const named = (p: PhaseCounts, word: string) =>
    p.statements.filter((s) => s.toplevel && s.query.trim().toLowerCase() === word).reduce((n, s) => n + s.calls, 0);
  const delta = (p: PhaseCounts, pick: (c: Cumulative) => number) => per(pick(p.after) - pick(p.before), p.n);
  return [
    head,
    rule,
    row("Round trips: top-level statements from Quire's pools, rate-limit syncs aside", (p, net) => per(net.roundTrips, p.n)),
    row("… of which `begin` / `commit`", (p) => `${per(named(p, "begin"), p.n)} / ${per(named(p, "commit"), p.n)}`),
    row(
      "Transactions committed, rate-limit syncs aside (pg_stat_database) / rolled back",
      (p, net) => `${per(net.commits, p.n)} / ${delta(p, (c) => c.rollbacks)}`,
    ),
    row("Statements inside functions (toplevel = false), rate-limit syncs' aside", (p, net) => per(net.nested, p.n)),
    row("Function calls (pg_stat_user_functions), `sync_rate_limits` aside", (p, net) => per(net.functionCalls, p.n)),
    row("WAL records / bytes of those statements (pg_stat_statements)", (p, net) => `${per(net.walRecords, p.n)} / ${per(net.walBytes, p.n)}`),
    row(
      "WAL records / full-page images / bytes, whole cluster (pg_stat_wal: commit records, the syncs and the settle wait included)",
      (p) => `${delta(p, (c) => c.walRecords)} / ${delta(p, (c) => c.walFpi)} / ${delta(p, (c) => c.walBytes)}`,
    ),
    row(`WAL writes / flushes (${walLabel})`, (p) => `${delta(p, (c) => c.walWrites)} / ${delta(p, (c) => c.walSyncs)}`),
    row("Rate-limit syncs during the phase: total (per request or job)", (p, net) => `${whole(net.syncs)} (${per(net.syncs, p.n)})`),
    row(
      `While the statistics settled (${STATS_SETTLE_MS / 1000} s after the phase): syncs / other statements Quire ran on its own`,
      (_p, net) => `${net.tailSyncs} / ${net.tailOthers}${net.tailHasBegin ? " (**with a `begin`: transactions approximate**)" : ""}`,
    ),
  ].join("\n");
}

function statementTable(p: PhaseCounts, toplevel: boolean): string {
  const rows = p.statements.filter((s) => s.toplevel === toplevel);
  const shown = rows.slice(0, TOP_ROWS);
  const rest = rows.slice(TOP_ROWS).reduce((n, s) => n + s.calls, 0);
  return [
    `| ${toplevel ? "Top-level statement" : "Statement inside a function"} | Calls per ${p.unit} | WAL bytes per ${p.unit} |`,
    "| --- | ---: | ---: |",
    ...shown.map((s) => `| ${shorten(s.query)} | ${per(s.calls, p.n)} | ${per(s.walBytes, p.n)} |`),
    ...(rest > 0 ? [`| (${rows.length - shown.length} others) | ${per(rest, p.n)} | |`] : []),
  ].join("\n");
}

function functionTable(p: PhaseCounts): string {
  const calls = [...p.after.functions]
    .map(([name, after]) => ({ name, calls: after - (p.before.functions.get(name) ?? 0) }))
    .filter((f) => f.calls > 0)
    .sort((a, b) => b.calls - a.calls || a.name.localeCompare(b.name));
  return [
    `| Function (pg_stat_user_functions) | Calls per ${p.unit} |`,
    "| --- | ---: |",
    ...calls.slice(0, TOP_ROWS + 4).map((f) => `| \`${f.name}\` | ${per(f.calls, p.n)} |`),
  ].join("\n");
}

function gitCommit(): string {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: root, encoding: "utf8" }).trim() !== "";
    return dirty ? `${commit} (with uncommitted changes)` : commit;
  } catch {
    return "unknown";
  }
}

// --- the run --------------------------------------------------------------------------------------------------

const failures: string[] = [];
const phases: PhaseCounts[] = [];
let server: Server | null = null;
let fake: FakeLlm | null = null;
let quire: Quire | null = null;
let counter: Counter | null = null;
let stopped: ExitStatus | null = null;
let postgresVersion = "?";
let walLabel = "pg_stat_wal";
let llmCalls = NaN;
/** How many events the after-commit phase numbered and sealed. */
let afterCommitNote = "";

const external = externalUrl();
try {
  server = external ? await useExternalPostgres(external) : await startOwnPostgres();
  fake = await startFakeLlm();
  quire = await startQuire(
    {
      label: "counts",
      preferredPort: 56830,
      preferredPostgresPort: 54441, // unused: Quire runs on the server above
      inspect: false,
      env: {
        ...server.quireEnv,
        LLM_PROVIDER: "openai",
        LLM_BASE_URL: fake.url,
        LLM_MODEL: FAKE_MODEL,
        LLM_API_KEY: "",
        WORKER_CONCURRENCY: String(workerConcurrency),
        BCRYPT_COST: "10",
        ACCESS_TOKEN_TTL_SECONDS: "3600",
        SMTP_URL: "",
        // Heartbeats are per worker and per interval, not per job: out of the way of the counts.
        WORKER_HEARTBEAT_SECONDS: "3600",
        // So are the live-event numberer's and the audit sealer's runs, which work in batches after commit: the
        // bench runs them itself, once per phase, and counts that work as a phase of its own.
        LIVE_NUMBER_INTERVAL_MS: "60000",
        AUDIT_SEAL_INTERVAL_MS: "60000",
      },
    },
    () => interrupt.stopped,
  );
  const base = quire.base;
  counter = await Counter.open(server.observerUrl, server.database);
  postgresVersion = await counter.serverVersion();
  walLabel = counter.walFromIo ? "by client backends: pg_stat_io, object wal" : "every process: pg_stat_wal";
  const ownerClient = new pg.Client({ connectionString: server.quireEnv["OWNER_DATABASE_URL"], application_name: "bench-counts-setup" });
  await ownerClient.connect();
  try {
    await ownerClient.query("select app_admin.set_tier_allowance('free', 1000000, 1000000000000)");
  } finally {
    await ownerClient.end();
  }
  log(`setup: ${orgCount} organizations with a member and ${documentsPerOrg} documents each (not counted)`);
  const tenants = await createTenants(
    base,
    server.quireEnv["OWNER_DATABASE_URL"]!,
    orgCount,
    documentsPerOrg,
    "# Handbook\n\nHow the team works, in a few short paragraphs. ".repeat(8),
  );
  checkInterrupted();
  const documents = tenants.flatMap((t) => t.documentIds.map((id) => ({ tenant: t, id })));
  const summarize = async (i: number) => {
    const { tenant, id } = documents[i % documents.length]!;
    const finishedBefore = await counter!.callsOf(FINISH_STATEMENT);
    const data = await graphql<{ summarizeDocument: { job: { rowId: string } } }>(base, SUMMARIZE, { d: id }, tenant.memberToken);
    if (!data.summarizeDocument.job.rowId) throw new Error("summarizeDocument returned no job");
    await waitForCalls(counter!, FINISH_STATEMENT, finishedBefore + 1, `job ${i + 1}`);
  };
  // Jobs first, so the list then shows summaries as in bench (a).
  if (warmup > 0) {
    log(`warm-up: ${warmup} jobs and ${warmup} list requests (not counted)`);
    for (let i = 0; i < warmup; i++) await summarize(i);
  }
  // What the numberer and the sealer do, run as Quire runs them (its own login), until nothing is left.
  const api = new pg.Client({ connectionString: server.quireEnv["DATABASE_URL"], application_name: "bench-counts-after-commit" });
  await api.connect();
  const afterCommit = async () => {
    let numbered = 0;
    let sealed = 0;
    for (let n = -1; n !== 0; numbered += n) n = (await api.query<{ n: number }>("select app_private.number_live_events(10000) as n")).rows[0]!.n;
    for (let n = -1; n !== 0; sealed += n) n = (await api.query<{ n: number }>("select app_private.seal_audit_events(10000) as n")).rows[0]!.n;
    return { numbered, sealed };
  };
  try {
    await afterCommit(); // the warm-up's, not counted
    phases.push(
      await countPhase(
        counter,
        "Summary job",
        "job",
        jobCount,
        (i) => summarize(warmup + i),
        () => waitForQuiet(counter!, 500),
      ),
    );
    let done = { numbered: 0, sealed: 0 };
    phases.push(
      await countPhase(
        counter,
        "Summary job, after commit: its live events numbered and its audit events sealed (batched)",
        "job",
        jobCount,
        async (i) => {
          if (i === 0) done = await afterCommit();
        },
        async () => undefined,
      ),
    );
    afterCommitNote = `the after-commit phase numbered ${whole(done.numbered)} live events and sealed ${whole(done.sealed)} audit events of the ${whole(jobCount)} jobs`;
  } finally {
    await api.end();
  }
  const list = async (tenant: Tenant) => {
    const data = await graphql<{ documents: { nodes: unknown[] } }>(base, LIST_QUERY, {}, tenant.memberToken);
    if (data.documents.nodes.length !== Math.min(20, documentsPerOrg)) throw new Error(`the list answered ${data.documents.nodes.length} documents`);
  };
  for (let i = 0; i < warmup; i++) await list(tenants[i % tenants.length]!);
  phases.push(
    await countPhase(
      counter,
      "Documents list",
      "request",
      requestCount,
      (i) => list(tenants[i % tenants.length]!),
      async () => undefined,
    ),
  );
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  await counter?.close().catch(() => undefined);
  if (quire) {
    log("stopping Quire (SIGTERM)");
    stopped = await quire.stop();
    if (stopped.code !== 0) failures.push(`Quire exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
  }
  if (fake) llmCalls = await fake.close();
  await server?.stop().catch((error: unknown) => failures.push(`stopping PostgreSQL: ${String(error)}`));
}

const facts = [
  `- Date: ${new Date().toISOString()}, commit ${gitCommit()}`,
  `- Machine: ${machineFacts()}`,
  `- PostgreSQL ${postgresVersion}, ${server?.description ?? "not started"}; pg_stat_statements.track = all, track_functions = all`,
  `- Quire: \`node bin/start.ts\` (server and worker in one process), LOG_LEVEL=warn, GRAPHILE_ENV=${process.env["GRAPHILE_ENV"] || "production"}, ` +
    `WORKER_CONCURRENCY=${workerConcurrency}, WORKER_HEARTBEAT_SECONDS=3600, LLM_PROVIDER=openai (zero-latency fake: ${Number.isNaN(llmCalls) ? "?" : whole(llmCalls)} completions answered)`,
  `- Settings: BENCH_JOBS=${jobCount}, BENCH_REQUESTS=${requestCount}, BENCH_WARMUP=${warmup}, BENCH_ORGS=${orgCount}, BENCH_DOCS_PER_ORG=${documentsPerOrg}; ` +
    `every request and job one at a time`,
  `- Command: \`node bench/counts.ts\``,
  ...(afterCommitNote ? [`- After commit: ${afterCommitNote}`] : []),
];
const sections = phases.flatMap((p) => [
  `### ${p.name}: ${whole(p.n)} ${p.unit}s in ${p.seconds.toFixed(1)} s`,
  "",
  statementTable(p, true),
  "",
  statementTable(p, false),
  "",
  functionTable(p),
  "",
  `Quire on its own while the statistics settled (${STATS_SETTLE_MS / 1000} s after the phase; in the cumulative figures above): ` +
    (p.tail.length === 0 ? "nothing." : p.tail.map((s) => `${shorten(s.query)} × ${s.calls}`).join(", ")),
  "",
]);
const body = phases.length > 0 ? [summaryTable(phases), "", ...sections].join("\n") : "(no results: the run did not reach a counted phase)";
process.stdout.write(`${body}\n${facts.join("\n")}\n`);

await finishRun("counts-latest.md", failures, () =>
  [
    "# What a request and a job cost PostgreSQL, counted: latest run",
    "",
    "Written by `node bench/counts.ts`; see bench/README.md (Counts, issue 12) for what is counted and how to read it.",
    "",
    ...facts,
    "",
    body,
  ].join("\n"),
);
