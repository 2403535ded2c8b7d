// What browsers are told: security headers on every response, CORS only for FRONTEND_ORIGINS (preflight
// included), the same origin check on WebSocket upgrades, and GraphiQL only where enabled, under a CSP it runs with.
import WebSocket from "ws";
import { codeOf, useQuireServer, type TestServer } from "../support/server.ts";

const frontend = "https://app.example.com";
const foreign = "https://evil.example";

const fx = useQuireServer({ env: { FRONTEND_ORIGINS: `${frontend},https://admin.example.com` } });
const app = fx.app; // NODE_ENV=test: GraphiQL and introspection on
const production = fx.server({ NODE_ENV: "production", FRONTEND_ORIGINS: frontend });

const postGraphQL = (server: TestServer, headers: Record<string, string> = {}) =>
  fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ query: "{ __typename }" }),
  });

const preflight = (server: TestServer, origin: string) =>
  fetch(`${server.url}/graphql`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
  });

const corsHeadersOf = (response: Response) => [...response.headers.keys()].filter((name) => name.startsWith("access-control-"));

describe("security headers", () => {
  test.each([
    ["GET /health", () => fetch(`${app.url}/health`)],
    ["POST /graphql", () => postGraphQL(app)],
    ["an unknown route", () => fetch(`${app.url}/nowhere`)],
    ["GET /.well-known/jwks.json", () => fetch(`${app.url}/.well-known/jwks.json`)],
  ])("%s carries them, with a CSP that allows nothing", async (_name, request) => {
    const response = await request();
    const headers = Object.fromEntries(response.headers);
    expect(headers).toMatchObject({
      "content-security-policy": "default-src 'none';object-src 'none';base-uri 'none';form-action 'none';frame-ancestors 'none'",
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "strict-transport-security": "max-age=31536000; includeSubDomains",
      "referrer-policy": "no-referrer",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-resource-policy": "same-origin",
      "x-xss-protection": "0",
    });
    expect(headers).not.toHaveProperty("x-powered-by");
  });
});

describe("GraphiQL", () => {
  test("is served at /graphiql outside production, with a CSP that lets Ruru's scripts, workers and sockets run", async () => {
    const response = await fetch(`${app.url}/graphiql`, { headers: { accept: "text/html" } });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await response.text()).toContain("RURU_CONFIG");
    const csp = response.headers.get("content-security-policy")!.split(";");
    const host = new URL(app.url).host;
    expect(csp).toEqual(
      expect.arrayContaining([
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "worker-src 'self'",
        `connect-src 'self' ws://${host} wss://${host}`,
        "frame-ancestors 'none'",
      ]),
    );
    // Its workers run under their own script's policy, so the assets get the same one.
    const asset = await fetch(`${app.url}/ruru-static/ruru.js`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("content-security-policy")).toBe(response.headers.get("content-security-policy"));
  });

  test("is not served at /graphql, whose headers would not let it run", async () => {
    const response = await fetch(`${app.url}/graphql`, { headers: { accept: "text/html" } });
    expect(response.headers.get("content-type")).not.toMatch(/^text\/html/);
  });

  test("is 404 in production (GRAPHIQL defaults off), and so is introspection", async () => {
    const page = await fetch(`${production.url}/graphiql`, { headers: { accept: "text/html" } });
    expect(page.status).toBe(404);
    expect(await page.json()).toEqual({ error: { code: "NOT_FOUND", message: "No such route." } });
    expect((await fetch(`${production.url}/ruru-static/ruru.js`)).status).toBe(404);
    const introspection = await production.graphql("{ __schema { queryType { name } } }");
    expect(introspection.status).toBe(400);
    expect(codeOf(introspection.body)).toBe("BAD_REQUEST");
  });
});

describe("CORS", () => {
  test("a preflight from a configured origin is answered: POST, with Authorization and Content-Type", async () => {
    const response = await preflight(app, frontend);
    expect(response.status).toBe(204);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      "access-control-allow-origin": frontend,
      "access-control-allow-methods": "GET,POST",
      "access-control-allow-headers": "Authorization,Content-Type,X-Request-Id",
      "access-control-max-age": "600",
      vary: expect.stringMatching(/Origin/),
    });
    expect(response.headers.get("access-control-allow-credentials")).toBeNull();
    // Every origin in the list, not only the first.
    expect((await preflight(app, "https://admin.example.com")).headers.get("access-control-allow-origin")).toBe("https://admin.example.com");
  });

  test("a request from a configured origin may read the response and its request id", async () => {
    const response = await postGraphQL(app, { origin: frontend });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe(frontend);
    expect(response.headers.get("access-control-expose-headers")).toBe("X-Request-Id");
  });

  test("a preflight from any other origin is refused (403) with no CORS headers", async () => {
    const response = await preflight(app, foreign);
    expect(response.status).toBe(403);
    expect(corsHeadersOf(response)).toEqual([]);
    expect(await response.json()).toEqual({ error: { code: "FORBIDDEN", message: "This origin may not call the API." } });
  });

  test("a response to another origin, or to a request without Origin, carries no CORS headers", async () => {
    const fromForeign = await postGraphQL(app, { origin: foreign });
    expect(corsHeadersOf(fromForeign)).toEqual([]);
    expect(fromForeign.headers.get("vary")).toMatch(/Origin/);
    const withoutOrigin = await postGraphQL(app);
    expect(withoutOrigin.status).toBe(200);
    expect(corsHeadersOf(withoutOrigin)).toEqual([]);
  });
});

describe("WebSocket upgrades", () => {
  /** Opens a graphql-ws connection, and reports "acknowledged", the refusal's HTTP status, or "closed". */
  function connect(server: TestServer, { origin, path = "/graphql" }: { origin?: string; path?: string } = {}) {
    const socket = new WebSocket(`${server.url.replace("http", "ws")}${path}`, "graphql-transport-ws", origin ? { origin } : {});
    return new Promise<{ outcome: string | number; body?: string }>((resolve) => {
      socket.on("unexpected-response", (_request, response) => {
        let body = "";
        response.on("data", (chunk: Buffer) => (body += chunk.toString()));
        response.on("end", () => resolve({ outcome: response.statusCode ?? 0, body }));
      });
      socket.on("error", () => resolve({ outcome: "closed" }));
      socket.on("open", () => socket.send(JSON.stringify({ type: "connection_init", payload: {} })));
      socket.on("message", (data) => {
        if ((JSON.parse(data.toString()) as { type: string }).type === "connection_ack") resolve({ outcome: "acknowledged" });
      });
    }).finally(() => socket.terminate());
  }

  test("from a foreign Origin is refused with 403 before graphql-ws sees it", async () => {
    const { outcome, body } = await connect(app, { origin: foreign });
    expect(outcome).toBe(403);
    expect(JSON.parse(body!)).toEqual({ error: { code: "FORBIDDEN", message: "This origin may not open a WebSocket here." } });
    expect((await connect(app, { origin: "null" })).outcome).toBe(403);
  });

  test("from a configured Origin, this server's own (GraphiQL), or without Origin (not a browser) is accepted", async () => {
    expect(await connect(app, { origin: frontend })).toEqual({ outcome: "acknowledged" });
    expect(await connect(app, { origin: app.url })).toEqual({ outcome: "acknowledged" });
    expect(await connect(app)).toEqual({ outcome: "acknowledged" });
  });

  test("to any path but /graphql is dropped, whatever the Origin", async () => {
    expect(await connect(app, { path: "/elsewhere" })).toEqual({ outcome: "closed" });
    expect(await connect(app, { origin: frontend, path: "/elsewhere" })).toEqual({ outcome: "closed" });
  });
});
