// The one HTTP exchange the Notion and Confluence clients make, on the mechanics of lib/outbound-http.ts: JSON in and out, a timeout per attempt combined with
// the caller's signal, redirects followed only within the same origin (a redirect elsewhere would hand our bearer
// token to another host), retries with exponential backoff and full jitter for the failures that pass (429 with its
// Retry-After, 5xx, timeouts, unreachable service), optional pacing per access token, and every failure turned into
// an IntegrationError whose message is safe to show: the service's own short error text at most, secrets masked.
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { deadline, formatSeconds, jsonOrUndefined, networkCause, readBody, ResponseTooLarge, retryAfterMs, serviceMessage } from "../outbound-http.ts";
import { cancelledError, IntegrationError, type IntegrationErrorCode } from "./errors.ts";

export type HttpMethod = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface HttpClientOptions {
  /** Names the service in messages, e.g. "Notion API". */
  readonly service: string;
  /** How long one attempt may take, redirects and body included. Default 30_000. */
  readonly timeoutMs?: number;
  /** Attempts after the first, for retryable failures. Default 4. */
  readonly maxRetries?: number;
  /** The backoff before retry n (from 0) is random in [0, baseDelayMs × 2^n]. Default 500. */
  readonly baseDelayMs?: number;
  /**
   * Cap on any backoff. A Retry-After longer than this is not waited out here: the RATE_LIMITED error is thrown (with
   * its retryAfterMs) for the job queue to reschedule. Default 60_000.
   */
  readonly maxDelayMs?: number;
  /** Requests per second per pacing key (RequestOptions.paceKey); null or 0: no pacing. Default null. */
  readonly requestsPerSecond?: number | null;
  /** The largest response body read, in bytes; a larger one is BAD_RESPONSE. Default 16 MiB. */
  readonly maxResponseBytes?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
  /** Waits `ms`, rejecting when `signal` aborts. Injectable for tests. Default: node:timers/promises' setTimeout. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** A monotonic clock in milliseconds, for pacing. Injectable for tests. Default performance.now. */
  readonly now?: () => number;
  /** A number in [0, 1) for the jitter. Injectable for tests. Default Math.random. */
  readonly random?: () => number;
}

/** An error answer, for RequestOptions.classify. */
export interface Failure {
  readonly status: number;
  /** The parsed JSON body, or undefined when it was not JSON. */
  readonly body: unknown;
}

/** What an error status means: the error code, and the words after the service's name in the message. */
export interface Classification {
  readonly code: IntegrationErrorCode;
  readonly what: string;
}

export interface RequestOptions {
  readonly method: HttpMethod;
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as JSON when defined. */
  readonly body?: unknown;
  /** The caller's signal (worker shutdown); combined with the per-attempt timeout. */
  readonly signal?: AbortSignal | undefined;
  /** Masked in any text taken from the service's answer (tokens, the client secret, Basic credentials). */
  readonly secrets?: readonly string[];
  /**
   * Whether sending the request twice is harmless. Requests that are not are retried only when they cannot have
   * been processed (a 429, a refused connection), never after a timeout or 5xx. Default: true for GET, PUT, DELETE.
   */
  readonly idempotent?: boolean;
  /** Requests with the same key (e.g. one access token) share a pace and a Retry-After pause. Undefined: unpaced. */
  readonly paceKey?: string;
  /** Gives an error status another meaning (e.g. invalid_grant at a token endpoint); undefined: the default one. */
  readonly classify?: (failure: Failure) => Classification | undefined;
  /** Names the service in this request's messages instead of the client's. */
  readonly service?: string;
}

export interface HttpClient {
  /** The parsed JSON of the 2xx answer (null for an empty body); throws IntegrationError for everything else. */
  request(options: RequestOptions): Promise<unknown>;
}

const maxRedirects = 3;

const defaultSleep = async (ms: number, signal?: AbortSignal) => {
  await delay(ms, undefined, signal ? { signal } : {});
};

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const {
    timeoutMs = 30_000,
    maxRetries = 4,
    baseDelayMs = 500,
    maxDelayMs = 60_000,
    maxResponseBytes = 16 * 1024 * 1024,
    sleep = defaultSleep,
    now = () => performance.now(),
    random = Math.random,
  } = options;
  const fetchImpl = options.fetch ?? fetch;
  const pacer = createPacer(options.requestsPerSecond ? 1000 / options.requestsPerSecond : 0, now, sleep);
  // Errors of requests that cannot have reached the service (connection refused), so even a POST may be repeated.
  const unsent = new WeakSet<IntegrationError>();

  /** Waits between attempts; called even for 0 ms (a jittered backoff can be 0), which only yields once. */
  async function pause(ms: number, signal: AbortSignal | undefined, service: string) {
    try {
      await sleep(ms, signal);
    } catch (error) {
      if (signal?.aborted) throw cancelledError(service);
      throw error;
    }
  }

  /** One attempt: the request, the same-origin redirects it leads to, and the answer read and judged. */
  async function attempt(request: RequestOptions, service: string): Promise<unknown> {
    const { signal } = request;
    const limit = deadline(timeoutMs, signal);
    const fail = (error: unknown): IntegrationError => {
      if (error instanceof IntegrationError) return error;
      if (error instanceof ResponseTooLarge) {
        return new IntegrationError("BAD_RESPONSE", `The ${service} answered with more than ${error.limit} bytes.`, { status: lastStatus });
      }
      if (signal?.aborted) return cancelledError(service);
      if (limit.timedOut()) {
        return new IntegrationError("TIMEOUT", `The ${service} did not answer within ${formatSeconds(timeoutMs)}.`, { cause: error });
      }
      const failure = networkError(error, service);
      if (failure.refused) unsent.add(failure.error);
      return failure.error;
    };
    let url = new URL(request.url);
    const origin = url.origin;
    let method: HttpMethod = request.method;
    let body = request.body === undefined ? undefined : JSON.stringify(request.body);
    let lastStatus: number | undefined;
    for (let redirects = 0; ; redirects++) {
      let response: Response;
      let text: string;
      try {
        response = await fetchImpl(url, {
          method,
          headers: { accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }), ...request.headers },
          ...(body === undefined ? {} : { body }),
          redirect: "manual",
          signal: limit.signal,
        });
        lastStatus = response.status;
        if (isRedirect(response.status)) {
          await response.body?.cancel();
          const target = redirectTarget(response, url);
          if (!target || target.origin !== origin) {
            throw new IntegrationError("BAD_RESPONSE", `The ${service} redirected to another host, which is not followed: check its base URL.`, {
              status: response.status,
            });
          }
          if (redirects >= maxRedirects) {
            throw new IntegrationError("BAD_RESPONSE", `The ${service} redirected more than ${maxRedirects} times.`, { status: response.status });
          }
          // As browsers do: 303, and 301/302 after a POST, continue as a GET without the body; 307/308 repeat as is.
          if (response.status === 303 || ((response.status === 301 || response.status === 302) && method === "POST")) {
            method = "GET";
            body = undefined;
          }
          url = target;
          continue;
        }
        text = await readBody(response, maxResponseBytes, "refuse");
      } catch (error) {
        throw fail(error);
      }
      return judge(response, text, request, service);
    }
  }

  return {
    async request(request) {
      const service = request.service ?? options.service;
      const { signal, paceKey } = request;
      if (signal?.aborted) throw cancelledError(service);
      const idempotent = request.idempotent ?? (request.method === "GET" || request.method === "PUT" || request.method === "DELETE");
      for (let retry = 0; ; retry++) {
        if (paceKey !== undefined) {
          try {
            await pacer.acquire(paceKey, signal);
          } catch (error) {
            if (signal?.aborted) throw cancelledError(service);
            throw error;
          }
        }
        try {
          return await attempt(request, service);
        } catch (error) {
          if (signal?.aborted) throw cancelledError(service);
          if (!(error instanceof IntegrationError) || !error.retryable || retry >= maxRetries) throw error;
          if (!idempotent && error.code !== "RATE_LIMITED" && !unsent.has(error)) throw error;
          const { retryAfterMs } = error;
          if (retryAfterMs !== undefined && retryAfterMs > maxDelayMs) throw error;
          if (retryAfterMs !== undefined && paceKey !== undefined) {
            // The whole lane waits, not just this request: its neighbours would be refused too.
            pacer.hold(paceKey, retryAfterMs);
          } else {
            await pause(retryAfterMs ?? Math.floor(random() * Math.min(maxDelayMs, baseDelayMs * 2 ** retry)), signal, service);
          }
        }
      }
    },
  };
}

/** Turns a complete answer into its JSON, or the IntegrationError its status means. */
function judge(response: Response, text: string, request: RequestOptions, service: string): unknown {
  const { status } = response;
  if (status >= 200 && status < 300) {
    if (!text.trim()) return null;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new IntegrationError("BAD_RESPONSE", `The ${service} answered with something other than JSON.`, { status });
    }
  }
  const body = jsonOrUndefined(text);
  const { code, what } = request.classify?.({ status, body }) ?? statusMeaning(status);
  const detail = serviceMessage(body, request.secrets ?? []);
  const retryAfter = code === "RATE_LIMITED" || code === "UNAVAILABLE" || code === "TIMEOUT" ? retryAfterMs(response.headers) : undefined;
  throw new IntegrationError(code, `The ${service} ${what} (HTTP ${status})${detail ? `: ${detail}` : "."}`, {
    status,
    ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter }),
  });
}

function statusMeaning(status: number): Classification {
  if (status === 401) return { code: "AUTH_EXPIRED", what: "refused the access token" };
  if (status === 403) return { code: "FORBIDDEN", what: "refused access" };
  if (status === 404) return { code: "NOT_FOUND", what: "found no such resource" };
  if (status === 408) return { code: "TIMEOUT", what: "timed out" };
  if (status === 429) return { code: "RATE_LIMITED", what: "is rate limiting requests" };
  if (status >= 500) return { code: "UNAVAILABLE", what: "is unavailable" };
  if (status >= 400) return { code: "REJECTED", what: "rejected the request" };
  return { code: "BAD_RESPONSE", what: "answered with an unexpected status" };
}

const isRedirect = (status: number) => status === 301 || status === 302 || status === 303 || status === 307 || status === 308;

function redirectTarget(response: Response, from: URL): URL | null {
  const location = response.headers.get("location");
  if (!location) return null;
  try {
    return new URL(location, from);
  } catch {
    return null;
  }
}

function networkError(error: unknown, service: string): { error: IntegrationError; refused: boolean } {
  const { code } = networkCause(error);
  return {
    error: new IntegrationError("UNAVAILABLE", `The ${service} could not be reached${code ? ` (${code})` : ""}.`, { cause: error }),
    refused: code === "ECONNREFUSED",
  };
}

interface Lane {
  nextFree: number;
  holdUntil: number;
}

/**
 * Pacing per key: requests of one lane start at least `intervalMs` apart (a slot is reserved synchronously, so
 * concurrent callers queue up instead of bursting), and a Retry-After holds the whole lane. Keys are hashed so the
 * map never holds an access token; lanes with nothing pending are dropped once there are many.
 */
function createPacer(intervalMs: number, now: () => number, sleep: (ms: number, signal?: AbortSignal) => Promise<void>) {
  const lanes = new Map<string, Lane>();
  const laneOf = (key: string, at: number): Lane => {
    const id = createHash("sha256").update(key).digest("base64url");
    let lane = lanes.get(id);
    if (!lane) {
      if (lanes.size >= 256) for (const [other, idle] of lanes) if (idle.nextFree <= at && idle.holdUntil <= at) lanes.delete(other);
      lane = { nextFree: -Infinity, holdUntil: -Infinity };
      lanes.set(id, lane);
    }
    return lane;
  };
  return {
    async acquire(key: string, signal: AbortSignal | undefined) {
      const at = now();
      const lane = laneOf(key, at);
      const start = Math.max(at, lane.nextFree, lane.holdUntil);
      lane.nextFree = start + intervalMs;
      if (start > at) await sleep(Math.ceil(start - at), signal);
    },
    hold(key: string, ms: number) {
      const at = now();
      const lane = laneOf(key, at);
      lane.holdUntil = Math.max(lane.holdUntil, at + ms);
    },
  };
}
