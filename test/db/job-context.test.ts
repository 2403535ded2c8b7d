// The worker's RLS context, attacked directly in SQL: a job id with a wrong token, a finished job's token, a token
// used for another job, and a session trying to pass as a job. The database alone must refuse each.
import pg from "pg";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  a = await createTenant(db, "Ajob");
  b = await createTenant(db, "Bjob");
});
afterAll(async () => {
  await db?.drop();
});

/** Queues a summary job for `tenant` as its member; returns the job id and the token the worker would get. */
async function queueJob(tenant: Tenant): Promise<{ jobId: string; token: string }> {
  const [row] = await asSettings(
    { "jwt.claims.session_id": tenant.members.member.sessionId, "jwt.claims.org_id": tenant.orgId },
    async (c) => (await c.query<{ id: string }>("select (app_public.summarize_document(d.id)).id from app_public.documents d limit 1")).rows,
  );
  const [payload] = await query<{ payload: { jobId: string; token: string } }>(
    db.name,
    "select payload from graphile_worker._private_jobs where key = $1",
    [row!.id],
    "root",
  );
  return payload!.payload;
}

/** Runs `fn` in a transaction as the authenticated role with `settings`, as the server and worker do; commits if it resolves. */
async function asSettings<T>(settings: Record<string, string>, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query("select set_config('role', $1, true)", [roles.authenticated]);
    for (const [k, v] of Object.entries(settings)) await client.query("select set_config($1, $2, true)", [k, v]);
    const result = await fn(client);
    await client.query("commit");
    return result;
  } finally {
    await client.query("rollback").catch(() => undefined);
    await client.end();
  }
}
const asJob = <T>(jobId: string, token: string, fn: (client: pg.Client) => Promise<T>) => asSettings({ "quire.job_id": jobId, "quire.job_token": token }, fn);
const orgAndJob = (c: pg.Client) =>
  c.query<{ org: string | null; job: string | null }>("select app_public.current_org_id() as org, app_public.current_job_id() as job").then((r) => r.rows[0]!);

test("the right token opens the job's organization, and only it", async () => {
  const { jobId, token } = await queueJob(a);
  await asJob(jobId, token, async (c) => {
    expect(await orgAndJob(c)).toEqual({ org: a.orgId, job: jobId });
    const orgs = await c.query<{ org_id: string }>("select distinct org_id from app_public.documents");
    expect(orgs.rows).toEqual([{ org_id: a.orgId }]);
  });
});

test("a wrong or missing token opens nothing", async () => {
  const { jobId } = await queueJob(a);
  for (const token of ["", "guess", "0".repeat(64)]) {
    await asJob(jobId, token, async (c) => {
      expect(await orgAndJob(c)).toEqual({ org: null, job: null });
      expect((await c.query("select 1 from app_public.documents")).rowCount).toBe(0);
    });
  }
});

test("one job's token does not open another job, even in the same organization", async () => {
  const first = await queueJob(a);
  const second = await queueJob(a);
  await asJob(second.jobId, first.token, async (c) => expect(await orgAndJob(c)).toEqual({ org: null, job: null }));
});

test("the runner can write results only for its own job, not for another organization's", async () => {
  const mine = await queueJob(a);
  const theirs = await queueJob(b);
  await asJob(mine.jobId, mine.token, async (c) => {
    const [theirDoc] = await query<{ id: string }>(db.name, "select document_id as id from app_public.jobs where id = $1", [theirs.jobId], "root");
    const insert = (jobId: string, orgId: string, documentId: string) =>
      c.query(
        `insert into app_public.summaries (org_id, document_id, job_id, global_template_version_id, content, provider, model, prompt_tokens, completion_tokens, latency_ms, document_revision)
         select $1, $2, $3, (select id from app_public.global_template_versions limit 1), 'x', 'p', 'm', 1, 1, 1, 1`,
        [orgId, documentId, jobId],
      );
    await c.query("savepoint s");
    await expect(insert(theirs.jobId, b.orgId, theirDoc!.id)).rejects.toMatchObject({ code: "42501" });
    await c.query("rollback to savepoint s");
    const other = await c.query("update app_public.jobs set status = 'failed', finished_at = now(), error_code = 'X' where id = $1", [theirs.jobId]);
    expect(other.rowCount).toBe(0);
  });
  expect((await query<{ status: string }>(db.name, "select status from app_public.jobs where id = $1", [theirs.jobId], "root"))[0]!.status).toBe("queued");
});

test("a finished job's token no longer opens anything", async () => {
  const { jobId, token } = await queueJob(a);
  await query(db.name, "update app_public.jobs set status = 'cancelled', finished_at = now() where id = $1", [jobId], "root");
  await asJob(jobId, token, async (c) => expect(await orgAndJob(c)).toEqual({ org: null, job: null }));
});

test("a session cannot pass as a job: with a session, current_job_id() is null and job rows cannot be updated", async () => {
  const { jobId, token } = await queueJob(a);
  await asSettings(
    { "jwt.claims.session_id": a.members.owner.sessionId, "jwt.claims.org_id": a.orgId, "quire.job_id": jobId, "quire.job_token": token },
    async (c) => {
      expect(await orgAndJob(c)).toEqual({ org: a.orgId, job: null });
      const updated = await c.query("update app_public.jobs set attempts = 99 where id = $1", [jobId]);
      expect(updated.rowCount).toBe(0);
    },
  );
});
