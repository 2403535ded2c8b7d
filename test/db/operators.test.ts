// The operator functions of app_admin, as an operator uses them from psql connected as the owner.
import bcrypt from "bcrypt";
import { createTestDatabase, query, roles, type TestDatabase } from "../support/database.ts";
import { createTenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

test("create_organization makes the organization and its first owner, with a bcrypt hash the server verifies", async () => {
  const [org] = await query<{ slug: string; tier: string }>(
    db.name,
    "select slug, tier from app_admin.create_organization('Wayne Enterprises', 'Bruce@Wayne.example', 'Bruce Wayne', 'a long passphrase')",
  );
  expect(org).toEqual({ slug: "wayne-enterprises", tier: "free" });
  const [secret] = await query<{ password_hash: string; role: string }>(
    db.name,
    `select s.password_hash, m.role from app_public.users u join app_private.user_secrets s on s.user_id = u.id
       join app_public.memberships m on m.user_id = u.id where u.email = 'bruce@wayne.example'`,
    [],
    "root",
  );
  expect(secret!.role).toBe("owner");
  expect(secret!.password_hash).toMatch(/^\$2a\$12\$/);
  expect(await bcrypt.compare("a long passphrase", secret!.password_hash)).toBe(true);
});

test("add_user adds a new or existing person; set_tier and list_organizations report it", async () => {
  await query(db.name, "select app_admin.create_organization('Stark', 'tony@stark.example', 'Tony', 'a long passphrase')");
  await query(db.name, "select app_admin.add_user('stark', 'pepper@stark.example', 'Pepper', 'admin', 'another passphrase')");
  await query(db.name, "select app_admin.add_user('stark', 'bruce@wayne.example', 'ignored', 'viewer')"); // existing account
  await query(db.name, "select app_admin.set_tier('stark', 'premium')");
  const rows = await query(db.name, "select slug, tier, is_active, members::int, owners::int from app_admin.list_organizations() where slug = 'stark'");
  expect(rows).toEqual([{ slug: "stark", tier: "premium", is_active: true, members: 3, owners: 1 }]);
  await expect(query(db.name, "select app_admin.add_user('nope', 'x@y.example', 'X', 'member', 'a long passphrase')")).rejects.toMatchObject({ code: "NTFND" });
  await expect(query(db.name, "select app_admin.add_user('stark', 'new@stark.example', 'New', 'member')")).rejects.toMatchObject({ code: "BADIN" });
});

test("deactivating an organization ends its sessions; revoke_user_sessions ends a person's", async () => {
  const t = await createTenant(db, "Ops");
  await query(db.name, "select app_admin.set_organization_active($1, false)", [t.slug]);
  const [{ live }] = (await query<{ live: number }>(
    db.name,
    "select count(*)::int as live from app_private.sessions where org_id = $1 and revoked_at is null",
    [t.orgId],
    "root",
  )) as [{ live: number }];
  expect(live).toBe(0);
  await query(db.name, "select app_admin.set_organization_active($1, true)", [t.slug]);
  const u = await createTenant(db, "Ops Two");
  const [{ ended }] = (await query<{ ended: number }>(db.name, "select app_admin.revoke_user_sessions($1) as ended", [u.members.admin.email])) as [
    { ended: number },
  ];
  expect(ended).toBe(1);
});

test("the owner in psql is held to RLS: tenant rows are reached only through these functions", async () => {
  await createTenant(db, "Hidden");
  const [{ n }] = (await query<{ n: number }>(db.name, "select count(*)::int as n from app_public.organizations")) as [{ n: number }];
  expect(n).toBe(0);
});

test("no API role may call an app_admin function", async () => {
  const rows = await query<{ role: string; ok: boolean }>(
    db.name,
    `select r as role, bool_or(has_function_privilege(r, p.oid, 'execute')) as ok
       from pg_proc p cross join unnest($1::text[]) as r
      where p.pronamespace = 'app_admin'::regnamespace group by r order by r`,
    [[roles.authenticator, roles.authenticated, roles.anonymous]],
    "root",
  );
  expect(rows).toEqual([
    { role: roles.anonymous, ok: false },
    { role: roles.authenticated, ok: false },
    { role: roles.authenticator, ok: false },
  ]);
});
