// prune_live_events: keeps the live-event outbox bounded. Scheduled hourly (worker/runner.ts); events older than
// LIVE_EVENT_RETENTION_HOURS can no longer be replayed with `since`.
import type { Task } from "graphile-worker";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      prune_live_events: Record<string, unknown>;
    }
  }
}

export function makePruneLiveEvents(retentionHours: number): Task<"prune_live_events"> {
  return async (_payload, helpers) => {
    const { rows } = await helpers.query<{ pruned: string }>("select app_private.prune_live_events(make_interval(hours => $1)) as pruned", [retentionHours]);
    helpers.logger.info(`prune_live_events: removed ${rows[0]?.pruned ?? 0} events`);
  };
}
