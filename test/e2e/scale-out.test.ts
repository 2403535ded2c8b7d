// Scaling out: two API servers and two workers on one database behave as one Quire (docs/scaling.md).
// - Jobs: summaries requested through server B are each run exactly once, by both workers at the same time.
// - Live events: subscribers on A and on B receive every event of those changes and jobs once, in seq order.
// - Revocation: a session ended through A is refused at B's next request, and its subscription on B is closed.
// - Rate limits: N requests spread over A and B spend one budget; the next on either is 429 RATE_LIMITED.
// - Cron: both workers try to schedule each minute's checkpoint_audit, graphile-worker's known_crontabs lets one.
// Everything is asserted by counts and codes: the waits only wait for a condition to hold.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { startFakeLlmServer, type FakeLlmServer, type Reply } from "../support/fake-llm-server.ts";
import { subscribe, type Subscription } from "../support/live.ts";
import { codeOf, startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let llm: FakeLlmServer;
let a: TestServer;
let b: TestServer;
const workers: Array<{ name: string; pool: pg.Pool; worker: QuireWorker }> = [];

/** LLM requests in flight now, and the most there ever were at once. */
const inFlight = { now: 0, most: 0 };
/** Released once two LLM requests are in flight together (each worker runs one job at a time: both are working). */
let bothWorking: () => void = () => undefined;
const bothWorkingSeen = new Promise<void>((resolve) => {
  bothWorking = resolve;
});

const completion = (content: string): Reply => ({
  json: {
    id: "chatcmpl-1",
    object: "chat.completion",
    model: "fake-model",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
    usage: { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 },
  },
});

/**
 * Test instrumentation, installed as the superuser on this test's database only: every attempt to record a cron
 * execution in graphile-worker's known_crontabs (a BEFORE INSERT trigger sees the attempts that lose the
 * ON CONFLICT race too), naming the worker by its pool's application_name, and every cron job added and completed.
 */
const probeSql = `
  create schema scale_probe;
  create table scale_probe.cron_attempts (identifier text not null, ts timestamptz not null, worker text not null);
  create table scale_probe.cron_jobs (job_id bigint not null, identifier text not null, ts timestamptz not null, event text not null);

  create function scale_probe.tg_cron_attempt() returns trigger
    language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
  begin
    if new.last_execution is not null then
      insert into scale_probe.cron_attempts values (new.identifier, new.last_execution, current_setting('application_name'));
    end if;
    return new;
  end;
  $$;
  create trigger _000_probe before insert on graphile_worker._private_known_crontabs
    for each row execute function scale_probe.tg_cron_attempt();

  create function scale_probe.tg_cron_job() returns trigger
    language plpgsql volatile security definer set search_path = pg_catalog, pg_temp as $$
  declare
    v_job graphile_worker._private_jobs := case when tg_op = 'DELETE' then old else new end;
  begin
    if v_job.payload -> '_cron' is not null then
      insert into scale_probe.cron_jobs
        select v_job.id, t.identifier, (v_job.payload -> '_cron' ->> 'ts')::timestamptz, lower(tg_op)
          from graphile_worker._private_tasks t where t.id = v_job.task_id;
    end if;
    return null;
  end;
  $$;
  create trigger _000_probe after insert or delete on graphile_worker._private_jobs
    for each row execute function scale_probe.tg_cron_job();
`;

/** Polls `check` until it returns a value other than undefined; fails naming `what` after `ms`. */
async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  await query(db.name, probeSql, [], "root");
  llm = await startFakeLlmServer(async (request) => {
    inFlight.now++;
    inFlight.most = Math.max(inFlight.most, inFlight.now);
    if (inFlight.now >= 2) bothWorking();
    await bothWorkingSeen;
    inFlight.now--;
    const content = (request.body as { messages: Array<{ content: string }> }).messages[0]!.content;
    return completion(`Summary of ${/Scale doc \d+/.exec(content)?.[0] ?? "?"}.`);
  });
  const env = {
    LLM_PROVIDER: "openai",
    LLM_BASE_URL: `${llm.url}/v1`,
    LLM_API_KEY: "sk-scale-test",
    LLM_TIMEOUT_SECONDS: "30",
    JOB_MAX_ATTEMPTS: "1",
    // One job at a time per worker: two LLM requests in flight at once mean both workers are running jobs.
    WORKER_CONCURRENCY: "1",
    WORKER_HEARTBEAT_SECONDS: "1",
    RATE_LIMIT_SYNC_MS: "20",
  };
  const config = testConfig(db.name, env);
  a = await startTestServer(config);
  b = await startTestServer(config);
  for (const name of ["quire-scale-worker-1", "quire-scale-worker-2"]) {
    const pool = createPool({ url: config.database.url, max: 3, applicationName: name }, silentLogger);
    workers.push({ name, pool, worker: await startQuireWorker({ config, logger: silentLogger, pool }) });
  }
}, 60_000);
afterAll(async () => {
  for (const { worker, pool } of workers) {
    await worker.stop();
    await pool.end();
  }
  await a?.close();
  await b?.close();
  await db?.drop();
  await llm?.close();
});

interface Event {
  seq: string;
  entity: string;
  op: string;
  entityId: string;
  job: { rowId: string; status: string } | null;
}
const eventFields = "seq entity op entityId job { rowId status }";
const jobUpdated = `subscription ($since: BigInt) { jobUpdated(since: $since) { ${eventFields} } }`;
const documentChanged = `subscription ($since: BigInt) { documentChanged(since: $since) { ${eventFields} } }`;

const data = <T>(answer: Awaited<ReturnType<TestServer["graphql"]>>, field: string) => {
  expect(answer.body.errors).toBeUndefined();
  return answer.body.data![field] as T;
};
const count = async (sql: string, values: unknown[]) => Number((await query<{ n: string }>(db.name, `select count(*) as n from ${sql}`, values, "root"))[0]!.n);
const seqsOf = (events: Event[]) => events.map((e) => Number(e.seq));

describe("two servers and two workers on one database", () => {
  let t: Tenant;
  beforeAll(async () => {
    t = await createTenant(db, "Scale");
  });

  test("summaries asked of B run once each, on both workers; subscribers on A and B get every event once, in order", async () => {
    const token = t.members.member.accessToken;
    // The fixture's own events are numbered before the test starts counting after them.
    await until("the fixture's live events numbered", async () =>
      (await count("app_public.live_events where org_id = $1 and seq is null", [t.orgId])) === 0 ? true : undefined,
    );
    const [{ since }] = (await query<{ since: string }>(
      db.name,
      "select coalesce(max(seq), 0) as since from app_public.live_events where org_id = $1",
      [t.orgId],
      "root",
    )) as [{ since: string }];
    const subscriptions: Record<string, { jobs: Subscription<Event>; documents: Subscription<Event> }> = {};
    for (const [name, server] of [
      ["A", a],
      ["B", b],
    ] as const) {
      subscriptions[name] = {
        jobs: subscribe<Event>(server.url, token, jobUpdated, { since }),
        documents: subscribe<Event>(server.url, token, documentChanged, { since }),
      };
    }
    try {
      const jobs = 6;
      const jobIds: string[] = [];
      for (let i = 1; i <= jobs; i++) {
        const created = data<{ document: { rowId: string } }>(
          await b.graphql(
            "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }",
            { d: { title: `Doc ${i}`, content: `Scale doc ${i}. It grew.` } },
            token,
          ),
          "createDocument",
        );
        const asked = data<{ job: { rowId: string } }>(
          await b.graphql("mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId } } }", { d: created.document.rowId }, token),
          "summarizeDocument",
        );
        jobIds.push(asked.job.rowId);
      }
      await until("every job finished", async () =>
        (await count("app_public.jobs where id = any($1) and status in ('succeeded', 'failed', 'cancelled')", [jobIds])) === jobs ? true : undefined,
      );

      // Exactly once: one LLM call per document, one attempt, one summary per job, nothing left in the queue.
      expect(llm.requests).toHaveLength(jobs);
      const asked = llm.requests.map((r) => /Scale doc (\d+)/.exec((r.body as { messages: Array<{ content: string }> }).messages[0]!.content)?.[1]);
      expect(asked.map(Number).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6]);
      const rows = await query<{ status: string; attempts: number; summaries: string }>(
        db.name,
        "select j.status, j.attempts, (select count(*) from app_public.summaries s where s.job_id = j.id) as summaries from app_public.jobs j where j.id = any($1)",
        [jobIds],
        "root",
      );
      expect(rows).toEqual(Array.from({ length: jobs }, () => ({ status: "succeeded", attempts: 1, summaries: "1" })));
      expect(
        await count("graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'summarize'", []),
      ).toBe(0);
      // Both workers ran jobs (two LLM calls in flight at once, with one job at a time per worker).
      expect(inFlight.most).toBe(2);

      // Live events: every server's numberer may run, one at a time; each event is numbered once and reaches the
      // subscribers of both servers once, in order.
      await until("every live event numbered", async () =>
        (await count("app_public.live_events where org_id = $1 and seq is null", [t.orgId])) === 0 ? true : undefined,
      );
      const outbox = await query<{ seq: string; entity: string }>(
        db.name,
        "select seq, entity from app_public.live_events where org_id = $1 and seq > $2 order by seq",
        [t.orgId, since],
        "root",
      );
      const expected = {
        jobs: outbox.filter((e) => e.entity === "job").map((e) => Number(e.seq)),
        documents: outbox.filter((e) => e.entity === "document" || e.entity === "summary").map((e) => Number(e.seq)),
      };
      // Six documents, six summaries, and each job's insert, running and succeeded at least.
      expect(expected.documents).toHaveLength(2 * jobs);
      expect(expected.jobs.length).toBeGreaterThanOrEqual(3 * jobs);
      for (const [name, subscription] of Object.entries(subscriptions)) {
        for (const kind of ["jobs", "documents"] as const) {
          await until(`${name}'s ${kind} subscription caught up`, async () => (subscription[kind].events.length >= expected[kind].length ? true : undefined));
        }
      }
      // A last change through A, heard on both: nothing else came before it.
      const [sentinel] = await query<{ id: string }>(db.name, "select id from app_public.documents where org_id = $1 and title = 'Doc 1'", [t.orgId], "root");
      data(
        await a.graphql(
          'mutation ($id: UUID!) { updateDocument(input: { rowId: $id, patch: { title: "Doc one" } }) { document { rowId } } }',
          { id: sentinel!.id },
          token,
        ),
        "updateDocument",
      );
      for (const [name, subscription] of Object.entries(subscriptions)) {
        await subscription.documents.waitFor((e) => e.entityId === sentinel!.id && e.op === "update");
        expect({ name, seqs: seqsOf(subscription.jobs.events) }).toEqual({ name, seqs: expected.jobs });
        expect({ name, seqs: seqsOf(subscription.documents.events).slice(0, -1) }).toEqual({ name, seqs: expected.documents });
        // Each event's row is read when it is delivered: a job's last event shows it succeeded.
        expect(jobIds.map((jobId) => subscription.jobs.events.findLast((e) => e.entityId === jobId)?.job?.status)).toEqual(jobIds.map(() => "succeeded"));
        expect(subscription.jobs.errors).toEqual([]);
        expect(subscription.documents.errors).toEqual([]);
      }
    } finally {
      for (const { jobs, documents } of Object.values(subscriptions)) {
        await jobs.close();
        await documents.close();
      }
    }
  });

  test("a session ended through A is refused at B's next request, and its subscription on B is closed", async () => {
    const session = (await createTenant(db, "Revoked")).members.member;
    const whoAmI = "{ currentUser { email } }";
    expect(data<{ email: string }>(await b.graphql(whoAmI, {}, session.accessToken), "currentUser")).toEqual({ email: session.email });
    // From the new organization's first event on: the change below is heard whether it commits before or after the
    // subscription is set up on B (without `since`, one made before would be missed).
    const live = subscribe<Event>(b.url, session.accessToken, documentChanged, { since: "0" });
    try {
      // The subscription is open on B once it hears a change.
      const created = data<{ document: { rowId: string } }>(
        await b.graphql(
          'mutation { createDocument(input: { document: { title: "Before", content: "Still signed in." } }) { document { rowId } } }',
          {},
          session.accessToken,
        ),
        "createDocument",
      );
      await live.waitFor((e) => e.entityId === created.document.rowId);
      expect(data<{ success: boolean }>(await a.graphql("mutation { logout { success } }", {}, session.accessToken), "logout")).toEqual({ success: true });
      expect(codeOf((await b.graphql(whoAmI, {}, session.accessToken)).body)).toBe("UNAUTHENTICATED");
      // As on one server: the connection closes with 4401, which graphql-ws reports as the subscription's error.
      const closed = await until("the subscription on B closed", async () =>
        live.errors.find((e): e is { code: number } => typeof (e as { code?: unknown }).code === "number"),
      );
      expect(closed.code).toBe(4401);
    } finally {
      await live.close();
    }
  });

  test("N requests spread over A and B spend one budget: the next, on either, is 429 RATE_LIMITED", async () => {
    const limited = await createTenant(db, "Limited");
    const perUser = 4;
    await query(db.name, "update app_public.organizations set tier = 'basic' where id = $1", [limited.orgId], "root");
    await query(db.name, "select app_admin.set_tier_rate_limit('basic', $1, 1000)", [perUser]);
    // Counts live in one-minute windows: keep the rounds from straddling two.
    const second = new Date().getUTCSeconds();
    if (second >= 45) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1000));
    const ask = (server: TestServer, token: string) => server.graphql("{ __typename }", {}, token);
    const synced = (userId: string, hits: number) =>
      until(`${hits} hits of ${userId} synced`, async () =>
        (await count("app_private.rate_limit_windows where key = $1 and hits = $2", [`user:${userId}`, hits])) === 1 ? true : undefined,
      );
    // Each round: half the budget on one server, synced to PostgreSQL (RATE_LIMIT_SYNC_MS); the other half on the
    // other server, whose first request of the key waits for a sync and so starts from the shared count; then one more.
    for (const [first, second, person] of [
      [a, b, limited.members.member],
      [b, a, limited.members.viewer],
    ] as const) {
      for (let i = 0; i < perUser / 2; i++) expect((await ask(first, person.accessToken)).status).toBe(200);
      await synced(person.userId, perUser / 2);
      for (let i = 0; i < perUser / 2; i++) expect((await ask(second, person.accessToken)).status).toBe(200);
      const refused = await ask(second, person.accessToken);
      expect(refused.status).toBe(429);
      expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: "RATE_LIMITED", scope: "user" });
      await synced(person.userId, perUser + 1);
    }
    // Another person of the organization still has a budget of their own.
    expect((await ask(a, limited.members.admin.accessToken)).status).toBe(200);
  });

  test("cron: both workers try to schedule each minute's checkpoint_audit; it is added and run once", async () => {
    // The first minute both workers' cron loops reached (each starts at the minute after its worker started).
    const ts = await until(
      "a minute both workers tried to schedule",
      async () =>
        (
          await query<{ ts: Date }>(
            db.name,
            "select ts from scale_probe.cron_attempts where identifier = 'checkpoint_audit' group by ts having count(distinct worker) = 2 order by ts limit 1",
            [],
            "root",
          )
        )[0]?.ts,
      90_000,
    );
    await until("that minute's job ran", async () =>
      (await count("scale_probe.cron_jobs where identifier = 'checkpoint_audit' and ts = $1 and event = 'delete'", [ts])) > 0 ? true : undefined,
    );
    const attempts = await query<{ worker: string }>(
      db.name,
      "select worker from scale_probe.cron_attempts where identifier = 'checkpoint_audit' and ts = $1 order by worker",
      [ts],
      "root",
    );
    expect(attempts.map((r) => r.worker)).toEqual(workers.map((w) => w.name));
    const jobs = await query<{ event: string; n: string }>(
      db.name,
      "select event, count(*) as n from scale_probe.cron_jobs where identifier = 'checkpoint_audit' and ts = $1 group by event order by event",
      [ts],
      "root",
    );
    expect(jobs).toEqual([
      { event: "delete", n: "1" },
      { event: "insert", n: "1" },
    ]);
    // No minute was ever scheduled twice.
    expect(await count("(select ts from scale_probe.cron_jobs where event = 'insert' group by identifier, ts having count(*) > 1) twice", [])).toBe(0);
    const [known] = await query<{ last_execution: Date }>(
      db.name,
      "select last_execution from graphile_worker._private_known_crontabs where identifier = 'checkpoint_audit'",
      [],
      "root",
    );
    expect(known!.last_execution.getTime()).toBeGreaterThanOrEqual(ts.getTime());
  }, 120_000);
});
