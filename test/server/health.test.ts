// /health, /health/ready and /health/workers: liveness without I/O; readiness naming exactly which check failed,
// with the workers' state reported beside it but never deciding it.
import { createPool } from "../../db/pool.ts";
import { checkReadiness } from "../../server/health.ts";
import { query, silentLogger } from "../support/database.ts";
import { useQuireServer } from "../support/server.ts";

const fx = useQuireServer();

const beat = (seconds_ago: number) =>
  query(
    fx.db.name,
    `insert into app_private.worker_heartbeats (worker_id, hostname, pid, last_seen_at)
     values ('test-worker', 'test', 1, now() - make_interval(secs => $1))
     on conflict (worker_id) do update set last_seen_at = excluded.last_seen_at`,
    [seconds_ago],
  );

describe("GET /health", () => {
  test("answers 200 with a small JSON body", async () => {
    const response = await fetch(`${fx.app.url}/health`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ok" });
  });

  test("echoes a sane x-request-id and replaces a hostile one", async () => {
    const given = await fetch(`${fx.app.url}/health`, { headers: { "x-request-id": "req-123" } });
    expect(given.headers.get("x-request-id")).toBe("req-123");
    const hostile = await fetch(`${fx.app.url}/health`, { headers: { "x-request-id": "<script>alert(1)</script> and a long tail ".padEnd(200, "x") } });
    expect(hostile.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    const none = await fetch(`${fx.app.url}/health`);
    expect(none.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("GET /health/ready", () => {
  test("200 without any worker: workers are reported, not required (a worker outage must not fail every API instance)", async () => {
    await query(fx.db.name, "delete from app_private.worker_heartbeats");
    const response = await fetch(`${fx.app.url}/health/ready`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: "ready",
      checks: { database: { ok: true }, migrations: { ok: true } },
      workers: { ok: false, reason: "no worker has reported in" },
    });
  });

  test("200 once a worker reported in recently, saying so", async () => {
    await beat(1);
    const response = await fetch(`${fx.app.url}/health/ready`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      status: "ready",
      checks: { database: { ok: true }, migrations: { ok: true } },
      workers: { ok: true },
    });
  });

  test("a heartbeat older than READY_WORKER_MAX_AGE_SECONDS: still ready, the age reported", async () => {
    await beat(40);
    const response = await fetch(`${fx.app.url}/health/ready`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { workers: { ok: boolean; reason: string } };
    expect(body.workers.ok).toBe(false);
    // 40 s, plus however long this loaded machine took between the insert and the check.
    const seconds = Number(/^last worker heartbeat (\d+) s ago$/.exec(body.workers.reason)?.[1]);
    expect(seconds).toBeGreaterThanOrEqual(40);
    expect(seconds).toBeLessThan(60);
  });

  test("503 naming the migrations when the database is behind the code", async () => {
    await beat(1);
    const [latest] = await query<{ filename: string }>(fx.db.name, "select max(filename) as filename from graphile_migrate.migrations");
    await query(fx.db.name, "delete from graphile_migrate.migrations where filename = $1", [latest!.filename], "root");
    try {
      const response = await fetch(`${fx.app.url}/health/ready`);
      expect(response.status).toBe(503);
      const body = (await response.json()) as { checks: Record<string, unknown> };
      // What is left: the migration before it, or none at all when the schema is one migration.
      const [left] = await query<{ filename: string | null }>(fx.db.name, "select max(filename) as filename from graphile_migrate.migrations");
      const has = left?.filename ? `database has ${left.filename}` : "database has no migrations";
      expect(body.checks.migrations).toEqual({ ok: false, reason: `${has}, code expects ${latest!.filename}` });
    } finally {
      await query(
        fx.db.name,
        "insert into graphile_migrate.migrations (filename, hash, previous_hash) values ($1, 'restored', null)",
        [latest!.filename],
        "root",
      );
    }
  });

  test("503 naming the database when it cannot be reached", async () => {
    const pool = createPool({ url: "postgres://nobody:x@127.0.0.1:1/nowhere", max: 1, applicationName: "quire-test" }, silentLogger);
    try {
      const readiness = await checkReadiness({ pool, workerMaxAgeSeconds: 30, stopping: () => false });
      expect(readiness).toEqual({
        ready: false,
        checks: {
          database: { ok: false, reason: "database unreachable (ECONNREFUSED)" },
          migrations: { ok: false, reason: "database unreachable" },
        },
        workers: { ok: false, reason: "database unreachable" },
      });
    } finally {
      await pool.end();
    }
  });
});

describe("GET /health/workers", () => {
  test("503 when no worker reported in recently, 200 once one did: for monitoring, apart from readiness", async () => {
    await query(fx.db.name, "delete from app_private.worker_heartbeats");
    const none = await fetch(`${fx.app.url}/health/workers`);
    expect(none.status).toBe(503);
    expect(await none.json()).toEqual({ status: "no_workers", workers: { ok: false, reason: "no worker has reported in" } });
    await beat(1);
    const one = await fetch(`${fx.app.url}/health/workers`);
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual({ status: "ok", workers: { ok: true } });
  });
});

describe("other routes", () => {
  test("an unknown path gets a JSON 404 with a stable code", async () => {
    const response = await fetch(`${fx.app.url}/no/such/route`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({ error: { code: "NOT_FOUND", message: "No such route." } });
  });
});
