// Request ids and access lines. Every request gets an id (the client's x-request-id when it is a sane token, else a
// fresh UUID), echoed in the x-request-id header, and one access line when its response ends: `POST 200` with
// { req: { id, method, path }, res: { status }, durationMs }, at error level for 5xx and for a response cut off
// before it ended, info otherwise. The lines carry the request's log context (lib/log-context.ts) like any other.
//
// Written here rather than with pino-http, which builds a child logger for every request, serializing and redacting
// its bindings even when nothing is logged with it (about 1.3 % of the API's CPU in bench (a)'s profile). Here the
// access line is written once with the server's logger, and `req.log` (a child carrying the request) is built only
// when a handler asks for it.
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { RequestHandler } from "express";
import type { Logger } from "../lib/logger.ts";

declare module "node:http" {
  interface IncomingMessage {
    /** This request's id (server/access-log.ts). */
    id?: string;
    /** A logger whose lines name this request: built on first use. */
    readonly log?: Logger;
  }
}

/** A client's x-request-id is reused when it is a sane token; anything else gets a fresh UUID. */
const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/;

const requestIdFrom = (req: IncomingMessage): string => {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && requestIdPattern.test(given) ? given : randomUUID();
};

/** The request as access lines show it: never its query string (it may hold a token). */
const shown = (req: IncomingMessage, id: string) => ({ id, method: req.method, path: (req.url ?? "").split("?")[0] });

/** The id accessLog gave `req`; a fresh one for a request that did not go through it (a WebSocket's, in tests). */
export const requestIdOf = (req: IncomingMessage | undefined): string => req?.id ?? randomUUID();

export function accessLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const id = requestIdFrom(req);
    req.id = id;
    res.setHeader("x-request-id", id);
    let child: Logger | undefined;
    Object.defineProperty(req, "log", { configurable: true, enumerable: false, get: () => (child ??= logger.child({ req: shown(req, id) })) });
    const started = performance.now();
    const done = (response: ServerResponse) => {
      const durationMs = Math.round(performance.now() - started);
      const status = response.statusCode;
      const line = { req: shown(req, id), res: { status }, durationMs };
      if (!response.writableFinished) logger.error(line, `${req.method} ${status} aborted`);
      else if (status >= 500) logger.error(line, `${req.method} ${status}`);
      else logger.info(line, `${req.method} ${status}`);
    };
    // 'close' follows 'finish' for a response that ended, and comes alone for one cut off: one line either way.
    res.once("close", () => done(res));
    next();
  };
}
