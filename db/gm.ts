// `npm run gm -- <command>`: graphile-migrate's CLI (watch, commit, uncommit, reset, status, …) pointed at the
// database Quire is configured for, as its owner, with the role placeholders `.gmrc` expects. With the embedded
// default, the embedded PostgreSQL must be running (`npm start` in another terminal).
import { runOnce } from "../lib/process.ts";
import { migrateEnv, runMigrateCli } from "./migrate.ts";

await runOnce("gm", async (config) => {
  if (!config.database.ownerUrl) throw new Error("OWNER_DATABASE_URL is required for graphile-migrate commands");
  const { code } = await runMigrateCli(process.argv.slice(2), migrateEnv(config.database, config.database.ownerUrl), "inherit");
  if (code !== 0) process.exit(code);
});
