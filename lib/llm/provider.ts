// What the summarization task needs from a language model, whichever it is: one prompt in, text and token counts
// out, and one small set of errors. An LlmError's message is stored on the job and shown to the user, so it names
// what went wrong in words and never carries an API key, request headers, a stack or a whole response body.

export const providerNames = ["extractive", "openai", "anthropic"] as const;
export type ProviderName = (typeof providerNames)[number];

/**
 * Largest summary text, in UTF-8 bytes (128 KiB, about 32,000 tokens): a completion longer than this is refused
 * (LLM_BAD_RESPONSE) rather than stored, and the database refuses a longer summaries.content (a check constraint).
 */
export const summaryMaxBytes = 128 * 1024;

/** Largest answer body read from a hosted provider: its JSON wraps the completion, so room for it escaped, and more. */
export const completionResponseMaxBytes = 4 * summaryMaxBytes + 64 * 1024;

export interface CompletionRequest {
  /** The rendered prompt: the template with placeholders replaced (it already contains the text). */
  readonly prompt: string;
  /**
   * The text the prompt is about (the document content or chunk). The extractive provider summarizes this and reads
   * the prompt only for length/format hints; the others send only `prompt`.
   */
  readonly sourceText: string;
  /** Upper bound on output tokens. */
  readonly maxOutputTokens: number;
  /** The worker's abort signal (shutdown); combined with the provider's own timeout. */
  readonly signal?: AbortSignal;
  /**
   * Called with the answer's text as the model writes it. When set, the hosted providers stream the answer (Server-Sent
   * Events) and the extractive one hands its text over in a few pieces; the Completion is returned as without it.
   * The contract: pieces come in order, none is empty, and joined they are exactly the Completion's `text`, so the
   * answer's leading and trailing whitespace is never delivered (whitespace is held back until text follows it).
   * Every piece is delivered before complete() settles, none after. When the request fails after pieces were
   * delivered they are not a summary and the caller discards them: withRetries throws such a failure instead of
   * retrying it (a second attempt would not repeat the same text), for the job to start over on its next run. What
   * onDelta throws ends the request (the stream is cancelled) and complete() throws it as it is. Default: none (one
   * answer, not streamed).
   */
  readonly onDelta?: (text: string) => void;
}

export interface Completion {
  readonly text: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly provider: ProviderName;
  /** The model that answered: as the service names it in its response when it does, else the configured one. */
  readonly model: string;
  readonly latencyMs: number;
}

export interface LlmProvider {
  readonly name: ProviderName;
  readonly model: string;
  /** Context window in tokens, used to split long documents. */
  readonly contextTokens: number;
  complete(request: CompletionRequest): Promise<Completion>;
}

export const llmErrorCodes = [
  "LLM_TIMEOUT", // the service did not answer within the timeout
  "LLM_RATE_LIMITED", // 429: too many requests or tokens for the account
  "LLM_UNAVAILABLE", // 5xx (Anthropic's 529 overloaded included), the service could not be reached or its answer broke off
  "LLM_REJECTED", // 400, 404, 413, 422…: the request itself was refused (unknown model, prompt too long)
  "LLM_AUTH", // 401/403: the API key is missing, wrong or not allowed to use the model
  "LLM_BAD_RESPONSE", // a 2xx that is not the API's JSON or event stream, an answer without text, or a redirect
  "LLM_CANCELLED", // the caller's signal aborted (worker shutdown)
] as const;
export type LlmErrorCode = (typeof llmErrorCodes)[number];

/**
 * Retryable by default: the same request may well succeed later. LLM_BAD_RESPONSE is not: a complete 2xx answer
 * that is not the API's shape (or a redirect) comes from a misconfigured base URL or an incompatible server far more
 * often than from a passing fault, and a body cut off mid-way is a network error (LLM_UNAVAILABLE) anyway.
 */
const retryableCodes: ReadonlySet<LlmErrorCode> = new Set(["LLM_TIMEOUT", "LLM_RATE_LIMITED", "LLM_UNAVAILABLE"]);

export interface LlmErrorOptions {
  /** Default: true for LLM_TIMEOUT, LLM_RATE_LIMITED and LLM_UNAVAILABLE, false for the others. */
  readonly retryable?: boolean;
  /** How long the service asked to wait (Retry-After), in milliseconds. */
  readonly retryAfterMs?: number;
  /** The HTTP status the service answered with, if it answered. */
  readonly status?: number;
  /** The underlying error, for logs only (its message may name hosts; it is never shown to users). */
  readonly cause?: unknown;
}

export class LlmError extends Error {
  readonly code: LlmErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;
  constructor(code: LlmErrorCode, message: string, options: LlmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LlmError";
    this.code = code;
    this.retryable = options.retryable ?? retryableCodes.has(code);
    this.retryAfterMs = options.retryAfterMs;
    this.status = options.status;
  }
}

export const cancelledError = () => new LlmError("LLM_CANCELLED", "The request to the language model was cancelled.");

// Code points of scripts written without spaces, where one character is about one token rather than a quarter.
const wideCharacters = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}]/gu;

/**
 * Estimated tokens of a text: a quarter of its length (UTF-16 units, rounded up), except that Chinese, Japanese and
 * Korean characters count one each, as tokenizers make them. For text without those it is exactly ceil(length / 4).
 */
export function estimateTokens(text: string): number {
  const wide = text.match(wideCharacters)?.length ?? 0;
  return Math.ceil((text.length - wide) / 4) + wide;
}
