// The live-event numberer: every LIVE_NUMBER_INTERVAL_MS, numbers the live events committed since its last run and
// announces them on quire_live (app_private.number_live_events), a batch at a time until none is left. Changes
// append their events unnumbered, with no lock and no NOTIFY of their own
// (migrations/committed/000023-live-events-numbered-after-commit.sql), so an event reaches subscribers about half
// an interval after its change commits. Every API server runs one; the database lets one work at a time (the
// others' calls return 0 at once). Runs never overlap and failures are retried on the next tick (lib/periodic.ts).
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import { startPeriodic, type Periodic } from "../lib/periodic.ts";

/** Events numbered per statement. */
const batch = 1_000;
/** Longest one numbering statement may run before it counts as failed (pg's per-query query_timeout). */
const statementTimeoutMs = 10_000;

export function startLiveNumberer(pool: pg.Pool, intervalMs: number, logger: Logger): Periodic {
  return startPeriodic({
    name: "live-event numberer",
    intervalMs,
    logger,
    async run() {
      for (;;) {
        // @types/pg lists query_timeout only on the client's config; pg reads it per query too (lib/client.js).
        const { rows } = await pool.query<{ numbered: number }>({
          text: "select app_private.number_live_events($1) as numbered",
          values: [batch],
          query_timeout: statementTimeoutMs,
        } as pg.QueryConfig);
        if ((rows[0]?.numbered ?? 0) < batch) return;
      }
    },
  });
}
