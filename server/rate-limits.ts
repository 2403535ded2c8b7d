// Request rate limits, enforced before a request does any work: each API request (GraphQL over HTTP, uploads, and
// each operation over a WebSocket, in server/context.ts) is counted in PostgreSQL (app_private.take_request), so the budget holds across every server instance. Anonymous
// requests count against the client's address; signed-in ones against the user and the organization, with the
// limits of the organization's tier. Over a limit the answer is 429 RATE_LIMITED with Retry-After; when the count
// cannot be taken because the database is down or the pool exhausted, 503 UNAVAILABLE, at once.
import type { Request, RequestHandler, Response } from "express";
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import { isDatabaseUnavailable, unavailableMessage, type ErrorCode } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { AccessClaims, TokenService } from "../lib/tokens.ts";
import type { ClientAddress } from "./client-address.ts";
import { claimsOf } from "./context.ts";
import { unavailableRetryAfterSeconds } from "./errors.ts";

export interface RateLimitOptions {
  readonly config: Config;
  readonly pool: pg.Pool;
  readonly tokens: TokenService;
  readonly addressOf: ClientAddress;
  readonly logger: Logger;
}

/** Answers in the shape of the route: GraphQL's `errors` under /graphql, `{ error }` elsewhere (server/app.ts). */
function refuse(req: Request, res: Response, status: number, code: ErrorCode, message: string, retryAfterSeconds: number, extra = {}) {
  res.set("retry-after", String(retryAfterSeconds)).status(status);
  const extensions = { code, retryAfterSeconds, ...extra };
  res.json(req.baseUrl.startsWith("/graphql") || req.path.startsWith("/graphql") ? { errors: [{ message, extensions }] } : { error: { ...extensions, message } });
}

/** The caller's verified claims (set by authenticateHttp on /graphql), or read here; a bad token counts as anonymous. */
function claimsFor(req: Request, tokens: TokenService): AccessClaims | null {
  const known = (req as Request & { quireAuth?: AccessClaims | null }).quireAuth;
  if (known !== undefined) return known;
  try {
    return claimsOf(req.headers.authorization, tokens);
  } catch {
    return null;
  }
}

/** The verdict on one request: 0 seconds to wait means go ahead; otherwise which limit it hit. */
export interface RequestCount {
  readonly retryAfterSeconds: number;
  readonly scope: "address" | "user" | "organization" | null;
}

/** Counts one request from `ip` (anonymous when `claims` is null) against its limits; rejects when the database cannot. */
export type CountRequest = (ip: string | null, claims: AccessClaims | null) => Promise<RequestCount>;

export function createRequestCounter(config: Config, pool: pg.Pool): CountRequest {
  return async (ip, claims) => {
    if (!config.rateLimits.enabled) return { retryAfterSeconds: 0, scope: null };
    const { rows } = await pool.query<{ retry_after_seconds: number; scope: RequestCount["scope"] }>(
      "select retry_after_seconds, scope from app_private.take_request($1, $2, $3, $4)",
      [ip, claims?.userId ?? null, claims?.orgId ?? null, config.rateLimits.anonymousPerMinute],
    );
    return { retryAfterSeconds: rows[0]!.retry_after_seconds, scope: rows[0]!.scope };
  };
}

export function rateLimit({ config, pool, tokens, addressOf, logger }: RateLimitOptions): RequestHandler {
  const countRequest = createRequestCounter(config, pool);
  return async (req, res, next) => {
    if (!config.rateLimits.enabled || req.method === "OPTIONS") return next();
    const claims = claimsFor(req, tokens);
    try {
      const { retryAfterSeconds: wait, scope } = await countRequest(addressOf(req), claims);
      if (wait > 0) {
        refuse(req, res, 429, "RATE_LIMITED", "Too many requests; try again later.", wait, { scope });
        return;
      }
      next();
    } catch (error) {
      if (!isDatabaseUnavailable(error)) return next(error);
      logger.warn({ err: error }, "rate limit not checked: the database is unavailable");
      refuse(req, res, 503, "UNAVAILABLE", unavailableMessage, unavailableRetryAfterSeconds);
    }
  };
}
