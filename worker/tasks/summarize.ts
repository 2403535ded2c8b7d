// summarize: makes the summary a `jobs` row asks for (queued by app_public.summarize_document).
//
// Three steps, so no transaction stays open while the LLM thinks: (1) in the job's RLS context, mark it running and
// read the document and the pinned template version; (2) call the LLM, splitting long documents (map, then
// reduce), with the worker's abort signal; (3) in the job's context again, lock the job and, only if it is still
// running, write the summary, the usage row and the job's success together. Delivery is at least once: a second
// delivery finds the job finished (its token no longer opens a context) or meets the unique job_id of summaries
// and usage_records, so there is never a second summary or a second charge. A cancelled job's result is dropped.
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
import type { PoolClient } from "pg";
import { LlmError, type LlmProvider } from "../../lib/llm/provider.ts";
import { summarizeInStages } from "../../lib/llm/map-reduce.ts";
import { nextRunDelayMs, type RescheduleOptions } from "../../lib/llm/retry.ts";
import { inJobContext, isJobTicket, RunSuperseded, type JobTicket } from "../job-context.ts";
import {
  claimRun,
  failingForMs,
  failQuietly,
  isLastAttempt,
  isShuttingDown,
  lockRunningJob,
  retryLater,
  settleJob,
  startJob,
  succeedJob,
} from "../job-lifecycle.ts";

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
  readonly documentId: string;
  readonly templateVersionId: string | null;
  readonly globalTemplateVersionId: string | null;
  readonly revision: number;
  readonly content: string;
  /** The rendered prompt with `marker` where the document's content goes. */
  readonly prompt: string;
  readonly marker: string;
}

/** Marks the job running and reads what it needs; null when the job is no longer to be run. */
async function start(client: PoolClient): Promise<Work | null | "document-gone"> {
  const row = await startJob(client);
  if (!row) return null;
  // A random marker stands for the content while the template is rendered, so each chunk can be put in its place.
  const marker = `\u0001content-${randomUUID()}\u0001`;
  const read = await client.query<{ revision: number; content: string; prompt: string }>(
    `select d.revision, d.content,
            app_public.render_template(coalesce(tv.body, gv.body), d.title, $4, o.name) as prompt
       from app_public.documents d
       join app_public.organizations o on o.id = d.org_id
       left join app_public.template_versions tv on tv.id = $2
       left join app_public.global_template_versions gv on gv.id = $3
      where d.id = $1 and (tv.id is not null or gv.id is not null)`,
    [row.document_id, row.template_version_id, row.global_template_version_id, marker],
  );
  const doc = read.rows[0];
  if (!row.document_id || !doc) return "document-gone";
  return {
    documentId: row.document_id,
    templateVersionId: row.template_version_id,
    globalTemplateVersionId: row.global_template_version_id,
    revision: doc.revision,
    content: doc.content,
    prompt: doc.prompt,
    marker,
  };
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
    const inJob = <T>(fn: (client: PoolClient) => Promise<T>, before?: (client: PoolClient) => Promise<void>) =>
      inJobContext(helpers, payload, before ? { ...options, before } : options, fn);
    let work: Work | null | "document-gone";
    try {
      work = await inJob(start, claimRun(helpers, payload, runId, runnerId));
    } catch (error) {
      if (!(error instanceof RunSuperseded) && isLastAttempt(helpers)) await failQuietly(helpers, payload, options, "INTERNAL", "The job could not be started.");
      throw error;
    }
    if (work === null) {
      helpers.logger.info(`summarize: job ${payload.jobId} is no longer queued or running; nothing to do`);
      return;
    }
    if (work === "document-gone") {
      await inJob((client) => settleJob(client, "failed", "DOCUMENT_DELETED", "The document was deleted."));
      return;
    }
    const { prompt, marker } = work;
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
    const done = await inJob(async (client) => {
      if (!(await lockRunningJob(client))) return false;
      const summary = await client.query<{ id: string }>(
        `insert into app_public.summaries (org_id, document_id, job_id, template_version_id, global_template_version_id, content,
                                           provider, model, prompt_tokens, completion_tokens, latency_ms, document_revision)
         values (app_public.current_org_id(), $1, app_public.current_job_id(), $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (org_id, job_id) do nothing
         returning id`,
        [
          work.documentId,
          work.templateVersionId,
          work.globalTemplateVersionId,
          completion.text,
          completion.provider,
          completion.model,
          completion.promptTokens,
          completion.completionTokens,
          Math.round(completion.latencyMs),
          work.revision,
        ],
      );
      const summaryId = summary.rows[0]?.id ?? null;
      if (summaryId) {
        await client.query(
          `insert into app_public.usage_records (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens)
           values (app_public.current_org_id(), app_public.current_job_id(), $1, $2, $3, $4, $5)
           on conflict (org_id, job_id) do nothing`,
          [summaryId, completion.provider, completion.model, completion.promptTokens, completion.completionTokens],
        );
      }
      await succeedJob(client, summaryId);
      return true;
    });
    helpers.logger.info(
      done ? `summarize: job ${payload.jobId} succeeded (${completion.calls} LLM calls)` : `summarize: job ${payload.jobId} was cancelled; result dropped`,
    );
  }
}
