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

const names = async (database: string, sql: string, values: unknown[]) =>
  (await query<{ name: string }>(database, sql, values)).map((r) => r.name);

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
