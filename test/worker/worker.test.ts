// The worker process: it connects as the authenticator, reports in (which readiness reports), runs jobs, and
// removes its heartbeat when it stops.
import { createPool } from "../../db/pool.ts";
import { checkReadiness } from "../../server/health.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, roles, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

test("a running worker shows in readiness; a stopped one removes its heartbeat", async () => {
  const config = testConfig(db.name, { WORKER_HEARTBEAT_SECONDS: "1" });
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const readiness = () => checkReadiness({ pool, workerMaxAgeSeconds: 30, stopping: () => false });
  try {
    expect((await readiness()).workers).toEqual({ ok: false, reason: "no worker has reported in" });
    const worker = await startQuireWorker({ config, logger: silentLogger, pool });
    const rows = await query<{ worker_id: string; pid: number }>(db.name, "select worker_id, pid from app_private.worker_heartbeats");
    expect(rows).toEqual([{ worker_id: worker.workerId, pid: process.pid }]);
    expect(await readiness()).toEqual({
      ready: true,
      checks: { database: { ok: true }, migrations: { ok: true } },
      workers: { ok: true },
    });

    // It keeps beating: last_seen_at moves forward.
    const [before] = await query<{ t: Date }>(db.name, "select last_seen_at as t from app_private.worker_heartbeats");
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    const [after] = await query<{ t: Date }>(db.name, "select last_seen_at as t from app_private.worker_heartbeats");
    expect(after!.t.getTime()).toBeGreaterThan(before!.t.getTime());

    await worker.stop();
    expect(await query(db.name, "select 1 from app_private.worker_heartbeats")).toHaveLength(0);
  } finally {
    await pool.end();
  }
});

test("the worker's login can use graphile-worker's schema; the API roles cannot", async () => {
  const canAddJob = (role: string) =>
    query<{ ok: boolean }>(
      db.name,
      "select has_function_privilege($1, 'graphile_worker.add_job(text, json, text, timestamptz, integer, text, integer, text[], text)', 'execute') as ok",
      [role],
      "root",
    );
  expect((await canAddJob(roles.authenticator))[0]!.ok).toBe(true);
  expect((await canAddJob(roles.authenticated))[0]!.ok).toBe(false);
  expect((await canAddJob(roles.anonymous))[0]!.ok).toBe(false);
  const jobsTable = await query<{ ok: boolean }>(
    db.name,
    "select has_table_privilege($1, 'graphile_worker._private_jobs', 'select') as ok",
    [roles.authenticated],
    "root",
  );
  expect(jobsTable[0]!.ok).toBe(false);
  const schemaUsage = await query<{ role: string; ok: boolean }>(
    db.name,
    "select r as role, has_schema_privilege(r, 'graphile_worker', 'usage') as ok from unnest($1::text[]) as r",
    [[roles.authenticator, roles.authenticated, roles.anonymous]],
    "root",
  );
  expect(schemaUsage).toEqual([
    { role: roles.authenticator, ok: true },
    { role: roles.authenticated, ok: false },
    { role: roles.anonymous, ok: false },
  ]);
});
