// A worker process reports in every WORKER_HEARTBEAT_SECONDS so that readiness (and, later, the release of jobs
// held by dead workers) can tell live workers from dead ones. A failed beat is logged and retried on the next tick;
// it never stops the worker.
import { hostname } from "node:os";
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface Heartbeat {
  readonly workerId: string;
  /** Stops beating and removes this worker's row, so readiness stops counting it at once. */
  stop(): Promise<void>;
}

export async function startHeartbeat(pool: pg.Pool, workerId: string, intervalSeconds: number, logger: Logger): Promise<Heartbeat> {
  const beat = () => pool.query("select app_private.record_worker_heartbeat($1, $2, $3)", [workerId, hostname(), process.pid]);
  await beat();
  const timer = setInterval(() => {
    beat().catch((error: unknown) => logger.warn({ err: error, workerId }, "worker heartbeat failed"));
  }, intervalSeconds * 1000);
  timer.unref();
  return {
    workerId,
    async stop() {
      clearInterval(timer);
      await pool.query("select app_private.forget_worker($1)", [workerId]).catch((error: unknown) => {
        logger.warn({ err: error, workerId }, "could not remove worker heartbeat");
      });
    },
  };
}
