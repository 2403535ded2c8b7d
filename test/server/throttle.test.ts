// Sign-in throttling, counted in PostgreSQL before the password is verified, so that neither parallel requests
// nor a second server instance get more guesses: per account from one address (5 per 15 minutes), per account
// from anywhere (20), and per address whatever the account (100 failures; successes give their slot back, so a
// shared address is not shut out by a few people's typos).
import pg from "pg";
import { query, roles, rootUrl } from "../support/database.ts";
import { codeOf, useQuireServer, type TestServer } from "../support/server.ts";
import { createTenant, fixturePassword } from "../support/tenants.ts";

// What is tested is the sign-in throttle, not the hasher shedding a burst (test/lib/passwords.test.ts): the
// bursts of 30 here may wait for their hashes as long as they need.
const fx = useQuireServer({ env: { BCRYPT_COST: "10", PASSWORD_HASH_MAX_WAIT_MS: "60000" } });
const a = fx.app;
const b = fx.server();

const login = async (server: TestServer, email: string, password: string) =>
  (await server.graphql("mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken } }", { e: email, p: password })).body;
/** Passwords verified and found wrong for an address: each verification that fails records one attempt. */
const verifiedFailures = async (email: string) =>
  (await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_private.login_attempts where email = $1 and not succeeded", [email], "root"))[0]!
    .n;
const cooledDown = () => query(fx.db.name, "update app_private.login_throttle set window_start = window_start - interval '16 minutes'", [], "root");

test("25 concurrent wrong passwords for one account get 5 verifications; the rest, and then the right one, RATE_LIMITED", async () => {
  const t = await createTenant(fx.db, "Parallel");
  const email = t.members.member.email;
  const bodies = await Promise.all(Array.from({ length: 25 }, (_, i) => login(i % 2 ? a : b, email, `guess number ${i}`)));
  const codes = bodies.map(codeOf);
  expect(codes.filter((c) => c === "INVALID_CREDENTIALS")).toHaveLength(5);
  expect(codes.filter((c) => c === "RATE_LIMITED")).toHaveLength(20);
  expect(await verifiedFailures(email)).toBe(5);
  const locked = await login(a, email, fixturePassword);
  expect(locked.errors?.[0]?.extensions).toMatchObject({ code: "RATE_LIMITED", retryAfterSeconds: expect.any(Number) });
  expect(await verifiedFailures(email)).toBe(5);
  await cooledDown();
  expect(codeOf(await login(b, email, fixturePassword))).toBeNull();
}, 60_000);

test("failures against other accounts do not shut an address out until 100; then it is locked on every instance", async () => {
  const t = await createTenant(fx.db, "Address");
  const strangers = (from: number, count: number) =>
    Promise.all(Array.from({ length: count }, (_, i) => login((from + i) % 2 ? a : b, `stranger${from + i}@example.com`, "not the password")));
  for (const body of await strangers(0, 30)) expect(codeOf(body)).toBe("INVALID_CREDENTIALS");
  // 30 failures used to lock the address out for everyone behind it.
  expect(codeOf(await login(a, t.members.owner.email, fixturePassword))).toBeNull();
  // The owner's success gave its slot back: 30 used. 69 more are taken directly (bcrypt is slow), the 100th for real.
  const [address] = await query<{ attempts: number }>(
    fx.db.name,
    "update app_private.login_throttle set attempts = attempts + 69 where key like 'address:%' returning attempts",
    [],
    "root",
  );
  expect(address).toEqual({ attempts: 99 });
  expect(codeOf((await strangers(99, 1))[0]!)).toBe("INVALID_CREDENTIALS");
  for (const server of [a, b]) {
    const locked = await login(server, t.members.admin.email, fixturePassword);
    expect(locked.errors?.[0]?.extensions).toMatchObject({ code: "RATE_LIMITED", retryAfterSeconds: expect.any(Number) });
  }
  await cooledDown();
  expect(codeOf(await login(a, t.members.admin.email, fixturePassword))).toBeNull();
}, 120_000);

test("one account gets at most 20 attempts in a window from all addresses together", async () => {
  const email = "target@example.com";
  const answers = [];
  for (let i = 1; i <= 25; i++) {
    const [row] = await query<{ retry_after_seconds: number }>(
      fx.db.name,
      "select retry_after_seconds from app_private.begin_login($1, $2)",
      [email, `192.0.2.${i}`],
      roles.authenticator,
    );
    answers.push(row!.retry_after_seconds);
  }
  expect(answers.filter((s) => s === 0)).toHaveLength(20);
  expect(answers.slice(20).every((s) => s > 800)).toBe(true);
});

test("guessing the current password through changePassword draws on the same budget, in parallel too", async () => {
  const t = await createTenant(fx.db, "Change Guess");
  const me = t.members.admin;
  const change = (current: string) =>
    a.graphql(
      'mutation ($c: String!) { changePassword(input: { currentPassword: $c, newPassword: "a brand new passphrase" }) { otherSessionsEnded } }',
      { c: current },
      me.accessToken,
    );
  const codes = (await Promise.all(Array.from({ length: 8 }, (_, i) => change(`guess number ${i}`)))).map((r) => codeOf(r.body));
  expect(codes.filter((c) => c === "INVALID_CREDENTIALS")).toHaveLength(5);
  expect(codes.filter((c) => c === "RATE_LIMITED")).toHaveLength(3);
  expect(await verifiedFailures(me.email)).toBe(5);
  expect(codeOf((await change(fixturePassword)).body)).toBe("RATE_LIMITED");
}, 60_000);

test("a storm of sign-ins holds one pooled connection at a time: the rest wait in the server, not in PostgreSQL", async () => {
  const t = await createTenant(fx.db, "Storm");
  const url = new URL(rootUrl());
  url.pathname = `/${fx.db.name}`;
  const locker = new pg.Client({ connectionString: url.toString() });
  await locker.connect();
  let pending: Promise<unknown> | null = null;
  try {
    // Every sign-in's first statement now waits on the throttle table.
    await locker.query("begin");
    await locker.query("lock table app_private.login_throttle in exclusive mode");
    pending = Promise.all(Array.from({ length: 8 }, (_, i) => login(a, t.members.member.email, `storm guess ${i}`)));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const [{ waiting }] = (await query<{ waiting: number }>(
      fx.db.name,
      "select count(*)::int as waiting from pg_stat_activity where datname = $1 and wait_event_type = 'Lock' and query like '%begin_login%'",
      [fx.db.name],
      "root",
    )) as [{ waiting: number }];
    // Before, each sign-in took a connection of the pool (4 in tests) to wait with.
    expect(waiting).toBe(1);
  } finally {
    await locker.query("rollback").catch(() => undefined);
    await locker.end();
    await pending;
  }
});
