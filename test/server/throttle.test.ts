// Brute force from one address: 30 failed sign-ins within 15 minutes, whatever the accounts, lock the address out
// (RATE_LIMITED with a retry time) across every account, including a right password; the count lives in
// PostgreSQL, so a second server instance enforces it too.
import { createTestDatabase, query, testConfig, type TestDatabase } from "../support/database.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, fixturePassword } from "../support/tenants.ts";

let db: TestDatabase;
let a: TestServer;
let b: TestServer;
beforeAll(async () => {
  db = await createTestDatabase();
  const config = testConfig(db.name, { BCRYPT_COST: "10" });
  a = await startTestServer(config);
  b = await startTestServer(config);
});
afterAll(async () => {
  await a?.close();
  await b?.close();
  await db?.drop();
});

const login = async (server: TestServer, email: string, password: string) =>
  (await server.graphql("mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken } }", { e: email, p: password })).body;

test("30 failures from one address lock it out on every instance, until the window passes", async () => {
  const t = await createTenant(db, "Address");
  for (let i = 0; i < 30; i++) {
    const body = await login(i % 2 ? a : b, `stranger${i}@example.com`, "not the password");
    expect(body.errors?.[0]?.extensions?.code).toBe("INVALID_CREDENTIALS");
  }
  for (const server of [a, b]) {
    const locked = await login(server, t.members.owner.email, fixturePassword);
    expect(locked.errors?.[0]?.extensions).toMatchObject({ code: "RATE_LIMITED", retryAfterSeconds: expect.any(Number) });
  }
  await query(db.name, "update app_private.login_attempts set attempted_at = attempted_at - interval '16 minutes'", [], "root");
  expect((await login(a, t.members.owner.email, fixturePassword)).errors).toBeUndefined();
});
