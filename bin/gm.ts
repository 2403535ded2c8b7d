// `npm run gm -- <command>`: graphile-migrate's CLI (watch, commit, uncommit, reset, status, …) pointed at the
// database Quire is configured for, as its owner, with the role placeholders `.gmrc` expects. With the embedded
// default it uses the database of a running `npm start`, or starts one for the command's duration.
import { OperatorError } from "../lib/operator-error.ts";
import { runOnce } from "../lib/process.ts";
import { databaseOnPort, useEmbeddedPostgres } from "../db/embedded.ts";
import { migrateEnv, runMigrateCli } from "../db/migrate.ts";
import { checkFirstLogin } from "../db/preflight.ts";

await runOnce("gm", async (config, logger) => {
  if (!config.database.ownerUrl) throw new OperatorError("OWNER_DATABASE_URL is required for graphile-migrate commands");
  const embedded = config.database.embedded ? await useEmbeddedPostgres(config.database.embedded, logger, { command: "npm run gm" }) : null;
  let code: number;
  try {
    const database = embedded ? databaseOnPort(config.database, embedded.port) : config.database;
    await checkFirstLogin(database, config.dataDir);
    ({ code } = await runMigrateCli(process.argv.slice(2), migrateEnv(database, database.ownerUrl!), "inherit"));
  } finally {
    await embedded?.stop();
  }
  if (code !== 0) process.exit(code);
});
