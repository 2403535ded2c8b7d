// The graphile-worker runner plus this process's heartbeat. Signals are handled by lib/process.ts, which calls
// stop(), in this order so that no job is lost in a restart or a rolling deploy:
// 1. graphile-worker stops taking jobs and lets running ones finish; after SHUTDOWN_TIMEOUT_SECONDS their abort
//    signal fires, and a task cut short puts its job back in the queue due at once (its attempt not counted);
// 2. the heartbeat stops and unlocks any queue entry this process still holds (a job whose outcome could not be
//    recorded), so another worker runs it at once;
// 3. only then is the heartbeat row removed: until this process has let go of its jobs, no other worker treats them
//    as a dead worker's and runs them a second time.
// graphile-worker records a job's completion without awaiting it: if that write fails (database outage), the
// rejection is unhandled (lib/process.ts logs it and keeps running) and the entry stays locked by this process; the
// heartbeat unlocks it (worker/heartbeat.ts), and the job's token or fencing makes the re-run change nothing.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { EventEmitter } from "node:events";
import { run, type Job, type WorkerEvents } from "graphile-worker";
import { workerLogger } from "../lib/worker-logger.ts";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { createMetrics, startMetricsServer, type Metrics } from "../lib/metrics.ts";
import { startAuditSealer } from "./audit-sealer.ts";
import { startHeartbeat, type HeldJobs } from "./heartbeat.ts";
import { createMailer } from "../lib/mailer.ts";
import { createConnectors } from "../lib/integrations/connectors.ts";
import { createObjectStore } from "../lib/storage/index.ts";
import { createLlmProvider } from "../lib/llm/index.ts";
import { makeTaskList, schedules } from "./task-list.ts";
import { createCancellations } from "./cancellations.ts";
import { organizationLlm } from "./organization-llm.ts";
import { createEmbeddingsClient } from "../lib/llm/embeddings.ts";
import { createNotificationListener } from "../lib/notifications.ts";

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
  const held = trackHeldJobs(events, config.worker.heartbeatSeconds);
  metrics.observePool("worker", pool);
  const store = createObjectStore(config);
  // Its own LISTEN connection, for cancellations; a first failure is retried in the background (a cancellation missed
  // meanwhile only lets a run finish, its result dropped).
  const listener = createNotificationListener({
    url: config.database.url,
    logger,
    retryBaseMs: config.live.reconnectBaseMs,
    retryMaxMs: config.live.reconnectMaxMs,
    applicationName: "quire-worker-listener",
  });
  const cancellations = createCancellations(listener);
  await listener.start().catch(() => undefined);
  const taskList = makeTaskList({
    mailer: createMailer(config, logger),
    organizationLlm: organizationLlm({
      deployment: config.llm,
      defaultProvider: createLlmProvider(config.llm, metrics),
      keys: config.integrations.sealingKeys,
      metrics,
    }),
    cancellations,
    progressIntervalMs: config.answers.progressIntervalMs,
    embeddings: config.embeddings ? createEmbeddingsClient(config.embeddings) : null,
    answerPassages: config.answers.passages,
    role: config.database.authenticatedRole,
    runnerId: workerId,
    maxOutputTokens: config.llm.maxOutputTokens,
    llmRetry: config.llm.retry,
    liveEventRetentionHours: config.jobs.liveEventRetentionHours,
    connectors: createConnectors(config),
    keys: config.integrations.sealingKeys,
    auditCheckpoints: config.auditCheckpoints,
    store,
    metrics,
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
    // graphile-worker's own batching (WORKER_LOCAL_QUEUE_SIZE, WORKER_COMPLETE_BATCH_DELAY_MS).
    preset: {
      worker: {
        completeJobBatchDelay: config.worker.completeBatchDelayMs,
        ...(config.worker.localQueueSize > 1 ? { localQueue: { size: config.worker.localQueueSize } } : {}),
      },
    },
    // Running jobs get the whole shutdown timeout to finish before their abort signal fires (default 5 s).
    gracefulShutdownAbortTimeout: config.shutdownTimeoutMs,
    // graphile-worker puts whole jobs (payloads: job tokens, emails with their links) in its log lines' metadata.
    logger: workerLogger(logger.child({ workerId })),
  }).catch(async (error: unknown) => {
    await listener.close();
    throw error;
  });
  const metricsServer =
    !shared && config.metrics.port !== null
      ? await startMetricsServer({ metrics, host: config.http.host, port: config.metrics.port, logger }).catch(async (error: unknown) => {
          await runner.stop();
          await listener.close();
          throw error;
        })
      : null;
  const heartbeat = await startHeartbeat(pool, workerId, config.worker, held, logger).catch(async (error: unknown) => {
    await runner.stop();
    await metricsServer?.close();
    await listener.close();
    throw error;
  });
  const sealer = startAuditSealer(pool, config.worker.auditSealIntervalMs, logger);
  let stopping = false;
  // The runner can end by itself (graphile-worker gives up after a fatal error): this process then takes no more
  // jobs, so it stops reporting in too — readiness fails, and its jobs are released to live workers.
  const ended = (error: unknown) => {
    if (stopping) return;
    logger.error({ err: error, workerId }, "the job runner stopped by itself; this worker no longer reports in");
    void heartbeat.stop();
  };
  runner.promise.then(() => ended(null), ended);
  logger.info({ workerId, concurrency: config.worker.concurrency }, "worker started");
  return {
    workerId,
    async stop() {
      stopping = true;
      await runner.stop().catch((error: unknown) => logger.warn({ err: error, workerId }, "the job runner had stopped already"));
      await listener.close();
      await sealer.stop();
      await heartbeat.stop();
      await metricsServer?.close();
      store.close();
      logger.info({ workerId }, "worker stopped");
    },
  };
}

/**
 * The graphile-worker jobs this process holds, from the runner's events: those running, and those finished within
 * the last two beats (at least 10 s), whose completion may still be on its way to the database.
 */
function trackHeldJobs(events: WorkerEvents, heartbeatSeconds: number): HeldJobs {
  let lockId: string | null = null;
  const running = new Set<string>();
  const finished = new Map<string, number>();
  const graceMs = Math.max(10_000, 2 * heartbeatSeconds * 1000);
  const finish = (job: Job | null) => {
    if (!job) return;
    running.delete(job.id);
    finished.set(job.id, Date.now());
  };
  events.on("pool:create", ({ workerPool }) => {
    lockId = workerPool.id;
  });
  events.on("job:start", ({ job }) => running.add(job.id));
  events.on("job:complete", ({ job }) => finish(job));
  // A worker that could not release its job stops without job:complete.
  events.on("worker:fatalError", ({ worker }) => finish(worker.getActiveJob()));
  return {
    lockId: () => lockId,
    keep() {
      const now = Date.now();
      for (const [id, at] of finished) if (now - at > graceMs) finished.delete(id);
      return [...running, ...finished.keys()];
    },
  };
}
