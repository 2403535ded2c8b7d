// The states a task moves its `jobs` row through, in the job's RLS context (worker/job-context.ts). A row changes
// only while its job token still opens it, i.e. while it is queued or running: a cancelled or finished job stays
// as it is, whatever a late or duplicate delivery does.
import type { JobHelpers } from "graphile-worker";
import type { PoolClient } from "pg";
import { addToLogContext } from "../lib/log-context.ts";
import { inJobContext, type JobTicket } from "./job-context.ts";

/** What a task reads of its job when it starts. */
export interface StartedJob {
  readonly document_id: string | null;
  readonly template_version_id: string | null;
  readonly global_template_version_id: string | null;
  readonly integration_id: string | null;
  readonly summary_id: string | null;
  readonly params: Record<string, unknown>;
  readonly org_id: string;
  /** The member who asked for the job; null once they left the organization. */
  readonly requested_by: string | null;
}

/**
 * Marks the job running (one more attempt); null when it is no longer queued or running. From here on the job's log
 * lines name its organization and requester.
 */
export async function startJob(client: PoolClient): Promise<StartedJob | null> {
  const { rows } = await client.query<StartedJob>(
    `update app_public.jobs j
        set status = 'running', attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
      where j.id = app_public.current_job_id()
  returning j.document_id, j.template_version_id, j.global_template_version_id, j.integration_id, j.summary_id, j.params,
            j.org_id, j.requested_by`,
  );
  const started = rows[0] ?? null;
  if (started) addToLogContext({ orgId: started.org_id, ...(started.requested_by ? { userId: started.requested_by } : {}) });
  return started;
}

/** Sets the job's outcome while it is this task's to set; `queued` means a retry follows. */
export async function settleJob(client: PoolClient, status: "failed" | "queued", code: string, message: string): Promise<void> {
  await client.query(
    `update app_public.jobs j
        set status = $1::app_public.job_status, error_code = $2, error_message = left($3, 1000),
            finished_at = case when $1 = 'failed' then now() end
      where j.id = app_public.current_job_id()`,
    [status, code, message],
  );
}

/** Locks the job if it is still running (so a concurrent cancel waits); false when it is not. */
export async function lockRunningJob(client: PoolClient): Promise<boolean> {
  const locked = await client.query("select 1 from app_public.jobs j where j.id = app_public.current_job_id() and j.status = 'running' for update");
  return locked.rowCount === 1;
}

/** Marks the (locked, running) job succeeded, linking the summary it made or published, if any. */
export async function succeedJob(client: PoolClient, summaryId: string | null = null): Promise<void> {
  await client.query(
    `update app_public.jobs j
        set status = 'succeeded', finished_at = now(), error_code = null, error_message = null, summary_id = coalesce($1, j.summary_id)
      where j.id = app_public.current_job_id()`,
    [summaryId],
  );
}

export const isLastAttempt = (helpers: JobHelpers) => helpers.job.attempts >= helpers.job.max_attempts;

/** Marks the job failed on its last attempt, when even that fails (the original error is what gets rethrown). */
export async function failQuietly(helpers: JobHelpers, ticket: JobTicket, role: string, code: string, message: string): Promise<void> {
  await inJobContext(helpers, ticket, { role }, (client) => settleJob(client, "failed", code, message)).catch((error: unknown) => {
    helpers.logger.error(`could not mark job ${ticket.jobId} failed: ${String(error)}`);
  });
}
