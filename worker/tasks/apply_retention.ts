// apply_retention: daily, removes what the retention settings no longer keep, one organization per transaction
// (app_private.apply_retention_to: usage details, finished sync runs, finished jobs that left nothing behind,
// expired exports, audit events past their tier's retention, purged behind an anchor that the next checkpoint signs;
// for an erased organization, its audit log alone), then what is deployment-wide
// (app_private.apply_retention_everywhere: sign-in attempts, ended sessions, expired tokens). Each run, and what it
// removed of each kind, is counted in metrics (quire_retention_runs_total, quire_retention_removed_total).
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
    const removed: Record<string, number> = {};
    const add = (rows: ReadonlyArray<{ kind: string; removed: string }>) => {
      for (const row of rows) removed[row.kind] = (removed[row.kind] ?? 0) + Number(row.removed);
    };
    try {
      const organizations = await helpers.query<{ id: string }>("select id from app_private.retention_organizations() as id");
      for (const { id } of organizations.rows) {
        add((await helpers.query<{ kind: string; removed: string }>("select kind, removed from app_private.apply_retention_to($1, $2)", [id, maxPerRun])).rows);
      }
      add((await helpers.query<{ kind: string; removed: string }>("select kind, removed from app_private.apply_retention_everywhere()")).rows);
    } catch (error) {
      metrics?.recordRetention("failed", removed);
      throw error;
    }
    metrics?.recordRetention("succeeded", removed);
    helpers.logger.info(
      `apply_retention: removed ${Object.entries(removed)
        .map(([kind, count]) => `${count} ${kind}`)
        .join(", ")}`,
    );
  };
}
