// A worker task acts for one organization through the same row-level security as its users: inside a transaction
// it switches to the authenticated role and presents the job's id and token (settings quire.job_id and
// quire.job_token), which the database accepts only while the job is queued or running. current_org_id() is then
// the job's organization and current_job_id() the job, so the task can read that organization's rows and write
// only its own job's results — the database, not this code, keeps it inside its tenant.
import type { JobHelpers } from "graphile-worker";
import type { PoolClient } from "pg";

/** The graphile-worker payload of a Quire job: its id and the secret that opens its RLS context. */
export interface JobTicket {
  readonly jobId: string;
  readonly token: string;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const isJobTicket = (payload: unknown): payload is JobTicket => {
  const p = payload as Partial<JobTicket> | null;
  return typeof p?.jobId === "string" && uuidPattern.test(p.jobId) && typeof p.token === "string" && p.token.length > 0;
};

export interface JobContextOptions {
  /** DATABASE_AUTHENTICATED_ROLE: the role the transaction switches to. */
  readonly role: string;
  /** Runs first, as the authenticator, before the switch (for the few app_private calls granted to it). */
  readonly before?: (client: PoolClient) => Promise<void>;
}

/** Runs `fn` in one transaction in the job's RLS context; commits if it resolves, rolls back if it throws. */
export function inJobContext<T>(helpers: JobHelpers, ticket: JobTicket, options: JobContextOptions, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  return helpers.withPgClient(async (client) => {
    await client.query("begin");
    try {
      await options.before?.(client);
      await client.query("select set_config('role', $1, true), set_config('quire.job_id', $2, true), set_config('quire.job_token', $3, true)", [
        options.role,
        ticket.jobId,
        ticket.token,
      ]);
      const result = await fn(client);
      await client.query("commit");
      return result;
    } catch (error) {
      await client.query("rollback").catch(() => undefined);
      throw error;
    }
  });
}
