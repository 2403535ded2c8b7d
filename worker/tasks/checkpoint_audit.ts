// checkpoint_audit: signs a checkpoint of every audit chain whose head moved since its last checkpoint, and of every
// purge anchor not yet signed (lib/audit-checkpoints.ts), writes each to the configured sinks and to the log (an info
// line with the signed checkpoint in `auditCheckpoint`: a deliberate record, holding nothing secret), and only then
// records it in the database, so a checkpoint a sink refused is made again on the next run. Scheduled every minute
// (worker/task-list.ts) and queued on demand by app_admin.checkpoint_audit_chains() and by every purge.
import type { Task } from "graphile-worker";
import { signCheckpoint, writeCheckpoint, type AuditCheckpointSettings } from "../../lib/audit-checkpoints.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      checkpoint_audit: Record<string, unknown>;
    }
  }
}

interface Due {
  org_id: string;
  kind: "head" | "anchor";
  seq: string;
  hash: Buffer;
}

/** Chains checkpointed per query; a run goes on while batches come back full, up to maxBatches. */
const batchSize = 200;
const maxBatches = 50;

export function makeCheckpointAudit(settings: AuditCheckpointSettings | undefined): Task<"checkpoint_audit"> {
  return async (_payload, helpers) => {
    const key = settings?.key;
    if (!settings || !key) {
      helpers.logger.error("checkpoint_audit: AUDIT_CHECKPOINT_KEY is not configured; audit chains are not checkpointed");
      return;
    }
    let made = 0;
    const failed = new Set<string>();
    for (let batch = 0; batch < maxBatches; batch++) {
      const { rows } = await helpers.query<Due>("select * from app_private.audit_checkpoints_due($1)", [batchSize + failed.size]);
      const todo = rows.filter((row) => !failed.has(`${row.org_id}/${row.kind}`));
      for (const row of todo) {
        const checkpoint = await signCheckpoint(key, {
          org: row.org_id,
          kind: row.kind,
          seq: Number(row.seq),
          hash: row.hash.toString("hex"),
          time: new Date().toISOString(),
        });
        try {
          await writeCheckpoint(checkpoint, settings);
        } catch (error) {
          failed.add(`${row.org_id}/${row.kind}`);
          helpers.logger.error(`checkpoint_audit: ${row.kind} checkpoint of ${row.org_id} not written: ${(error as Error).message}`);
          continue;
        }
        helpers.logger.info("audit checkpoint", { auditCheckpoint: checkpoint });
        await helpers.query("select app_private.record_audit_checkpoint($1, $2, $3, $4)", [row.org_id, row.kind, row.seq, row.hash]);
        made++;
      }
      if (rows.length < batchSize + failed.size) break;
    }
    helpers.logger.info(`checkpoint_audit: ${made} checkpoints made, ${failed.size} not written`);
    if (failed.size > 0) throw new Error(`${failed.size} audit checkpoints could not be written; they are retried on the next run`);
  };
}
