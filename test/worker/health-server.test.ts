// The worker's own health endpoints (WORKER_HEALTH_PORT): alive, ready while its database answers, not ready once
// stopping or when the database cannot be reached.
import { createPool } from "../../db/pool.ts";
import { startWorkerHealthServer, type WorkerHealthServer } from "../../worker/health-server.ts";
import { createTestDatabase, silentLogger, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const get = async (server: WorkerHealthServer, path: string) => {
  const response = await fetch(`http://127.0.0.1:${server.address.port}${path}`);
  return { status: response.status, body: (await response.json()) as unknown };
};

test("alive, ready with its database, 503 once stopping; other paths 404", async () => {
  const pool = createPool({ url: db.config.database.url, max: 2, applicationName: "quire-test-worker" }, silentLogger);
  let stopping = false;
  const server = await startWorkerHealthServer({ host: "127.0.0.1", port: 0, pool, stopping: () => stopping, logger: silentLogger });
  try {
    expect(await get(server, "/health")).toEqual({ status: 200, body: { status: "ok" } });
    expect(await get(server, "/health/ready")).toEqual({ status: 200, body: { status: "ready", checks: { database: { ok: true } } } });
    expect((await get(server, "/metrics")).status).toBe(404);
    stopping = true;
    expect(await get(server, "/health/ready")).toEqual({ status: 503, body: { status: "stopping" } });
    expect(await get(server, "/health")).toEqual({ status: 200, body: { status: "ok" } });
  } finally {
    await server.close();
    await pool.end();
  }
});

test("503 naming the database when it cannot be reached", async () => {
  const pool = createPool({ url: "postgres://nobody:x@127.0.0.1:1/nowhere", max: 1, applicationName: "quire-test-worker" }, silentLogger);
  const server = await startWorkerHealthServer({ host: "127.0.0.1", port: 0, pool, stopping: () => false, logger: silentLogger });
  try {
    expect(await get(server, "/health/ready")).toEqual({
      status: 503,
      body: { status: "not_ready", checks: { database: { ok: false, reason: "database unreachable (ECONNREFUSED)" } } },
    });
  } finally {
    await server.close();
    await pool.end();
  }
});
