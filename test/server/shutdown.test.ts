// Graceful shutdown: a request in flight when shutdown begins still gets its answer; new connections are refused.
import { createTestDatabase, query, roles, type TestDatabase } from "../support/database.ts";
import { startTestServer, type TestServer } from "../support/server.ts";

let db: TestDatabase;
let app: TestServer;
beforeAll(async () => {
  db = await createTestDatabase();
  await query(
    db.name,
    "create function app_public.test_sleep(seconds float) returns int language sql stable as 'select 1 from pg_sleep(seconds)'",
  );
  await query(db.name, `grant execute on function app_public.test_sleep(float) to ${roles.anonymous}`);
  app = await startTestServer(db.config);
});
afterAll(async () => {
  await db?.drop();
});

test("an in-flight request completes, then the server stops accepting connections", async () => {
  const inFlight = app.graphql("{ testSleep(seconds: 1) }");
  await new Promise((resolve) => setTimeout(resolve, 200)); // the request has reached PostgreSQL
  const started = Date.now();
  const closing = app.close();
  const { status, body } = await inFlight;
  expect(status).toBe(200);
  expect(body).toEqual({ data: { testSleep: 1 } });
  await closing;
  // It waited for the request (about 0.8 s left of it), but not for the 5 s timeout.
  expect(Date.now() - started).toBeGreaterThanOrEqual(500);
  expect(Date.now() - started).toBeLessThan(4_000);
  await expect(fetch(`${app.url}/health`)).rejects.toThrow();
});
