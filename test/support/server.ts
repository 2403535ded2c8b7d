// An in-process Quire HTTP server on a free port, backed by a test database.
import type { AddressInfo } from "node:net";
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import type { Config } from "../../lib/config.ts";
import { createQuireServer, type QuireServer, type ServerOptions } from "../../server/app.ts";
import type { Logger } from "../../lib/logger.ts";
import { silentLogger } from "./database.ts";

export interface TestServer {
  readonly url: string;
  readonly server: QuireServer;
  readonly pool: pg.Pool;
  /** POSTs a GraphQL document (with `token` as the bearer, if given) and returns the HTTP status and parsed body. */
  graphql(query: string, variables?: Record<string, unknown>, token?: string | null): Promise<{ status: number; body: GraphQLBody }>;
  /** Shuts down as SIGTERM would, giving in-flight requests `timeoutMs` (default 5 s). */
  close(timeoutMs?: number): Promise<void>;
}

export interface GraphQLBody {
  data?: Record<string, unknown> | null;
  errors?: Array<{ message: string; extensions?: Record<string, unknown> }>;
}

/** The stable code of a response's first error, or null when there is none. */
export const codeOf = (body: GraphQLBody) => body.errors?.[0]?.extensions?.code ?? null;

/** Starts a server on `config`, logging to `logger` (default: nowhere), with `options` passed on (default: none). */
export async function startTestServer(config: Config, logger: Logger = silentLogger, options: Pick<ServerOptions, "tokens"> = {}): Promise<TestServer> {
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-server", waitMs: config.database.poolWaitMs }, logger);
  const server = await createQuireServer({ config, logger, pool, ...options });
  const address: AddressInfo = await server.listen(0);
  const url = `http://127.0.0.1:${address.port}`;
  return {
    url,
    server,
    pool,
    async graphql(query, variables, token) {
      const response = await fetch(`${url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return { status: response.status, body: (await response.json()) as GraphQLBody };
    },
    async close(timeoutMs = 5_000) {
      await server.close(timeoutMs);
      await pool.end();
    },
  };
}
