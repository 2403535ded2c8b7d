// Managing members through GraphQL: the owner/admin rules, the last-owner rule, cross-organization ids answering
// like nonexistent ones, and changes applying to the member's very next request.
import { randomUUID } from "node:crypto";
import { query } from "../support/database.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, membershipIdOf, type Tenant } from "../support/tenants.ts";
import type { MemberRole } from "../../lib/tokens.ts";

const fx = useQuireServer();

const { gql } = fx;
const membershipOf = (t: Tenant, role: MemberRole) => membershipIdOf(fx.db, t, role);
const changeRole = (token: string, membershipId: string, role: string) =>
  gql(token, "mutation ($id: UUID!, $role: MembershipRole!) { changeMemberRole(input: { membershipId: $id, role: $role }) { result { role } } }", {
    id: membershipId,
    role,
  });
const remove = (token: string, membershipId: string) =>
  gql(token, "mutation ($id: UUID!) { removeMember(input: { membershipId: $id }) { result { rowId } } }", { id: membershipId });
const roleIs = async (t: Tenant, role: MemberRole) =>
  (await query<{ role: string }>(fx.db.name, "select role from app_public.memberships where id = $1", [await membershipOf(t, role)], "root"))[0]?.role;

describe("changeMemberRole", () => {
  test("an admin changes a member's role, which applies to the member's next request", async () => {
    const t = await createTenant(fx.db, "Roles");
    const memberToken = t.members.member.accessToken;
    const rename = () =>
      gql(memberToken, 'mutation ($id: UUID!) { updateOrganization(input: { rowId: $id, patch: { name: "Renamed" } }) { organization { name } } }', {
        id: t.orgId,
      });
    // PostGraphile V5 answers an update that RLS filtered out with a null row rather than an error.
    expect(await rename()).toEqual({ data: { updateOrganization: { organization: null } } });
    const body = await changeRole(t.members.admin.accessToken, await membershipOf(t, "member"), "admin");
    expect(body).toEqual({ data: { changeMemberRole: { result: { role: "admin" } } } });
    expect((await rename()).data).toEqual({ updateOrganization: { organization: { name: "Renamed" } } });
  });

  test.each([
    ["an admin changing an owner", "admin", "owner", "member"],
    ["an admin making someone an owner", "admin", "viewer", "owner"],
    ["a member changing anyone", "member", "viewer", "admin"],
    ["a viewer changing anyone", "viewer", "member", "viewer"],
  ] as const)("%s is FORBIDDEN and changes nothing", async (_label, actor, target, newRole) => {
    const t = await createTenant(fx.db, "Forbidden");
    expect(codeOf(await changeRole(t.members[actor].accessToken, await membershipOf(t, target), newRole))).toBe("FORBIDDEN");
    expect(await roleIs(t, target)).toBe(target);
  });

  test("the last owner cannot be demoted; with a second owner, they can", async () => {
    const t = await createTenant(fx.db, "Last Owner");
    const ownerMembership = await membershipOf(t, "owner");
    expect(codeOf(await changeRole(t.members.owner.accessToken, ownerMembership, "admin"))).toBe("FORBIDDEN");
    expect(codeOf(await changeRole(t.members.owner.accessToken, await membershipOf(t, "admin"), "owner"))).toBeNull();
    expect(codeOf(await changeRole(t.members.owner.accessToken, ownerMembership, "admin"))).toBeNull();
    expect(await roleIs(t, "owner")).toBe("admin");
  });

  test("another organization's membership answers exactly like a nonexistent one", async () => {
    const a = await createTenant(fx.db, "Cross A");
    const b = await createTenant(fx.db, "Cross B");
    const cross = await changeRole(a.members.owner.accessToken, await membershipOf(b, "viewer"), "admin");
    const missing = await changeRole(a.members.owner.accessToken, randomUUID(), "admin");
    expect(cross).toEqual(missing);
    expect(codeOf(cross)).toBe("NOT_FOUND");
    expect(await roleIs(b, "viewer")).toBe("viewer");
  });
});

describe("removeMember", () => {
  test("an admin removes a member, whose token stops working at once", async () => {
    const t = await createTenant(fx.db, "Remove");
    expect(codeOf(await remove(t.members.admin.accessToken, await membershipOf(t, "member")))).toBeNull();
    expect(codeOf(await gql(t.members.member.accessToken, "{ currentUser { email } }"))).toBe("UNAUTHENTICATED");
    const [session] = await query(fx.db.name, "select revoked_reason from app_private.sessions where id = $1", [t.members.member.sessionId], "root");
    expect(session).toEqual({ revoked_reason: "removed from organization" });
  });

  test("an admin cannot remove an owner; a member cannot remove anyone else; anyone may leave", async () => {
    const t = await createTenant(fx.db, "Remove Rules");
    expect(codeOf(await remove(t.members.admin.accessToken, await membershipOf(t, "owner")))).toBe("FORBIDDEN");
    expect(codeOf(await remove(t.members.member.accessToken, await membershipOf(t, "viewer")))).toBe("FORBIDDEN");
    expect(codeOf(await remove(t.members.viewer.accessToken, await membershipOf(t, "viewer")))).toBeNull();
    expect(await roleIs(t, "owner")).toBe("owner");
  });

  test("the last owner cannot leave", async () => {
    const t = await createTenant(fx.db, "Last Leave");
    expect(codeOf(await remove(t.members.owner.accessToken, await membershipOf(t, "owner")))).toBe("FORBIDDEN");
    expect(await roleIs(t, "owner")).toBe("owner");
  });

  test("another organization's membership answers exactly like a nonexistent one", async () => {
    const a = await createTenant(fx.db, "Remove Cross A");
    const b = await createTenant(fx.db, "Remove Cross B");
    const cross = await remove(a.members.owner.accessToken, await membershipOf(b, "member"));
    expect(cross).toEqual(await remove(a.members.owner.accessToken, randomUUID()));
    expect(codeOf(cross)).toBe("NOT_FOUND");
    expect(await roleIs(b, "member")).toBe("member");
  });
});

describe("seeing people", () => {
  // server/colleagues-plugin.ts reads the users root connection through memberships; RLS still decides.
  test("the users root connection lists the organization's members (the caller among them) and nobody else, with totalCount", async () => {
    const a = await createTenant(fx.db, "People A");
    const b = await createTenant(fx.db, "People B");
    const body = await gql(a.members.viewer.accessToken, "{ users(first: 10, orderBy: EMAIL_ASC) { totalCount nodes { email } } }");
    expect(body.data).toEqual({
      users: { totalCount: 4, nodes: ["admin", "member", "owner", "viewer"].map((role) => ({ email: `${role}@${a.slug}.example` })) },
    });
    // A person of B who joins A shows up in A's list; B's other people never do.
    await query(fx.db.name, "insert into app_public.memberships (org_id, user_id, role) values ($1, $2, 'viewer')", [a.orgId, b.members.owner.userId], "root");
    const after = await gql(a.members.viewer.accessToken, "{ users { totalCount nodes { email } } }");
    expect((after.data!.users as { totalCount: number }).totalCount).toBe(5);
    expect(JSON.stringify(after.data)).toContain(b.members.owner.email);
    expect(JSON.stringify(after.data)).not.toContain(b.members.admin.email);
  });
});
