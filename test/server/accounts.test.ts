// Passwords and invitations through GraphQL: changing a password, resetting it by emailed token, inviting someone
// and accepting with a new or an existing account.
import { randomBytes } from "node:crypto";
import { query, roles } from "../support/database.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, fixturePassword } from "../support/tenants.ts";

const newPassword = "a brand new passphrase";
const fx = useQuireServer({ env: { BCRYPT_COST: "10", APP_URL: "https://app.example.com/" } });

const gql = async (text: string, variables: Record<string, unknown> = {}, token?: string) => (await fx.app.graphql(text, variables, token)).body;
const login = async (email: string, password: string) =>
  gql("mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken organization { slug } } }", { e: email, p: password });
const whoAmI = (token: string) => gql("{ currentUser { email } }", {}, token);
/** The reset emails queued for an address: send_email jobs naming outbox rows for that person (never a token). */
const queuedEmails = (to: string) =>
  query<{ payload: { outboxId: string } }>(
    fx.db.name,
    `select j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
       join app_private.mail_outbox o on o.id = (j.payload->>'outboxId')::uuid join app_public.users u on u.id = o.user_id
      where t.identifier = 'send_email' and u.email = $1 order by j.id`,
    [to],
    "root",
  );
/** What send_email does before sending: mints a token for a queued email (here one the test chose). */
const mintFor = async (outboxId: string) => {
  const token = randomBytes(32).toString("base64url");
  const [mail] = await query<{ kind: string; recipient: string }>(
    fx.db.name,
    "select kind, recipient from app_private.prepare_email($1, sha256(convert_to($2, 'UTF8')))",
    [outboxId, token],
    roles.authenticator,
  );
  return { token, mail };
};
const tokenIn = (text: string, path: string) => new RegExp(`https://app\\.example\\.com/${path}\\?token=([A-Za-z0-9_-]+)`).exec(text)?.[1];

describe("changePassword", () => {
  test("needs the current password, refuses a weak new one, then ends the other sessions only", async () => {
    const t = await createTenant(fx.db, "Change");
    const me = t.members.member;
    const other = (await login(me.email, fixturePassword)).data!.login as { accessToken: string };
    const change = (current: string, next: string) =>
      gql(
        "mutation ($c: String!, $n: String!) { changePassword(input: { currentPassword: $c, newPassword: $n }) { otherSessionsEnded } }",
        { c: current, n: next },
        me.accessToken,
      );
    expect(codeOf(await change("wrong password", newPassword))).toBe("INVALID_CREDENTIALS");
    expect(codeOf(await change(fixturePassword, "password"))).toBe("BAD_INPUT");
    expect((await change(fixturePassword, newPassword)).data).toEqual({ changePassword: { otherSessionsEnded: 1 } });
    expect((await whoAmI(me.accessToken)).data).toEqual({ currentUser: { email: me.email } });
    expect(codeOf(await whoAmI(other.accessToken))).toBe("UNAUTHENTICATED");
    expect(codeOf(await login(me.email, fixturePassword))).toBe("INVALID_CREDENTIALS");
    expect(codeOf(await login(me.email, newPassword))).toBeNull();
  });
});

describe("password reset", () => {
  const request = (email: string) => gql("mutation ($e: String!) { requestPasswordReset(input: { email: $e }) { success } }", { e: email });
  const reset = (token: string, password: string) =>
    gql("mutation ($t: String!, $p: String!) { resetPassword(input: { token: $t, newPassword: $p }) { success } }", { t: token, p: password });

  test("answers the same for any address, and emails a one-time link only to an existing account", async () => {
    const t = await createTenant(fx.db, "Reset");
    const me = t.members.viewer;
    expect(await request("nobody@nowhere.example")).toEqual({ data: { requestPasswordReset: { success: true } } });
    expect(await queuedEmails("nobody@nowhere.example")).toEqual([]);
    expect(await request(me.email.toUpperCase())).toEqual({ data: { requestPasswordReset: { success: true } } });
    const [email] = await queuedEmails(me.email);
    expect(Object.keys(email!.payload)).toEqual(["outboxId"]);
    const { token, mail } = await mintFor(email!.payload.outboxId);
    expect(mail).toEqual({ kind: "password_reset", recipient: me.email });
    const [stored] = await query<{ n: number }>(
      fx.db.name,
      "select count(*)::int as n from app_private.password_reset_tokens where token_hash = sha256(convert_to($1, 'UTF8'))",
      [token],
      "root",
    );
    expect(stored).toEqual({ n: 1 });

    expect(codeOf(await reset(token, "12345678"))).toBe("BAD_INPUT");
    expect(await reset(token, newPassword)).toEqual({ data: { resetPassword: { success: true } } });
    expect(codeOf(await whoAmI(me.accessToken))).toBe("UNAUTHENTICATED"); // every session ended
    expect(codeOf(await login(me.email, newPassword))).toBeNull();
    expect(codeOf(await reset(token, "yet another passphrase"))).toBe("NOT_FOUND"); // one time only
  });

  test("at most three live links per person, so nobody can flood an inbox", async () => {
    const t = await createTenant(fx.db, "Flood");
    for (let i = 0; i < 5; i++) await request(t.members.admin.email);
    expect(await queuedEmails(t.members.admin.email)).toHaveLength(3);
  });

  test("at most three live links per person, however many requests arrive at once", async () => {
    const t = await createTenant(fx.db, "Flood Parallel");
    await Promise.all(Array.from({ length: 10 }, () => request(t.members.member.email)));
    expect(await queuedEmails(t.members.member.email)).toHaveLength(3);
  });

  test("an operator can produce a link from psql", async () => {
    const t = await createTenant(fx.db, "Operator Link");
    const [{ link }] = (await query<{ link: string }>(fx.db.name, "select app_admin.password_reset_link($1, 'https://fx.app.example.com') as link", [
      t.members.owner.email,
    ])) as [{ link: string }];
    const token = /token=([0-9a-f]{64})$/.exec(link)![1]!;
    expect(await reset(token, newPassword)).toEqual({ data: { resetPassword: { success: true } } });
  });
});

describe("invitations", () => {
  const invite = (token: string, email: string, role = "member") =>
    gql(
      "mutation ($e: String!, $r: MembershipRole!) { inviteMember(input: { email: $e, role: $r }) { inviteLink invitation { rowId email role expiresAt } } }",
      { e: email, r: role },
      token,
    );
  const accept = (input: Record<string, unknown>, token?: string) =>
    gql(
      "mutation ($input: AcceptInvitationInput!) { acceptInvitation(input: $input) { accessToken user { email fullName } organization { slug } } }",
      { input },
      token,
    );

  test("an admin invites a new person, who accepts with a new account and lands in the organization", async () => {
    const t = await createTenant(fx.db, "Invite");
    const sent = await invite(t.members.admin.accessToken, " New.Person@Example.com ", "viewer");
    const { inviteLink, invitation } = sent.data!.inviteMember as { inviteLink: string; invitation: { email: string; role: string } };
    expect(invitation).toMatchObject({ email: "new.person@example.com", role: "viewer" });
    const token = tokenIn(inviteLink, "accept-invitation")!; // no SMTP in tests: the link comes back to the admin
    expect(codeOf(await accept({ token, password: "short", fullName: "New Person" }))).toBe("BAD_INPUT");
    const accepted = await accept({ token, password: newPassword, fullName: "New Person" });
    expect(accepted.data!.acceptInvitation).toMatchObject({
      user: { email: "new.person@example.com", fullName: "New Person" },
      organization: { slug: t.slug },
    });
    const [membership] = await query(
      fx.db.name,
      "select m.role from app_public.memberships m join app_public.users u on u.id = m.user_id where u.email = 'new.person@example.com' and m.org_id = $1",
      [t.orgId],
      "root",
    );
    expect(membership).toEqual({ role: "viewer" });
    expect(codeOf(await accept({ token, password: newPassword, fullName: "Again" }))).toBe("NOT_FOUND");
  });

  test("an existing account joins with its password, or by being signed in as it", async () => {
    const host = await createTenant(fx.db, "Host");
    const guest = await createTenant(fx.db, "Guest");
    const first = (await invite(host.members.owner.accessToken, guest.members.viewer.email)).data!.inviteMember as { inviteLink: string };
    const token = tokenIn(first.inviteLink, "accept-invitation")!;
    expect(codeOf(await accept({ token, password: "not my password" }))).toBe("INVALID_CREDENTIALS");
    expect(codeOf(await accept({ token }, guest.members.admin.accessToken))).toBe("INVALID_CREDENTIALS"); // signed in as someone else
    expect((await accept({ token, password: fixturePassword })).data!.acceptInvitation).toMatchObject({ organization: { slug: host.slug } });

    const second = (await invite(host.members.owner.accessToken, guest.members.member.email)).data!.inviteMember as { inviteLink: string };
    const signedIn = await accept({ token: tokenIn(second.inviteLink, "accept-invitation")! }, guest.members.member.accessToken);
    expect(signedIn.data!.acceptInvitation).toMatchObject({ user: { email: guest.members.member.email }, organization: { slug: host.slug } });
  });

  test.each([
    ["a member inviting anyone", "FORBIDDEN", "member", "someone@example.com", "member"],
    ["an admin inviting an owner", "FORBIDDEN", "admin", "boss@example.com", "owner"],
    ["inviting a current member", "CONFLICT", "owner", "VIEWER", "member"],
    ["inviting a malformed address", "BAD_INPUT", "owner", "not-an-email", "member"],
  ] as const)("%s is refused with %s", async (_label, code, actor, email, role) => {
    const t = await createTenant(fx.db, "Refuse Invite");
    const address = email === "VIEWER" ? t.members.viewer.email : email;
    const [before] = await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.invitations where org_id = $1", [t.orgId], "root");
    expect(codeOf(await invite(t.members[actor].accessToken, address, role))).toBe(code);
    const [after] = await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.invitations where org_id = $1", [t.orgId], "root");
    expect(after).toEqual(before);
  });

  test("only admins and owners see the organization's invitations", async () => {
    const t = await createTenant(fx.db, "See Invites");
    const list = (token: string) => gql("{ invitations { nodes { email } } }", {}, token);
    expect((await list(t.members.admin.accessToken)).data).toEqual({ invitations: { nodes: [{ email: `invitee@${t.slug}.example` }] } });
    expect((await list(t.members.member.accessToken)).data).toEqual({ invitations: { nodes: [] } });
  });
});
