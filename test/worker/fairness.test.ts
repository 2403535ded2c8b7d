// One organization's backlog must not starve the others: graphile-worker takes jobs by (priority, run_at), and a job
// is queued at its organization's count of outstanding jobs (migration fair-share-job-priority), so organizations
// take turns. Jobs are queued through summarize_document, as members would, and a real graphile-worker with one
// slot runs them with stand-in tasks that only record the order, so what is asserted is the order the worker picks.
import pg from "pg";
import { run, type TaskList } from "graphile-worker";
import { createPool } from "../../db/pool.ts";
import { workerLogger } from "../../lib/worker-logger.ts";
import { createTestDatabase, query, roles, silentLogger, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});
// A test that failed may leave jobs behind; each starts with an empty queue.
beforeEach(async () => {
  await query(db.name, "delete from graphile_worker._private_jobs", [], "root");
});

/** Runs `sql` (returning one job as `id`) `count` times as the tenant's member, one transaction each, as the API
 *  would; resolves with the job ids. */
async function asMember(t: Tenant, sql: string, params: unknown[], count: number): Promise<string[]> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      await client.query("begin");
      await client.query("select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true)", [
        roles.authenticated,
        t.members.member.sessionId,
        t.orgId,
      ]);
      const { rows } = await client.query<{ id: string }>(sql, params);
      await client.query("commit");
      ids.push(rows[0]!.id);
    }
    return ids;
  } finally {
    await client.end();
  }
}

/** Queues `count` summaries of the tenant's handbook through summarize_document. */
async function summarize(t: Tenant, count: number): Promise<string[]> {
  const [doc] = await query<{ id: string }>(db.name, "select id from app_public.documents where org_id = $1 limit 1", [t.orgId], "root");
  return asMember(t, "select (app_public.summarize_document($1)).id", [doc!.id], count);
}

/** Runs every queued job with one worker slot and stand-in tasks; resolves with what ran, in order (a summary by
 *  its Quire job id, an email as `email:<outbox id>`). */
async function runInOrder(expected: number): Promise<string[]> {
  const order: string[] = [];
  const taskList: TaskList = {
    summarize: async (payload) => {
      order.push((payload as { jobId: string }).jobId);
    },
    send_email: async (payload) => {
      order.push(`email:${(payload as { outboxId: string }).outboxId}`);
    },
  };
  const pool = createPool({ url: urlFor(roles.authenticator, db.name), max: 2, applicationName: "quire-test-fairness" }, silentLogger);
  const runner = await run({ pgPool: pool, taskList, parsedCronItems: [], concurrency: 1, noHandleSignals: true, logger: workerLogger(silentLogger) });
  try {
    const deadline = Date.now() + 30_000;
    while (order.length < expected) {
      if (Date.now() > deadline) throw new Error(`only ${order.length} of ${expected} jobs ran`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return order;
  } finally {
    await runner.stop();
    await pool.end();
  }
}

async function priorities(jobIds: readonly string[]): Promise<number[]> {
  const rows = await query<{ priority: number }>(
    db.name,
    "select g.priority from unnest($1::text[]) with ordinality k(key, n) join graphile_worker._private_jobs g on g.key = k.key order by k.n",
    [jobIds],
    "root",
  );
  return rows.map((r) => r.priority);
}

test("an organization with one job is served right after the first job of one with 50 queued, and mail first", async () => {
  const busy = await createTenant(db, "Busy");
  const quiet = await createTenant(db, "Quiet");
  const backlog = await summarize(busy, 50);
  const [lone] = await summarize(quiet, 1);
  const [email] = await query<{ id: string }>(db.name, "select app_private.queue_mail('password_reset', $1, null) as id", [busy.members.owner.userId], "root");

  const mail = await query<{ priority: number }>(db.name, "select priority from graphile_worker.jobs where task_identifier = 'send_email'", [], "root");
  const queuedAt = { backlog: await priorities(backlog), lone: await priorities([lone!]), mail: mail.map((r) => r.priority) };

  const order = await runInOrder(52);
  // Before, the queue was one FIFO: the email ran 52nd and the quiet organization's summary 51st.
  expect(order.slice(0, 3)).toEqual([`email:${email!.id}`, backlog[0], lone]);
  // Each organization's n-th outstanding job is queued at priority n; mail ahead of all of them.
  expect(queuedAt).toEqual({ backlog: backlog.map((_, n) => n), lone: [0], mail: [-1] });
  expect(order.slice(3)).toEqual(backlog.slice(1));
});

test("two organizations with backlogs take turns, whoever queued first", async () => {
  const first = await createTenant(db, "First");
  const second = await createTenant(db, "Second");
  const a = await summarize(first, 10);
  const b = await summarize(second, 10);
  const order = await runInOrder(20);
  expect(order).toEqual(a.flatMap((id, n) => [id, b[n]]));
});

test("imports, syncs and publishing share their organization's turn with its summaries", async () => {
  const t = await createTenant(db, "Mixed");
  const [integration] = await query<{ id: string }>(db.name, "select id from app_public.integrations where org_id = $1", [t.orgId], "root");
  const summaries = await summarize(t, 2);
  const [sync] = await asMember(t, "select (app_public.sync_integration($1)).id", [integration!.id], 1);
  expect(await priorities([...summaries, sync!])).toEqual([0, 1, 2]);
});

test("the priority counts what is queued or running, not what finished, and stops at 1000", async () => {
  const t = await createTenant(db, "Counted");
  const priorityOf = async () => {
    const [row] = await query<{ p: number }>(db.name, "select app_private.fair_share_priority($1, gen_random_uuid()) as p", [t.orgId], "root");
    return row!.p;
  };
  // The fixture's finished job does not count.
  expect(await priorityOf()).toBe(0);
  await query(db.name, "insert into app_public.jobs (org_id, kind, status, started_at) values ($1, 'summarize', 'running', now())", [t.orgId], "root");
  await query(db.name, "insert into app_public.jobs (org_id, kind) values ($1, 'summarize')", [t.orgId], "root");
  expect(await priorityOf()).toBe(2);
  await query(db.name, "insert into app_public.jobs (org_id, kind) select $1, 'summarize' from generate_series(1, 1000)", [t.orgId], "root");
  expect(await priorityOf()).toBe(1000);
});
