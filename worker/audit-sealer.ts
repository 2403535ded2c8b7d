// The audit sealer: every AUDIT_SEAL_INTERVAL_MS, chains the audit events committed since its last run into their
// organizations' hash chains (app_private.seal_audit_events), a batch at a time until none is left. Changes append
// their events unsealed and take no lock (migrations/committed/000022-audit-sealed-after-commit.sql), so an event
// waits about one interval to be sealed. Every worker process runs a sealer; the database lets one work at a time
// (the others' calls return 0 at once). Runs never overlap, failures are retried on the next tick (lib/periodic.ts),
// and a stalled statement gives up after its timeout.
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import { startPeriodic, type Periodic } from "../lib/periodic.ts";

/** Events sealed per statement: one statement's work stays short, and a backlog takes several in a row. */
const batch = 2_000;
/** Longest one sealing statement may run before it counts as failed (pg's per-query query_timeout). */
const statementTimeoutMs = 30_000;

export function startAuditSealer(pool: pg.Pool, intervalMs: number, logger: Logger): Periodic {
  return startPeriodic({
    name: "audit sealer",
    intervalMs,
    logger,
    async run() {
      for (;;) {
        // @types/pg lists query_timeout only on the client's config; pg reads it per query too (lib/client.js).
        const { rows } = await pool.query<{ sealed: number }>({
          text: "select app_private.seal_audit_events($1) as sealed",
          values: [batch],
          query_timeout: statementTimeoutMs,
        } as pg.QueryConfig);
        if ((rows[0]?.sealed ?? 0) < batch) return;
      }
    },
  });
}
