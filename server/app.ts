// The HTTP server: Express with request ids and access lines (server/access-log.ts), security headers and CORS (server/security.ts), the health routes,
// and PostGraphile (GraphQL over HTTP at /graphql, graphql-ws subscriptions on the same path behind an Origin check,
// Ruru at /graphiql in development).
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import express, { type ErrorRequestHandler, type RequestHandler } from "express";
import pg from "pg";
import { postgraphile, type PostGraphileInstance } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/express/v4";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { createMetrics, startMetricsServer, type Metrics, type MetricsServer } from "../lib/metrics.ts";
import { createConnectors } from "../lib/integrations/connectors.ts";
import { withLogContext } from "../lib/log-context.ts";
import { createTokenService, type TokenService } from "../lib/tokens.ts";
import { clientAddress } from "./client-address.ts";
import { accessLog } from "./access-log.ts";
import { createApiKeys } from "./api-keys.ts";
import { authenticateHttp } from "./bearer-auth.ts";
import { healthRouter } from "./health.ts";
import { createLiveEvents } from "./live-events.ts";
import { createJobProgress } from "./job-progress.ts";
import { startLiveNumberer } from "./live-numberer.ts";
import { createLiveSockets } from "./live-sockets.ts";
import { createNotificationListener } from "../lib/notifications.ts";
import { oauthCallback, oauthCallbackPath } from "./oauth-callback.ts";
import { createSso, ssoCallbackPath } from "./sso.ts";
import { graphiqlPaths, makePreset } from "./preset.ts";
import { createRateLimiter, rateLimit } from "./rate-limits.ts";
import { checkUpgradeOrigin, corsPolicy, originPolicy, securityHeaders } from "./security.ts";
import { measureHttp, metricsRoute } from "./metrics-route.ts";
import { uploadPath, uploadRoute } from "./upload.ts";
import { fileDownloadRoute } from "./file-download.ts";
import { createObjectStore } from "../lib/storage/index.ts";
import { downloadUrlKey, localDownloadPath } from "../lib/storage/local-store.ts";
import { sharedReadCounts } from "./shared-reads.ts";
import { createWebSocketEndpoint } from "./websocket.ts";

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
   * WebSockets, then releases PostGraphile. Requests still running at the timeout have their database work
   * cancelled (their transactions roll back and they answer with an error) before any connection is cut, so a write
   * is either answered or not made. The pool is the caller's to end.
   */
  close(timeoutMs: number): Promise<void>;
}

export interface ServerOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly pool: pg.Pool;
  /** Where this process's metrics are recorded (shared with its worker in `npm start`). Default: a new registry. */
  readonly metrics?: Metrics;
  /** Signs and verifies access tokens. Default: made from config (createTokenService). */
  readonly tokens?: TokenService;
  /** The rate limits' clock, milliseconds since the epoch. Default: Date.now. */
  readonly clock?: () => number;
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

/** How long requests whose database work was cancelled at the shutdown timeout get to answer before being cut off. */
const cancelGraceMs = 2_000;

/** Whether `promise` settles within `ms`. */
const settlesWithin = (promise: Promise<unknown>, ms: number) =>
  new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });

/**
 * The pool's clients currently checked out (by requests: the LISTEN connection is not the pool's), and a switch that
 * makes every client checked out afterwards unusable (ended before the request can send a query on it), so that no
 * request starts database work once shutdown has given up on waiting.
 */
function trackCheckedOut(pool: pg.Pool) {
  const clients = new Set<pg.PoolClient>();
  let refusing = false;
  pool.on("acquire", (client) => {
    if (refusing) void client.end().catch(() => undefined);
    else clients.add(client);
  });
  pool.on("release", (_error, client) => clients.delete(client));
  pool.on("remove", (client) => clients.delete(client as pg.PoolClient));
  return {
    clients,
    refuseNew() {
      refusing = true;
    },
  };
}

/**
 * Cancels (the running statement fails, its transaction rolls back) or terminates (the session ends, an open
 * transaction rolls back) the backends of `clients`, over a connection of its own: the pool may be exhausted.
 * The authenticator may signal its own backends.
 */
async function signalBackends(url: string, clients: Set<pg.PoolClient>, how: "pg_cancel_backend" | "pg_terminate_backend", logger: Logger) {
  const pids = [...clients].map((c) => (c as pg.PoolClient & { processID?: number }).processID).filter((pid): pid is number => typeof pid === "number");
  if (pids.length === 0) return;
  const client = new pg.Client({ connectionString: url, application_name: "quire-shutdown", connectionTimeoutMillis: 2_000 });
  client.on("error", (error) => logger.warn({ err: error }, "the shutdown connection failed"));
  try {
    await client.connect();
    await client.query({ text: `select ${how}(pid) from unnest($1::int[]) as pid`, values: [pids] });
  } catch (error) {
    logger.warn({ err: error }, `could not ${how === "pg_cancel_backend" ? "cancel" : "terminate"} the database work of in-flight requests`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function createQuireServer({
  config,
  logger,
  pool,
  metrics = createMetrics(),
  tokens = createTokenService(config),
  clock,
}: ServerOptions): Promise<QuireServer> {
  let stopping = false;
  const app = express();
  app.disable("x-powered-by");
  app.use(accessLog(logger));
  // Every line logged while handling a request, its access line included, carries its id (and, once verified, its
  // organization and user).
  app.use((req, _res, next) => withLogContext({ requestId: String(req.id) }, next));
  app.use(measureHttp(metrics));
  app.use(securityHeaders({ graphiqlPaths: config.http.graphiql ? [graphiqlPaths.page, graphiqlPaths.assets] : [] }));
  // FRONTEND_ORIGINS, plus any loopback origin in development (a local frontend dev server); refusals are logged.
  const origins = originPolicy({ origins: config.integrations.frontendOrigins, allowLoopback: config.env === "development", logger });
  app.use(corsPolicy(origins));
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
    // Node takes its own error listener off a socket it hands to 'upgrade'; a reset before the WebSocket handshake
    // completes would otherwise be an uncaught error. The WebSocket endpoint logs what happens after it.
    socket.on("error", () => socket.destroy());
  });

  // Public keys that verify Quire's access tokens: empty with HS256 (a shared secret is never published).
  const jwks = { keys: config.jwt.signingKey ? [config.jwt.signingKey.jwk] : [] };
  app.get("/.well-known/jwks.json", (_req, res) => {
    res.set("cache-control", "public, max-age=300").json(jwks);
  });
  // Multipart uploads: before GraphQL and its body parser. On both routes the bearer token is verified once, first
  // (a bad one is refused in the route's error shape), and the limiter and the handler read what was verified.
  const addressOf = clientAddress(config.http.trustedProxies);
  const limiter = createRateLimiter({ config, pool, logger, clock });
  // API keys are checked on the authenticator pool, with a short cache (server/api-keys.ts).
  const apiKeys = createApiKeys({ pool });
  const limit = rateLimit({ limiter, addressOf });
  const store = createObjectStore(config);
  app.post(uploadPath, authenticateHttp(tokens, "rest", apiKeys), limit, uploadRoute({ config, pool, addressOf, store }));
  app.all(uploadPath, (_req, res) => {
    res
      .status(405)
      .set("allow", "POST")
      .json({ error: { code: "METHOD_NOT_ALLOWED", message: "Upload files with POST." } });
  });
  // The local backend's signed download links: the token is the credential, so the anonymous limit applies.
  if (config.storage.backend === "local") {
    app.get(localDownloadPath, authenticateHttp(tokens, "rest", apiKeys), limit, fileDownloadRoute(store, downloadUrlKey(config.jwt.secret), pool));
  }
  app.use("/graphql", authenticateHttp(tokens, "graphql", apiKeys), limit, ...strictUtf8Body(config.http.maxRequestBytes));
  const listener = createNotificationListener({
    url: config.database.url,
    logger,
    retryBaseMs: config.live.reconnectBaseMs,
    retryMaxMs: config.live.reconnectMaxMs,
  });
  const liveSockets = createLiveSockets({ listener, pool, logger });
  const liveEvents = createLiveEvents(listener, logger, { outageGraceMs: config.live.outageGraceMs });
  const jobProgress = createJobProgress(listener, logger);
  // Numbers and announces the live events changes append (on this server's pool; one numberer works at a time).
  const numberer = startLiveNumberer(pool, config.live.numberIntervalMs, logger);
  const requestClients = trackCheckedOut(pool);
  metrics.observeSubscriptions(() => liveEvents.size + jobProgress.size);
  metrics.observeSharedReads(() => sharedReadCounts);
  // A first failure is logged and retried in the background; until it listens, nothing live is heard here.
  await listener.start().catch(() => undefined);
  const connectors = createConnectors(config);
  app.get(oauthCallbackPath, oauthCallback({ config, pool, connectors, logger }));
  const sso = createSso({ config, pool, logger });
  app.get(ssoCallbackPath, sso.callback);
  const pgl = postgraphile(
    makePreset({
      config,
      logger,
      pool,
      tokens,
      apiKeys,
      addressOf,
      liveSockets,
      liveEvents,
      jobProgress,
      connectors,
      metrics,
      countRequest: limiter.count,
      sso,
      store,
    }),
  );
  const serv = pgl.createServ(grafserv);
  // Not grafserv's own upgrade handler, which would accept a WebSocket from any web page and leaves its sockets'
  // errors unhandled (server/websocket.ts): Origin is checked first, then Quire's endpoint takes the connection.
  await serv.addTo(app, httpServer, false);
  const websockets = createWebSocketEndpoint(serv, { maxMessageBytes: config.http.maxRequestBytes, connectionInitMs: config.live.connectionInitMs, logger });
  const onUpgrade = checkUpgradeOrigin(origins, (req, socket, head) => {
    if (serv.shouldHandleUpgrade(req, socket, head)) websockets.handleUpgrade(req, socket, head);
    else socket.destroy();
  });
  httpServer.on("upgrade", onUpgrade);
  serv.onRelease(() => {
    httpServer.off("upgrade", onUpgrade);
    websockets.close();
  });

  app.use((_req, res) => {
    res.status(404).json({ error: { code: "NOT_FOUND", message: "No such route." } });
  });
  const onError: ErrorRequestHandler = (error, req, res, _next) => {
    const status = typeof error?.status === "number" && error.status >= 400 && error.status < 500 ? error.status : 500;
    if (status === 500) req.log?.error({ err: error }, "unhandled route error");
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
      // Other servers (or the next start) number what this one leaves; its own subscriptions are ending.
      await numberer.stop();
      const drained = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // close() only closes connections idle at that moment; a keep-alive connection whose request finishes later
      // would hold shutdown open until its client hangs up, so keep closing the ones that become idle.
      const sweep = setInterval(() => httpServer.closeIdleConnections(), 50);
      for (const socket of upgraded) socket.end();
      // Past the timeout, a request is never cut off while its write may still commit (a retrying client would
      // then write twice): its database work is cancelled first, so its transaction rolls back and it answers
      // with an error; only the requests still not done after a short grace lose their connection, and their
      // backends are terminated so that nothing of theirs commits after.
      // Requests still waiting for a connection then never get a usable one.
      if (!(await settlesWithin(drained, timeoutMs))) {
        logger.warn({ timeoutMs, requests: requestClients.clients.size }, "in-flight requests did not finish in time: cancelling their database work");
        requestClients.refuseNew();
        await signalBackends(config.database.url, requestClients.clients, "pg_cancel_backend", logger);
        if (!(await settlesWithin(drained, cancelGraceMs))) {
          logger.warn({ cancelGraceMs }, "cancelled requests did not finish: terminating their database work and closing their connections");
          await signalBackends(config.database.url, requestClients.clients, "pg_terminate_backend", logger);
          httpServer.closeAllConnections();
        }
      }
      await drained;
      clearInterval(sweep);
      for (const socket of upgraded) socket.destroy();
      liveEvents.close();
      jobProgress.close();
      await liveSockets.close();
      await listener.close();
      await limiter.close();
      await pgl.release();
      store.close();
      await metricsServer?.close();
    },
  };
}
