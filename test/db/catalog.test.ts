// The schema's rules, read from the catalog (DESIGN.md): these guard every table and function later migrations
// add. Each rule is first checked on the migrated schema, then shown to catch a violation planted in this file's
// own database, so none of them can pass vacuously.
import {
  apiRoleProblems,
  definerFunctionsWithoutSearchPath,
  functionsExecutableByPublic,
  objectsOwnedByApiRoles,
  privateTablesReachableByApiRoles,
  schemasCreatableByPublic,
  tablesWithoutForcedRls,
} from "../support/catalog.ts";
import { createTestDatabase, query, roles, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe("the migrated schema", () => {
  test("has the four schemas of DESIGN.md", async () => {
    const rows = await query<{ nspname: string }>(
      db.name,
      "select nspname from pg_namespace where nspname like 'app\\_%' order by 1",
    );
    expect(rows.map((r) => r.nspname)).toEqual(["app_admin", "app_hidden", "app_private", "app_public"]);
  });

  test("every app_public/app_hidden table has RLS enabled and forced", async () => {
    expect(await tablesWithoutForcedRls(db.name)).toEqual([]);
  });

  test("every security definer function pins search_path", async () => {
    expect(await definerFunctionsWithoutSearchPath(db.name)).toEqual([]);
  });

  test("no function in Quire's or graphile-worker's schemas is executable by PUBLIC", async () => {
    expect(await functionsExecutableByPublic(db.name)).toEqual([]);
  });

  test("no API role is superuser, bypasses RLS, or has the wrong login/inherit shape", async () => {
    expect(await apiRoleProblems(db.name, roles)).toEqual([]);
  });

  test("no API role owns anything", async () => {
    expect(await objectsOwnedByApiRoles(db.name, roles)).toEqual([]);
  });

  test("PUBLIC cannot create objects in any schema", async () => {
    expect(await schemasCreatableByPublic(db.name)).toEqual([]);
  });

  test("API roles cannot touch app_private or app_admin tables", async () => {
    expect(await privateTablesReachableByApiRoles(db.name, roles)).toEqual([]);
  });

  test("the owner owns every object in Quire's schemas", async () => {
    const rows = await query<{ name: string }>(
      db.name,
      `select c.oid::regclass::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname like 'app\\_%' and pg_get_userbyid(c.relowner) <> $1
       union all
       select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname like 'app\\_%' and pg_get_userbyid(p.proowner) <> $1`,
      [roles.owner],
    );
    expect(rows).toEqual([]);
  });
});

describe("each rule catches a planted violation", () => {
  test("a table without RLS, then with RLS not forced", async () => {
    await query(db.name, "create table app_public.planted_no_rls (id int primary key)");
    expect(await tablesWithoutForcedRls(db.name)).toEqual(["app_public.planted_no_rls"]);
    await query(db.name, "alter table app_public.planted_no_rls enable row level security");
    expect(await tablesWithoutForcedRls(db.name)).toEqual(["app_public.planted_no_rls"]);
    await query(db.name, "alter table app_public.planted_no_rls force row level security");
    expect(await tablesWithoutForcedRls(db.name)).toEqual([]);
    await query(db.name, "drop table app_public.planted_no_rls");
  });

  test("a security definer function without search_path", async () => {
    await query(db.name, "create function app_private.planted_definer() returns int language sql security definer as 'select 1'");
    expect(await definerFunctionsWithoutSearchPath(db.name)).toEqual(["app_private.planted_definer()"]);
    await query(db.name, "drop function app_private.planted_definer()");
  });

  test("a function executable by PUBLIC, by explicit grant and by default ACL", async () => {
    await query(db.name, "create function app_public.planted_public() returns int language sql stable as 'select 1'");
    expect(await functionsExecutableByPublic(db.name)).toEqual([]); // default privileges revoked it
    await query(db.name, "grant execute on function app_public.planted_public() to public");
    expect(await functionsExecutableByPublic(db.name)).toEqual(["app_public.planted_public()"]);
    await query(db.name, "drop function app_public.planted_public()");
    // A function made by another role than the owner does not get the owner's default privileges.
    await query(db.name, "create function app_public.planted_by_root() returns int language sql stable as 'select 1'", [], "root");
    expect(await functionsExecutableByPublic(db.name)).toEqual(["app_public.planted_by_root()"]);
    await query(db.name, "drop function app_public.planted_by_root()", [], "root");
  });

  test("an object owned by an API role", async () => {
    await query(db.name, "create function app_public.planted_owned() returns int language sql stable as 'select 1'");
    await query(db.name, `alter function app_public.planted_owned() owner to ${roles.anonymous}`, [], "root");
    expect(await objectsOwnedByApiRoles(db.name, roles)).toEqual(["function app_public.planted_owned()"]);
    await query(db.name, "drop function app_public.planted_owned()", [], "root");
  });

  test("an API role given BYPASSRLS, and an authenticator that inherits", async () => {
    // Roles are cluster-wide: revert at once (global-setup's bootstrap also resets them on the next run).
    try {
      await query(db.name, `alter role ${roles.anonymous} bypassrls`, [], "root");
      await query(db.name, `alter role ${roles.authenticator} inherit`, [], "root");
      expect(await apiRoleProblems(db.name, roles)).toEqual([
        `${roles.anonymous}: bypasses RLS`,
        `${roles.authenticator}: authenticator inherits`,
      ]);
    } finally {
      await query(db.name, `alter role ${roles.anonymous} nobypassrls`, [], "root");
      await query(db.name, `alter role ${roles.authenticator} noinherit`, [], "root");
    }
    expect(await apiRoleProblems(db.name, roles)).toEqual([]);
  });

  test("a schema PUBLIC may create in", async () => {
    await query(db.name, "grant create on schema app_hidden to public");
    expect(await schemasCreatableByPublic(db.name)).toEqual(["app_hidden"]);
    await query(db.name, "revoke create on schema app_hidden from public");
  });

  test("an app_private table granted to an API role", async () => {
    await query(db.name, `grant select on app_private.worker_heartbeats to ${roles.authenticated}`);
    expect(await privateTablesReachableByApiRoles(db.name, roles)).toEqual([
      `${roles.authenticated} on app_private.worker_heartbeats`,
    ]);
    await query(db.name, `revoke select on app_private.worker_heartbeats from ${roles.authenticated}`);
  });
});
