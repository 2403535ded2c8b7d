// The per-request GraphQL context: the PostgreSQL settings every transaction of the request runs with. The role is
// always one of the two API roles chosen here, never a value a client supplies. Until sign-in exists every request
// runs as the anonymous role; the verified access token's claims will add jwt.claims.* and the authenticated role.
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Config } from "../lib/config.ts";

/** The settings PostGraphile applies with set_config(…, true) at the start of each transaction. */
export type PgSettings = Record<string, string>;

/** A request id set by the HTTP logging middleware (server/app.ts), if the request went through it. */
const requestIdOf = (req: IncomingMessage | undefined): string => {
  const id = (req as (IncomingMessage & { id?: unknown }) | undefined)?.id;
  return typeof id === "string" ? id : randomUUID();
};

export function makeContext(config: Config) {
  return (requestContext: Partial<Grafast.RequestContext>): { pgSettings: PgSettings } => {
    const req = requestContext.node?.req ?? requestContext.ws?.request;
    return {
      pgSettings: {
        role: config.database.anonymousRole,
        "quire.request_id": requestIdOf(req),
        "quire.client_ip": req?.socket.remoteAddress ?? "",
      },
    };
  };
}
