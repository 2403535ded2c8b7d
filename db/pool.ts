// Connection pools. Every runtime pool logs in as the authenticator; which role a query then runs as is decided
// per transaction (PostGraphile's pgSettings, or the worker's own `set local role`).
import pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface PoolOptions {
  readonly url: string;
  /** Most connections held open at once. */
  readonly max: number;
  /** Shown in pg_stat_activity, so an operator can tell the server's connections from the worker's. */
  readonly applicationName: string;
  /** Longest a query waits for a free connection (or a new one to open) before failing; default 5000 ms. */
  readonly waitMs?: number;
}

export function createPool(options: PoolOptions, logger: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    application_name: options.applicationName,
    // Fail fast instead of queueing forever when PostgreSQL is down or the pool is exhausted.
    connectionTimeoutMillis: options.waitMs ?? 5_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client whose server went away emits 'error' on the pool; unhandled, that would crash the process.
  pool.on("error", (error) => logger.warn({ err: error, pool: options.applicationName }, "idle database connection failed"));
  // Likewise for a checked-out client whose connection drops between queries.
  pool.on("connect", (client) => {
    client.on("error", (error) => logger.warn({ err: error, pool: options.applicationName }, "database connection failed"));
  });
  return pool;
}
