// Liveness and readiness. /health says the process is alive and serving (no I/O, so a slow database never makes
// an orchestrator kill a healthy process). /health/ready says whether this instance should get traffic: the
// database answers and its schema is the one this code ships. Whether some worker reported in recently is shown
// there too, as information only: a worker outage must not take every API instance out of its load balancer (the
// API still takes requests; jobs wait in the queue). /health/workers answers 503 for it, for monitoring, and each
// worker has its own health endpoint (worker/health-server.ts).
import { Router } from "express";
import type pg from "pg";
import { timedQuery } from "../lib/timed-query.ts";
import { latestCommittedMigration } from "../db/migrate.ts";

export interface ReadinessOptions {
  readonly pool: pg.Pool;
  /** A worker heartbeat older than this many seconds counts as no worker. */
  readonly workerMaxAgeSeconds: number;
  /** True once shutdown began: the instance reports itself not ready so traffic drains away. */
  readonly stopping: () => boolean;
}

type Check = { ok: true } | { ok: false; reason: string };

export interface Readiness {
  /** Database and migrations: what decides whether this instance gets traffic. */
  readonly ready: boolean;
  readonly checks: { database: Check; migrations: Check };
  /** Whether some worker reported in within the limit; reported, never part of `ready`. */
  readonly workers: Check;
}

const expectedMigration = latestCommittedMigration();

export async function checkReadiness({ pool, workerMaxAgeSeconds }: ReadinessOptions): Promise<Readiness> {
  let row: { latest_migration: string | null; worker_seen_seconds_ago: number | null };
  try {
    const result = await pool.query<typeof row>(timedQuery("select latest_migration, worker_seen_seconds_ago from app_private.readiness()", [], 2_000));
    row = result.rows[0]!;
  } catch (error) {
    // The driver's code (ECONNREFUSED, 57P03, …) helps an operator; its message can name hosts, so it stays out.
    const reason = `database unreachable (${(error as { code?: string }).code ?? "no answer"})`;
    const unknown: Check = { ok: false, reason: "database unreachable" };
    return { ready: false, checks: { database: { ok: false, reason }, migrations: unknown }, workers: unknown };
  }
  const migrations: Check =
    row.latest_migration === expectedMigration
      ? { ok: true }
      : { ok: false, reason: `database has ${row.latest_migration ?? "no migrations"}, code expects ${expectedMigration}` };
  const age = row.worker_seen_seconds_ago;
  const workers: Check =
    age !== null && age <= workerMaxAgeSeconds
      ? { ok: true }
      : { ok: false, reason: age === null ? "no worker has reported in" : `last worker heartbeat ${Math.round(age)} s ago` };
  return { ready: migrations.ok, checks: { database: { ok: true }, migrations }, workers };
}

export function healthRouter(options: ReadinessOptions): Router {
  const router = Router();
  router.get("/health", (_req, res) => {
    res.json({ status: "ok" });
  });
  router.get("/health/ready", async (_req, res) => {
    if (options.stopping()) {
      res.status(503).json({ status: "stopping" });
      return;
    }
    const { ready, checks, workers } = await checkReadiness(options);
    res.status(ready ? 200 : 503).json({ status: ready ? "ready" : "not_ready", checks, workers });
  });
  // For monitoring, not for load balancers: whether the deployment's workers are reporting in.
  router.get("/health/workers", async (_req, res) => {
    const { workers } = await checkReadiness(options);
    res.status(workers.ok ? 200 : 503).json({ status: workers.ok ? "ok" : "no_workers", workers });
  });
  return router;
}
