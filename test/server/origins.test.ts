// Browser origins in development and production: a local frontend dev server (Vite's http://localhost:5173, any
// loopback origin) may use the API in development without configuration, never in production; an origin refused
// is warned about once, naming FRONTEND_ORIGINS and the origin, so a 403 in the browser is explained in the log.
import { Writable } from "node:stream";
import WebSocket from "ws";
import { createPool } from "../../db/pool.ts";
import type { Config } from "../../lib/config.ts";
import { createLogger } from "../../lib/logger.ts";
import { createQuireServer } from "../../server/app.ts";
import { createTestDatabase, testConfig, type TestDatabase } from "../support/database.ts";

type Line = Record<string, unknown> & { msg?: string };

interface Started {
  readonly url: string;
  readonly lines: Line[];
  close(): Promise<void>;
}

let db: TestDatabase;
let development: Started;
let production: Started;

async function start(config: Config): Promise<Started> {
  const lines: Line[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString().split("\n")) if (text) lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  const logger = createLogger({ level: "warn", pretty: false }, destination);
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-server" }, logger);
  const server = await createQuireServer({ config, logger, pool });
  const { port } = await server.listen(0);
  return {
    url: `http://127.0.0.1:${port}`,
    lines,
    async close() {
      await server.close(1_000);
      await pool.end();
    },
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  development = await start(testConfig(db.name, { NODE_ENV: "development", FRONTEND_ORIGINS: "https://app.example.com" }));
  production = await start(testConfig(db.name, { NODE_ENV: "production", FRONTEND_ORIGINS: "https://app.example.com" }));
});
afterAll(async () => {
  await development?.close();
  await production?.close();
  await db?.drop();
});

const preflight = (url: string, origin: string) =>
  fetch(`${url}/graphql`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
  });

/** The status a WebSocket upgrade from `origin` gets: 101 (opened) or the refusal's status. */
const upgrade = (url: string, origin: string) =>
  new Promise<number>((resolve, reject) => {
    const socket = new WebSocket(`${url.replace(/^http/, "ws")}/graphql`, "graphql-transport-ws", { origin });
    socket.once("open", () => {
      socket.close();
      resolve(101);
    });
    socket.once("unexpected-response", (_req, res) => {
      resolve(res.statusCode ?? 0);
      socket.terminate();
    });
    socket.once("error", reject);
  });

const refusals = (lines: Line[]) => lines.filter((l) => l.msg?.startsWith("browser origin refused"));

describe.each(["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080"])("loopback origin %s", (origin) => {
  test("development: CORS preflight answered and WebSocket opened", async () => {
    const response = await preflight(development.url, origin);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(origin);
    expect(await upgrade(development.url, origin)).toBe(101);
  });

  test("production: refused (403) on both", async () => {
    const response = await preflight(production.url, origin);
    expect(response.status).toBe(403);
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    expect(await upgrade(production.url, origin)).toBe(403);
  });
});

test("a look-alike of loopback is not loopback", async () => {
  expect((await preflight(development.url, "http://localhost.evil.example")).status).toBe(403);
  expect((await preflight(development.url, "http://127.0.0.1.evil.example:5173")).status).toBe(403);
});

test("a refused origin is warned about once, naming FRONTEND_ORIGINS and the origin; same-host requests are not", async () => {
  const origin = "https://refused.example";
  const before = refusals(production.lines).length;
  expect((await preflight(production.url, origin)).status).toBe(403);
  expect((await preflight(production.url, origin)).status).toBe(403);
  expect(await upgrade(production.url, origin)).toBe(403);
  const logged = refusals(production.lines).slice(before);
  expect(logged).toEqual([
    expect.objectContaining({ level: 40, origin, frontendOrigins: ["https://app.example.com"], msg: expect.stringContaining("FRONTEND_ORIGINS") }),
  ]);

  // GraphiQL on this very server posts with its own Origin: not a refusal worth a line.
  const own = production.url;
  const beforeOwn = refusals(production.lines).length;
  await fetch(`${own}/graphql`, {
    method: "POST",
    headers: { origin: own, "content-type": "application/json" },
    body: JSON.stringify({ query: "{ __typename }" }),
  });
  expect(refusals(production.lines).length).toBe(beforeOwn);
});

test("warnings are bounded: a flood of distinct origins stops being logged", async () => {
  const before = production.lines.length;
  for (let i = 0; i < 130; i++) await preflight(production.url, `https://flood-${i}.example`);
  const logged = production.lines.slice(before).filter((l) => String(l.msg).startsWith("browser origin"));
  expect(logged.length).toBeLessThanOrEqual(101);
  expect(logged.at(-1)?.msg).toBe("browser origins refused: further refused origins are not logged");
}, 60_000);
