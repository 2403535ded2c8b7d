// API keys for machine clients: created by admins (role at most admin and at most their own), shown once and
// stored as a digest, accepted as a bearer credential for GraphQL, uploads and WebSockets within their organization
// and role, named in the audit log, unable to manage keys or members, and refused on the next request once revoked
// or expired.
import WebSocket from "ws";
import { query } from "../support/database.ts";
import { codeOf, useQuireServer, type GraphQLBody } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const fx = useQuireServer();
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  a = await createTenant(fx.db, "Keyed");
  b = await createTenant(fx.db, "Unkeyed");
});

const keyPattern = /^qk_([0-9a-f]{32})_([0-9a-f]{64})$/;
const create = (token: string, input: Record<string, unknown>) =>
  fx.gql(token, "mutation ($i: CreateApiKeyInput!) { createApiKey(input: $i) { result } }", { i: input });
async function newKey(role: string, name = `key ${role}`): Promise<{ key: string; id: string }> {
  const body = await create(a.members.admin.accessToken, { name, role });
  const key = (body.data?.createApiKey as { result: string } | undefined)?.result;
  if (!key) throw new Error(`createApiKey failed: ${JSON.stringify(body.errors)}`);
  const id = keyPattern.exec(key)![1]!.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
  return { key, id };
}
const revoke = (token: string, id: string) =>
  fx.gql(token, "mutation ($id: UUID!) { revokeApiKey(input: { apiKeyId: $id }) { result { rowId revokedAt } } }", { id });
const http = async (key: string, text: string, variables: Record<string, unknown> = {}) => {
  const response = await fetch(`${fx.app.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ query: text, variables }),
  });
  return { status: response.status, body: (await response.json()) as GraphQLBody };
};

test("an admin creates a key, shown once and stored as a SHA-256 digest; its role is at most admin and at most the creator's", async () => {
  const body = await create(a.members.admin.accessToken, { name: " Deploy bot ", role: "member" });
  const key = (body.data!.createApiKey as { result: string }).result;
  const [, hexId, secret] = keyPattern.exec(key)!;
  const rows = await query<{ name: string; role: string; digest: boolean; row: string }>(
    fx.db.name,
    `select k.name, k.role, k.secret_hash = sha256(convert_to($2, 'UTF8')) as digest, row_to_json(k)::text || row_to_json(s)::text as row
       from app_public.api_keys k join app_private.sessions s on s.org_id = k.org_id and s.id = k.session_id
      where replace(k.id::text, '-', '') = $1`,
    [hexId, secret],
    "root",
  );
  expect(rows).toEqual([{ name: "Deploy bot", role: "member", digest: true, row: expect.any(String) }]);
  expect(rows[0]!.row).not.toContain(secret!);
  // Admins see keys (never a secret); viewers see none.
  const listed = await fx.gql(a.members.admin.accessToken, "{ apiKeys { nodes { name role serviceAccount { isService } } } }");
  const nodes = (listed.data!.apiKeys as { nodes: { name: string }[] }).nodes.filter((k) => k.name !== "Fixture key");
  expect(nodes).toEqual([{ name: "Deploy bot", role: "member", serviceAccount: { isService: true } }]);
  expect((await fx.gql(a.members.viewer.accessToken, "{ apiKeys { totalCount } }")).data).toEqual({ apiKeys: { totalCount: 0 } }); // RLS: admins only
  // Who may create which key.
  expect(codeOf(await create(a.members.member.accessToken, { name: "x", role: "viewer" }))).toBe("FORBIDDEN");
  expect(codeOf(await create(a.members.viewer.accessToken, { name: "x", role: "viewer" }))).toBe("FORBIDDEN");
  expect(codeOf(await create(a.members.owner.accessToken, { name: "x", role: "owner" }))).toBe("FORBIDDEN");
  expect(codeOf(await create(a.members.admin.accessToken, { name: "   ", role: "viewer" }))).toBe("BAD_INPUT");
  expect(codeOf(await create(a.members.admin.accessToken, { name: "old", role: "viewer", expiresAt: "2020-01-01T00:00:00Z" }))).toBe("BAD_INPUT");
  const [{ n }] = (await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.api_keys where name <> 'Fixture key'", [], "root")) as [
    { n: number },
  ];
  expect(n).toBe(1);
});

test("a key is a bearer credential with its role, inside its organization only, and the audit log names it", async () => {
  const member = await newKey("member");
  const created = await http(member.key, 'mutation { createDocument(input: { document: { title: "By key", content: "k" } }) { document { rowId } } }');
  expect(created.status).toBe(200);
  const documentId = (created.body.data!.createDocument as { document: { rowId: string } }).document.rowId;
  const seen = await http(member.key, "{ documents { nodes { title } } currentOrganization { slug } }");
  expect(seen.body.data!.currentOrganization).toEqual({ slug: a.slug });
  expect(JSON.stringify(seen.body.data)).toContain("By key");
  expect(JSON.stringify(seen.body.data)).not.toContain("Unkeyed handbook");
  const viewer = await newKey("viewer");
  expect(codeOf((await http(viewer.key, 'mutation { createDocument(input: { document: { title: "no", content: "no" } }) { document { rowId } } }')).body)).toBe(
    "FORBIDDEN",
  );
  const [{ actor, used }] = (await query<{ actor: string; used: number }>(
    fx.db.name,
    `select (select e.actor_user_id::text from app_public.audit_events e where e.org_id = $1 and e.record_id = $2 and e.action = 'insert') as actor,
            (select count(*)::int from app_public.audit_events e where e.org_id = $1 and e.action = 'api_key_used' and e.record_id = $3) as used`,
    [a.orgId, documentId, member.id],
    "root",
  )) as [{ actor: string; used: number }];
  const [{ user_id }] = (await query<{ user_id: string }>(fx.db.name, "select user_id from app_public.api_keys where id = $1", [member.id], "root")) as [
    { user_id: string },
  ];
  expect(actor).toBe(user_id);
  expect(used).toBe(1);
});

test("keys cannot manage keys or members", async () => {
  const admin = await newKey("admin");
  expect(codeOf((await http(admin.key, 'mutation { createApiKey(input: { name: "child", role: viewer }) { result } }')).body)).toBe("FORBIDDEN");
  const [{ id: membershipId }] = (await query<{ id: string }>(
    fx.db.name,
    "select id from app_public.memberships where org_id = $1 and user_id = $2",
    [a.orgId, a.members.viewer.userId],
    "root",
  )) as [{ id: string }];
  const changed = await http(admin.key, "mutation ($id: UUID!) { changeMemberRole(input: { membershipId: $id, role: member }) { result { role } } }", {
    id: membershipId,
  });
  expect(codeOf(changed.body)).toBe("FORBIDDEN");
  expect(
    codeOf((await http(admin.key, "mutation ($id: UUID!) { endMemberSessions(input: { membershipId: $id }) { result } }", { id: membershipId })).body),
  ).toBe("FORBIDDEN");
  const [{ role }] = (await query<{ role: string }>(fx.db.name, "select role from app_public.memberships where id = $1", [membershipId], "root")) as [
    { role: string },
  ];
  expect(role).toBe("viewer");
  // Nor does anyone change a key's role: it keeps the one it was created with.
  const [{ id: keyMembership }] = (await query<{ id: string }>(
    fx.db.name,
    "select m.id from app_public.memberships m join app_public.api_keys k on k.org_id = m.org_id and k.user_id = m.user_id where k.id = $1",
    [admin.id],
    "root",
  )) as [{ id: string }];
  const promoted = await fx.gql(
    a.members.owner.accessToken,
    "mutation ($id: UUID!) { changeMemberRole(input: { membershipId: $id, role: owner }) { result { role } } }",
    {
      id: keyMembership,
    },
  );
  expect(codeOf(promoted)).toBe("FORBIDDEN");
});

test("a revoked or expired key is refused on its next request; a made-up or malformed one is UNAUTHENTICATED", async () => {
  const revoked = await newKey("viewer");
  expect((await http(revoked.key, "{ currentUser { isService } }")).body.data).toEqual({ currentUser: { isService: true } });
  expect(codeOf(await revoke(a.members.member.accessToken, revoked.id))).toBe("FORBIDDEN");
  expect(codeOf(await revoke(b.members.admin.accessToken, revoked.id))).toBe("NOT_FOUND");
  expect((await revoke(a.members.admin.accessToken, revoked.id)).errors).toBeUndefined();
  // Within the server's cache window: the session check of the request's own transaction refuses it.
  expect(codeOf((await http(revoked.key, "{ currentUser { isService } }")).body)).toBe("UNAUTHENTICATED");

  const expired = await newKey("viewer");
  await query(fx.db.name, "update app_public.api_keys set expires_at = now() - interval '1 second' where id = $1", [expired.id], "root");
  await query(fx.db.name, "update app_private.sessions set expires_at = now() - interval '1 second' where id = $1", [expired.id], "root");
  expect(codeOf((await http(expired.key, "{ currentUser { isService } }")).body)).toBe("UNAUTHENTICATED");

  const madeUp = await http(`qk_${"0".repeat(32)}_${"1".repeat(64)}`, "{ currentUser { email } }");
  expect({ status: madeUp.status, code: codeOf(madeUp.body) }).toEqual({ status: 401, code: "UNAUTHENTICATED" });
  // A key that logs itself out is revoked with its session, so apiKeys never shows it live.
  const selfEnded = await newKey("viewer");
  expect((await http(selfEnded.key, "mutation { logout { success } }")).body.data).toEqual({ logout: { success: true } });
  const [selfRevoked] = await query<{ revoked: boolean }>(
    fx.db.name,
    "select revoked_at is not null as revoked from app_public.api_keys where id = $1",
    [selfEnded.id],
    "root",
  );
  expect(selfRevoked).toEqual({ revoked: true });

  // An operator revokes a key in psql through its service account's address (docs/operations.md).
  const byOperator = await newKey("viewer");
  const email = `api-key-${byOperator.id.replaceAll("-", "")}@keys.quire.invalid`;
  expect(await query(fx.db.name, "select app_admin.revoke_user_sessions($1) as ended", [email])).toEqual([{ ended: 1 }]);
  expect(await query(fx.db.name, "select revoked_at is not null as revoked from app_public.api_keys where id = $1", [byOperator.id], "root")).toEqual([
    { revoked: true },
  ]);
  expect(codeOf((await http(byOperator.key, "{ currentUser { isService } }")).body)).toBe("UNAUTHENTICATED");

  const malformed = await http("qk_short", "{ currentUser { email } }");
  expect({ status: malformed.status, code: codeOf(malformed.body) }).toEqual({ status: 401, code: "UNAUTHENTICATED" });
});

test("a key uploads documents and opens WebSockets, which close when it is revoked", async () => {
  const key = await newKey("member");
  const form = new FormData();
  form.append("file", new Blob(["# Uploaded by a key\n\nBody."], { type: "text/markdown" }), "key.md");
  const uploaded = await fetch(`${fx.app.url}/api/v1/documents/upload`, { method: "POST", headers: { authorization: `Bearer ${key.key}` }, body: form });
  expect(uploaded.status).toBe(201);

  const socket = new WebSocket(fx.app.url.replace("http", "ws") + "/graphql", "graphql-transport-ws");
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const answered = new Promise<unknown>((resolve) =>
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as { type: string; payload?: unknown };
      if (message.type === "connection_ack") socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query: "{ currentUser { isService } }" } }));
      if (message.type === "next") resolve(message.payload);
    }),
  );
  await new Promise((resolve) => socket.on("open", resolve));
  socket.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${key.key}` } }));
  expect(await answered).toEqual({ data: { currentUser: { isService: true } } });
  await revoke(a.members.admin.accessToken, key.id);
  const result = await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve("still open"), 5_000))]);
  expect(result).toEqual({ code: 4401, reason: "Session ended" });
});
