// Once per `npm test`: pick the server (TEST_DATABASE_URL, or an embedded PostgreSQL under .data/test), drop what
// an earlier run left behind, then create the roles and migrate the template database every test file clones.
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { readDevSecrets } from "../lib/dev-secrets.ts";
import { freePort } from "./support/ports.ts";
import { silentLogger, templateDatabase, testConfig, testDatabasePrefix } from "./support/database.ts";

declare global {
  var quireTestEmbedded: EmbeddedPostgres | undefined;
}

export default async function globalSetup(): Promise<void> {
  // Grafast's development mode (extra checks, readable errors); the workers inherit the environment.
  process.env.GRAPHILE_ENV ??= "development";
  let root = process.env.TEST_DATABASE_URL;
  if (!root) {
    const embeddedPort = await freePort();
    const superuserPassword = readDevSecrets(".data/test").postgresPassword;
    globalThis.quireTestEmbedded = await startEmbeddedPostgres({ dataDir: ".data/test/postgres", port: embeddedPort, superuserPassword }, silentLogger);
    root = `postgres://postgres:${encodeURIComponent(superuserPassword)}@127.0.0.1:${embeddedPort}/postgres`;
  }
  process.env.QUIRE_TEST_ROOT_URL = root;

  const client = new pg.Client({ connectionString: root });
  await client.connect();
  try {
    // The prefix is taken literally: in LIKE, `_` matches any character, and `quire_t_%` would also match another
    // run's `quire_test_…` databases (and drop them under it).
    const stale = await client.query<{ datname: string }>("select datname from pg_database where starts_with(datname, $1)", [testDatabasePrefix]);
    for (const { datname } of stale.rows) await client.query(`drop database ${client.escapeIdentifier(datname)} with (force)`);
  } finally {
    await client.end();
  }
  const config = testConfig(templateDatabase, { ROOT_DATABASE_URL: root });
  await prepareDatabase(config.database, silentLogger);
}
