// A worker task acts for one organization through the same row-level security as its users: inside a transaction
// it switches to the authenticated role and presents the job's id and token (settings quire.job_id and
// quire.job_token), which the database accepts only while the job is queued or running. current_org_id() is then
// the job's organization and current_job_id() the job, so the task can read that organization's rows and write
// only its own job's results — the database, not this code, keeps it inside its tenant.
//
// Each run (one delivery of the job to a worker) has its own id, which its first transaction claims
// (app_private.claim_job_run). From then on only that run opens the job's context (setting quire.job_run), and every
// transaction first holds the claim (app_private.hold_job_run), so a stale run — one whose worker was presumed dead
// and whose job another worker took over — can never change the job again: its transactions throw RunSuperseded.
import type { JobHelpers } from "graphile-worker";
import type { PoolClient } from "pg";
import { isUuid } from "../lib/uuid.ts";

/** The graphile-worker payload of a Quire job: its id and the secret that opens its RLS context. */
export interface JobTicket {
  readonly jobId: string;
  readonly token: string;
}

export const isJobTicket = (payload: unknown): payload is JobTicket => {
  const p = payload as Partial<JobTicket> | null;
  return isUuid(p?.jobId) && typeof p.token === "string" && p.token.length > 0;
};

/** A transaction of a run that another run of the same job has superseded: it changed nothing. */
export class RunSuperseded extends Error {
  constructor(jobId: string) {
    super(`job ${jobId} was taken over by another run`);
    this.name = "RunSuperseded";
  }
}

export interface JobContextOptions {
  /** DATABASE_AUTHENTICATED_ROLE: the role the transaction switches to. */
  readonly role: string;
  /** This run's id (a random uuid per delivery of the job). */
  readonly runId: string;
  /** Runs first, as the authenticator, before the switch (for the few app_private calls granted to it). */
  readonly before?: (client: PoolClient) => Promise<void>;
}

/**
 * Runs `fn` in one transaction in the job's RLS context; commits if it resolves, rolls back if it throws. Throws
 * RunSuperseded (before `fn`) when another run has claimed the job.
 */
export function inJobContext<T>(helpers: JobHelpers, ticket: JobTicket, options: JobContextOptions, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  return helpers.withPgClient(async (client) => {
    await client.query("begin");
    try {
      await options.before?.(client);
      const held = await client.query<{ held: boolean }>("select app_private.hold_job_run($1, $2) as held", [ticket.jobId, options.runId]);
      if (!held.rows[0]?.held) throw new RunSuperseded(ticket.jobId);
      await client.query(
        "select set_config('role', $1, true), set_config('quire.job_id', $2, true), set_config('quire.job_token', $3, true), set_config('quire.job_run', $4, true)",
        [options.role, ticket.jobId, ticket.token, options.runId],
      );
      const result = await fn(client);
      await client.query("commit");
      return result;
    } catch (error) {
      await client.query("rollback").catch(() => undefined);
      throw error;
    }
  });
}
