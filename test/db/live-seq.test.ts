// Live events are numbered after commit by the numberer (app_private.number_live_events, run by every API server):
// a transaction that changed a document holds nothing that other writers of its organization wait for, and the
// numbers still come without gaps, each event numbered later having a greater one, each announced on quire_live
// with its number in that order.
import pg from "pg";
import { createTestDatabase, query, roles, rootUrl, type TestDatabase } from "../support/database.ts";
import { beginAs, createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Numbered");
  // The fixture's own events, numbered as a server would.
  await query(db.name, "select app_private.number_live_events(1000)", [], roles.authenticator);
});
afterAll(async () => {
  await db?.drop();
});

/** One run of the numberer, as an API server runs it; how many events it numbered. */
const number = async () => (await query<{ n: number }>(db.name, "select app_private.number_live_events(1000) as n", [], roles.authenticator))[0]!.n;

const eventsOf = async (title: string) =>
  query<{ seq: string | null }>(
    db.name,
    "select e.seq from app_public.live_events e join app_public.documents d on d.id = e.entity_id where d.title = $1",
    [title],
    "root",
  );

test("an open transaction that changed a document does not hold up another writer's commit; events are numbered once committed", async () => {
  const url = new URL(rootUrl());
  url.pathname = `/${db.name}`;
  const listener = new pg.Client({ connectionString: url.toString() });
  await listener.connect();
  const heard: Array<{ seq: number; entityId: string }> = [];
  listener.on("notification", (n) => {
    const event = JSON.parse(n.payload ?? "{}") as { orgId: string; seq: number; entityId: string };
    if (event.orgId === t.orgId) heard.push({ seq: event.seq, entityId: event.entityId });
  });
  await listener.query("listen quire_live");
  const [{ last }] = (await query<{ last: string }>(
    db.name,
    "select coalesce(max(seq), 0) as last from app_public.live_events where org_id = $1",
    [t.orgId],
    "root",
  )) as [{ last: string }];
  const first = await beginAs(db.name, t.members.member, t.orgId);
  const second = await beginAs(db.name, t.members.admin, t.orgId);
  try {
    const { rows: held } = await first.query<{ id: string }>("insert into app_public.documents (title, content) values ('First written', 'x') returning id");
    // Inside its own transaction the event has no number yet.
    expect((await first.query("select seq from app_public.live_events where entity_id = $1", [held[0]!.id])).rows).toEqual([{ seq: null }]);
    await second.query("set local lock_timeout = '1s'");
    const { rows: quick } = await second.query<{ id: string }>("insert into app_public.documents (title, content) values ('Second written', 'x') returning id");
    // Before, this commit waited for the first transaction's counter row until lock_timeout.
    await second.query("commit");
    // Committed but not numbered yet: subscribers hear of it only once it is.
    expect(await eventsOf("Second written")).toEqual([{ seq: null }]);
    expect(await number()).toBe(1);
    await first.query("commit");
    expect(await number()).toBe(1);
    expect(await eventsOf("Second written")).toEqual([{ seq: String(Number(last) + 1) }]);
    expect(await eventsOf("First written")).toEqual([{ seq: String(Number(last) + 2) }]);
    for (let i = 0; i < 50 && heard.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(heard).toEqual([
      { seq: Number(last) + 1, entityId: quick[0]!.id },
      { seq: Number(last) + 2, entityId: held[0]!.id },
    ]);
  } finally {
    for (const client of [first, second]) {
      await client.query("rollback").catch(() => undefined);
      await client.end();
    }
    await listener.end();
  }
});

test("a rolled-back change takes no number: the next committed event follows the last without a gap", async () => {
  const [{ last }] = (await query<{ last: string }>(
    db.name,
    "select coalesce(max(seq), 0) as last from app_public.live_events where org_id = $1",
    [t.orgId],
    "root",
  )) as [{ last: string }];
  const undone = await beginAs(db.name, t.members.member, t.orgId);
  try {
    await undone.query("insert into app_public.documents (title, content) values ('Undone', 'x')");
    await undone.query("rollback");
  } finally {
    await undone.end();
  }
  const kept = await beginAs(db.name, t.members.member, t.orgId);
  try {
    await kept.query("insert into app_public.documents (title, content) values ('Kept', 'x')");
    await kept.query("commit");
  } finally {
    await kept.end();
  }
  expect(await number()).toBe(1);
  expect(await eventsOf("Kept")).toEqual([{ seq: String(Number(last) + 1) }]);
  expect(await eventsOf("Undone")).toEqual([]);
});

test("one numberer at a time: a numberer that finds another at work returns 0 and numbers nothing", async () => {
  const url = new URL(rootUrl());
  url.pathname = `/${db.name}`;
  const busy = new pg.Client({ connectionString: url.toString() });
  await busy.connect();
  try {
    await busy.query("begin");
    await busy.query("select app_private.number_live_events(1)");
    const writer = await beginAs(db.name, t.members.member, t.orgId);
    try {
      await writer.query("insert into app_public.documents (title, content) values ('Waiting', 'x')");
      await writer.query("commit");
    } finally {
      await writer.end();
    }
    expect(await number()).toBe(0);
    expect(await eventsOf("Waiting")).toEqual([{ seq: null }]);
    await busy.query("commit");
  } finally {
    await busy.query("rollback").catch(() => undefined);
    await busy.end();
  }
  expect(await number()).toBe(1);
  expect((await eventsOf("Waiting"))[0]!.seq).not.toBeNull();
});
