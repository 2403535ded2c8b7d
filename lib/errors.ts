// The two lists of error codes clients can rely on: the API's (ErrorCode, what a failed request answers) and the
// jobs' (JobErrorCode, what a failed or retrying job carries), so both are typed and kept in one place.
//
// A PostgreSQL error reaches a client of the API only through the tables below: Quire's own SQL raises the
// five-letter custom SQLSTATEs (`raise exception '...' using errcode = 'NTFND'`) with a message written for the
// user; a few standard SQLSTATEs map to a code with a fixed message (PostgreSQL's own text can name constraints and
// values, so it is never passed on). Anything else is masked as INTERNAL with an id that is logged beside the real
// error. The README's error table is checked against this list by a test.

export type ErrorCode =
  | "BAD_REQUEST" // the GraphQL document itself is malformed or invalid against the schema
  | "QUERY_TOO_COMPLEX" // the operation is nested too deeply, or has too many aliases or field selections
  | "QUERY_TOO_LARGE" // the GraphQL document (the `query` text) is over GRAPHQL_MAX_DOCUMENT_BYTES; values go in variables
  | "RESPONSE_TOO_LARGE" // the operation's answer would be over GRAPHQL_MAX_RESPONSE_BYTES; ask for content one document at a time
  | "METHOD_NOT_ALLOWED" // the HTTP method is not one the path answers (GraphQL: POST only)
  | "UNSUPPORTED_MEDIA_TYPE" // the request body's Content-Type is not one the path reads (GraphQL: application/json)
  | "UNTRUSTED_DOCUMENT" // GRAPHQL_TRUSTED_DOCUMENTS_FILE is set and the request names no document in it
  | "BAD_INPUT"
  | "NOT_FOUND"
  | "FORBIDDEN"
  | "UNAUTHENTICATED"
  | "INVALID_CREDENTIALS"
  | "MFA_REQUIRED" // the password was right; send a code with verifyMfa and extensions.challenge
  | "MFA_ENROLLMENT_REQUIRED" // the organization requires two-factor authentication, which this person has not turned on
  | "EMAIL_NOT_VERIFIED" // the caller's address is unverified: inviting and connecting integrations wait for verifyEmail
  | "SSO_REQUIRED" // the organization signs in with single sign-on (startSso); its owners keep their password
  | "CONFLICT"
  | "TOO_LARGE"
  | "UNSUPPORTED_TYPE" // an uploaded file's bytes are not a type Quire extracts text from (decided from the bytes)
  | "BAD_TEMPLATE"
  | "RATE_LIMITED"
  | "QUOTA_EXCEEDED"
  | "UPSTREAM_ERROR" // Notion or Confluence failed a request made for the client; extensions.reason says how
  | "TRY_AGAIN"
  | "TIMEOUT"
  | "UNAVAILABLE"
  | "INTERNAL";

/**
 * The codes a job carries in app_public.jobs.error_code (the API's `Job.errorCode`) with a message safe to show:
 * written by the worker (worker/job-task.ts and the tasks it wraps) and by the database's own functions. A failed
 * job keeps its code; a job waiting for a retry carries its last attempt's.
 */
export const jobErrorCodes = [
  // The LLM failed (lib/llm/provider.ts, llmErrorCodes: each is written as it is).
  "LLM_TIMEOUT",
  "LLM_RATE_LIMITED",
  "LLM_UNAVAILABLE",
  "LLM_REJECTED",
  "LLM_AUTH",
  "LLM_BAD_RESPONSE",
  "LLM_CANCELLED", // the worker stopped mid-call: the job is queued again at once
  // Notion or Confluence failed (lib/integrations/errors.ts: INTEGRATION_ and the client's code, except
  // INVALID_GRANT, which is INTEGRATION_NEEDS_REAUTH).
  "INTEGRATION_RATE_LIMITED",
  "INTEGRATION_UNAVAILABLE",
  "INTEGRATION_TIMEOUT",
  "INTEGRATION_AUTH_EXPIRED",
  "INTEGRATION_FORBIDDEN",
  "INTEGRATION_NOT_FOUND",
  "INTEGRATION_REJECTED",
  "INTEGRATION_BAD_RESPONSE",
  "INTEGRATION_CANCELLED", // the worker stopped mid-call: the job is queued again at once
  "INTEGRATION_NEEDS_REAUTH", // the provider refused the refresh token; also written by app_public.integration_needs_reauth
  "INTEGRATION_DISCONNECTED", // the integration is gone or disconnected; also written when it is disconnected
  "NOT_CONFIGURED", // this worker has no client or no SEALING_KEYS for the integration's provider
  // Object storage failed (lib/storage/): an export is retried.
  "STORAGE_UNAVAILABLE",
  // What the job works on is gone or unusable.
  "DOCUMENT_DELETED", // also written when the document is deleted
  "SUMMARY_DELETED",
  "BAD_TEMPLATE",
  "BAD_INPUT", // the job's parameters lack what it needs
  // The run itself failed.
  "WORKER_LOST", // written by the database when the worker running the last attempt died
  "INTERNAL", // anything else, on the last attempt; the worker's log has the details
] as const;
export type JobErrorCode = (typeof jobErrorCodes)[number];

/** Quire's custom SQLSTATEs. The SQL's message is shown to the client as written. */
export const customSqlStates = {
  BADIN: "BAD_INPUT", // the input is malformed or out of range; the message says which field and why
  NTFND: "NOT_FOUND", // the row does not exist, or belongs to another organization (the two are indistinguishable)
  DNIED: "FORBIDDEN", // the caller's role in the organization does not allow this
  LOGIN: "UNAUTHENTICATED", // the request needs a valid, live session
  CREDS: "INVALID_CREDENTIALS", // sign-in failed: unknown email and wrong password answer alike; or a wrong or spent 2FA code
  MFARQ: "MFA_REQUIRED", // the password was right and 2FA is on: extensions.challenge goes to verifyMfa with a code
  MFAEN: "MFA_ENROLLMENT_REQUIRED", // the organization requires 2FA: turn it on (startMfaEnrollment) before anything else
  UNVRF: "EMAIL_NOT_VERIFIED", // verify your address first (the link emailed at registration; resendVerificationEmail)
  SSORQ: "SSO_REQUIRED", // the organization requires single sign-on: sign in with startSso (owners may still use a password)
  TAKEN: "CONFLICT", // a unique value (slug, email, name) is already in use
  TOOLG: "TOO_LARGE", // a value exceeds a configured size limit
  BADTM: "BAD_TEMPLATE", // a template body uses an unknown placeholder or stray braces; the message says which
  RLIMT: "RATE_LIMITED", // too many requests; retry later
  QUOTA: "QUOTA_EXCEEDED", // the organization's monthly allowance (summaries or LLM tokens) or its storage allowance is used up
} as const satisfies Record<string, ErrorCode>;

/** What a client is told when the database cannot serve its request right now (an exhausted pool, 53300). */
export const unavailableMessage = "The service is busy; try again shortly.";

/**
 * Standard SQLSTATEs with a stable meaning for clients, and the fixed message they get. Every other SQLSTATE of class
 * 22 (data exception: a value the client sent that PostgreSQL cannot take, such as a negative LIMIT, 2201W) is
 * BAD_INPUT too, with {@link dataExceptionMessage}.
 */
export const standardSqlStates: Readonly<Record<string, { code: ErrorCode; message: string }>> = {
  "22001": { code: "BAD_INPUT", message: "A value is too long." },
  "22003": { code: "BAD_INPUT", message: "A number is out of range." },
  "22007": { code: "BAD_INPUT", message: "A date or time is malformed." },
  "22008": { code: "BAD_INPUT", message: "A date or time is out of range." },
  "22009": { code: "BAD_INPUT", message: "A time zone offset is out of range." },
  "2201W": { code: "BAD_INPUT", message: "A page size (first, last) must not be negative." },
  "2201X": { code: "BAD_INPUT", message: "An offset must not be negative." },
  "22021": { code: "BAD_INPUT", message: "Text contains a byte sequence that is not valid UTF-8 or a NUL byte." },
  "22023": { code: "BAD_INPUT", message: "A value is invalid." },
  "22P02": { code: "BAD_INPUT", message: "A value is malformed." },
  "22P05": { code: "BAD_INPUT", message: "Text contains a character that cannot be stored." },
  "23502": { code: "BAD_INPUT", message: "A required value is missing." },
  "23503": { code: "CONFLICT", message: "The change refers to a row that does not exist, or one still referred to." },
  "23505": { code: "CONFLICT", message: "A value that must be unique is already in use." },
  "23514": { code: "BAD_INPUT", message: "A value is not allowed." },
  "42501": { code: "FORBIDDEN", message: "You are not allowed to do this." },
  "40001": { code: "TRY_AGAIN", message: "The change conflicted with another one; try again." },
  "40P01": { code: "TRY_AGAIN", message: "The change conflicted with another one; try again." },
  "57014": { code: "TIMEOUT", message: "The request took too long and was cancelled." },
  "53300": { code: "UNAVAILABLE", message: unavailableMessage },
  "57P01": { code: "UNAVAILABLE", message: "The database is restarting; try again shortly." },
  "57P02": { code: "UNAVAILABLE", message: "The database is restarting; try again shortly." },
  "57P03": { code: "UNAVAILABLE", message: "The database is starting up; try again shortly." },
  "08000": { code: "UNAVAILABLE", message: "The connection to the database failed; try again shortly." },
  "08003": { code: "UNAVAILABLE", message: "The connection to the database failed; try again shortly." },
  "08006": { code: "UNAVAILABLE", message: "The connection to the database failed; try again shortly." },
};

/** Socket errors meaning the database cannot be reached (down, restarting, or its address unresolvable). */
const unreachableCodes = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN"]);

/**
 * Whether `error` means the database could not serve the request right now, so the client should retry shortly
 * (UNAVAILABLE, HTTP 503): the pool's wait for a connection ran out (an exhausted pool, or a database that does not
 * answer), the connection was refused or dropped (PostgreSQL restarting), or PostgreSQL said so itself.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === "string" && (unreachableCodes.has(code) || standardSqlStates[code]?.code === "UNAVAILABLE")) return true;
  return (
    typeof message === "string" &&
    /^(timeout exceeded when trying to connect|Connection terminated unexpectedly|Connection terminated due to connection timeout|Connection terminated|Client has encountered a connection error and is not queryable)$/.test(
      message,
    )
  );
}

/** What a client is told about any other data exception (class 22): never PostgreSQL's text, which quotes values. */
export const dataExceptionMessage = "A value is not valid.";

/** What PostgreSQL says about the object an error concerns (node-postgres copies these fields onto the error). */
export interface DatabaseErrorDetail {
  readonly table?: unknown;
  readonly column?: unknown;
  readonly constraint?: unknown;
}

/**
 * The field a failed constraint is about, from PostgreSQL's own naming of column constraints (`<table>_<column>_check`,
 * `<table>_<column>_not_null`) or the error's column; null when neither names one. Only an identifier of the
 * table's own is returned, so nothing but a column name can reach a client.
 */
export function constraintField(detail: DatabaseErrorDetail | undefined): string | null {
  const identifier = (value: unknown) => (typeof value === "string" && /^[a-z_][a-z0-9_]{0,62}$/.test(value) ? value : null);
  const column = identifier(detail?.column);
  if (column) return column;
  const table = identifier(detail?.table);
  const constraint = identifier(detail?.constraint);
  if (!table || !constraint?.startsWith(`${table}_`)) return null;
  const field = constraint.slice(table.length + 1).replace(/_(check|not_null|valid)\d*$/, "");
  return field === constraint.slice(table.length + 1) || field === "" ? null : field;
}

/** A column name as the GraphQL API spells it (PostGraphile camel-cases them): `external_url` → `externalUrl`. */
const apiName = (column: string) => column.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * What a client is told about a PostgreSQL error, or null when it must be masked. A check or not-null violation
 * names the field it is about (`title is not allowed: …`), read from the constraint's name, never from
 * PostgreSQL's message (which can quote the whole row).
 */
export function publicDatabaseError(
  sqlState: string,
  message: string,
  detail?: DatabaseErrorDetail,
): { code: ErrorCode; message: string; field?: string } | null {
  const custom = (customSqlStates as Record<string, ErrorCode>)[sqlState];
  if (custom) return { code: custom, message };
  if (sqlState === "23514" || sqlState === "23502") {
    const column = constraintField(detail);
    if (column) {
      const field = apiName(column);
      const problem = sqlState === "23502" ? `${field} is required.` : `${field} is not allowed: it is empty, too long, or not in the accepted form.`;
      return { code: "BAD_INPUT", message: problem, field };
    }
  }
  const known = standardSqlStates[sqlState];
  if (known) return known;
  if (sqlState.startsWith("22")) return { code: "BAD_INPUT", message: dataExceptionMessage };
  return null;
}
