// Sessions a person can see and end: mySessions lists their live sessions (where and with what each was opened,
// the current one marked), endSession ends one of them, an admin ends a member's sessions, and a session idle longer
// than SESSION_IDLE_SECONDS ends at its next refresh.
import { createHash } from "node:crypto";
import pg from "pg";
import { query, roles, urlFor } from "../support/database.ts";
import { codeOf, useQuireServer, type GraphQLBody } from "../support/server.ts";
import { createTenant, fixturePassword, membershipIdOf, type Tenant } from "../support/tenants.ts";

const idleSeconds = 3600;
const fx = useQuireServer({ env: { BCRYPT_COST: "10", SESSION_IDLE_SECONDS: String(idleSeconds) } });
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  a = await createTenant(fx.db, "Seen");
  b = await createTenant(fx.db, "Other");
});

interface SignedIn {
  accessToken: string;
  refreshToken: string;
  sessionId: string;
}
interface Listed {
  rowId: string;
  organizationName: string;
  clientIp: string | null;
  userAgent: string | null;
  isCurrent: boolean;
}

/** POSTs to the server with a User-Agent of our choosing (fx.gql sends Node's own). */
async function post(text: string, variables: Record<string, unknown>, token: string | null, userAgent = "QuireTest/1.0 (sessions)"): Promise<GraphQLBody> {
  const response = await fetch(`${fx.app.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": userAgent, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query: text, variables }),
  });
  return (await response.json()) as GraphQLBody;
}

async function signIn(email: string, userAgent?: string): Promise<SignedIn> {
  const body = await post(
    "mutation ($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }",
    { i: { email, password: fixturePassword } },
    null,
    userAgent,
  );
  const login = body.data!.login as { accessToken: string; refreshToken: string };
  return { ...login, sessionId: login.refreshToken.split(".")[0]! };
}

const list = async (token: string) => {
  const body = await post("{ mySessions { nodes { rowId organizationName clientIp userAgent isCurrent } } }", {}, token);
  return body.data ? (body.data.mySessions as { nodes: Listed[] }).nodes : body;
};
const endSession = (token: string, sessionId: string) =>
  post("mutation ($id: UUID!) { endSession(input: { sessionId: $id }) { result } }", { id: sessionId }, token);
const endMemberSessions = (token: string, membershipId: string) =>
  post("mutation ($id: UUID!) { endMemberSessions(input: { membershipId: $id }) { result } }", { id: membershipId }, token);
const refresh = (refreshToken: string) =>
  post("mutation ($t: String!) { refreshToken(input: { refreshToken: $t }) { accessToken } }", { t: refreshToken }, null);
const whoAmI = (token: string) => post("{ currentUser { email } }", {}, token);
const live = async (sessionId: string) =>
  (await query<{ live: boolean }>(fx.db.name, "select revoked_at is null as live from app_private.sessions where id = $1", [sessionId], "root"))[0]!.live;
const membershipOf = (t: Tenant, role: "owner" | "admin" | "member" | "viewer") => membershipIdOf(fx.db, t, role);

test("mySessions lists the person's live sessions with address and user agent, the current one marked, and nobody else's", async () => {
  const first = await signIn(a.members.viewer.email, "Laptop/1.0");
  const second = await signIn(a.members.viewer.email, "x".repeat(300));
  const seen = await list(first.accessToken);
  expect(Array.isArray(seen)).toBe(true);
  const byId = new Map((seen as Listed[]).map((s) => [s.rowId, s]));
  expect(byId.get(first.sessionId)).toEqual({
    rowId: first.sessionId,
    organizationName: "Seen",
    clientIp: "127.0.0.1",
    userAgent: "Laptop/1.0",
    isCurrent: true,
  });
  expect(byId.get(second.sessionId)).toMatchObject({ isCurrent: false, userAgent: "x".repeat(256) });
  // The fixture's own session of this person is listed too; nobody else's is.
  expect([...byId.keys()].sort()).toEqual([a.members.viewer.sessionId, first.sessionId, second.sessionId].sort());
  // Signed out, the function is not even granted.
  expect(codeOf(await post("{ mySessions { nodes { rowId } } }", {}, null))).toBe("FORBIDDEN");
});

test("endSession ends one of the caller's sessions at once; another person's is NOT_FOUND and stays live", async () => {
  const keep = await signIn(a.members.member.email);
  const end = await signIn(a.members.member.email);
  expect(codeOf(await endSession(keep.accessToken, b.members.member.sessionId))).toBe("NOT_FOUND");
  expect(codeOf(await endSession(keep.accessToken, a.members.owner.sessionId))).toBe("NOT_FOUND");
  expect(await live(b.members.member.sessionId)).toBe(true);
  expect(await live(a.members.owner.sessionId)).toBe(true);

  expect((await endSession(keep.accessToken, end.sessionId)).data).toEqual({ endSession: { result: true } });
  expect(await live(end.sessionId)).toBe(false);
  expect(codeOf(await whoAmI(end.accessToken))).toBe("UNAUTHENTICATED");
  expect(codeOf(await refresh(end.refreshToken))).toBe("UNAUTHENTICATED");
  expect(codeOf(await endSession(keep.accessToken, end.sessionId))).toBe("NOT_FOUND");
  expect((await whoAmI(keep.accessToken)).data).toEqual({ currentUser: { email: a.members.member.email } });
  const events = await query(
    fx.db.name,
    "select action, details from app_public.audit_events where org_id = $1 and actor_session_id = $2 and action <> 'sign_in'",
    [a.orgId, end.sessionId],
    "root",
  );
  expect(events).toEqual([{ action: "session_ended", details: { reason: "ended by user" } }]);
});

test("an admin ends a member's sessions in the organization, not an owner's; a member ends nobody's", async () => {
  const target = await signIn(b.members.member.email);
  const admin = await signIn(b.members.admin.email);
  const member = await signIn(b.members.viewer.email);
  expect(codeOf(await endMemberSessions(member.accessToken, await membershipOf(b, "admin")))).toBe("FORBIDDEN");
  expect(codeOf(await endMemberSessions(admin.accessToken, await membershipOf(b, "owner")))).toBe("FORBIDDEN");
  expect(codeOf(await endMemberSessions(admin.accessToken, await membershipOf(a, "member")))).toBe("NOT_FOUND");
  expect(await live(b.members.owner.sessionId)).toBe(true);
  expect(await live(a.members.member.sessionId)).toBe(true);

  // The member's two live sessions: the fixture's and the one signed in above.
  expect((await endMemberSessions(admin.accessToken, await membershipOf(b, "member"))).data).toEqual({ endMemberSessions: { result: 2 } });
  expect(codeOf(await whoAmI(target.accessToken))).toBe("UNAUTHENTICATED");
  expect(await live(b.members.member.sessionId)).toBe(false);
  // The admin is the actor; the details name whose session it was.
  const [event] = await query<{ action: string; actor: string; details: Record<string, unknown> }>(
    fx.db.name,
    "select action, actor_user_id::text as actor, details from app_public.audit_events where org_id = $1 and details->>'session_id' = $2",
    [b.orgId, target.sessionId],
    "root",
  );
  expect(event).toEqual({
    action: "session_ended",
    actor: b.members.admin.userId,
    details: { reason: "ended by an admin", session_user_id: b.members.member.userId, session_id: target.sessionId },
  });
});

test("a job acting for a person cannot list or end their sessions", async () => {
  // A queued job of organization A requested by A's member, and its token: the worker's context for that job.
  const token = "job-context-token";
  const [{ id: jobId }] = (await query<{ id: string }>(
    fx.db.name,
    "insert into app_public.jobs (org_id, kind, status, requested_by) values ($1, 'import', 'queued', $2) returning id",
    [a.orgId, a.members.member.userId],
    "root",
  )) as [{ id: string }];
  await query(
    fx.db.name,
    "insert into app_private.job_tokens (org_id, job_id, token_hash) values ($1, $2, sha256(convert_to($3, 'UTF8')))",
    [a.orgId, jobId, token],
    "root",
  );
  /** Runs `text` in the job's context, as the worker does: the authenticator, its job settings, the API role. */
  const asJob = async (text: string) => {
    const client = new pg.Client({ connectionString: urlFor(roles.authenticator, fx.db.name) });
    await client.connect();
    try {
      await client.query("begin");
      await client.query("select set_config('quire.job_id', $1, true), set_config('quire.job_token', $2, true)", [jobId, token]);
      await client.query(`set local role ${roles.authenticated}`);
      return (await client.query<{ n: number }>(text)).rows;
    } finally {
      await client.end();
    }
  };
  expect(await asJob("select count(*)::int as n from app_public.my_sessions()")).toEqual([{ n: 0 }]);
  await expect(asJob(`select app_public.end_session('${b.members.member.sessionId}')`)).rejects.toMatchObject({ code: "LOGIN" });
  await expect(asJob(`select app_public.end_session('${a.members.member.sessionId}')`)).rejects.toMatchObject({ code: "LOGIN" });
  expect(await live(a.members.member.sessionId)).toBe(true);
});

test("a session whose refresh token goes unused longer than SESSION_IDLE_SECONDS ends at its next refresh", async () => {
  const active = await signIn(a.members.admin.email);
  const idle = await signIn(a.members.admin.email);
  expect((await refresh(active.refreshToken)).errors).toBeUndefined();
  await query(fx.db.name, "update app_private.clock set offset_by = make_interval(secs => $1)", [idleSeconds - 60], "root");
  try {
    // Used within the window: still live (its clock restarts at this refresh).
    const next = await signIn(a.members.admin.email);
    expect((await refresh(next.refreshToken)).errors).toBeUndefined();
    await query(fx.db.name, "update app_private.clock set offset_by = make_interval(secs => $1)", [idleSeconds + 60], "root");
    expect(codeOf(await refresh(idle.refreshToken))).toBe("UNAUTHENTICATED");
  } finally {
    await query(fx.db.name, "update app_private.clock set offset_by = interval '0'", [], "root");
  }
  const [row] = await query(fx.db.name, "select revoked_reason from app_private.sessions where id = $1", [idle.sessionId], "root");
  expect(row).toEqual({ revoked_reason: "idle" });
});

test("servers of the previous release, calling refresh_session with five arguments during a deploy, still refresh", async () => {
  const session = await signIn(a.members.owner.email);
  const [sid, generation] = session.refreshToken.split(".");
  const digest = (text: string) => createHash("sha256").update(text).digest();
  const rows = await query<{ outcome: string }>(
    fx.db.name,
    "select outcome from app_private.refresh_session($1, $2, $3, $4, $5)",
    [sid, Number(generation), digest(session.refreshToken), digest("a next token"), 10],
    roles.authenticator,
  );
  expect(rows).toEqual([{ outcome: "rotated" }]);
});
