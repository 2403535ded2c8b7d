// `npm start`: the whole of Quire in one process. With no DATABASE_URL it runs an embedded PostgreSQL under
// DATA_DIR (created on first start, reused after), creates the roles and database, applies the migrations, then
// serves the API and runs the worker. Ctrl-C or SIGTERM stops them in reverse order, the database last.
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after everything stopped.
// PORT and METRICS_PORT are checked first, and the database's reachability before migrating, so the usual operator
// mistakes (a port taken, a second `npm start` on the same DATA_DIR, a wrong DATABASE_URL) end at once with one line
// and exit code 1, with the embedded database (if started) stopped cleanly.
import "../lib/start-tracing.ts";
import "../lib/graphile-env.ts";
import { startEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { checkConnection, checkFirstLogin, checkSchema, targetOf } from "../db/preflight.ts";
import { checkPortsFree, listenProblem, type PortUse } from "../lib/listen-check.ts";
import { createMetrics } from "../lib/metrics.ts";
import { runService } from "../lib/process.ts";
import { shutdownTracing } from "../lib/tracing.ts";
import { createQuireServer } from "../server/app.ts";
import { startQuireWorker } from "../worker/runner.ts";

await runService("quire", async (config, logger) => {
  const { database } = config;
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop();
    await shutdownTracing();
  };
  const http: PortUse = { variable: "PORT", host: config.http.host, port: config.http.port };
  const ports = [http, ...(config.metrics.port === null ? [] : [{ variable: "METRICS_PORT", host: config.http.host, port: config.metrics.port }])];
  try {
    await checkPortsFree(ports);
    if (database.embedded) {
      const api = `http://${config.http.host.includes(":") ? `[${config.http.host}]` : config.http.host}:${config.http.port}`;
      const embedded = await startEmbeddedPostgres(database.embedded, logger, { command: "npm start", api });
      stops.push(() => embedded.stop());
    }
    // The first login used, then the runtime one: a wrong URL or password is named here, not deep in a migration.
    const runtime = targetOf(database, "url", config.dataDir)!;
    if (database.ownerUrl) {
      await checkFirstLogin(database, config.dataDir);
      await prepareDatabase(database, logger);
      await checkConnection(runtime);
    } else {
      logger.warn("OWNER_DATABASE_URL is not set: not applying migrations (run `npm run migrate` as part of deploys)");
      await checkSchema(runtime, logger);
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
    const address = await server.listen().catch((error: unknown) => {
      // Taken since the check above (by whatever bound it in between): still one line, naming the variable.
      const use = ports.find((p) => p.port === (error as { port?: unknown }).port) ?? http;
      throw listenProblem(use, error) ?? error;
    });

    const base = `http://${address.address}:${address.port}`;
    logger.info({ graphql: `${base}/graphql` }, `Quire is ready: GraphQL at ${base}/graphql`);
    if (config.http.graphiql) logger.info(`Open ${base}/graphiql in a browser for GraphiQL (Ruru)`);
    return stopAll;
  } catch (error) {
    await stopAll();
    throw error;
  }
});
