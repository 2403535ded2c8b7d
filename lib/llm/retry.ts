// Retries of one provider call, for the failures that pass (timeouts, 429, 5xx, unreachable service): exponential
// backoff with full jitter, or the wait the service asked for. The job itself is retried by the worker on top of
// this, so the budget here is small and a cancelled request (worker shutdown) stops at once.
import { setTimeout as delay } from "node:timers/promises";
import { cancelledError, LlmError, type LlmProvider } from "./provider.ts";

export interface RetryOptions {
  /** Attempts after the first. Default 3. */
  readonly maxRetries?: number;
  /** The backoff before retry n (from 0) is random in [0, baseDelayMs × 2^n]. Default 500. */
  readonly baseDelayMs?: number;
  /** Cap on any wait, a service's Retry-After included. Default 30_000. */
  readonly maxDelayMs?: number;
  /** Waits `ms`, rejecting when `signal` aborts. Injectable for tests. Default: node:timers/promises' setTimeout. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A number in [0, 1) for the jitter. Injectable for tests. Default Math.random. */
  readonly random?: () => number;
}

const defaultSleep = async (ms: number, signal?: AbortSignal) => {
  await delay(ms, undefined, signal ? { signal } : {});
};

/** The wait before retry `retry` (from 0) after `error`. */
export function retryDelayMs(error: LlmError, retry: number, options: RetryOptions = {}): number {
  const { baseDelayMs = 500, maxDelayMs = 30_000, random = Math.random } = options;
  if (error.retryAfterMs !== undefined) return Math.min(error.retryAfterMs, maxDelayMs);
  return Math.floor(random() * Math.min(maxDelayMs, baseDelayMs * 2 ** retry));
}

/** `provider`, with retryable LlmErrors retried; the last error is thrown once retries run out. */
export function withRetries(provider: LlmProvider, options: RetryOptions = {}): LlmProvider {
  const { maxRetries = 3, sleep = defaultSleep } = options;
  return {
    name: provider.name,
    model: provider.model,
    contextTokens: provider.contextTokens,
    async complete(request) {
      const { signal } = request;
      for (let retry = 0; ; retry++) {
        try {
          return await provider.complete(request);
        } catch (error) {
          if (signal?.aborted) throw cancelledError();
          if (!(error instanceof LlmError) || !error.retryable || retry >= maxRetries) throw error;
          try {
            await sleep(retryDelayMs(error, retry, options), signal);
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
