// References that outlive what they point at (a job keeps its record when its document is deleted) are plain
// foreign keys that a before-delete trigger clears (app_private.tg__clear_references): a sharded PostgreSQL refuses
// `on delete set null` on keys that include org_id. These tests show each kind of delete clears exactly the rows of
// its own organization, even when the person deleting could not update those rows themselves.
import { createTestDatabase, query, type TestDatabase } from "../support/database.ts";
import { beginAs, createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  a = await createTenant(db, "Acme");
  b = await createTenant(db, "Bolt");
});
afterAll(async () => {
  await db?.drop();
});

const count = async (from: string, values: unknown[]) => (await query<{ n: number }>(db.name, `select count(*)::int as n from ${from}`, values, "root"))[0]!.n;

/** Rows of each organization whose `column` is set in `table`. */
const referencing = async (table: string, column: string) => ({
  a: await count(`${table} where org_id = $1 and ${column} is not null`, [a.orgId]),
  b: await count(`${table} where org_id = $1 and ${column} is not null`, [b.orgId]),
});

test("a document deleted for good: its job keeps its record with no document, its usage stays with no summary", async () => {
  const [doc] = await query<{ id: string }>(db.name, "select id from app_public.documents where org_id = $1", [a.orgId], "root");
  expect(await referencing("app_public.jobs", "document_id")).toEqual({ a: 1, b: 1 });
  expect(await referencing("app_public.usage_records", "summary_id")).toEqual({ a: 1, b: 1 });
  // A member moves it to the trash (deleting rows is not theirs: the API role may not delete documents at all) …
  const member = await beginAs(db.name, a.members.member, a.orgId);
  try {
    await member.query("savepoint direct");
    await expect(member.query("delete from app_public.documents where id = $1", [doc!.id])).rejects.toMatchObject({ code: "42501" });
    await member.query("rollback to savepoint direct");
    await member.query("select app_public.delete_document($1)", [doc!.id]);
    await member.query("savepoint own_update");
    await expect(member.query("update app_public.jobs set document_id = null")).rejects.toMatchObject({ code: "42501" });
    await member.query("rollback to savepoint own_update");
    await member.query("commit");
  } finally {
    await member.end();
  }
  expect(await referencing("app_public.jobs", "document_id")).toEqual({ a: 1, b: 1 });
  // … and an admin empties the trash: the trigger clears the job's reference as the owner.
  const admin = await beginAs(db.name, a.members.admin, a.orgId);
  try {
    expect((await admin.query<{ n: number }>("select app_public.empty_trash() as n")).rows).toEqual([{ n: 1 }]);
    await admin.query("commit");
  } finally {
    await admin.end();
  }
  expect(await referencing("app_public.jobs", "document_id")).toEqual({ a: 0, b: 1 });
  expect(await count("app_public.jobs where org_id = $1 and kind = 'summarize'", [a.orgId])).toBe(1);
  // The summary went with its document (cascade); the usage record outlives it.
  expect(await count("app_public.summaries where org_id = $1", [a.orgId])).toBe(0);
  expect(await referencing("app_public.usage_records", "summary_id")).toEqual({ a: 0, b: 1 });
  expect(await count("app_public.usage_records where org_id = $1 and kind = 'summary'", [a.orgId])).toBe(1);
});

test("an admin deletes a template: its versions stay, no longer pointing at it", async () => {
  expect(await referencing("app_public.template_versions", "template_id")).toEqual({ a: 1, b: 1 });
  const client = await beginAs(db.name, a.members.admin, a.orgId);
  try {
    expect((await client.query("delete from app_public.templates")).rowCount).toBe(1);
    await client.query("commit");
  } finally {
    await client.end();
  }
  expect(await referencing("app_public.template_versions", "template_id")).toEqual({ a: 0, b: 1 });
  expect(await count("app_public.template_versions where org_id = $1", [a.orgId])).toBe(1);
});

test("deleting an integration clears its documents' and jobs' references and cascades to its runs", async () => {
  await query(
    db.name,
    `insert into app_public.documents (org_id, title, content, source, external_id, integration_id)
     select org_id, 'Imported', 'From Notion.', 'notion', 'page-1', id from app_public.integrations where org_id = any($1)`,
    [[a.orgId, b.orgId]],
    "root",
  );
  expect(await referencing("app_public.documents", "integration_id")).toEqual({ a: 1, b: 1 });
  expect(await referencing("app_public.jobs", "integration_id")).toEqual({ a: 1, b: 1 });
  expect((await query(db.name, "delete from app_public.integrations where org_id = $1 returning id", [a.orgId])).length).toBe(0);
  // Even the owner role deletes nothing outside a security definer function (RLS is forced); an operator as superuser does.
  await query(db.name, "delete from app_public.integrations where org_id = $1", [a.orgId], "root");
  expect(await referencing("app_public.documents", "integration_id")).toEqual({ a: 0, b: 1 });
  expect(await referencing("app_public.jobs", "integration_id")).toEqual({ a: 0, b: 1 });
  expect(await count("app_public.documents where org_id = $1 and title = 'Imported'", [a.orgId])).toBe(1);
  expect(await count("app_public.integration_sync_runs where org_id = $1", [a.orgId])).toBe(0);
});

test("a plain foreign key still refuses a reference left behind", async () => {
  // With the trigger out of the way the key itself holds: it is checked at the end of the statement.
  await query(db.name, "alter table app_public.documents disable trigger _800_clear_jobs_document_id", [], "root");
  try {
    const [job] = await query<{ document_id: string }>(
      db.name,
      "select document_id from app_public.jobs where org_id = $1 and document_id is not null",
      [b.orgId],
      "root",
    );
    await expect(query(db.name, "delete from app_public.documents where id = $1", [job!.document_id], "root")).rejects.toMatchObject({
      code: "23503",
      constraint: "jobs_org_id_document_id_fkey",
    });
  } finally {
    await query(db.name, "alter table app_public.documents enable trigger _800_clear_jobs_document_id", [], "root");
  }
  expect(await referencing("app_public.jobs", "document_id")).toEqual({ a: 0, b: 1 });
});
