// The audit sealer: every AUDIT_SEAL_INTERVAL_MS, chains the audit events committed since its last run into their
// organizations' hash chains (app_private.seal_audit_events), a batch at a time until none is left. Changes append
// their events unsealed and take no lock (migrations/committed/000022-audit-sealed-after-commit.sql), so an event
// waits about one interval to be sealed. Every worker process runs a sealer; the database lets one work at a time
// (the others' calls return 0 at once). A failed run (the database is down) is logged once per streak and retried
// on the next tick; runs never overlap, and a stalled statement gives up after its timeout.
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface AuditSealer {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

/** Events sealed per statement: one statement's work stays short, and a backlog takes several in a row. */
const batch = 2_000;
/** Longest one sealing statement may run before it counts as failed (pg's per-query query_timeout). */
const statementTimeoutMs = 30_000;

export function startAuditSealer(pool: pg.Pool, intervalMs: number, logger: Logger): AuditSealer {
  let failing = false;
  let running: Promise<void> | null = null;
  const run = async () => {
    for (;;) {
      // @types/pg lists query_timeout only on the client's config; pg reads it per query too (lib/client.js).
      const { rows } = await pool.query<{ sealed: number }>({
        text: "select app_private.seal_audit_events($1) as sealed",
        values: [batch],
        query_timeout: statementTimeoutMs,
      } as pg.QueryConfig);
      if ((rows[0]?.sealed ?? 0) < batch) return;
    }
  };
  const tick = () => {
    if (running) return;
    running = run()
      .then(
        () => {
          if (failing) logger.info("audit sealer recovered");
          failing = false;
        },
        (error: unknown) => {
          if (!failing) logger.warn({ err: error }, "audit sealer failed; retrying every interval (events wait unsealed meanwhile)");
          failing = true;
        },
      )
      .finally(() => {
        running = null;
      });
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
