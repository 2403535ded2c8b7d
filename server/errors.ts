// How GraphQL errors reach clients (grafserv's maskError hook). Errors GraphQL itself raises (parse, validation)
// are about the request and pass through as BAD_REQUEST. Errors from PostgreSQL pass only as lib/errors.ts allows.
// Everything else is masked: the client gets INTERNAL and an id, the log gets the id and the real error.
import { randomUUID } from "node:crypto";
import { isSafeError } from "postgraphile/grafast";
import { GraphQLError, type GraphQLFormattedError } from "postgraphile/graphql";
import { publicDatabaseError } from "../lib/errors.ts";
import { QuireError } from "../lib/quire-error.ts";
import type { Logger } from "../lib/logger.ts";

type MaskErrorFn = (error: GraphQLError) => GraphQLError | GraphQLFormattedError;

const sqlStateOf = (error: unknown): string | null => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : null;
};

export function makeMaskError(logger: Logger): MaskErrorFn {
  return (error) => {
    const original = error.originalError;
    const where = { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path };
    if (!original || original instanceof GraphQLError) {
      return new GraphQLError(error.message, { ...where, extensions: { code: "BAD_REQUEST", ...error.extensions } });
    }
    // Errors Quire raised on purpose with a code (e.g. UNAUTHENTICATED from the request context) pass as they are.
    if (isSafeError(original)) {
      const { statusCode: _status, ...extensions } = (original.extensions ?? {}) as Record<string, unknown>;
      return new GraphQLError(original.message, { ...where, extensions });
    }
    // PostGraphile's generated delete finds nothing to delete (absent, or hidden by RLS: indistinguishable).
    if (/^No values were deleted in collection '[a-z_]+' because no values you can delete were found/.test(original.message)) {
      return new GraphQLError("No such row, or you may not delete it.", { ...where, extensions: { code: "NOT_FOUND" } });
    }
    // The pool's wait for a free connection ran out (exhausted pool, or a database that does not answer).
    if (/^timeout exceeded when trying to connect$|^Connection terminated due to connection timeout$/.test(original.message)) {
      return new GraphQLError("The service is busy; try again shortly.", { ...where, extensions: { code: "UNAVAILABLE" } });
    }
    const sqlState = sqlStateOf(original);
    const known = sqlState ? publicDatabaseError(sqlState, original.message) : null;
    if (known) {
      const extra = original instanceof QuireError ? original.extensions : {};
      return new GraphQLError(known.message, { ...where, extensions: { ...extra, code: known.code } });
    }
    const errorId = randomUUID();
    logger.error({ err: original, errorId, path: error.path }, "masked GraphQL error");
    return new GraphQLError("An internal error occurred.", { ...where, extensions: { code: "INTERNAL", errorId } });
  };
}

/**
 * GraphQL's own request errors (a document that does not parse or validate, HTTP 400) skip maskError; this grafserv
 * middleware gives them the same shape as every other error: `extensions.code` BAD_REQUEST.
 */
export const RequestErrorCodesPlugin: GraphileConfig.Plugin = {
  name: "QuireRequestErrorCodesPlugin",
  version: "1.0.0",
  grafserv: {
    middleware: {
      async processRequest(next) {
        const result = await next();
        if (result?.type !== "buffer" || result.statusCode !== 400 || !/json/.test(result.headers["content-type"] ?? "")) return result;
        let body: { errors?: Array<{ extensions?: Record<string, unknown> }> };
        try {
          body = JSON.parse(result.buffer.toString("utf8")) as typeof body;
        } catch {
          return result;
        }
        if (!Array.isArray(body.errors)) return result;
        for (const error of body.errors) error.extensions = { code: "BAD_REQUEST", ...error.extensions };
        const buffer = Buffer.from(JSON.stringify(body));
        return { ...result, buffer, headers: { ...result.headers, "content-length": String(buffer.length) } };
      },
    },
  },
};
