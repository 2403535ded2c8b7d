// apply_retention: daily, removes what the retention settings no longer keep (app_private.apply_retention): usage
// details, finished sync runs, finished jobs that left nothing behind, audit events past their tier's retention
// (purged with an anchor that the next checkpoint signs), sign-in attempts, ended sessions, expired tokens and
// expired exports. Each run, and what it removed of each kind, is counted in metrics
// (quire_retention_runs_total, quire_retention_removed_total).
import type { Task } from "graphile-worker";
import type { Metrics } from "../../lib/metrics.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      apply_retention: Record<string, unknown>;
    }
  }
}

/** Rows of each kind per organization and run: the next run takes the rest. */
const maxPerRun = 10_000;

export function makeApplyRetention(metrics: Metrics | undefined): Task<"apply_retention"> {
  return async (_payload, helpers) => {
    let rows: Array<{ kind: string; removed: string }>;
    try {
      ({ rows } = await helpers.query<{ kind: string; removed: string }>("select kind, removed from app_private.apply_retention($1)", [maxPerRun]));
    } catch (error) {
      metrics?.recordRetention("failed", {});
      throw error;
    }
    metrics?.recordRetention("succeeded", Object.fromEntries(rows.map((r) => [r.kind, Number(r.removed)])));
    helpers.logger.info(`apply_retention: removed ${rows.map((r) => `${r.removed} ${r.kind}`).join(", ")}`);
  };
}
