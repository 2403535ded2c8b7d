// The live-event numberer: every LIVE_NUMBER_INTERVAL_MS, numbers the live events committed since its last run and
// announces them on quire_live (app_private.number_live_events), a batch at a time until none is left. Changes
// append their events unnumbered, with no lock and no NOTIFY of their own
// (section "Live events" of migrations/committed/000001-quire.sql), so an event reaches subscribers about half
// an interval after its change commits. Every API server runs one; the database lets one work at a time (the
// others' calls return 0 at once). Runs never overlap and failures are retried on the next tick (lib/periodic.ts).
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import { startBatches, type Periodic } from "../lib/periodic.ts";

export function startLiveNumberer(pool: pg.Pool, intervalMs: number, logger: Logger): Periodic {
  return startBatches(
    pool,
    { name: "live-event numberer", text: "select app_private.number_live_events($1) as done", batch: 1_000, statementTimeoutMs: 10_000, intervalMs },
    logger,
  );
}
