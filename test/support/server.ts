// An in-process Quire HTTP server on a free port, backed by a test database; and useQuireServer, the fixture a test
// file uses to get one (its own database and a server on it, set up before its tests and torn down after).
import type { AddressInfo } from "node:net";
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import type { Config } from "../../lib/config.ts";
import { createQuireServer, type QuireServer, type ServerOptions } from "../../server/app.ts";
import type { Logger } from "../../lib/logger.ts";
import { createTestDatabase, silentLogger, testConfig, type TestDatabase } from "./database.ts";

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
export async function startTestServer(
  config: Config,
  logger: Logger = silentLogger,
  options: Pick<ServerOptions, "tokens" | "clock"> = {},
): Promise<TestServer> {
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

export interface ServerFixtureOptions {
  /** Environment for the server's configuration, over the test defaults (default: none, the database's own config). */
  readonly env?: NodeJS.ProcessEnv;
  /** Runs on the new database before the server starts, e.g. to plant a test function (default: nothing). */
  readonly setup?: (db: TestDatabase) => Promise<void>;
  /** Passed to startTestServer (default: a token service built from the config). */
  readonly server?: Pick<ServerOptions, "tokens">;
}

export interface ServerFixture {
  /** This file's database; set up before the file's first hook runs. */
  readonly db: TestDatabase;
  /** The server on it (a handle that may be held at the top level; it works once beforeAll has run). */
  readonly app: TestServer;
  /** POSTs a GraphQL document with `token` as the bearer (null: anonymous) and returns the parsed body. */
  gql(token: string | null, text: string, variables?: Record<string, unknown>): Promise<GraphQLBody>;
  /**
   * Another server on the same database, with `env` over the test defaults (default: the first server's), started
   * after the first and closed before the database is dropped. Call it at the top level too; the handle works inside
   * hooks and tests.
   */
  server(env?: NodeJS.ProcessEnv): TestServer;
}

/**
 * Registers beforeAll/afterAll hooks that give the calling test file its own database and a server on it, and
 * returns them. Call it at the top level of the file, before its own hooks, which then run after it.
 */
export function useQuireServer(options: ServerFixtureOptions = {}): ServerFixture {
  let db: TestDatabase | undefined;
  let app: TestServer | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    await options.setup?.(db);
    app = await startTestServer(options.env ? testConfig(db.name, options.env) : db.config, silentLogger, options.server);
  }, 60_000);
  const extras: Array<TestServer | undefined> = [];
  afterAll(async () => {
    for (const extra of extras) await extra?.close();
    await app?.close();
    await db?.drop();
  });
  const ready = <T>(value: T | undefined, name: string): T => {
    if (value === undefined) throw new Error(`useQuireServer: ${name} exists once beforeAll has run (use it inside hooks and tests)`);
    return value;
  };
  return {
    get db() {
      return ready(db, "db");
    },
    app: lazyServer(() => ready(app, "app")),
    gql: async (token, text, variables = {}) => (await ready(app, "app").graphql(text, variables, token)).body,
    server(env) {
      const index = extras.push(undefined) - 1;
      beforeAll(async () => {
        const database = ready(db, "db");
        const config = env ?? options.env;
        extras[index] = await startTestServer(config ? testConfig(database.name, config) : database.config, silentLogger, options.server);
      });
      return lazyServer(() => ready(extras[index], "a server"));
    },
  };
}

/** A TestServer that is `current()` at each use: a handle a file can hold at its top level, before the server starts. */
function lazyServer(current: () => TestServer): TestServer {
  return {
    get url() {
      return current().url;
    },
    get server() {
      return current().server;
    },
    get pool() {
      return current().pool;
    },
    graphql: (query, variables, token) => current().graphql(query, variables, token),
    close: (timeoutMs) => current().close(timeoutMs),
  };
}
