// Sign-in through the GraphQL API: register (answering alike for any address, verifying it by email), login, refresh rotation and reuse, switching organization, logout
// seen by another server instance, throttling, and every kind of bad token refused with 401.
import bcrypt from "bcrypt";
import jwt from "jsonwebtoken";
import { query, roles } from "../support/database.ts";
import { codeOf, useQuireServer, type TestServer } from "../support/server.ts";
import { createTenant, fixturePassword } from "../support/tenants.ts";

const password = "a perfectly fine passphrase";
const fx = useQuireServer({
  env: {
    BCRYPT_COST: "10",
    REFRESH_GRACE_SECONDS: "2",
    NOTION_CLIENT_ID: "notion-client",
    NOTION_CLIENT_SECRET: "notion-secret",
    SEALING_KEYS: `k1:${"A".repeat(43)}=`,
  },
});
const app = fx.app;
const other = fx.server(); // a second instance on the same database

const gql = (server: TestServer, queryText: string, variables?: Record<string, unknown>, token?: string) => server.graphql(queryText, variables, token);

const authFields = "accessToken refreshToken expiresAt user { rowId email fullName } organization { rowId name slug }";
interface Auth {
  accessToken: string;
  refreshToken: string;
  expiresAt: string;
  user: { rowId: string; email: string; fullName: string } | null;
  organization: { rowId: string; name: string; slug: string } | null;
}

const register = (input: Record<string, unknown>) => gql(app, "mutation ($input: RegisterInput!) { register(input: $input) { success } }", { input });
const login = (input: Record<string, unknown>, server = app) =>
  gql(server, `mutation ($input: LoginInput!) { login(input: $input) { ${authFields} } }`, { input });
const refresh = (refreshToken: string) =>
  gql(app, `mutation ($t: String!) { refreshToken(input: { refreshToken: $t }) { ${authFields} } }`, { t: refreshToken });
const whoAmI = (token: string, server = app) => gql(server, "{ currentUser { email } currentOrganization { slug } }", undefined, token);
const root = <R extends Record<string, unknown>>(text: string, values: unknown[] = []) => query<R>(fx.db.name, text, values, "root");
const counts = async () =>
  (
    await root<{ users: number; orgs: number }>(
      "select (select count(*) from app_public.users)::int as users, (select count(*) from app_public.organizations)::int as orgs",
    )
  )[0]!;
/** The emails queued for an address, by kind (send_email has not run: there is no worker here). */
const queued = (email: string) =>
  root<{ id: string; kind: string }>(
    "select o.id, o.kind from app_private.mail_outbox o join app_public.users u on u.id = o.user_id where u.email = $1 order by o.created_at",
    [email],
  );
/** What send_email does before sending: mints the link's token for a queued email (here one the test chose). */
async function mint(outboxId: string): Promise<string> {
  const token = `verify-${outboxId}`;
  await query(fx.db.name, "select * from app_private.prepare_email($1, sha256(convert_to($2, 'UTF8')))", [outboxId, token], roles.authenticator);
  return token;
}

describe("register", () => {
  test("creates the organization and its owner, answers only success, and the owner signs in with login", async () => {
    const before = await counts();
    const { body } = await register({ organizationName: " Acme Widgets ", email: " Ada@Example.COM ", password, fullName: "Ada Lovelace" });
    expect(body).toEqual({ data: { register: { success: true } } });
    expect(await counts()).toEqual({ users: before.users + 1, orgs: before.orgs + 1 });
    const auth = (await login({ email: "ada@example.com", password })).body.data!.login as Auth;
    expect(auth.user).toMatchObject({ email: "ada@example.com", fullName: "Ada Lovelace" });
    expect(auth.organization!.name).toBe("Acme Widgets");
    expect(auth.organization!.slug).toMatch(/^acme-widgets-[a-z2-9]{6}$/);
    expect(new Date(auth.expiresAt).getTime() - Date.now()).toBeGreaterThan(14 * 60_000);
    const claims = jwt.decode(auth.accessToken) as Record<string, unknown>;
    expect(claims).toMatchObject({ sub: auth.user!.rowId, org_id: auth.organization!.rowId, role: "owner", iss: "quire", aud: "quire" });
    expect(Object.keys(claims).sort()).toEqual(["aud", "exp", "iat", "iss", "org_id", "role", "sid", "sub"]);
    expect((await whoAmI(auth.accessToken)).body.data).toEqual({
      currentUser: { email: "ada@example.com" },
      currentOrganization: { slug: auth.organization!.slug },
    });
    const [membership] = await query(fx.db.name, "select role from app_public.memberships where user_id = $1", [auth.user!.rowId], "root");
    expect(membership).toEqual({ role: "owner" });
    // The address is not verified yet, and a verification email is queued.
    expect((await gql(app, "{ currentUser { emailVerifiedAt } }", undefined, auth.accessToken)).body.data).toEqual({ currentUser: { emailVerifiedAt: null } });
    expect((await queued("ada@example.com")).map((m) => m.kind)).toEqual(["verify_email"]);
  });

  test("an address that has an account gets the very same answer, nothing changes, and its owner is told at most once an hour", async () => {
    const before = await counts();
    const again = await register({ organizationName: "Imposter Inc", email: "ADA@example.com", password: "another fine passphrase", fullName: "Not Ada" });
    expect(again.body).toEqual({ data: { register: { success: true } } });
    await register({ organizationName: "Imposter Inc", email: "ada@example.com", password: "another fine passphrase", fullName: "Not Ada" });
    expect(await counts()).toEqual(before);
    expect((await queued("ada@example.com")).map((m) => m.kind)).toEqual(["verify_email", "registration_attempt"]);
    // The registrant's password was not set: the owner's still works, theirs does not.
    expect(codeOf((await login({ email: "ada@example.com", password: "another fine passphrase" })).body)).toBe("INVALID_CREDENTIALS");
    expect(codeOf((await login({ email: "ada@example.com", password })).body)).toBeNull();
  });

  test("slugs never reveal which names are taken: two organizations of the same name get unrelated random endings", async () => {
    await register({ organizationName: "Acme Widgets", email: "bob@example.com", password, fullName: "Bob" });
    const [bob] = await root<{ slug: string }>(
      "select o.slug from app_public.organizations o join app_public.memberships m on m.org_id = o.id join app_public.users u on u.id = m.user_id where u.email = 'bob@example.com'",
    );
    expect(bob!.slug).toMatch(/^acme-widgets-[a-z2-9]{6}$/);
    const [taken] = await root<{ n: number }>("select count(*)::int as n from app_public.organizations where slug = 'acme-widgets'");
    expect(taken!.n).toBe(0);
  });

  test("the emailed link verifies the address once; until then inviting and connecting integrations answer EMAIL_NOT_VERIFIED", async () => {
    await register({ organizationName: "Unproven", email: "eve@example.com", password, fullName: "Eve" });
    const token = (await login({ email: "eve@example.com", password })).body.data!.login as Auth;
    const invite = () => gql(app, 'mutation { inviteMember(input: { email: "friend@example.com" }) { inviteLink } }', undefined, token.accessToken);
    const refused = await invite();
    expect(codeOf(refused.body)).toBe("EMAIL_NOT_VERIFIED");
    expect(await root("select 1 from app_public.invitations where email = 'friend@example.com'")).toEqual([]);
    const connect = () =>
      gql(app, 'mutation { startIntegration(input: { provider: notion, returnTo: "/integrations" }) { authorizationUrl } }', undefined, token.accessToken);
    expect(codeOf((await connect()).body)).toBe("EMAIL_NOT_VERIFIED");

    const verify = (t: string) => gql(app, "mutation ($t: String!) { verifyEmail(input: { token: $t }) { success } }", { t });
    expect(codeOf((await verify("not-a-token")).body)).toBe("NOT_FOUND");
    const [mail] = await queued("eve@example.com");
    const link = await mint(mail!.id);
    expect((await verify(link)).body).toEqual({ data: { verifyEmail: { success: true } } });
    expect(codeOf((await verify(link)).body)).toBe("NOT_FOUND");
    expect((await gql(app, "{ currentUser { emailVerifiedAt } }", undefined, token.accessToken)).body.data).toEqual({
      currentUser: { emailVerifiedAt: expect.any(String) },
    });
    expect(codeOf((await invite()).body)).toBeNull();
    expect(codeOf((await connect()).body)).toBeNull();
    const [audit] = await root<{ n: number }>(
      "select count(*)::int as n from app_public.audit_events where action = 'email_verified' and details->>'user_id' = $1",
      [token.user!.rowId],
    );
    expect(audit!.n).toBe(1);
  });

  test("a verification link expires after 24 hours, and resending is limited to three an hour", async () => {
    await register({ organizationName: "Slow", email: "sam@example.com", password, fullName: "Sam" });
    const auth = (await login({ email: "sam@example.com", password })).body.data!.login as Auth;
    const resend = () => gql(app, "mutation { resendVerificationEmail { sent } }", undefined, auth.accessToken);
    expect((await resend()).body).toEqual({ data: { resendVerificationEmail: { sent: true } } });
    expect((await resend()).body).toEqual({ data: { resendVerificationEmail: { sent: true } } });
    expect(codeOf((await resend()).body)).toBe("RATE_LIMITED");
    expect((await queued("sam@example.com")).length).toBe(3);

    const [mail] = await queued("sam@example.com");
    const link = await mint(mail!.id);
    await root("update app_private.clock set offset_by = interval '24 hours 1 second'");
    try {
      const late = await gql(app, "mutation ($t: String!) { verifyEmail(input: { token: $t }) { success } }", { t: link });
      expect(codeOf(late.body)).toBe("NOT_FOUND");
    } finally {
      await root("update app_private.clock set offset_by = interval '0'");
    }
  });

  test.each([
    [{ email: "not an email" }, "BAD_INPUT"],
    [{ password: "short" }, "BAD_INPUT"],
    [{ password: "password123" }, "BAD_INPUT"],
    [{ password: "é".repeat(37) }, "BAD_INPUT"],
    [{ organizationName: "   " }, "BAD_INPUT"],
    [{ fullName: "" }, "BAD_INPUT"],
  ])("refuses %o with %s and creates nothing", async (change, code) => {
    const before = await counts();
    const { body } = await register({ organizationName: "Refused", email: "carol@example.com", password, fullName: "Carol", ...change });
    expect(codeOf(body)).toBe(code);
    expect(body.data?.register).toBeNull();
    expect(await counts()).toEqual(before);
  });
});

describe("login", () => {
  test("signs in to the most recently used organization, or the one named", async () => {
    const a = await createTenant(fx.db, "Login A");
    const b = await createTenant(fx.db, "Login B");
    // A's viewer also joins B as admin, and used B last.
    await query(
      fx.db.name,
      "insert into app_public.memberships (org_id, user_id, role, last_used_at) values ($1, $2, 'admin', now())",
      [b.orgId, a.members.viewer.userId],
      "root",
    );
    const email = a.members.viewer.email;
    const byDefault = (await login({ email, password: fixturePassword })).body.data!.login as Auth;
    expect(byDefault.organization!.slug).toBe(b.slug);
    expect((jwt.decode(byDefault.accessToken) as { role: string }).role).toBe("admin");
    const named = (await login({ email: email.toUpperCase(), password: fixturePassword, organizationSlug: a.slug })).body.data!.login as Auth;
    expect(named.organization!.slug).toBe(a.slug);
    expect((await login({ email, password: fixturePassword, organizationSlug: "no-such-org" })).body.errors![0]!.extensions!.code).toBe("NOT_FOUND");
  });

  test("an unknown email and a wrong password answer identically, and both spend a bcrypt verification", async () => {
    const t = await createTenant(fx.db, "Identical");
    // Counted, not timed: the bcrypt comparisons each sign-in makes, by the cost of the hash compared against. The
    // in-process server shares this file's bcrypt module, so wrapping its compare sees every comparison.
    const original = bcrypt.compare;
    const costs: string[] = [];
    bcrypt.compare = ((data: string, hash: string) => {
      costs.push(hash.split("$")[2] ?? "?");
      return original(data, hash);
    }) as typeof bcrypt.compare;
    const counted = async (input: Record<string, unknown>) => {
      costs.length = 0;
      const { body } = await login(input);
      return { body, costs: [...costs] };
    };
    try {
      const wrong = await counted({ email: t.members.owner.email, password: "not the password" });
      const unknown = await counted({ email: "nobody-at-all@example.com", password: "not the password" });
      expect(unknown.body).toEqual(wrong.body);
      expect(wrong.body.errors![0]).toMatchObject({ message: "The email address or password is incorrect.", extensions: { code: "INVALID_CREDENTIALS" } });
      // A security property: without the dummy verification the unknown email would answer without any bcrypt work.
      expect(wrong.costs).toEqual(["10"]);
      expect(unknown.costs).toEqual(["10"]);
    } finally {
      bcrypt.compare = original;
    }
  });

  test("five failures lock the account with RATE_LIMITED and a retry time; after the cool-down the owner signs in", async () => {
    const t = await createTenant(fx.db, "Throttle");
    const email = t.members.owner.email;
    for (let i = 0; i < 5; i++) expect(codeOf((await login({ email, password: "guess " + i })).body)).toBe("INVALID_CREDENTIALS");
    const locked = await login({ email, password: fixturePassword });
    expect(locked.body.errors![0]!.extensions).toMatchObject({ code: "RATE_LIMITED", retryAfterSeconds: expect.any(Number) });
    expect(locked.body.errors![0]!.extensions!.retryAfterSeconds as number).toBeGreaterThan(800);
    // 16 minutes later (moved back in time rather than waited for).
    await query(
      fx.db.name,
      "update app_private.login_throttle set window_start = window_start - interval '16 minutes' where key like '%' || $1",
      [email],
      "root",
    );
    expect(codeOf((await login({ email, password: fixturePassword })).body)).toBeNull();
  });
});

describe("tokens", () => {
  test("refresh rotates; a concurrent refresh gets the same new token; reuse later revokes the session", async () => {
    const t = await createTenant(fx.db, "Refresh");
    const first = (await login({ email: t.members.member.email, password: fixturePassword })).body.data!.login as Auth;
    const [r1, r2] = await Promise.all([refresh(first.refreshToken), refresh(first.refreshToken)]);
    const a1 = r1.body.data!.refreshToken as Auth;
    const a2 = r2.body.data!.refreshToken as Auth;
    expect(a1.refreshToken).not.toBe(first.refreshToken);
    expect(a2.refreshToken).toBe(a1.refreshToken);
    expect(a1.user!.email).toBe(t.members.member.email);
    // The new refresh token works once more.
    const second = (await refresh(a1.refreshToken)).body.data!.refreshToken as Auth;
    expect((await whoAmI(second.accessToken)).body.data!.currentUser).toEqual({ email: t.members.member.email });
    // Presenting the first token again, outside the grace window (the database's window clock moved past its 2 s):
    // the whole session ends.
    await query(fx.db.name, "update app_private.clock set offset_by = interval '3 seconds'", [], "root");
    try {
      expect(codeOf((await refresh(first.refreshToken)).body)).toBe("UNAUTHENTICATED");
    } finally {
      await query(fx.db.name, "update app_private.clock set offset_by = interval '0'", [], "root");
    }
    expect(codeOf((await refresh(second.refreshToken)).body)).toBe("UNAUTHENTICATED");
    expect(codeOf((await whoAmI(second.accessToken)).body)).toBe("UNAUTHENTICATED");
    const [session] = await query(
      fx.db.name,
      "select revoked_reason from app_private.sessions where id = $1",
      [(jwt.decode(first.accessToken) as { sid: string }).sid],
      "root",
    );
    expect(session).toEqual({ revoked_reason: "refresh token reuse" });
  });

  test("a forged or malformed refresh token is refused without touching any session", async () => {
    const t = await createTenant(fx.db, "Forged");
    const auth = (await login({ email: t.members.member.email, password: fixturePassword })).body.data!.login as Auth;
    const [sid, generation] = auth.refreshToken.split(".");
    for (const forged of [`${sid}.${generation}.${"A".repeat(43)}`, `${sid}.2.${auth.refreshToken.split(".")[2]}`, "garbage", ""]) {
      expect(codeOf((await refresh(forged)).body)).toBe("UNAUTHENTICATED");
    }
    expect((await refresh(auth.refreshToken)).body.errors).toBeUndefined();
  });

  test("logout on one instance ends the session on another at the next request", async () => {
    const t = await createTenant(fx.db, "Logout");
    const token = t.members.admin.accessToken;
    expect((await whoAmI(token, other)).body.data!.currentUser).toEqual({ email: t.members.admin.email });
    expect((await gql(app, "mutation { logout { success } }", undefined, token)).body.data).toEqual({ logout: { success: true } });
    expect(codeOf((await whoAmI(token, other)).body)).toBe("UNAUTHENTICATED");
    expect((await gql(app, "mutation { logout { success } }", undefined, token)).body.data).toEqual({ logout: { success: false } });
  });

  test("logoutEverywhere ends every session of the person, and only theirs", async () => {
    const t = await createTenant(fx.db, "Everywhere");
    const email = t.members.owner.email;
    const s1 = (await login({ email, password: fixturePassword })).body.data!.login as Auth;
    const s2 = (await login({ email, password: fixturePassword })).body.data!.login as Auth;
    const { body } = await gql(app, "mutation { logoutEverywhere { sessionsEnded } }", undefined, s1.accessToken);
    expect(body.data).toEqual({ logoutEverywhere: { sessionsEnded: 3 } }); // the fixture's session and the two logins
    for (const token of [s1.accessToken, s2.accessToken, t.members.owner.accessToken]) expect(codeOf((await whoAmI(token)).body)).toBe("UNAUTHENTICATED");
    expect((await whoAmI(t.members.viewer.accessToken)).body.errors).toBeUndefined();
  });

  test("switchOrganization issues tokens for another membership, and refuses one the person lacks", async () => {
    const a = await createTenant(fx.db, "Switch A");
    const b = await createTenant(fx.db, "Switch B");
    const person = a.members.member;
    await query(fx.db.name, "insert into app_public.memberships (org_id, user_id, role) values ($1, $2, 'viewer')", [b.orgId, person.userId], "root");
    const { body } = await gql(
      app,
      `mutation ($s: String!) { switchOrganization(input: { organizationSlug: $s }) { ${authFields} } }`,
      { s: b.slug },
      person.accessToken,
    );
    const switched = body.data!.switchOrganization as Auth;
    expect(switched.organization!.slug).toBe(b.slug);
    expect((await whoAmI(switched.accessToken)).body.data!.currentOrganization).toEqual({ slug: b.slug });
    expect((await whoAmI(person.accessToken)).body.data!.currentOrganization).toEqual({ slug: a.slug });
    const refused = await gql(
      app,
      `mutation ($s: String!) { switchOrganization(input: { organizationSlug: $s }) { accessToken } }`,
      { s: b.slug },
      a.members.owner.accessToken,
    );
    expect(codeOf(refused.body)).toBe("NOT_FOUND");
  });

  test("deactivating the user or the organization ends their sessions at the next request", async () => {
    const t = await createTenant(fx.db, "Deactivate");
    await query(fx.db.name, "update app_public.users set is_active = false where id = $1", [t.members.viewer.userId], "root");
    expect(codeOf((await whoAmI(t.members.viewer.accessToken)).body)).toBe("UNAUTHENTICATED");
    expect(codeOf((await login({ email: t.members.viewer.email, password: fixturePassword })).body)).toBe("INVALID_CREDENTIALS");
    expect((await whoAmI(t.members.owner.accessToken)).body.errors).toBeUndefined();
    await query(fx.db.name, "update app_public.organizations set is_active = false where id = $1", [t.orgId], "root");
    expect(codeOf((await whoAmI(t.members.owner.accessToken)).body)).toBe("UNAUTHENTICATED");
  });
});

describe("bad access tokens get 401 UNAUTHENTICATED and nothing else", () => {
  const secret = "test-secret-that-is-at-least-32-characters-long";
  let claims: Record<string, unknown>;
  let good: string;
  beforeAll(async () => {
    const t = await createTenant(fx.db, "Bad Tokens");
    good = t.members.owner.accessToken;
    claims = jwt.decode(good) as Record<string, unknown>;
  });
  const now = () => Math.floor(Date.now() / 1000);
  const unsigned = (payload: Record<string, unknown>) =>
    `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.`;

  // The code stays UNAUTHENTICATED (clients rely on it); `reason` tells an expired token from any other.
  const invalid = { message: "The access token is malformed or invalid; sign in again.", extensions: { code: "UNAUTHENTICATED", reason: "TOKEN_INVALID" } };
  const expired = {
    message: "The access token has expired; get a new one with refreshToken.",
    extensions: { code: "UNAUTHENTICATED", reason: "TOKEN_EXPIRED" },
  };
  test.each<[string, () => string, typeof invalid]>([
    ["malformed", () => "not.a.jwt", invalid],
    ["not a JWT at all", () => "abc", invalid],
    ["unsigned (alg: none)", () => unsigned(claims), invalid],
    ["signed with another secret", () => jwt.sign(claims, "another-secret-that-is-32-characters-long!"), invalid],
    ["signed with HS512 (algorithm not pinned)", () => jwt.sign(claims, secret, { algorithm: "HS512" }), invalid],
    ["expired", () => jwt.sign({ ...claims, iat: now() - 3600, exp: now() - 60 }, secret), expired],
    [
      "expired and signed with another secret",
      () => jwt.sign({ ...claims, iat: now() - 3600, exp: now() - 60 }, "another-secret-that-is-32-characters-long!"),
      invalid,
    ],
    ["for another audience", () => jwt.sign({ ...claims, aud: "someone-else" }, secret), invalid],
    ["from another issuer", () => jwt.sign({ ...claims, iss: "evil" }, secret), invalid],
    [
      "with a tampered payload",
      () => {
        const [h, , s] = good.split(".");
        return `${h}.${Buffer.from(JSON.stringify({ ...claims, org_id: "00000000-0000-4000-8000-000000000000" })).toString("base64url")}.${s}`;
      },
      invalid,
    ],
    ["with a role that does not exist", () => jwt.sign({ ...claims, role: "superuser" }, secret), invalid],
  ])("%s", async (_label, make, answer) => {
    const { status, body } = await gql(app, "{ currentUser { email } }", undefined, make());
    expect(status).toBe(401);
    expect(body).toEqual({ errors: [answer] });
  });

  test("a scheme other than Bearer", async () => {
    const response = await fetch(`${app.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Basic ${good}` },
      body: JSON.stringify({ query: "{ __typename }" }),
    });
    expect(response.status).toBe(401);
  });

  test("no token at all is simply anonymous", async () => {
    const { status, body } = await gql(app, "{ currentUser { email } currentOrganization { slug } }");
    expect(status).toBe(200);
    expect(body).toEqual({ data: { currentUser: null, currentOrganization: null } });
  });
});
