// Denied and failed API requests in the audit log. A request refused inside its transaction (a policy, a role
// check, a row that is not there) rolls back, and with it anything its triggers wrote; so once the response is
// ready, this grafserv middleware records it in a transaction of its own (app_private.record_request_failure,
// which only the server's login may call): access_denied for FORBIDDEN, request_failed for the other errors a
// signed-in caller's request can earn. The root fields that failed and their codes are recorded, never inputs.
import type pg from "pg";
import type { Logger } from "../lib/logger.ts";
import type { AuthenticatedRequest } from "./bearer-auth.ts";
import type { ClientAddress } from "./client-address.ts";
import { responseBody, type ResponseError } from "./errors.ts";

/**
 * Codes about the service, the request's shape or the caller's standing rather than their attempt: not audited
 * (MFA_ENROLLMENT_REQUIRED, SSO_REQUIRED: every request of a session that the organization's sign-in rules hold up).
 */
const unaudited = new Set([
  "UNAVAILABLE",
  "RATE_LIMITED",
  "BAD_REQUEST",
  "QUERY_TOO_COMPLEX",
  "UNTRUSTED_DOCUMENT",
  "UNAUTHENTICATED",
  "MFA_ENROLLMENT_REQUIRED",
  "SSO_REQUIRED",
  "INTERNAL",
  "TIMEOUT",
]);

/** What to record of a response's errors: the action, and the failed root fields with their codes; null: nothing. */
export function auditableFailure(
  errors: readonly ResponseError[],
): { action: "access_denied" | "request_failed"; failures: Array<{ field: string | null; code: string }> } | null {
  const failures = errors
    .map((error) => ({ field: typeof error.path?.[0] === "string" ? error.path[0] : null, code: String(error.extensions?.code ?? "") }))
    .filter((failure) => failure.code !== "" && !unaudited.has(failure.code));
  if (failures.length === 0) return null;
  return { action: failures.some((f) => f.code === "FORBIDDEN") ? "access_denied" : "request_failed", failures };
}

export function makeRequestAuditPlugin({ pool, logger, addressOf }: { pool: pg.Pool; logger: Logger; addressOf: ClientAddress }): GraphileConfig.Plugin {
  return {
    name: "QuireRequestAuditPlugin",
    version: "1.0.0",
    grafserv: {
      middleware: {
        async processRequest(next, event) {
          const result = await next();
          const req = event.requestDigest.requestContext.node?.req as AuthenticatedRequest | undefined;
          const claims = req?.quireAuth;
          if (!req || !claims || result?.type !== "buffer" || !result.buffer.includes('"errors"')) return result;
          const failure = auditableFailure(responseBody(result)?.errors ?? []);
          if (!failure) return result;
          try {
            await pool.query("select app_private.record_request_failure($1, $2, $3, $4, $5, $6, $7)", [
              claims.orgId,
              claims.userId,
              claims.sessionId,
              failure.action,
              JSON.stringify({ failures: failure.failures }),
              req.id ?? null,
              addressOf(req),
            ]);
          } catch (error) {
            logger.error({ err: error, action: failure.action }, "could not record a failed request in the audit log");
          }
          return result;
        },
      },
    },
  };
}
