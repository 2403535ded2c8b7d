// A TCP proxy on loopback in front of the test PostgreSQL, so a test can cut one process's database connections
// (an outage as that process sees it) without stopping the server the other test files share: cut() destroys every
// open connection and refuses new ones until restore(); cutOn(text) does the same the moment a client sends a
// message containing `text` (that message never reaches the server).
import { createServer, connect, type Socket } from "node:net";

export interface TcpProxy {
  /** The proxy's port on 127.0.0.1. */
  readonly port: number;
  /** Destroys open connections and refuses new ones. */
  cut(): void;
  /** Cuts (as cut()) when a client next sends bytes containing `text`; resolves when it has. */
  cutOn(text: string): Promise<void>;
  /** Accepts connections again. */
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let down = false;
  let trigger: { text: string; fired: () => void } | null = null;
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
  };
  const server = createServer((client) => {
    track(client);
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, targetHost);
    track(upstream);
    client.on("data", (chunk: Buffer) => {
      if (trigger && chunk.includes(trigger.text)) {
        const { fired } = trigger;
        trigger = null;
        cut();
        fired();
        return;
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const cut = () => {
    down = true;
    for (const socket of sockets) socket.destroy();
  };
  return {
    port,
    cut,
    cutOn: (text) =>
      new Promise<void>((resolve) => {
        trigger = { text, fired: resolve };
      }),
    restore() {
      down = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
