// Requests cannot hold the database: a statement of an API request is cancelled after
// DATABASE_STATEMENT_TIMEOUT_MS (TIMEOUT), and a request that finds the pool exhausted gets UNAVAILABLE within the
// pool's wait instead of queueing for ever.
import type pg from "pg";
import { asCaller } from "../../db/as-caller.ts";
import { pgSettingsFor } from "../../server/context.ts";
import { createTestDatabase, testConfig, type TestDatabase } from "../support/database.ts";
import { codeOf, startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let app: TestServer;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  app = await startTestServer(testConfig(db.name, { DATABASE_STATEMENT_TIMEOUT_MS: "200" }));
  t = await createTenant(db, "Slow");
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});

test("an API request's statement is cancelled after DATABASE_STATEMENT_TIMEOUT_MS", async () => {
  const config = testConfig(db.name, { DATABASE_STATEMENT_TIMEOUT_MS: "200" });
  const settings = pgSettingsFor(config, { ...t.members.member, orgId: t.orgId, expiresAt: new Date(Date.now() + 60_000) }, "req-1", null);
  const started = Date.now();
  await expect(asCaller(app.pool, settings, (client) => client.query("select pg_sleep(5)"))).rejects.toMatchObject({ code: "57014" });
  expect(Date.now() - started).toBeLessThan(3_000);
});

test("an exhausted pool answers UNAVAILABLE, and serves again once connections are free", async () => {
  const held: pg.PoolClient[] = [];
  for (let i = 0; i < 4; i++) held.push(await app.pool.connect()); // the test server's pool holds 4
  try {
    const { body } = await app.graphql("{ currentUser { email } }", {}, t.members.member.accessToken);
    expect(codeOf(body)).toBe("UNAVAILABLE");
  } finally {
    for (const client of held) client.release();
  }
  const { body } = await app.graphql("{ currentUser { email } }", {}, t.members.member.accessToken);
  expect(body.data).toEqual({ currentUser: { email: t.members.member.email } });
}, 20_000);
