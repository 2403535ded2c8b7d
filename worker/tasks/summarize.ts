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
// The job contract (claiming the run, RunSuperseded, failing INTERNAL on the last attempt, putting the job back in
// the queue) is worker/job-task.ts's; this task says how it starts, what it does, and what an LLM error means.
//
// Failures: LLM errors that will not change (auth, rejected, bad response) fail the job at once with their code.
// Passing ones (timeouts, 429, 5xx, unreachable), after the provider's few quick retries, put the job back in the
// queue due later without using up an attempt, for up to LLM_RETRY_WINDOW_SECONDS from its first such failure (a
// Retry-After is honoured as given, up to LLM_RETRY_AFTER_MAX_SECONDS), then fail it (lib/llm/retry.ts). A run cut
// short by the worker's shutdown puts the job back in the queue due at once, its attempt not counted either.
import { randomUUID } from "node:crypto";
import type { Task } from "graphile-worker";
import { summarizeInStages } from "../../lib/llm/map-reduce.ts";
import type { RescheduleOptions } from "../../lib/llm/retry.ts";
import { RunSuperseded, type JobTicket } from "../job-context.ts";
import { addToLogContext } from "../../lib/log-context.ts";
import { JobFailure, makeJobTask, type JobTaskDependencies } from "../job-task.ts";
import { llmOutcome, withLlmRun, type LlmRunDependencies } from "../llm-run.ts";
import type { OrganizationLlm, OrganizationLlmRow } from "../organization-llm.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      summarize: JobTicket;
    }
  }
}

export interface SummarizeDependencies extends JobTaskDependencies, LlmRunDependencies {
  /** The model of the job's organization (or template, or the deployment's). */
  readonly organizationLlm: OrganizationLlm;
  /** LLM_MAX_OUTPUT_TOKENS. */
  readonly maxOutputTokens: number;
  /** LLM_RETRY_*: how long and how often a job is put back in the queue after transient LLM failures. */
  readonly llmRetry: RescheduleOptions;
}

interface Work {
  readonly orgId: string;
  readonly llm: OrganizationLlmRow;
  readonly revision: number;
  readonly content: string;
  /** The rendered prompt with `marker` where the document's content goes. */
  readonly prompt: string;
  readonly marker: string;
}

/** What app_private.start_summary_job answers. */
interface Started extends OrganizationLlmRow {
  readonly outcome: "started" | "gone" | "document-gone";
  readonly org_id: string | null;
  readonly requested_by: string | null;
  readonly revision: number | null;
  readonly content: string | null;
  readonly prompt: string | null;
}

export function makeSummarize(deps: SummarizeDependencies): Task<"summarize"> {
  const { organizationLlm, runnerId, maxOutputTokens, llmRetry } = deps;
  return makeJobTask("summarize", deps, {
    async start({ helpers, ticket, runId }): Promise<Work | null> {
      // A random marker stands for the content while the template is rendered, so each chunk can be put in its place.
      const marker = `\u0001content-${randomUUID()}\u0001`;
      const { rows } = await helpers.withPgClient((client) =>
        client.query<Started>(
          `select outcome, org_id, requested_by, revision, content, prompt, llm_provider, llm_model, llm_key_id, llm_nonce, llm_ciphertext
             from app_private.start_summary_job($1, $2, $3, $4, $5, $6)`,
          [ticket.jobId, ticket.token, runId, runnerId, helpers.job.locked_by ?? null, marker],
        ),
      );
      const started = rows[0]!;
      if (started.outcome === "gone") return null;
      // From here on the job's log lines name its organization and requester.
      addToLogContext({ orgId: started.org_id!, ...(started.requested_by ? { userId: started.requested_by } : {}) });
      if (started.outcome === "document-gone") throw new JobFailure("DOCUMENT_DELETED", "The document was deleted.");
      return { orgId: started.org_id!, llm: started, revision: started.revision!, content: started.content!, prompt: started.prompt!, marker };
    },

    async work(run, work) {
      const { helpers, ticket, runId } = run;
      const { prompt, marker } = work;
      // Templates may place the content once (checked when saved); one saved before that rule would multiply the
      // document in every LLM call, so it fails at once rather than spend the organization's allowance.
      if (prompt.split(marker).length > 2) throw new JobFailure("BAD_TEMPLATE", "The template uses {{document.content}} more than once.");
      const provider = await organizationLlm(work.orgId, work.llm);
      // The last call's text streams to the job's jobProgress subscribers.
      const charge = { kind: "summary" as const, provider: provider.name, model: provider.model, prompt: () => prompt.split(marker).join(work.content) };
      const completion = await withLlmRun(run, work.orgId, deps, charge, ({ signal, onDelta }) =>
        summarizeInStages({ provider, content: work.content, render: (content) => prompt.split(marker).join(content), maxOutputTokens, signal, onDelta }),
      );
      const { rows } = await helpers.withPgClient((client) =>
        client.query<{ outcome: "succeeded" | "superseded" | "gone" }>(
          "select app_private.finish_summary_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) as outcome",
          [
            ticket.jobId,
            ticket.token,
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
      if (outcome === "superseded") throw new RunSuperseded(ticket.jobId);
      helpers.logger.info(
        outcome === "succeeded"
          ? `summarize: job ${ticket.jobId} succeeded (${completion.calls} LLM calls)`
          : `summarize: job ${ticket.jobId} was cancelled; result dropped`,
      );
    },

    outcome: (error, { helpers }) => llmOutcome(error, helpers, llmRetry),

    internalMessage: "The summary could not be made.",
  });
}
