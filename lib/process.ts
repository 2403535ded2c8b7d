// The life cycle shared by Quire's entry points (npm start, server, worker, migrate): read and validate the
// configuration, log through pino, and on SIGTERM/SIGINT stop in order within a bound, exiting 0.
import { ConfigError, loadConfigFromProcess, type Config } from "./config.ts";
import { createLogger, type Logger } from "./logger.ts";

type Body<T> = (config: Config, logger: Logger) => Promise<T>;

/** Loads the configuration, or prints what is wrong with it (one line per variable) and exits 1. */
function configOrExit(): Config {
  try {
    return loadConfigFromProcess();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(error.message + "\n");
      process.exit(1);
    }
    throw error;
  }
}

/** Runs a one-shot command (`npm run migrate`): exit 0 when it resolves, 1 when it throws. */
export async function runOnce(name: string, body: Body<void>): Promise<void> {
  const config = configOrExit();
  const logger = createLogger(config.log).child({ process: name });
  try {
    await body(config, logger);
    logger.flush();
    process.exit(0);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(error.message + "\n");
      process.exit(1);
    }
    logger.fatal({ err: error }, `${name} failed`);
    logger.flush();
    process.exit(1);
  }
}

/**
 * Runs a long-lived service. `start` returns the function that stops it; that runs on SIGTERM or SIGINT, and is
 * given SHUTDOWN_TIMEOUT_SECONDS (plus a little for the embedded database) before the process gives up and exits 1.
 * A second signal exits at once.
 *
 * What is fatal: an uncaught exception leaves the process in a state nobody can vouch for, so it is logged and
 * stops the service (exit 1). A rejected promise that nobody awaited is one operation's failure, not the process's
 * (graphile-worker, for one, records a job's completion without awaiting it, so a database blip ends up here): it
 * is logged as an error and the service goes on. Neither may be caused by a client: every socket, stream and
 * request handler handles its own errors (server/websocket.ts for WebSockets), so one client's bad bytes end only
 * that client's connection.
 */
export async function runService(name: string, start: Body<() => Promise<void>>): Promise<void> {
  const config = configOrExit();
  const logger = createLogger(config.log).child({ process: name });
  let stop: (() => Promise<void>) | null = null;
  let stopping = false;

  const shutdown = async (reason: string, code: number) => {
    if (stopping) {
      logger.warn({ reason }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ reason }, "shutting down");
    const deadline = setTimeout(() => {
      logger.error({ timeoutMs: config.shutdownTimeoutMs + 15_000 }, "shutdown took too long: exiting");
      process.exit(1);
    }, config.shutdownTimeoutMs + 15_000);
    deadline.unref();
    try {
      await stop?.();
      logger.info("stopped");
    } catch (error) {
      logger.error({ err: error }, "error while stopping");
      code = 1;
    }
    logger.flush();
    process.exit(code);
  };

  process.on("SIGTERM", () => void shutdown("SIGTERM", 0));
  process.on("SIGINT", () => void shutdown("SIGINT", 0));
  process.on("uncaughtException", (error) => {
    logger.fatal({ err: error }, "uncaught exception");
    void shutdown("uncaughtException", 1);
  });
  process.on("unhandledRejection", (error) => {
    logger.error({ err: error }, "unhandled promise rejection (the service goes on)");
  });

  try {
    stop = await start(config, logger);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(error.message + "\n");
      process.exit(1);
    }
    logger.fatal({ err: error }, `${name} failed to start`);
    await shutdown("start-up failed", 1);
  }
}
