// What every task that calls a language model for a job wraps its call in: the request is aborted when the worker
// stops (the run's signal) or when the job is cancelled (worker/cancellations.ts), and the text the model streams
// reaches the job's jobProgress subscribers as it is written (worker/job-progress.ts). A call aborted because the
// job was cancelled ends the run with JobCancelled: the job is cancelled already and nothing is stored, but text
// that was streamed was read, so the run is charged for it (estimated tokens: the prompt and the text so far;
// app_private.charge_cancelled_run, once per job) — cancelling is never a way around the allowance.
import type { JobHelpers } from "graphile-worker";
import { estimateTokens, LlmError } from "../lib/llm/provider.ts";
import { nextRunDelayMs, type RescheduleOptions } from "../lib/llm/retry.ts";
import { isShuttingDown } from "./job-lifecycle.ts";
import type { Cancellations } from "./cancellations.ts";
import { streamProgress } from "./job-progress.ts";
import { JobCancelled, type JobOutcome, type JobRun } from "./job-task.ts";

export interface LlmRunDependencies {
  readonly cancellations: Cancellations;
  /** PROGRESS_INTERVAL_MS: how long streamed text is gathered before it is sent. */
  readonly progressIntervalMs: number;
}

/** What a cancelled run that streamed text is charged as. */
export interface LlmCharge {
  readonly kind: "summary" | "answer";
  readonly provider: string;
  readonly model: string;
  /** The prompt sent (its tokens are estimated). */
  readonly prompt: () => string;
}

/** What the call is given: the signal to pass to the provider, and where its deltas go. */
export interface LlmCall {
  readonly signal: AbortSignal;
  readonly onDelta: (text: string) => void;
}

export async function withLlmRun<T>(run: JobRun, orgId: string, deps: LlmRunDependencies, charge: LlmCharge, call: (llm: LlmCall) => Promise<T>): Promise<T> {
  const { helpers, ticket, runId } = run;
  const watch = deps.cancellations.watch(ticket.jobId);
  const signal = helpers.abortSignal ? AbortSignal.any([helpers.abortSignal, watch.signal]) : watch.signal;
  const progress = streamProgress({
    jobId: ticket.jobId,
    orgId,
    runId,
    withPgClient: (fn) => helpers.withPgClient(fn),
    intervalMs: deps.progressIntervalMs,
    onError: (error) => helpers.logger.warn(`job ${ticket.jobId}: a progress notification failed (${error instanceof Error ? error.name : "error"})`),
  });
  let streamed = "";
  const onDelta = (text: string) => {
    streamed += text;
    progress.onDelta(text);
  };
  try {
    return await call({ signal, onDelta });
  } catch (error) {
    if (watch.cancelled() && (error instanceof LlmError || signal.aborted)) {
      if (streamed) {
        // Best effort: a failed charge is logged, and the run still ends as cancelled.
        await helpers
          .withPgClient((client) =>
            client.query("select app_private.charge_cancelled_run($1, $2, $3, $4, $5, $6, $7, $8)", [
              ticket.jobId,
              ticket.token,
              runId,
              charge.kind,
              charge.provider,
              charge.model,
              estimateTokens(charge.prompt()),
              estimateTokens(streamed),
            ]),
          )
          .catch((chargeError: unknown) =>
            helpers.logger.error(`job ${ticket.jobId}: the cancelled run could not be charged (${chargeError instanceof Error ? chargeError.name : "error"})`),
          );
      }
      throw new JobCancelled(ticket.jobId);
    }
    throw error;
  } finally {
    watch.release();
    await progress.close();
  }
}

/**
 * What an LLM error means for an LLM job: the worker stopping puts it back at once; an error that will not change
 * (auth, rejected, bad response) fails it; a passing one (timeouts, 429, 5xx) puts it back due later, within
 * LLM_RETRY_WINDOW_SECONDS (lib/llm/retry.ts). Null for anything else: unexpected.
 */
export function llmOutcome(error: unknown, helpers: JobHelpers, llmRetry: RescheduleOptions): JobOutcome | null {
  if (!(error instanceof LlmError)) return null;
  const { code, message } = error;
  if (code === "LLM_CANCELLED" || isShuttingDown(helpers)) return { kind: "stopping", code, message };
  if (!error.retryable) return { kind: "fail", code, message };
  return { kind: "later", code, message, delayMs: (failingForMs) => nextRunDelayMs(error, failingForMs, llmRetry) };
}
