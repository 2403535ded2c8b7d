// `npm run worker`: the job runner alone, as production runs it. Needs DATABASE_URL (see bin/server.ts).
// With METRICS_PORT it serves its own /metrics there (jobs, queue, its pool, LLM calls): startQuireWorker, given no
// shared metrics, starts that server and closes it in stop(). With WORKER_HEALTH_PORT it answers /health and
// /health/ready there (worker/health-server.ts) for its container's healthcheck.
// A taken port, an unreachable database, a wrong password or an unmigrated database end start-up with one line
// naming the variable, and exit code 1.
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after the pool is closed.
import "../lib/start-tracing.ts";
import "../lib/graphile-env.ts";
import { createPool } from "../db/pool.ts";
import { checkSchema } from "../db/preflight.ts";
import { ConfigError } from "../lib/config.ts";
import { checkPortsFree, listenProblem, type PortUse } from "../lib/listen-check.ts";
import { runService } from "../lib/process.ts";
import { shutdownTracing } from "../lib/tracing.ts";
import { startWorkerHealthServer } from "../worker/health-server.ts";
import { startQuireWorker } from "../worker/runner.ts";

await runService("worker", async (config, logger) => {
  if (config.database.embedded) {
    throw new ConfigError(["DATABASE_URL is required for `npm run worker` (`npm start` runs the embedded setup)"]);
  }
  const { host } = config.http;
  const metricsPort: PortUse | null = config.metrics.port === null ? null : { variable: "METRICS_PORT", host, port: config.metrics.port };
  const healthPort: PortUse | null = config.worker.healthPort === null ? null : { variable: "WORKER_HEALTH_PORT", host, port: config.worker.healthPort };
  await checkPortsFree([metricsPort, healthPort].filter((use) => use !== null));
  await checkSchema({ variable: "DATABASE_URL", url: config.database.url }, logger);
  const pool = createPool({ url: config.database.url, max: config.worker.concurrency + 2, applicationName: "quire-worker" }, logger);
  const worker = await startQuireWorker({ config, logger, pool }).catch(async (error: unknown) => {
    await pool.end();
    throw (metricsPort && listenProblem(metricsPort, error)) ?? error;
  });
  let stopping = false;
  const health = healthPort
    ? await startWorkerHealthServer({ host, port: healthPort.port, pool, stopping: () => stopping, logger }).catch(async (error: unknown) => {
        await worker.stop();
        await pool.end();
        throw listenProblem(healthPort, error) ?? error;
      })
    : null;
  return async () => {
    stopping = true;
    await worker.stop();
    await health?.close();
    await pool.end();
    await shutdownTracing();
  };
});
