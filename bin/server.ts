// `npm run server`: the API alone, as production runs it (workers run separately with `npm run worker`,
// migrations with `npm run migrate`). Needs DATABASE_URL: the embedded database belongs to `npm start`.
// A taken PORT or METRICS_PORT, an unreachable database, a wrong password or an unmigrated database end start-up
// with one line naming the variable, and exit code 1.
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after the pool is closed.
import "../lib/start-tracing.ts";
import "../lib/graphile-env.ts";
import { createPool } from "../db/pool.ts";
import { checkSchema } from "../db/preflight.ts";
import { ConfigError } from "../lib/config.ts";
import { checkPortsFree, listenProblem, type PortUse } from "../lib/listen-check.ts";
import { runService } from "../lib/process.ts";
import { shutdownTracing } from "../lib/tracing.ts";
import { createQuireServer } from "../server/app.ts";

await runService("server", async (config, logger) => {
  if (config.database.embedded) {
    throw new ConfigError(["DATABASE_URL is required for `npm run server` (`npm start` runs the embedded setup)"]);
  }
  const http: PortUse = { variable: "PORT", host: config.http.host, port: config.http.port };
  const ports = [http, ...(config.metrics.port === null ? [] : [{ variable: "METRICS_PORT", host: config.http.host, port: config.metrics.port }])];
  await checkPortsFree(ports);
  await checkSchema({ variable: "DATABASE_URL", url: config.database.url }, logger);
  const pool = createPool(
    { url: config.database.url, max: config.database.poolMax, applicationName: "quire-server", waitMs: config.database.poolWaitMs },
    logger,
  );
  const server = await createQuireServer({ config, logger, pool });
  const address = await server.listen().catch(async (error: unknown) => {
    await server.close(0);
    await pool.end();
    const use = ports.find((p) => p.port === (error as { port?: unknown }).port) ?? http;
    throw listenProblem(use, error) ?? error;
  });
  logger.info({ graphql: `http://${address.address}:${address.port}/graphql` }, "server listening");
  return async () => {
    await server.close(config.shutdownTimeoutMs);
    await pool.end();
    await shutdownTracing();
  };
});
