// A task the process runs every few milliseconds or seconds against the database (the audit sealer, the live-event
// numberer): never two runs at once (a tick while one runs is skipped), a failure logged once per streak and
// retried on the next tick, never stopping the process, and stop() that waits for the run in progress.
import type pg from "pg";
import type { Logger } from "./logger.ts";
import { timedQuery } from "./timed-query.ts";

export interface Periodic {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

export interface PeriodicOptions {
  /** Names the task in log lines. */
  readonly name: string;
  readonly intervalMs: number;
  readonly logger: Logger;
  /** One run; rejects when it failed. */
  readonly run: () => Promise<void>;
}

export function startPeriodic({ name, intervalMs, logger, run }: PeriodicOptions): Periodic {
  let failing = false;
  let running: Promise<void> | null = null;
  let stopped = false;
  const kick = (): Promise<void> => {
    if (running) return running;
    if (stopped) return Promise.resolve();
    running = run()
      .then(
        () => {
          if (failing) logger.info(`${name} recovered`);
          failing = false;
        },
        (error: unknown) => {
          if (!failing) logger.warn({ err: error }, `${name} failed; retrying every ${intervalMs} ms`);
          failing = true;
        },
      )
      .finally(() => {
        running = null;
      });
    return running;
  };
  const timer = setInterval(() => void kick(), intervalMs);
  timer.unref();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}

export interface BatchesOptions {
  /** Names the task in log lines. */
  readonly name: string;
  /** A statement taking the batch size as $1 and answering, as `done`, how many it did. */
  readonly text: string;
  readonly batch: number;
  /** Longest one statement may run before the run counts as failed. */
  readonly statementTimeoutMs: number;
  readonly intervalMs: number;
}

/** Runs `text` every `intervalMs`, and again at once while its batches come back full, until it has caught up. */
export function startBatches(pool: pg.Pool, { name, text, batch, statementTimeoutMs, intervalMs }: BatchesOptions, logger: Logger): Periodic {
  return startPeriodic({
    name,
    intervalMs,
    logger,
    async run() {
      for (;;) {
        const { rows } = await pool.query<{ done: number }>(timedQuery(text, [batch], statementTimeoutMs));
        if ((rows[0]?.done ?? 0) < batch) return;
      }
    },
  });
}
