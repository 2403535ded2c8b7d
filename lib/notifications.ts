// A process's one LISTEN connection. In the server, everything that reacts to PostgreSQL NOTIFY shares it: ended
// sessions close their WebSockets (quire_session_ended), jobs, documents and summaries reach subscribers
// (quire_live), and streamed LLM text reaches jobProgress (quire_job_progress); in a worker, cancelled jobs stop their
// LLM requests (quire_job_cancelled). It is a client of its own, outside the pool, so a busy pool never delays a
// notification. When PostgreSQL drops it, it
// reconnects with jittered exponential backoff (reset once a connection is listening again), and tells whoever
// needs to know both that notifications may have been missed and when it is listening again, so they can catch up
// from what the database kept (the live-event outbox, the sessions table).
import pg from "pg";
import type { Logger } from "./logger.ts";

export interface NotificationListener {
  /** Calls `handler` with the payload of every NOTIFY on `channel` (channels are fixed before `start`). */
  on(channel: string, handler: (payload: string) => void): void;
  /** Calls `handler` when the connection was lost: notifications sent until it is back are gone. */
  onInterrupted(handler: () => void): void;
  /**
   * Calls `handler` each time a connection listens, the first included: whatever was registered meanwhile (while
   * starting, or after a loss) may have missed notifications and should catch up.
   */
  onRestored(handler: () => void): void;
  /** True while the connection is up and listening. */
  readonly listening: boolean;
  /** Connects and LISTENs; resolves once listening (a first failure is retried in the background, and rejects). */
  start(): Promise<void>;
  /** Stops listening and disconnects. */
  close(): Promise<void>;
}

export interface NotificationListenerOptions {
  /** The authenticator URL (DATABASE_URL). */
  readonly url: string;
  readonly logger: Logger;
  /** The first reconnection delay, doubled on each failed attempt up to `retryMaxMs` (default 250 ms). */
  readonly retryBaseMs?: number;
  /** The longest reconnection delay (default 10 s). Each delay is jittered down to half its value. */
  readonly retryMaxMs?: number;
  /** The connection's application_name, which names it in pg_stat_activity (default "quire-listener"). */
  readonly applicationName?: string;
}

/** The delay before reconnection attempt `attempt` (0-based): base·2^attempt capped at `max`, jittered in [½, 1]. */
function reconnectDelay(attempt: number, baseMs: number, maxMs: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export function createNotificationListener({
  url,
  logger,
  retryBaseMs = 250,
  retryMaxMs = 10_000,
  applicationName = "quire-listener",
}: NotificationListenerOptions): NotificationListener {
  const handlers = new Map<string, Array<(payload: string) => void>>();
  const interrupted: Array<() => void> = [];
  const restored: Array<() => void> = [];
  let client: pg.Client | null = null;
  let stopped = false;
  let retryTimer: NodeJS.Timeout | null = null;
  /** Failed attempts since the last connection that listened; the backoff starts over after a healthy one. */
  let attempt = 0;

  const notify = (list: Array<() => void>, what: string) => {
    for (const handler of list) {
      try {
        handler();
      } catch (error) {
        logger.error({ err: error }, `a LISTEN connection ${what} handler failed`);
      }
    }
  };

  const scheduleRetry = () => {
    if (stopped || retryTimer) return;
    const delayMs = reconnectDelay(attempt++, retryBaseMs, retryMaxMs);
    retryTimer = setTimeout(() => {
      retryTimer = null;
      void connect().catch(() => undefined);
    }, delayMs);
    retryTimer.unref();
  };

  const connect = async (): Promise<void> => {
    if (stopped) return;
    const next = new pg.Client({ connectionString: url, application_name: applicationName });
    let lost = false;
    const onLoss = (error: unknown, message: string) => {
      if (lost) return;
      lost = true;
      void next.end().catch(() => undefined);
      if (stopped) return;
      logger.warn({ err: error }, message);
      if (client === next) {
        client = null;
        notify(interrupted, "interruption");
      }
      scheduleRetry();
    };
    next.on("notification", (message) => {
      for (const handler of handlers.get(message.channel) ?? []) {
        try {
          handler(message.payload ?? "");
        } catch (error) {
          logger.error({ err: error, channel: message.channel }, "a notification handler failed");
        }
      }
    });
    // Every loss reaches here or the catch below: an error on an idle client, or the server ending the connection.
    next.on("error", (error) => onLoss(error, "the LISTEN connection was lost; reconnecting"));
    next.on("end", () => onLoss(new Error("connection ended"), "the LISTEN connection was closed; reconnecting"));
    try {
      await next.connect();
      // Every channel in one round trip (a simple query of several statements).
      const channels = [...handlers.keys()].map((channel) => `listen ${next.escapeIdentifier(channel)}`);
      if (channels.length > 0) await next.query(channels.join("; "));
    } catch (error) {
      onLoss(error, "the LISTEN connection could not be made; retrying");
      throw error;
    }
    if (lost) throw new Error("the LISTEN connection was lost while starting");
    if (stopped) {
      await next.end().catch(() => undefined);
      return;
    }
    client = next;
    if (attempt > 0) logger.info("the LISTEN connection is back");
    attempt = 0;
    notify(restored, "restoration");
  };

  return {
    on(channel, handler) {
      const list = handlers.get(channel) ?? [];
      list.push(handler);
      handlers.set(channel, list);
    },
    onInterrupted(handler) {
      interrupted.push(handler);
    },
    onRestored(handler) {
      restored.push(handler);
    },
    get listening() {
      return client !== null;
    },
    start: () => connect(),
    async close() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      retryTimer = null;
      const current = client;
      client = null;
      await current?.end().catch(() => undefined);
    },
  };
}
