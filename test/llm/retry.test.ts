// withRetries around a scripted provider: which errors are retried, how long it waits (backoff with full jitter, or
// the service's Retry-After, capped), when it gives up, and that a cancelled request stops at once.
import { LlmError, type Completion, type CompletionRequest, type LlmProvider } from "../../lib/llm/provider.ts";
import { nextRunDelayMs, retryDelayMs, withRetries } from "../../lib/llm/retry.ts";

const done: Completion = { text: "ok", promptTokens: 1, completionTokens: 1, provider: "openai", model: "m", latencyMs: 1 };
const request: CompletionRequest = { prompt: "p", sourceText: "s", maxOutputTokens: 10 };

/** A provider that throws the given errors in turn, then succeeds; `calls` counts its calls. */
function scripted(errors: readonly Error[]) {
  const state = { calls: 0 };
  const provider: LlmProvider = {
    name: "openai",
    model: "m",
    contextTokens: 1000,
    async complete() {
      const error = errors[state.calls++];
      if (error) throw error;
      return done;
    },
  };
  return { provider, state };
}

/** A sleep that only records what it was asked to wait. */
function recordingSleep() {
  const waits: number[] = [];
  return { waits, sleep: async (ms: number) => void waits.push(ms) };
}

const unavailable = () => new LlmError("LLM_UNAVAILABLE", "down", { status: 503 });

test("retryable errors are retried with exponential backoff and full jitter", async () => {
  const { provider, state } = scripted([unavailable(), unavailable(), unavailable()]);
  const { waits, sleep } = recordingSleep();
  const completion = await withRetries(provider, { maxRetries: 3, baseDelayMs: 100, sleep, random: () => 0.5 }).complete(request);
  expect(completion).toBe(done);
  expect(state.calls).toBe(4);
  expect(waits).toEqual([50, 100, 200]);
});

test("the backoff is random in [0, base × 2^n], capped at maxDelayMs", () => {
  const error = unavailable();
  expect(retryDelayMs(error, 0, { baseDelayMs: 500, random: () => 0 })).toBe(0);
  expect(retryDelayMs(error, 0, { baseDelayMs: 500, random: () => 0.999 })).toBe(499);
  expect(retryDelayMs(error, 3, { baseDelayMs: 500, random: () => 0.999 })).toBe(3996);
  expect(retryDelayMs(error, 20, { baseDelayMs: 500, maxDelayMs: 30_000, random: () => 0.999 })).toBe(29_970);
});

test("the wait is the error's retryAfterMs when it has one; a longer one than maxDelayMs is thrown at once, for the job queue", async () => {
  const limited = (retryAfterMs: number) => new LlmError("LLM_RATE_LIMITED", "slow down", { status: 429, retryAfterMs });
  const long = limited(90_000);
  const { provider, state } = scripted([limited(1234), long]);
  const { waits, sleep } = recordingSleep();
  await expect(withRetries(provider, { maxDelayMs: 30_000, sleep, random: () => 0.999 }).complete(request)).rejects.toBe(long);
  expect(waits).toEqual([1234]);
  expect(state.calls).toBe(2);
});

test("between runs: backoff doubling with the time the job has been failing, capped; Retry-After as given, capped; null past the window", () => {
  // random 0.5: three quarters of the backoff (the jitter spreads it over its upper half).
  const options = { windowMs: 900_000, maxDelayMs: 60_000, retryAfterMaxMs: 600_000, random: () => 0.5 };
  const unavailable503 = new LlmError("LLM_UNAVAILABLE", "down", { status: 503 });
  expect(nextRunDelayMs(unavailable503, 0, options)).toBe(750);
  expect(nextRunDelayMs(unavailable503, 8_000, options)).toBe(6_000);
  expect(nextRunDelayMs(unavailable503, 500_000, options)).toBe(45_000);
  expect(nextRunDelayMs(unavailable503, 500_000, { ...options, random: () => 0 })).toBe(30_000);
  expect(nextRunDelayMs(unavailable503, 860_000, options)).toBeNull();
  const limited = (retryAfterMs: number) => new LlmError("LLM_RATE_LIMITED", "slow down", { status: 429, retryAfterMs });
  expect(nextRunDelayMs(limited(45_000), 0, options)).toBe(45_000);
  expect(nextRunDelayMs(limited(3_600_000), 0, options)).toBe(600_000);
  expect(nextRunDelayMs(limited(45_000), 870_000, options)).toBeNull();
});

test("after maxRetries retries the last error is thrown", async () => {
  const errors = [unavailable(), unavailable(), unavailable()];
  const { provider, state } = scripted(errors);
  const { waits, sleep } = recordingSleep();
  await expect(withRetries(provider, { maxRetries: 2, sleep }).complete(request)).rejects.toBe(errors[2]);
  expect(state.calls).toBe(3);
  expect(waits).toHaveLength(2);
});

test("maxRetries 0 makes one attempt", async () => {
  const { provider, state } = scripted([unavailable()]);
  await expect(withRetries(provider, { maxRetries: 0 }).complete(request)).rejects.toMatchObject({ code: "LLM_UNAVAILABLE" });
  expect(state.calls).toBe(1);
});

test.each([
  ["LLM_REJECTED", new LlmError("LLM_REJECTED", "bad request", { status: 400 })],
  ["LLM_AUTH", new LlmError("LLM_AUTH", "bad key", { status: 401 })],
  ["LLM_BAD_RESPONSE", new LlmError("LLM_BAD_RESPONSE", "not JSON", { status: 200 })],
  ["a retryable code marked not retryable", new LlmError("LLM_UNAVAILABLE", "redirect", { retryable: false })],
  ["an error that is not an LlmError", new TypeError("a bug")],
])("%s is thrown at once", async (_, error) => {
  const { provider, state } = scripted([error]);
  const { waits, sleep } = recordingSleep();
  await expect(withRetries(provider, { sleep }).complete(request)).rejects.toBe(error);
  expect(state.calls).toBe(1);
  expect(waits).toEqual([]);
});

test("an abort during the backoff stops at once with LLM_CANCELLED", async () => {
  const { provider, state } = scripted([unavailable(), unavailable()]);
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  // The backoff is about a minute: had the abort not cut it short, this test would run into its 10 s timeout.
  const retrying = withRetries(provider, { baseDelayMs: 60_000, random: () => 0.999 });
  await expect(retrying.complete({ ...request, signal: controller.signal })).rejects.toMatchObject({ code: "LLM_CANCELLED", retryable: false });
  expect(state.calls).toBe(1);
}, 10_000);

test("the wrapper keeps the provider's name, model and context window", () => {
  const { provider } = scripted([]);
  expect(withRetries(provider)).toMatchObject({ name: "openai", model: "m", contextTokens: 1000 });
});
