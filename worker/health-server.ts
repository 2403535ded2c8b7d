// The worker's own health endpoints, for its container's healthcheck (WORKER_HEALTH_PORT, on HOST): a worker has
// no public port, and the API's readiness no longer depends on workers (server/health.ts), so a worker outage is
// seen here, on the worker, and not as every API instance going unhealthy.
//   GET /health        200 {"status":"ok"} while the process lives (no I/O)
//   GET /health/ready  200 {"status":"ready"} when its database answers within 2 s; 503 naming why otherwise,
//                      and 503 {"status":"stopping"} once shutdown began
import { createServer } from "node:http";
import type pg from "pg";
import { listenInternal, type InternalServer } from "../lib/internal-server.ts";
import type { Logger } from "../lib/logger.ts";
import { timedQuery } from "../lib/timed-query.ts";

export interface WorkerHealthOptions {
  readonly host: string;
  readonly port: number;
  /** The worker's pool: readiness is that it can reach the database through it. */
  readonly pool: pg.Pool;
  /** True once shutdown began. */
  readonly stopping: () => boolean;
  readonly logger: Logger;
}

export type WorkerHealthServer = InternalServer;

type Answer = { status: number; body: Record<string, unknown> };

async function readiness(pool: pg.Pool, stopping: () => boolean): Promise<Answer> {
  if (stopping()) return { status: 503, body: { status: "stopping" } };
  try {
    await pool.query(timedQuery("select 1", [], 2_000));
    return { status: 200, body: { status: "ready", checks: { database: { ok: true } } } };
  } catch (error) {
    // The driver's code helps an operator; its message can name hosts, so it stays out.
    const reason = `database unreachable (${(error as { code?: string }).code ?? "no answer"})`;
    return { status: 503, body: { status: "not_ready", checks: { database: { ok: false, reason } } } };
  }
}

export async function startWorkerHealthServer({ host, port, pool, stopping, logger }: WorkerHealthOptions): Promise<WorkerHealthServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = ({ status, body }: Answer) =>
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(body));
    if (req.method !== "GET" && req.method !== "HEAD") return send({ status: 405, body: { error: { code: "BAD_REQUEST", message: "Only GET." } } });
    if (path === "/health") return send({ status: 200, body: { status: "ok" } });
    if (path === "/health/ready") {
      readiness(pool, stopping).then(send, (error: unknown) => {
        logger.error({ err: error }, "worker health: readiness check failed");
        send({ status: 500, body: { status: "error" } });
      });
      return;
    }
    send({ status: 404, body: { error: { code: "NOT_FOUND", message: "No such route: the worker answers /health and /health/ready." } } });
  });
  const listening = await listenInternal(server, host, port, "worker health", logger);
  logger.info({ health: `http://${listening.address.address}:${listening.address.port}/health/ready` }, "worker health listening");
  return listening;
}
