// What every call Quire makes to another service shares (LLM providers, Notion, Confluence, OAuth token endpoints):
// a deadline combined with the caller's signal, a body read up to a bound and no further, the service's own error
// text cleaned and stripped of secrets, Retry-After in each spelling services use, and a network failure read by
// shape. Each client keeps its own error vocabulary (LlmError, IntegrationError) and policy (retries, redirects);
// the mechanics live here once.
import { pairSafeEnd } from "./unicode.ts";

/** The longest service-provided text put into an error message. */
const detailMaxChars = 200;

/** A signal that aborts when the caller's does or `timeoutMs` passes, and whether it was the deadline. */
export function deadline(timeoutMs: number, signal: AbortSignal | undefined): { readonly signal: AbortSignal; timedOut(): boolean } {
  const timeout = AbortSignal.timeout(timeoutMs);
  return { signal: signal ? AbortSignal.any([signal, timeout]) : timeout, timedOut: () => timeout.aborted };
}

/** A body larger than the bound it was read with (readBody with `overflow: "refuse"`). */
export class ResponseTooLarge extends Error {
  readonly limit: number;
  constructor(limit: number) {
    super(`The answer is larger than ${limit} bytes.`);
    this.name = "ResponseTooLarge";
    this.limit = limit;
  }
}

/**
 * The body as UTF-8 text, reading at most `limit` bytes: past it, `refuse` throws ResponseTooLarge (before reading at
 * all when Content-Length already says so) and `truncate` keeps the first `limit` bytes. The stream is cancelled
 * either way, so nothing larger is ever held in memory and the connection is released.
 */
export async function readBody(response: Response, limit: number, overflow: "refuse" | "truncate"): Promise<string> {
  const declared = Number(response.headers.get("content-length"));
  if (overflow === "refuse" && Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel().catch(() => undefined);
    throw new ResponseTooLarge(limit);
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
        if (overflow === "refuse") throw new ResponseTooLarge(limit);
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

/** The parsed JSON of `text`, or undefined when it is not JSON. */
export function jsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

const record = (value: unknown) => (typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {});
const nonEmpty = (value: unknown) => (typeof value === "string" && value.trim() ? value : undefined);

/**
 * The service's own error message from an error body, cleaned for display: OpenAI, Anthropic and vLLM send
 * `{"error": {"message"}}`, Ollama and llama.cpp `{"error": "…"}`, Notion and proxies `{"message"}`, OAuth token
 * endpoints `{"error", "error_description"}`, Confluence v2 `{"errors": [{"title", "detail"}]}`. Every secret (of 4+
 * characters) and any Bearer/Basic credential is masked before the text is cut to 200 characters, so a cut can never
 * leave part of one; control characters and runs of whitespace become one space.
 */
export function serviceMessage(body: unknown, secrets: readonly string[]): string {
  const root = record(body);
  const first = record(Array.isArray(root.errors) ? root.errors[0] : undefined);
  const oauthError = nonEmpty(root.error);
  const description = nonEmpty(root.error_description);
  const message =
    (oauthError && description ? `${oauthError}: ${description}` : undefined) ??
    description ??
    nonEmpty(root.message) ??
    nonEmpty(record(root.error).message) ??
    oauthError ??
    nonEmpty(first.detail) ??
    nonEmpty(first.title) ??
    nonEmpty(first.message);
  if (!message) return "";
  let clean = message;
  for (const secret of secrets) if (secret.length >= 4) clean = clean.split(secret).join("[redacted]");
  clean = clean.replace(/\b(Bearer|Basic)\s+\S+/gi, "$1 [redacted]");
  clean = clean.replace(/[\p{Cc}\s]+/gu, " ").trim();
  return clean.length > detailMaxChars ? `${clean.slice(0, pairSafeEnd(clean, detailMaxChars - 1))}…` : clean;
}

/** How long the service asks to be left alone, in ms: OpenAI's `retry-after-ms`, or Retry-After as seconds or an HTTP date. */
export function retryAfterMs(headers: Headers): number | undefined {
  const milliseconds = headers.get("retry-after-ms")?.trim();
  if (milliseconds && /^\d+(\.\d+)?$/.test(milliseconds)) return Math.ceil(Number(milliseconds));
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/**
 * What a failed fetch says about the network: the system error code (ECONNREFUSED, ENOTFOUND…) when it is a plain
 * one, and whether it refused a redirect (`redirect: "error"`). fetch wraps these in TypeError("fetch failed") with a
 * cause; it is read by shape, not instanceof, because under Jest's VM modules fetch's errors come from another realm.
 */
export function networkCause(error: unknown): { readonly code: string | null; readonly redirect: boolean } {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  const code = typeof cause?.code === "string" && /^[A-Z_]{2,40}$/.test(cause.code) ? cause.code : null;
  return { code, redirect: cause?.message === "unexpected redirect" };
}

/** A duration for a message: "30 s", "1.5 s". */
export const formatSeconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`);
