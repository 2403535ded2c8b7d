// `npm run migrate`: create the roles and database if a superuser URL is known, apply every committed migration
// and graphile-worker's schema, then exit. Production runs this once per deploy, before servers and workers start.
// Without DATABASE_URL it starts the embedded PostgreSQL, migrates it and stops it again.
import { runOnce } from "../lib/process.ts";
import { startEmbeddedPostgres } from "./embedded.ts";
import { prepareDatabase } from "./migrate.ts";

await runOnce("migrate", async (config, logger) => {
  const embedded = config.database.embedded ? await startEmbeddedPostgres(config.database.embedded, logger) : null;
  try {
    await prepareDatabase(config.database, logger);
    logger.info({ database: config.database.name }, "database is up to date");
  } finally {
    await embedded?.stop();
  }
});
