// Graceful shutdown: a request in flight when shutdown begins still gets its answer; new connections are refused.
// One still running at the timeout never commits after its client was cut off: its work is cancelled first.
import { createTestDatabase, query, roles, testConfig, type TestDatabase } from "../support/database.ts";
import { capturingLogger, type Line } from "../support/logs.ts";
import { codeOf, startTestServer, type TestServer } from "../support/server.ts";

let db: TestDatabase;
let app: TestServer;
let late: TestServer;
let appLines: Line[];
beforeAll(async () => {
  db = await createTestDatabase();
  await query(db.name, "create function app_public.test_sleep(seconds float) returns int language sql stable as 'select 1 from pg_sleep(seconds)'");
  await query(db.name, `grant execute on function app_public.test_sleep(float) to ${roles.anonymous}`);
  // A slow write: it inserts a row, then sleeps before its transaction can commit.
  await query(db.name, "create table public.test_writes (id serial primary key)", [], "root");
  await query(
    db.name,
    `create function app_public.test_slow_write(seconds float) returns int language sql volatile security definer
       set search_path = pg_catalog, public as 'insert into public.test_writes default values; select 1 from pg_sleep(seconds)'`,
    [],
    "root",
  );
  await query(db.name, `grant execute on function app_public.test_slow_write(float) to ${roles.anonymous}`, [], "root");
  const captured = capturingLogger();
  appLines = captured.lines;
  app = await startTestServer(db.config, captured.logger);
});

/** Waits until a statement whose text contains `needle` is running in the test database, failing once `gaveUp()`. */
async function untilRunning(needle: string, gaveUp: () => unknown = () => null) {
  const deadline = Date.now() + 30_000;
  const sql = "select 1 from pg_stat_activity where datname = $1 and query like $2 and state = 'active' and pid <> pg_backend_pid()";
  while ((await query(db.name, sql, [db.name, `%${needle}%`], "root")).length === 0) {
    if (Date.now() > deadline || gaveUp()) throw new Error(`${needle} never started: ${JSON.stringify(gaveUp())}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
afterAll(async () => {
  // Each test closes its server; one that failed first may not have.
  for (const server of [app, late]) if (server?.server.httpServer.listening) await server.close();
  await db?.drop();
});

test("an in-flight request completes, then the server stops accepting connections", async () => {
  const inFlight = app.graphql("{ testSleep(seconds: 1) }");
  await untilRunning("test_sleep");
  // A timeout far beyond the request's second: reaching it would log the cancellation checked below.
  const closing = app.close(30_000);
  const { status, body } = await inFlight;
  expect(status).toBe(200);
  expect(body).toEqual({ data: { testSleep: 1 } });
  await closing;
  // Shutdown waited for the request to finish on its own: it never had to cancel database work.
  expect(appLines.filter((line) => /did not finish/.test(line.msg ?? ""))).toEqual([]);
  await expect(fetch(`${app.url}/health`)).rejects.toThrow();
});

test("a write still running at the shutdown timeout is rolled back, not committed behind its cut-off client", async () => {
  // A loaded machine may be slow to hand out connections: this test is about what happens after.
  late = await startTestServer(testConfig(db.name, { DATABASE_POOL_WAIT_MS: "30000" }));
  let settled: unknown = null;
  const inFlight = late.graphql("mutation { testSlowWrite(input: { seconds: 3 }) { __typename } }").then(
    (answer) => ({ answer }),
    (error: unknown) => ({ error }),
  );
  void inFlight.then((outcome) => (settled = outcome));
  // The row is inserted; the transaction sleeps before its commit.
  await untilRunning("test_slow_write", () => settled);
  await late.close(200);
  const outcome = await inFlight;
  const rows = await query(db.name, "select id from public.test_writes", [], "root");
  // Either the client heard the write succeed and it is there, or it is not there: never a write nobody heard of.
  const answered = "answer" in outcome && outcome.answer.body.data?.testSlowWrite != null;
  expect({ answered, rows: rows.length }).toEqual(answered ? { answered, rows: 1 } : { answered, rows: 0 });
  // Here: cancelled, so rolled back, and the client was still told so.
  expect("answer" in outcome && codeOf(outcome.answer.body)).toBe("TIMEOUT");
}, 60_000);
