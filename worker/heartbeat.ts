// A worker process reports in every WORKER_HEARTBEAT_SECONDS, with its graphile-worker lock id, so that readiness
// and the release of jobs held by dead workers can tell live workers from dead ones. On each beat it also:
// - releases the queue entries of processes silent for longer than READY_WORKER_MAX_AGE_SECONDS, whatever their
//   jobs' status (graphile-worker alone would keep them locked for four hours), so a job whose worker was killed
//   runs again within about that time (app_private.release_dead_workers);
// - unlocks the queue entries this process still holds but no longer runs: graphile-worker records a job's
//   completion or failure without waiting for it, so when that write fails (a database outage) the entry would
//   otherwise stay locked by this live process for four hours. Entries of jobs running, or finished moments ago
//   (their completion may still be on its way), are kept.
// Ages are measured by the database's clock alone, so clocks of different hosts never disagree. A failed beat
// (the database is down) is logged once per streak and retried on the next tick; it never stops the worker, and
// beats never overlap.
import { hostname } from "node:os";
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import { timedQuery } from "../lib/timed-query.ts";

export interface Heartbeat {
  readonly workerId: string;
  /**
   * Stops beating (once; later calls wait for the first), unlocks every queue entry this process still holds (call it once the runner has stopped: any
   * left is a job whose outcome could not be recorded, due again at once) and removes this worker's row, so
   * readiness stops counting it.
   */
  stop(): Promise<void>;
}

export interface HeartbeatOptions {
  /** WORKER_HEARTBEAT_SECONDS: how often to report in. */
  readonly heartbeatSeconds: number;
  /** READY_WORKER_MAX_AGE_SECONDS: silence after which another process counts as dead. */
  readonly readyMaxAgeSeconds: number;
}

/** What this process holds, as graphile-worker sees it. */
export interface HeldJobs {
  /** The worker pool's lock id (graphile-worker's locked_by), once known. */
  lockId(): string | null;
  /** The graphile-worker job ids running now or finished within the last beats, which must stay locked. */
  keep(): string[];
}

/** Seconds an entry must have been locked before a beat unlocks it (it may have just been taken). */
const minLockedSeconds = 5;

export async function startHeartbeat(pool: pg.Pool, workerId: string, options: HeartbeatOptions, held: HeldJobs, logger: Logger): Promise<Heartbeat> {
  // Each statement gives up after one beat (at least 2 s): a stalled connection must neither stop the beats nor hold
  // shutdown.
  const timeoutMs = Math.max(2_000, options.heartbeatSeconds * 1000);
  const query = <R extends pg.QueryResultRow>(text: string, values: unknown[]) => pool.query<R>(timedQuery(text, values, timeoutMs));
  const beat = async () => {
    const lockId = held.lockId();
    await query("select app_private.record_worker_heartbeat($1, $2, $3, $4)", [workerId, hostname(), process.pid, lockId]);
    const { rows } = await query<{ released: number }>("select app_private.release_dead_workers($1) as released", [options.readyMaxAgeSeconds]);
    const released = rows[0]?.released ?? 0;
    if (released > 0) logger.warn({ workerId, released }, "released the jobs of worker processes that stopped reporting in");
    if (lockId) {
      const own = await query<{ unlocked: number }>("select app_private.unlock_worker_jobs($1, $2::bigint[], $3) as unlocked", [
        lockId,
        held.keep(),
        minLockedSeconds,
      ]);
      const unlocked = own.rows[0]?.unlocked ?? 0;
      if (unlocked > 0) logger.warn({ workerId, unlocked }, "unlocked jobs whose outcome this worker could not record; they run again");
    }
  };
  await beat();
  let failing = false;
  let beating: Promise<void> | null = null;
  const tick = () => {
    if (beating) return;
    beating = beat()
      .then(
        () => {
          if (failing) logger.info({ workerId }, "worker heartbeat recovered");
          failing = false;
        },
        (error: unknown) => {
          if (!failing) logger.warn({ err: error, workerId }, "worker heartbeat failed; retrying every beat");
          failing = true;
        },
      )
      .finally(() => {
        beating = null;
      });
  };
  const timer = setInterval(tick, options.heartbeatSeconds * 1000);
  timer.unref();
  let stopped: Promise<void> | null = null;
  const stop = async () => {
    clearInterval(timer);
    await beating;
    const lockId = held.lockId();
    if (lockId) {
      await query("select app_private.unlock_worker_jobs($1, '{}', 0)", [lockId]).catch((error: unknown) => {
        logger.warn({ err: error, workerId }, "could not unlock this worker's jobs; live workers release them once its heartbeat is old");
      });
    }
    await query("select app_private.forget_worker($1)", [workerId]).catch((error: unknown) => {
      logger.warn({ err: error, workerId }, "could not remove worker heartbeat");
    });
  };
  return {
    workerId,
    stop: () => (stopped ??= stop()),
  };
}
