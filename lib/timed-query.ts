// A statement that gives up on the client side after a time: for background statements (health checks, syncs,
// heartbeats, the sealer and the numberer), which no request's statement_timeout bounds and whose hang would hold
// a timer, a readiness answer or shutdown with it. pg reads query_timeout per query (lib/client.js); @types/pg
// lists it only on the client's config, hence the one cast, here.
import type pg from "pg";

/** `text` with `values`, failing with "Query read timeout" after `timeoutMs`. */
export const timedQuery = (text: string, values: unknown[], timeoutMs: number): pg.QueryConfig =>
  ({ text, values, query_timeout: timeoutMs }) as pg.QueryConfig;
