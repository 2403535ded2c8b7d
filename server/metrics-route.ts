// GET /metrics and the HTTP request metrics. Metrics describe the whole deployment (traffic, queue, errors), so
// they are not public: they are served on a port of their own (METRICS_PORT, lib/metrics.ts, for a scraper on the
// internal network) and/or here on the public port to a caller holding METRICS_TOKEN as a bearer token. With
// neither, /metrics on the public port is a 404.
import { createHash, timingSafeEqual } from "node:crypto";
import type { RequestHandler } from "express";
import { routeOf } from "../lib/http-routes.ts";
import type { Metrics } from "../lib/metrics.ts";

/**
 * Express middleware counting every response by route and status, with its duration. A request whose client went
 * away before the response was finished counts with status `aborted`.
 */
export function measureHttp(metrics: Metrics): RequestHandler {
  return (req, res, next) => {
    // Decided on arrival: routers rewrite req.url while they handle it.
    const route = routeOf(req.path);
    const started = performance.now();
    res.once("close", () => {
      const status = res.writableFinished ? String(res.statusCode) : "aborted";
      metrics.recordHttpRequest(route, status, (performance.now() - started) / 1000);
    });
    next();
  };
}

const digest = (text: string) => createHash("sha256").update(text).digest();

/**
 * GET /metrics on the public port: only with `Authorization: Bearer <token>`, compared in constant time (both
 * sides hashed first, so neither the token's content nor its length leaks through timing); else 401.
 */
export function metricsRoute(metrics: Metrics, token: string): RequestHandler {
  const expected = digest(`Bearer ${token}`);
  return async (req, res) => {
    if (!timingSafeEqual(digest(req.headers.authorization ?? ""), expected)) {
      res
        .status(401)
        .set("www-authenticate", 'Bearer realm="metrics"')
        .json({ error: { code: "UNAUTHENTICATED", message: "Metrics need the metrics bearer token." } });
      return;
    }
    res
      .set("content-type", metrics.contentType)
      .set("cache-control", "no-store")
      .send(await metrics.render());
  };
}
