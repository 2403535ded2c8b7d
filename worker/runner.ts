// The graphile-worker runner plus this process's heartbeat. Signals are handled by lib/process.ts, which calls
// stop(): graphile-worker then stops taking jobs, lets running ones finish (their abort signal fires after
// 5 s), and releases its connections.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { EventEmitter } from "node:events";
import { run, type WorkerEvents } from "graphile-worker";
import { workerLogger } from "../db/migrate.ts";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { createMetrics, startMetricsServer, type Metrics } from "../lib/metrics.ts";
import { startHeartbeat } from "./heartbeat.ts";
import { createMailer } from "../lib/mailer.ts";
import { createConnectors } from "../lib/connectors.ts";
import { createLlmProvider } from "../lib/llm/index.ts";
import { makeTaskList, schedules } from "./task-list.ts";

export interface QuireWorker {
  readonly workerId: string;
  stop(): Promise<void>;
}

export interface WorkerOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** An authenticator pool for the worker alone, sized for its concurrency (owned by the caller). */
  readonly pool: pg.Pool;
  /**
   * Where job, queue, pool and LLM metrics are recorded: in `npm start` the server's, which serves them. Without it
   * the worker keeps its own and serves them on METRICS_PORT when that is set (`npm run worker`).
   */
  readonly metrics?: Metrics;
}

export async function startQuireWorker({ config, logger, pool, metrics: shared }: WorkerOptions): Promise<QuireWorker> {
  const workerId = `quire-${randomUUID()}`;
  const metrics = shared ?? createMetrics();
  const events: WorkerEvents = new EventEmitter();
  metrics.observeJobs(events);
  metrics.observePool("worker", pool);
  const taskList = makeTaskList({
    mailer: createMailer(config, logger),
    llm: createLlmProvider(config.llm, metrics),
    role: config.database.authenticatedRole,
    runnerId: workerId,
    maxOutputTokens: config.llm.maxOutputTokens,
    liveEventRetentionHours: config.jobs.liveEventRetentionHours,
    connectors: createConnectors(config),
    keys: config.integrations.sealingKeys,
  });
  metrics.observeJobQueue(pool, Object.keys(taskList), logger);
  const runner = await run({
    pgPool: pool,
    taskList,
    events,
    // Declared in code; without this graphile-worker would look for a ./crontab file.
    parsedCronItems: schedules,
    concurrency: config.worker.concurrency,
    noHandleSignals: true,
    logger: workerLogger(logger.child({ workerId })),
  });
  const metricsServer =
    !shared && config.metrics.port !== null
      ? await startMetricsServer({ metrics, host: config.http.host, port: config.metrics.port, logger }).catch(async (error: unknown) => {
          await runner.stop();
          throw error;
        })
      : null;
  const heartbeat = await startHeartbeat(pool, workerId, config.worker, logger).catch(async (error: unknown) => {
    await runner.stop();
    await metricsServer?.close();
    throw error;
  });
  logger.info({ workerId, concurrency: config.worker.concurrency }, "worker started");
  return {
    workerId,
    async stop() {
      await heartbeat.stop();
      await runner.stop();
      await metricsServer?.close();
      logger.info({ workerId }, "worker stopped");
    },
  };
}
