// A session's end closes its open WebSocket connections (code 4401), on every server instance, and so does the
// expiry of the token the connection authenticated with.
import jwt from "jsonwebtoken";
import WebSocket from "ws";
import { useQuireServer, type TestServer } from "../support/server.ts";
import { createTenant } from "../support/tenants.ts";

const fx = useQuireServer();
const a = fx.app;
const b = fx.server();

/** Opens a graphql-ws connection to `server` with `token`, runs one query, and reports how the connection closes. */
async function connect(server: TestServer, token: string) {
  const socket = new WebSocket(server.url.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const answered = new Promise<unknown>((resolve) =>
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as { type: string; payload?: unknown };
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: "{ currentUser { email } }" } }));
      }
      if (message.type === "next") resolve(message.payload);
    }),
  );
  await new Promise((resolve) => socket.on("open", resolve));
  socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${token}` } }));
  return { answer: await answered, closed, socket };
}

const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms))]);

test("logout on one instance closes the session's connection on another, and only that session's", async () => {
  const t = await createTenant(fx.db, "Live");
  const mine = await connect(b, t.members.member.accessToken);
  const theirs = await connect(b, t.members.viewer.accessToken);
  expect(mine.answer).toEqual({ data: { currentUser: { email: t.members.member.email } } });
  await fetch(`${a.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${t.members.member.accessToken}` },
    body: JSON.stringify({ query: "mutation { logout { success } }" }),
  });
  expect(await within(mine.closed, 5_000)).toEqual({ code: 4401, reason: "Session ended" });
  expect(theirs.socket.readyState).toBe(WebSocket.OPEN);
  theirs.socket.terminate();
});

test("a connection closes when its access token expires", async () => {
  const t = await createTenant(fx.db, "Expiring");
  const claims = jwt.decode(t.members.admin.accessToken) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  const shortLived = jwt.sign({ ...claims, iat: now, exp: now + 2 }, fx.db.config.jwt.secret, { algorithm: "HS256" });
  const connection = await connect(a, shortLived);
  expect(connection.answer).toEqual({ data: { currentUser: { email: t.members.admin.email } } });
  expect(await within(connection.closed, 5_000)).toEqual({ code: 4401, reason: "Access token expired" });
});
