// `npm run schema`: writes schema.graphql, the GraphQL schema as PostGraphile generates it from the migrated
// database. It is committed so API changes show up in review; test/server/schema.test.ts fails when it is stale.
import "../lib/graphile-env.ts";
import { writeFile } from "node:fs/promises";
import { startEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { runOnce } from "../lib/process.ts";
import { buildSchema } from "./schema.ts";

await runOnce("schema", async (config, logger) => {
  const embedded = config.database.embedded ? await startEmbeddedPostgres(config.database.embedded, logger) : null;
  try {
    if (config.database.ownerUrl) await prepareDatabase(config.database, logger);
    const pool = createPool({ url: config.database.url, max: 2, applicationName: "quire-schema" }, logger);
    try {
      await writeFile(new URL("../schema.graphql", import.meta.url), await buildSchema({ config, logger, pool }));
      logger.info("wrote schema.graphql");
    } finally {
      await pool.end();
    }
  } finally {
    await embedded?.stop();
  }
});
