// `npm run server`: the API alone, as production runs it (workers run separately with `npm run worker`,
// migrations with `npm run migrate`). Needs DATABASE_URL: the embedded database belongs to `npm start`.
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after the pool is closed.
import "../lib/start-tracing.ts";
import "../lib/graphile-env.ts";
import { createPool } from "../db/pool.ts";
import { ConfigError } from "../lib/config.ts";
import { runService } from "../lib/process.ts";
import { shutdownTracing } from "../lib/tracing.ts";
import { createQuireServer } from "./app.ts";

await runService("server", async (config, logger) => {
  if (config.database.embedded) {
    throw new ConfigError(["DATABASE_URL is required for `npm run server` (`npm start` runs the embedded setup)"]);
  }
  const pool = createPool({ url: config.database.url, max: config.database.poolMax, applicationName: "quire-server", waitMs: config.database.poolWaitMs }, logger);
  const server = await createQuireServer({ config, logger, pool });
  const address = await server.listen();
  logger.info({ graphql: `http://${address.address}:${address.port}/graphql` }, "server listening");
  return async () => {
    await server.close(config.shutdownTimeoutMs);
    await pool.end();
    await shutdownTracing();
  };
});
