// Retrying the failures that pass (timeouts, 429, 5xx, unreachable service), on two levels:
//
// - withRetries: a few quick retries of one provider call inside the run, with exponential backoff and full jitter,
//   or the wait the service asked for (Retry-After) when that is short. A Retry-After longer than maxDelayMs is not
//   waited out here (it would hold a worker slot): the error is thrown at once, for the job to be rescheduled. A
//   cancelled request (worker shutdown) stops at once, and so does a streamed request that fails after some of its
//   text was delivered (onDelta): its subscriber has seen text that another attempt would not repeat word for word.
// - nextRunDelayMs: when those run out, the summarize task puts its job back in the queue due later (without using
//   up an attempt), so an outage of the provider is ridden out for up to LLM_RETRY_WINDOW_SECONDS from the job's first
//   transient failure: backoff that doubles with the time it has been failing (capped by LLM_RETRY_MAX_DELAY_SECONDS),
//   or the service's Retry-After as given (capped by LLM_RETRY_AFTER_MAX_SECONDS). Past the window the job fails with
//   the error's code.
import { setTimeout as delay } from "node:timers/promises";
import { cancelledError, LlmError, type LlmProvider } from "./provider.ts";

export interface RetryOptions {
  /** Attempts after the first. Default 3. */
  readonly maxRetries?: number;
  /** The backoff before retry n (from 0) is random in [0, baseDelayMs × 2^n]. Default 500. */
  readonly baseDelayMs?: number;
  /** Cap on any wait in the run; a longer Retry-After is thrown to the caller instead of waited. Default 30_000. */
  readonly maxDelayMs?: number;
  /** Waits `ms`, rejecting when `signal` aborts. Injectable for tests. Default: node:timers/promises' setTimeout. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A number in [0, 1) for the jitter. Injectable for tests. Default Math.random. */
  readonly random?: () => number;
}

const defaultSleep = async (ms: number, signal?: AbortSignal) => {
  await delay(ms, undefined, signal ? { signal } : {});
};

/** The wait before retry `retry` (from 0) after `error`; null when the service asked for longer than maxDelayMs. */
export function retryDelayMs(error: LlmError, retry: number, options: RetryOptions = {}): number | null {
  const { baseDelayMs = 500, maxDelayMs = 30_000, random = Math.random } = options;
  if (error.retryAfterMs !== undefined) return error.retryAfterMs <= maxDelayMs ? error.retryAfterMs : null;
  return Math.floor(random() * Math.min(maxDelayMs, baseDelayMs * 2 ** retry));
}

/**
 * `provider`, with retryable LlmErrors retried; the last error is thrown once retries run out. A failure after a
 * piece of text was delivered to the request's onDelta is thrown as it is (still retryable, for the job's next run).
 */
export function withRetries(provider: LlmProvider, options: RetryOptions = {}): LlmProvider {
  const { maxRetries = 3, sleep = defaultSleep } = options;
  return {
    name: provider.name,
    model: provider.model,
    contextTokens: provider.contextTokens,
    async complete(request) {
      const { signal, onDelta } = request;
      let delivered = false;
      const attempt = onDelta
        ? {
            ...request,
            onDelta: (text: string) => {
              delivered = true;
              onDelta(text);
            },
          }
        : request;
      for (let retry = 0; ; retry++) {
        try {
          return await provider.complete(attempt);
        } catch (error) {
          if (signal?.aborted) throw cancelledError();
          if (delivered || !(error instanceof LlmError) || !error.retryable || retry >= maxRetries) throw error;
          const wait = retryDelayMs(error, retry, options);
          if (wait === null) throw error;
          try {
            await sleep(wait, signal);
          } catch (sleepError) {
            if (signal?.aborted) throw cancelledError();
            throw sleepError;
          }
          if (signal?.aborted) throw cancelledError();
        }
      }
    },
  };
}

export interface RescheduleOptions {
  /** LLM_RETRY_WINDOW_SECONDS × 1000: how long after a job's first transient failure it is still retried. */
  readonly windowMs: number;
  /** LLM_RETRY_MAX_DELAY_SECONDS × 1000: cap on the backoff between runs. */
  readonly maxDelayMs: number;
  /** LLM_RETRY_AFTER_MAX_SECONDS × 1000: cap on a service's Retry-After. */
  readonly retryAfterMaxMs: number;
  /** A number in [0, 1) for the jitter. Default Math.random. */
  readonly random?: () => number;
}

/**
 * How long to wait before the job's next run after the transient `error`, the job having failed for `failingForMs`;
 * null when that run would fall outside the window (the job should fail now).
 */
export function nextRunDelayMs(error: LlmError, failingForMs: number, options: RescheduleOptions): number | null {
  const { windowMs, maxDelayMs, retryAfterMaxMs, random = Math.random } = options;
  const elapsed = Math.max(0, failingForMs);
  const wait =
    error.retryAfterMs !== undefined
      ? Math.min(error.retryAfterMs, retryAfterMaxMs)
      : Math.round(Math.min(maxDelayMs, Math.max(1_000, elapsed)) * (0.5 + random() / 2));
  return elapsed + wait > windowMs ? null : wait;
}
