// A task the process runs every few milliseconds or seconds against the database (the audit sealer, the live-event
// numberer): never two runs at once (a tick while one runs is skipped), a failure logged once per streak and
// retried on the next tick, never stopping the process, and stop() that waits for the run in progress.
import type { Logger } from "./logger.ts";

export interface Periodic {
  /** Runs now unless a run is in progress (then that run is the one to wait for). */
  kick(): Promise<void>;
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
    kick,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
