// "The caller is a member with at least this role", written once (app_private.check_role / require_role): each
// outcome of the check, and a function built on it answering each kind of caller with the codes it always had.
import { createTestDatabase, query, type TestDatabase } from "../support/database.ts";
import { beginAs, createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let tenant: Tenant;
let other: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  [tenant, other] = await Promise.all([createTenant(db, "Roles"), createTenant(db, "Elsewhere")]);
});
afterAll(async () => {
  await db?.drop();
});

/** The SQLSTATE and message a statement raised, or "ok: <value>". */
async function outcome(sql: string, values: unknown[]): Promise<string> {
  try {
    const [row] = await query<{ r: string }>(db.name, sql, values, "root");
    return `ok: ${row!.r}`;
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return `${code}: ${message}`;
  }
}

test.each([
  ["admin", "admin", "Sign in first.", "ok: admin"],
  ["owner", "admin", "Sign in first.", "ok: owner"],
  ["member", "admin", "Sign in first.", "DNIED: denied"],
  [null, "viewer", "Sign in first.", "LOGIN: Sign in first."],
  [null, "viewer", null, "DNIED: denied"],
])("check_role(%s, at least %s, signed out: %s) → %s", async (role, min, signedOut, expected) => {
  const sql = "select app_private.check_role($1::app_public.membership_role, $2, 'denied', $3) as r";
  expect(await outcome(sql, [role, min, signedOut])).toBe(expected);
});

/** What create_invitation (which requires an admin) answers the given caller, rolled back either way. */
async function invite(as: Tenant, role: "owner" | "admin" | "member" | "viewer", orgId: string): Promise<string> {
  const client = await beginAs(db.name, as.members[role], orgId);
  try {
    const { rows } = await client.query<{ email: string }>(
      "select email from app_hidden.create_invitation('new@example.test', 'member', decode(repeat('ab', 32), 'hex'), interval '1 day')",
    );
    return `ok: ${rows[0]!.email}`;
  } catch (error) {
    const { code, message } = error as { code: string; message: string };
    return `${code}: ${message}`;
  } finally {
    await client.query("rollback").catch(() => undefined);
    await client.end();
  }
}

test("a function built on require_role: admins pass, lower roles are DNIED, a caller without a membership is LOGIN", async () => {
  expect(await invite(tenant, "admin", tenant.orgId)).toBe("ok: new@example.test");
  expect(await invite(tenant, "member", tenant.orgId)).toBe("DNIED: Only admins and owners invite members.");
  expect(await invite(tenant, "viewer", tenant.orgId)).toBe("DNIED: Only admins and owners invite members.");
  // Another organization's owner, claiming this organization: no membership, so no role.
  // Another organization's owner claiming this organization is stopped before any role is read.
  expect(await invite(other, "owner", tenant.orgId)).toBe("LOGIN: Your session has ended; sign in again.");
  // So is a session whose membership was deleted underneath it (require_role's own LOGIN is the line behind that).
  await query(db.name, "delete from app_public.memberships where org_id = $1 and user_id = $2", [other.orgId, other.members.admin.userId], "root");
  expect(await invite(other, "admin", other.orgId)).toBe("LOGIN: Your session has ended; sign in again.");
  // Nothing was left behind (each call was rolled back; the fixture's own invitation is to another address).
  const rows = await query(db.name, "select 1 from app_public.invitations where email = 'new@example.test'", [], "root");
  expect(rows).toHaveLength(0);
});
