// Creating the roles and the database. Roles are cluster-wide and carry passwords, so they are made here with a
// superuser connection rather than in migrations; everything inside the database belongs to the migrations.
// Every step is idempotent: running it again converges on the same state (and resets the passwords to the ones
// configured, which is how an operator rotates them).
import pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface Login {
  readonly role: string;
  readonly password: string;
}

export interface BootstrapPlan {
  /** A superuser connection, to any database of the cluster. */
  readonly rootUrl: string;
  readonly database: string;
  /** Owns the database and every object in it; runs migrations. Not a superuser, cannot bypass RLS. */
  readonly owner: Login;
  /** LOGIN NOINHERIT: the server and the worker connect as it and switch to one of the two API roles. */
  readonly authenticator: Login;
  readonly authenticatedRole: string;
  readonly anonymousRole: string;
}

/** The login and password a postgres:// URL names. */
export function loginOf(url: string): Login {
  const u = new URL(url);
  return { role: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
}

async function ensureRole(client: pg.Client, role: string, attributes: string, password: string | null) {
  const exists = await client.query("select 1 from pg_roles where rolname = $1", [role]);
  const verb = exists.rowCount === 0 ? "create" : "alter";
  const pw = password === null ? "" : ` password ${client.escapeLiteral(password)}`;
  await client.query(`${verb} role ${client.escapeIdentifier(role)} with ${attributes}${pw}`);
}

/** Creates (or brings up to date) the four roles and the database. */
export async function bootstrapDatabase(plan: BootstrapPlan, logger: Logger): Promise<void> {
  const root = new pg.Client({ connectionString: plan.rootUrl });
  await root.connect();
  try {
    const id = (name: string) => root.escapeIdentifier(name);
    // Concurrent bootstraps (several test workers, two processes starting at once) would race on "create role".
    await root.query("select pg_advisory_lock(hashtext('quire.bootstrap'))");
    await ensureRole(root, plan.owner.role, "login nosuperuser nocreatedb nocreaterole nobypassrls", plan.owner.password);
    await ensureRole(root, plan.authenticator.role, "login noinherit nosuperuser nocreatedb nocreaterole nobypassrls", plan.authenticator.password);
    // Security definer functions declare `set quire.definer = 'on'` (the owner's RLS policy admits that), and a
    // function may only SET a custom parameter its owner was granted (PostgreSQL 15+).
    await root.query(`grant set on parameter "quire.definer" to ${id(plan.owner.role)}`);
    for (const role of [plan.authenticatedRole, plan.anonymousRole]) {
      await ensureRole(root, role, "nologin noinherit nosuperuser nocreatedb nocreaterole nobypassrls", null);
      await root.query(`grant ${id(role)} to ${id(plan.authenticator.role)}`);
    }
    const db = await root.query("select 1 from pg_database where datname = $1", [plan.database]);
    if (db.rowCount === 0) {
      await root.query(`create database ${id(plan.database)} owner ${id(plan.owner.role)} encoding 'UTF8' template template0`);
      logger.info({ database: plan.database }, "created database");
    }
    await root.query(`revoke all on database ${id(plan.database)} from public`);
    await root.query(`grant connect on database ${id(plan.database)} to ${id(plan.authenticator.role)}`);
    await root.query("select pg_advisory_unlock(hashtext('quire.bootstrap'))");
  } finally {
    await root.end();
  }

  // Inside the database: the public schema belongs to the owner and to nobody else.
  const inDb = new URL(plan.rootUrl);
  inDb.pathname = `/${encodeURIComponent(plan.database)}`;
  const client = new pg.Client({ connectionString: inDb.toString() });
  await client.connect();
  try {
    await client.query(`alter schema public owner to ${client.escapeIdentifier(plan.owner.role)}`);
    await client.query("revoke all on schema public from public");
  } finally {
    await client.end();
  }
}
