// Documents through GraphQL: Unicode round trips, refused bytes and sizes, revision and hash kept by the database,
// the role matrix, and filtered, ranked full-text search that never leaves the organization.
import type pg from "pg";
import { query } from "../support/database.ts";
import { codeOf, useQuireServer, type GraphQLBody } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let t: Tenant;
const maxBytes = 4096;
const fx = useQuireServer({ env: { DOCUMENT_MAX_BYTES: String(maxBytes) } });
beforeAll(async () => {
  t = await createTenant(fx.db, "Docs");
});

const { gql } = fx;
interface Doc {
  rowId: string;
  title: string;
  content: string;
  revision: number;
  contentHash: string;
}
const fields = "rowId title content revision contentHash";
const create = (token: string, document: Record<string, unknown>) =>
  gql(token, `mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { ${fields} } } }`, { d: document });
const update = (token: string, rowId: string, patch: Record<string, unknown>) =>
  gql(token, `mutation ($id: UUID!, $p: DocumentPatch!) { updateDocument(input: { rowId: $id, patch: $p }) { document { ${fields} } } }`, {
    id: rowId,
    p: patch,
  });

describe("content", () => {
  test("any Unicode round-trips byte for byte", async () => {
    const text = "emoji 👩🏽‍💻🇫🇷, RTL שלום مرحبا, CJK 漢字かなカナ한국어, combining é ñ̃ Z̤͔ͧ̑̓, astral 𝕳𝖊𝖑𝖑𝖔 𓀀 🀄, tab\tand\nnewline";
    const body = await create(t.members.member.accessToken, { title: "Ünïcødé 😀", content: text });
    const doc = (body.data!.createDocument as { document: Doc }).document;
    expect(doc.content).toBe(text);
    expect(Buffer.from(doc.content, "utf8").equals(Buffer.from(text, "utf8"))).toBe(true);
    const [stored] = await query<{ content: string; hash: string }>(
      fx.db.name,
      "select content, content_hash as hash from app_public.documents where id = $1",
      [doc.rowId],
      "root",
    );
    expect(stored!.content).toBe(text);
    expect(doc.contentHash).toBe(stored!.hash);
  });

  test("a NUL byte is BAD_INPUT and stores nothing", async () => {
    const [before] = await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.documents", [], "root");
    const body = await create(t.members.member.accessToken, { title: "nul", content: "a\u0000b" });
    expect(codeOf(body)).toBe("BAD_INPUT");
    expect(body.data?.createDocument).toBeNull();
    expect(await query(fx.db.name, "select count(*)::int as n from app_public.documents", [], "root")).toEqual([before]);
  });

  test("content over DOCUMENT_MAX_BYTES (counted in UTF-8 bytes) is TOO_LARGE", async () => {
    expect(codeOf(await create(t.members.member.accessToken, { title: "big", content: "é".repeat(maxBytes / 2 + 1) }))).toBe("TOO_LARGE");
    expect(codeOf(await create(t.members.member.accessToken, { title: "fits", content: "é".repeat(maxBytes / 2) }))).toBeNull();
  });

  test("revision counts content changes; the hash follows the content; clients set neither", async () => {
    const created = (await create(t.members.member.accessToken, { title: "Rev", content: "one" })).data!.createDocument as { document: Doc };
    expect(created.document.revision).toBe(1);
    const retitled = (await update(t.members.member.accessToken, created.document.rowId, { title: "Rev 2" })).data!.updateDocument as { document: Doc };
    expect(retitled.document).toMatchObject({ revision: 1, contentHash: created.document.contentHash });
    const edited = (await update(t.members.member.accessToken, created.document.rowId, { content: "two" })).data!.updateDocument as { document: Doc };
    expect(edited.document.revision).toBe(2);
    expect(edited.document.contentHash).not.toBe(created.document.contentHash);
    expect(codeOf(await update(t.members.member.accessToken, created.document.rowId, { revision: 99 }))).toBe("BAD_REQUEST");
  });
});

test("a request body that is not valid UTF-8 is BAD_INPUT and stores nothing", async () => {
  const [before] = await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.documents", [], "root");
  const json = Buffer.from(JSON.stringify({ query: 'mutation { createDocument(input: { document: { title: "BADBYTES" } }) { document { rowId } } }' }));
  const at = json.indexOf("BADBYTES");
  const body = Buffer.concat([json.subarray(0, at), Buffer.from([0xc3, 0x28, 0xff]), json.subarray(at + 3)]);
  const response = await fetch(`${fx.app.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${t.members.member.accessToken}` },
    body,
  });
  expect(response.status).toBe(400);
  expect(await response.json()).toEqual({ errors: [{ message: "The request body is not valid UTF-8.", extensions: { code: "BAD_INPUT" } }] });
  expect(await query(fx.db.name, "select count(*)::int as n from app_public.documents", [], "root")).toEqual([before]);
});

describe("roles", () => {
  test("a viewer reads but cannot create, edit or delete; a member can", async () => {
    const viewer = t.members.viewer.accessToken;
    expect(codeOf(await create(viewer, { title: "nope" }))).toBe("FORBIDDEN");
    const doc = ((await create(t.members.member.accessToken, { title: "Shared" })).data!.createDocument as { document: Doc }).document;
    expect((await gql(viewer, "query ($id: UUID!) { document(rowId: $id) { title } }", { id: doc.rowId })).data).toEqual({ document: { title: "Shared" } });
    expect(await update(viewer, doc.rowId, { title: "Hacked" })).toEqual({ data: { updateDocument: { document: null } } });
    expect(codeOf(await gql(viewer, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { clientMutationId } }", { id: doc.rowId }))).toBe(
      "FORBIDDEN",
    );
    expect(
      (
        await gql(t.members.member.accessToken, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { document { rowId } } }", {
          id: doc.rowId,
        })
      ).data,
    ).toEqual({ deleteDocument: { document: { rowId: doc.rowId } } });
  });
});

describe("findDocuments", () => {
  const find = (token: string, args: string) => gql(token, `{ findDocuments(${args}) { nodes { title } } }`);
  const titles = (body: GraphQLBody) => (body.data!.findDocuments as { nodes: Array<{ title: string }> }).nodes.map((n) => n.title);

  test("ranks title matches above content matches, filters, and never returns another organization's documents", async () => {
    const other = await createTenant(fx.db, "Other Docs");
    const member = t.members.member.accessToken;
    await create(member, { title: "Quarterly planning", content: "Budget and hiring." });
    await create(member, { title: "Meeting notes", content: "We discussed quarterly planning at length.", format: "plain" });
    await create(other.members.member.accessToken, { title: "Quarterly planning of the other org", content: "secret" });

    expect(titles(await find(member, 'search: "quarterly planning"'))).toEqual(["Quarterly planning", "Meeting notes"]);
    expect(titles(await find(member, 'search: "quarterly -budget"'))).toEqual(["Meeting notes"]);
    expect(titles(await find(member, 'search: "planning", format: plain'))).toEqual(["Meeting notes"]);
    expect(titles(await find(member, 'titleContains: "MEETING"'))).toEqual(["Meeting notes"]);
    expect(titles(await find(member, 'search: "secret"'))).toEqual([]);
    expect(titles(await find(member, 'titleContains: "50%_\\\\"'))).toEqual([]);
    const future = new Date(Date.now() + 86_400_000).toISOString();
    expect(titles(await find(member, `createdAfter: "${future}"`))).toEqual([]);
  });

  test("the search index leads with org_id", async () => {
    const [index] = await query<{ def: string }>(
      fx.db.name,
      "select indexdef as def from pg_indexes where indexname = 'documents_org_id_search_idx'",
      [],
      "root",
    );
    expect(index!.def).toMatch(/USING gin \(org_id, search\)/);
  });
});

describe("cost", () => {
  test("a documents list is one transaction of 3 round trips: begin with its settings, the select, commit", async () => {
    const list =
      "{ documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId title createdAt summaries(first: 1, orderBy: CREATED_AT_DESC) { nodes { content } } } } }";
    // Warm: the first request of a user in a window waits for one rate-limit sync.
    expect((await gql(t.members.member.accessToken, list)).errors).toBeUndefined();
    // The statements of each checkout from the server's pool while the request runs. Observed through the pool's
    // "acquire" event, not by replacing pool.connect, whose callback form pool.query (the rate-limit sync) uses.
    const checkouts: string[][] = [];
    const recording = new Map<pg.PoolClient, string[]>();
    const onAcquire = (client: pg.PoolClient) => {
      const statements: string[] = [];
      checkouts.push(statements);
      if (!recording.has(client)) {
        const original = client.query.bind(client) as (...args: unknown[]) => unknown;
        (client as { query: unknown }).query = (...args: unknown[]) => {
          const text = typeof args[0] === "string" ? args[0] : (args[0] as { text?: string } | undefined)?.text;
          if (text) recording.get(client)?.push(text);
          return original(...args);
        };
      }
      recording.set(client, statements);
    };
    fx.app.pool.on("acquire", onAcquire);
    try {
      expect((await gql(t.members.member.accessToken, list)).errors).toBeUndefined();
    } finally {
      fx.app.pool.off("acquire", onAcquire);
      for (const client of recording.keys()) recording.set(client, []);
    }
    // The instance's periodic rate-limit sync and live-event numberer may run meanwhile on clients of their own: they
    // are not the request's.
    const request = checkouts.filter((statements) => !statements.every((text) => /sync_rate_limits|number_live_events/.test(text)));
    const sent = request.flat();
    // begin and the settings (and, on a connection new to PostGraphile, its JIT setting) travel as one message.
    expect(sent).toHaveLength(3);
    expect(sent[0]).toMatch(/^(set jit_optimize_above_cost = -1; )?begin; select set_config\('role', /);
    expect(sent[2]).toBe("commit");
    expect(sent.filter((text) => /take_request|sync_rate_limits/.test(text))).toHaveLength(0);
  });
});

describe("identity", () => {
  // The table's key is (org_id, id) for sharding; the API keys documents by id alone (server/tenant-keys-plugin.ts).
  test("a node id names the type and the row id alone, and node() and document(rowId:) find the same row", async () => {
    const token = t.members.member.accessToken;
    const body = await gql(token, `mutation { createDocument(input: { document: { title: "Keyed", content: "k" } }) { document { id rowId } } }`);
    const { id, rowId } = (body.data!.createDocument as { document: { id: string; rowId: string } }).document;
    expect(JSON.parse(Buffer.from(id, "base64").toString("utf8"))).toEqual(["Document", rowId]);
    const found = await gql(token, `query ($id: ID!, $rowId: UUID!) { node(id: $id) { id } document(rowId: $rowId) { id } }`, { id, rowId });
    expect(found.data).toEqual({ node: { id }, document: { id } });
  });
});
