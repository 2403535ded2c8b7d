// The graphile-worker runner plus this process's heartbeat. Signals are handled by lib/process.ts, which calls
// stop(): graphile-worker then stops taking jobs, lets running ones finish (their abort signal fires after
// 5 s), and releases its connections.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import { run } from "graphile-worker";
import { workerLogger } from "../db/migrate.ts";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
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
}

export async function startQuireWorker({ config, logger, pool }: WorkerOptions): Promise<QuireWorker> {
  const workerId = `quire-${randomUUID()}`;
  const runner = await run({
    pgPool: pool,
    taskList: makeTaskList({
      mailer: createMailer(config, logger),
      llm: createLlmProvider(config.llm),
      role: config.database.authenticatedRole,
      runnerId: workerId,
      maxOutputTokens: config.llm.maxOutputTokens,
      liveEventRetentionHours: config.jobs.liveEventRetentionHours,
      connectors: createConnectors(config),
      keys: config.integrations.sealingKeys,
    }),
    // Declared in code; without this graphile-worker would look for a ./crontab file.
    parsedCronItems: schedules,
    concurrency: config.worker.concurrency,
    noHandleSignals: true,
    logger: workerLogger(logger.child({ workerId })),
  });
  const heartbeat = await startHeartbeat(pool, workerId, config.worker, logger).catch(async (error: unknown) => {
    await runner.stop();
    throw error;
  });
  logger.info({ workerId, concurrency: config.worker.concurrency }, "worker started");
  return {
    workerId,
    async stop() {
      await heartbeat.stop();
      await runner.stop();
      logger.info({ workerId }, "worker stopped");
    },
  };
}
