// Checks an entry point runs before it relies on the database, so the usual operator mistakes end in one line
// naming the variable to fix instead of a driver stack: PostgreSQL not running or unreachable, a wrong password,
// an unknown user or database, and (for the server and the worker) a database nobody has migrated yet.
import pg from "pg";
import { latestCommittedMigration } from "./migrate.ts";
import type { DatabaseConfig } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { OperatorError } from "../lib/operator-error.ts";

/** A database URL and the variable it came from (`DATABASE_URL`, `OWNER_DATABASE_URL`, …). */
export interface DatabaseTarget {
  readonly variable: string;
  readonly url: string;
}

const variables = { rootUrl: "ROOT_DATABASE_URL", ownerUrl: "OWNER_DATABASE_URL", url: "DATABASE_URL" } as const;

/**
 * One of `database`'s logins as a target. With the embedded database there are no variables to blame: its
 * passwords come from `<DATA_DIR>/secrets.json`, so that is what the message names.
 */
export function targetOf(database: DatabaseConfig, login: keyof typeof variables, dataDir: string): DatabaseTarget | null {
  const url = database[login];
  if (!url) return null;
  return { variable: database.embedded ? `the embedded PostgreSQL (passwords in ${dataDir}/secrets.json)` : variables[login], url };
}

/** Checks the login a migration starts with: ROOT_DATABASE_URL, else OWNER_DATABASE_URL, else DATABASE_URL. */
export async function checkFirstLogin(database: DatabaseConfig, dataDir: string): Promise<void> {
  await checkConnection((targetOf(database, "rootUrl", dataDir) ?? targetOf(database, "ownerUrl", dataDir) ?? targetOf(database, "url", dataDir))!);
}

/** user@host:port/database, never the password. */
export function describeUrl(url: string): string {
  const u = new URL(url);
  return `${decodeURIComponent(u.username)}@${u.hostname}:${u.port || "5432"}/${decodeURIComponent(u.pathname.slice(1))}`;
}

const socketProblems: Readonly<Record<string, string>> = {
  ECONNREFUSED: "refused the connection: is PostgreSQL running there?",
  ETIMEDOUT: "did not answer in time",
  EHOSTUNREACH: "cannot be reached",
  ENOTFOUND: "names a host that does not resolve",
  EAI_AGAIN: "names a host that could not be resolved right now",
  ECONNRESET: "closed the connection",
};

const sqlProblems: Readonly<Record<string, string>> = {
  "28P01": "refused the password",
  "28000": "refused the login (unknown user, or pg_hba.conf does not allow it)",
  "3D000": "has no such database",
  "57P03": "is still starting up",
  "53300": "has no connection slots left",
};

/** The OperatorError for a failure to connect to `target`, or null when `error` is something else. */
export function databaseProblem(target: DatabaseTarget, error: unknown): OperatorError | null {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const problem =
    (typeof code === "string" ? (socketProblems[code] ?? sqlProblems[code]) : undefined) ??
    (typeof message === "string" && /^(timeout exceeded when trying to connect|Connection terminated)/.test(message) ? "did not answer in time" : undefined);
  if (!problem) return null;
  return new OperatorError(`${target.variable}: PostgreSQL at ${describeUrl(target.url)} ${problem}`, { cause: error });
}

/** Connects once to `target` and disconnects; throws the OperatorError of {@link databaseProblem} on failure. */
export async function checkConnection(target: DatabaseTarget): Promise<void> {
  const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
  client.on("error", () => undefined); // a connection dropped after the check: nothing to do
  try {
    await client.connect();
    await client.query("select 1");
  } catch (error) {
    throw databaseProblem(target, error) ?? error;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * For `npm run server` and `npm run worker`, which never migrate: the database must hold Quire's schema. None at all
 * is fatal (run `npm run migrate`); another version than this code's is only warned about, as a rolling deploy
 * briefly runs old code on a new schema (/health/ready reports it too).
 */
export async function checkSchema(target: DatabaseTarget, logger: Logger): Promise<void> {
  const client = new pg.Client({ connectionString: target.url, connectionTimeoutMillis: 10_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ latest_migration: string | null }>("select latest_migration from app_private.readiness()");
    const expected = latestCommittedMigration();
    const found = rows[0]?.latest_migration ?? null;
    if (found !== expected)
      logger.warn({ database: found, code: expected }, "the database's migrations are not the ones this code ships: run `npm run migrate`");
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    // undefined function or schema, or no right to it: the schema was never migrated into this database.
    if (code === "42883" || code === "3F000" || code === "42501") {
      throw new OperatorError(`${target.variable}: the database ${describeUrl(target.url)} has no Quire schema: run \`npm run migrate\` first`, {
        cause: error,
      });
    }
    throw databaseProblem(target, error) ?? error;
  } finally {
    await client.end().catch(() => undefined);
  }
}
