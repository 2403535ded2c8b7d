// The audit log through the API: security events from real sign-ins, refreshes and logouts; a denied request that
// rolled back is still recorded, with the response's request id; admins and owners read their organization's log
// with filters, members are refused, and another organization's events never appear; the client address comes
// through trusted proxies only.
import { query } from "../support/database.ts";
import { codeOf, useQuireServer, type TestServer } from "../support/server.ts";
import { createTenant, fixturePassword, type Tenant } from "../support/tenants.ts";

let a: Tenant;
let b: Tenant;
const fx = useQuireServer();
const app = fx.app;
const proxied = fx.server({ TRUSTED_PROXIES: "loopback" });
beforeAll(async () => {
  a = await createTenant(fx.db, "Audited API");
  b = await createTenant(fx.db, "Other API");
}, 60_000);

interface Event {
  action: string;
  table_name: string | null;
  actor_user_id: string | null;
  actor_session_id: string | null;
  details: Record<string, unknown>;
  request_id: string | null;
  client_ip: string | null;
}
const eventsOf = (orgId: string, action: string) =>
  // In the order they happened: seq is only assigned when the sealer chains them, after commit.
  query<Event>(fx.db.name, "select * from app_public.audit_events where org_id = $1 and action = $2 order by occurred_at, seq", [orgId, action], "root");

const auditLog = `query ($action: String, $table: String, $actor: UUID, $since: Datetime, $until: Datetime) {
  auditLog(action: $action, tableName: $table, actorUserId: $actor, since: $since, until: $until) {
    totalCount nodes { orgId action tableName actorUserId changedColumns oldValues newValues details requestId clientIp }
  }
}`;
type LogNode = { orgId: string; action: string; tableName: string | null; actorUserId: string | null; details: Record<string, unknown> };
const readLog = async (token: string, variables: Record<string, unknown> = {}) => {
  const { body } = await app.graphql(auditLog, variables, token);
  return { body, nodes: (body.data?.auditLog as { nodes: LogNode[] } | undefined)?.nodes ?? null };
};

const login = (server: TestServer, email: string, password: string, headers: Record<string, string> = {}) =>
  fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({
      query: "mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken refreshToken } }",
      variables: { e: email, p: password },
    }),
  }).then(
    async (r) =>
      (await r.json()) as { data?: { login: { accessToken: string; refreshToken: string } | null }; errors?: Array<{ extensions?: { code?: string } }> },
  );

describe("security events", () => {
  test("a failed sign-in, a sign-in, a refresh-token reuse and a logout each leave one event", async () => {
    const person = a.members.viewer;
    expect((await login(app, person.email, "wrong password")).errors?.[0]?.extensions?.code).toBe("INVALID_CREDENTIALS");
    expect(await eventsOf(a.orgId, "sign_in_failed")).toEqual([expect.objectContaining({ details: { user_id: person.userId }, client_ip: "127.0.0.1" })]);

    const signedIn = (await login(app, person.email, fixturePassword)).data!.login!;
    const signIns = (await eventsOf(a.orgId, "sign_in")).filter((e) => e.actor_user_id === person.userId && e.client_ip !== null);
    expect(signIns).toEqual([expect.objectContaining({ client_ip: "127.0.0.1", request_id: expect.any(String) })]);

    const first = signedIn.refreshToken;
    const rotated = await app.graphql("mutation ($t: String!) { refreshToken(input: { refreshToken: $t }) { refreshToken } }", { t: first });
    expect(rotated.body.errors).toBeUndefined();
    // Well after the grace window would matter: generation 1 again, when 2 is current, is reuse.
    await query(fx.db.name, "update app_private.sessions set rotated_at = now() - interval '1 hour' where user_id = $1", [person.userId], "root");
    const reused = await app.graphql("mutation ($t: String!) { refreshToken(input: { refreshToken: $t }) { refreshToken } }", { t: first });
    expect(codeOf(reused.body)).toBe("UNAUTHENTICATED");
    expect(await eventsOf(a.orgId, "refresh_reuse")).toEqual([
      expect.objectContaining({ actor_user_id: person.userId, details: { reason: "refresh token reuse" } }),
    ]);

    const again = (await login(app, person.email, fixturePassword)).data!.login!;
    expect((await app.graphql("mutation { logout { success } }", {}, again.accessToken)).body.data).toEqual({ logout: { success: true } });
    expect(await eventsOf(a.orgId, "logout")).toEqual([
      expect.objectContaining({ actor_user_id: person.userId, details: { reason: "logout" }, client_ip: "127.0.0.1" }),
    ]);
  });

  test("a failed sign-in for an address no account has goes to the chain of no organization", async () => {
    const before = await eventsOf("00000000-0000-0000-0000-000000000000", "sign_in_failed");
    await login(app, "nobody-at-all@example.com", "whatever");
    const after = await eventsOf("00000000-0000-0000-0000-000000000000", "sign_in_failed");
    expect(after).toHaveLength(before.length + 1);
    expect(after.at(-1)!.details).toEqual({ email: "nobody-at-all@example.com" });
  });
});

describe("denied and failed requests", () => {
  test("a member's refused role change rolls back but is recorded, with the response's request id", async () => {
    const [membership] = await query<{ id: string }>(
      fx.db.name,
      "select id from app_public.memberships where org_id = $1 and user_id = $2",
      [a.orgId, a.members.viewer.userId],
      "root",
    );
    const response = await fetch(`${app.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${a.members.member.accessToken}`, "x-request-id": "req-denied-42" },
      body: JSON.stringify({
        query: "mutation ($id: UUID!) { changeMemberRole(input: { membershipId: $id, role: owner }) { result { role } } }",
        variables: { id: membership!.id },
      }),
    });
    const body = (await response.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
    expect(body.errors?.[0]?.extensions?.code).toBe("FORBIDDEN");
    const denied = (await eventsOf(a.orgId, "access_denied")).filter((e) => e.request_id === "req-denied-42");
    expect(denied).toEqual([
      expect.objectContaining({
        actor_user_id: a.members.member.userId,
        actor_session_id: a.members.member.sessionId,
        details: { failures: [{ field: "changeMemberRole", code: "FORBIDDEN" }] },
      }),
    ]);
    expect((await eventsOf(a.orgId, "role_change")).filter((e) => e.request_id === "req-denied-42")).toEqual([]);
  });

  test("deleting another organization's document fails as not found and is recorded in the caller's log only", async () => {
    const [document] = await query<{ id: string }>(fx.db.name, "select id from app_public.documents where org_id = $1 limit 1", [b.orgId], "root");
    const bBefore = await query(fx.db.name, "select count(*)::int as n from app_public.audit_events where org_id = $1", [b.orgId], "root");
    const { body } = await app.graphql(
      "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { clientMutationId } }",
      { id: document!.id },
      a.members.owner.accessToken,
    );
    expect(codeOf(body)).toBe("NOT_FOUND");
    expect((await eventsOf(a.orgId, "request_failed")).at(-1)!.details).toEqual({ failures: [{ field: "deleteDocument", code: "NOT_FOUND" }] });
    expect(await query(fx.db.name, "select count(*)::int as n from app_public.audit_events where org_id = $1", [b.orgId], "root")).toEqual(bBefore);
  });
});

describe("reading the log", () => {
  test("owners and admins read their organization's events, filtered; members and viewers are refused", async () => {
    const all = await readLog(a.members.owner.accessToken);
    expect(all.body.errors).toBeUndefined();
    expect(all.nodes!.length).toBeGreaterThan(5);
    expect(new Set(all.nodes!.map((n) => n.orgId))).toEqual(new Set([a.orgId]));

    const inserts = await readLog(a.members.admin.accessToken, { action: "insert", table: "documents" });
    expect(inserts.nodes!.length).toBeGreaterThan(0);
    expect(inserts.nodes!.every((n) => n.action === "insert" && n.tableName === "documents")).toBe(true);

    const byMember = await readLog(a.members.owner.accessToken, { actor: a.members.member.userId });
    expect(byMember.nodes!.length).toBeGreaterThan(0);
    expect(byMember.nodes!.every((n) => n.actorUserId === a.members.member.userId)).toBe(true);

    const future = await readLog(a.members.owner.accessToken, { since: new Date(Date.now() + 3_600_000).toISOString() });
    expect(future.nodes).toEqual([]);
    const past = await readLog(a.members.owner.accessToken, { until: "2000-01-01T00:00:00Z" });
    expect(past.nodes).toEqual([]);

    for (const role of ["member", "viewer"] as const) {
      const refused = await readLog(a.members[role].accessToken);
      expect(codeOf(refused.body)).toBe("FORBIDDEN");
    }
    expect(codeOf((await readLog("")).body)).toBe("FORBIDDEN");
  });
});

describe("client address", () => {
  test("X-Forwarded-For is believed only from a trusted proxy", async () => {
    const person = a.members.admin;
    await login(app, person.email, "wrong", { "x-forwarded-for": "198.51.100.1" });
    await login(proxied, person.email, "wrong", { "x-forwarded-for": "198.51.100.2" });
    const ips = (await eventsOf(a.orgId, "sign_in_failed")).slice(-2).map((e) => e.client_ip);
    expect(ips).toEqual(["127.0.0.1", "198.51.100.2"]);
  });
});
