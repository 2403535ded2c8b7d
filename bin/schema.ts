// `npm run schema`: writes schema.graphql, the GraphQL schema as PostGraphile generates it from the migrated
// database, and docs/schema.md, the digest of the tables' columns, policies, grants and triggers. Both are committed
// so changes show up in review; test/server/schema.test.ts and test/db/schema-digest.test.ts fail when they are stale.
import "../lib/graphile-env.ts";
import { writeFile } from "node:fs/promises";
import { databaseOnPort, useEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { checkFirstLogin, checkSchema, targetOf } from "../db/preflight.ts";
import { schemaDigest } from "../db/schema-digest.ts";
import { runOnce } from "../lib/process.ts";
import { buildSchema } from "../server/schema.ts";

await runOnce("schema", async (config, logger) => {
  // With `npm start` running, its database is used (and left running); else one is started for this alone.
  const embedded = config.database.embedded ? await useEmbeddedPostgres(config.database.embedded, logger, { command: "npm run schema" }) : null;
  try {
    const database = embedded ? databaseOnPort(config.database, embedded.port) : config.database;
    if (database.ownerUrl) {
      await checkFirstLogin(database, config.dataDir);
      await prepareDatabase(database, logger);
    } else {
      await checkSchema(targetOf(database, "url", config.dataDir)!, logger);
    }
    const pool = createPool({ url: database.url, max: 2, applicationName: "quire-schema" }, logger);
    try {
      await writeFile(new URL("../schema.graphql", import.meta.url), await buildSchema({ config: { ...config, database }, logger, pool }));
      logger.info("wrote schema.graphql");
      const { authenticatorRole: authenticator, authenticatedRole: authenticated, anonymousRole: anonymous } = database;
      await writeFile(new URL("../docs/schema.md", import.meta.url), await schemaDigest(pool, { authenticator, authenticated, anonymous }));
      logger.info("wrote docs/schema.md");
    } finally {
      await pool.end();
    }
  } finally {
    await embedded?.stop();
  }
});
