// What the import, sync and publish tasks share, on top of the job contract of worker/job-task.ts: starting the job
// and reading its integration's provider, opening the integration's tokens through the database (only the job's
// own, connected integration opens), and turning provider failures into the job's outcome. Passing failures (429,
// 5xx, timeouts) that outlive the client's own retries put the job back in the queue for graphile-worker's backoff
// while attempts remain; a refused refresh token (invalid_grant) fails the job with INTEGRATION_NEEDS_REAUTH — the
// integration is marked so and its other jobs stopped by the database; anything else that will not change fails it
// with its code. A call cut short by the worker's shutdown puts the job back in the queue due at once, without
// using up an attempt.
import type { JobHelpers, Task } from "graphile-worker";
import type { PoolClient } from "pg";
import type { Connector, Connectors, IntegrationProvider } from "../lib/integrations/connectors.ts";
import { openIntegration, type IntegrationSession } from "../lib/integrations/credentials.ts";
import { IntegrationError } from "../lib/integrations/errors.ts";
import type { SealingKeys } from "../lib/sealing.ts";
import { isShuttingDown, startJob, type StartedJob } from "./job-lifecycle.ts";
import { JobFailure, makeJobTask, type JobOutcome, type JobTaskDependencies, type JobTaskName } from "./job-task.ts";

export interface IntegrationTaskDependencies extends JobTaskDependencies {
  readonly connectors: Connectors;
  /** SEALING_KEYS; null: no integration can be used (every job fails NOT_CONFIGURED). */
  readonly keys: SealingKeys | null;
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

/** What a provider's failure (or the database's NTFND for an integration no longer connected) means for the job. */
function integrationOutcome(error: unknown, helpers: JobHelpers): JobOutcome | null {
  if ((error as { code?: unknown }).code === "NTFND") {
    return { kind: "fail", code: "INTEGRATION_DISCONNECTED", message: "The integration is no longer connected." };
  }
  if (!(error instanceof IntegrationError)) return null;
  const { code, message } = error;
  if (code === "INVALID_GRANT") {
    return { kind: "fail", code: "INTEGRATION_NEEDS_REAUTH", message: "The provider refused the connection; an admin must connect it again." };
  }
  // The worker is stopping: another one takes the job at once.
  if (code === "CANCELLED" || isShuttingDown(helpers)) return { kind: "stopping", code: `INTEGRATION_${code}`, message };
  return { kind: error.retryable ? "retry" : "fail", code: `INTEGRATION_${code}`, message };
}

export function makeIntegrationTask<Name extends JobTaskName>(
  name: Name,
  deps: IntegrationTaskDependencies,
  body: (work: IntegrationWork) => Promise<void>,
): Task<Name> {
  return makeJobTask(name, deps, {
    start: ({ inJob, claim }) =>
      inJob(async (client) => {
        const job = await startJob(client);
        if (!job) return null;
        const { rows } = await client.query<{ provider: IntegrationProvider }>("select provider from app_public.integrations where id = $1", [
          job.integration_id,
        ]);
        return { job, provider: rows[0]?.provider ?? null };
      }, claim),
    work: async ({ helpers, inJob }, { job, provider }) => {
      const connector = provider ? deps.connectors[provider] : undefined;
      if (!job.integration_id || !provider) throw new JobFailure("INTEGRATION_DISCONNECTED", "The integration is gone.");
      if (!connector || !deps.keys) throw new JobFailure("NOT_CONFIGURED", `${provider} is not configured on this worker.`);
      const inTransaction = <T>(fn: (client: PoolClient) => Promise<T>) => inJob(fn);
      const session = await openIntegration(job.integration_id, { keys: deps.keys, connector, inTransaction });
      await body({ helpers, job: { ...job, integration_id: job.integration_id }, provider, connector, session, inJob: inTransaction });
    },
    outcome: (error, { helpers }) => integrationOutcome(error, helpers),
    internalMessage: "The job failed.",
  });
}

/** Errors of one page that fail that page (counted) rather than the whole run. */
export const isPageFailure = (error: unknown) =>
  error instanceof IntegrationError
    ? ["NOT_FOUND", "FORBIDDEN", "REJECTED", "BAD_RESPONSE", "RATE_LIMITED", "UNAVAILABLE", "TIMEOUT"].includes(error.code)
    : ["TOOLG", "22021", "23514"].includes(String((error as { code?: unknown }).code));
