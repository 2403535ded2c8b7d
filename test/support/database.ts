// Test databases. global-setup.ts migrates one template database per run; each test file clones it with
// createTestDatabase() and drops its clone afterwards, so files are isolated and can run in parallel.
// The server is TEST_DATABASE_URL (a superuser URL) when given, else an embedded PostgreSQL under .data/test.
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pino } from "pino";
import { loadConfig, type Config } from "../../lib/config.ts";

export const roles = {
  owner: "quire_test_owner",
  authenticator: "quire_test_authenticator",
  authenticated: "quire_test_authenticated",
  anonymous: "quire_test_anonymous",
} as const;
const password = "quire-test-password";
/**
 * Databases of one run share this prefix (QUIRE_TEST_DB_PREFIX, default `quire_test_`), and a run drops what an
 * earlier run with the same prefix left behind; a different prefix lets two runs share one server.
 */
export const testDatabasePrefix = process.env.QUIRE_TEST_DB_PREFIX ?? "quire_test_";
export const templateDatabase = `${testDatabasePrefix}template`;

/** A logger that prints nothing (tests assert on behaviour, not on log lines). */
export const silentLogger = pino({ level: "silent" });

/** The superuser URL global-setup chose; it is passed to the test workers through the environment. */
export function rootUrl(): string {
  const url = process.env.QUIRE_TEST_ROOT_URL;
  if (!url) throw new Error("QUIRE_TEST_ROOT_URL is unset: run the tests with `npm test`");
  return url;
}

/** The URL for `role` on `database`, on the test server. */
export function urlFor(role: string, database: string): string {
  const u = new URL(rootUrl());
  u.username = role;
  u.password = role === new URL(rootUrl()).username ? u.password : password;
  u.pathname = `/${database}`;
  return u.toString();
}

/** The local object store's directory of `database`'s processes: one per test database, removed with it. */
export const storageDirOf = (database: string) => join(tmpdir(), "quire-test-objects", database);

/** The configuration a Quire process would load for `database` on the test server. */
export function testConfig(database: string, env: NodeJS.ProcessEnv = {}): Config {
  return loadConfig({
    NODE_ENV: "test",
    STORAGE_DIR: storageDirOf(database),
    LOG_LEVEL: "silent",
    JWT_SECRET: "test-secret-that-is-at-least-32-characters-long",
    DATABASE_URL: urlFor(roles.authenticator, database),
    OWNER_DATABASE_URL: urlFor(roles.owner, database),
    DATABASE_AUTHENTICATED_ROLE: roles.authenticated,
    DATABASE_ANONYMOUS_ROLE: roles.anonymous,
    ...env,
  });
}

/** Runs one statement on `database` as `role` (default the owner) and returns the rows. */
export async function query<R extends pg.QueryResultRow = pg.QueryResultRow>(
  database: string,
  text: string,
  values: unknown[] = [],
  role: string = roles.owner,
): Promise<R[]> {
  const client = new pg.Client({ connectionString: role === "root" ? rootUrl().replace(/\/[^/]*$/, `/${database}`) : urlFor(role, database) });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  readonly name: string;
  readonly config: Config;
  drop(): Promise<void>;
}

/** Clones the migrated template into a fresh database for one test file. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `${testDatabasePrefix}${randomBytes(6).toString("hex")}`;
  const root = new pg.Client({ connectionString: rootUrl() });
  await root.connect();
  try {
    await root.query(`create database ${name} template ${templateDatabase} owner ${roles.owner}`);
    // Database-level privileges are not copied from a template.
    await root.query(`revoke all on database ${name} from public`);
    await root.query(`grant connect on database ${name} to ${roles.authenticator}`);
  } finally {
    await root.end();
  }
  return {
    name,
    config: testConfig(name),
    async drop() {
      const client = new pg.Client({ connectionString: rootUrl() });
      await client.connect();
      try {
        await client.query(`drop database if exists ${name} with (force)`);
      } finally {
        await client.end();
      }
      await rm(storageDirOf(name), { recursive: true, force: true });
    },
  };
}
