// The audit sealer: every AUDIT_SEAL_INTERVAL_MS, chains the audit events committed since its last run into their
// organizations' hash chains (app_private.seal_audit_events), a batch at a time until none is left. Changes append
// their events unsealed and take no lock (section "Audit log" of migrations/committed/000001-quire.sql), so an event
// waits about one interval to be sealed. Every worker process runs a sealer; the database lets one work at a time
// (the others' calls return 0 at once). Runs never overlap, failures are retried on the next tick (lib/periodic.ts),
// and a stalled statement gives up after its timeout.
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import { startBatches, type Periodic } from "../lib/periodic.ts";

export function startAuditSealer(pool: pg.Pool, intervalMs: number, logger: Logger): Periodic {
  // Batches of 2,000 keep one statement short; a backlog takes several in a row.
  return startBatches(
    pool,
    { name: "audit sealer", text: "select app_private.seal_audit_events($1) as done", batch: 2_000, statementTimeoutMs: 30_000, intervalMs },
    logger,
  );
}
