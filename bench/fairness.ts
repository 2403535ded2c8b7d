// `node bench/fairness.ts`: does one organization's backlog starve the others? Organization A queues a backlog of
// summaries (BENCH_BACKLOG, default 2,000) at once, then organization B asks for one summary, and the bench measures
// how long B's job waits to start and how many jobs the worker starts before it, with an LLM that takes
// BENCH_LLM_LATENCY_MS (default 50 ms) per call, in two phases of the same run:
//
// - before: graphile-worker's jobs all at priority 0, as every job was queued before the fair-share priority (a
//   trigger on graphile_worker._private_jobs, installed for this phase only, forces it: exactly the old add_job);
// - after: the priority as migrated (each organization's n-th outstanding job ranks with every other's n-th).
//
// Each phase has organizations of its own. Per phase it reports A's jobs still waiting when B queued, B's position
// (jobs started between B's enqueue and B's start), B's wait (the job row's created_at → started_at, both
// PostgreSQL's clock), and the jobs started per second over the first BENCH_WINDOW_SECONDS after A's backlog was
// queued (fairness must not cost a lone backlog throughput); then A's remaining jobs are cancelled.
//
// How: Quire runs as `node bin/start.ts` (server and worker in one process, see quire-child.ts) with WORKER_CONCURRENCY
// (default 4) and LLM_PROVIDER=openai pointed at the fake (bench/fake-llm.ts, a worker thread). The organizations are
// made through the public API; A's backlog is queued by A's member through app_public.summarize_document in one
// transaction (so the whole backlog is there at once and the counts are stable), B's job through the GraphQL
// mutation summarizeDocument. Exits 1 on a failure (B's job never started within BENCH_PHASE_TIMEOUT_SECONDS or did
// not succeed, a failed start or stop); timings are reported, never asserted. Progress goes to stderr; the results
// to stdout and, on a clean run, with the machine's facts to bench/results/fairness-latest.md.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { FAKE_MODEL } from "./fake-llm.ts";
import { createTenants, fmtCpu, graphql, liveCpuSnapshot, startFakeLlm, type FakeLlm, type Tenant } from "./live-support.ts";
import { cpuBetween, DISTURBED_CORES, type CpuUse } from "./proc-cpu.ts";
import { startQuire, type ExitStatus, type Quire } from "./quire-child.ts";
import { envInt, fmtMs, log, machineFacts, whole, finishRun } from "./support.ts";

const backlog = envInt("BENCH_BACKLOG", 2000, 1, 100_000);
const latencyMs = envInt("BENCH_LLM_LATENCY_MS", 50, 0, 60_000);
const workerConcurrency = envInt("WORKER_CONCURRENCY", 4, 1, 100);
const windowSeconds = envInt("BENCH_WINDOW_SECONDS", 10, 1, 600);
const phaseTimeoutSeconds = envInt("BENCH_PHASE_TIMEOUT_SECONDS", 240, 10, 3600);
/** What the issue measured against: a realistic LLM call. */
const REALISTIC_CALL_SECONDS = 5;

const SUMMARIZE = `mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId status } } }`;
const FORCE_PRIORITY_ZERO = `
  create function public.bench_priority_zero() returns trigger language plpgsql as $$ begin new.priority := 0; return new; end $$;
  create trigger bench_priority_zero before insert on graphile_worker._private_jobs for each row execute function public.bench_priority_zero();`;
const DROP_PRIORITY_ZERO = `drop trigger if exists bench_priority_zero on graphile_worker._private_jobs; drop function if exists public.bench_priority_zero();`;

type PhaseName = "before" | "after";

interface PhaseResult {
  readonly name: PhaseName;
  /** A's jobs queued (not yet started) when B's job was queued. */
  readonly aheadOfB: number;
  /** Jobs the worker started between B's enqueue and B's start. */
  readonly position: number;
  readonly waitMs: number;
  /** Jobs started per second over the first windowSeconds after A's backlog was committed. */
  readonly jobsPerSecond: number;
  readonly queueMs: number;
  readonly cpu: CpuUse | null;
}

/** The member's session, from the claims of its access token (verified by Quire when it was issued). */
function sessionOf(tenant: Tenant): { sessionId: string; orgId: string } {
  const claims = JSON.parse(Buffer.from(tenant.memberToken.split(".")[1]!, "base64url").toString("utf8")) as { sid: string; org_id: string };
  return { sessionId: claims.sid, orgId: claims.org_id };
}

async function waitFor<T>(what: string, seconds: number, probe: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (interrupted) throw new Error("interrupted");
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`${what} within ${seconds} s`);
    await sleep(100);
  }
}

async function runPhase(name: PhaseName, db: pg.Client, base: string, busy: Tenant, quiet: Tenant): Promise<PhaseResult> {
  await db.query(DROP_PRIORITY_ZERO);
  if (name === "before") await db.query(FORCE_PRIORITY_ZERO);
  const cpuFrom = liveCpuSnapshot(quirePid);

  // A's backlog, in one transaction of A's member (the role and session settings the API would set).
  const { sessionId, orgId } = sessionOf(busy);
  const queueStarted = Date.now();
  await db.query("begin");
  try {
    await db.query(
      "select set_config('role', 'quire_authenticated', true), set_config('jwt.claims.session_id', $1, true), set_config('jwt.claims.org_id', $2, true)",
      [sessionId, orgId],
    );
    await db.query("select count(app_public.summarize_document($1)) from generate_series(1, $2)", [busy.documentIds[0], backlog]);
    await db.query("commit");
  } catch (error) {
    await db.query("rollback");
    throw error;
  }
  const queueMs = Date.now() - queueStarted;
  const [{ committed }] = (await db.query<{ committed: Date }>("select clock_timestamp() as committed")).rows as [{ committed: Date }];
  log(`${name}: A queued ${whole(backlog)} summaries in ${(queueMs / 1000).toFixed(1)} s; B asks for one`);

  const answer = await graphql<{ summarizeDocument: { job: { rowId: string } } }>(base, SUMMARIZE, { d: quiet.documentIds[0] }, quiet.memberToken);
  const bJob = answer.summarizeDocument.job.rowId;
  const started = await waitFor(`${name}: B's job did not start`, phaseTimeoutSeconds, async () => {
    const { rows } = await db.query<{ started_at: Date | null }>("select started_at from app_public.jobs where id = $1", [bJob]);
    return rows[0]?.started_at ?? null;
  });
  // The throughput window must be over before the backlog is cancelled.
  const windowEnd = committed.getTime() + windowSeconds * 1000;
  if (Date.now() < windowEnd) await sleep(windowEnd - Date.now());
  const cpu = cpuBetween(cpuFrom, liveCpuSnapshot(quirePid));
  await waitFor(`${name}: B's job did not succeed`, 60, async () => {
    const { rows } = await db.query<{ status: string }>("select status from app_public.jobs where id = $1", [bJob]);
    if (rows[0]?.status === "failed" || rows[0]?.status === "cancelled") throw new Error(`${name}: B's job ended ${rows[0].status}`);
    return rows[0]?.status === "succeeded" ? true : null;
  });

  const { rows } = await db.query<{ ahead: number; position: number; wait_ms: number; in_window: number }>(
    `select (select count(*)::int from app_public.jobs a
              where a.org_id = $2 and a.created_at <= b.created_at and (a.started_at is null or a.started_at > b.created_at)) as ahead,
            (select count(*)::int from app_public.jobs o
              where o.id <> b.id and o.started_at >= b.created_at and o.started_at < b.started_at) as position,
            extract(epoch from b.started_at - b.created_at) * 1000 as wait_ms,
            (select count(*)::int from app_public.jobs w
              where w.org_id in ($2, b.org_id) and w.started_at >= $3 and w.started_at < $3 + make_interval(secs => $4)) as in_window
       from app_public.jobs b where b.id = $1`,
    [bJob, busy.orgId, committed, windowSeconds],
  );
  const row = rows[0]!;

  // A's rest is cancelled (as cancelJob does: out of the queue; a running job's result is dropped), so the next
  // phase starts with an idle worker.
  await db.query(
    `with c as (update app_public.jobs set status = 'cancelled', finished_at = now()
                 where org_id = $1 and status in ('queued', 'running') returning id)
     select count(graphile_worker.remove_job(id::text)) from c`,
    [busy.orgId],
  );
  await waitFor(`${name}: the worker did not become idle`, 60, async () => {
    // A job cancelled after the worker took it fails its run and stays in graphile-worker's table, out of attempts.
    const { rows: left } = await db.query<{ n: number }>(
      "select count(*)::int as n from graphile_worker._private_jobs where is_available or locked_at is not null",
    );
    return left[0]!.n === 0 ? true : null;
  });
  await db.query(DROP_PRIORITY_ZERO);
  log(
    `${name}: B waited ${fmtMs(row.wait_ms)} behind ${whole(row.position)} jobs (started ${fmtMs(started.getTime() - committed.getTime())} after A's commit)`,
  );
  return { name, aheadOfB: row.ahead, position: row.position, waitMs: row.wait_ms, jobsPerSecond: row.in_window / windowSeconds, queueMs, cpu };
}

let interrupted = false;
let quirePid: number | null = null;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping the run and cleaning up`);
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

const failures: string[] = [];
const phases: PhaseResult[] = [];
let fake: FakeLlm | null = null;
let quire: Quire | null = null;
let db: pg.Client | null = null;
let stopped: ExitStatus | null = null;
let quietCpu: CpuUse | null = null;

try {
  const quietFrom = liveCpuSnapshot(null);
  await sleep(1_000);
  quietCpu = cpuBetween(quietFrom, liveCpuSnapshot(null));
  if (quietCpu && quietCpu.other > DISTURBED_CORES) log(`WARNING: other processes use ${quietCpu.other.toFixed(2)} cores; the results will be disturbed`);
  fake = await startFakeLlm(latencyMs);
  log(`fake LLM answering after ${latencyMs} ms at ${fake.url} (worker thread)`);
  quire = await startQuire(
    {
      label: "fairness",
      preferredPort: 56830,
      preferredPostgresPort: 54440,
      inspect: false,
      env: {
        LLM_PROVIDER: "openai",
        LLM_BASE_URL: fake.url,
        LLM_MODEL: FAKE_MODEL,
        LLM_API_KEY: "",
        WORKER_CONCURRENCY: String(workerConcurrency),
        BCRYPT_COST: "10",
        PASSWORD_HASH_CONCURRENCY: "2",
        ACCESS_TOKEN_TTL_SECONDS: "3600",
        SMTP_URL: "",
      },
    },
    () => interrupted,
  );
  quirePid = quire.pid;
  const owner = new pg.Client({ connectionString: quire.ownerUrl, application_name: "bench-setup" });
  await owner.connect();
  try {
    await owner.query("select app_admin.set_tier_allowance('free', 1000000, 1000000000000)");
  } finally {
    await owner.end();
  }
  log("setup: 4 organizations (A and B for each phase), each with a member and a document (not measured)");
  const [busyBefore, quietBefore, busyAfter, quietAfter] = await createTenants(
    quire.base,
    quire.ownerUrl,
    4,
    1,
    "# Handbook\n\nHow the team works. ".repeat(8),
  );
  db = new pg.Client({ connectionString: quire.superuserUrl, application_name: "bench-fairness" });
  await db.connect();
  phases.push(await runPhase("before", db, quire.base, busyBefore!, quietBefore!));
  phases.push(await runPhase("after", db, quire.base, busyAfter!, quietAfter!));
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  await db?.query(DROP_PRIORITY_ZERO).catch(() => undefined);
  await db?.end().catch(() => undefined);
  if (quire) {
    log("stopping Quire (SIGTERM)");
    stopped = await quire.stop();
    if (stopped.code !== 0) failures.push(`Quire exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
    else log(`Quire exited with code 0 after ${(stopped.ms / 1000).toFixed(1)} s`);
  }
  if (fake) await fake.close();
}

// --- report -------------------------------------------------------------------------------------------------------

const described: Record<PhaseName, string> = {
  before: "before: every job at priority 0 (one FIFO)",
  after: "after: fair-share priority",
};

function table(): string {
  const disturbed = phases.filter((p) => p.cpu && p.cpu.other > DISTURBED_CORES);
  return [
    `| Phase | A's backlog | A's jobs still waiting when B queued | Jobs started before B (B's position) | B's wait | Same position at ${REALISTIC_CALL_SECONDS} s per LLM call | Jobs/s, first ${windowSeconds} s | CPU cores: all / Quire / PostgreSQL / bench / other |`,
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...phases.map(
      (p) =>
        `| ${described[p.name]} | ${whole(backlog)} | ${whole(p.aheadOfB)} | ${whole(p.position)} | ${fmtMs(p.waitMs)} | ` +
        `≈ ${whole(Math.ceil(p.position / workerConcurrency) * REALISTIC_CALL_SECONDS)} s | ${p.jobsPerSecond.toFixed(1)} | ${fmtCpu(p.cpu)} |`,
    ),
    "",
    `B's wait is its job row's created_at → started_at. "At ${REALISTIC_CALL_SECONDS} s per LLM call": ⌈position ÷ WORKER_CONCURRENCY⌉ × ${REALISTIC_CALL_SECONDS} s, ` +
      `the rounds of the worker's ${workerConcurrency} slots B waits for when each call takes that long.`,
    ...(disturbed.length > 0
      ? ["", `**Disturbed run:** other processes used more than ${DISTURBED_CORES} cores during ${disturbed.map((p) => p.name).join(" and ")}.`]
      : []),
  ].join("\n");
}

const facts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  `- Settings: BENCH_BACKLOG=${backlog}, BENCH_LLM_LATENCY_MS=${latencyMs}, WORKER_CONCURRENCY=${workerConcurrency}, BENCH_WINDOW_SECONDS=${windowSeconds}`,
  `- A's backlog queued in one transaction: ${phases.map((p) => `${p.name} ${(p.queueMs / 1000).toFixed(1)} s`).join(", ") || "–"}`,
  quietCpu ? `- Other processes in the second before the run: ${quietCpu.other.toFixed(2)} cores` : "- Other processes before the run: not measured",
  stopped ? `- Quire stopped on SIGTERM with exit code ${stopped.code} in ${(stopped.ms / 1000).toFixed(1)} s` : "- Quire was not started",
];
process.stdout.write(`${table()}\n\n${facts.join("\n")}\n`);

await finishRun("fairness-latest.md", failures, () =>
  ["# Fairness between organizations: latest run", "", "Written by `node bench/fairness.ts`; see bench/README.md.", "", ...facts, "", table(), ""].join("\n"),
);
