// The HTTP exchange the hosted providers share, on the mechanics of lib/outbound-http.ts: POST a JSON body with a
// timeout and the caller's abort signal, refuse redirects, and turn every failure (network, timeout, cancel, status,
// unreadable body) into an LlmError whose message is safe to show: the service's own short error message at most,
// with the API key masked. The answer is
// read as a stream and at most `maxResponseBytes` of it are kept: a service that sends more is refused
// (LLM_BAD_RESPONSE) as soon as it crosses the bound, and nothing larger is ever held in memory.
import { deadline, formatSeconds, jsonOrUndefined, networkCause, readBody, ResponseTooLarge, retryAfterMs, serviceMessage } from "../outbound-http.ts";
import { cancelledError, completionResponseMaxBytes, LlmError, summaryMaxBytes, type LlmErrorCode } from "./provider.ts";

export interface PostJsonOptions {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly fetch: typeof fetch;
  /** Names the service in messages, e.g. "OpenAI-compatible service". */
  readonly service: string;
  /** Secrets (the API key) masked in any text taken from the service's answer. */
  readonly secrets: readonly string[];
  /** Most bytes of the answer body read (default: room for the largest summary, JSON-escaped, and its envelope). */
  readonly maxResponseBytes?: number;
}

export interface JsonAnswer {
  /** The parsed JSON of a 2xx answer. */
  readonly body: unknown;
  readonly latencyMs: number;
}

/** POSTs `body` as JSON and returns the parsed 2xx answer; throws LlmError for everything else. */
export async function postJson(options: PostJsonOptions): Promise<JsonAnswer> {
  const { signal, timeoutMs, service } = options;
  if (signal?.aborted) throw cancelledError();
  const limit = deadline(timeoutMs, signal);
  const started = performance.now();
  let response: Response;
  let text: string;
  try {
    response = await options.fetch(options.url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...options.headers },
      body: JSON.stringify(options.body),
      redirect: "error",
      signal: limit.signal,
    });
    const ok = response.status >= 200 && response.status < 300;
    const maxBytes = options.maxResponseBytes ?? completionResponseMaxBytes;
    // A success must fit whole; an error answer is read only far enough for its message.
    text = await readBody(response, ok ? maxBytes : Math.min(maxBytes, errorBodyMaxBytes), ok ? "refuse" : "truncate");
  } catch (error) {
    if (error instanceof ResponseTooLarge) {
      throw new LlmError("LLM_BAD_RESPONSE", `The language model's answer is larger than ${error.limit} bytes, which is more than a summary may be.`);
    }
    if (signal?.aborted) throw cancelledError();
    if (limit.timedOut()) {
      throw new LlmError("LLM_TIMEOUT", `The ${service} did not answer within ${formatSeconds(timeoutMs)}.`, { cause: error });
    }
    throw networkError(error, service);
  }
  const latencyMs = Math.round(performance.now() - started);
  const { status } = response;
  if (status >= 200 && status < 300) {
    try {
      return { body: JSON.parse(text) as unknown, latencyMs };
    } catch {
      throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with something other than JSON.`, { status });
    }
  }
  const detail = serviceMessage(jsonOrUndefined(text), options.secrets);
  const [code, what] = statusMeaning(status);
  const retryAfter = status === 408 || status === 429 || status >= 500 ? retryAfterMs(response.headers) : undefined;
  throw new LlmError(code, `The ${service} ${what} (HTTP ${status})${detail ? `: ${detail}` : "."}`, {
    status,
    ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
  });
}

/** Error answers are read only far enough for their message. */
const errorBodyMaxBytes = 64 * 1024;

/** A completion's text, refused (LLM_BAD_RESPONSE) when it is longer than a summary may be stored. */
export function boundedCompletion(text: string, service: string): string {
  if (Buffer.byteLength(text) > summaryMaxBytes) {
    throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with more than ${summaryMaxBytes} bytes of text, more than a summary may be.`);
  }
  return text;
}

function statusMeaning(status: number): [LlmErrorCode, string] {
  if (status === 401 || status === 403) return ["LLM_AUTH", "refused the API key"];
  if (status === 408) return ["LLM_TIMEOUT", "timed out"];
  if (status === 429) return ["LLM_RATE_LIMITED", "is rate limiting requests"];
  if (status >= 500) return ["LLM_UNAVAILABLE", "is unavailable"];
  if (status >= 400) return ["LLM_REJECTED", "rejected the request"];
  return ["LLM_BAD_RESPONSE", "answered with an unexpected status"];
}

function networkError(error: unknown, service: string): LlmError {
  const { code, redirect } = networkCause(error);
  if (redirect) {
    return new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with a redirect, which is not followed: check its base URL.`, { cause: error });
  }
  return new LlmError("LLM_UNAVAILABLE", `The ${service} could not be reached${code ? ` (${code})` : ""}.`, { cause: error });
}

/** A token count the service reported, or undefined when it is absent or not a whole number ≥ 0. */
export const tokenCount = (value: unknown): number | undefined => (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined);

/** The model name an answer gives, when it is a plausible one (what summaries and usage records store). */
export const answeredModel = (value: unknown): string | undefined =>
  typeof value === "string" && value.length >= 1 && value.length <= 200 ? value : undefined;
