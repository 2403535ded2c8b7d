// The Quire server that bench/login.ts measures, run in this process so the event loop's delay can be measured
// from inside it. bench/login.ts forks this file (child_process.fork, an IPC channel, execArgv []); it is not a
// way to run Quire.
//
// It composes what bin/start.ts composes for the API, without the worker (the login storm does not involve it):
// loadConfig (from this process's environment, which the bench sets: a fresh DATA_DIR, a free PORT and
// EMBEDDED_POSTGRES_PORT, LOG_LEVEL=warn, BCRYPT_COST=12, GRAPHILE_ENV=production), the embedded PostgreSQL, the
// migrations, the server's pool and createQuireServer. perf_hooks.monitorEventLoopDelay (10 ms resolution) runs
// from start to finish.
//
// IPC, parent → child: { cmd: "eld", id, reset } asks for the histogram's figures since it was last reset (and
// resets it when `reset`, so one message both ends a phase and starts the next). Child → parent: { type: "ready",
// … } once listening, { type: "eld", id, stats }, and { type: "failed", message } before exiting 1 when start-up
// fails.
// SIGTERM (or the parent going away) stops the server (5 s to drain), the pool and PostgreSQL, then exits 0.
import "../lib/graphile-env.ts";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type pg from "pg";
import { loadConfig } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { startEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { createQuireServer } from "../server/app.ts";

/** What `{ type: "eld" }` carries: the event-loop delay histogram's figures, in milliseconds. */
export interface LoopDelayStats {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
  /** Samples recorded (about one per 10 ms while the loop keeps up). */
  readonly count: number;
}

/** The `{ type: "ready" }` message. */
export interface ReadyMessage {
  readonly type: "ready";
  readonly port: number;
  /** The owner login of the embedded database: the bench creates the accounts through app_admin with it. */
  readonly ownerUrl: string;
  readonly bcryptCost: number;
  readonly passwordHashConcurrency: number;
  readonly poolMax: number;
  readonly graphileEnv: string;
}

export type ChildMessage =
  ReadyMessage | { readonly type: "eld"; readonly id: number; readonly stats: LoopDelayStats } | { readonly type: "failed"; readonly message: string };

export type ParentMessage = { readonly cmd: "eld"; readonly id: number; readonly reset: boolean };

const RESOLUTION_MS = 10;
const DRAIN_TIMEOUT_MS = 5_000;
const STOP_DEADLINE_MS = 40_000; // embedded.stop() itself waits up to 30 s

if (typeof process.send !== "function") {
  process.stderr.write("bench/login-server.ts is forked by bench/login.ts (it needs an IPC channel)\n");
  process.exit(2);
}
const send = (message: ChildMessage) => {
  if (process.connected) process.send!(message);
};

const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
histogram.enable();
const ms = (ns: number) => ns / 1e6;

process.on("message", (raw: unknown) => {
  const message = raw as ParentMessage;
  if (message.cmd !== "eld") return;
  const empty = histogram.count === 0; // an empty histogram reports NaN and huge numbers
  const stats: LoopDelayStats = {
    p50: empty ? 0 : ms(histogram.percentile(50)),
    p99: empty ? 0 : ms(histogram.percentile(99)),
    max: empty ? 0 : ms(histogram.max),
    mean: empty ? 0 : ms(histogram.mean),
    count: histogram.count,
  };
  if (message.reset) histogram.reset();
  send({ type: "eld", id: message.id, stats });
});

const config = loadConfig(process.env);
const logger = createLogger({ level: "warn", pretty: false }).child({ process: "quire-bench-server" });
const stops: Array<() => Promise<void>> = [];
let stopping = false;

async function shutdown(reason: string, code: number): Promise<never> {
  if (stopping) process.exit(1); // a second signal, or an error while stopping
  stopping = true;
  const deadline = setTimeout(() => {
    logger.error({ reason }, "stopping took too long: exiting");
    process.exit(1);
  }, STOP_DEADLINE_MS);
  deadline.unref();
  for (const stop of stops.reverse()) {
    try {
      await stop();
    } catch (error) {
      logger.error({ err: error, reason }, "error while stopping");
      code = 1;
    }
  }
  histogram.disable();
  logger.flush();
  process.exit(code);
}

process.on("SIGTERM", () => void shutdown("SIGTERM", 0));
process.on("SIGINT", () => void shutdown("SIGINT", 0));
process.on("disconnect", () => void shutdown("the bench went away", 0));
process.on("uncaughtException", (error) => {
  logger.fatal({ err: error }, "uncaught exception");
  void shutdown("uncaughtException", 1);
});
process.on("unhandledRejection", (error) => {
  logger.fatal({ err: error }, "unhandled rejection");
  void shutdown("unhandledRejection", 1);
});

try {
  const { database } = config;
  if (!database.embedded || !database.ownerUrl) throw new Error("the bench server needs the embedded PostgreSQL (no DATABASE_URL)");
  const embedded = await startEmbeddedPostgres(database.embedded, logger);
  stops.push(() => embedded.stop());
  await prepareDatabase(database, logger);

  const pool: pg.Pool = createPool({ url: database.url, max: database.poolMax, applicationName: "quire-server" }, logger);
  stops.push(() => pool.end());
  const server = await createQuireServer({ config, logger, pool });
  stops.push(() => server.close(DRAIN_TIMEOUT_MS));
  const address = await server.listen(config.http.port);
  if (stopping) throw new Error("stopped while starting");
  send({
    type: "ready",
    port: address.port,
    ownerUrl: database.ownerUrl,
    bcryptCost: config.auth.bcryptCost,
    passwordHashConcurrency: config.auth.passwordHashConcurrency,
    poolMax: database.poolMax,
    graphileEnv: process.env["GRAPHILE_ENV"] ?? "",
  });
} catch (error) {
  logger.fatal({ err: error }, "bench server failed to start");
  send({ type: "failed", message: error instanceof Error ? error.message : String(error) });
  if (!stopping) await shutdown("start-up failed", 1);
}
