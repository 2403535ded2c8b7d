// The states a task moves its `jobs` row through, in the job's RLS context (worker/job-context.ts). A row changes
// only while its job token still opens it, i.e. while it is queued or running: a cancelled or finished job stays
// as it is, whatever a late or duplicate delivery does — and only the run that claimed it last changes it
// (worker/job-context.ts).
import type { JobHelpers } from "graphile-worker";
import type { PoolClient } from "pg";
import type { JobErrorCode } from "../lib/errors.ts";
import { addToLogContext } from "../lib/log-context.ts";
import { inJobContext, type JobContextOptions, type JobTicket } from "./job-context.ts";

/**
 * The `before` step of a run's first transaction: makes this run the job's only one (a run still going elsewhere can
 * no longer change it) and records this process's heartbeat id and graphile-worker lock id, so the job is released
 * if this process dies.
 */
export const claimRun = (helpers: JobHelpers, ticket: JobTicket, runId: string, runnerId: string) => async (client: PoolClient) => {
  await client.query("select app_private.claim_job_run($1, $2, $3, $4)", [ticket.jobId, runId, runnerId, helpers.job.locked_by ?? null]);
};

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
export async function settleJob(client: PoolClient, status: "failed" | "queued", code: JobErrorCode, message: string): Promise<void> {
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

/**
 * Puts the job back in the queue due in `delayMs` (by the database's clock) without using up an attempt
 * (app_hidden.retry_job_later); the run must then return normally, so graphile-worker completes its current entry.
 * False when the job is no longer queued or running.
 */
export async function retryLater(client: PoolClient, delayMs: number, code: JobErrorCode, message: string): Promise<boolean> {
  const { rows } = await client.query<{ queued: boolean }>("select app_hidden.retry_job_later(make_interval(secs => $1 / 1000.0), $2, $3) as queued", [
    Math.max(0, Math.round(delayMs)),
    code,
    message,
  ]);
  return rows[0]?.queued === true;
}

/** How long (ms, by the database's clock) the job's transient failures have lasted: 0 on the first. */
export async function failingForMs(client: PoolClient): Promise<number> {
  const { rows } = await client.query<{ ms: number | null }>("select (extract(epoch from now() - app_hidden.job_failing_since()) * 1000)::float8 as ms");
  return rows[0]?.ms ?? 0;
}

export const isLastAttempt = (helpers: JobHelpers) => helpers.job.attempts >= helpers.job.max_attempts;

/** True once graphile-worker has aborted this run because the worker is stopping. */
export const isShuttingDown = (helpers: JobHelpers) => helpers.abortSignal?.aborted === true;

/** Marks the job failed on its last attempt, when even that fails (the original error is what gets rethrown). */
export async function failQuietly(helpers: JobHelpers, ticket: JobTicket, options: JobContextOptions, code: JobErrorCode, message: string): Promise<void> {
  await inJobContext(helpers, ticket, options, (client) => settleJob(client, "failed", code, message)).catch((error: unknown) => {
    helpers.logger.error(`could not mark job ${ticket.jobId} failed: ${String(error)}`);
  });
}
