// The HTTP exchange the hosted providers share: POST a JSON body with a timeout and the caller's abort signal, refuse
// redirects, and turn every failure (network, timeout, cancel, status, unreadable body) into an LlmError whose
// message is safe to show: the service's own short error message at most, with the API key masked. The answer is
// read as a stream and at most `maxResponseBytes` of it are kept: a service that sends more is refused
// (LLM_BAD_RESPONSE) as soon as it crosses the bound, and nothing larger is ever held in memory.
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

const detailMaxChars = 200;

/** POSTs `body` as JSON and returns the parsed 2xx answer; throws LlmError for everything else. */
export async function postJson(options: PostJsonOptions): Promise<JsonAnswer> {
  const { signal, timeoutMs, service } = options;
  if (signal?.aborted) throw cancelledError();
  const timeout = AbortSignal.timeout(timeoutMs);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  const started = performance.now();
  let response: Response;
  let text: string;
  try {
    response = await options.fetch(options.url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...options.headers },
      body: JSON.stringify(options.body),
      redirect: "error",
      signal: combined,
    });
    text = await readBounded(response, options.maxResponseBytes ?? completionResponseMaxBytes);
  } catch (error) {
    if (error instanceof LlmError) throw error;
    if (signal?.aborted) throw cancelledError();
    if (timeout.aborted) {
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
  const detail = errorDetail(text, options.secrets);
  const [code, what] = statusMeaning(status);
  throw new LlmError(code, `The ${service} ${what} (HTTP ${status})${detail ? `: ${detail}` : "."}`, {
    status,
    ...retryAfterOf(response.headers, status),
  });
}

/** Error answers are read only far enough for their message. */
const errorBodyMaxBytes = 64 * 1024;

/**
 * The body of `response` as text, reading at most `maxBytes` of a 2xx answer (and the first 64 KiB of any other):
 * more is LLM_BAD_RESPONSE for a success, and simply not read for an error. The stream is cancelled either way.
 */
async function readBounded(response: Response, maxBytes: number): Promise<string> {
  const ok = response.status >= 200 && response.status < 300;
  const limit = ok ? maxBytes : Math.min(maxBytes, errorBodyMaxBytes);
  const declared = Number(response.headers.get("content-length"));
  if (ok && Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel().catch(() => undefined);
    throw tooLargeAnswer(limit);
  }
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const room = limit - received;
      if (value.byteLength > room) {
        if (ok) throw tooLargeAnswer(limit);
        chunks.push(value.subarray(0, room));
        received = limit;
        break;
      }
      chunks.push(value);
      received += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks, received).toString("utf8");
}

const tooLargeAnswer = (limit: number) =>
  new LlmError("LLM_BAD_RESPONSE", `The language model's answer is larger than ${limit} bytes, which is more than a summary may be.`);

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

// fetch wraps network failures in TypeError("fetch failed") whose cause has a code such as ECONNREFUSED. Read by
// shape, not instanceof: under Jest's VM modules fetch's errors come from another realm.
function networkError(error: unknown, service: string): LlmError {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  if (cause?.message === "unexpected redirect") {
    return new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with a redirect, which is not followed: check its base URL.`, {
      cause: error,
    });
  }
  const code = cause?.code;
  const reason = typeof code === "string" && /^[A-Z_]{2,40}$/.test(code) ? ` (${code})` : "";
  return new LlmError("LLM_UNAVAILABLE", `The ${service} could not be reached${reason}.`, { cause: error });
}

/**
 * The service's own error message from an error body, cleaned for display: OpenAI, Anthropic and vLLM send
 * `{"error": {"message": …}}`, Ollama and llama.cpp `{"error": "…"}`, some proxies `{"message": …}`. Secrets are
 * masked before the text is cut to 200 characters, so a cut can never leave part of a key.
 */
function errorDetail(text: string, secrets: readonly string[]): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return "";
  }
  const record = (value: unknown) => (typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {});
  const error = record(parsed).error;
  const message = typeof error === "string" ? error : (record(error).message ?? record(parsed).message);
  if (typeof message !== "string") return "";
  let clean = message;
  for (const secret of secrets) if (secret) clean = clean.split(secret).join("[redacted]");
  clean = clean.replace(/[\p{Cc}\s]+/gu, " ").trim();
  return clean.length > detailMaxChars ? `${clean.slice(0, detailMaxChars - 1).replace(/[\uD800-\uDBFF]$/, "")}…` : clean;
}

/** Retry-After (seconds or an HTTP date), or OpenAI's retry-after-ms, on a retryable status. */
function retryAfterOf(headers: Headers, status: number): { retryAfterMs: number } | undefined {
  if (!(status === 408 || status === 429 || status >= 500)) return undefined;
  const milliseconds = headers.get("retry-after-ms");
  if (milliseconds && /^\d+(\.\d+)?$/.test(milliseconds.trim())) return { retryAfterMs: Math.ceil(Number(milliseconds)) };
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return { retryAfterMs: Math.ceil(Number(value) * 1000) };
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : { retryAfterMs: Math.max(0, date - Date.now()) };
}

const formatSeconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`);

/** A token count the service reported, or undefined when it is absent or not a whole number ≥ 0. */
export const tokenCount = (value: unknown): number | undefined => (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined);

/** The model name an answer gives, when it is a plausible one (what summaries and usage records store). */
export const answeredModel = (value: unknown): string | undefined =>
  typeof value === "string" && value.length >= 1 && value.length <= 200 ? value : undefined;
