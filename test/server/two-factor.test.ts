// Two-factor authentication (TOTP): enrolling an app (secret sealed at rest, shown once, confirmed by a first code,
// recovery codes stored as digests), sign-in answering MFA_REQUIRED with a single-use challenge that verifyMfa
// completes, codes accepted once and within ±1 step, guesses rate-limited and audited, turning 2FA off with a fresh
// code, an organization requiring 2FA of its members, and an invitation that cannot bypass the second factor.
import { generateSealingKey } from "../../lib/sealing.ts";
import { totpCode, totpPeriodSeconds } from "../../lib/totp.ts";
import { query, roles } from "../support/database.ts";
import { codeOf, useQuireServer, type GraphQLBody } from "../support/server.ts";
import { createTenant, fixturePassword, type Tenant } from "../support/tenants.ts";

const fx = useQuireServer({ env: { BCRYPT_COST: "10", SEALING_KEYS: `k1:${generateSealingKey()}` } });
let a: Tenant;
let b: Tenant;
let c: Tenant;
beforeAll(async () => {
  a = await createTenant(fx.db, "Guarded");
  b = await createTenant(fx.db, "Elsewhere");
  c = await createTenant(fx.db, "Strict");
});

const stepMs = totpPeriodSeconds * 1000;
const root = <R extends Record<string, unknown>>(text: string, values: unknown[] = []) => query<R>(fx.db.name, text, values, "root");

const start = (token: string, password = fixturePassword) =>
  fx.gql(token, "mutation ($p: String!) { startMfaEnrollment(input: { password: $p }) { secret otpauthUri } }", { p: password });
const confirm = (token: string, code: string) =>
  fx.gql(token, "mutation ($c: String!) { confirmMfaEnrollment(input: { code: $c }) { recoveryCodes } }", { c: code });
const disable = (token: string, code: string) => fx.gql(token, "mutation ($c: String!) { disableMfa(input: { code: $c }) { success } }", { c: code });
const login = (email: string, organizationSlug?: string) =>
  fx.gql(null, "mutation ($i: LoginInput!) { login(input: $i) { accessToken organization { slug } } }", {
    i: { email, password: fixturePassword, organizationSlug },
  });
const verify = (challenge: string, code: string) =>
  fx.gql(null, "mutation ($i: VerifyMfaInput!) { verifyMfa(input: $i) { accessToken organization { slug } } }", { i: { challenge, code } });
const challengeOf = (body: GraphQLBody) => String(body.errors?.[0]?.extensions?.challenge ?? "");
const auditCount = async (orgId: string, action: string) =>
  Number((await root<{ n: string }>("select count(*) as n from app_public.audit_events where org_id = $1 and action = $2", [orgId, action]))[0]!.n);

/** Enrolls the person of `token` and returns their secret and recovery codes. The code used is the one of the step before now. */
async function enroll(token: string): Promise<{ secret: string; recoveryCodes: string[] }> {
  const started = await start(token);
  const { secret } = started.data!.startMfaEnrollment as { secret: string };
  const confirmed = await confirm(token, totpCode(secret, Date.now() - stepMs));
  if (!confirmed.data?.confirmMfaEnrollment) throw new Error(`confirmMfaEnrollment failed: ${JSON.stringify(confirmed.errors)}`);
  return { secret, recoveryCodes: (confirmed.data.confirmMfaEnrollment as { recoveryCodes: string[] }).recoveryCodes };
}

test("enrolling: the password is asked, the secret is shown once and sealed at rest, a wrong first code is refused and audited, a right one turns 2FA on with ten recovery codes kept as digests and ends the other sessions", async () => {
  const member = a.members.member;
  expect(codeOf(await start(member.accessToken, "not the password"))).toBe("INVALID_CREDENTIALS");
  expect(await root("select 1 from app_private.user_mfa where user_id = $1", [member.userId])).toEqual([]);
  const started = await start(member.accessToken);
  const { secret, otpauthUri } = started.data!.startMfaEnrollment as { secret: string; otpauthUri: string };
  expect(secret).toMatch(/^[A-Z2-7]{32}$/);
  const uri = new URL(otpauthUri);
  expect(uri.protocol).toBe("otpauth:");
  expect([uri.host, decodeURIComponent(uri.pathname)]).toEqual(["totp", `/Quire:${member.email}`]);
  expect(Object.fromEntries(uri.searchParams)).toMatchObject({ secret, issuer: "Quire", algorithm: "SHA1", digits: "6", period: "30" });

  const [stored] = await root<{ plain: boolean; enabled_at: Date | null; key_id: string }>(
    "select position(convert_to($2, 'UTF8') in secret_ciphertext) > 0 as plain, enabled_at, key_id from app_private.user_mfa where user_id = $1",
    [member.userId, secret],
  );
  expect(stored).toEqual({ plain: false, enabled_at: null, key_id: "k1" });

  // Not on yet: sign-in needs no code, and mfaEnabled says false.
  const elsewhere = await login(member.email);
  expect(codeOf(elsewhere)).toBeNull();
  expect((await fx.gql(member.accessToken, "{ currentUser { mfaEnabled } }")).data).toEqual({ currentUser: { mfaEnabled: false } });

  const failedBefore = await auditCount(a.orgId, "mfa_failed");
  const wrong = await confirm(member.accessToken, totpCode(secret, Date.now() + 5 * stepMs));
  expect(codeOf(wrong)).toBe("INVALID_CREDENTIALS");
  expect(await auditCount(a.orgId, "mfa_failed")).toBe(failedBefore + 1);

  const confirmed = await confirm(member.accessToken, totpCode(secret));
  const { recoveryCodes } = confirmed.data!.confirmMfaEnrollment as { recoveryCodes: string[] };
  expect(recoveryCodes).toHaveLength(10);
  expect(new Set(recoveryCodes).size).toBe(10);
  for (const code of recoveryCodes) expect(code).toMatch(/^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/);
  const [codes] = await root<{ n: string; plain: string }>(
    "select count(*) as n, count(*) filter (where encode(code_hash, 'escape') like '%' || $2 || '%') as plain from app_private.mfa_recovery_codes where user_id = $1",
    [member.userId, recoveryCodes[0]!.slice(0, 4)],
  );
  expect(codes).toEqual({ n: "10", plain: "0" });
  expect(await auditCount(a.orgId, "mfa_enrolled")).toBe(1);
  expect((await fx.gql(member.accessToken, "{ currentUser { mfaEnabled } }")).data).toEqual({ currentUser: { mfaEnabled: true } });
  // The session signed in with the password alone ended; the one that enrolled goes on.
  const otherToken = (elsewhere.data!.login as { accessToken: string }).accessToken;
  expect(codeOf(await fx.gql(otherToken, "{ currentUser { email } }"))).toBe("UNAUTHENTICATED");

  // On now: starting again is a conflict; the audit rows hold no secret or code.
  expect(codeOf(await start(member.accessToken))).toBe("CONFLICT");
  const [leak] = await root<{ n: string }>(
    "select count(*) as n from app_public.audit_events where org_id = $1 and (details::text like '%' || $2 || '%' or details::text like '%' || $3 || '%')",
    [a.orgId, secret, recoveryCodes[1]],
  );
  expect(leak!.n).toBe("0");
});

test("with 2FA on, login answers MFA_REQUIRED with a challenge and opens no session; verifyMfa with the code signs in, once", async () => {
  const member = a.members.admin;
  const { secret } = await enroll(member.accessToken);
  const [before] = await root<{ n: string }>("select count(*) as n from app_private.sessions where user_id = $1", [member.userId]);

  const answered = await login(member.email, a.slug);
  expect(codeOf(answered)).toBe("MFA_REQUIRED");
  expect(answered.data?.login ?? null).toBeNull();
  expect(answered.errors![0]!.extensions!.expiresInSeconds).toBe(300);
  const challenge = challengeOf(answered);
  expect(challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
  const [after] = await root<{ n: string }>("select count(*) as n from app_private.sessions where user_id = $1", [member.userId]);
  expect(after!.n).toBe(before!.n);

  const code = totpCode(secret);
  const signedIn = await verify(challenge, code);
  expect(signedIn.errors).toBeUndefined();
  const { accessToken, organization } = signedIn.data!.verifyMfa as { accessToken: string; organization: { slug: string } };
  expect(organization.slug).toBe(a.slug);
  expect((await fx.gql(accessToken, "{ currentUser { email } }")).data).toEqual({ currentUser: { email: member.email } });

  // The challenge is spent; so is the code, even with a fresh challenge (an observed code cannot be replayed).
  expect(codeOf(await verify(challenge, code))).toBe("UNAUTHENTICATED");
  const again = await verify(challengeOf(await login(member.email)), code);
  expect(codeOf(again)).toBe("INVALID_CREDENTIALS");
  expect(again.errors![0]!.message).toBe("This code was already used; wait for the next one.");
});

test("a code from the next step is accepted, one from three steps ahead refused (lib/totp's tests pin the ±1 edge); a forged or expired challenge is refused", async () => {
  const member = a.members.viewer;
  const { secret } = await enroll(member.accessToken);
  // enroll spent the step before now. Three steps ahead is beyond the window even if a step boundary passes meanwhile.
  expect(codeOf(await verify(challengeOf(await login(member.email)), totpCode(secret, Date.now() + 3 * stepMs)))).toBe("INVALID_CREDENTIALS");
  expect(codeOf(await verify(challengeOf(await login(member.email)), totpCode(secret, Date.now() + stepMs)))).toBeNull();

  expect(codeOf(await verify("x".repeat(43), totpCode(secret)))).toBe("UNAUTHENTICATED");

  const challenge = challengeOf(await login(member.email));
  await root("update app_private.clock set offset_by = interval '301 seconds'");
  try {
    expect(codeOf(await verify(challenge, totpCode(secret)))).toBe("UNAUTHENTICATED");
  } finally {
    await root("update app_private.clock set offset_by = interval '0'");
  }
});

test("wrong codes are audited as mfa_failed, kill the challenge after five, and count against the sign-in budgets", async () => {
  const member = b.members.member;
  const { secret } = await enroll(member.accessToken);
  await root("delete from app_private.login_throttle");
  const failedBefore = await auditCount(b.orgId, "mfa_failed");
  const wrongCode = totpCode(secret, Date.now() + 10 * stepMs);

  const challenge = challengeOf(await login(member.email));
  const codes: unknown[] = [];
  for (let i = 0; i < 6; i += 1) codes.push(codeOf(await verify(challenge, wrongCode)));
  // The account-and-address budget is 5 guesses per 15 minutes: the sign-in took one, four wrong codes the rest.
  expect(codes).toEqual(["INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "RATE_LIMITED", "RATE_LIMITED"]);
  expect(await auditCount(b.orgId, "mfa_failed")).toBe(failedBefore + 4);

  // Even the right code waits now; once the budget is back, the challenge is still alive (4 failures < 5) and works.
  expect(codeOf(await verify(challenge, totpCode(secret)))).toBe("RATE_LIMITED");
  await root("delete from app_private.login_throttle");
  expect(codeOf(await verify(challenge, wrongCode))).toBe("INVALID_CREDENTIALS");
  // The fifth failure killed it.
  expect(codeOf(await verify(challenge, totpCode(secret)))).toBe("UNAUTHENTICATED");
  await root("delete from app_private.login_throttle");
});

test("a recovery code signs in once; turning 2FA off takes a fresh code, after which a password is enough again", async () => {
  const member = b.members.viewer;
  const { secret, recoveryCodes } = await enroll(member.accessToken);
  const recovery = recoveryCodes[3]!;
  const viaRecovery = await verify(challengeOf(await login(member.email)), ` ${recovery.toLowerCase().replaceAll("-", " ")} `);
  expect(viaRecovery.errors).toBeUndefined();
  expect(codeOf(await verify(challengeOf(await login(member.email)), recovery))).toBe("INVALID_CREDENTIALS");
  const [used] = await root<{ n: string }>("select count(*) as n from app_private.mfa_recovery_codes where user_id = $1 and used_at is not null", [
    member.userId,
  ]);
  expect(used!.n).toBe("1");

  expect(codeOf(await disable(member.accessToken, "000000"))).toBe("INVALID_CREDENTIALS");
  expect(await auditCount(b.orgId, "mfa_disabled")).toBe(0);
  expect((await disable(member.accessToken, totpCode(secret))).data).toEqual({ disableMfa: { success: true } });
  expect(await auditCount(b.orgId, "mfa_disabled")).toBe(1);
  const [rows] = await root<{ n: string }>(
    "select (select count(*) from app_private.user_mfa where user_id = $1) + (select count(*) from app_private.mfa_recovery_codes where user_id = $1) as n",
    [member.userId],
  );
  expect(rows!.n).toBe("0");
  expect(codeOf(await login(member.email))).toBeNull();
});

test("an organization that requires 2FA refuses its members without it until they enroll; keys and other organizations are unaffected", async () => {
  const setRequired = (token: string, required: boolean) =>
    fx.gql(token, "mutation ($r: Boolean!) { setRequireMfa(input: { required: $r }) { result { requireMfa } } }", { r: required });
  expect(codeOf(await setRequired(c.members.member.accessToken, true))).toBe("FORBIDDEN");
  const key = (await fx.gql(c.members.admin.accessToken, 'mutation { createApiKey(input: { name: "bot", role: member }) { result } }')).data!.createApiKey as {
    result: string;
  };
  // An admin must have 2FA on themselves before requiring it (or they would be locked out with everyone else).
  const unprotected = await setRequired(c.members.admin.accessToken, true);
  expect(codeOf(unprotected)).toBe("BAD_INPUT");
  expect(unprotected.errors![0]!.message).toBe("Turn on two-factor authentication for yourself first.");
  await enroll(c.members.admin.accessToken);
  expect((await setRequired(c.members.admin.accessToken, true)).data).toEqual({ setRequireMfa: { result: { requireMfa: true } } });

  const documents = (token: string) => fx.gql(token, "{ documents { totalCount } }");
  const served = { documents: { totalCount: expect.any(Number) } };
  // The sessions of members without 2FA ended at once (the admin's, with 2FA, goes on); an API key has no person to
  // carry a second factor.
  expect(codeOf(await documents(c.members.member.accessToken))).toBe("UNAUTHENTICATED");
  expect(codeOf(await documents(c.members.owner.accessToken))).toBe("UNAUTHENTICATED");
  expect((await documents(c.members.admin.accessToken)).data).toEqual(served);
  expect((await documents(key.result)).data).toEqual(served);
  // A fresh sign-in still opens a session (to enroll with): the tokens come back, the organization is refused with
  // the code that says what to do, and live subscriptions refuse it too (the shared-read session check).
  const signedIn = await login(c.members.member.email);
  expect(codeOf(signedIn)).toBe("MFA_ENROLLMENT_REQUIRED");
  expect((signedIn.errors![0] as { path?: unknown }).path).toEqual(["login", "organization"]);
  const fresh = (signedIn.data!.login as { accessToken: string }).accessToken;
  expect(codeOf(await documents(fresh))).toBe("MFA_ENROLLMENT_REQUIRED");
  const sessionId = (JSON.parse(Buffer.from(fresh.split(".")[1]!, "base64url").toString()) as { sid: string }).sid;
  const ended = () => query<{ id: string }>(fx.db.name, "select id from app_private.ended_sessions($1::uuid[]) as id", [[sessionId]], roles.authenticator);
  expect(await ended()).toEqual([{ id: sessionId }]);

  await enroll(fresh);
  expect((await documents(fresh)).data).toEqual(served);
  expect(await ended()).toEqual([]);
  // Another organization's members are not held to it.
  expect((await documents(b.members.owner.accessToken)).data).toEqual(served);
  // The audit log records who required it.
  const changed = await root<{ actor_user_id: string; new_values: unknown }>(
    "select actor_user_id, new_values from app_public.audit_events where org_id = $1 and action = 'update' and 'require_mfa' = any (changed_columns)",
    [c.orgId],
  );
  expect(changed).toEqual([{ actor_user_id: c.members.admin.userId, new_values: { require_mfa: true } }]);
});

test("mfaEnabled shows to the person and their admins only; an invitation's password path cannot skip the second factor", async () => {
  // a.members.member enrolled above.
  const seen = async (token: string) =>
    (
      (await fx.gql(token, "{ users { nodes { email mfaEnabled } } }")).data!.users as { nodes: Array<{ email: string; mfaEnabled: boolean | null }> }
    ).nodes.find((u) => u.email === a.members.member.email)?.mfaEnabled;
  expect(await seen(a.members.owner.accessToken)).toBe(true);
  expect(await seen(a.members.viewer.accessToken)).toBeNull();

  const invited = await fx.gql(b.members.admin.accessToken, "mutation ($e: String!) { inviteMember(input: { email: $e }) { inviteLink } }", {
    e: a.members.member.email,
  });
  const token = new URL((invited.data!.inviteMember as { inviteLink: string }).inviteLink).searchParams.get("token")!;
  const accept = (bearer: string | null) =>
    fx.gql(bearer, "mutation ($t: String!, $p: String) { acceptInvitation(input: { token: $t, password: $p }) { organization { slug } } }", {
      t: token,
      p: fixturePassword,
    });
  const byPassword = await accept(null);
  expect(codeOf(byPassword)).toBe("UNAUTHENTICATED");
  expect(byPassword.errors![0]!.message).toMatch(/two-factor/);
  // Signed in (with the second factor), the same link works.
  expect((await accept(a.members.member.accessToken)).data).toEqual({ acceptInvitation: { organization: { slug: b.slug } } });
});

test("turning 2FA on enables only the secret the code was checked against: one replaced meanwhile is refused", async () => {
  const member = c.members.viewer;
  const signedIn = await login(member.email); // c requires 2FA: this session can enroll and nothing else
  const token = (signedIn.data!.login as { accessToken: string }).accessToken;
  const sessionId = (JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString()) as { sid: string }).sid;
  const first = (await start(token)).data!.startMfaEnrollment as { secret: string };
  const [pending] = await root<{ key_id: string; secret_nonce: Buffer }>("select key_id, secret_nonce from app_private.user_mfa where user_id = $1", [
    member.userId,
  ]);
  // What a second startMfaEnrollment between the check and the enabling would leave: the same key, another sealing.
  await start(token);
  const step = Math.floor(Date.now() / stepMs);
  const hashes = Array.from({ length: 10 }, (_, i) => Buffer.alloc(32, i));
  await expect(
    query(
      fx.db.name,
      "select app_private.enable_mfa($1, $2, $3, $4, $5)",
      [sessionId, step, hashes, pending!.key_id, pending!.secret_nonce],
      roles.authenticator,
    ),
  ).rejects.toMatchObject({ code: "TAKEN" });
  expect(await root("select 1 from app_private.user_mfa where user_id = $1 and enabled_at is not null", [member.userId])).toEqual([]);
  // And the first secret's code no longer confirms anything.
  expect(codeOf(await confirm(token, totpCode(first.secret)))).toBe("INVALID_CREDENTIALS");
});

test("a wrong recovery code is a wrong code like any other: refused and audited", async () => {
  const member = a.members.admin; // enrolled above
  const failedBefore = await auditCount(a.orgId, "mfa_failed");
  await root("delete from app_private.login_throttle");
  const answer = await verify(challengeOf(await login(member.email)), "AAAA-BBBB-CCCC-DDDD");
  expect(codeOf(answer)).toBe("INVALID_CREDENTIALS");
  expect(await auditCount(a.orgId, "mfa_failed")).toBe(failedBefore + 1);
});

test("an operator turns 2FA off for a person who lost their app and recovery codes, ending their sessions", async () => {
  const member = a.members.member; // enrolled by the first test
  expect(codeOf(await login(member.email))).toBe("MFA_REQUIRED");
  const reset = () => query<{ reset: boolean }>(fx.db.name, "select app_admin.reset_mfa($1) as reset", [member.email.toUpperCase()]);
  expect(await reset()).toEqual([{ reset: true }]);
  expect(codeOf(await fx.gql(member.accessToken, "{ currentUser { email } }"))).toBe("UNAUTHENTICATED");
  expect(codeOf(await login(member.email))).toBeNull();
  expect(await reset()).toEqual([{ reset: false }]);
  expect(await auditCount(a.orgId, "mfa_disabled")).toBe(1);
});
