// Request ids and access lines (server/access-log.ts): one line per request when its response ends, at error level
// for 5xx and for a response cut off, never with the query string; a sane x-request-id is kept and echoed, anything
// else replaced; and the per-request child logger is built only when a handler uses it.
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import type { Logger } from "../../lib/logger.ts";
import { accessLog } from "../../server/access-log.ts";
import { capturingLogger, type Line } from "../support/logs.ts";

let lines: Line[];
let logger: Logger;
let children: number;
let server: Server;
let url: string;

beforeAll(async () => {
  ({ logger, lines } = capturingLogger("info"));
  children = 0;
  const child = logger.child.bind(logger);
  logger.child = ((...args: Parameters<Logger["child"]>) => (children++, child(...args))) as Logger["child"];
  const app = express();
  app.use(accessLog(logger));
  app.get("/ok", (_req, res) => void res.json({ ok: true }));
  app.get("/logs", (req, res) => {
    req.log?.warn("handler line");
    res.json({ ok: true });
  });
  app.get("/fails", (_req, res) => void res.status(503).json({ ok: false }));
  app.get("/hangs", () => undefined);
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});
beforeEach(() => {
  lines.length = 0;
  children = 0;
});
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
const accessLines = () => lines.filter((l) => typeof l.msg === "string" && /^GET \d{3}/.test(l.msg as string));

test("one info line per request, without the query string, and no child logger built", async () => {
  const response = await fetch(`${url}/ok?token=secret-value`, { headers: { "x-request-id": "req-abc.1" } });
  await response.json();
  await settle();
  expect(response.headers.get("x-request-id")).toBe("req-abc.1");
  expect(accessLines()).toEqual([
    expect.objectContaining({
      level: 30,
      msg: "GET 200",
      req: { id: "req-abc.1", method: "GET", path: "/ok" },
      res: { status: 200 },
      durationMs: expect.any(Number),
    }),
  ]);
  expect(JSON.stringify(lines)).not.toContain("secret-value");
  expect(children).toBe(0);
});

test("an id that is not a sane token is replaced by a fresh UUID", async () => {
  const response = await fetch(`${url}/ok`, { headers: { "x-request-id": "bad id with spaces" } });
  await response.json();
  expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
});

test("a handler's req.log is a child naming the request, built once when used", async () => {
  const response = await fetch(`${url}/logs`, { headers: { "x-request-id": "req-logs" } });
  await response.json();
  await settle();
  expect(children).toBe(1);
  expect(lines.find((l) => l.msg === "handler line")).toMatchObject({ level: 40, req: { id: "req-logs", path: "/logs" } });
  expect(accessLines()).toHaveLength(1);
});

test("a 5xx answer is an error line", async () => {
  await (await fetch(`${url}/fails`)).json();
  await settle();
  expect(accessLines()).toEqual([expect.objectContaining({ level: 50, msg: "GET 503" })]);
});

test("a response cut off before it ended is one error line saying so", async () => {
  await new Promise<void>((resolve) => {
    const req = httpRequest(`${url}/hangs`);
    req.on("error", () => resolve());
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve();
    }, 100);
  });
  for (let i = 0; i < 20 && accessLines().length === 0; i++) await settle();
  expect(accessLines()).toEqual([expect.objectContaining({ level: 50, msg: "GET 200 aborted", req: expect.objectContaining({ path: "/hangs" }) })]);
});
