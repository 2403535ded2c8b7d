// A worker process reports in every WORKER_HEARTBEAT_SECONDS so that readiness and the release of jobs held by dead
// workers can tell live workers from dead ones. On each beat it also releases the jobs of processes silent for
// longer than READY_WORKER_MAX_AGE_SECONDS (graphile-worker alone would keep them locked for four hours), so a job
// whose worker was killed runs again within about that time. A failed beat is logged and retried on the next tick;
// it never stops the worker.
import { hostname } from "node:os";
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface Heartbeat {
  readonly workerId: string;
  /** Stops beating and removes this worker's row, so readiness stops counting it at once. */
  stop(): Promise<void>;
}

export interface HeartbeatOptions {
  /** WORKER_HEARTBEAT_SECONDS: how often to report in. */
  readonly heartbeatSeconds: number;
  /** READY_WORKER_MAX_AGE_SECONDS: silence after which another process counts as dead. */
  readonly readyMaxAgeSeconds: number;
}

export async function startHeartbeat(pool: pg.Pool, workerId: string, options: HeartbeatOptions, logger: Logger): Promise<Heartbeat> {
  const beat = async () => {
    await pool.query("select app_private.record_worker_heartbeat($1, $2, $3)", [workerId, hostname(), process.pid]);
    const { rows } = await pool.query<{ released: number }>("select app_private.release_dead_workers($1) as released", [options.readyMaxAgeSeconds]);
    const released = rows[0]?.released ?? 0;
    if (released > 0) logger.warn({ workerId, released }, "released the jobs of worker processes that stopped reporting in");
  };
  await beat();
  const timer = setInterval(() => {
    beat().catch((error: unknown) => logger.warn({ err: error, workerId }, "worker heartbeat failed"));
  }, options.heartbeatSeconds * 1000);
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
