// The small HTTP servers Quire runs beside its API, on ports meant for the internal network only: the metrics
// endpoint (METRICS_PORT) and the worker's health endpoints (WORKER_HEALTH_PORT). They listen, report a failure to
// listen to their caller, log (never throw) a server error after that, and close with every connection they hold.
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "./logger.ts";

export interface InternalServer {
  readonly address: AddressInfo;
  /** Stops listening and closes every connection, idle or not. */
  close(): Promise<void>;
}

/** Listens with `server` on host:port; rejects when it cannot (a taken port, say). `name` goes into error lines. */
export function listenInternal(server: Server, host: string, port: number, name: string, logger: Logger): Promise<InternalServer> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      server.on("error", (error) => logger.warn({ err: error }, `${name} server failed`));
      resolve({
        address: server.address() as AddressInfo,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
