// Where a sign-in request came from, carried to the statements it makes: the session and security-event writes
// (app_private sign-in functions, triggers) read the client address, request id and user agent from transaction
// settings, which recordedQuery sets from the request being served (onBehalfOf).
import { AsyncLocalStorage } from "node:async_hooks";
import type pg from "pg";
import { asCaller } from "../db/as-caller.ts";
import { QuireError } from "../lib/quire-error.ts";

/** Where a request came from, for the audit events its sign-in, refresh or logout writes and the sessions it opens. */
export interface RequestOrigin {
  readonly ip: string | null;
  readonly requestId: string;
  /** The request's User-Agent (at most 256 characters are kept), shown back to the session's owner by mySessions. */
  readonly userAgent: string | null;
}

const origins = new AsyncLocalStorage<RequestOrigin>();

/** The origin of the GraphQL request `ctx` belongs to (its address, id and user agent, set by server/context.ts). */
export const originOf = (ctx: Grafast.Context): RequestOrigin => ({
  ip: ctx.quireClientIp ?? null,
  requestId: ctx.pgSettings?.["quire.request_id"] ?? "",
  userAgent: ctx.quireUserAgent ?? null,
});

/** The claims of the signed-in caller of the GraphQL request `ctx` belongs to; LOGIN when the request has none. */
export function signedInClaims(ctx: Grafast.Context) {
  if (!ctx.quireAuth) throw new QuireError("LOGIN", "Sign in first.");
  return ctx.quireAuth;
}

/** The PostgreSQL settings of a signed-in request, for work done as the caller outside its transaction (asCaller). */
export function callerSettings(ctx: Grafast.Context): Record<string, string> {
  if (!ctx.quireAuth || !ctx.pgSettings) throw new QuireError("LOGIN", "Sign in first.");
  return ctx.pgSettings as Record<string, string>;
}

/**
 * Runs `work` (calls into Sessions or TwoFactor) on behalf of a request: the statements that write sessions then
 * carry its client address, request id and user agent as transaction settings, which the audit and session
 * triggers record.
 */
export const onBehalfOf = <T>(origin: RequestOrigin, work: () => Promise<T>): Promise<T> => origins.run(origin, work);

/** The client address of the request being served (onBehalfOf), or null. */
export const requestIp = (): string | null => origins.getStore()?.ip ?? null;

/**
 * A runner of one statement that writes sessions or security events (and so audit events): in a transaction
 * carrying the request's address, id and user agent when it runs on behalf of a request (onBehalfOf), else as it is.
 */
export function recordedQuery(pool: pg.Pool) {
  return async <R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> => {
    const origin = origins.getStore();
    if (!origin) return pool.query<R>(text, values);
    const settings = { "quire.client_ip": origin.ip ?? "", "quire.request_id": origin.requestId, "quire.user_agent": origin.userAgent ?? "" };
    return asCaller(pool, settings, (client) => client.query<R>(text, values));
  };
}

/** Too many failed guesses (passwords or codes) for the account or the address. */
export const throttled = (retryAfterSeconds: number) => new QuireError("RLIMT", "Too many failed sign-in attempts; try again later.", { retryAfterSeconds });
