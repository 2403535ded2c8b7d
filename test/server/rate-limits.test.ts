// Rate limits counted in each instance's memory and synced through PostgreSQL every RATE_LIMIT_SYNC_MS: anonymous
// requests are counted per client address, signed-in ones per user and per organization with the limits of the
// organization's tier; over a limit the answer is 429 RATE_LIMITED with Retry-After, on every instance alike once
// a sync has passed (the counts are shared); RATE_LIMITS=false turns them off.
import pg from "pg";
import { createTestDatabase, query, rootUrl, testConfig, type TestDatabase } from "../support/database.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { subscribe } from "../support/live.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let one: TestServer;
let two: TestServer;
let proxied: TestServer;
let off: TestServer;
let t: Tenant;
let rich: Tenant;
/** The limits hold across instances within one sync interval: cross-instance steps wait a little longer. */
const syncMs = 50;
const settle = () => new Promise((resolve) => setTimeout(resolve, syncMs * 3));
const config = () => testConfig(db.name, { RATE_LIMIT_ANONYMOUS_PER_MINUTE: "5", RATE_LIMIT_SYNC_MS: String(syncMs) });
/**
 * Counts live in one-minute windows. The servers' clock is pinned so that each test starts at the beginning of a
 * window (real time, shifted back to the start of the minute it began in), so no test straddles two windows.
 */
let shift = 0;
const clock = () => Date.now() - shift;

beforeAll(async () => {
  db = await createTestDatabase();
  one = await startTestServer(config(), undefined, { clock });
  two = await startTestServer(config(), undefined, { clock });
  proxied = await startTestServer(testConfig(db.name, { RATE_LIMIT_ANONYMOUS_PER_MINUTE: "5", TRUSTED_PROXIES: "loopback" }), undefined, { clock });
  off = await startTestServer(testConfig(db.name, { RATE_LIMIT_ANONYMOUS_PER_MINUTE: "5", RATE_LIMITS: "false" }), undefined, { clock });
  t = await createTenant(db, "Limited");
  rich = await createTenant(db, "Premium");
  await query(db.name, "update app_public.organizations set tier = 'premium' where id = $1", [rich.orgId], "root");
}, 60_000);
afterAll(async () => {
  for (const server of [one, two, proxied, off]) await server?.close();
  await db?.drop();
});

beforeEach(async () => {
  // Counts live in each instance's memory too: start both instances afresh, after their last sync.
  await one.close();
  await two.close();
  await query(db.name, "delete from app_private.rate_limit_windows", [], "root");
  shift = Date.now() % 60_000;
  one = await startTestServer(config(), undefined, { clock });
  two = await startTestServer(config(), undefined, { clock });
  await query(db.name, "select app_admin.set_tier_rate_limit('free', 600, 1200)");
}, 20_000);

interface Answer {
  status: number;
  retryAfter: string | null;
  code: string | null;
  extensions: Record<string, unknown> | undefined;
}
async function ask(server: TestServer, token: string | null = null, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: JSON.stringify({ query: "{ __typename }" }),
  });
  const body = (await response.json()) as { errors?: Array<{ extensions?: Record<string, unknown> }> };
  const extensions = body.errors?.[0]?.extensions;
  return { status: response.status, retryAfter: response.headers.get("retry-after"), code: (extensions?.code as string) ?? null, extensions };
}

test("anonymous requests are counted per address across instances: the 6th of 5 a minute is 429 with Retry-After", async () => {
  const answers = [];
  for (let i = 0; i < 6; i++) {
    answers.push(await ask(i % 2 ? one : two));
    await settle();
  }
  expect(answers.slice(0, 5).map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
  const refused = answers[5]!;
  expect(refused).toMatchObject({ status: 429, code: "RATE_LIMITED", extensions: { scope: "address" } });
  const seconds = Number(refused.retryAfter);
  expect(seconds).toBeGreaterThanOrEqual(1);
  expect(seconds).toBeLessThanOrEqual(60);
  expect(refused.extensions?.retryAfterSeconds).toBe(seconds);
  // Signed-in requests from the same address have budgets of their own.
  expect((await ask(one, t.members.member.accessToken)).status).toBe(200);
});

test("behind a trusted proxy each forwarded address has its own budget; elsewhere the header changes nothing", async () => {
  for (let i = 0; i < 5; i++) expect((await ask(proxied, null, { "x-forwarded-for": "198.51.100.10" })).status).toBe(200);
  expect((await ask(proxied, null, { "x-forwarded-for": "198.51.100.10" })).status).toBe(429);
  expect((await ask(proxied, null, { "x-forwarded-for": "198.51.100.11" })).status).toBe(200);
  // Not trusted: a client naming a fresh address each time is still counted as 127.0.0.1.
  for (let i = 0; i < 5; i++) expect((await ask(one, null, { "x-forwarded-for": `203.0.113.${i}` })).status).toBe(200);
  expect((await ask(one, null, { "x-forwarded-for": "203.0.113.99" })).status).toBe(429);
});

test("signed-in requests are counted per user and per organization, with the tier's limits", async () => {
  await query(db.name, "select app_admin.set_tier_rate_limit('free', 3, 5)");
  for (let i = 0; i < 3; i++) expect((await ask(one, t.members.member.accessToken)).status).toBe(200);
  await settle();
  expect(await ask(two, t.members.member.accessToken)).toMatchObject({ status: 429, code: "RATE_LIMITED", extensions: { scope: "user" } });
  // Another member still has a user budget, until the organization's 5 are spent.
  expect((await ask(one, t.members.viewer.accessToken)).status).toBe(200);
  expect((await ask(one, t.members.viewer.accessToken)).status).toBe(200);
  expect(await ask(one, t.members.admin.accessToken)).toMatchObject({ status: 429, extensions: { scope: "organization" } });
  // A premium organization is not bound by the free tier's limits.
  for (let i = 0; i < 6; i++) expect((await ask(one, rich.members.member.accessToken)).status).toBe(200);
});

test("RATE_LIMITS=false counts nothing", async () => {
  for (let i = 0; i < 8; i++) expect((await ask(off)).status).toBe(200);
  const [{ n }] = (await query<{ n: number }>(db.name, "select count(*)::int as n from app_private.rate_limit_windows", [], "root")) as [{ n: number }];
  expect(n).toBe(0);
});

test("uploads are limited too, answering in their own error shape", async () => {
  for (let i = 0; i < 5; i++) await ask(one);
  const response = await fetch(`${one.url}/api/v1/documents/upload`, { method: "POST" });
  expect(response.status).toBe(429);
  expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
  expect(((await response.json()) as { error: { code: string } }).error.code).toBe("RATE_LIMITED");
});

test("operations over a WebSocket are counted too: over the user's limit a subscription is refused with RATE_LIMITED", async () => {
  await query(db.name, "select app_admin.set_tier_rate_limit('free', 2, 1000)");
  const opened = [];
  for (let i = 0; i < 3; i++) {
    opened.push(subscribe<unknown>(one.url, t.members.member.accessToken, "subscription { documentChanged { seq op } }"));
  }
  try {
    const deadline = Date.now() + 5_000;
    while (opened.filter((s) => s.errors.length > 0).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const refused = opened.filter((s) => s.errors.length > 0);
    expect(refused).toHaveLength(1);
    expect(JSON.stringify(refused[0]!.errors)).toContain("RATE_LIMITED");
    await settle();
    const [{ hits }] = (await query<{ hits: number }>(
      db.name,
      "select hits from app_private.rate_limit_windows where key = $1",
      [`user:${t.members.member.userId}`],
      "root",
    )) as [{ hits: number }];
    expect(hits).toBe(3);
  } finally {
    for (const s of opened) await s.close();
  }
});

test("a request costs no database statement: counts reach PostgreSQL only with the periodic sync", async () => {
  // The live-event numberer's periodic statement is not a request's either: kept out of this short window.
  const lazy = await startTestServer(testConfig(db.name, { RATE_LIMIT_SYNC_MS: "10000", LIVE_NUMBER_INTERVAL_MS: "10000" }), undefined, { clock });
  try {
    const token = rich.members.member.accessToken;
    // The first request of a key in a window waits for one sync (it starts from the shared count and its tier).
    expect((await ask(lazy, token)).status).toBe(200);
    let statements = 0;
    const { query: poolQuery, connect } = lazy.pool;
    lazy.pool.query = ((...args: Parameters<typeof poolQuery>) => (statements++, poolQuery.apply(lazy.pool, args))) as typeof poolQuery;
    lazy.pool.connect = ((...args: Parameters<typeof connect>) => (statements++, connect.apply(lazy.pool, args))) as typeof connect;
    for (let i = 0; i < 20; i++) expect((await ask(lazy, token)).status).toBe(200);
    expect(statements).toBe(0);
  } finally {
    await lazy.close();
  }
  // Closing syncs what was counted: all 21 requests.
  const rows = await query<{ hits: number }>(
    db.name,
    "select hits from app_private.rate_limit_windows where key = $1",
    [`user:${rich.members.member.userId}`],
    "root",
  );
  expect(rows).toEqual([{ hits: 21 }]);
});

test("a sync stuck in the database gives up after its timeout: requests are still judged and shutdown completes", async () => {
  const stuck = await startTestServer(testConfig(db.name, { RATE_LIMIT_SYNC_MS: "50" }), undefined, { clock });
  const token = rich.members.owner.accessToken;
  const key = `user:${rich.members.owner.userId}`;
  expect((await ask(stuck, token)).status).toBe(200);
  // Another session holds the key's row: the next sync that adds to it waits on the lock.
  const url = new URL(rootUrl());
  url.pathname = `/${db.name}`;
  const locker = new pg.Client({ connectionString: url.toString() });
  await locker.connect();
  try {
    await locker.query("begin");
    expect((await locker.query("select hits from app_private.rate_limit_windows where key = $1 for update", [key])).rowCount).toBe(1);
    await ask(stuck, token);
    await new Promise((resolve) => setTimeout(resolve, 200));
    // The blocked sync, by its backend and statement start: the same statement still waiting later means no sync
    // timed out and was retried in between.
    const blockedSyncs = async () =>
      (
        await locker.query<{ pid: number; started: string }>(
          "select pid, query_start::text as started from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query like '%sync_rate_limits%'",
          [db.name],
        )
      ).rows;
    const blocked = await blockedSyncs();
    expect(blocked).toHaveLength(1);
    // Each request is judged on what this instance knows meanwhile (its key is known), never held by the sync: it
    // is answered while the same sync statement is still blocked (a request that waited for it would come back only
    // after the sync's 5 s timeout had ended that statement).
    expect((await ask(stuck, token)).status).toBe(200);
    expect(await blockedSyncs()).toEqual(blocked);
    // Shutdown ends with a last sync, which waits for the stuck one: bounded by its 5 s timeout, not by the lock.
    await stuck.close();
  } finally {
    await locker.query("rollback").catch(() => undefined);
    await locker.end();
  }
}, 30_000);
