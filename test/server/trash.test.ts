// Document history and the trash over GraphQL, on a real PostgreSQL: every content change keeps the previous
// revision and any of them can be made current again; deleting moves a document to the trash with its summaries
// and files, out of every list, search and live event, until it is restored, emptied or purged after the
// organization's retention. Each step is audited, and another organization can touch none of it.
import { query } from "../support/database.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const fx = useQuireServer();
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  a = await createTenant(fx.db, "Trash Alpha");
  b = await createTenant(fx.db, "Trash Bravo");
});

const create = async (token: string, title: string, content: string) => {
  const body = await fx.gql(token, "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }", {
    d: { title, content },
  });
  expect(body.errors).toBeUndefined();
  return (body.data!.createDocument as { document: { rowId: string } }).document.rowId;
};
const edit = (token: string, id: string, patch: Record<string, unknown>) =>
  fx.gql(token, "mutation ($id: UUID!, $p: DocumentPatch!) { updateDocument(input: { rowId: $id, patch: $p }) { document { revision } } }", {
    id,
    p: patch,
  });
const trash = (token: string, id: string) =>
  fx.gql(token, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { document { rowId trashedAt } } }", { id });
const restore = (token: string, id: string) =>
  fx.gql(token, "mutation ($id: UUID!) { restoreDocument(input: { documentId: $id }) { document { rowId trashedAt } } }", { id });
const see = async (token: string, id: string) =>
  ((await fx.gql(token, "query ($id: UUID!) { document(rowId: $id) { rowId } }", { id })).data as { document: unknown }).document;
const trashed = async (token: string) =>
  (
    (await fx.gql(token, "{ trashedDocuments { nodes { rowId trashedAt trasher { rowId } } } }")).data as {
      trashedDocuments: { nodes: Array<{ rowId: string; trashedAt: string; trasher: { rowId: string } | null }> };
    }
  ).trashedDocuments.nodes;
const auditActions = async (orgId: string, recordId: string) =>
  (
    await query<{ action: string }>(
      fx.db.name,
      "select action from app_public.audit_events where org_id = $1 and record_id = $2 order by append_order",
      [orgId, recordId],
      "root",
    )
  ).map((r) => r.action);
const fixtureDocument = async (t: Tenant) =>
  (await query<{ id: string }>(fx.db.name, "select id from app_public.documents where org_id = $1 and title like '%handbook'", [t.orgId], "root"))[0]!.id;

describe("document history", () => {
  test("each content change keeps the previous revision; a title-only change keeps none", async () => {
    const id = await create(a.members.member.accessToken, "Policy", "v1");
    expect((await edit(a.members.member.accessToken, id, { content: "v2" })).data).toEqual({ updateDocument: { document: { revision: 2 } } });
    expect((await edit(a.members.admin.accessToken, id, { content: "v3" })).data).toEqual({ updateDocument: { document: { revision: 3 } } });
    expect((await edit(a.members.admin.accessToken, id, { title: "Policy (renamed)" })).data).toEqual({ updateDocument: { document: { revision: 3 } } });
    const body = await fx.gql(
      a.members.viewer.accessToken,
      "query ($id: UUID!) { documentRevisions(condition: { documentId: $id }, orderBy: REVISION_DESC) { nodes { revision title content replacer { rowId } } } }",
      {
        id,
      },
    );
    expect(body).toEqual({
      data: {
        documentRevisions: {
          nodes: [
            { revision: 2, title: "Policy", content: "v2", replacer: { rowId: a.members.admin.userId } },
            { revision: 1, title: "Policy", content: "v1", replacer: { rowId: a.members.member.userId } },
          ],
        },
      },
    });
    expect(
      (await fx.gql(b.members.owner.accessToken, "query ($id: UUID!) { documentRevisions(condition: { documentId: $id }) { totalCount } }", { id })).data,
    ).toEqual({ documentRevisions: { totalCount: 0 } });
  });

  test("restoreDocumentRevision makes an old revision current as a new one, audited; others cannot", async () => {
    const id = await create(a.members.member.accessToken, "Runbook", "first");
    expect((await edit(a.members.member.accessToken, id, { content: "second", title: "Runbook v2", format: "plain" })).data).toEqual({
      updateDocument: { document: { revision: 2 } },
    });
    const restoreRevision = (token: string, revision: number, documentId = id) =>
      fx.gql(
        token,
        "mutation ($id: UUID!, $r: Int!) { restoreDocumentRevision(input: { documentId: $id, revision: $r }) { document { revision title content format } } }",
        { id: documentId, r: revision },
      );
    expect(codeOf(await restoreRevision(a.members.viewer.accessToken, 1))).toBe("FORBIDDEN");
    expect(codeOf(await restoreRevision(b.members.owner.accessToken, 1))).toBe("NOT_FOUND");
    expect(codeOf(await restoreRevision(a.members.member.accessToken, 7))).toBe("NOT_FOUND");
    expect(await restoreRevision(a.members.member.accessToken, 1)).toEqual({
      data: { restoreDocumentRevision: { document: { revision: 3, title: "Runbook", content: "first", format: "markdown" } } },
    });
    const [{ n } = { n: 0 }] = await query<{ n: number }>(
      fx.db.name,
      "select count(*)::int as n from app_public.document_revisions where document_id = $1",
      [id],
      "root",
    );
    expect(n).toBe(2);
    const [event] = await query(
      fx.db.name,
      "select actor_user_id, details from app_public.audit_events where record_id = $1 and action = 'document_revision_restored'",
      [id],
      "root",
    );
    expect(event).toEqual({ actor_user_id: a.members.member.userId, details: { restored_revision: 1, revision: 3 } });
  });

  test("a document keeps its newest 100 revisions", async () => {
    const id = await create(a.members.member.accessToken, "Busy", "0");
    await query(
      fx.db.name,
      `do $$ begin for i in 1..105 loop update app_public.documents set content = i::text where id = '${id}'; end loop; end $$`,
      [],
      "root",
    );
    const [row] = await query<{ n: number; oldest: number; newest: number }>(
      fx.db.name,
      "select count(*)::int as n, min(revision) as oldest, max(revision) as newest from app_public.document_revisions where document_id = $1",
      [id],
      "root",
    );
    expect(row).toEqual({ n: 100, oldest: 6, newest: 105 });
  });
});

describe("the trash", () => {
  test("deleting moves a document out of reach: lookups, lists, search, summaries, files, edits and jobs", async () => {
    const id = await fixtureDocument(a);
    const token = a.members.member.accessToken;
    const [file] = await query<{ id: string }>(fx.db.name, "select id from app_public.files where document_id = $1", [id], "root");
    const before = await query(fx.db.name, "select count(*)::int as n from app_public.documents where org_id = $1", [a.orgId], "root");
    const body = await trash(token, id);
    expect((body.data as { deleteDocument: { document: { rowId: string; trashedAt: string } } }).deleteDocument.document.rowId).toBe(id);
    expect(await see(token, id)).toBeNull();
    const listed = (
      await fx.gql(token, '{ documents { nodes { rowId } } findDocuments(search: "handbook") { nodes { rowId } } summaries { nodes { documentId } } }')
    ).data as Record<string, { nodes: Array<Record<string, string>> }>;
    expect(JSON.stringify(listed)).not.toContain(id);
    expect(codeOf(await fx.gql(token, "query ($id: UUID!) { fileDownloadUrl(fileId: $id) { url } }", { id: file!.id }))).toBe("NOT_FOUND");
    expect((await edit(token, id, { content: "edited in the trash" })).data).toEqual({ updateDocument: { document: null } });
    expect(codeOf(await fx.gql(token, "mutation ($id: UUID!) { summarizeDocument(input: { documentId: $id }) { job { rowId } } }", { id }))).toBe("NOT_FOUND");
    expect(codeOf(await trash(token, id))).toBe("NOT_FOUND");
    // The rows are all still there: the trash is not a deletion.
    expect(await query(fx.db.name, "select count(*)::int as n from app_public.documents where org_id = $1", [a.orgId], "root")).toEqual(before);
    expect(await trashed(a.members.viewer.accessToken)).toEqual([{ rowId: id, trashedAt: expect.any(String), trasher: { rowId: a.members.member.userId } }]);
    expect(await trashed(b.members.owner.accessToken)).toEqual([]);
    expect(await auditActions(a.orgId, id)).toContain("document_trashed");
  });

  test("live updates see a trashed document leave (delete) and a restored one come back (insert), nothing in between", async () => {
    const id = await create(a.members.member.accessToken, "Live", "x");
    const events = async () =>
      (
        await query<{ op: string }>(
          fx.db.name,
          "select op from app_public.live_events where org_id = $1 and entity_id = $2 and entity = 'document' order by append_order",
          [a.orgId, id],
          "root",
        )
      ).map((e) => e.op);
    expect(await events()).toEqual(["insert"]);
    await trash(a.members.member.accessToken, id);
    expect(await events()).toEqual(["insert", "delete"]);
    await restore(a.members.member.accessToken, id);
    expect(await events()).toEqual(["insert", "delete", "insert"]);
  });

  test("restoreDocument brings a document back with its summaries and files; another organization cannot", async () => {
    const id = await fixtureDocument(a);
    expect(codeOf(await restore(b.members.owner.accessToken, id))).toBe("NOT_FOUND");
    expect(codeOf(await restore(a.members.viewer.accessToken, id))).toBe("FORBIDDEN");
    expect((await restore(a.members.member.accessToken, id)).data).toEqual({ restoreDocument: { document: { rowId: id, trashedAt: null } } });
    const body = await fx.gql(a.members.viewer.accessToken, "query ($id: UUID!) { document(rowId: $id) { summaries { totalCount } files { totalCount } } }", {
      id,
    });
    expect(body.data).toEqual({ document: { summaries: { totalCount: 1 }, files: { totalCount: 1 } } });
    expect(codeOf(await restore(a.members.member.accessToken, id))).toBe("NOT_FOUND");
    expect(await auditActions(a.orgId, id)).toEqual(expect.arrayContaining(["document_trashed", "document_restored"]));
  });

  test("emptyTrash deletes the trashed documents for good with everything of theirs (admins and owners only)", async () => {
    const id = await create(a.members.member.accessToken, "Doomed", "v1");
    await edit(a.members.member.accessToken, id, { content: "v2" });
    await trash(a.members.member.accessToken, id);
    const bTrashed = await create(b.members.member.accessToken, "Bravo's trash", "kept");
    await trash(b.members.member.accessToken, bTrashed);
    expect(codeOf(await fx.gql(a.members.member.accessToken, "mutation { emptyTrash(input: {}) { deletedCount } }"))).toBe("FORBIDDEN");
    expect(codeOf(await fx.gql(a.members.admin.accessToken, "mutation { emptyTrash(input: { maxCount: 0 }) { deletedCount } }"))).toBe("BAD_INPUT");
    const emptied = (await fx.gql(a.members.admin.accessToken, "mutation { emptyTrash(input: {}) { deletedCount } }")).data as {
      emptyTrash: { deletedCount: number };
    };
    expect(emptied.emptyTrash.deletedCount).toBeGreaterThanOrEqual(1);
    expect(await trashed(a.members.admin.accessToken)).toEqual([]);
    const [left] = await query(
      fx.db.name,
      `select (select count(*)::int from app_public.documents where id = $1) as documents,
              (select count(*)::int from app_public.document_revisions where document_id = $1) as revisions,
              (select count(*)::int from app_public.documents where id = $2) as other`,
      [id, bTrashed],
      "root",
    );
    expect(left).toEqual({ documents: 0, revisions: 0, other: 1 });
    expect(await auditActions(a.orgId, id)).toEqual(expect.arrayContaining(["document_trashed", "delete"]));
    const [event] = await query(fx.db.name, "select details from app_public.audit_events where org_id = $1 and action = 'trash_emptied'", [a.orgId], "root");
    expect(event).toEqual({ details: { documents: emptied.emptyTrash.deletedCount } });
  });

  test("a trashed document does not stop its author, its trasher or its integration from being deleted", async () => {
    const t = await createTenant(fx.db, "Trash Refs");
    const [imported] = await query<{ id: string }>(
      fx.db.name,
      `insert into app_public.documents (org_id, title, content, source, external_id, integration_id, author_id)
       select org_id, 'Imported', 'From Notion.', 'notion', 'page-refs', id, $2 from app_public.integrations where org_id = $1 returning id`,
      [t.orgId, t.members.member.userId],
      "root",
    );
    await trash(t.members.admin.accessToken, imported!.id);
    // What a person edits stays refused in the trash, even for the owner role's bookkeeping …
    await expect(query(fx.db.name, "update app_public.documents set title = 'x' where id = $1", [imported!.id], "root")).rejects.toMatchObject({
      code: "NTFND",
    });
    // … but references other rows clear go through.
    await query(fx.db.name, "delete from app_public.integrations where org_id = $1", [t.orgId], "root");
    await query(fx.db.name, "delete from app_private.sessions where user_id = $1", [t.members.admin.userId], "root");
    await query(fx.db.name, "delete from app_public.memberships where user_id = $1", [t.members.admin.userId], "root");
    await query(fx.db.name, "delete from app_public.api_keys where created_by = $1", [t.members.admin.userId], "root");
    await query(fx.db.name, "delete from app_public.users where id = $1", [t.members.admin.userId], "root");
    const [row] = await query(
      fx.db.name,
      "select integration_id, trashed_by, trashed_at is not null as trashed from app_public.documents where id = $1",
      [imported!.id],
      "root",
    );
    expect(row).toEqual({ integration_id: null, trashed_by: null, trashed: true });
  });

  test("trashing cancels the unfinished publication of the document's summary", async () => {
    const t = await createTenant(fx.db, "Trash Publish");
    const [job] = await query<{ id: string }>(
      fx.db.name,
      `insert into app_public.jobs (org_id, kind, status, integration_id, summary_id, requested_by)
       select s.org_id, 'publish', 'queued', i.id, s.id, $2 from app_public.summaries s join app_public.integrations i on i.org_id = s.org_id
        where s.org_id = $1 returning id`,
      [t.orgId, t.members.member.userId],
      "root",
    );
    await trash(t.members.member.accessToken, await fixtureDocument(t));
    const [after] = await query(fx.db.name, "select status, error_code from app_public.jobs where id = $1", [job!.id], "root");
    expect(after).toEqual({ status: "cancelled", error_code: "DOCUMENT_DELETED" });
  });

  test("revisions count against the organization's storage", async () => {
    const storage = async () =>
      Number(
        ((await fx.gql(b.members.viewer.accessToken, "{ organizationStorage { usedBytes } }")).data as { organizationStorage: { usedBytes: string } })
          .organizationStorage.usedBytes,
      );
    const before = await storage();
    const id = await create(b.members.member.accessToken, "Counted", "x".repeat(1000));
    await edit(b.members.member.accessToken, id, { content: "y" });
    expect(await storage()).toBe(before + 1000);
  });

  test("the scheduled purge deletes what was trashed longer ago than the organization's trashRetentionDays (default 30)", async () => {
    const setRetention = (days: unknown) =>
      fx.gql(
        a.members.admin.accessToken,
        "mutation ($id: UUID!, $s: JSON!) { updateOrganization(input: { rowId: $id, patch: { settings: $s } }) { clientMutationId } }",
        {
          id: a.orgId,
          s: { trashRetentionDays: days },
        },
      );
    for (const bad of [0, 3651, 1.5, "7"]) expect(codeOf(await setRetention(bad))).toBe("BAD_INPUT");
    expect(codeOf(await setRetention(7))).toBeNull();
    const aOld = await create(a.members.member.accessToken, "A old", "x");
    const aRecent = await create(a.members.member.accessToken, "A recent", "x");
    const bOld = await create(b.members.member.accessToken, "B old", "x");
    for (const [t, doc] of [
      [a, aOld],
      [a, aRecent],
      [b, bOld],
    ] as const)
      await trash(t.members.member.accessToken, doc);
    // Eight days ago, as if trashed then (the read-only trigger of trashed documents stays out of this back-dating).
    await query(
      fx.db.name,
      `do $$ begin set local session_replication_role = replica;
         update app_public.documents set trashed_at = now() - interval '8 days' where id in ('${aOld}', '${bOld}'); end $$`,
      [],
      "root",
    );
    const [{ purged } = { purged: -1 }] = await query<{ purged: number }>(fx.db.name, "select app_private.purge_trash(1000) as purged", [], "root");
    expect(purged).toBe(1);
    const [left] = await query<{ ids: string[] }>(
      fx.db.name,
      "select array_agg(id order by title) as ids from app_public.documents where id = any($1)",
      [[aOld, aRecent, bOld]],
      "root",
    );
    expect(left!.ids).toEqual([aRecent, bOld]);
  });
});
