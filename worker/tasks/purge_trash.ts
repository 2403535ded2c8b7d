// purge_trash: hourly, deletes for good the documents that have been in the trash longer than their organization's
// trashRetentionDays (default 30), with their summaries, revisions and files (their objects are queued for
// delete_stored_objects). At most 5,000 a run, so one run stays short; the next hour takes the rest.
import type { Task } from "graphile-worker";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      purge_trash: Record<string, unknown>;
    }
  }
}

export function makePurgeTrash(): Task<"purge_trash"> {
  return async (_payload, helpers) => {
    const { rows } = await helpers.query<{ purged: number }>("select app_private.purge_trash(5000) as purged");
    helpers.logger.info(`purge_trash: deleted ${rows[0]?.purged ?? 0} documents`);
  };
}
