// The per-request GraphQL context: the PostgreSQL settings every transaction of the request runs with, from a
// verified access token. The role is always one of the two API roles chosen here, never a value from the token or
// the client. The same check (server/bearer-auth.ts) runs for HTTP (the Authorization header, verified once by
// authenticateHttp) and graphql-ws (connectionParams.authorization); a bad token is refused with UNAUTHENTICATED,
// HTTP 401 for HTTP requests.
import type { WithPgClient } from "postgraphile/@dataplan/pg";
import type { NodePostgresPgClient } from "postgraphile/adaptors/pg";
import { SafeError } from "postgraphile/grafast";
import { getOperationAST } from "postgraphile/graphql";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import type { AccessClaims, TokenService } from "../lib/tokens.ts";
import { requestIdOf } from "./access-log.ts";
import type { ApiKeys } from "./api-keys.ts";
import { authOf, credentialClaims, refuseToken } from "./bearer-auth.ts";
import type { ClientAddress } from "./client-address.ts";
import type { CountRequest } from "./rate-limits.ts";
import type { LiveSockets } from "./live-sockets.ts";

/** The settings PostGraphile applies with set_config(…, true) at the start of each transaction. */
export type PgSettings = Record<string, string>;

declare global {
  namespace Grafast {
    interface Context {
      /** The verified access token's claims, or null for an anonymous request. */
      quireAuth?: AccessClaims | null;
      /** The client's address, through TRUSTED_PROXIES (server/client-address.ts). */
      quireClientIp?: string | null;
      /** The request's User-Agent header, cut to 256 characters (null without one). */
      quireUserAgent?: string | null;
    }
  }
}

/** The settings for a request made with `claims` (or anonymously). */
export function pgSettingsFor(config: Config, claims: AccessClaims | null, requestId: string, ip: string | null): PgSettings {
  const common = {
    "quire.request_id": requestId,
    "quire.client_ip": ip ?? "",
    "quire.max_document_bytes": String(config.documents.maxBytes),
    "quire.job_max_attempts": String(config.jobs.maxAttempts),
    // Set per transaction (set_config(…, true)), so only API requests are bound by them, not migrations or jobs.
    statement_timeout: String(config.database.statementTimeoutMs),
    idle_in_transaction_session_timeout: String(config.database.idleInTransactionTimeoutMs),
  };
  if (!claims) return { role: config.database.anonymousRole, ...common };
  return {
    role: config.database.authenticatedRole,
    "jwt.claims.user_id": claims.userId,
    "jwt.claims.org_id": claims.orgId,
    "jwt.claims.session_id": claims.sessionId,
    "jwt.claims.role": claims.role,
    ...common,
  };
}

/**
 * The context of each operation. HTTP requests were authenticated and counted against the rate limits by Express
 * middleware (server/app.ts); an operation over a WebSocket is authenticated from its connection parameters and
 * counted here with `countRequest` (RATE_LIMITED over a limit).
 */
export interface ContextOptions {
  readonly config: Config;
  readonly tokens: TokenService;
  /** Checks API keys presented over a WebSocket (default: none, only access tokens are accepted). */
  readonly apiKeys?: ApiKeys;
  readonly addressOf: ClientAddress;
  /** Where WebSocket connections are tracked so a session's end closes them (none when only printing the schema). */
  readonly liveSockets?: LiveSockets;
  /** Counts a WebSocket operation against the rate limits. */
  readonly countRequest: CountRequest;
  /** Where a refused WebSocket token is logged (HTTP requests log through their own request logger). */
  readonly logger?: Logger;
  /**
   * How operations reach the database (server/pg-client.ts: begin and settings in one round trip). Default:
   * PostGraphile's own, from its pgService.
   */
  readonly withPgClient?: WithPgClient<NodePostgresPgClient>;
  /**
   * How subscriptions over a WebSocket reach the database: their reads shared per organization and role
   * (server/shared-reads.ts). Default: `withPgClient`.
   */
  readonly subscriptionWithPgClient?: WithPgClient<NodePostgresPgClient>;
}

/** A User-Agent header as sessions record it: at most 256 characters, none when absent or empty. */
export const userAgentOf = (header: string | undefined): string | null => (header ? [...header].slice(0, 256).join("") : null);

/** Whether the operation `args` will run is a subscription (the only operations whose reads are shared). */
function isSubscription(args: Grafast.ExecutionArgs | undefined): boolean {
  if (!args?.document) return false;
  return getOperationAST(args.document, args.operationName ?? undefined)?.operation === "subscription";
}

export function makeContext({ config, tokens, apiKeys, addressOf, liveSockets, countRequest, logger, withPgClient, subscriptionWithPgClient }: ContextOptions) {
  const counted = async (context: Partial<Grafast.Context>, ip: string | null, claims: AccessClaims | null) => {
    const verdict = await countRequest(ip, claims);
    if (verdict.retryAfterSeconds > 0) {
      throw new SafeError("Too many requests; try again later.", { code: "RATE_LIMITED", retryAfterSeconds: verdict.retryAfterSeconds, scope: verdict.scope });
    }
    return context;
  };
  return (requestContext: Partial<Grafast.RequestContext>, args?: Grafast.ExecutionArgs): Partial<Grafast.Context> | Promise<Partial<Grafast.Context>> => {
    const req = requestContext.node?.req ?? requestContext.ws?.request;
    const ip = req ? addressOf(req) : null;
    // Mutations and queries over a WebSocket keep their own transactions; only subscriptions' re-reads are shared.
    const pgClient = requestContext.ws && subscriptionWithPgClient && isSubscription(args) ? subscriptionWithPgClient : withPgClient;
    const contextFor = (claims: AccessClaims | null): Partial<Grafast.Context> => ({
      pgSettings: pgSettingsFor(config, claims, requestIdOf(req), ip),
      quireAuth: claims,
      quireClientIp: ip,
      quireUserAgent: userAgentOf(req?.headers["user-agent"]),
      ...(pgClient ? { withPgClient: pgClient } : {}),
    });
    if (requestContext.node) return contextFor(authOf(requestContext.node.req));
    if (!requestContext.ws) return contextFor(null);
    return (async () => {
      let claims: AccessClaims | null;
      try {
        claims = await credentialClaims(requestContext.ws?.normalizedConnectionParams?.["authorization"], tokens, apiKeys);
      } catch (error) {
        const { code, reason, message } = refuseToken(error, logger);
        throw new SafeError(message, { code, reason });
      }
      // The connection lives on after this operation: it is closed when its session ends or its token expires.
      const socket = requestContext.ws?.socket;
      if (claims && socket) liveSockets?.track(socket, claims);
      return counted(contextFor(claims), ip, claims);
    })();
  };
}
