// `npm run worker`: the job runner alone, as production runs it. Needs DATABASE_URL (see server/main.ts).
// With METRICS_PORT it serves its own /metrics there (jobs, queue, its pool, LLM calls): startQuireWorker, given no
// shared metrics, starts that server and closes it in stop().
// With OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first and its last spans are sent after the pool is closed.
import "../lib/start-tracing.ts";
import "../lib/graphile-env.ts";
import { createPool } from "../db/pool.ts";
import { ConfigError } from "../lib/config.ts";
import { runService } from "../lib/process.ts";
import { shutdownTracing } from "../lib/tracing.ts";
import { startQuireWorker } from "./runner.ts";

await runService("worker", async (config, logger) => {
  if (config.database.embedded) {
    throw new ConfigError(["DATABASE_URL is required for `npm run worker` (`npm start` runs the embedded setup)"]);
  }
  const pool = createPool({ url: config.database.url, max: config.worker.concurrency + 2, applicationName: "quire-worker" }, logger);
  const worker = await startQuireWorker({ config, logger, pool });
  return async () => {
    await worker.stop();
    await pool.end();
    await shutdownTracing();
  };
});
