// The benchmark's baseline: a plain node:http server answering every request with the same tiny JSON that Quire's
// /health sends. bench/run.ts starts it in a worker thread of its own process, so it gets an event loop of its own
// (as Quire does in its child process) instead of sharing one with the load generator on the main thread.
// It listens on 127.0.0.1 on a free port, posts `{ port }` to the parent, and closes when told "close".
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parentPort } from "node:worker_threads";

if (!parentPort) throw new Error("bench/baseline.ts runs as a worker thread of bench/run.ts");
const parent = parentPort;

const body = JSON.stringify({ status: "ok" });
const length = String(Buffer.byteLength(body));

const server = createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": length });
  res.end(body);
});

server.listen(0, "127.0.0.1", () => {
  parent.postMessage({ port: (server.address() as AddressInfo).port });
});

parent.on("message", (message: unknown) => {
  if (message !== "close") return;
  server.close(() => parent.close());
  server.closeAllConnections();
});
