// The HTTP exchange the hosted providers share, on the mechanics of lib/outbound-http.ts: POST a JSON body with a
// timeout and the caller's abort signal, refuse redirects, and turn every failure (network, timeout, cancel, status,
// unreadable body) into an LlmError whose message is safe to show: the service's own short error message at most,
// with the API key masked. The answer is either one JSON body (postJson) or a stream of Server-Sent Events
// (postEventStream, when the caller wants the text as it is written); both are
// read as a stream and at most `maxResponseBytes` of it are kept: a service that sends more is refused
// (LLM_BAD_RESPONSE) as soon as it crosses the bound, and nothing larger is ever held in memory.
import { createParser, type EventSourceMessage } from "eventsource-parser";
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
  /**
   * Most bytes of the answer body read, a whole event stream included (default: room for the largest summary,
   * JSON-escaped, and its envelope).
   */
  readonly maxResponseBytes?: number;
}

export interface JsonAnswer {
  /** The parsed JSON of a 2xx answer. */
  readonly body: unknown;
  readonly latencyMs: number;
}

/** POSTs `body` as JSON and returns the parsed 2xx answer; throws LlmError for everything else. */
export async function postJson(options: PostJsonOptions): Promise<JsonAnswer> {
  const { response, limit, started } = await send(options, "application/json");
  const { status } = response;
  if (status < 200 || status >= 300) throw await statusError(response, limit, options);
  const { json, latencyMs } = await jsonBody(response, limit, started, options);
  return { body: json, latencyMs };
}

/** A 2xx answer's body read whole (bounded) and parsed as JSON. */
async function jsonBody(response: Response, limit: Deadline, started: number, options: PostJsonOptions): Promise<{ json: unknown; latencyMs: number }> {
  let text: string;
  try {
    text = await readBody(response, options.maxResponseBytes ?? completionResponseMaxBytes, "refuse");
  } catch (error) {
    throw failure(error, limit, options, "answer");
  }
  const latencyMs = Math.round(performance.now() - started);
  try {
    return { json: JSON.parse(text) as unknown, latencyMs };
  } catch {
    throw new LlmError("LLM_BAD_RESPONSE", `The ${options.service} answered with something other than JSON.`, { status: response.status });
  }
}

export interface PostEventStreamOptions extends PostJsonOptions {
  /**
   * Called with each event of the stream, in order, as it arrives; returns true at the event that completes the
   * answer (OpenAI's `data: [DONE]`, Anthropic's message_stop), where reading stops and the connection is released.
   * What it throws (an LlmError for an error event, or whatever the caller's onDelta throws) ends the request and is
   * thrown as it is.
   */
  onEvent(event: EventSourceMessage): boolean;
}

export interface StreamAnswer {
  /** From sending the request to the event that completed the answer. */
  readonly latencyMs: number;
  /** Set when the server answered one JSON document instead of a stream (it ignored `stream: true`): that document. */
  readonly json?: unknown;
}

/**
 * POSTs `body` as JSON and reads the 2xx answer as Server-Sent Events (text/event-stream), handing each to `onEvent`
 * until one completes the answer. A status other than 2xx is the same LlmError as postJson's, and so are a timeout
 * (the whole stream counts), a cancel (the body read stops at once) and a stream past `maxResponseBytes`. A 2xx JSON
 * answer (a server that does not stream) is returned parsed, as `json`; any other 2xx that is not an event stream is
 * LLM_BAD_RESPONSE; a stream that breaks off or ends before its last event is
 * LLM_UNAVAILABLE (retryable: the answer was cut, not wrong).
 */
export async function postEventStream(options: PostEventStreamOptions): Promise<StreamAnswer> {
  const { service } = options;
  const { response, limit, started } = await send(options, "text/event-stream");
  const { status } = response;
  if (status < 200 || status >= 300) throw await statusError(response, limit, options);
  const contentType = response.headers.get("content-type") ?? "";
  // A server that does not stream (some OpenAI-compatible ones ignore `stream: true`) answers one JSON document.
  if (/^application\/json\b/i.test(contentType)) return { ...(await jsonBody(response, limit, started, options)) };
  if (!response.body || !/^text\/event-stream\b/i.test(contentType)) {
    await response.body?.cancel().catch(() => undefined);
    throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with something other than an event stream.`, { status });
  }
  const maxBytes = options.maxResponseBytes ?? completionResponseMaxBytes;
  const events: EventSourceMessage[] = [];
  // Events are collected while a chunk is parsed and handled after, so what onEvent throws never passes the parser.
  const parser = createParser({ onEvent: (event) => events.push(event) });
  const decoder = new TextDecoder();
  const reader = response.body.getReader();
  let received = 0;
  try {
    for (;;) {
      const chunk = await reader.read().catch((error: unknown) => {
        throw failure(error, limit, options, "answer");
      });
      if (chunk.done) throw new LlmError("LLM_UNAVAILABLE", `The ${service}'s answer ended before it was complete.`);
      received += chunk.value.byteLength;
      if (received > maxBytes) throw tooLarge(maxBytes);
      parser.feed(decoder.decode(chunk.value, { stream: true }));
      for (const event of events.splice(0)) {
        // Nothing more is handed over once the caller cancelled (an onDelta may have, mid-chunk) or time ran out.
        if (limit.signal.aborted) throw failure(limit.signal.reason, limit, options, "answer");
        if (options.onEvent(event)) return { latencyMs: Math.round(performance.now() - started) };
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/** The JSON of an event's data; LLM_BAD_RESPONSE when it is not JSON. */
export function eventJson(event: EventSourceMessage, service: string): unknown {
  try {
    return JSON.parse(event.data) as unknown;
  } catch {
    throw new LlmError("LLM_BAD_RESPONSE", `The ${service} sent an event that is not JSON.`);
  }
}

/** An error the service reported inside a stream (`body` is the event's JSON), with its message cleaned of secrets. */
export function streamError(code: LlmErrorCode, body: unknown, options: Pick<PostJsonOptions, "service" | "secrets">): LlmError {
  const detail = serviceMessage(body, options.secrets);
  return new LlmError(code, `The ${options.service} failed mid-answer${detail ? `: ${detail}` : "."}`);
}

/** Starts the POST: the response as soon as its status and headers are in, with the deadline it runs under. */
async function send(options: PostJsonOptions, accept: string) {
  if (options.signal?.aborted) throw cancelledError();
  const limit = deadline(options.timeoutMs, options.signal);
  const started = performance.now();
  try {
    const response = await options.fetch(options.url, {
      method: "POST",
      headers: { "content-type": "application/json", accept, ...options.headers },
      body: JSON.stringify(options.body),
      redirect: "error",
      signal: limit.signal,
    });
    return { response, limit, started };
  } catch (error) {
    throw failure(error, limit, options, "request");
  }
}

type Deadline = ReturnType<typeof deadline>;

/** A non-2xx answer as an LlmError: its status's meaning, the service's own message, and Retry-After when it applies. */
async function statusError(response: Response, limit: Deadline, options: PostJsonOptions): Promise<LlmError> {
  const { status } = response;
  let text: string;
  try {
    // An error answer is read only far enough for its message.
    text = await readBody(response, Math.min(options.maxResponseBytes ?? completionResponseMaxBytes, errorBodyMaxBytes), "truncate");
  } catch (error) {
    return failure(error, limit, options, "answer");
  }
  const [code, what] = statusMeaning(status);
  // A refused key's message often quotes part of the key ("Incorrect API key provided: sk-…wxyz"): it is not kept.
  const detail = code === "LLM_AUTH" ? undefined : serviceMessage(jsonOrUndefined(text), options.secrets);
  const retryAfter = status === 408 || status === 429 || status >= 500 ? retryAfterMs(response.headers) : undefined;
  return new LlmError(code, `The ${options.service} ${what} (HTTP ${status})${detail ? `: ${detail}` : "."}`, {
    status,
    ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
  });
}

/** Error answers are read only far enough for their message. */
const errorBodyMaxBytes = 64 * 1024;

/** What a failed fetch or body read means: while sending the `request`, or reading the `answer` once it began. */
function failure(error: unknown, limit: Deadline, options: PostJsonOptions, during: "request" | "answer"): LlmError {
  const { service } = options;
  if (error instanceof ResponseTooLarge) return tooLarge(error.limit);
  if (options.signal?.aborted) return cancelledError();
  if (limit.timedOut()) {
    const what = during === "request" ? "answer" : "finish its answer";
    return new LlmError("LLM_TIMEOUT", `The ${service} did not ${what} within ${formatSeconds(options.timeoutMs)}.`, { cause: error });
  }
  const { code, redirect } = networkCause(error);
  if (redirect) {
    return new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with a redirect, which is not followed: check its base URL.`, { cause: error });
  }
  const where = during === "request" ? "could not be reached" : "broke off its answer";
  return new LlmError("LLM_UNAVAILABLE", `The ${service} ${where}${code ? ` (${code})` : ""}.`, { cause: error });
}

const tooLarge = (limit: number) =>
  new LlmError("LLM_BAD_RESPONSE", `The language model's answer is larger than ${limit} bytes, which is more than a summary may be.`);

/** A completion's text, refused (LLM_BAD_RESPONSE) when it is longer than a summary may be stored. */
export function boundedCompletion(text: string, service: string): string {
  if (Buffer.byteLength(text) > summaryMaxBytes) throw textTooLarge(service);
  return withoutNul(text);
}

/** The text without NUL characters, which PostgreSQL's text cannot hold (a model can be made to write them). */
const withoutNul = (text: string) => text.replaceAll("\u0000", "");

const textTooLarge = (service: string) =>
  new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with more than ${summaryMaxBytes} bytes of text, more than a summary may be.`);

/**
 * A streamed answer's text, handed to `onDelta` piece by piece under CompletionRequest.onDelta's contract: the
 * answer's leading whitespace is dropped and whitespace at the end of what has come is held back until more text
 * follows it, so the pieces delivered join into exactly the final, trimmed text. Refused (LLM_BAD_RESPONSE) as soon
 * as that text would pass summaryMaxBytes, before the piece that crosses it is delivered.
 */
export function streamedText(service: string, onDelta: (text: string) => void) {
  let text = "";
  let bytes = 0;
  let held = "";
  return {
    /** Takes the next piece of the answer as the service sent it. */
    add(given: string): void {
      const piece = withoutNul(given);
      // Until the first delivered text, everything held is whitespace to drop.
      const pending = text ? held + piece : piece.trimStart();
      const end = pending.trimEnd().length;
      held = pending.slice(end);
      if (end === 0) return;
      const delta = pending.slice(0, end);
      bytes += Buffer.byteLength(delta);
      if (bytes > summaryMaxBytes) throw textTooLarge(service);
      text += delta;
      onDelta(delta);
    },
    /** All the text delivered so far: the answer, trimmed, once the stream is complete. */
    text: () => text,
  };
}

function statusMeaning(status: number): [LlmErrorCode, string] {
  if (status === 401 || status === 403) return ["LLM_AUTH", "refused the API key"];
  if (status === 408) return ["LLM_TIMEOUT", "timed out"];
  if (status === 429) return ["LLM_RATE_LIMITED", "is rate limiting requests"];
  if (status >= 500) return ["LLM_UNAVAILABLE", "is unavailable"];
  if (status >= 400) return ["LLM_REJECTED", "rejected the request"];
  return ["LLM_BAD_RESPONSE", "answered with an unexpected status"];
}

/** A token count the service reported, or undefined when it is absent or not a whole number ≥ 0. */
export const tokenCount = (value: unknown): number | undefined => (typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined);

/** The model name an answer gives, when it is a plausible one (what summaries and usage records store). */
export const answeredModel = (value: unknown): string | undefined =>
  typeof value === "string" && value.length >= 1 && value.length <= 200 ? value : undefined;
