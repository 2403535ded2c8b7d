// Bearer tokens on HTTP and WebSocket requests: parsing the Authorization value and verifying it (lib/tokens.ts),
// the Express middleware that does so once for each GraphQL request before PostGraphile sees it, and what a client
// is told when its token is refused. A request without a token is anonymous; one with a bad token (malformed,
// unsigned, wrongly signed, expired, wrong issuer or audience) is refused with UNAUTHENTICATED and nothing else.
// The code stays UNAUTHENTICATED whatever the cause (clients rely on it); `extensions.reason` and the message tell
// an expired token (TOKEN_EXPIRED: refresh it) from any other (TOKEN_INVALID: sign in again), and the log line says
// exactly why (expired, bad_signature, wrong_audience, …; never the token).
import type { IncomingMessage } from "node:http";
import type { RequestHandler } from "express";
import { addToLogContext } from "../lib/log-context.ts";
import type { Logger } from "../lib/logger.ts";
import { InvalidTokenError, type AccessClaims, type TokenService } from "../lib/tokens.ts";
import { isApiKey, type ApiKeys } from "./api-keys.ts";

/** A request authenticateHttp has seen: its verified claims, or null for an anonymous one. */
export type AuthenticatedRequest = IncomingMessage & { quireAuth?: AccessClaims | null };

/** What a route that needs a token answers when there is none (the upload route; GraphQL is then anonymous). */
export const unauthenticatedMessage = "This needs an access token: sign in first.";

/** What a client is told about a refused token, over HTTP (401) and WebSockets alike: code, reason, message. */
export interface TokenRefusalAnswer {
  readonly code: "UNAUTHENTICATED";
  readonly reason: "TOKEN_EXPIRED" | "TOKEN_INVALID";
  readonly message: string;
}

const expiredAnswer: TokenRefusalAnswer = {
  code: "UNAUTHENTICATED",
  reason: "TOKEN_EXPIRED",
  message: "The access token has expired; get a new one with refreshToken.",
};
const invalidAnswer: TokenRefusalAnswer = {
  code: "UNAUTHENTICATED",
  reason: "TOKEN_INVALID",
  message: "The access token is malformed or invalid; sign in again.",
};

/**
 * The answer for an error `claimsOf` threw, after logging why (info for an expired token, which is routine; warn
 * otherwise: a misconfigured client or key, or someone trying tokens). Not an InvalidTokenError: rethrown.
 */
export function refuseToken(error: unknown, log: Logger | undefined): TokenRefusalAnswer {
  if (!(error instanceof InvalidTokenError)) throw error;
  const expired = error.refusal === "expired";
  log?.[expired ? "info" : "warn"]({ tokenRefusal: error.refusal }, `access token refused: ${error.refusal}`);
  return expired ? expiredAnswer : invalidAnswer;
}

/** The claims of `authorization` ("Bearer <jwt>"); null when absent; InvalidTokenError when present but bad. */
function claimsOf(authorization: unknown, tokens: TokenService): AccessClaims | null {
  if (authorization === undefined || authorization === null || authorization === "") return null;
  const match = typeof authorization === "string" ? /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)$/.exec(authorization) : null;
  if (!match) throw new InvalidTokenError(typeof authorization === "string" && authorization.startsWith("Bearer ") ? "malformed" : "not_bearer");
  return tokens.verifyAccessToken(match[1]!);
}

/**
 * The claims of `authorization` when it may also be an API key ("Bearer qk_…", checked with `apiKeys`): null when
 * absent; InvalidTokenError when present but bad.
 */
export async function credentialClaims(authorization: unknown, tokens: TokenService, apiKeys: ApiKeys | undefined): Promise<AccessClaims | null> {
  if (apiKeys && typeof authorization === "string" && authorization.startsWith("Bearer ") && isApiKey(authorization.slice(7))) {
    return apiKeys.verify(authorization.slice(7));
  }
  return claimsOf(authorization, tokens);
}

/**
 * The claims authenticateHttp verified for this request (null: anonymous). Every handler behind it (the rate
 * limiter, the upload route, the GraphQL context) reads them here, so a request's token is verified exactly once.
 * Throws when the request never passed authenticateHttp: a route wired without it is a bug, not an anonymous call.
 */
export function authOf(req: IncomingMessage): AccessClaims | null {
  const claims = (req as AuthenticatedRequest).quireAuth;
  if (claims === undefined) throw new Error("authOf: this route is not behind authenticateHttp");
  return claims;
}

/**
 * Express middleware that verifies the bearer token (an access token, or with `apiKeys` an API key) once, before any other handler of the route (rate limiter
 * included), answering 401 UNAUTHENTICATED for a bad one in the route's error shape: GraphQL's `errors` array
 * (`"graphql"`, the default) or the REST routes' `{ error }` (`"rest"`, the upload route). The claims ride on
 * the request (authOf).
 */
export function authenticateHttp(tokens: TokenService, shape: "graphql" | "rest" = "graphql", apiKeys?: ApiKeys): RequestHandler {
  return (req, res, next) => {
    credentialClaims(req.headers.authorization, tokens, apiKeys).then(
      (claims) => {
        (req as AuthenticatedRequest).quireAuth = claims;
        if (claims) addToLogContext({ orgId: claims.orgId, userId: claims.userId });
        next();
      },
      (error: unknown) => {
        try {
          const { code, reason, message } = refuseToken(error, req.log);
          res.status(401).json(shape === "graphql" ? { errors: [{ message, extensions: { code, reason } }] } : { error: { code, reason, message } });
        } catch (unexpected) {
          next(unexpected);
        }
      },
    );
  };
}
