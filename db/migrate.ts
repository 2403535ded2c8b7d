// Applying the schema: graphile-worker's own schema first (so later migrations may rely on it), then Quire's
// committed graphile-migrate migrations, then the authenticator's access to the worker's schema.
//
// graphile-migrate runs through its CLI, which its README names as the supported interface (the Node API is
// "deliberately undocumented"); `.gmrc` is thereby the one place its settings live, for `npm run gm` too.
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { runMigrations } from "graphile-worker";
import type { DatabaseConfig } from "../lib/config.ts";
import { bootstrapDatabase, loginOf } from "./bootstrap.ts";
import type { Logger } from "../lib/logger.ts";
import { workerLogger } from "../lib/worker-logger.ts";

/** The project root: where `.gmrc` and `migrations/` live. */
export const projectRoot = fileURLToPath(new URL("..", import.meta.url));

const migrateCli = createRequire(import.meta.url).resolve("graphile-migrate/dist/cli.js");

/** The newest committed migration this code ships, as graphile-migrate records it (`000001.sql`). */
export function latestCommittedMigration(): string | null {
  const files = readdirSync(new URL("../migrations/committed/", import.meta.url)).filter((f) => /^\d{6}.*\.sql$/.test(f));
  const newest = files.sort().at(-1);
  return newest ? `${newest.slice(0, 6)}.sql` : null;
}

/** The environment graphile-migrate's CLI needs for this database (see `.gmrc`). */
export function migrateEnv(database: DatabaseConfig, ownerUrl: string): NodeJS.ProcessEnv {
  const shadow = new URL(ownerUrl);
  shadow.pathname = `/${database.name}_shadow`;
  return {
    ...process.env,
    DATABASE_URL: ownerUrl,
    SHADOW_DATABASE_URL: shadow.toString(),
    ...(database.rootUrl ? { ROOT_DATABASE_URL: database.rootUrl } : {}),
    DATABASE_AUTHENTICATOR: database.authenticatorRole,
    DATABASE_AUTHENTICATED: database.authenticatedRole,
    DATABASE_ANONYMOUS: database.anonymousRole,
  };
}

/** Runs `graphile-migrate <args>` in the project root; resolves with its exit code. */
export function runMigrateCli(args: readonly string[], env: NodeJS.ProcessEnv, output: "inherit" | "pipe"): Promise<{ code: number; log: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [migrateCli, ...args], { cwd: projectRoot, env, stdio: ["ignore", output, output] });
    let log = "";
    child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, log }));
  });
}

/**
 * What the authenticator (the worker's login; never the API roles, which it is NOINHERIT of) may do in the
 * worker's schema: run jobs. graphile-worker's functions are security invoker, so table rights are needed too.
 * Its functions are created EXECUTE-able by PUBLIC; that is revoked so only the grants here apply.
 */
const workerGrants = (authenticator: string) => `
  revoke all on all functions in schema graphile_worker from public;
  grant usage on schema graphile_worker to ${authenticator};
  grant select, insert, update, delete on all tables in schema graphile_worker to ${authenticator};
  grant usage, select, update on all sequences in schema graphile_worker to ${authenticator};
  grant execute on all functions in schema graphile_worker to ${authenticator};
  -- graphile-worker enables RLS, without policies, on its private tables: only their owner may use them. The
  -- worker logs in as the authenticator, so it gets a policy of its own on each (and no other role does).
  do $$
  declare t regclass;
  begin
    for t in
      select c.oid::regclass from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'graphile_worker' and c.relkind in ('r', 'p') and c.relrowsecurity
         and not exists (select 1 from pg_policy p where p.polrelid = c.oid and p.polname = 'quire_worker')
    loop
      execute format('create policy quire_worker on %s to ${authenticator} using (true) with check (true)', t);
    end loop;
  end
  $$;
`;

/** Brings the database schema up to date. Needs the owner's URL. */
export async function migrateDatabase(database: DatabaseConfig, logger: Logger): Promise<void> {
  const ownerUrl = database.ownerUrl;
  if (!ownerUrl) throw new Error("OWNER_DATABASE_URL is required to apply migrations");
  await runMigrations({ connectionString: ownerUrl, logger: workerLogger(logger) });

  const result = await runMigrateCli(["migrate"], migrateEnv(database, ownerUrl), "pipe");
  if (result.code !== 0) {
    throw new Error(`graphile-migrate migrate failed (exit ${result.code}):\n${result.log.trim()}`);
  }
  for (const line of result.log.split("\n").filter((l) => l.trim() !== "")) logger.info({ migrate: line.trim() }, "migrations");

  const owner = new pg.Client({ connectionString: ownerUrl });
  await owner.connect();
  try {
    await owner.query(workerGrants(owner.escapeIdentifier(database.authenticatorRole)));
  } finally {
    await owner.end();
  }
}

/**
 * Everything `npm run migrate` does: create the roles and database when a superuser URL is known, then migrate.
 * Without ROOT_DATABASE_URL the roles and database must already exist (as in a managed PostgreSQL).
 */
export async function prepareDatabase(database: DatabaseConfig, logger: Logger): Promise<void> {
  if (database.rootUrl) {
    if (!database.ownerUrl) throw new Error("ROOT_DATABASE_URL needs OWNER_DATABASE_URL too: it names the owner login to create");
    await bootstrapDatabase(
      {
        rootUrl: database.rootUrl,
        database: database.name,
        owner: loginOf(database.ownerUrl),
        authenticator: loginOf(database.url),
        authenticatedRole: database.authenticatedRole,
        anonymousRole: database.anonymousRole,
      },
      logger,
    );
  }
  await migrateDatabase(database, logger);
}
