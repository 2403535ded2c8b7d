// delete_stored_objects: removes from object storage the objects whose rows are gone (a document emptied from the
// trash, an upload abandoned, an organization erased). The database queues their keys in the transaction that
// deleted the rows and adds this job (one job however many keys: its job key coalesces them), so an object is
// deleted only once its row's deletion committed. Batches of 500; a storage failure fails the run and
// graphile-worker retries it, and a key deleted twice is harmless.
import type { Task } from "graphile-worker";
import type { ObjectStore } from "../../lib/storage/object-store.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      delete_stored_objects: Record<string, never>;
    }
  }
}

const batchSize = 500;
/** Batches per run; what is left is taken by the next run (the job is added again while keys remain). */
const maxBatches = 20;

export function makeDeleteStoredObjects(store: ObjectStore): Task<"delete_stored_objects"> {
  return async (_payload, helpers) => {
    let deleted = 0;
    for (let batch = 0; batch < maxBatches; batch++) {
      const { rows } = await helpers.query<{ id: string; storage_key: string }>("select id, storage_key from app_private.storage_deletions_due($1)", [
        batchSize,
      ]);
      if (rows.length === 0) break;
      await store.delete(rows.map((row) => row.storage_key));
      await helpers.query("select app_private.storage_deletions_done($1::bigint[])", [rows.map((row) => row.id)]);
      deleted += rows.length;
      if (rows.length < batchSize) break;
      if (batch === maxBatches - 1) await helpers.addJob("delete_stored_objects", {}, { jobKey: "delete_stored_objects", maxAttempts: 10 });
    }
    helpers.logger.info(`delete_stored_objects: deleted ${deleted} objects`);
  };
}
