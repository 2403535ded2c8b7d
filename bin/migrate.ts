// `npm run migrate`: create the roles and database if a superuser URL is known, apply every committed migration
// and graphile-worker's schema, then exit. Production runs this once per deploy, before servers and workers start.
// Without DATABASE_URL it migrates the embedded PostgreSQL: the one a running `npm start` owns, left running, or
// else one it starts and stops again.
import { runOnce } from "../lib/process.ts";
import { databaseOnPort, useEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { checkFirstLogin } from "../db/preflight.ts";

await runOnce("migrate", async (config, logger) => {
  const embedded = config.database.embedded ? await useEmbeddedPostgres(config.database.embedded, logger, { command: "npm run migrate" }) : null;
  try {
    const database = embedded ? databaseOnPort(config.database, embedded.port) : config.database;
    await checkFirstLogin(database, config.dataDir);
    await prepareDatabase(database, logger);
    logger.info({ database: database.name }, "database is up to date");
  } finally {
    await embedded?.stop();
  }
});
