// Role and session checks that must hold until commit, tested with a forced interleaving rather than by retrying:
// the owner's demotion of a person is made and left uncommitted; the person then acts (the call waits on the
// demotion's locks, or finishes if nothing makes it wait); the demotion commits. The person's action must be
// judged by their new role. Likewise a session ended while it is used to change a password.
import pg from "pg";
import type { MemberRole } from "../../lib/tokens.ts";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, membershipIdOf, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

interface Connection {
  readonly client: pg.Client;
  readonly pid: number;
}

/** A connection with an open transaction as `member` of `t` (the API role, with their session's settings), or as the authenticator. */
async function connect(t: Tenant, member: MemberRole, asApiRole = true): Promise<Connection> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  const pid = (await client.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
  await client.query("begin");
  if (asApiRole) await client.query("select set_config('role', $1, true)", [roles.authenticated]);
  await client.query("select set_config('jwt.claims.session_id', $1, true), set_config('jwt.claims.org_id', $2, true)", [t.members[member].sessionId, t.orgId]);
  return { client, pid };
}

const membershipOf = (t: Tenant, member: MemberRole) => membershipIdOf(db, t, member);
const roleOf = async (t: Tenant, member: MemberRole) =>
  (
    await query<{ role: string }>(
      db.name,
      "select role from app_public.memberships where org_id = $1 and user_id = $2",
      [t.orgId, t.members[member].userId],
      "root",
    )
  )[0]?.role;

/**
 * Runs `first` on one connection and leaves it uncommitted; starts `second` on another; once `second` waits for a
 * lock (or has finished), commits `first`. Returns the SQLSTATE `second` failed with, or null when it succeeded
 * (then committed).
 */
async function interleave(
  first: Connection,
  firstStatement: () => Promise<unknown>,
  second: Connection,
  secondStatement: () => Promise<unknown>,
): Promise<string | null> {
  try {
    await firstStatement();
    let settled = false;
    const outcome = secondStatement()
      .then(
        () => null,
        (error: { code?: string }) => error.code ?? "unknown",
      )
      .finally(() => (settled = true));
    for (let i = 0; i < 200 && !settled; i++) {
      const [activity] = await query<{ wait_event_type: string | null }>(
        db.name,
        "select wait_event_type from pg_stat_activity where pid = $1",
        [second.pid],
        "root",
      );
      if (activity?.wait_event_type === "Lock") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await first.client.query("commit");
    const code = await outcome;
    await second.client.query(code === null ? "commit" : "rollback");
    return code;
  } finally {
    await first.client.end();
    await second.client.end();
  }
}

/** `actor` runs `statement` while the owner demotes them to `to`. */
async function underDemotion(t: Tenant, actor: MemberRole, to: MemberRole, statement: string, values: unknown[]): Promise<string | null> {
  const owner = await connect(t, "owner");
  const acting = await connect(t, actor);
  const target = await membershipOf(t, actor);
  return interleave(
    owner,
    () => owner.client.query("select app_public.change_member_role($1, $2)", [target, to]),
    acting,
    () => acting.client.query(statement, values),
  );
}

test("an admin being demoted cannot give themself the admin role back", async () => {
  const t = await createTenant(db, "Undo Demotion");
  const own = await membershipOf(t, "admin");
  expect(await underDemotion(t, "admin", "member", "select app_public.change_member_role($1, 'admin')", [own])).toBe("DNIED");
  expect(await roleOf(t, "admin")).toBe("member");
});

test("an admin being demoted cannot change another member's role", async () => {
  const t = await createTenant(db, "Demoted Changes");
  const viewer = await membershipOf(t, "viewer");
  expect(await underDemotion(t, "admin", "member", "select app_public.change_member_role($1, 'member')", [viewer])).toBe("DNIED");
  expect(await roleOf(t, "viewer")).toBe("viewer");
});

test("an admin being demoted cannot remove a member", async () => {
  const t = await createTenant(db, "Demoted Removes");
  const viewer = await membershipOf(t, "viewer");
  expect(await underDemotion(t, "admin", "member", "select app_public.remove_member($1)", [viewer])).toBe("DNIED");
  expect(await roleOf(t, "viewer")).toBe("viewer");
});

test("an admin being demoted cannot invite", async () => {
  const t = await createTenant(db, "Demoted Invites");
  const code = await underDemotion(
    t,
    "admin",
    "member",
    "select app_hidden.create_invitation('new@example.com', 'member', sha256('x'::bytea), interval '7 days')",
    [],
  );
  expect(code).toBe("DNIED");
  expect(await query(db.name, "select 1 from app_public.invitations where email = 'new@example.com'", [], "root")).toEqual([]);
});

test("an admin being demoted cannot cancel another member's job", async () => {
  const t = await createTenant(db, "Demoted Cancels");
  const asMember = await connect(t, "member");
  const [job] = (await asMember.client.query<{ id: string }>("select (app_public.summarize_document(d.id)).id from app_public.documents d limit 1")).rows;
  await asMember.client.query("commit");
  await asMember.client.end();
  expect(await underDemotion(t, "admin", "member", "select app_public.cancel_job($1)", [job!.id])).toBe("DNIED");
  expect(await query(db.name, "select status from app_public.jobs where id = $1", [job!.id], "root")).toEqual([{ status: "queued" }]);
});

test("an admin being demoted cannot disconnect an integration", async () => {
  const t = await createTenant(db, "Demoted Disconnects");
  const [integration] = await query<{ id: string }>(db.name, "select id from app_public.integrations where org_id = $1", [t.orgId], "root");
  expect(await underDemotion(t, "admin", "member", "select app_public.disconnect_integration($1)", [integration!.id])).toBe("DNIED");
  expect(await query(db.name, "select status from app_public.integrations where id = $1", [integration!.id], "root")).toEqual([{ status: "connected" }]);
});

test("a member being made a viewer cannot request a summary", async () => {
  const t = await createTenant(db, "Demoted Summarizes");
  const [before] = await query<{ n: number }>(db.name, "select count(*)::int as n from app_public.jobs where org_id = $1", [t.orgId], "root");
  expect(await underDemotion(t, "member", "viewer", "select app_public.summarize_document(d.id) from app_public.documents d limit 1", [])).toBe("DNIED");
  expect(await query(db.name, "select count(*)::int as n from app_public.jobs where org_id = $1", [t.orgId], "root")).toEqual([before]);
});

test("a session being logged out cannot change the password", async () => {
  const t = await createTenant(db, "Logged Out");
  const logout = await connect(t, "member", false);
  const change = await connect(t, "member", false);
  const [before] = await query<{ password_hash: string }>(
    db.name,
    "select password_hash from app_private.user_secrets where user_id = $1",
    [t.members.member.userId],
    "root",
  );
  const newHash = "$2b$10$" + "a".repeat(53);
  const code = await interleave(
    logout,
    () => logout.client.query("select app_private.revoke_session($1, 'logout')", [t.members.member.sessionId]),
    change,
    () => change.client.query("select app_private.change_password($1, $2)", [t.members.member.sessionId, newHash]),
  );
  expect(code).toBe("LOGIN");
  expect(await query(db.name, "select password_hash from app_private.user_secrets where user_id = $1", [t.members.member.userId], "root")).toEqual([before]);
});
