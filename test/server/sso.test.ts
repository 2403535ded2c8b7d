// Single sign-on through an organization's OpenID Connect provider, against a real provider on loopback (the
// oidc-provider package) and a hostile one that mints the ID token a test asks for: connecting it (admins only,
// issuer discovered, secret sealed), the authorization-code flow with PKCE, state and nonce, just-in-time accounts
// found again by subject and never by address alone, every refusal (state replayed, forged or expired; nonce,
// issuer, audience or expiry wrong; domain not allowed; provider down), the handoff code, and requireSso with the
// owners' break-glass password.
import { createServer } from "node:net";
import { generateSealingKey } from "../../lib/sealing.ts";
import { query } from "../support/database.ts";
import {
  followToCallback,
  quirePublicUrl,
  startHostileProvider,
  startIdentityProvider,
  type HostileProvider,
  type IdentityProvider,
} from "../support/identity-provider.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, fixturePassword, type Tenant } from "../support/tenants.ts";

const appUrl = "http://app.quire.test";
const fx = useQuireServer({
  env: { BCRYPT_COST: "10", SEALING_KEYS: `k1:${generateSealingKey()}`, PUBLIC_URL: quirePublicUrl, APP_URL: appUrl, SSO_ALLOW_HTTP: "true" },
});
let idp: IdentityProvider;
let hostile: HostileProvider;
let a: Tenant;
let b: Tenant;
let c: Tenant;
beforeAll(async () => {
  idp = await startIdentityProvider();
  hostile = await startHostileProvider(idp.clientId);
  a = await createTenant(fx.db, "Federated");
  b = await createTenant(fx.db, "Suspicious");
  c = await createTenant(fx.db, "Fragile");
});
afterAll(async () => {
  await idp?.close();
  await hostile?.close();
});

const root = <R extends Record<string, unknown>>(text: string, values: unknown[] = []) => query<R>(fx.db.name, text, values, "root");

const configure = (token: string, input: Record<string, unknown>) =>
  fx.gql(token, "mutation ($i: ConfigureSsoInput!) { configureSso(input: $i) { ssoProvider { rowId issuer clientId allowedDomains defaultRole } } }", {
    i: input,
  });
const connectTo = (provider: { issuer: string }, allowedDomains: string[], defaultRole = "member") => ({
  issuer: provider.issuer,
  clientId: idp.clientId,
  clientSecret: idp.clientSecret,
  allowedDomains,
  defaultRole,
});
/** The browser binding each attempt's app keeps (by state), and each handoff code's (by code), as a frontend would. */
const bindingByState = new Map<string, string>();
const bindingByCode = new Map<string, string>();
async function startSso(input: Record<string, unknown>, token: string | null = null): Promise<string> {
  const body = await fx.gql(token, "mutation ($i: StartSsoInput!) { startSso(input: $i) { authorizationUrl browserBinding } }", { i: input });
  if (!body.data?.startSso) throw new Error(`startSso failed: ${JSON.stringify(body.errors)}`);
  const { authorizationUrl, browserBinding } = body.data.startSso as { authorizationUrl: string; browserBinding: string };
  bindingByState.set(new URL(authorizationUrl).searchParams.get("state")!, browserBinding);
  return authorizationUrl;
}
/** Sends the provider's redirect to the real server and returns where Quire sends the browser next. */
async function callback(url: URL): Promise<{ code: string | null; error: string | null }> {
  const response = await fetch(`${fx.app.url}${url.pathname}${url.search}`, { redirect: "manual" });
  expect(response.status).toBe(303);
  const next = new URL(response.headers.get("location")!);
  expect(`${next.origin}${next.pathname}${next.search}`).toBe(`${appUrl}/sso/complete`);
  // In the fragment: never sent to a server, nor in a Referer.
  const outcome = new URLSearchParams(next.hash.slice(1));
  const code = outcome.get("code");
  if (code) bindingByCode.set(code, bindingByState.get(url.searchParams.get("state") ?? "") ?? "");
  return { code, error: outcome.get("error") };
}
/** completeSso as the app that started the sign-in (its binding), or with `binding` given. */
const complete = (code: string, token: string | null = null, binding = bindingByCode.get(code) ?? "") =>
  fx.gql(
    token,
    "mutation ($c: String!, $b: String!) { completeSso(input: { code: $c, browserBinding: $b }) { accessToken organization { slug } user { email fullName emailVerifiedAt } } }",
    { c: code, b: binding },
  );
/** A whole single sign-on as `account`, to the organization `slug` (started signed in with `token`, to link); returns the completeSso answer. */
async function signInAs(account: Parameters<IdentityProvider["signInAs"]>[0], slug: string, token: string | null = null) {
  idp.signInAs(account);
  const { code, error } = await callback(await followToCallback(await startSso({ organizationSlug: slug }, token)));
  if (!code) return { error };
  const body = await complete(code, token);
  return { error: null, body };
}
const roleOf = async (orgId: string, email: string) =>
  (
    await root<{ role: string }>(
      "select m.role from app_public.memberships m join app_public.users u on u.id = m.user_id where m.org_id = $1 and u.email = $2",
      [orgId, email],
    )
  )[0]?.role ?? null;

test("an admin connects the provider: its issuer is discovered, the secret sealed and never readable; members cannot", async () => {
  expect(codeOf(await configure(a.members.member.accessToken, connectTo(idp, [`${a.slug}.example`])))).toBe("FORBIDDEN");
  expect(codeOf(await configure(a.members.admin.accessToken, { ...connectTo(idp, []), issuer: "ftp://idp.example" }))).toBe("BAD_INPUT");
  expect(codeOf(await configure(a.members.admin.accessToken, connectTo(idp, ["not a domain"])))).toBe("BAD_INPUT");
  expect(codeOf(await configure(a.members.admin.accessToken, connectTo(idp, [], "owner")))).toBe("BAD_INPUT");

  const body = await configure(a.members.admin.accessToken, connectTo(idp, [` ${a.slug.toUpperCase()}.EXAMPLE `, "acme.example"]));
  expect(body.errors).toBeUndefined();
  expect((body.data!.configureSso as { ssoProvider: unknown }).ssoProvider).toEqual({
    rowId: expect.any(String),
    issuer: idp.issuer,
    clientId: idp.clientId,
    allowedDomains: ["acme.example", `${a.slug}.example`],
    defaultRole: "member",
  });
  const [sealed] = await root<{ plain: boolean; key_id: string }>(
    "select position(convert_to($2, 'UTF8') in secret_ciphertext) > 0 as plain, key_id from app_private.sso_secrets where org_id = $1",
    [a.orgId, idp.clientSecret],
  );
  expect(sealed).toEqual({ plain: false, key_id: "k1" });
  // Admins see the provider; members do not; the other organization sees only its own.
  const seen = async (token: string) => ((await fx.gql(token, "{ ssoProviders { nodes { issuer } } }")).data!.ssoProviders as { nodes: unknown[] }).nodes;
  expect(await seen(a.members.admin.accessToken)).toEqual([{ issuer: idp.issuer }]);
  expect(await seen(a.members.member.accessToken)).toEqual([]);
  expect(await seen(b.members.admin.accessToken)).toEqual([{ issuer: `https://idp.${b.slug}.example` }]);
});

test("a first sign-in provisions the account and membership just in time; later ones find the person by subject, not by address", async () => {
  const first = await signInAs({ sub: "jit-1", email: `new.person@${a.slug}.example`, emailVerified: true, name: "New Person" }, a.slug);
  expect(first.body?.errors).toBeUndefined();
  const signedIn = first.body!.data!.completeSso as { accessToken: string; organization: { slug: string }; user: { email: string; fullName: string } };
  expect(signedIn.organization.slug).toBe(a.slug);
  // The provider vouched for the address, but nobody proved the admin's domain: unverified until its emailed link.
  expect(signedIn.user).toEqual({ email: `new.person@${a.slug}.example`, fullName: "New Person", emailVerifiedAt: null });
  expect(await roleOf(a.orgId, `new.person@${a.slug}.example`)).toBe("member");
  expect((await fx.gql(signedIn.accessToken, "{ currentUser { email } }")).data).toEqual({ currentUser: { email: `new.person@${a.slug}.example` } });
  const [audit] = await root<{ n: string }>("select count(*) as n from app_public.audit_events where org_id = $1 and action = 'sso_sign_in'", [a.orgId]);
  expect(audit!.n).toBe("1");
  // No password: the account cannot sign in with one.
  expect(
    codeOf(
      await fx.gql(null, "mutation ($i: LoginInput!) { login(input: $i) { accessToken } }", {
        i: { email: `new.person@${a.slug}.example`, password: fixturePassword },
      }),
    ),
  ).toBe("INVALID_CREDENTIALS");

  // The provider now says another address for the same subject: still the same person, whose address stays.
  const again = await signInAs({ sub: "jit-1", email: `renamed@${a.slug}.example`, emailVerified: true }, a.slug);
  expect((again.body!.data!.completeSso as { user: { email: string } }).user.email).toBe(`new.person@${a.slug}.example`);
  // Another subject claiming that address is not that person: an address that has an account is never linked by itself.
  expect(await signInAs({ sub: "jit-2", email: `new.person@${a.slug}.example`, emailVerified: true }, a.slug)).toEqual({ error: "ACCOUNT_EXISTS" });
  const [users] = await root<{ n: string }>("select count(*) as n from app_public.users where email like $1", [`%@${a.slug}.example`]);
  expect(users!.n).toBe("5"); // the four fixture members and the one provisioned
});

test("an existing member links by starting single sign-on while signed in, never by address alone; the session stays in its organization; a domain not allowed, an unconfirmed address or an existing account is refused", async () => {
  const viewer = a.members.viewer;
  // Anonymous, the provider's claim of the viewer's address links nothing (an admin's provider could claim anyone's).
  expect(await signInAs({ sub: "member-1", email: viewer.email, emailVerified: true }, a.slug)).toEqual({ error: "ACCOUNT_EXISTS" });
  // A linking sign-in whose URL reached another browser: completed there (anonymously, or as someone else), it links
  // nothing, so nobody's provider account is attached to the starter behind their back.
  idp.signInAs({ sub: "intruder-1", email: "intruder@elsewhere.example", emailVerified: true });
  const handed = await callback(await followToCallback(await startSso({ organizationSlug: a.slug }, viewer.accessToken)));
  expect(codeOf(await complete(handed.code!, a.members.member.accessToken))).toBe("UNAUTHENTICATED");
  expect(await root("select 1 from app_public.sso_identities where subject = 'intruder-1'")).toEqual([]);
  // Signed in, the viewer proves the account; the sign-in proves the provider account; the same session finishes it.
  const linked = await signInAs({ sub: "member-1", email: "whatever@elsewhere.example", emailVerified: false }, a.slug, viewer.accessToken);
  expect((linked.body!.data!.completeSso as { user: { email: string } }).user.email).toBe(viewer.email);
  expect(await roleOf(a.orgId, viewer.email)).toBe("viewer");
  // From then on the subject is the viewer, anonymously too.
  const member = await signInAs({ sub: "member-1", email: viewer.email, emailVerified: true }, a.slug);
  const ssoToken = (member.body!.data!.completeSso as { accessToken: string }).accessToken;
  // A single sign-on session cannot open a password session elsewhere.
  const switched = await fx.gql(ssoToken, "mutation ($s: String!) { switchOrganization(input: { organizationSlug: $s }) { accessToken } }", { s: b.slug });
  expect(codeOf(switched)).toBe("FORBIDDEN");

  expect(await signInAs({ sub: "x-1", email: "someone@elsewhere.example", emailVerified: true }, a.slug)).toEqual({ error: "FORBIDDEN" });
  expect(await signInAs({ sub: "x-2", email: `unconfirmed@${a.slug}.example`, emailVerified: false }, a.slug)).toEqual({ error: "FORBIDDEN" });
  // b's owner has an account (b's addresses are <role>@<b.slug>.example): allow that domain for a moment.
  await configure(a.members.admin.accessToken, connectTo(idp, [`${a.slug}.example`, `${b.slug}.example`]));
  expect(await signInAs({ sub: "x-3", email: b.members.owner.email, emailVerified: true }, a.slug)).toEqual({ error: "ACCOUNT_EXISTS" });
  expect(await roleOf(a.orgId, b.members.owner.email)).toBeNull();
  await configure(a.members.admin.accessToken, connectTo(idp, [`${a.slug}.example`]));
  const [made] = await root<{ n: string }>("select count(*) as n from app_public.sso_identities where subject like 'x-%'");
  expect(made!.n).toBe("0");
});

test("the state is single use, unforgeable and expires; a nonce that does not match refuses the ID token; the handoff works once, and only in the app that started the sign-in", async () => {
  idp.signInAs({ sub: "state-1", email: `state@${a.slug}.example`, emailVerified: true });
  const url = await followToCallback(await startSso({ organizationSlug: a.slug }));
  const forged = new URL(url);
  forged.searchParams.set("state", "forged-state");
  expect(await callback(forged)).toEqual({ code: null, error: "INVALID_STATE" });
  const first = await callback(url);
  expect(first.code).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(await callback(url)).toEqual({ code: null, error: "INVALID_STATE" });
  // Login CSRF: the code handed to another browser (whose app has another binding, or none) signs nobody in.
  const stolen = await callback(await followToCallback(await startSso({ organizationSlug: a.slug })));
  expect(codeOf(await complete(stolen.code!, null, "another-browsers-binding"))).toBe("UNAUTHENTICATED");
  expect(codeOf(await complete(stolen.code!))).toBeNull(); // the app that started it still can
  expect(codeOf(await complete(first.code!))).toBeNull();
  expect(codeOf(await complete(first.code!))).toBe("UNAUTHENTICATED");

  // Expired: ten minutes pass between startSso and the provider's redirect.
  const late = await followToCallback(await startSso({ organizationSlug: a.slug }));
  await root("update app_private.clock set offset_by = interval '601 seconds'");
  try {
    expect(await callback(late)).toEqual({ code: null, error: "INVALID_STATE" });
  } finally {
    await root("update app_private.clock set offset_by = interval '0'");
  }

  // The ID token carries the nonce of its own request: the attempt's nonce changed, the token is refused.
  const replayed = await followToCallback(await startSso({ organizationSlug: a.slug }));
  await root("update app_private.sso_states set nonce = 'another-nonce' where org_id = $1", [a.orgId]);
  expect(await callback(replayed)).toEqual({ code: null, error: "PROVIDER_ERROR" });

  // A handoff is good for a minute.
  const slow = await callback(await followToCallback(await startSso({ organizationSlug: a.slug })));
  await root("update app_private.clock set offset_by = interval '61 seconds'");
  try {
    expect(codeOf(await complete(slow.code!))).toBe("UNAUTHENTICATED");
  } finally {
    await root("update app_private.clock set offset_by = interval '0'");
  }
});

test("an ID token from another issuer, for another audience or expired is refused; the same provider's proper token signs in", async () => {
  const issuer = new URL(hostile.issuer);
  expect(issuer.hostname).toBe("127.0.0.1");
  expect((await configure(b.members.admin.accessToken, { ...connectTo(hostile, [`${b.slug}.example`]), clientId: idp.clientId })).errors).toBeUndefined();
  const attempt = async (claims: Record<string, unknown>) => {
    hostile.mint({ email: `mallory@${b.slug}.example`, ...claims });
    return callback(await followToCallback(await startSso({ email: `mallory@${b.slug}.example` })));
  };
  const now = Math.floor(Date.now() / 1000);
  expect(await attempt({ iss: idp.issuer })).toEqual({ code: null, error: "PROVIDER_ERROR" });
  expect(await attempt({ aud: "another-client" })).toEqual({ code: null, error: "PROVIDER_ERROR" });
  expect(await attempt({ iat: now - 900, exp: now - 600 })).toEqual({ code: null, error: "PROVIDER_ERROR" });
  expect(await attempt({ nonce: "not-the-one-sent" })).toEqual({ code: null, error: "PROVIDER_ERROR" });
  const [none] = await root<{ n: string }>("select count(*) as n from app_public.users where email = $1", [`mallory@${b.slug}.example`]);
  expect(none!.n).toBe("0");
  // The harness itself works: the same provider's token with the right claims signs in.
  const proper = await attempt({});
  expect(proper.error).toBeNull();
  expect((await complete(proper.code!)).data).toMatchObject({ completeSso: { organization: { slug: b.slug } } });
});

test("a provider that is down: startSso answers UPSTREAM_ERROR, and a callback whose token request fails answers PROVIDER_ERROR", async () => {
  const doomed = await startIdentityProvider();
  expect(
    (
      await configure(c.members.admin.accessToken, {
        ...connectTo(doomed, [`${c.slug}.example`]),
        clientId: doomed.clientId,
        clientSecret: doomed.clientSecret,
      })
    ).errors,
  ).toBeUndefined();
  doomed.signInAs({ sub: "down-1", email: `down@${c.slug}.example`, emailVerified: true });
  const url = await followToCallback(await startSso({ organizationSlug: c.slug }));
  await doomed.close();
  expect(await callback(url)).toEqual({ code: null, error: "PROVIDER_ERROR" });

  // Another organization pointed at an address where nothing listens.
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const configured = await configure(b.members.admin.accessToken, { ...connectTo(idp, []), issuer: `http://127.0.0.1:${port}` });
  expect(codeOf(configured)).toBe("UPSTREAM_ERROR");
  await root("update app_public.sso_providers set issuer = $2 where org_id = $1", [c.orgId, `http://127.0.0.1:${port}`]);
  const body = await fx.gql(null, "mutation ($i: StartSsoInput!) { startSso(input: $i) { authorizationUrl browserBinding } }", {
    i: { organizationSlug: c.slug },
  });
  expect(codeOf(body)).toBe("UPSTREAM_ERROR");
  expect(body.errors![0]!.message).toBe("The identity provider could not be reached or answered wrongly; try again later.");
  expect(codeOf(await fx.gql(null, 'mutation { startSso(input: { organizationSlug: "no-such-org" }) { authorizationUrl } }'))).toBe("NOT_FOUND");
});

test("requireSso: members' password sessions end and their password sign-ins are refused, owners keep their password, SSO sessions and keys work", async () => {
  const setRequired = (token: string, required: boolean) =>
    fx.gql(token, "mutation ($r: Boolean!) { setRequireSso(input: { required: $r }) { result { requireSso } } }", { r: required });
  const login = (email: string) =>
    fx.gql(null, "mutation ($i: LoginInput!) { login(input: $i) { accessToken } }", { i: { email, password: fixturePassword, organizationSlug: a.slug } });
  const documents = (token: string) => fx.gql(token, "{ documents { totalCount } }");
  const key = (await fx.gql(a.members.admin.accessToken, 'mutation { createApiKey(input: { name: "sso bot", role: member }) { result } }')).data!
    .createApiKey as { result: string };

  expect(codeOf(await setRequired(a.members.member.accessToken, true))).toBe("FORBIDDEN");
  // An admin with a password session is told to sign in through the provider first.
  expect(codeOf(await setRequired(a.members.admin.accessToken, true))).toBe("BAD_INPUT");
  expect((await setRequired(a.members.owner.accessToken, true)).data).toEqual({ setRequireSso: { result: { requireSso: true } } });

  // Members' password sessions ended at once; signing in again with a password is refused with the code that says
  // what to do.
  expect(codeOf(await documents(a.members.member.accessToken))).toBe("UNAUTHENTICATED");
  expect(codeOf(await documents(a.members.admin.accessToken))).toBe("UNAUTHENTICATED");
  const [ended] = await root<{ n: number }>(
    "select count(*)::int as n from app_private.sessions where org_id = $1 and revoked_reason = 'single sign-on required'",
    [a.orgId],
  );
  expect(ended!.n).toBeGreaterThanOrEqual(3); // admin, member, viewer (and any other password session of theirs)
  expect(codeOf(await login(a.members.member.email))).toBe("SSO_REQUIRED");
  // Break-glass: owners keep their password.
  expect(codeOf(await login(a.members.owner.email))).toBeNull();
  expect(codeOf(await documents(a.members.owner.accessToken))).toBeNull();
  expect(codeOf(await documents(key.result))).toBeNull();

  // The viewer, linked to the provider earlier, signs in through it and works.
  const viaSso = await signInAs({ sub: "member-1", email: a.members.viewer.email, emailVerified: true }, a.slug);
  const token = (viaSso.body!.data!.completeSso as { accessToken: string }).accessToken;
  expect((await documents(token)).data).toEqual({ documents: { totalCount: expect.any(Number) } });

  // Disconnecting the provider stops requiring it: a password works again.
  expect((await fx.gql(a.members.owner.accessToken, "mutation { removeSso(input: {}) { result } }")).data).toEqual({ removeSso: { result: true } });
  expect(codeOf(await login(a.members.member.email))).toBeNull();
  expect(codeOf(await setRequired(a.members.owner.accessToken, true))).toBe("BAD_INPUT");
});

test("API keys cannot change sign-in settings, even with the admin role", async () => {
  const key = (await fx.gql(b.members.admin.accessToken, 'mutation { createApiKey(input: { name: "settings bot", role: admin }) { result } }')).data!
    .createApiKey as { result: string };
  const before = await root<{ issuer: string }>("select issuer from app_public.sso_providers where org_id = $1", [b.orgId]);
  expect(codeOf(await configure(key.result, { ...connectTo(idp, [`${b.slug}.example`]) }))).toBe("FORBIDDEN");
  expect(codeOf(await fx.gql(key.result, "mutation { setRequireSso(input: { required: false }) { result { requireSso } } }"))).toBe("FORBIDDEN");
  expect(codeOf(await fx.gql(key.result, "mutation { setRequireMfa(input: { required: false }) { result { requireMfa } } }"))).toBe("FORBIDDEN");
  expect(codeOf(await fx.gql(key.result, "mutation { removeSso(input: {}) { result } }"))).toBe("FORBIDDEN");
  expect(await root("select issuer from app_public.sso_providers where org_id = $1", [b.orgId])).toEqual(before);
});
