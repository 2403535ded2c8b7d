// The HTTP server: Express with request logging, security headers and CORS (server/security.ts), the health routes,
// and PostGraphile (GraphQL over HTTP at /graphql, graphql-ws subscriptions on the same path behind an Origin check,
// Ruru at /graphiql in development).
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import express, { type ErrorRequestHandler, type RequestHandler } from "express";
import type pg from "pg";
import { pinoHttp } from "pino-http";
import { postgraphile, type PostGraphileInstance } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { createMetrics, startMetricsServer, type Metrics, type MetricsServer } from "../lib/metrics.ts";
import { createConnectors } from "../lib/connectors.ts";
import { withLogContext } from "../lib/log-context.ts";
import { createTokenService } from "../lib/tokens.ts";
import { clientAddress } from "./client-address.ts";
import { authenticateHttp } from "./context.ts";
import { healthRouter } from "./health.ts";
import { createLiveEvents } from "./live-events.ts";
import { createLiveSockets } from "./live-sockets.ts";
import { createNotificationListener } from "./notifications.ts";
import { oauthCallback, oauthCallbackPath } from "./oauth-callback.ts";
import { graphiqlPaths, makePreset } from "./preset.ts";
import { rateLimit } from "./rate-limits.ts";
import { checkUpgradeOrigin, corsPolicy, securityHeaders } from "./security.ts";
import { measureHttp, metricsRoute } from "./metrics-route.ts";
import { uploadPath, uploadRoute } from "./upload.ts";

export interface QuireServer {
  readonly httpServer: Server;
  readonly pgl: PostGraphileInstance;
  readonly metrics: Metrics;
  /**
   * Starts listening on HOST:PORT (port 0 picks a free one) and resolves with the bound address; with METRICS_PORT,
   * also serves /metrics there.
   */
  listen(port?: number): Promise<AddressInfo>;
  /**
   * Stops accepting connections, reports not-ready, lets in-flight requests finish within `timeoutMs`, closes
   * WebSockets, then releases PostGraphile. The pool is the caller's to end.
   */
  close(timeoutMs: number): Promise<void>;
}

export interface ServerOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  /** Where this process's metrics are recorded (shared with its worker in `npm start`). Default: a new registry. */
  readonly metrics?: Metrics;
}

/** A client's x-request-id is reused when it is a sane token; anything else gets a fresh UUID. */
const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

function requestLogger(logger: Logger) {
  return pinoHttp({
    logger,
    genReqId(req: IncomingMessage, res: ServerResponse) {
      const given = req.headers["x-request-id"];
      const id = typeof given === "string" && requestIdPattern.test(given) ? given : randomUUID();
      res.setHeader("x-request-id", id);
      return id;
    },
    serializers: {
      req: (req: { id: string; method: string; url: string }) => ({ id: req.id, method: req.method, path: req.url.split("?")[0] }),
      res: (res: { statusCode: number }) => ({ status: res.statusCode }),
    },
    customAttributeKeys: { responseTime: "durationMs" },
    customLogLevel: (_req, res, error) => (error || res.statusCode >= 500 ? "error" : "info"),
    customSuccessMessage: (req, res) => `${req.method} ${res.statusCode}`,
    customErrorMessage: (req, res) => `${req.method} ${res.statusCode}`,
  });
}

/**
 * Reads request bodies whole (up to `limit` bytes, else 413 TOO_LARGE) and refuses bytes that are not valid
 * UTF-8 with 400 BAD_INPUT. Without this, invalid sequences would be decoded to U+FFFD and stored silently.
 * grafserv then uses the buffered body as it is.
 */
function strictUtf8Body(limit: number): RequestHandler[] {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  return [
    express.raw({ type: () => true, limit }),
    (req, res, next) => {
      if (Buffer.isBuffer(req.body)) {
        try {
          decoder.decode(req.body);
        } catch {
          res.status(400).json({ errors: [{ message: "The request body is not valid UTF-8.", extensions: { code: "BAD_INPUT" } }] });
          return;
        }
      }
      next();
    },
  ];
}

export async function createQuireServer({ config, logger, pool, metrics = createMetrics() }: ServerOptions): Promise<QuireServer> {
  let stopping = false;
  const app = express();
  app.disable("x-powered-by");
  app.use(requestLogger(logger));
  // Every line logged while handling a request, its access line included, carries its id (and, once verified, its
  // organization and user).
  app.use((req, _res, next) => withLogContext({ requestId: String(req.id) }, next));
  app.use(measureHttp(metrics));
  app.use(securityHeaders({ graphiqlPaths: config.http.graphiql ? [graphiqlPaths.page, graphiqlPaths.assets] : [] }));
  app.use(corsPolicy(config.integrations.frontendOrigins));
  metrics.observePool("server", pool);
  app.use(healthRouter({ pool, workerMaxAgeSeconds: config.worker.readyMaxAgeSeconds, stopping: () => stopping }));
  // Without METRICS_TOKEN, /metrics is not served on this port (it falls through to the 404 below).
  if (config.metrics.token) app.get("/metrics", metricsRoute(metrics, config.metrics.token));

  const httpServer = createServer(app);
  // Upgraded (WebSocket) sockets leave the HTTP server's bookkeeping, so track them to close them on shutdown.
  const upgraded = new Set<Socket>();
  httpServer.on("upgrade", (_req, socket: Socket) => {
    upgraded.add(socket);
    socket.once("close", () => upgraded.delete(socket));
  });

  const tokens = createTokenService(config);
  // Public keys that verify Quire's access tokens: empty with HS256 (a shared secret is never published).
  const jwks = { keys: config.jwt.signingKey ? [config.jwt.signingKey.jwk] : [] };
  app.get("/.well-known/jwks.json", (_req, res) => {
    res.set("cache-control", "public, max-age=300").json(jwks);
  });
  // Multipart uploads: before GraphQL and its body parser; same bearer token check (claimsOf), REST error shape.
  const addressOf = clientAddress(config.http.trustedProxies);
  const limit = rateLimit({ config, pool, tokens, addressOf, logger });
  app.post(uploadPath, limit, uploadRoute({ config, pool, tokens, addressOf }));
  app.all(uploadPath, (_req, res) => {
    res.status(405).set("allow", "POST").json({ error: { code: "METHOD_NOT_ALLOWED", message: "Upload files with POST." } });
  });
  app.use("/graphql", authenticateHttp(tokens), limit, ...strictUtf8Body(config.http.maxRequestBytes));
  const listener = createNotificationListener({ url: config.database.url, logger });
  const liveSockets = createLiveSockets(listener);
  const liveEvents = createLiveEvents(listener, logger);
  metrics.observeSubscriptions(() => liveEvents.size);
  // A first failure is logged and retried in the background; until it listens, nothing live is heard here.
  await listener.start().catch(() => undefined);
  const connectors = createConnectors(config);
  app.get(oauthCallbackPath, oauthCallback({ config, pool, connectors, logger }));
  const pgl = postgraphile(makePreset({ config, logger, pool, tokens, addressOf, liveSockets, liveEvents, connectors, metrics }));
  const serv = pgl.createServ(grafserv);
  // Not grafserv's own upgrade handler, which would accept a WebSocket from any web page: Origin is checked first.
  await serv.addTo(app, httpServer, false);
  const graphqlUpgrade = await serv.getUpgradeHandler();
  const onUpgrade = checkUpgradeOrigin(config.integrations.frontendOrigins, (req, socket, head) => {
    if (graphqlUpgrade && serv.shouldHandleUpgrade(req, socket, head)) graphqlUpgrade(req, socket, head);
    else socket.destroy();
  });
  httpServer.on("upgrade", onUpgrade);
  serv.onRelease(() => void httpServer.off("upgrade", onUpgrade));

  app.use((_req, res) => {
    res.status(404).json({ error: { code: "NOT_FOUND", message: "No such route." } });
  });
  const onError: ErrorRequestHandler = (error, req, res, _next) => {
    const status = typeof error?.status === "number" && error.status >= 400 && error.status < 500 ? error.status : 500;
    if (status === 500) (req as { log?: Logger }).log?.error({ err: error }, "unhandled route error");
    const body =
      status === 500
        ? { code: "INTERNAL", message: "An internal error occurred." }
        : status === 413
          ? { code: "TOO_LARGE", message: "The request body is too large." }
          : { code: "BAD_REQUEST", message: "The request is malformed." };
    // GraphQL clients read `errors`; other routes answer in the same shape as the 404 above.
    res.status(status).json(req.path.startsWith("/graphql") ? { errors: [{ message: body.message, extensions: { code: body.code } }] } : { error: body });
  };
  app.use(onError);

  let metricsServer: MetricsServer | null = null;
  return {
    httpServer,
    pgl,
    metrics,
    async listen(port = config.http.port) {
      if (config.metrics.port !== null) {
        metricsServer = await startMetricsServer({ metrics, host: config.http.host, port: config.metrics.port, logger });
      }
      return new Promise((resolve, reject) => {
        httpServer.once("error", reject);
        httpServer.listen(port, config.http.host, () => {
          httpServer.off("error", reject);
          resolve(httpServer.address() as AddressInfo);
        });
      });
    },
    async close(timeoutMs) {
      stopping = true;
      const drained = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // close() only closes connections idle at that moment; a keep-alive connection whose request finishes later
      // would hold shutdown open until its client hangs up, so keep closing the ones that become idle.
      const sweep = setInterval(() => httpServer.closeIdleConnections(), 50);
      const timer = setTimeout(() => {
        logger.warn({ timeoutMs }, "in-flight requests did not finish in time: closing their connections");
        httpServer.closeAllConnections();
      }, timeoutMs);
      for (const socket of upgraded) socket.end();
      await drained;
      clearInterval(sweep);
      clearTimeout(timer);
      for (const socket of upgraded) socket.destroy();
      liveEvents.close();
      await liveSockets.close();
      await listener.close();
      await pgl.release();
      await metricsServer?.close();
    },
  };
}
