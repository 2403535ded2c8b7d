// The server's one LISTEN connection. Everything that reacts to PostgreSQL NOTIFY shares it: ended sessions close
// their WebSockets (quire_session_ended), and jobs, documents and summaries reach subscribers (quire_live). It is a
// client of its own, outside the pool, so a busy pool never delays a notification. When PostgreSQL drops it, it
// reconnects with backoff and tells whoever needs to know that notifications may have been missed meanwhile.
import pg from "pg";
import type { Logger } from "../lib/logger.ts";

export interface NotificationListener {
  /** Calls `handler` with the payload of every NOTIFY on `channel` (channels are fixed before `start`). */
  on(channel: string, handler: (payload: string) => void): void;
  /** Calls `handler` when the connection was lost: notifications sent until it is back are gone. */
  onInterrupted(handler: () => void): void;
  /** Connects and LISTENs; resolves once listening (a first failure is retried in the background, and rejects). */
  start(): Promise<void>;
  /** Stops listening and disconnects. */
  close(): Promise<void>;
}

export interface NotificationListenerOptions {
  /** The authenticator URL (DATABASE_URL). */
  readonly url: string;
  readonly logger: Logger;
  /** First reconnection delay, doubled up to 30 s (default 500 ms). */
  readonly retryDelayMs?: number;
}

export function createNotificationListener({ url, logger, retryDelayMs = 500 }: NotificationListenerOptions): NotificationListener {
  const handlers = new Map<string, Array<(payload: string) => void>>();
  const interrupted: Array<() => void> = [];
  let client: pg.Client | null = null;
  let stopped = false;

  const connect = async (delayMs: number): Promise<void> => {
    if (stopped) return;
    const next = new pg.Client({ connectionString: url, application_name: "quire-listener" });
    const retry = () => {
      if (stopped) return;
      client = null;
      void next.end().catch(() => undefined);
      setTimeout(() => void connect(Math.min(delayMs * 2, 30_000)).catch(() => undefined), delayMs).unref();
    };
    next.on("notification", (message) => {
      for (const handler of handlers.get(message.channel) ?? []) handler(message.payload ?? "");
    });
    next.on("error", (error) => {
      if (stopped || client !== next) return;
      logger.warn({ err: error }, "the LISTEN connection was lost; reconnecting");
      for (const handler of interrupted) handler();
      retry();
    });
    try {
      await next.connect();
      for (const channel of handlers.keys()) await next.query(`listen ${next.escapeIdentifier(channel)}`);
      if (stopped) {
        await next.end();
        return;
      }
      client = next;
    } catch (error) {
      logger.warn({ err: error }, "the LISTEN connection could not be made; retrying");
      retry();
      throw error;
    }
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
    start: () => connect(retryDelayMs),
    async close() {
      stopped = true;
      await client?.end().catch(() => undefined);
      client = null;
    },
  };
}
