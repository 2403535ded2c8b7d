// How GraphQL errors reach clients (grafserv's maskError hook). Errors GraphQL itself raises (parse, validation)
// are about the request and pass through as BAD_REQUEST. Errors from PostgreSQL pass only as lib/errors.ts allows.
// Everything else is masked: the client gets INTERNAL and an id, the log gets the id and the real error.
import { randomUUID } from "node:crypto";
import { isSafeError } from "postgraphile/grafast";
import type { Result } from "postgraphile/grafserv";
import { GraphQLError, type GraphQLFormattedError } from "postgraphile/graphql";
import { isDatabaseUnavailable, publicDatabaseError, unavailableMessage, type DatabaseErrorDetail, type ErrorCode } from "../lib/errors.ts";
import { QuireError } from "../lib/quire-error.ts";
import type { Logger } from "../lib/logger.ts";

/** "Cannot query field "x" on type "Query". Did you mean "y"?" without its last sentence. */
export const withoutSuggestions = (message: string) => message.replace(/\s*Did you mean [^]*\?$/, "");

type MaskErrorFn = (error: GraphQLError) => GraphQLError | GraphQLFormattedError;

const sqlStateOf = (error: unknown): string | null => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : null;
};

export interface MaskErrorOptions {
  /**
   * Whether GraphQL's "Did you mean …?" suggestions may reach clients (they spell out the schema one guess at a time):
   * only where introspection is on. Default true.
   */
  readonly suggestions?: boolean;
}

export function makeMaskError(logger: Logger, { suggestions = true }: MaskErrorOptions = {}): MaskErrorFn {
  return (error) => {
    const original = error.originalError;
    const where = { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path };
    if (!original || original instanceof GraphQLError) {
      const message = suggestions ? error.message : withoutSuggestions(error.message);
      return new GraphQLError(message, { ...where, extensions: { code: "BAD_REQUEST", ...error.extensions } });
    }
    // Errors Quire raised on purpose with a code (e.g. UNAUTHENTICATED from the request context) pass as they are.
    // Grafast's own SafeErrors (an invalid cursor, say) carry no code: they are about what the client sent.
    if (isSafeError(original)) {
      const { statusCode: _status, ...extensions } = (original.extensions ?? {}) as Record<string, unknown>;
      return new GraphQLError(original.message, { ...where, extensions: { code: "BAD_INPUT", ...extensions } });
    }
    // PostGraphile's generated delete finds nothing to delete (absent, or hidden by RLS: indistinguishable).
    if (/^No values were deleted in collection '[a-z_]+' because no values you can delete were found/.test(original.message)) {
      return new GraphQLError("No such row, or you may not delete it.", { ...where, extensions: { code: "NOT_FOUND" } });
    }
    const sqlState = sqlStateOf(original);
    const known = sqlState ? publicDatabaseError(sqlState, original.message, original as DatabaseErrorDetail) : null;
    if (known) {
      const extra = original instanceof QuireError ? original.extensions : {};
      const field = known.field === undefined ? {} : { field: known.field };
      return new GraphQLError(known.message, { ...where, extensions: { ...extra, code: known.code, ...field } });
    }
    // No SQLSTATE, but the database cannot serve this now: the pool's wait ran out, or the connection was refused or
    // dropped (PostgreSQL down or restarting).
    if (isDatabaseUnavailable(original)) {
      return new GraphQLError(unavailableMessage, { ...where, extensions: { code: "UNAVAILABLE" } });
    }
    const errorId = randomUUID();
    logger.error({ err: original, errorId, path: error.path }, "masked GraphQL error");
    return new GraphQLError("An internal error occurred.", { ...where, extensions: { code: "INTERNAL", errorId } });
  };
}

/** One error of a GraphQL response body, as clients read it. */
export interface ResponseError {
  readonly message?: string;
  readonly path?: readonly (string | number)[];
  readonly extensions?: Readonly<Record<string, unknown>>;
}

/** A GraphQL response body: read-only, since the same parse is handed to every middleware that reads it. */
export interface ResponseBody {
  readonly data?: Readonly<Record<string, unknown>> | null;
  readonly errors?: readonly ResponseError[];
}

const parsedBodies = new WeakMap<Buffer, ResponseBody | null>();

/**
 * The body of a grafserv result, parsed once however many middlewares read it (metrics, error codes, statuses,
 * the audit of failed requests); null when it is not a JSON object.
 */
export function responseBody(result: Result | null | undefined): ResponseBody | null {
  if (result?.type === "json") return typeof result.json === "object" ? (result.json as ResponseBody | null) : null;
  if (result?.type !== "buffer") return null;
  let body = parsedBodies.get(result.buffer);
  if (body === undefined) {
    try {
      const parsed: unknown = JSON.parse(result.buffer.toString("utf8"));
      body = parsed !== null && typeof parsed === "object" ? (parsed as ResponseBody) : null;
    } catch {
      body = null;
    }
    parsedBodies.set(result.buffer, body);
  }
  return body;
}

/** The code of each status grafserv refuses a request with before running it (a code it already has is kept). */
const refusalCodes: Readonly<Record<number, ErrorCode>> = {
  400: "BAD_REQUEST",
  405: "METHOD_NOT_ALLOWED",
  406: "BAD_REQUEST",
  413: "TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
};

/**
 * GraphQL's own request errors (a document that does not parse or validate, HTTP 400) and grafserv's refusals of the
 * request itself (405 for a method other than POST, 406, 413, 415 for a body that is not JSON) skip maskError; this
 * grafserv middleware gives them the same shape as every other error: a stable `extensions.code` (and never the
 * `statusCode` grafserv leaves there). A 405 says which method to use (`Allow: POST`).
 */
export const RequestErrorCodesPlugin: GraphileConfig.Plugin = {
  name: "QuireRequestErrorCodesPlugin",
  version: "1.0.0",
  grafserv: {
    middleware: {
      async processRequest(next) {
        const result = await next();
        const code = result?.type === "buffer" ? refusalCodes[result.statusCode] : undefined;
        if (result?.type !== "buffer" || !code || !/json/.test(result.headers["content-type"] ?? "")) return result;
        const body = responseBody(result);
        if (!Array.isArray(body?.errors)) return result;
        const errors = body.errors.map((error) => {
          const { statusCode: _status, ...extensions } = error.extensions ?? {};
          return { ...error, extensions: { code, ...extensions } };
        });
        const buffer = Buffer.from(JSON.stringify({ ...body, errors }));
        const headers: Record<string, string> = { ...result.headers, "content-length": String(buffer.length) };
        if (result.statusCode === 405) headers.allow = "POST";
        return { ...result, buffer, headers };
      },
    },
  },
};

/** Seconds a client is asked to wait before retrying an UNAVAILABLE answer (the database restarting, say). */
export const unavailableRetryAfterSeconds = 5;

/**
 * GraphQL answers 200 whatever its errors say; two of them are about the service rather than the request, and
 * proxies, load balancers and clients act on their HTTP status: a response whose every root field failed with
 * UNAVAILABLE becomes 503, and one refused with RATE_LIMITED becomes 429, each with Retry-After. Only responses
 * that mention either code are parsed.
 */
export const ServiceStatusPlugin: GraphileConfig.Plugin = {
  name: "QuireServiceStatusPlugin",
  version: "1.0.0",
  grafserv: {
    middleware: {
      async processRequest(next) {
        const result = await next();
        if (result?.type !== "buffer" || result.statusCode !== 200) return result;
        if (!result.buffer.includes('"UNAVAILABLE"') && !result.buffer.includes('"RATE_LIMITED"')) return result;
        const body = responseBody(result);
        if (!body) return result;
        // Only when nothing succeeded: a partial answer is still an answer.
        if (body.data && Object.values(body.data).some((value) => value !== null)) return result;
        const codes = (body.errors ?? []).map((error) => error.extensions?.code);
        const limited = body.errors?.find((error) => error.extensions?.code === "RATE_LIMITED");
        if (limited) {
          const seconds = Number(limited.extensions?.retryAfterSeconds);
          const retryAfter = String(Number.isFinite(seconds) && seconds > 0 ? Math.ceil(seconds) : 1);
          return { ...result, statusCode: 429, headers: { ...result.headers, "retry-after": retryAfter } };
        }
        if (codes.includes("UNAVAILABLE")) {
          return { ...result, statusCode: 503, headers: { ...result.headers, "retry-after": String(unavailableRetryAfterSeconds) } };
        }
        return result;
      },
    },
  },
};
