// A refused access token, over HTTP, WebSockets and the upload route: the client learns whether it expired
// (TOKEN_EXPIRED: refresh) or is otherwise invalid (TOKEN_INVALID: sign in again), always with the stable code
// UNAUTHENTICATED; the server's log says exactly why, and never contains the token.
import { Writable } from "node:stream";
import jwt from "jsonwebtoken";
import { createPool } from "../../db/pool.ts";
import { createLogger } from "../../lib/logger.ts";
import { createQuireServer, type QuireServer } from "../../server/app.ts";
import { createTestDatabase, type TestDatabase } from "../support/database.ts";
import { subscribe } from "../support/live.ts";
import { createTenant } from "../support/tenants.ts";

type Line = Record<string, unknown> & { msg?: string };

let db: TestDatabase;
let server: QuireServer;
let pool: ReturnType<typeof createPool>;
let url: string;
let claims: Record<string, unknown>;
const lines: Line[] = [];
const logText: string[] = [];
const secret = "test-secret-that-is-at-least-32-characters-long";

beforeAll(async () => {
  db = await createTestDatabase();
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString().split("\n")) {
        if (!text) continue;
        logText.push(text);
        lines.push(JSON.parse(text) as Line);
      }
      done();
    },
  });
  const logger = createLogger({ level: "info", pretty: false }, destination);
  pool = createPool({ url: db.config.database.url, max: 4, applicationName: "quire-test-server" }, logger);
  server = await createQuireServer({ config: db.config, logger, pool });
  url = `http://127.0.0.1:${(await server.listen(0)).port}`;
  claims = jwt.decode((await createTenant(db, "Refusals")).members.owner.accessToken) as Record<string, unknown>;
});
afterAll(async () => {
  await server?.close(1_000);
  await pool?.end();
  await db?.drop();
});

const now = () => Math.floor(Date.now() / 1000);
const tokens = {
  expired: () => jwt.sign({ ...claims, iat: now() - 3600, exp: now() - 60 }, secret),
  bad_signature: () => jwt.sign(claims, "another-secret-that-is-32-characters-long!"),
  wrong_audience: () => jwt.sign({ ...claims, aud: "someone-else" }, secret),
  wrong_issuer: () => jwt.sign({ ...claims, iss: "evil" }, secret),
  malformed: () => "not.a.jwt",
  bad_claims: () => jwt.sign({ ...claims, role: "superuser" }, secret),
} as const;

const refusalLines = () => lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("access token refused"));

describe.each(Object.entries(tokens))("%s", (refusal, make) => {
  const reason = refusal === "expired" ? "TOKEN_EXPIRED" : "TOKEN_INVALID";

  test("HTTP: 401 UNAUTHENTICATED with its reason, and one log line naming why", async () => {
    const token = make();
    const before = refusalLines().length;
    const response = await fetch(`${url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: "{ currentUser { email } }" }),
    });
    expect(response.status).toBe(401);
    const body = (await response.json()) as { errors: Array<{ extensions: Record<string, unknown> }> };
    expect(body.errors[0]!.extensions).toEqual({ code: "UNAUTHENTICATED", reason });
    const logged = refusalLines().slice(before);
    expect(logged).toEqual([
      expect.objectContaining({ tokenRefusal: refusal, msg: `access token refused: ${refusal}`, level: refusal === "expired" ? 30 : 40 }),
    ]);
    expect(logText.some((text) => text.includes(token))).toBe(false);
  });

  test("WebSocket: the operation is refused with the same code and reason, and logged", async () => {
    const before = refusalLines().length;
    const subscription = subscribe(url, make(), "subscription { jobUpdated { seq } }");
    try {
      const deadline = Date.now() + 10_000;
      while (subscription.errors.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      // graphql-ws reports an operation's refusal as the list of its errors.
      const [error] = subscription.errors.flat() as Array<{ extensions?: Record<string, unknown> }>;
      expect(error?.extensions).toEqual({ code: "UNAUTHENTICATED", reason });
    } finally {
      await subscription.close();
    }
    expect(refusalLines().slice(before)).toEqual([expect.objectContaining({ tokenRefusal: refusal })]);
  });

  test("upload: 401 UNAUTHENTICATED with its reason", async () => {
    const form = new FormData();
    form.append("file", new Blob(["text"]), "a.txt");
    const response = await fetch(`${url}/api/v1/documents/upload`, { method: "POST", headers: { authorization: `Bearer ${make()}` }, body: form });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { error: Record<string, unknown> }).error).toMatchObject({ code: "UNAUTHENTICATED", reason });
  });
});
