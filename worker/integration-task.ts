// What the import, sync and publish tasks share: starting the job in its organization's RLS context, opening the
// integration's tokens through the database (only the job's own, connected integration opens), and turning
// provider failures into the job's outcome. Passing failures (429, 5xx, timeouts, worker shutdown) that outlive
// the client's own retries put the job back in the queue for graphile-worker's backoff while attempts remain; a
// refused refresh token (invalid_grant) fails the job with INTEGRATION_NEEDS_REAUTH — the integration is marked so
// and its other jobs stopped by the database; anything else that will not change fails it with its code. A run cut
// short by the worker's shutdown puts the job back in the queue due at once, without using up an attempt; a run
// another worker has taken over (RunSuperseded, worker/job-context.ts) stops without changing anything.
import { randomUUID } from "node:crypto";
import type { JobHelpers, Task } from "graphile-worker";
import type { PoolClient } from "pg";
import type { Connector, Connectors, IntegrationProvider } from "../lib/connectors.ts";
import { openIntegration, type IntegrationSession } from "../lib/integration-credentials.ts";
import { IntegrationError } from "../lib/integrations/errors.ts";
import type { SealingKeys } from "../lib/sealing.ts";
import { inJobContext, isJobTicket, RunSuperseded, type JobTicket } from "./job-context.ts";
import { claimRun, failQuietly, isLastAttempt, isShuttingDown, retryLater, settleJob, startJob, type StartedJob } from "./job-lifecycle.ts";

export interface IntegrationTaskDependencies {
  readonly connectors: Connectors;
  /** SEALING_KEYS; null: no integration can be used (every job fails NOT_CONFIGURED). */
  readonly keys: SealingKeys | null;
  /** DATABASE_AUTHENTICATED_ROLE. */
  readonly role: string;
  /** This process's heartbeat id. */
  readonly runnerId: string;
}

/** What a task body gets: its job, the integration, and transactions in the job's context. */
export interface IntegrationWork {
  readonly helpers: JobHelpers;
  readonly job: StartedJob & { readonly integration_id: string };
  readonly provider: IntegrationProvider;
  readonly connector: Connector;
  readonly session: IntegrationSession;
  readonly inJob: <T>(fn: (client: PoolClient) => Promise<T>) => Promise<T>;
}

/** A failure of the job as a whole, with the code and message stored on it. */
export class JobFailure extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "JobFailure";
    this.code = code;
  }
}

export function makeIntegrationTask(name: string, deps: IntegrationTaskDependencies, body: (work: IntegrationWork) => Promise<void>): Task {
  return async (payload, helpers) => {
    if (!isJobTicket(payload)) {
      helpers.logger.error(`${name}: malformed payload, dropped`);
      return;
    }
    try {
      await run(payload, helpers);
    } catch (error) {
      // Thrown, not returned: graphile-worker then leaves the queue entry, now the other run's, alone.
      if (error instanceof RunSuperseded) helpers.logger.warn(`${name}: job ${payload.jobId} was taken over by another run; this one stopped`);
      throw error;
    }
  };

  async function run(ticket: JobTicket, helpers: JobHelpers): Promise<void> {
    const runId = randomUUID();
    const options = { role: deps.role, runId };
    const inJob = <T>(fn: (client: PoolClient) => Promise<T>, before?: (client: PoolClient) => Promise<void>) =>
      inJobContext(helpers, ticket, before ? { ...options, before } : options, fn);
    const settle = (status: "failed" | "queued", code: string, message: string) => inJob((client) => settleJob(client, status, code, message));

    let started: { job: StartedJob; provider: IntegrationProvider | null } | null;
    try {
      started = await inJob(async (client) => {
        const job = await startJob(client);
        if (!job) return null;
        const { rows } = await client.query<{ provider: IntegrationProvider }>("select provider from app_public.integrations where id = $1", [job.integration_id]);
        return { job, provider: rows[0]?.provider ?? null };
      }, claimRun(helpers, ticket, runId, deps.runnerId));
    } catch (error) {
      if (!(error instanceof RunSuperseded) && isLastAttempt(helpers)) await failQuietly(helpers, ticket, options, "INTERNAL", "The job could not be started.");
      throw error;
    }
    if (!started) return;
    const { job, provider } = started;
    const connector = provider ? deps.connectors[provider] : undefined;
    if (!job.integration_id || !provider) return settle("failed", "INTEGRATION_DISCONNECTED", "The integration is gone.");
    if (!connector || !deps.keys) return settle("failed", "NOT_CONFIGURED", `${provider} is not configured on this worker.`);

    try {
      const session = await openIntegration(job.integration_id, { keys: deps.keys, connector, inTransaction: (fn) => inJob(fn) });
      await body({ helpers, job: { ...job, integration_id: job.integration_id }, provider, connector, session, inJob: (fn) => inJob(fn) });
    } catch (error) {
      if (error instanceof RunSuperseded) throw error;
      if (error instanceof JobFailure) return settle("failed", error.code, error.message);
      if ((error as { code?: unknown }).code === "NTFND") {
        return settle("failed", "INTEGRATION_DISCONNECTED", "The integration is no longer connected.");
      }
      if (!(error instanceof IntegrationError)) {
        if (isLastAttempt(helpers)) await failQuietly(helpers, ticket, options, "INTERNAL", "The job failed.");
        throw error;
      }
      if (error.code === "INVALID_GRANT") {
        return settle("failed", "INTEGRATION_NEEDS_REAUTH", "The provider refused the connection; an admin must connect it again.");
      }
      if (error.code === "CANCELLED" || isShuttingDown(helpers)) {
        // The worker is stopping: another one takes the job at once, this attempt not counted.
        await inJob((client) => retryLater(client, 0, `INTEGRATION_${error.code}`, error.message));
        return;
      }
      const retry = error.retryable && !isLastAttempt(helpers);
      await settle(retry ? "queued" : "failed", `INTEGRATION_${error.code}`, error.message);
      if (retry) throw error;
    }
  }
}

/** Errors of one page that fail that page (counted) rather than the whole run. */
export const isPageFailure = (error: unknown) =>
  error instanceof IntegrationError
    ? ["NOT_FOUND", "FORBIDDEN", "REJECTED", "BAD_RESPONSE", "RATE_LIMITED", "UNAVAILABLE", "TIMEOUT"].includes(error.code)
    : ["TOOLG", "22021", "23514"].includes(String((error as { code?: unknown }).code));
