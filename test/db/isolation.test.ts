// Tenant isolation, generated from the catalog: for every table in app_public/app_hidden, every command and every
// role of organization A (and anonymous), acting on organization B's rows through SQL as the API role. Cross-org
// cells must read nothing, change nothing, and fail exactly as the same statement on a nonexistent id fails.
// A new tenant table (one with org_id) is covered without editing this file; a new global table must be given a
// scope below, or the suite fails.
import { randomUUID } from "node:crypto";
import pg from "pg";
import { tenantTables } from "../support/catalog.ts";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";
import type { MemberRole } from "../../lib/tokens.ts";

let db: TestDatabase;
let a: Tenant;
let b: Tenant;
let tables: string[];

/** Which rows of a table belong to organization $1, for tables without org_id. */
const globalScopes: Record<string, string> = {
  "app_public.organizations": "id = $1",
  "app_public.users": "id in (select m.user_id from app_public.memberships m where m.org_id = $1)",
};
/** Tables every organization reads by design (no organization owns their rows); API roles must not write them. */
const sharedTables = ["app_public.global_templates", "app_public.global_template_versions"];
const scopeOf = (table: string, tenantTableNames: readonly string[]) => {
  if (tenantTableNames.includes(table)) return "org_id = $1";
  const scope = globalScopes[table];
  if (!scope) throw new Error(`${table} has no org_id: give it a scope in isolation.test.ts (globalScopes)`);
  return scope;
};

type Actor = MemberRole | "anonymous";
const actors: readonly Actor[] = ["owner", "admin", "member", "viewer", "anonymous"];
const commands = ["select", "update", "delete", "insert"] as const;

type Outcome = { rows: number } | { error: string };

/** Runs `sql` as `actor` of tenant A, as PostGraphile would run it, and always rolls back. */
async function asActor(actor: Actor, sql: string, values: unknown[]): Promise<Outcome> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    if (actor === "anonymous") {
      await client.query("select set_config('role', $1, true)", [roles.anonymous]);
    } else {
      const member = a.members[actor];
      await client.query(
        `select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true),
                set_config('jwt.claims.org_id', $3, true), set_config('jwt.claims.user_id', $4, true)`,
        [roles.authenticated, member.sessionId, a.orgId, member.userId],
      );
    }
    const result = await client.query(sql, values);
    return { rows: result.command === "SELECT" ? Number(result.rows[0]?.count ?? result.rowCount) : (result.rowCount ?? 0) };
  } catch (error) {
    return { error: (error as { code?: string }).code ?? "unknown" };
  } finally {
    await client.query("rollback").catch(() => undefined);
    await client.end();
  }
}

/** The first column `actor`'s role may update, else `id` (the update then fails on privileges). */
async function updatableColumn(table: string, actor: Actor): Promise<string> {
  const role = actor === "anonymous" ? roles.anonymous : roles.authenticated;
  const rows = await query<{ attname: string }>(
    db.name,
    `select attname from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped
        and has_column_privilege($2, attrelid, attnum, 'UPDATE') order by attnum limit 1`,
    [table, role],
    "root",
  );
  return rows[0]?.attname ?? "id";
}

/** A digest of organization `orgId`'s rows of `table`, read past RLS: unchanged means untouched. */
async function digestOf(table: string, orgId: string): Promise<string> {
  const [row] = await query<{ digest: string | null; n: number }>(
    db.name,
    `select md5(string_agg(t::text, ',' order by t::text)) as digest, count(*)::int as n from ${table} t where ${scopeOf(table, tenantTableNames)}`,
    [orgId],
    "root",
  );
  return `${row!.n}:${row!.digest}`;
}

let tenantTableNames: string[] = [];
const digestsBefore = new Map<string, string>();

beforeAll(async () => {
  db = await createTestDatabase();
  a = await createTenant(db, "Alpha");
  b = await createTenant(db, "Bravo");
  tenantTableNames = await tenantTables(db.name);
  tables = (
    await query<{ name: string }>(
      db.name,
      `select format('%I.%I', n.nspname, c.relname) as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('app_public', 'app_hidden') and c.relkind in ('r', 'p') order by 1`,
    )
  )
    .map((r) => r.name)
    .filter((name) => !sharedTables.includes(name));
  for (const table of tables) digestsBefore.set(table, await digestOf(table, b.orgId));
}, 60_000);
afterAll(async () => {
  await db?.drop();
});

test("every table is in scope and organization B has rows in each, so no cell is vacuous", async () => {
  expect(tables.length).toBeGreaterThanOrEqual(3);
  for (const table of tables) expect(digestsBefore.get(table)).not.toMatch(/^0:/);
});

describe.each(commands)("%s on another organization's rows", (command) => {
  test.each(actors)("as A's %s: sees and changes nothing, and fails as a nonexistent id would", async (actor) => {
    const cells: string[] = [];
    for (const table of tables) {
      const scope = scopeOf(table, tenantTableNames);
      const [{ ids }] = (await query<{ ids: string[] }>(
        db.name,
        `select coalesce(array_agg(id), '{}') as ids from ${table} where ${scope}`,
        [b.orgId],
        "root",
      )) as [{ ids: string[] }];
      const fake = [randomUUID()];
      let onB: Outcome;
      let onNothing: Outcome;
      if (command === "select") {
        onB = await asActor(actor, `select count(*) from ${table} where id = any($1::uuid[])`, [ids]);
        onNothing = await asActor(actor, `select count(*) from ${table} where id = any($1::uuid[])`, [fake]);
        if ("rows" in onB) expect({ table, actor, visible: onB.rows }).toEqual({ table, actor, visible: 0 });
      } else if (command === "update") {
        const column = await updatableColumn(table, actor);
        const sql = `update ${table} set ${column} = ${column} where id = any($1::uuid[])`;
        onB = await asActor(actor, sql, [ids]);
        onNothing = await asActor(actor, sql, [fake]);
      } else if (command === "delete") {
        const sql = `delete from ${table} where id = any($1::uuid[])`;
        onB = await asActor(actor, sql, [ids]);
        onNothing = await asActor(actor, sql, [fake]);
      } else {
        // A copy of one of B's rows with a fresh id: creating a row in another organization must fail.
        const [{ row }] = (await query<{ row: unknown }>(
          db.name,
          `select to_jsonb(t) || jsonb_build_object('id', gen_random_uuid()) as row from ${table} t where ${scope} limit 1`,
          [b.orgId],
          "root",
        )) as [{ row: unknown }];
        onB = await asActor(actor, `insert into ${table} select * from jsonb_populate_record(null::${table}, $1)`, [row]);
        onNothing = { error: "any" };
        expect({ table, actor, inserted: "error" in onB }).toEqual({ table, actor, inserted: true });
      }
      if (command !== "insert") expect({ table, actor, onB }).toEqual({ table, actor, onB: onNothing });
      if ("rows" in onB) expect({ table, actor, rows: onB.rows }).toEqual({ table, actor, rows: 0 });
      expect(await digestOf(table, b.orgId)).toBe(digestsBefore.get(table));
      cells.push(`${table}:${command}:${actor}`);
    }
    expect(cells).toHaveLength(tables.length);
  });
});

// Own-organization cells: what each role may do with its own organization's rows (the README's role matrix).
describe("own organization, per the role matrix", () => {
  const ownCount = (actor: Actor, table: string) => asActor(actor, `select count(*) from ${table} where ${scopeOf(table, tenantTableNames)}`, [a.orgId]);

  test.each(actors)("%s reads its organization, its members and their memberships (anonymous: nothing)", async (actor) => {
    const expected = actor === "anonymous" ? { error: "42501" } : undefined;
    expect(await ownCount(actor, "app_public.organizations")).toEqual(expected ?? { rows: 1 });
    expect(await ownCount(actor, "app_public.users")).toEqual(expected ?? { rows: 4 });
    expect(await ownCount(actor, "app_public.memberships")).toEqual(expected ?? { rows: 4 });
  });

  test.each([
    ["owner", 1],
    ["admin", 1],
    ["member", 0],
    ["viewer", 0],
  ] as const)("%s renaming the organization changes %i row(s)", async (actor, changed) => {
    expect(await asActor(actor, "update app_public.organizations set name = 'Renamed' where id = $1", [a.orgId])).toEqual({
      rows: changed,
    });
  });

  test("nobody changes the tier or deactivates the organization through the API", async () => {
    for (const actor of ["owner", "admin"] as const) {
      expect(await asActor(actor, "update app_public.organizations set tier = 'premium' where id = $1", [a.orgId])).toEqual({ error: "42501" });
      expect(await asActor(actor, "update app_public.organizations set is_active = false where id = $1", [a.orgId])).toEqual({ error: "42501" });
    }
  });

  test.each(["owner", "admin", "member", "viewer"] as const)("%s edits their own name and nobody else's", async (actor) => {
    const self = a.members[actor].userId;
    const other = a.members[actor === "owner" ? "viewer" : "owner"].userId;
    expect(await asActor(actor, "update app_public.users set full_name = 'New Name' where id = $1", [self])).toEqual({ rows: 1 });
    expect(await asActor(actor, "update app_public.users set full_name = 'New Name' where id = $1", [other])).toEqual({ rows: 0 });
    expect(await asActor(actor, "update app_public.users set email = 'x@example.com' where id = $1", [self])).toEqual({ error: "42501" });
  });

  test.each(["owner", "admin", "member", "viewer"] as const)("%s cannot write memberships directly", async (actor) => {
    const target = a.members.viewer.userId;
    expect(await asActor(actor, "update app_public.memberships set role = 'owner' where user_id = $1", [target])).toEqual({ error: "42501" });
    expect(await asActor(actor, "delete from app_public.memberships where user_id = $1", [target])).toEqual({ error: "42501" });
    expect(await asActor(actor, "insert into app_public.memberships (user_id, role) values ($1, 'owner')", [b.members.viewer.userId])).toEqual({
      error: "42501",
    });
  });
});

test.each(actors)("shared tables: %s reads them (anonymous: not even that) and writes none", async (actor) => {
  for (const table of sharedTables) {
    const [{ n }] = (await query<{ n: number }>(db.name, `select count(*)::int as n from ${table}`, [], "root")) as [{ n: number }];
    expect(n).toBeGreaterThanOrEqual(3); // the global templates the migrations ship
    expect(await asActor(actor, `select count(*) from ${table}`, [])).toEqual(actor === "anonymous" ? { error: "42501" } : { rows: n });
    expect(await asActor(actor, `update ${table} set name = name`, [])).toEqual({ error: "42501" });
    expect(await asActor(actor, `delete from ${table}`, [])).toEqual({ error: "42501" });
  }
});

test("a role change or removal applies to the very next statement, whatever the token says", async () => {
  const member = a.members.member;
  expect(await asActor("member", "update app_public.organizations set name = 'Renamed' where id = $1", [a.orgId])).toEqual({ rows: 0 });
  await query(db.name, "update app_public.memberships set role = 'admin' where user_id = $1 and org_id = $2", [member.userId, a.orgId], "root");
  try {
    expect(await asActor("member", "update app_public.organizations set name = 'Renamed' where id = $1", [a.orgId])).toEqual({ rows: 1 });
  } finally {
    await query(db.name, "update app_public.memberships set role = 'member' where user_id = $1 and org_id = $2", [member.userId, a.orgId], "root");
  }
  await query(db.name, "delete from app_public.memberships where user_id = $1 and org_id = $2", [member.userId, a.orgId], "root");
  expect(await asActor("member", "select count(*) from app_public.organizations", [])).toEqual({ error: "LOGIN" });
});
