// The server's LISTEN connection dies (pg_terminate_backend on it, found by application_name): it reconnects fast
// every time, not ever more slowly, and what happened while it was down still reaches clients once it is back:
// events (for subscriptions open before the loss and those opened during it) and session ends (the socket of a
// session that logged out in the gap is closed).
import WebSocket from "ws";
import { createTestDatabase, query, testConfig, type TestDatabase } from "../support/database.ts";
import { subscribe, type Subscription } from "../support/live.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { createTenant } from "../support/tenants.ts";

/** Reconnects 50 to 100 ms after a loss (and after 100 to 200 ms if that attempt fails…). */
let fastDb: TestDatabase;
let fast: TestServer;
/** Reconnects only 3 to 6 s after a loss, so a test can act while it is surely down. */
let slowDb: TestDatabase;
let slow: TestServer;
beforeAll(async () => {
  fastDb = await createTestDatabase();
  fast = await startTestServer(testConfig(fastDb.name, { LIVE_RECONNECT_BASE_MS: "100", LIVE_RECONNECT_MAX_MS: "1000" }));
  slowDb = await createTestDatabase();
  slow = await startTestServer(testConfig(slowDb.name, { LIVE_RECONNECT_BASE_MS: "6000", LIVE_RECONNECT_MAX_MS: "6000" }));
});
afterAll(async () => {
  await fast?.close();
  await slow?.close();
  await fastDb?.drop();
  await slowDb?.drop();
});

/** The pid of the server's listening LISTEN connection in `db`, waiting up to `ms` for one; null if none. */
async function listenerPid(db: TestDatabase, ms: number): Promise<number | null> {
  const deadline = Date.now() + ms;
  for (;;) {
    const rows = await query<{ pid: number }>(
      db.name,
      "select pid from pg_stat_activity where application_name = 'quire-listener' and datname = current_database() and query like 'listen %quire_live%'",
      [],
      "root",
    );
    if (rows[0]) return rows[0].pid;
    if (Date.now() >= deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
const kill = (db: TestDatabase, pid: number) => query(db.name, "select pg_terminate_backend($1)", [pid], "root");

interface Event {
  seq: string;
  documentId: string | null;
  missedEarlier: boolean;
  document: { title: string } | null;
}
const documentChanged = "subscription ($since: BigInt) { documentChanged(since: $since) { seq documentId missedEarlier document { title } } }";

test("the LISTEN connection comes back quickly after every loss, however many there were", async () => {
  let pid = await listenerPid(fastDb, 5_000);
  expect(pid).not.toBeNull();
  for (let loss = 1; loss <= 5; loss++) {
    await kill(fastDb, pid!);
    // Typically back within 200 ms; the bound leaves room for a loaded machine. A backoff that never resets waits
    // 0.5, 1, 2, 4, 8 s… and misses it by the fourth loss.
    const next = await listenerPid(fastDb, 3_000);
    expect({ loss, back: next !== null && next !== pid }).toEqual({ loss, back: true });
    pid = next;
  }
});

test("events sent and sessions ended while the LISTEN connection is down reach clients once it is back", async () => {
  const t = await createTenant(slowDb, "Gap");
  const graphql = async (token: string, text: string, variables: Record<string, unknown> = {}) => (await slow.graphql(text, variables, token)).body;
  const createDocument = async (title: string) => {
    const body = await graphql(
      t.members.member.accessToken,
      "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { liveSeq document { rowId } } }",
      {
        d: { title, content: "Text." },
      },
    );
    return body.data!.createDocument as { liveSeq: string; document: { rowId: string } };
  };
  // A graphql-ws connection of the admin's session, which will log out in the gap.
  const socket = new WebSocket(slow.url.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const acknowledged = new Promise((resolve) => socket.on("message", (data) => JSON.parse(data.toString()).type === "connection_ack" && resolve(true)));
  await new Promise((resolve) => socket.on("open", resolve));
  socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${t.members.admin.accessToken}` } }));
  await acknowledged;
  socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: "subscription { jobUpdated { seq } }" } }));

  // From a known point, so a subscription the server sets up only after the next write still hears it.
  const zero = await createDocument("Zero");
  const before = subscribe<Event>(slow.url, t.members.viewer.accessToken, documentChanged, { since: zero.liveSeq });
  let during: Subscription<Event> | null = null;
  try {
    // `before` is live: it hears a document created now.
    const first = await createDocument("Before");
    await before.waitFor((e) => e.documentId === first.document.rowId);

    const pid = await listenerPid(slowDb, 5_000);
    await kill(slowDb, pid!);
    expect(await listenerPid(slowDb, 0)).toBeNull();
    // Opened while the connection is down, resuming from the last event it saw.
    during = subscribe<Event>(slow.url, t.members.viewer.accessToken, documentChanged, { since: first.liveSeq });
    await during.waitFor((e) => e.documentId === first.document.rowId);
    const gap = await createDocument("In the gap");
    await graphql(t.members.admin.accessToken, "mutation { logout { success } }");
    // All of that happened while nothing listened.
    expect(await listenerPid(slowDb, 0)).toBeNull();

    expect(await listenerPid(slowDb, 15_000)).not.toBeNull();
    await before.waitFor((e) => e.documentId === gap.document.rowId);
    await during.waitFor((e) => e.documentId === gap.document.rowId);
    expect(await closed).toEqual({ code: 4401, reason: "Session ended" });
    for (const s of [before, during]) {
      expect(s.errors).toEqual([]);
      expect(s.events.some((e) => e.missedEarlier)).toBe(false);
      expect(s.events.find((e) => e.documentId === gap.document.rowId)?.document).toEqual({ title: "In the gap" });
    }
  } finally {
    socket.terminate();
    await before.close();
    await during?.close();
  }
});
