// Open WebSocket connections, by the session their token names, so that a session's end closes them: logout,
// reuse detection, removal from the organization or deactivation on any instance (the database NOTIFYs
// quire_session_ended, and every instance LISTENs), and the token's own expiry. A client whose connection closes
// with 4401 reconnects with a fresh token.
//
// Notifications sent while the LISTEN connection is down are lost, so each time it listens again the sessions of the
// open connections are checked against the database (app_private.ended_sessions), and those that ended in the gap
// are closed as if their notification had arrived.
import type pg from "pg";
import type { WebSocket } from "ws";
import type { Logger } from "../lib/logger.ts";
import type { NotificationListener } from "../lib/notifications.ts";
import type { AccessClaims } from "../lib/tokens.ts";

/** graphql-ws's code for "unauthorized"; clients treat it as "authenticate again". */
export const sessionEndedCloseCode = 4401;

export interface LiveSocketsOptions {
  readonly listener: NotificationListener;
  /** Where ended sessions are re-checked after the LISTEN connection was lost. */
  readonly pool: pg.Pool;
  readonly logger: Logger;
}

export interface LiveSockets {
  /** Remembers `socket` as belonging to the token's session, and closes it when the token expires. */
  track(socket: WebSocket, claims: AccessClaims): void;
  /** Closes every tracked connection of a session. */
  endSession(sessionId: string, reason: string): void;
  /** Forgets every connection (their timers included). */
  close(): Promise<void>;
}

type Tracked = WebSocket & { quireSessionId?: string; quireGuarded?: boolean };

export function createLiveSockets({ listener, pool, logger }: LiveSocketsOptions): LiveSockets {
  const bySession = new Map<string, Set<Tracked>>();
  const timers = new Map<Tracked, NodeJS.Timeout>();

  const forget = (socket: Tracked) => {
    clearTimeout(timers.get(socket));
    timers.delete(socket);
    const sockets = socket.quireSessionId ? bySession.get(socket.quireSessionId) : undefined;
    sockets?.delete(socket);
    if (sockets?.size === 0) bySession.delete(socket.quireSessionId!);
  };
  const end = (socket: Tracked, reason: string) => {
    forget(socket);
    socket.close(sessionEndedCloseCode, reason);
  };

  // Sessions ended on any instance arrive on the server's one LISTEN connection.
  listener.on("quire_session_ended", (sessionId) => {
    if (sessionId) api.endSession(sessionId, "Session ended");
  });
  // Those sent while it was down are re-read from the sessions table once it listens again.
  listener.onRestored(() => {
    const sessionIds = [...bySession.keys()];
    if (sessionIds.length === 0) return;
    pool
      .query<{ id: string }>({ text: "select id from app_private.ended_sessions($1::uuid[]) as id", values: [sessionIds] })
      .then(({ rows }) => {
        for (const { id } of rows) api.endSession(id, "Session ended");
      })
      .catch((error: unknown) => logger.warn({ err: error }, "could not re-check the sessions of open WebSocket connections"));
  });

  /** Once per connection: its errors are handled (ws closes it after one; unhandled, the error would be thrown). */
  const guard = (socket: Tracked) => {
    if (socket.quireGuarded) return;
    socket.quireGuarded = true;
    socket.on("error", (error) => logger.debug({ err: error }, "a WebSocket connection failed"));
  };

  const api: LiveSockets = {
    track(socket: Tracked, claims) {
      guard(socket);
      if (socket.quireSessionId === claims.sessionId) return;
      if (socket.quireSessionId) forget(socket);
      socket.quireSessionId = claims.sessionId;
      let sockets = bySession.get(claims.sessionId);
      if (!sockets) bySession.set(claims.sessionId, (sockets = new Set()));
      sockets.add(socket);
      // setTimeout fires at once for a delay past 2^31 − 1 ms (about 24.8 days): never wait longer than that.
      const timer = setTimeout(() => end(socket, "Access token expired"), Math.min(2 ** 31 - 1, Math.max(0, claims.expiresAt.getTime() - Date.now())));
      timer.unref();
      timers.set(socket, timer);
      socket.once("close", () => forget(socket));
    },
    endSession(sessionId, reason) {
      for (const socket of [...(bySession.get(sessionId) ?? [])]) end(socket, reason);
    },
    async close() {
      for (const socket of [...timers.keys()]) forget(socket);
    },
  };
  return api;
}
