// The one error the Notion and Confluence clients throw. Callers branch on `code` rather than on HTTP statuses:
// AUTH_EXPIRED means "refresh the access token and try again", INVALID_GRANT means "the user must connect the
// integration again", the retryable codes mean "later", the rest mean "this request will not work". The message is
// safe to store and show: it may quote the service's own short error text, but never a token, a client secret,
// request headers or a whole response body.

export const integrationErrorCodes = [
  "RATE_LIMITED", // 429: the service asks us to slow down (retryAfterMs says for how long when it said)
  "UNAVAILABLE", // 5xx, or the service could not be reached (connection refused, reset, DNS)
  "TIMEOUT", // no complete answer within the per-request timeout
  "AUTH_EXPIRED", // 401 from the API: the access token expired or was revoked; refresh it
  "INVALID_GRANT", // the token endpoint refused the code or refresh token: the integration needs re-authorization
  "FORBIDDEN", // 403: the token is valid but may not touch this resource (not shared, missing scope)
  "NOT_FOUND", // 404: no such page, block or space (or it is not shared with the integration)
  "REJECTED", // any other 4xx: the request itself is refused and will be refused again
  "BAD_RESPONSE", // a 2xx that is not the expected JSON, a redirect we will not follow, an answer too large
  "CANCELLED", // the caller's signal aborted
] as const;
export type IntegrationErrorCode = (typeof integrationErrorCodes)[number];

const retryableCodes: ReadonlySet<IntegrationErrorCode> = new Set(["RATE_LIMITED", "UNAVAILABLE", "TIMEOUT"]);

export interface IntegrationErrorOptions {
  /** Default: true for RATE_LIMITED, UNAVAILABLE and TIMEOUT, false for the others. */
  readonly retryable?: boolean;
  /** How long the service asked to wait (Retry-After), in milliseconds. */
  readonly retryAfterMs?: number;
  /** The HTTP status the service answered with, if it answered. */
  readonly status?: number;
  /** The underlying error, for logs only (its message may name hosts; it is never shown to users). */
  readonly cause?: unknown;
}

export class IntegrationError extends Error {
  readonly code: IntegrationErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;
  constructor(code: IntegrationErrorCode, message: string, options: IntegrationErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "IntegrationError";
    this.code = code;
    this.retryable = options.retryable ?? retryableCodes.has(code);
    this.retryAfterMs = options.retryAfterMs;
    this.status = options.status;
  }
}

/** The error for a request the caller's signal aborted. */
export const cancelledError = (service: string) => new IntegrationError("CANCELLED", `The request to the ${service} was cancelled.`);

/** The error for a 2xx answer whose JSON lacks what the client needs. */
export const badResponse = (service: string, what: string) => new IntegrationError("BAD_RESPONSE", `The ${service} answered without ${what}.`);
