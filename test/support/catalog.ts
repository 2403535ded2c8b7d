// Checks that read PostgreSQL's catalog and list every object breaking one of Quire's schema rules (DESIGN.md).
// Each returns the offending objects by name, so a failing test says exactly what to fix; an empty list passes.
// test/db/catalog.test.ts runs them on the migrated schema and proves each one catches a planted violation.
import { query } from "./database.ts";

export interface ApiRoles {
  readonly authenticator: string;
  readonly authenticated: string;
  readonly anonymous: string;
}

const exposedSchemas = ["app_public", "app_hidden"];
const ownSchemas = ["app_public", "app_hidden", "app_private", "app_admin"];

const names = async (database: string, sql: string, values: unknown[]) => (await query<{ name: string }>(database, sql, values)).map((r) => r.name);

/** Tables in app_public/app_hidden without row-level security enabled and forced. */
export const tablesWithoutForcedRls = (database: string) =>
  names(
    database,
    `select format('%I.%I', n.nspname, c.relname) as name
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any($1) and c.relkind in ('r', 'p')
        and not (c.relrowsecurity and c.relforcerowsecurity)
      order by 1`,
    [exposedSchemas],
  );

/** Security definer functions (in any schema but the system's) that do not pin search_path. */
export const definerFunctionsWithoutSearchPath = (database: string) =>
  names(
    database,
    `select p.oid::regprocedure::text as name
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where p.prosecdef
        and n.nspname not in ('pg_catalog', 'information_schema')
        and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) as c where c like 'search_path=%')
      order by 1`,
    [],
  );

/** Functions in Quire's and the worker's schemas that PUBLIC may execute (also by default: proacl null). */
export const functionsExecutableByPublic = (database: string) =>
  names(
    database,
    `select p.oid::regprocedure::text as name
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = any($1)
        and (p.proacl is null
             or exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
      order by 1`,
    [[...ownSchemas, "graphile_worker"]],
  );

/** API roles holding a power that would defeat RLS or grants, or with the wrong login/inherit shape. */
export const apiRoleProblems = (database: string, roles: ApiRoles) =>
  names(
    database,
    `select r.rolname || ': ' || concat_ws(', ',
              case when r.rolsuper then 'superuser' end,
              case when r.rolbypassrls then 'bypasses RLS' end,
              case when r.rolcreaterole then 'can create roles' end,
              case when r.rolcreatedb then 'can create databases' end,
              case when r.rolname = $1 and r.rolinherit then 'authenticator inherits' end,
              case when r.rolname = $1 and not r.rolcanlogin then 'authenticator cannot log in' end,
              case when r.rolname <> $1 and r.rolcanlogin then 'can log in' end) as name
       from pg_roles r
      where r.rolname = any(array[$1, $2, $3])
        and (r.rolsuper or r.rolbypassrls or r.rolcreaterole or r.rolcreatedb
             or (r.rolname = $1 and (r.rolinherit or not r.rolcanlogin))
             or (r.rolname <> $1 and r.rolcanlogin))
      order by 1`,
    [roles.authenticator, roles.authenticated, roles.anonymous],
  );

/** Anything in this database owned by an API role (an owner bypasses its own grants and can alter policies). */
export const objectsOwnedByApiRoles = (database: string, roles: ApiRoles) =>
  names(
    database,
    `with api as (select oid from pg_roles where rolname = any($1))
     select 'relation ' || c.oid::regclass::text as name from pg_class c where c.relowner in (select oid from api)
     union all
     select 'function ' || p.oid::regprocedure::text from pg_proc p where p.proowner in (select oid from api)
     union all
     select 'schema ' || n.nspname from pg_namespace n where n.nspowner in (select oid from api)
     union all
     select 'type ' || t.oid::regtype::text from pg_type t where t.typowner in (select oid from api)
     order by 1`,
    [[roles.authenticator, roles.authenticated, roles.anonymous]],
  );

/** Schemas in which PUBLIC may create objects. */
export const schemasCreatableByPublic = (database: string) =>
  names(
    database,
    `select n.nspname as name
       from pg_namespace n
      where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'
        and (exists (select 1 from aclexplode(n.nspacl) a where a.grantee = 0 and a.privilege_type = 'CREATE'))
      order by 1`,
    [],
  );

/** Tables in app_private or app_admin an API role (authenticated or anonymous) can read or write directly. */
export const privateTablesReachableByApiRoles = (database: string, roles: ApiRoles) =>
  names(
    database,
    `select r.rolname || ' on ' || c.oid::regclass::text as name
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
       cross join (select rolname from pg_roles where rolname = any($2)) r
      where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm')
        and has_table_privilege(r.rolname, c.oid, 'select, insert, update, delete, truncate')
      order by 1`,
    [
      ["app_private", "app_admin"],
      [roles.authenticated, roles.anonymous],
    ],
  );

// Tenancy invariants (DESIGN.md). A tenant table is a table in app_public/app_hidden with an org_id column.
const tenantTablesSql = `
  select c.oid, format('%I.%I', n.nspname, c.relname) as name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = any(array['app_public', 'app_hidden']) and c.relkind in ('r', 'p')
     and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)`;

/** Tenant tables, by name. */
export const tenantTables = (database: string) => names(database, `select name from (${tenantTablesSql}) t order by 1`, []);

/** Invariant 1: org_id is `uuid not null default app_public.current_org_id()` and cascades from organizations. */
export const tenantOrgIdProblems = (database: string) =>
  names(
    database,
    `select t.name || ': ' || concat_ws(', ',
              case when a.atttypid <> 'uuid'::regtype then 'org_id is not uuid' end,
              case when not a.attnotnull then 'org_id is nullable' end,
              case when coalesce(pg_get_expr(d.adbin, d.adrelid), '') <> 'app_public.current_org_id()'
                   then 'org_id does not default to app_public.current_org_id()' end,
              case when not exists (
                     select 1 from pg_constraint f
                      where f.conrelid = t.oid and f.contype = 'f' and f.confrelid = 'app_public.organizations'::regclass
                        and f.conkey = array[a.attnum] and f.confdeltype = 'c')
                   then 'org_id does not reference organizations on delete cascade' end) as name
       from (${tenantTablesSql}) t
       join pg_attribute a on a.attrelid = t.oid and a.attname = 'org_id'
       left join pg_attrdef d on d.adrelid = t.oid and d.adnum = a.attnum
      where a.atttypid <> 'uuid'::regtype or not a.attnotnull
         or coalesce(pg_get_expr(d.adbin, d.adrelid), '') <> 'app_public.current_org_id()'
         or not exists (select 1 from pg_constraint f
                         where f.conrelid = t.oid and f.contype = 'f' and f.confrelid = 'app_public.organizations'::regclass
                           and f.conkey = array[a.attnum] and f.confdeltype = 'c')
      order by 1`,
    [],
  );

/** Invariant 2: every command an API role is granted on a tenant table has a policy for it (or for ALL). */
export const tenantPolicyProblems = (database: string, roles: ApiRoles) =>
  names(
    database,
    `with grants as (
       select t.oid, t.name, cmd
         from (${tenantTablesSql}) t
         cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) as cmd
        where has_table_privilege($1, t.oid, cmd) or has_table_privilege($2, t.oid, cmd)
           or (cmd = 'UPDATE' and has_any_column_privilege($1, t.oid, 'UPDATE'))
     )
     select g.name || ': ' || lower(g.cmd) || ' is granted but has no policy' as name
       from grants g
      where not exists (
        select 1 from pg_policy p
         where p.polrelid = g.oid
           and p.polcmd in ('*', (case g.cmd when 'SELECT' then 'r' when 'INSERT' then 'a' when 'UPDATE' then 'w' else 'd' end)::"char"))
      order by 1`,
    [roles.authenticated, roles.anonymous],
  );

/** Foreign keys matching `condition` (SQL over pg_constraint `f`), as "table constraint". */
const foreignKeys = (database: string, condition: string) =>
  names(database, `select f.conrelid::regclass::text || ' ' || f.conname as name from pg_constraint f where f.contype = 'f' and ${condition} order by 1`, []);

/** SQL: the foreign key `f` pairs org_id with org_id. */
const orgIdPaired = `exists (
  select 1 from unnest(f.conkey, f.confkey) as k(src, dst)
   where (select attname from pg_attribute where attrelid = f.conrelid and attnum = k.src) = 'org_id'
     and (select attname from pg_attribute where attrelid = f.confrelid and attnum = k.dst) = 'org_id')`;

/** Invariant 3: a foreign key from one tenant table to another includes org_id on both sides. */
export const crossTenantForeignKeys = (database: string) =>
  foreignKeys(
    database,
    `f.conrelid in (select oid from (${tenantTablesSql}) t) and f.confrelid in (select oid from (${tenantTablesSql}) t) and not ${orgIdPaired}`,
  );

/** Invariant 4: every index on a tenant table leads with org_id, except the ones named in `allowed`. */
export const indexesNotLeadingWithOrgId = (database: string, allowed: readonly string[]) =>
  names(
    database,
    `select i.indexrelid::regclass::text as name
       from pg_index i
      where i.indrelid in (select oid from (${tenantTablesSql}) t)
        and (i.indkey[0] = 0
             or (select attname from pg_attribute where attrelid = i.indrelid and attnum = i.indkey[0]) <> 'org_id')
        and i.indexrelid::regclass::text <> all($1)
        -- a plain index on id alone: lookups by id (the key is (org_id, id))
        and not (not i.indisunique and i.indnatts = 1
                 and (select attname from pg_attribute where attrelid = i.indrelid and attnum = i.indkey[0]) = 'id')
      order by 1`,
    [allowed],
  );

/** Invariant 7: every tenant table's primary key is (org_id, id). */
export const tenantTablesWithoutOrgIdKey = (database: string) =>
  names(
    database,
    `select t.name from (${tenantTablesSql}) t
      where not exists (
        select 1 from pg_constraint u
         where u.conrelid = t.oid and u.contype = 'p'
           and (select array_agg(attname::text order by attname)
                  from pg_attribute where attrelid = t.oid and attnum = any(u.conkey)) = array['id', 'org_id'])
      order by 1`,
    [],
  );

/** Tenant tables (bar `except`) without the audit trigger for insert, update and delete (app_private.tg__audit). */
export const tenantTablesWithoutAudit = (database: string, except: readonly string[]) =>
  names(
    database,
    `select t.name from (${tenantTablesSql}) t
      where t.name <> all($1)
        and not exists (
          select 1 from pg_trigger g
           where g.tgrelid = t.oid and not g.tgisinternal and g.tgfoid = 'app_private.tg__audit()'::regprocedure
             and g.tgtype & 28 = 28)
      order by 1`,
    [except],
  );

// Keys a sharded PostgreSQL (Citus, distributing by org_id) accepts. Every table in Quire's schemas with an org_id
// column would be distributed (app_private's included); organizations too, by its id. The other tables are global
// (users, global templates, tiers: reference tables) or stay on the coordinator (mail_outbox, rate-limit windows).
const ownSchemasSql = `array['app_public', 'app_hidden', 'app_private', 'app_admin']`;
const shardedTablesSql = `
  select c.oid, format('%I.%I', n.nspname, c.relname) as name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = any(${ownSchemasSql}) and c.relkind in ('r', 'p')
     and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)`;
const keyHasOrgId = (rel: string, keys: string) =>
  `exists (select 1 from pg_attribute a where a.attrelid = ${rel} and a.attnum = any(${keys}) and a.attname = 'org_id')`;

/** Sharded tables without a primary key, or with a primary key, unique constraint or unique index lacking org_id. */
export const shardKeyProblems = (database: string) =>
  names(
    database,
    `select t.name || ': no primary key' as name from (${shardedTablesSql}) t
      where not exists (select 1 from pg_index i where i.indrelid = t.oid and i.indisprimary)
     union all
     select t.name || ': ' || i.indexrelid::regclass::text || ' is unique without org_id'
       from (${shardedTablesSql}) t join pg_index i on i.indrelid = t.oid
      where i.indisunique and not ${keyHasOrgId("t.oid", "i.indkey::int2[]")}
      order by 1`,
    [],
  );

/** Foreign keys between sharded tables (or into organizations) that leave out org_id, in any of Quire's schemas. */
export const unshardedForeignKeys = (database: string) =>
  foreignKeys(
    database,
    `f.conrelid in (select oid from (${shardedTablesSql}) t)
     and (f.confrelid in (select oid from (${shardedTablesSql}) t) and not ${orgIdPaired}
          or f.confrelid = 'app_public.organizations'::regclass
             and (select attname from pg_attribute where attrelid = f.conrelid and attnum = f.conkey[1]) <> 'org_id')`,
  );

/** Foreign keys on sharded tables whose key includes org_id and whose action sets NULL or the default (refused). */
export const settingForeignKeys = (database: string) =>
  foreignKeys(
    database,
    `f.conrelid in (select oid from (${shardedTablesSql}) t) and ${keyHasOrgId("f.conrelid", "f.conkey")}
     and (f.confdeltype in ('n', 'd') or f.confupdtype in ('n', 'd'))`,
  );

/** Global tables (no org_id) with a foreign key into a sharded table or organizations: a reference table cannot. */
export const globalTablesReferencingTenants = (database: string) =>
  foreignKeys(
    database,
    `(select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = f.conrelid) = any(${ownSchemasSql})
     and f.conrelid not in (select oid from (${shardedTablesSql}) t) and f.conrelid <> 'app_public.organizations'::regclass
     and (f.confrelid in (select oid from (${shardedTablesSql}) t) or f.confrelid = 'app_public.organizations'::regclass)`,
  );

/** Policies on tables of Quire's schemas with a sub-select in USING or WITH CHECK (Citus refuses them). */
export const policiesWithSubqueries = (database: string) =>
  names(
    database,
    `select format('%s: policy %s', p.polrelid::regclass, p.polname) as name
       from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any(${ownSchemasSql})
        and (coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))
            ~ '\\(\\s*SELECT\\M'
      order by 1`,
    [],
  );
