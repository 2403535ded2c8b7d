// The WebSocket endpoint of /graphql: graphql-ws over the `ws` library, owned here rather than left to grafserv's
// built-in upgrade handler, because that one leaves every socket without an `error` listener and its server without
// a frame size bound. `ws` reports a client's protocol violation (a text frame that is not UTF-8, a reserved opcode
// or bit, an oversized control frame, an unmasked frame, a message over the size bound) by emitting `error` on that
// socket and closing it with the matching code (1007, 1002, 1009); with no listener, that `error` is thrown and
// ends the process. Here each socket's errors are logged and end only that socket, messages are bounded in bytes,
// and idle peers are pinged and dropped when they stop answering.
//
// graphql-ws itself is driven exactly as grafserv does it (makeGraphQLWSConfig), so operations over a WebSocket get
// the same context, limits, masking and middleware as before.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { CloseCode, makeServer } from "graphql-ws";
import { makeGraphQLWSConfig, type GrafservBase } from "postgraphile/grafserv";
import { WebSocketServer, type WebSocket } from "ws";
import type { Logger } from "../lib/logger.ts";

export interface WebSocketEndpointOptions {
  /** Largest message a client may send, in bytes (default: the HTTP body limit, HTTP_MAX_REQUEST_BYTES' equal). */
  readonly maxMessageBytes: number;
  /** How often an idle connection is pinged, and how long a pong may take before it is dropped (default 12 s). */
  readonly keepaliveMs?: number;
  /** How long a new connection may take to send connection_init before it is closed with 4408 (default 3 s). */
  readonly connectionInitMs?: number;
  readonly logger: Logger;
}

export interface WebSocketEndpoint {
  /** Completes the WebSocket handshake of an upgrade request the caller decided to accept. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Stops accepting connections; open ones are closed by the HTTP server's shutdown. */
  close(): void;
}

/** Pings `socket` every `intervalMs` once it is quiet, and terminates it when a ping goes unanswered that long. */
function keepAlive(socket: WebSocket, intervalMs: number): void {
  let awaitingPong = false;
  const timer = setInterval(() => {
    if (awaitingPong) {
      socket.terminate();
      return;
    }
    awaitingPong = true;
    socket.ping();
  }, intervalMs);
  timer.unref();
  socket.on("pong", () => (awaitingPong = false));
  socket.once("close", () => clearInterval(timer));
}

export function createWebSocketEndpoint(
  serv: GrafservBase,
  { maxMessageBytes, keepaliveMs = 12_000, connectionInitMs = 3_000, logger }: WebSocketEndpointOptions,
): WebSocketEndpoint {
  const graphqlWs = makeServer({ ...makeGraphQLWSConfig(serv), connectionInitWaitTimeout: connectionInitMs });
  // perMessageDeflate stays off (ws's server default): inflating is where a small frame becomes a large message.
  const wss = new WebSocketServer({ noServer: true, maxPayload: maxMessageBytes, perMessageDeflate: false });
  wss.on("error", (error) => logger.warn({ err: error }, "WebSocket server error"));
  // A malformed handshake: ws answers it with 400 and destroys the socket; this only keeps a note of it.
  wss.on("wsClientError", (error, socket) => {
    logger.info({ reason: error.message }, "WebSocket handshake refused");
    socket.destroy();
  });

  const onConnection = (socket: WebSocket, request: IncomingMessage) => {
    // The one listener that makes a bad frame end this connection (ws closes it with 1002/1007/1009) and nothing else.
    socket.on("error", (error: Error & { code?: string }) => {
      logger.info({ code: error.code, reason: error.message }, "WebSocket closed on a protocol error");
    });
    keepAlive(socket, keepaliveMs);
    const closed = graphqlWs.opened(
      {
        protocol: socket.protocol,
        send: (data) =>
          new Promise<void>((resolve, reject) => {
            socket.send(data, (error) => (error ? reject(error) : resolve()));
          }),
        close: (code, reason) => socket.close(code, reason),
        onMessage: (handle) =>
          socket.on("message", (data: Buffer, isBinary: boolean) => {
            // graphql-ws speaks text; a binary message is not one of its messages.
            if (isBinary) {
              socket.close(CloseCode.BadRequest, "Binary messages are not accepted");
              return;
            }
            handle(data.toString("utf8")).catch((error: unknown) => {
              logger.warn({ err: error }, "WebSocket message handling failed");
              socket.close(CloseCode.InternalServerError, "Internal server error");
            });
          }),
      },
      { socket, request },
    );
    socket.once("close", (code: number, reason: Buffer) => {
      closed(code, reason.toString("utf8")).catch((error: unknown) => logger.warn({ err: error }, "WebSocket close handling failed"));
    });
  };
  wss.on("connection", onConnection);

  return {
    handleUpgrade(req, socket, head) {
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
    },
    close() {
      wss.off("connection", onConnection);
      wss.close();
    },
  };
}
