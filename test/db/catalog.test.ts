// The schema's rules, read from the catalog (DESIGN.md): these guard every table and function later migrations
// add. Each rule is first checked on the migrated schema, then shown to catch a violation planted in this file's
// own database, so none of them can pass vacuously.
import {
  apiRoleProblems,
  crossTenantForeignKeys,
  globalTablesReferencingTenants,
  indexesNotLeadingWithOrgId,
  policiesWithSubqueries,
  settingForeignKeys,
  shardKeyProblems,
  tenantOrgIdProblems,
  tenantPolicyProblems,
  tenantTables,
  tenantTablesWithoutAudit,
  tenantTablesWithoutOrgIdKey,
  unshardedForeignKeys,
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
    const rows = await query<{ nspname: string }>(db.name, "select nspname from pg_namespace where nspname like 'app\\_%' order by 1");
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

/** Indexes on tenant tables allowed not to lead with org_id, each for a documented reason. */
const byPersonIndexes = ["app_public.memberships_user_id_idx"]; // sign-in finds a person's memberships
/** Invariant 1's one exception: the audit log outlives its organization (no cascade); only triggers write it. */
const orgIdExceptions = [
  "app_public.audit_events: org_id does not default to app_public.current_org_id(), org_id does not reference organizations on delete cascade",
];
/**
 * Tenant tables whose changes are not audited: the live-events outbox repeats audited changes; the log itself; the
 * chunks, cut by the worker from documents whose changes are audited.
 */
const unauditedTables = ["app_public.live_events", "app_public.audit_events", "app_public.document_chunks"];

describe("tenancy invariants", () => {
  test("the tenant tables are found (so the rules below are not vacuous)", async () => {
    expect(await tenantTables(db.name)).toEqual(expect.arrayContaining(["app_public.memberships"]));
  });

  test("1: org_id is uuid not null, defaults to current_org_id(), cascades from organizations", async () => {
    expect(await tenantOrgIdProblems(db.name)).toEqual(orgIdExceptions);
  });

  test("2: every granted command has a policy", async () => {
    expect(await tenantPolicyProblems(db.name, roles)).toEqual([]);
  });

  test("3: foreign keys between tenant tables include org_id", async () => {
    expect(await crossTenantForeignKeys(db.name)).toEqual([]);
  });

  test("4: indexes on tenant tables lead with org_id", async () => {
    expect(await indexesNotLeadingWithOrgId(db.name, byPersonIndexes)).toEqual([]);
  });

  test("7: tenant tables have the primary key (org_id, id)", async () => {
    expect(await tenantTablesWithoutOrgIdKey(db.name)).toEqual([]);
  });

  test("every tenant table's changes are audited (the outbox and the log itself aside)", async () => {
    expect(await tenantTablesWithoutAudit(db.name, unauditedTables)).toEqual([]);
  });
});

// What a sharded PostgreSQL (Citus, distributing by org_id) refuses; docs/scaling.md says what remains beyond keys.
describe("keys a sharded PostgreSQL accepts", () => {
  test("every table with org_id has a primary key, and every unique key includes org_id", async () => {
    expect(await shardKeyProblems(db.name)).toEqual([]);
  });

  test("foreign keys between tables with org_id include it (in every schema)", async () => {
    expect(await unshardedForeignKeys(db.name)).toEqual([]);
  });

  test("no foreign key that includes org_id sets NULL or a default on delete or update", async () => {
    expect(await settingForeignKeys(db.name)).toEqual([]);
  });

  test("global tables (users, templates, tiers, the outbox) hold no foreign key into tenant data", async () => {
    expect(await globalTablesReferencingTenants(db.name)).toEqual([]);
  });

  test("no policy has a sub-select", async () => {
    expect(await policiesWithSubqueries(db.name)).toEqual([]);
  });
});

describe("what shared subscription reads rely on", () => {
  // server/shared-reads.ts runs the re-reads of subscribers of one organization and role in one transaction: that is
  // only right while no policy an API role reads through depends on who the user is beyond organization and role.
  test("the only read policy that names the user is users' own (self or colleague: the same set for every member)", async () => {
    const rows = await query<{ table: string; policy: string }>(
      db.name,
      `select p.tablename as table, p.policyname as policy from pg_policies p
        where p.schemaname = 'app_public' and p.cmd in ('SELECT', 'ALL') and $1 = any (p.roles)
          and (coalesce(p.qual, '') ~ '(current_user_id|jwt\\.claims\\.user_id|session_id)')
        order by 1, 2`,
      [roles.authenticated],
      "root",
    );
    // A person's own questions, answers and citations name the user too: shared reads never share their queries.
    expect(rows).toEqual([
      { table: "answer_citations", policy: "select_own" },
      { table: "answers", policy: "select_own" },
      { table: "questions", policy: "select_own" },
      { table: "users", policy: "select_self_and_colleagues" },
    ]);
  });
});

describe("each rule catches a planted violation", () => {
  test("a tenant table breaking invariants 1, 2, 3, 4 and 7, keyed by id alone", async () => {
    await query(
      db.name,
      `create table app_hidden.planted_notes (
         id uuid primary key default gen_random_uuid(),
         org_id uuid,
         membership_org uuid,
         membership_id uuid,
         body text,
         foreign key (membership_org, membership_id) references app_public.memberships (org_id, id));
       create index planted_notes_body_idx on app_hidden.planted_notes (body);
       alter table app_hidden.planted_notes enable row level security;
       alter table app_hidden.planted_notes force row level security;
       create policy per_row on app_hidden.planted_notes for select to ${roles.authenticated}
         using (org_id = app_public.current_org_id());
       grant select, insert on app_hidden.planted_notes to ${roles.authenticated};`,
    );
    expect(await tenantOrgIdProblems(db.name)).toEqual([
      "app_hidden.planted_notes: org_id is nullable, org_id does not default to app_public.current_org_id(), org_id does not reference organizations on delete cascade",
      ...orgIdExceptions,
    ]);
    expect(await tenantPolicyProblems(db.name, roles)).toEqual(["app_hidden.planted_notes: insert is granted but has no policy"]);
    expect(await crossTenantForeignKeys(db.name)).toEqual(["app_hidden.planted_notes planted_notes_membership_org_membership_id_fkey"]);
    expect(await indexesNotLeadingWithOrgId(db.name, byPersonIndexes)).toEqual(["app_hidden.planted_notes_body_idx", "app_hidden.planted_notes_pkey"]);
    expect(await shardKeyProblems(db.name)).toEqual(["app_hidden.planted_notes: app_hidden.planted_notes_pkey is unique without org_id"]);
    expect(await tenantTablesWithoutOrgIdKey(db.name)).toEqual(["app_hidden.planted_notes"]);
    expect(await tenantTablesWithoutAudit(db.name, unauditedTables)).toEqual(["app_hidden.planted_notes"]);
    await query(db.name, "drop table app_hidden.planted_notes");
  });

  test("keys a sharded PostgreSQL refuses, a global table keyed into tenant data, a policy with a sub-select", async () => {
    await query(
      db.name,
      `create table app_private.planted_shards (
         org_id uuid not null,
         id uuid not null,
         membership_id uuid,
         token bytea unique,
         foreign key (org_id, membership_id) references app_public.memberships (org_id, id) on delete set null (membership_id));
       create table app_private.planted_keyless (org_id uuid not null, note text);
       create table app_private.planted_global (
         id uuid primary key,
         tenant uuid,
         document_id uuid,
         foreign key (tenant, document_id) references app_public.documents (org_id, id) on delete cascade);
       create table app_private.planted_lookup (org_id uuid not null, id uuid primary key,
         tenant uuid references app_public.organizations);
       alter table app_private.planted_shards enable row level security;
       create policy colleagues on app_private.planted_shards to ${roles.authenticated}
         using (membership_id in (select m.id from app_public.memberships m));`,
    );
    expect(await shardKeyProblems(db.name)).toEqual([
      "app_private.planted_keyless: no primary key",
      "app_private.planted_lookup: app_private.planted_lookup_pkey is unique without org_id",
      "app_private.planted_shards: app_private.planted_shards_token_key is unique without org_id",
      "app_private.planted_shards: no primary key",
    ]);
    expect(await unshardedForeignKeys(db.name)).toEqual(["app_private.planted_lookup planted_lookup_tenant_fkey"]);
    expect(await settingForeignKeys(db.name)).toEqual(["app_private.planted_shards planted_shards_org_id_membership_id_fkey"]);
    expect(await globalTablesReferencingTenants(db.name)).toEqual(["app_private.planted_global planted_global_tenant_document_id_fkey"]);
    expect(await policiesWithSubqueries(db.name)).toEqual(["app_private.planted_shards: policy colleagues"]);
    await query(db.name, "drop table app_private.planted_shards, app_private.planted_keyless, app_private.planted_global, app_private.planted_lookup");
  });

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
      expect(await apiRoleProblems(db.name, roles)).toEqual([`${roles.anonymous}: bypasses RLS`, `${roles.authenticator}: authenticator inherits`]);
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
    expect(await privateTablesReachableByApiRoles(db.name, roles)).toEqual([`${roles.authenticated} on app_private.worker_heartbeats`]);
    await query(db.name, `revoke select on app_private.worker_heartbeats from ${roles.authenticated}`);
  });
});
