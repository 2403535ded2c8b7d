// No restart or outage loses a job: real workers, a real database, a fake LLM service. A database outage at the
// moment a job's completion is recorded, a rolling deploy where a stopping worker's job is taken over, a stop that
// waits for SHUTDOWN_TIMEOUT_SECONDS and hands what it cannot finish to another worker at once, dead workers' queue
// entries whatever their job's status, LLM outages and long Retry-Afters ridden out without using up attempts, and
// summaries of a document edited meanwhile marked stale.
import { Module } from "node:module";
import pg from "pg";
import { pino } from "pino";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { openAiAnswer, startFakeLlmServer, type FakeLlmServer, type Reply } from "../support/fake-llm-server.ts";
import { createTestDatabase, query, roles, rootUrl, silentLogger, testConfig, urlFor, type TestDatabase } from "../support/database.ts";
import { startTcpProxy } from "../support/tcp-proxy.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Durable");
});
afterEach(async () => {
  // Each test starts with an empty queue: nothing a test left behind reaches the next one's fake LLM.
  await query(db.name, "delete from graphile_worker._private_jobs", [], "root");
  await query(db.name, "update app_public.jobs set status = 'cancelled', finished_at = now() where status in ('queued', 'running')", [], "root");
  await query(db.name, "delete from app_private.worker_heartbeats", [], "root");
});
afterAll(async () => {
  await db?.drop();
});

/** The real process object: Jest gives each test file a copy, and listens for unhandled rejections on the real one. */
const hostProcess = () => (Module as unknown as { _load(request: string): NodeJS.Process })._load("process");

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 100 ms until it returns a value other than undefined, or throws after `ms`. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function newDocument(content = "Revenue grew. Costs fell. The team shipped on time."): Promise<string> {
  const [doc] = await query<{ id: string }>(
    db.name,
    "insert into app_public.documents (org_id, title, content) values ($1, 'Report', $2) returning id",
    [t.orgId, content],
    "root",
  );
  return doc!.id;
}

/** Queues a summary of `documentId` through summarize_document, as the tenant's member would (with the server's JOB_MAX_ATTEMPTS). */
async function queue(documentId: string, maxAttempts = 3): Promise<string> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query(
      "select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true), set_config('quire.job_max_attempts', $4, true)",
      [roles.authenticated, t.members.member.sessionId, t.orgId, String(maxAttempts)],
    );
    const { rows } = await client.query<{ id: string }>("select (app_public.summarize_document($1)).id", [documentId]);
    await client.query("commit");
    return rows[0]!.id;
  } finally {
    await client.end();
  }
}

interface Running {
  readonly worker: QuireWorker;
  stop(): Promise<void>;
}

/** A worker on its own pool (through `port` instead of the database's own when given), logging to `lines` if given. */
async function startWorker(env: NodeJS.ProcessEnv, port?: number, lines?: string[]): Promise<Running> {
  const config = testConfig(db.name, env);
  const url = new URL(config.database.url);
  if (port !== undefined) url.port = String(port);
  const pool = createPool({ url: url.toString(), max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const logger = lines ? pino({ level: "debug" }, { write: (line: string) => void lines.push(line) }) : silentLogger;
  const worker = await startQuireWorker({ config, logger, pool });
  let stopped = false;
  return {
    worker,
    async stop() {
      if (stopped) return;
      stopped = true;
      await worker.stop();
      await pool.end();
    },
  };
}

const llmEnv = (fake: FakeLlmServer, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
  LLM_PROVIDER: "openai",
  LLM_BASE_URL: fake.url,
  LLM_MAX_RETRIES: "0",
  ...extra,
});

const answer: Reply = { json: openAiAnswer("The summary.", { prompt_tokens: 10, completion_tokens: 3 }) };

interface JobState {
  status: string;
  error_code: string | null;
  summaries: number;
  usage: number;
  stale: boolean | null;
}
const jobState = async (jobId: string): Promise<JobState> =>
  (
    await query<JobState>(
      db.name,
      `select j.status, j.error_code,
              (select count(*)::int from app_public.summaries s where s.job_id = j.id) as summaries,
              (select count(*)::int from app_public.usage_records u where u.job_id = j.id) as usage,
              (select s.stale from app_public.summaries s where s.job_id = j.id) as stale
         from app_public.jobs j where j.id = $1`,
      [jobId],
      "root",
    )
  )[0]!;

interface QueueEntry {
  locked_by: string | null;
  attempts: number;
  due_in_seconds: number;
}
/** The job's graphile-worker entry (the one under its key), or null when there is none. */
const queueEntry = async (jobId: string): Promise<QueueEntry | null> =>
  (
    await query<QueueEntry>(
      db.name,
      "select locked_by, attempts, extract(epoch from run_at - now())::float8 as due_in_seconds from graphile_worker._private_jobs where key = $1",
      [jobId],
      "root",
    )
  )[0] ?? null;

const settled = (jobId: string) =>
  waitFor(`job ${jobId} to settle`, async () => {
    const state = await jobState(jobId);
    return state.status === "queued" || state.status === "running" ? undefined : state;
  });

test("a database outage as a job's completion is recorded: the worker rides it out and the job is not lost", async () => {
  // graphile-worker records a completion without awaiting it (worker.js calls completeJob(job) and drops the
  // promise), so the failed write is an unhandled rejection. The services' process policy (lib/process.ts) logs it and
  // goes on; Jest (on the host process, not the test's copy of `process`) would fail the test instead, so the test
  // takes the services' policy for its duration.
  const host = hostProcess();
  const jestHandlers = host.rawListeners("unhandledRejection") as Array<(...args: unknown[]) => void>;
  const unhandled: unknown[] = [];
  const record = (reason: unknown) => unhandled.push(reason);
  host.removeAllListeners("unhandledRejection");
  host.on("unhandledRejection", record);
  const fake = await startFakeLlmServer(() => answer);
  const target = new URL(rootUrl());
  const proxy = await startTcpProxy(target.hostname, Number(target.port));
  const worker = await startWorker(llmEnv(fake, { WORKER_HEARTBEAT_SECONDS: "1" }), proxy.port);
  try {
    // The connection goes down the moment graphile-worker sends the job's completion (it never arrives).
    const cut = proxy.cutOn("_private_jobs as jobs\nwhere id = $1::bigint");
    const jobId = await queue(await newDocument());
    await cut;
    await sleep(1_500);
    proxy.restore();
    await waitFor("the completion's failure", async () => (unhandled.length > 0 ? true : undefined));

    // The job's result was committed before the outage; its queue entry, left locked, is released and run again.
    await waitFor("the queue entry to go", async () => ((await queueEntry(jobId)) === null ? true : undefined), 40_000);
    expect(await jobState(jobId)).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: false });
    expect(fake.requests).toHaveLength(1);

    // And the worker goes on working.
    const next = await queue(await newDocument());
    expect((await settled(next)).status).toBe("succeeded");
  } finally {
    await worker.stop();
    await proxy.close();
    await fake.close();
    host.off("unhandledRejection", record);
    for (const handler of jestHandlers) host.on("unhandledRejection", handler);
  }
}, 90_000);

test("a rolling deploy: a stopping worker whose job another took over cannot put it back; it ends with one summary", async () => {
  // The first worker's call never answers (until its shutdown aborts it); the second's answers after 7 s.
  const fake = await startFakeLlmServer((_request, index) => (index === 0 ? "hang" : { ...answer, delayMs: 7_000 }));
  const lines: string[] = [];
  const first = await startWorker(llmEnv(fake, { WORKER_HEARTBEAT_SECONDS: "3600", SHUTDOWN_TIMEOUT_SECONDS: "1" }), undefined, lines);
  let second: Running | null = null;
  try {
    const jobId = await queue(await newDocument());
    const [{ token }] = (await query<{ token: string }>(
      db.name,
      "select payload->>'token' as token from graphile_worker._private_jobs where key = $1",
      [jobId],
      "root",
    )) as [{ token: string }];
    await waitFor("the first call", async () => (fake.requests.length >= 1 ? true : undefined));
    // The first worker looks dead to the others (its heartbeat is gone), so the second takes its job over.
    await query(db.name, "delete from app_private.worker_heartbeats where worker_id = $1", [first.worker.workerId], "root");
    second = await startWorker(llmEnv(fake, { WORKER_HEARTBEAT_SECONDS: "1" }));
    await waitFor("the second call", async () => (fake.requests.length >= 2 ? true : undefined));
    // Now the first one stops: its aborted run must not touch the job the second is running.
    await first.stop();
    const state = await settled(jobId);
    expect(state).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: false });
    expect(await queueEntry(jobId)).toBeNull();
    // The stale run's failure was logged (graphile-worker logs the job with it), without the job's token.
    expect(lines.some((line) => line.includes("taken over by another run"))).toBe(true);
    expect(lines.filter((line) => line.includes(token))).toEqual([]);
  } finally {
    await first.stop();
    await second?.stop();
    await fake.close();
  }
}, 90_000);

test("a stop waits up to SHUTDOWN_TIMEOUT_SECONDS for a running job (not 5 s)", async () => {
  const fake = await startFakeLlmServer(() => ({ ...answer, delayMs: 6_500 }));
  const worker = await startWorker(llmEnv(fake, { SHUTDOWN_TIMEOUT_SECONDS: "30" }));
  try {
    const jobId = await queue(await newDocument());
    await waitFor("the call", async () => (fake.requests.length >= 1 ? true : undefined));
    await worker.stop();
    expect(await jobState(jobId)).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: false });
  } finally {
    await worker.stop();
    await fake.close();
  }
}, 60_000);

test("a job a stop cuts short is due again at once, its attempt not counted, and another worker finishes it", async () => {
  const fake = await startFakeLlmServer((_request, index) => (index === 0 ? "hang" : answer));
  const worker = await startWorker(llmEnv(fake, { SHUTDOWN_TIMEOUT_SECONDS: "1" }));
  let next: Running | null = null;
  try {
    const jobId = await queue(await newDocument(), 1);
    await waitFor("the call", async () => (fake.requests.length >= 1 ? true : undefined));
    await worker.stop();
    expect((await jobState(jobId)).status).toBe("queued");
    const entry = await queueEntry(jobId);
    expect(entry).toEqual(expect.objectContaining({ locked_by: null, attempts: 0 }));
    expect(entry!.due_in_seconds).toBeLessThanOrEqual(0);
    // One attempt allowed, and it was not used up: the next worker makes the summary.
    next = await startWorker(llmEnv(fake));
    expect(await settled(jobId)).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: false });
  } finally {
    await worker.stop();
    await next?.stop();
    await fake.close();
  }
}, 60_000);

test("dead workers' queue entries are freed whatever their job's status; a crash before the first write too", async () => {
  const setUp = async (status: "queued" | "running", lock: string, lockedAgo: string, runner: string | null) => {
    const jobId = await queue(await newDocument());
    await query(
      db.name,
      "update graphile_worker._private_jobs set locked_by = $2, locked_at = now() - $3::interval, attempts = 1 where key = $1",
      [jobId, lock, lockedAgo],
      "root",
    );
    await query(db.name, "update app_public.jobs set status = $2::app_public.job_status where id = $1", [jobId, status], "root");
    if (runner) await query(db.name, "update app_private.job_tokens set runner_id = $2, lock_id = $3 where job_id = $1", [jobId, runner, lock], "root");
    return jobId;
  };
  // Put back to `queued` by a run whose process then died before graphile-worker recorded the failure.
  const requeued = await setUp("queued", "pool-dead-1", "1 second", "worker-dead-1");
  // Taken by a process that died before the job's first write: only graphile-worker knows, for an hour now.
  const neverStarted = await setUp("queued", "pool-dead-2", "1 hour", null);
  // A live worker's job is left alone.
  await query(db.name, "insert into app_private.worker_heartbeats (worker_id, hostname, pid, lock_id) values ('worker-live', 'h', 1, 'pool-live')", [], "root");
  const live = await setUp("running", "pool-live", "1 hour", "worker-live");

  const [released] = await query<{ n: number }>(db.name, "select app_private.release_dead_workers(30) as n", [], "root");
  expect(released!.n).toBe(2);
  expect((await queueEntry(requeued))!.locked_by).toBeNull();
  expect((await queueEntry(neverStarted))!.locked_by).toBeNull();
  expect((await queueEntry(live))!.locked_by).toBe("pool-live");
});

test("an LLM outage longer than the quick retries: the job is put back in the queue, attempts untouched, until it succeeds", async () => {
  let failures = 5;
  const fake = await startFakeLlmServer(() => (failures-- > 0 ? { status: 503, json: { error: { message: "overloaded" } } } : answer));
  const worker = await startWorker(llmEnv(fake, { LLM_RETRY_MAX_DELAY_SECONDS: "1", LLM_RETRY_WINDOW_SECONDS: "300" }));
  try {
    const jobId = await queue(await newDocument(), 2);
    expect(await settled(jobId)).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: false });
    expect(fake.requests).toHaveLength(6);
  } finally {
    await worker.stop();
    await fake.close();
  }
}, 90_000);

test("transient LLM failures past LLM_RETRY_WINDOW_SECONDS fail the job with their code", async () => {
  const fake = await startFakeLlmServer(() => ({ status: 503, json: { error: { message: "overloaded" } } }));
  const worker = await startWorker(llmEnv(fake, { LLM_RETRY_MAX_DELAY_SECONDS: "1", LLM_RETRY_WINDOW_SECONDS: "2" }));
  try {
    const jobId = await queue(await newDocument());
    expect(await settled(jobId)).toEqual({ status: "failed", error_code: "LLM_UNAVAILABLE", summaries: 0, usage: 0, stale: null });
    expect(fake.requests.length).toBeGreaterThan(1);
    expect(await queueEntry(jobId)).toBeNull();
  } finally {
    await worker.stop();
    await fake.close();
  }
}, 60_000);

test("a 429 with Retry-After: 45 reschedules the job 45 s out instead of holding a worker slot", async () => {
  const fake = await startFakeLlmServer(() => ({ status: 429, headers: { "retry-after": "45" }, json: { error: { message: "slow down" } } }));
  const worker = await startWorker(llmEnv(fake, { LLM_MAX_RETRIES: "3" }));
  try {
    const jobId = await queue(await newDocument());
    const entry = await waitFor(
      "the job to be rescheduled",
      async () => {
        const e = await queueEntry(jobId);
        return e && e.locked_by === null && e.due_in_seconds > 30 ? e : undefined;
      },
      10_000,
    );
    expect(entry.attempts).toBe(0);
    expect(entry.due_in_seconds).toBeGreaterThan(40);
    expect(entry.due_in_seconds).toBeLessThanOrEqual(45);
    expect(await jobState(jobId)).toEqual(expect.objectContaining({ status: "queued", error_code: "LLM_RATE_LIMITED", summaries: 0 }));
    expect(fake.requests).toHaveLength(1);
  } finally {
    await worker.stop();
    await fake.close();
  }
}, 60_000);

test("a summary made while its document was edited is stale from the start", async () => {
  const fake = await startFakeLlmServer(() => ({ ...answer, delayMs: 1_500 }));
  const worker = await startWorker(llmEnv(fake));
  try {
    const documentId = await newDocument();
    const jobId = await queue(documentId);
    await waitFor("the call", async () => (fake.requests.length >= 1 ? true : undefined));
    await query(db.name, "update app_public.documents set content = 'Edited while summarizing.' where id = $1", [documentId], "root");
    expect(await settled(jobId)).toEqual({ status: "succeeded", error_code: null, summaries: 1, usage: 1, stale: true });
  } finally {
    await worker.stop();
    await fake.close();
  }
}, 60_000);
