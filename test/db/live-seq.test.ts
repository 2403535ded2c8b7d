// Live-event numbers are given at commit: a transaction that changed a document does not hold up other writers of
// its organization until it ends, and the numbers still follow commit order without gaps, each announced on
// quire_live with its number.
import pg from "pg";
import { createTestDatabase, query, rootUrl, type TestDatabase } from "../support/database.ts";
import { beginAs, createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Numbered");
});
afterAll(async () => {
  await db?.drop();
});

const eventsOf = async (title: string) =>
  query<{ seq: string | null }>(
    db.name,
    "select e.seq from app_public.live_events e join app_public.documents d on d.id = e.entity_id where d.title = $1",
    [title],
    "root",
  );

test("an open transaction that changed a document does not hold up another writer's commit; numbers follow commit order", async () => {
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
  const [{ last }] = (await query<{ last: string }>(db.name, "select coalesce(max(seq), 0) as last from app_public.live_events where org_id = $1", [t.orgId], "root")) as [
    { last: string },
  ];
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
    await first.query("commit");
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
  const [{ last }] = (await query<{ last: string }>(db.name, "select coalesce(max(seq), 0) as last from app_public.live_events where org_id = $1", [t.orgId], "root")) as [
    { last: string },
  ];
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
  expect(await eventsOf("Kept")).toEqual([{ seq: String(Number(last) + 1) }]);
  expect(await eventsOf("Undone")).toEqual([]);
});
