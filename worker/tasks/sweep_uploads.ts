// sweep_uploads: hourly, ends the storage reservations of uploads that never finished (a server stopped between
// storing an original and committing its document): their objects are queued for deletion and their room in the
// allowance given back. An upload takes seconds; an hour is far past any that is still running.
import type { Task } from "graphile-worker";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      sweep_uploads: Record<string, unknown>;
    }
  }
}

export function makeSweepUploads(): Task<"sweep_uploads"> {
  return async (_payload, helpers) => {
    const { rows } = await helpers.query<{ swept: number }>("select app_private.sweep_pending_uploads(interval '1 hour') as swept");
    helpers.logger.info(`sweep_uploads: ended ${rows[0]?.swept ?? 0} reservations`);
  };
}
