// Requests cannot hold the database: a statement of an API request is cancelled after
// DATABASE_STATEMENT_TIMEOUT_MS (TIMEOUT), and a request that finds the pool exhausted gets UNAVAILABLE within the
// pool's wait instead of queueing for ever.
import type pg from "pg";
import { asCaller } from "../../db/as-caller.ts";
import { pgSettingsFor } from "../../server/context.ts";
import { testConfig } from "../support/database.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let t: Tenant;
const fx = useQuireServer({ env: { DATABASE_STATEMENT_TIMEOUT_MS: "200", DATABASE_POOL_WAIT_MS: "500" } });
const app = fx.app;
const unlimited = fx.server({ DATABASE_POOL_WAIT_MS: "500", RATE_LIMITS: "false" });
beforeAll(async () => {
  t = await createTenant(fx.db, "Slow");
});

test("an API request's statement is cancelled after DATABASE_STATEMENT_TIMEOUT_MS", async () => {
  const config = testConfig(fx.db.name, { DATABASE_STATEMENT_TIMEOUT_MS: "200" });
  const settings = pgSettingsFor(config, { ...t.members.member, orgId: t.orgId, expiresAt: new Date(Date.now() + 60_000) }, "req-1", null);
  // 57014 with this message is the statement timeout itself (a cancel says otherwise); were the setting not
  // applied, pg_sleep(5) would return and nothing would be rejected.
  await expect(asCaller(app.pool, settings, (client) => client.query("select pg_sleep(5)"))).rejects.toMatchObject({
    code: "57014",
    message: "canceling statement due to statement timeout",
  });
});

test("an exhausted pool answers 503 UNAVAILABLE with Retry-After within DATABASE_POOL_WAIT_MS, then serves again", async () => {
  const held: pg.PoolClient[] = [];
  // A new connection may take longer than the 500 ms wait on a loaded machine: what is tested is the wait for a
  // connection while every one is held, not how fast one opens, so opening is retried.
  const hold = async (pool: pg.Pool) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await pool.connect();
      } catch (error) {
        if (attempt === 5) throw error;
      }
    }
  };
  try {
    // Each test server's pool holds 4.
    for (const server of [app, unlimited]) for (let i = 0; i < 4; i++) held.push(await hold(server.pool));
    for (const limits of [true, false]) {
      // With rate limits the count is refused first; without, the GraphQL request itself waits and gives up.
      const server = limits ? app : unlimited;
      // Every connection stays held until after this loop, so an answer at all means the request gave up waiting
      // on its own (a request that queued for ever would run into the test's timeout instead).
      const response = await fetch(`${server.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${t.members.member.accessToken}` },
        body: JSON.stringify({ query: "{ currentUser { email } }" }),
      });
      const body = (await response.json()) as Parameters<typeof codeOf>[0];
      expect({ limits, status: response.status, retryAfter: response.headers.get("retry-after"), code: codeOf(body) }).toEqual({
        limits,
        status: 503,
        retryAfter: "5",
        code: "UNAVAILABLE",
      });
    }
  } finally {
    for (const client of held) client.release();
  }
  const { body } = await app.graphql("{ currentUser { email } }", {}, t.members.member.accessToken);
  expect(body.data).toEqual({ currentUser: { email: t.members.member.email } });
}, 20_000);
