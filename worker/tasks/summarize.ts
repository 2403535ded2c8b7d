// summarize: makes the summary a `jobs` row asks for (queued by app_public.summarize_document).
//
// Three steps, so no transaction stays open while the LLM thinks, and two database calls of one statement each:
// (1) app_private.start_summary_job claims the run, marks the job running and reads the document and the pinned
// template version rendered; (2) call the LLM, splitting long documents (map, then reduce), with the worker's abort
// signal; (3) app_private.finish_summary_job locks the job and, only if it is still running, writes the summary,
// the usage row and the job's success together. Both take on the job's context (its token) first, so the database
// checks the job exactly as it checks a member's session. Delivery is at least once: a second delivery finds the
// job finished (its token no longer opens a context) or meets the unique job_id of summaries and usage_records, so
// there is never a second summary or a second charge. A cancelled job's result is dropped.
//
// Every run claims the job first (worker/job-context.ts): once another run has taken it over (its worker presumed
// dead), this run's transactions change nothing and throw RunSuperseded.
//
// Failures: LLM errors that will not change (auth, rejected, bad response) fail the job at once with their code.
// Passing ones (timeouts, 429, 5xx, unreachable), after the provider's few quick retries, put the job back in the
// queue due later without using up an attempt, for up to LLM_RETRY_WINDOW_SECONDS from its first such failure (a
// Retry-After is honoured as given, up to LLM_RETRY_AFTER_MAX_SECONDS), then fail it (lib/llm/retry.ts). A run cut
// short by the worker's shutdown puts the job back in the queue due at once, its attempt not counted either.
import { randomUUID } from "node:crypto";
import type { Task } from "graphile-worker";
import { LlmError, type LlmProvider } from "../../lib/llm/provider.ts";
import { summarizeInStages } from "../../lib/llm/map-reduce.ts";
import { nextRunDelayMs, type RescheduleOptions } from "../../lib/llm/retry.ts";
import { inJobContext, isJobTicket, RunSuperseded, type JobTicket } from "../job-context.ts";
import { addToLogContext } from "../../lib/log-context.ts";
import { failingForMs, failQuietly, isLastAttempt, isShuttingDown, retryLater, settleJob } from "../job-lifecycle.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      summarize: JobTicket;
    }
  }
}

export interface SummarizeDependencies {
  readonly llm: LlmProvider;
  /** DATABASE_AUTHENTICATED_ROLE. */
  readonly role: string;
  /** This process's heartbeat id, recorded on the job so a dead process's jobs can be released. */
  readonly runnerId: string;
  /** LLM_MAX_OUTPUT_TOKENS. */
  readonly maxOutputTokens: number;
  /** LLM_RETRY_*: how long and how often a job is put back in the queue after transient LLM failures. */
  readonly llmRetry: RescheduleOptions;
}

interface Work {
  readonly revision: number;
  readonly content: string;
  /** The rendered prompt with `marker` where the document's content goes. */
  readonly prompt: string;
  readonly marker: string;
}

/** What app_private.start_summary_job answers. */
interface Started {
  readonly outcome: "started" | "gone" | "document-gone";
  readonly org_id: string | null;
  readonly requested_by: string | null;
  readonly revision: number | null;
  readonly content: string | null;
  readonly prompt: string | null;
}

export function makeSummarize({ llm, role, runnerId, maxOutputTokens, llmRetry }: SummarizeDependencies): Task<"summarize"> {
  return async (payload, helpers) => {
    if (!isJobTicket(payload)) {
      helpers.logger.error("summarize: malformed payload, dropped");
      return;
    }
    try {
      await run(payload, helpers);
    } catch (error) {
      // Thrown, not returned: graphile-worker then leaves the queue entry, now the other run's, alone.
      if (error instanceof RunSuperseded) helpers.logger.warn(`summarize: job ${payload.jobId} was taken over by another run; this one stopped`);
      throw error;
    }
  };

  async function run(payload: JobTicket, helpers: Parameters<Task<"summarize">>[1]): Promise<void> {
    const runId = randomUUID();
    const options = { role, runId };
    const inJob = <T>(fn: Parameters<typeof inJobContext<T>>[3]) => inJobContext(helpers, payload, options, fn);
    // A random marker stands for the content while the template is rendered, so each chunk can be put in its place.
    const marker = `\u0001content-${randomUUID()}\u0001`;
    let started: Started;
    try {
      const { rows } = await helpers.withPgClient((client) =>
        client.query<Started>(
          "select outcome, org_id, requested_by, revision, content, prompt from app_private.start_summary_job($1, $2, $3, $4, $5, $6)",
          [payload.jobId, payload.token, runId, runnerId, helpers.job.locked_by ?? null, marker],
        ),
      );
      started = rows[0]!;
    } catch (error) {
      if (isLastAttempt(helpers)) await failQuietly(helpers, payload, options, "INTERNAL", "The job could not be started.");
      throw error;
    }
    if (started.outcome === "gone") {
      helpers.logger.info(`summarize: job ${payload.jobId} is no longer queued or running; nothing to do`);
      return;
    }
    // From here on the job's log lines name its organization and requester.
    addToLogContext({ orgId: started.org_id!, ...(started.requested_by ? { userId: started.requested_by } : {}) });
    if (started.outcome === "document-gone") {
      await inJob((client) => settleJob(client, "failed", "DOCUMENT_DELETED", "The document was deleted."));
      return;
    }
    const work: Work = { revision: started.revision!, content: started.content!, prompt: started.prompt!, marker };
    const { prompt } = work;
    // Templates may place the content once (checked when saved); one saved before that rule would multiply the
    // document in every LLM call, so it fails at once rather than spend the organization's allowance.
    if (prompt.split(marker).length > 2) {
      await inJob((client) => settleJob(client, "failed", "BAD_TEMPLATE", "The template uses {{document.content}} more than once."));
      return;
    }
    let completion;
    try {
      completion = await summarizeInStages({
        provider: llm,
        content: work.content,
        render: (content) => prompt.split(marker).join(content),
        maxOutputTokens,
        ...(helpers.abortSignal ? { signal: helpers.abortSignal } : {}),
      });
    } catch (error) {
      if (!(error instanceof LlmError)) {
        if (isLastAttempt(helpers)) await failQuietly(helpers, payload, options, "INTERNAL", "The summary could not be made.");
        throw error;
      }
      await inJob(async (client) => {
        if (error.code === "LLM_CANCELLED" || isShuttingDown(helpers)) {
          // The worker is stopping: another one takes the job at once, this attempt not counted.
          await retryLater(client, 0, error.code, error.message);
          helpers.logger.info(`summarize: job ${payload.jobId} put back in the queue (worker stopping)`);
          return;
        }
        const delayMs = error.retryable ? nextRunDelayMs(error, await failingForMs(client), llmRetry) : null;
        if (delayMs === null) {
          await settleJob(client, "failed", error.code, error.message);
          helpers.logger.warn(`summarize: job ${payload.jobId} failed: ${error.code}`);
          return;
        }
        await retryLater(client, delayMs, error.code, error.message);
        helpers.logger.info(`summarize: job ${payload.jobId} retries in ${Math.round(delayMs / 1000)} s (${error.code})`);
      });
      return;
    }
    const { rows } = await helpers.withPgClient((client) =>
      client.query<{ outcome: "succeeded" | "superseded" | "gone" }>(
        "select app_private.finish_summary_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) as outcome",
        [
          payload.jobId,
          payload.token,
          runId,
          completion.text,
          completion.provider,
          completion.model,
          completion.promptTokens,
          completion.completionTokens,
          Math.round(completion.latencyMs),
          work.revision,
        ],
      ),
    );
    const outcome = rows[0]!.outcome;
    if (outcome === "superseded") throw new RunSuperseded(payload.jobId);
    helpers.logger.info(
      outcome === "succeeded"
        ? `summarize: job ${payload.jobId} succeeded (${completion.calls} LLM calls)`
        : `summarize: job ${payload.jobId} was cancelled; result dropped`,
    );
  }
}
