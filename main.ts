// `npm start`: the whole of Quire in one process. With no DATABASE_URL it runs an embedded PostgreSQL under
// DATA_DIR (created on first start, reused after), creates the roles and database, applies the migrations, then
// serves the API and runs the worker. Ctrl-C or SIGTERM stops them in reverse order, the database last.
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after everything stopped.
import "./lib/start-tracing.ts";
import "./lib/graphile-env.ts";
import { startEmbeddedPostgres } from "./db/embedded.ts";
import { prepareDatabase } from "./db/migrate.ts";
import { createPool } from "./db/pool.ts";
import { createMetrics } from "./lib/metrics.ts";
import { runService } from "./lib/process.ts";
import { shutdownTracing } from "./lib/tracing.ts";
import { createQuireServer } from "./server/app.ts";
import { startQuireWorker } from "./worker/runner.ts";

await runService("quire", async (config, logger) => {
  const { database } = config;
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop();
    await shutdownTracing();
  };
  try {
    if (database.embedded) {
      const embedded = await startEmbeddedPostgres(database.embedded, logger);
      stops.push(() => embedded.stop());
    }
    if (database.ownerUrl) {
      await prepareDatabase(database, logger);
    } else {
      logger.warn("OWNER_DATABASE_URL is not set: not applying migrations (run `npm run migrate` as part of deploys)");
    }

    // One set of metrics for the process: the worker records into the server's, which serves them.
    const metrics = createMetrics();
    const workerPool = createPool({ url: database.url, max: config.worker.concurrency + 2, applicationName: "quire-worker" }, logger);
    stops.push(() => workerPool.end());
    const worker = await startQuireWorker({ config, logger, pool: workerPool, metrics });
    stops.push(() => worker.stop());

    const serverPool = createPool({ url: database.url, max: database.poolMax, applicationName: "quire-server", waitMs: database.poolWaitMs }, logger);
    stops.push(() => serverPool.end());
    const server = await createQuireServer({ config, logger, pool: serverPool, metrics });
    stops.push(() => server.close(config.shutdownTimeoutMs));
    const address = await server.listen();

    const base = `http://${address.address}:${address.port}`;
    logger.info({ graphql: `${base}/graphql` }, `Quire is ready: GraphQL at ${base}/graphql`);
    if (config.http.graphiql) logger.info(`Open ${base}/graphiql in a browser for GraphiQL (Ruru)`);
    return stopAll;
  } catch (error) {
    await stopAll();
    throw error;
  }
});
