// `node bench/rls-scale.ts`: RLS at scale. Does an organization's first page of documents stay as fast when the
// documents table grows from 10k to 100k to 1M rows across 1,000 organizations? Row-level security adds
// `org_id = app_public.current_org_id()` to every query on the table (no sub-select: a sharded PostgreSQL refuses
// those); the helper inlines to an expression over the request's settings. That is cheap only if PostgreSQL
// evaluates it once, as the index condition of an index that leads with org_id, so the page costs the same
// whatever the other organizations hold. Evaluated per row, or applied as a filter after a scan, it would slow
// down with the table. This bench measures it and checks the plans.
//
// 1. starts an embedded PostgreSQL in this process (db/embedded.ts, a fresh DATA_DIR under the OS temp directory,
//    a free port) and applies Quire's migrations (db/migrate.ts's prepareDatabase, what `npm start` runs);
// 2. as the superuser, creates 1,000 organizations with an owner each, and a live session for the owners of the
//    two measured organizations, so that current_org_id() resolves exactly as for a signed-in request;
// 3. for each scale of BENCH_SCALES (default 10000,100000,1000000), ascending: adds documents until the table
//    holds that many (as the superuser, triggers skipped with session_replication_role = replica; content_hash,
//    revision and updated_at filled as the triggers would, `search` generated), then VACUUM ANALYZE and
//    CHECKPOINT. Creation times are random over two years. Two organizations are measured:
//    - "typical" (organization 2) holds its even share, like every other organization: 9, 99, 999 documents;
//    - "large" (organization 1) holds 1,000 documents at every scale (every tenth of the first 10,000), so its
//      page is the same 21 rows everywhere: 100 times the average organization at 10k, average at 1M;
// 4. runs the list query as the API runs it: on a connection logged in as the authenticator, `begin`, the settings
//    of server/context.ts's pgSettingsFor for the organization's session applied with @dataplan/pg's set_config
//    statement (role quire_authenticated, jwt.claims.*, quire.*), the select PostGraphile generates for
//    `documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId title createdAt } pageInfo { hasNextPage } }`
//    as a named prepared statement (as PostGraphile sends it), `commit`. BENCH_WARMUP runs are thrown away, then
//    BENCH_QUERIES are timed (the select's round trip, and the whole transaction). Then PostgreSQL times the same
//    query BENCH_QUERIES times itself (EXPLAIN ANALYZE's Execution Time, timing off): the database's work alone,
//    without the network and the wake-ups of an idle virtual CPU, which dominate a sub-millisecond round trip;
// 5. checks the rows against the superuser's read (explicit organization filter, no RLS), and the plan from
//    EXPLAIN (ANALYZE, BUFFERS, VERBOSE, FORMAT JSON): documents reached through an index that leads with org_id
//    (an index scan, or a bitmap index scan under a bitmap heap scan), with the organization from the request's
//    context as its index condition (evaluated once per scan) and no filter on the rows; the context read in no
//    node's filter (which would run per row); no SubPlan;
// 6. prints p50/p95 per scale and organization, the ratios p50 at the largest ÷ p50 at the smallest scale, of the
//    round trip and of the execution (target ≤ 1.25 for the typical organization; reported, not asserted), CPU
//    used by other processes meanwhile (a run above 0.2 cores is marked disturbed) and the plans, and writes them
//    to bench/results/rls-scale-latest.md when the run was clean;
// 7. stops PostgreSQL and removes the temp DATA_DIR.
// It exits 1 on a correctness failure: wrong rows, or a plan that breaks the rules of step 5. Progress goes to
// stderr; only the results go to stdout.
import "../lib/graphile-env.ts"; // before anything from PostGraphile (server/context.ts imports Grafast)
import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { loadConfig } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { pgSettingsFor } from "../server/context.ts";
import { cpuBetween, cpuSnapshot, DISTURBED_CORES } from "./proc-cpu.ts";
import { envInt, freePort, log, whole, finishRun, machineFacts } from "./support.ts";

const PREFERRED_POSTGRES_PORT = 54430;
const ORGANIZATIONS = 1000;
/** The large organization's documents: every tenth of the first 10,000 (hence the smallest scale). */
const LARGE_DOCUMENTS = 1000;
const LARGE_STRIDE = 10;
const MIN_SCALE = LARGE_DOCUMENTS * LARGE_STRIDE;
const MAX_SCALE = 10_000_000;
const LOAD_BATCH = 100_000;
const LIMIT = 21; // first: 20, plus one row for hasNextPage
const TARGET_RATIO = 1.25;

const queries = envInt("BENCH_QUERIES", 1000, 10, 100_000);
const warmup = envInt("BENCH_WARMUP", 100, 0, 10_000);
const scales = parseScales(process.env["BENCH_SCALES"] || "10000,100000,1000000");

/**
 * The select PostGraphile 5 generates for `{ documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId
 * title createdAt } pageInfo { hasNextPage } } }` (captured with DEBUG=@dataplan/pg:PgExecutor); RLS adds the
 * organization.
 */
const listSql = `select
__documents__."id" as "0",
__documents__."title" as "1",
to_char(__documents__."created_at", 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'::text) as "2"
from "app_public"."documents" as __documents__
order by __documents__."created_at" desc, __documents__."id" desc
limit ${LIMIT}`;

function parseScales(raw: string): number[] {
  const values = raw.split(",").map((s) => Number(s.trim().replace(/_/g, "")));
  if (values.some((v) => !Number.isInteger(v) || v < MIN_SCALE || v > MAX_SCALE)) {
    process.stderr.write(`BENCH_SCALES must be comma-separated whole numbers from ${MIN_SCALE} to ${MAX_SCALE} (got ${JSON.stringify(raw)})\n`);
    process.exit(2);
  }
  return [...new Set(values)].sort((a, b) => a - b);
}

const ms = (n: number) => `${n.toFixed(3)} ms`;
const seconds = (startedAt: number) => ((performance.now() - startedAt) / 1000).toFixed(1);

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1] ?? NaN;
}

// --- setup ----------------------------------------------------------------------------------------------------

/** The measured organizations, by their number: 1 is "large", 2 is "typical". */
const MEASURED = [
  { name: "typical", n: 2 },
  { name: "large", n: 1 },
] as const;

interface Tenants {
  /** Organization n is at index n − 1, with its owner. */
  readonly orgIds: string[];
  readonly userIds: string[];
  /** A live session of the owner of each measured organization, by its number. */
  readonly sessionIds: ReadonlyMap<number, string>;
}

async function createTenants(db: pg.Client): Promise<Tenants> {
  await db.query(
    "insert into app_public.organizations (name, slug) select format('Scale Org %s', n), format('scale-org-%s', n) from generate_series(1, $1::int) as n",
    [ORGANIZATIONS],
  );
  await db.query(
    "insert into app_public.users (email, full_name) select format('owner%s@scale.example', n), format('Owner %s', n) from generate_series(1, $1::int) as n",
    [ORGANIZATIONS],
  );
  await db.query(
    `insert into app_public.memberships (org_id, user_id, role)
     select o.id, u.id, 'owner'
       from generate_series(1, $1::int) as n
       join app_public.organizations o on o.slug = format('scale-org-%s', n)
       join app_public.users u on u.email = format('owner%s@scale.example', n)`,
    [ORGANIZATIONS],
  );
  const { rows } = await db.query<{ org_id: string; user_id: string }>(
    `select o.id as org_id, u.id as user_id
       from generate_series(1, $1::int) as n
       join app_public.organizations o on o.slug = format('scale-org-%s', n)
       join app_public.users u on u.email = format('owner%s@scale.example', n)
      order by n`,
    [ORGANIZATIONS],
  );
  const sessionIds = new Map<number, string>();
  for (const { n } of MEASURED) {
    const sessionId = randomUUID();
    await db.query(
      "insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at) values ($1, $2, $3, sha256($4::bytea), now() + interval '1 day')",
      [sessionId, rows[n - 1]!.user_id, rows[n - 1]!.org_id, Buffer.from(sessionId)],
    );
    sessionIds.set(n, sessionId);
  }
  return { orgIds: rows.map((r) => r.org_id), userIds: rows.map((r) => r.user_id), sessionIds };
}

/**
 * Adds documents number `from` … `to` (numbered in the order they are added), in one transaction. Document i
 * belongs to the large organization (1) when i ≤ 10,000 and i is a multiple of 10, else to organization
 * 2 + (i mod 999): every heap page mixes many organizations, as years of use would.
 */
async function addDocuments(db: pg.Client, tenants: Tenants, from: number, to: number): Promise<void> {
  await db.query("begin");
  await db.query("set local session_replication_role = replica"); // no triggers: no live events, timestamps kept
  await db.query("set local synchronous_commit = off");
  await db.query(
    `insert into app_public.documents (org_id, title, content, author_id, revision, content_hash, created_at, updated_at)
     select ($3::uuid[])[t.k], d.title, d.content, ($4::uuid[])[t.k], 1,
            encode(sha256(convert_to(d.content, 'UTF8')), 'hex'), d.created_at, d.created_at
       from generate_series($1::int, $2::int) as i
      cross join lateral (
        select case when i <= $5::int and i % $6::int = 0 then 1 else 2 + i % ($7::int - 1) end as k
      ) as t
      cross join lateral (
        select format('Meeting notes %s', i) as title,
               format('Notes %s on the %s project: decisions, owners and next steps for the %s team.', i,
                      (array['apollo','borealis','cascade','delta','ember','fjord','granite','harbor','iris','juniper'])[1 + i % 10],
                      (array['design','platform','sales','support','legal','finance'])[1 + i % 6]) as content,
               now() - random() * interval '730 days' as created_at
      ) as d`,
    [from, to, tenants.orgIds, tenants.userIds, MIN_SCALE, LARGE_STRIDE, ORGANIZATIONS],
  );
  await db.query("commit");
  log(`  ${whole(to)} documents`);
}

// --- measurement ----------------------------------------------------------------------------------------------

interface PlanNode {
  readonly "Node Type": string;
  readonly "Parent Relationship"?: string;
  readonly "Subplan Name"?: string;
  readonly "Relation Name"?: string;
  readonly "Index Name"?: string;
  readonly "Index Cond"?: string;
  readonly Filter?: string;
  readonly "One-Time Filter"?: string;
  readonly Output?: string[];
  readonly "Actual Rows": number;
  readonly "Actual Loops": number;
  readonly "Rows Removed by Filter"?: number;
  readonly "Shared Hit Blocks"?: number;
  readonly "Shared Read Blocks"?: number;
  readonly Plans?: PlanNode[];
}

interface Explained {
  readonly Plan: PlanNode;
  readonly "Execution Time": number;
}

interface Verdict {
  readonly problems: string[];
  /** The node that reads documents, and the index node that finds them (the same node for an index scan). */
  readonly scan: PlanNode | null;
  readonly access: PlanNode | null;
}

/** Whether plan text reads the request's context: current_org_id() or what it inlines to. */
const readsContext = (text: string | undefined) => /current_org_id\(\)|enter_context\(|current_setting\(/.test(text ?? "");

function nodesOf(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodesOf)];
}

/** The rules of step 5; `orgIndexes` are the indexes of app_public.documents whose first column is org_id. */
function judgePlan(plan: PlanNode, orgIndexes: ReadonlySet<string>): Verdict {
  const problems: string[] = [];
  const all = nodesOf(plan);
  const scans = all.filter((n) => n["Relation Name"] === "documents");
  const scan = scans.length === 1 ? scans[0]! : null;
  let access: PlanNode | null = null;
  if (!scan) problems.push(`expected one scan of documents, found ${scans.length}`);
  else if (scan["Node Type"] === "Index Scan" || scan["Node Type"] === "Index Only Scan") access = scan;
  else if (scan["Node Type"] === "Bitmap Heap Scan" && scan.Plans?.length === 1 && scan.Plans[0]!["Node Type"] === "Bitmap Index Scan") {
    access = scan.Plans[0]!;
  } else problems.push(`documents are read with a ${scan["Node Type"]}, not through one index`);
  if (scan?.Filter !== undefined) problems.push(`the documents scan filters rows: ${scan.Filter}`);
  if (access) {
    if (!orgIndexes.has(access["Index Name"] ?? "")) problems.push(`documents are found through ${access["Index Name"]}, which does not lead with org_id`);
    if (!/\borg_id = /.test(access["Index Cond"] ?? "") || !readsContext(access["Index Cond"])) {
      problems.push(`the index condition is not the organization from the request's context: ${access["Index Cond"] ?? "none"}`);
    }
  }
  // The context is read once per scan (an index condition), never per row (a filter), and no SubPlan runs per row.
  for (const n of all) {
    if (n["Parent Relationship"] === "SubPlan") problems.push(`a SubPlan (${n["Subplan Name"] ?? n["Node Type"]}) runs per row`);
    if (readsContext(n.Filter)) problems.push(`${n["Node Type"]} reads the request's context per row: ${n.Filter}`);
  }
  return { problems, scan, access };
}

/** How documents are read, for the table: "Index Scan using x" or "Bitmap Heap Scan ← Bitmap Index Scan using x". */
function accessPath({ scan, access }: Verdict): string {
  if (!scan) return "–";
  const index = access ? ` using ${access["Index Name"]}` : "";
  return scan === access || !access ? `${scan["Node Type"]}${index}` : `${scan["Node Type"]} ← ${access["Node Type"]}${index}`;
}

interface Summary {
  readonly p50: number;
  readonly p95: number;
  readonly max: number;
}

function summary(values: number[]): Summary {
  values.sort((a, b) => a - b);
  return { p50: percentile(values, 50), p95: percentile(values, 95), max: values.at(-1) ?? NaN };
}

interface Measurement {
  readonly organization: string;
  /** The organization's documents at this scale. */
  readonly owned: number;
  /** The select's round trip from this client, as the API waits for it. */
  readonly select: Summary;
  readonly transactionP50: number;
  /** The executor's time inside PostgreSQL (EXPLAIN ANALYZE's Execution Time, timing off): no network, no wake-ups. */
  readonly execution: Summary;
  /** Cores other processes used while the queries were timed (null without /proc). */
  readonly otherCores: number | null;
  readonly verdict: Verdict;
  readonly explained: Explained;
  readonly planText: string;
}

interface ScaleResult {
  readonly documents: number;
  readonly tableMiB: number;
  readonly loadSeconds: string;
  readonly measurements: Measurement[];
}

/** One transaction as the API runs it; `inside` runs between the settings and the commit. */
async function asApi<T>(client: pg.Client, settings: string, inside: () => Promise<T>): Promise<T> {
  await client.query("begin");
  try {
    await client.query("select set_config(el->>0, el->>1, true) from json_array_elements($1::json) el", [settings]);
    const result = await inside();
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback");
    throw error;
  }
}

/**
 * Times the list for one organization (`settings` gives each transaction its settings): its round trip as the API
 * runs it, then its execution inside PostgreSQL, then explains it once more for the plan.
 */
async function measure(
  api: pg.Client,
  settings: () => string,
  expectedIds: readonly string[],
  orgIndexes: ReadonlySet<string>,
): Promise<Omit<Measurement, "organization" | "owned">> {
  const list = { name: "rls-scale-list", text: listSql, rowMode: "array" as const };
  const selectTimes: number[] = [];
  const transactionTimes: number[] = [];
  // The bench, and PostgreSQL (every process under this one); the rest of the machine is "other".
  const groups = { bench: { pid: process.pid, descendants: false }, postgres: { pid: process.pid, descendants: true } };
  let timedFrom = cpuSnapshot(groups);
  for (let run = 0; run < warmup + queries; run++) {
    if (run === warmup) timedFrom = cpuSnapshot(groups);
    const started = performance.now();
    const { rows, selectMs } = await asApi(api, settings(), async () => {
      const before = performance.now();
      const result = await api.query<[string, string, string]>(list);
      return { rows: result.rows, selectMs: performance.now() - before };
    });
    const transactionMs = performance.now() - started;
    if (rows.length !== expectedIds.length || rows.some((row, i) => row[0] !== expectedIds[i])) {
      throw new Error(`the list returned ${rows.length} rows that are not the organization's newest ${expectedIds.length}`);
    }
    if (run >= warmup) {
      selectTimes.push(selectMs);
      transactionTimes.push(transactionMs);
    }
  }
  const cpu = cpuBetween(timedFrom, cpuSnapshot(groups));

  // The same query timed by PostgreSQL itself, in one transaction with the same settings.
  const executionTimes = await asApi(api, settings(), async () => {
    const times: number[] = [];
    for (let run = 0; run < queries; run++) {
      const { rows } = await api.query<{ "QUERY PLAN": Explained[] }>(`explain (analyze, timing off, format json) ${listSql}`);
      times.push(rows[0]!["QUERY PLAN"][0]!["Execution Time"]);
    }
    return times;
  });

  const [explained] = await asApi(api, settings(), async () => {
    const { rows } = await api.query<{ "QUERY PLAN": Explained[] }>(`explain (analyze, buffers, verbose, format json) ${listSql}`);
    return rows[0]!["QUERY PLAN"];
  });
  const planText = await asApi(api, settings(), async () => {
    const { rows } = await api.query<{ "QUERY PLAN": string }>(`explain (analyze, buffers, costs off) ${listSql}`);
    return rows.map((r) => r["QUERY PLAN"]).join("\n");
  });
  return {
    select: summary(selectTimes),
    transactionP50: summary(transactionTimes).p50,
    execution: summary(executionTimes),
    otherCores: cpu?.other ?? null,
    verdict: judgePlan(explained!.Plan, orgIndexes),
    explained: explained!,
    planText,
  };
}

// --- report ---------------------------------------------------------------------------------------------------

function table(rows: readonly ScaleResult[]): string {
  const lines = [
    "| Documents in the table | Table + indexes | Organization (its documents) | Select round trip p50 | p95 | max | " +
      "Transaction p50 | Execution in PostgreSQL p50 | p95 | Documents read with | Index rows read / returned | Buffers hit / read | " +
      "Other CPU | Load, VACUUM, CHECKPOINT |",
    "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
  ];
  for (const r of rows) {
    for (const m of r.measurements) {
      const plan = m.explained.Plan;
      const access = m.verdict.access;
      lines.push(
        `| ${whole(r.documents)} | ${whole(r.tableMiB)} MiB | ${m.organization} (${whole(m.owned)}) | ${ms(m.select.p50)} | ` +
          `${ms(m.select.p95)} | ${ms(m.select.max)} | ${ms(m.transactionP50)} | ${ms(m.execution.p50)} | ${ms(m.execution.p95)} | ` +
          `${accessPath(m.verdict)} | ${access ? access["Actual Rows"] * access["Actual Loops"] : "–"} / ${plan["Actual Rows"]} | ` +
          `${plan["Shared Hit Blocks"] ?? 0} / ${plan["Shared Read Blocks"] ?? 0} | ` +
          `${m.otherCores === null ? "–" : m.otherCores.toFixed(2)} | ${r.loadSeconds} s |`,
      );
    }
  }
  return lines.join("\n");
}

function ratioLines(rows: readonly ScaleResult[]): string[] {
  const smallest = rows[0];
  const largest = rows.at(-1);
  if (!smallest || !largest || largest === smallest) return [];
  return MEASURED.flatMap(({ name }, i) => {
    const [big, small] = [largest.measurements[i]!, smallest.measurements[i]!];
    const line = (what: string, a: number, b: number) => {
      const verdict = name === "typical" ? `target ≤ ${TARGET_RATIO.toFixed(2)}×: ${a / b <= TARGET_RATIO ? "met" : "missed"}` : "no target";
      return (
        `- ${name[0]!.toUpperCase()}${name.slice(1)} organization, ${what} p50 at ${whole(largest.documents)} ÷ at ` +
        `${whole(smallest.documents)} documents: ${(a / b).toFixed(2)}× (${ms(a)} ÷ ${ms(b)}; ${verdict})`
      );
    };
    return [line("select round trip", big.select.p50, small.select.p50), line("execution in PostgreSQL", big.execution.p50, small.execution.p50)];
  });
}

// --- main -----------------------------------------------------------------------------------------------------

const failures: string[] = [];
const results: ScaleResult[] = [];
const facts: string[] = [];
let embedded: EmbeddedPostgres | null = null;
let dataDir: string | null = null;
let interrupted = false;

// A Ctrl-C reaches the embedded PostgreSQL too (same process group), which then stops; the run ends at the next
// step and cleans up.
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping the run and cleaning up`);
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
const checkInterrupted = () => {
  if (interrupted) throw new Error("interrupted");
};

try {
  dataDir = await mkdtemp(path.join(os.tmpdir(), "quire-rls-scale-"));
  // Run as root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter DATA_DIR.
  await chmod(dataDir, 0o755);
  const port = await freePort(PREFERRED_POSTGRES_PORT, []);
  const config = loadConfig({ DATA_DIR: dataDir, EMBEDDED_POSTGRES_PORT: String(port) });
  const logger = createLogger({ level: "warn", pretty: false });
  log(`starting embedded PostgreSQL on 127.0.0.1:${port} (DATA_DIR ${dataDir}) and applying the migrations`);
  embedded = await startEmbeddedPostgres(config.database.embedded!, logger);
  await prepareDatabase(config.database, logger);
  checkInterrupted();

  const superuserUrl = new URL(config.database.rootUrl!);
  superuserUrl.pathname = `/${config.database.name}`;
  const db = new pg.Client({ connectionString: superuserUrl.href, application_name: "bench-rls-load" });
  const api = new pg.Client({ connectionString: config.database.url, application_name: "bench-rls-api" });
  await db.connect();
  await api.connect();
  try {
    // What @dataplan/pg does once on each of its connections.
    await api.query("set jit_optimize_above_cost = -1");
    const server = await db.query<{ version: string; shared_buffers: string }>(
      "select current_setting('server_version') as version, current_setting('shared_buffers') as shared_buffers",
    );
    facts.push(`PostgreSQL ${server.rows[0]!.version} (embedded, as \`npm start\` runs it), shared_buffers ${server.rows[0]!.shared_buffers}`);
    const tenants = await createTenants(db);
    const orgIndexes = new Set(
      (
        await db.query<{ name: string }>(
          `select c.relname as name
             from pg_index i
             join pg_class c on c.oid = i.indexrelid
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = 'app_public.documents'::regclass and a.attname = 'org_id'`,
        )
      ).rows.map((r) => r.name),
    );
    // Per measured organization, its settings with a fresh request id per transaction, as each HTTP request has.
    const settingsOf = (n: number) => {
      const claims = {
        userId: tenants.userIds[n - 1]!,
        orgId: tenants.orgIds[n - 1]!,
        sessionId: tenants.sessionIds.get(n)!,
        role: "owner" as const,
        expiresAt: new Date(Date.now() + 86_400_000),
      };
      return () => JSON.stringify(Object.entries(pgSettingsFor(config, claims, randomUUID(), "127.0.0.1")));
    };

    let loaded = 0;
    for (const scale of scales) {
      log(`adding documents up to ${whole(scale)}`);
      const started = performance.now();
      for (let from = loaded + 1; from <= scale; from += LOAD_BATCH) {
        checkInterrupted();
        await addDocuments(db, tenants, from, Math.min(scale, from + LOAD_BATCH - 1));
      }
      loaded = scale;
      await db.query("vacuum (analyze) app_public.documents");
      // Flush the load's dirty pages now, so the checkpointer does not compete with the timed queries.
      await db.query("checkpoint");
      const loadSeconds = seconds(started);
      const size = await db.query<{ bytes: string }>("select pg_total_relation_size('app_public.documents') as bytes");
      const result: ScaleResult = { documents: scale, tableMiB: Number(size.rows[0]!.bytes) / 1024 ** 2, loadSeconds, measurements: [] };
      results.push(result);
      for (const { name, n } of MEASURED) {
        checkInterrupted();
        const orgId = tenants.orgIds[n - 1]!;
        // The superuser's read, past RLS: the page, and (computed before the limit) how many the organization holds.
        const expected = await db.query<{ id: string; owned: number }>(
          `select id, count(*) over ()::int as owned from app_public.documents where org_id = $1
            order by created_at desc, id desc limit ${LIMIT}`,
          [orgId],
        );
        const owned = expected.rows[0]?.owned ?? 0;
        log(`${whole(scale)} documents, ${name} organization (${whole(owned)}): ${warmup} warm-up + ${queries} timed queries`);
        const measured = await measure(
          api,
          settingsOf(n),
          expected.rows.map((r) => r.id),
          orgIndexes,
        );
        result.measurements.push({ organization: name, owned, ...measured });
        for (const problem of measured.verdict.problems) failures.push(`${whole(scale)} documents, ${name} organization: ${problem}`);
        log(
          `  select p50 ${ms(measured.select.p50)}, p95 ${ms(measured.select.p95)}; ${accessPath(measured.verdict)}; ` +
            `plan ${measured.verdict.problems.length === 0 ? "as required" : "WRONG"}`,
        );
      }
    }
  } finally {
    await api.end();
    await db.end();
  }
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  if (embedded) await embedded.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
}

const planChecks = results.flatMap((r) =>
  r.measurements.map(
    (m) =>
      `- Plan at ${whole(r.documents)} documents, ${m.organization} organization: ` +
      (m.verdict.problems.length === 0 ? "as required" : m.verdict.problems.join("; ")),
  ),
);
const disturbed = results.flatMap((r) =>
  r.measurements
    .filter((m) => m.otherCores !== null && m.otherCores > DISTURBED_CORES)
    .map(
      (m) =>
        `- **Disturbed**: other processes used ${m.otherCores!.toFixed(2)} cores while the ${m.organization} organization was timed at ${whole(r.documents)} documents`,
    ),
);
const allFacts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  ...facts.map((f) => `- ${f}`),
  `- ${ORGANIZATIONS} organizations; "typical" holds its even share of the documents, "large" ${LARGE_DOCUMENTS} at every scale`,
  `- Per scale and organization: ${warmup} warm-up queries, then ${queries} timed, one after another on one authenticator ` +
    `connection; "select" is the list query's round trip, "transaction" adds begin, set_config and commit; "other CPU" is ` +
    `the cores other processes used meanwhile (above ${DISTURBED_CORES} marks the measurement disturbed)`,
];
const plans = results.flatMap((r) =>
  r.measurements.flatMap((m) => [
    "",
    `Plan at ${whole(r.documents)} documents, ${m.organization} organization (EXPLAIN ANALYZE, BUFFERS, COSTS OFF):`,
    "",
    "```",
    m.planText,
    "```",
  ]),
);
const output = [table(results), "", ...ratioLines(results), ...planChecks, ...disturbed, "", ...allFacts, ...plans].join("\n");
process.stdout.write(`${output}\n`);

await finishRun("rls-scale-latest.md", failures, () =>
  [
    "# RLS at scale: latest run",
    "",
    "Written by `node bench/rls-scale.ts`; see bench/results/rls.md for what is measured and how to read it.",
    "",
    "The list query, as PostGraphile generates it (RLS adds the organization):",
    "",
    "```sql",
    listSql,
    "```",
    "",
    output,
    "",
  ].join("\n"),
);
