// What browsers are told about Quire's responses, and which web pages may use the API. Every HTTP response gets
// security headers (helmet): a JSON API has nothing to render, so its Content-Security-Policy allows nothing, and
// only GraphiQL (Ruru, when GRAPHIQL is on) gets a policy its inline scripts, styles and workers can run under.
// CORS answers only the configured frontend origins (FRONTEND_ORIGINS). Browsers do not apply CORS to WebSockets,
// so upgrades are checked here too: a browser page from another origin cannot open a subscription socket.
// Requests without an Origin header (servers, CLIs, mobile apps) are not browsers' and are let through.
// In development any loopback origin is a frontend too (a dev server such as Vite's on http://localhost:5173), and
// an origin refused is logged once, naming FRONTEND_ORIGINS, so a 403 in the browser is explained in the log.
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import cors from "cors";
import type { RequestHandler } from "express";
import helmet from "helmet";
import type { Logger } from "../lib/logger.ts";

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/** The origins as browsers send them in `Origin` (scheme://host[:port], lowercase, no default port). */
const originSet = (origins: readonly string[]): ReadonlySet<string> => new Set(origins.map((origin) => new URL(origin).origin));

/** http(s) on localhost, 127.0.0.1 or [::1], any port: a page served from this very machine. */
const loopbackOrigin = /^https?:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/;

/** Distinct refused origins warned about, at most; later ones are not (a hostile client cannot grow the set). */
const maxWarnedOrigins = 100;

export interface OriginPolicyOptions {
  /** FRONTEND_ORIGINS: the origins browsers may call the API and open WebSockets from. */
  readonly origins: readonly string[];
  /** Also every loopback origin (http://localhost:*, http://127.0.0.1:*, http://[::1]:*). Development only. Default false. */
  readonly allowLoopback?: boolean;
  /** Where a refused origin is warned about, once per origin. Default: nowhere. */
  readonly logger?: Logger;
}

/** Which browser origins may use the API; shared by CORS and the WebSocket check so each refusal is logged once. */
export interface OriginPolicy {
  allows(origin: string): boolean;
  /** Logs (once per origin) that `origin` was refused, unless it is the page's own host (same-origin, e.g. GraphiQL). */
  noteRefused(origin: string, host: string | undefined): void;
}

export function originPolicy({ origins, allowLoopback = false, logger }: OriginPolicyOptions): OriginPolicy {
  const allowed = originSet(origins);
  const warned = new Set<string>();
  return {
    allows: (origin) => allowed.has(origin) || (allowLoopback && loopbackOrigin.test(origin)),
    noteRefused(origin, host) {
      if (!logger || warned.has(origin) || warned.size > maxWarnedOrigins) return;
      try {
        if (host !== undefined && new URL(origin).host === host) return;
      } catch {
        // "null" or garbage: refused, and worth a line like any other
      }
      warned.add(origin);
      if (warned.size > maxWarnedOrigins) {
        logger.warn({ maxWarnedOrigins }, "browser origins refused: further refused origins are not logged");
        return;
      }
      logger.warn(
        { origin: origin.slice(0, 200), frontendOrigins: [...allowed] },
        "browser origin refused: not in FRONTEND_ORIGINS (add it there, comma-separated, to let its pages use the API)",
      );
    },
  };
}

const asPolicy = (origins: readonly string[] | OriginPolicy): OriginPolicy =>
  Array.isArray(origins) ? originPolicy({ origins: origins as readonly string[] }) : (origins as OriginPolicy);

/** A Host header that is safe to echo into a CSP source (no spaces, commas or semicolons). */
const plainHost = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** A CSP source for WebSockets to the host the page came from ('self' covers ws: only in recent browsers). */
const sameHostSocket =
  (scheme: "ws" | "wss") =>
  (req: IncomingMessage): string => {
    const host = req.headers.host;
    return host && plainHost.test(host) ? `${scheme}://${host}` : "'self'";
  };

export interface SecurityHeadersOptions {
  /**
   * Paths that serve GraphiQL (Ruru): the page and its assets (a path ending in `/` covers everything under it;
   * Ruru's workers run under their script's policy). They get a policy that lets Ruru run. Default: none.
   */
  readonly graphiqlPaths?: readonly string[];
}

/** helmet's headers on every response, with a CSP that allows nothing except on `graphiqlPaths`. */
export function securityHeaders({ graphiqlPaths = [] }: SecurityHeadersOptions = {}): RequestHandler {
  const locked = { objectSrc: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"], frameAncestors: ["'none'"] };
  const api = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], ...locked } },
    xFrameOptions: { action: "deny" },
  });
  const graphiql = helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        // Ruru bootstraps with inline scripts and styles; its fonts and icons are data: URLs in its CSS.
        scriptSrc: ["'self'", "'unsafe-inline'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
        imgSrc: ["'self'", "data:"],
        fontSrc: ["'self'", "data:"],
        workerSrc: ["'self'"],
        connectSrc: ["'self'", sameHostSocket("ws"), sameHostSocket("wss")],
        ...locked,
      },
    },
    xFrameOptions: { action: "deny" },
  });
  const isGraphiql = (path: string) => graphiqlPaths.some((p) => (p.endsWith("/") ? path.startsWith(p) : path === p));
  return (req, res, next) => (isGraphiql(req.path) ? graphiql : api)(req, res, next);
}

/**
 * CORS for the allowed origins only: their preflights are answered (GET and POST, with Authorization, Content-Type
 * and X-Request-Id; cached 10 minutes) and their responses carry Access-Control-Allow-Origin (and expose
 * X-Request-Id). No credentials: the API authenticates with bearer tokens, never cookies. Any other origin gets no
 * CORS headers, and its preflight 403 FORBIDDEN.
 */
export function corsPolicy(allowedOrigins: readonly string[] | OriginPolicy): RequestHandler {
  const policy = asPolicy(allowedOrigins);
  const allow = cors({
    origin: true, // reflects the request's Origin, which is one of `allowed` when this runs
    methods: ["GET", "POST"],
    allowedHeaders: ["Authorization", "Content-Type", "X-Request-Id"],
    exposedHeaders: ["X-Request-Id"],
    maxAge: 600,
  });
  return (req, res, next) => {
    const origin = req.headers.origin;
    if (origin !== undefined && policy.allows(origin)) return allow(req, res, next);
    if (origin !== undefined) policy.noteRefused(origin, req.headers.host);
    // The answer depends on Origin: a shared cache must not give this one to an allowed origin, or the reverse.
    res.vary("Origin");
    if (req.method === "OPTIONS" && origin !== undefined && req.headers["access-control-request-method"] !== undefined) {
      res.status(403).json({ error: { code: "FORBIDDEN", message: "This origin may not call the API." } });
      return;
    }
    next();
  };
}

/**
 * Whether a WebSocket upgrade may proceed: without an Origin (not a browser), from one of `allowed`, or from a page
 * of this very host (GraphiQL's subscriptions).
 */
export function upgradeOriginAllowed(req: IncomingMessage, policy: OriginPolicy): boolean {
  const origin = req.headers.origin;
  if (origin === undefined || policy.allows(origin)) return true;
  try {
    return req.headers.host !== undefined && new URL(origin).host === req.headers.host;
  } catch {
    return false; // "null" (sandboxed pages, file:) or garbage
  }
}

/**
 * Wraps `handle` so that upgrades refused by {@link upgradeOriginAllowed} get `403 Forbidden` and a closed socket
 * before it sees them.
 */
export function checkUpgradeOrigin(allowedOrigins: readonly string[] | OriginPolicy, handle: UpgradeHandler): UpgradeHandler {
  const policy = asPolicy(allowedOrigins);
  const body = JSON.stringify({ error: { code: "FORBIDDEN", message: "This origin may not open a WebSocket here." } });
  const refusal = [
    "HTTP/1.1 403 Forbidden",
    "Connection: close",
    "Content-Type: application/json",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
  return (req, socket, head) => {
    if (upgradeOriginAllowed(req, policy)) return handle(req, socket, head);
    policy.noteRefused(req.headers.origin ?? "", req.headers.host);
    socket.once("finish", () => socket.destroy());
    socket.end(refusal);
  };
}
