// The allowance's running counters (app_private.usage_counters, app_private.jobs_in_flight) always equal the
// aggregates they replace: through job inserts, status changes, usage rows and deletions. Requests count summaries and
// answers, not embeddings (whose tokens count all the same).
import { createTestDatabase, query, type TestDatabase } from "../support/database.ts";
import { createTenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const root = <R extends Record<string, unknown>>(sql: string, params: unknown[] = []) => query<R>(db.name, sql, params, "root");

/** The counters and the aggregates over the rows, side by side. */
async function compare(orgId: string) {
  const [row] = await root<{ counted: unknown; aggregated: unknown }>(
    `select (select row(u.summaries, u.jobs_in_flight, u.prompt_tokens, u.completion_tokens)::text from app_private.usage_of($1) u) as counted,
            (select row((select count(*)::int from app_public.usage_records r where r.org_id = $1 and r.kind <> 'embedding' and r.created_at >= app_private.month_start(now())),
                        (select count(*)::int from app_public.jobs j where j.org_id = $1 and j.status in ('queued', 'running')),
                        (select coalesce(sum(prompt_tokens), 0) from app_public.usage_records r where r.org_id = $1 and r.created_at >= app_private.month_start(now())),
                        (select coalesce(sum(completion_tokens), 0) from app_public.usage_records r where r.org_id = $1 and r.created_at >= app_private.month_start(now())))::text) as aggregated`,
    [orgId],
  );
  return row!;
}

test("the counters follow jobs and usage rows exactly, through status changes, usage rows and deletions", async () => {
  const t = await createTenant(db, "Counted");
  const [doc] = await root<{ id: string }>("insert into app_public.documents (org_id, title, content) values ($1, 'd', 'x') returning id", [t.orgId]);
  const jobs = await root<{ id: string }>(
    "insert into app_public.jobs (org_id, kind, document_id) select $1, 'summarize', $2 from generate_series(1, 5) returning id",
    [t.orgId, doc!.id],
  );
  const before = await compare(t.orgId);
  expect(before.counted).toBe(before.aggregated);
  await root("update app_public.jobs set status = 'running' where id = $1", [jobs[0]!.id]);
  await root("update app_public.jobs set status = 'succeeded', finished_at = now() where id = $1", [jobs[0]!.id]);
  await root("update app_public.jobs set status = 'cancelled', finished_at = now() where id = $1", [jobs[1]!.id]);
  await root(
    "insert into app_public.usage_records (org_id, job_id, provider, model, prompt_tokens, completion_tokens) values ($1, $2, 'p', 'm', 100, 20), ($1, $3, 'p', 'm', 7, 3)",
    [t.orgId, jobs[0]!.id, jobs[1]!.id],
  );
  let now = await compare(t.orgId);
  expect(now.counted).not.toBe(before.counted);
  expect(now.counted).toBe(now.aggregated);
  const beforeDelete = now.counted;
  await root("delete from app_public.jobs where id = any($1)", [[jobs[1]!.id, jobs[2]!.id]]);
  now = await compare(t.orgId);
  expect(now.counted).not.toBe(beforeDelete);
  expect(now.counted).toBe(now.aggregated);
});
