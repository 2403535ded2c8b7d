// Retention on a real PostgreSQL, through the worker's apply_retention task: with the database's clock moved past
// the free tier's windows, an organization's usage details, finished sync runs, jobs that left nothing behind and
// sealed audit events go (the chain still verifies from its anchor), as do old sign-in attempts, ended sessions and
// expired tokens; what a job made stays with it; a premium organization keeps what its tier keeps; and each run and
// what it removed are counted in metrics.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { createMetrics } from "../../lib/metrics.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, silentLogger, type TestDatabase } from "../support/database.ts";
import { until } from "../support/poll.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let free: Tenant;
let premium: Tenant;
let erased: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  free = await createTenant(db, "Keep Free");
  premium = await createTenant(db, "Keep Premium");
  erased = await createTenant(db, "Keep Erased");
  await query(db.name, "select app_admin.delete_organization($1)", [erased.orgId]);
  await query(db.name, "select app_private.erase_organization($1, 'test')", [erased.orgId]);
  await query(db.name, "select app_admin.set_tier($1, 'premium')", [premium.slug]);
  await query(db.name, "select app_admin.seal_audit_events()");
  await query(db.name, "insert into app_private.login_attempts (email, ip, succeeded) values ('someone@example.com', '127.0.0.1', false)", [], "root");
});
afterAll(() => db?.drop());

const count = async (sql: string, values: unknown[] = []) =>
  (await query<{ n: number }>(db.name, `select count(*)::int as n from ${sql}`, values, "root"))[0]!.n;

test("past the free tier's windows, a run removes what the tiers no longer keep, and counts it", async () => {
  const before = {
    freeJobs: await count("app_public.jobs where org_id = $1", [free.orgId]),
    premiumUsage: await count("app_public.usage_records where org_id = $1", [premium.orgId]),
    premiumAudit: await count("app_public.audit_events where org_id = $1", [premium.orgId]),
  };
  expect(before.freeJobs).toBe(4); // a summary's, an import's, an export's and an answer's
  const counters = await query(db.name, "select summaries, prompt_tokens from app_private.usage_counters where org_id = $1", [free.orgId], "root");
  // The summary and the answer (10 and 12 tokens), and the embeddings' tokens (8).
  expect(counters).toEqual([{ summaries: 2, prompt_tokens: "30" }]);
  expect(await count("app_public.audit_events where org_id = $1", [erased.orgId])).toBeGreaterThan(0);
  // 410 days on: past every free window (usage 400 days), inside every premium one (usage 1200, audit forever).
  await query(db.name, "update app_private.clock set offset_by = interval '410 days'", [], "root");
  const metrics = createMetrics();
  const pool: pg.Pool = createPool({ url: db.config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config: db.config, logger: silentLogger, pool, metrics });
  try {
    await query(db.name, "select graphile_worker.add_job('apply_retention', '{}'::json, job_key => 'apply_retention')", [], "root");
    await until(
      () => metrics.render(),
      (text) => text.includes('quire_retention_runs_total{outcome="succeeded"} 1'),
      "the retention run",
    );
  } finally {
    await worker.stop();
    await pool.end();
  }
  const rendered = await metrics.render();
  expect(rendered).toContain('quire_retention_runs_total{outcome="succeeded"} 1');
  for (const kind of ["usage_records", "sync_runs", "jobs", "audit_events", "login_attempts", "sessions"]) {
    expect(rendered).toMatch(new RegExp(`quire_retention_removed_total\\{kind="${kind}"\\} [1-9]`));
  }

  // The free organization: details gone, content kept with the job that made it.
  expect(await count("app_public.usage_records where org_id = $1", [free.orgId])).toBe(0);
  expect(await count("app_public.integration_sync_runs where org_id = $1", [free.orgId])).toBe(0);
  expect(await count("app_public.jobs where org_id = $1 and kind = 'import'", [free.orgId])).toBe(0);
  expect(await count("app_public.jobs where org_id = $1 and kind = 'summarize'", [free.orgId])).toBe(1);
  expect(await count("app_public.summaries where org_id = $1", [free.orgId])).toBe(1);
  // The answer job goes once its usage has; the question and its answer stay, without it.
  expect(await count("app_public.jobs where org_id = $1 and kind = 'answer'", [free.orgId])).toBe(0);
  expect(await count("app_public.questions where org_id = $1 and job_id is null", [free.orgId])).toBe(1);
  expect(await count("app_public.answers where org_id = $1 and job_id is null", [free.orgId])).toBe(1);
  // Its sealed events were purged behind an anchor: the chain verifies from there.
  expect(await count("app_public.audit_events where org_id = $1 and seq is not null and occurred_at < now()", [free.orgId])).toBe(0);
  const [verdict] = await query(db.name, "select valid, problem from app_admin.verify_audit_chain($1)", [free.orgId]);
  expect(verdict).toEqual({ valid: true, problem: null });

  // Retention's deletes leave the monthly totals, and are recorded by id alone (no copy of what was removed).
  expect(await query(db.name, "select summaries, prompt_tokens from app_private.usage_counters where org_id = $1", [free.orgId], "root")).toEqual(counters);
  const deletions = await query<{ old_values: unknown; details: unknown }>(
    db.name,
    "select old_values, details from app_public.audit_events where org_id = $1 and action = 'delete' and table_name in ('jobs', 'usage_records', 'integration_sync_runs')",
    [free.orgId],
    "root",
  );
  expect(deletions.length).toBeGreaterThanOrEqual(3);
  for (const event of deletions) expect(event).toEqual({ old_values: null, details: { retention: true } });
  // The erased organization's surviving audit log goes after its tier's retention too.
  expect(await count("app_public.audit_events where org_id = $1 and seq is not null", [erased.orgId])).toBe(0);

  // The premium organization keeps its usage and its whole audit log.
  expect(await count("app_public.usage_records where org_id = $1", [premium.orgId])).toBe(before.premiumUsage);
  expect(await count("app_public.audit_events where org_id = $1", [premium.orgId])).toBeGreaterThanOrEqual(before.premiumAudit);

  // Deployment-wide: sign-in attempts, ended sessions (an API key's stays with its key).
  expect(await count("app_private.login_attempts")).toBe(0);
  expect(await count("app_private.sessions s where not exists (select 1 from app_public.api_keys k where k.session_id = s.id)")).toBe(0);
  expect(await count("app_public.api_keys")).toBe(2);
});

test("an organization's admins may shorten job and sync-run retention, never lengthen it past the tier's", async () => {
  await query(db.name, "update app_private.clock set offset_by = interval '0'", [], "root");
  await query(db.name, "update app_public.organizations set settings = '{\"jobRetentionDays\": 3000}' where id = $1", [premium.orgId], "root");
  const [days] = await query(db.name, "select app_private.retention_days($1, 'jobs') as jobs, app_private.retention_days($1, 'audit') as audit", [
    premium.orgId,
  ]);
  expect(days).toEqual({ jobs: 730, audit: null });
  await query(db.name, "update app_public.organizations set settings = '{\"jobRetentionDays\": 7}' where id = $1", [premium.orgId], "root");
  const [shorter] = await query(db.name, "select app_private.retention_days($1, 'jobs') as jobs", [premium.orgId]);
  expect(shorter).toEqual({ jobs: 7 });
  await expect(
    query(db.name, "update app_public.organizations set settings = '{\"auditRetentionDays\": 1}' where id = $1", [premium.orgId], "root"),
  ).rejects.toMatchObject({ code: "23514" });
});
