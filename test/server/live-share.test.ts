// Shared subscription re-reads (server/shared-reads.ts): subscribers of one organization and role share one
// transaction per batch of reads, with the payloads each would have read alone; organizations and roles never
// share; a role claim gone stale or a session that ended never gets the shared rows.
import { randomUUID } from "node:crypto";
import { createTokenService, type MemberRole } from "../../lib/tokens.ts";
import { pgSettingsFor } from "../../server/context.ts";
import { makeWithPgClient } from "../../server/pg-client.ts";
import { endedSessionsIn, sharedReadCounts, shareReads } from "../../server/shared-reads.ts";
import { query, testConfig } from "../support/database.ts";
import { subscribe, type Subscription } from "../support/live.ts";
import { useQuireServer } from "../support/server.ts";
import { createTenant, type Member, type Tenant } from "../support/tenants.ts";

const fx = useQuireServer();
const app = fx.app;

/** Another person of `tenant` with `role`, signed in (their own session and token). */
async function addMember(tenant: Tenant, role: MemberRole): Promise<Member> {
  const email = `${randomUUID().slice(0, 8)}@${tenant.slug}.example`;
  const [user] = await query<{ id: string }>(
    fx.db.name,
    "insert into app_public.users (email, full_name) values ($1, $2) returning id",
    [email, `${tenant.slug} ${role}`],
    "root",
  );
  await query(fx.db.name, "insert into app_public.memberships (org_id, user_id, role) values ($1, $2, $3)", [tenant.orgId, user!.id, role], "root");
  const sessionId = randomUUID();
  await query(
    fx.db.name,
    "insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at) values ($1, $2, $3, sha256($4::bytea), now() + interval '1 day')",
    [sessionId, user!.id, tenant.orgId, Buffer.from(sessionId)],
    "root",
  );
  const { token } = createTokenService(fx.db.config).signAccessToken({ sessionId, userId: user!.id, orgId: tenant.orgId, role });
  return { userId: user!.id, email, role, sessionId, accessToken: token };
}

interface Event {
  seq: string;
  documentId: string | null;
  document: { title: string; orgId: string; author: { fullName: string } | null; org: { invitationsByOrgId: { totalCount: number } } } | null;
}
const documentChanged = `subscription ($since: BigInt) { documentChanged(since: $since) {
  seq documentId document { title orgId author { fullName } org { invitationsByOrgId { totalCount } } } } }`;

async function createDocument(member: Member, title: string) {
  const { body } = await app.graphql(
    "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { liveSeq document { rowId } } }",
    { d: { title, content: "Text." } },
    member.accessToken,
  );
  const created = body.data?.createDocument as { liveSeq: string; document: { rowId: string } } | undefined;
  if (!created) throw new Error(`createDocument failed: ${JSON.stringify(body.errors)}`);
  return created;
}

/** Subscriptions of `members`, each live and past the replay of a document created for the purpose. */
async function subscribed(tenant: Tenant, members: Member[]): Promise<Array<Subscription<Event>>> {
  const zero = await createDocument(tenant.members.member, "Zero");
  const subs = members.map((m) => subscribe<Event>(app.url, m.accessToken, documentChanged, { since: String(Number(zero.liveSeq)) }));
  await Promise.all(subs.map((s) => s.waitFor((e) => e.documentId === zero.document.rowId)));
  return subs;
}

const counts = () => ({ ...sharedReadCounts });
const since = (before: typeof sharedReadCounts) => ({
  callers: sharedReadCounts.callers - before.callers,
  transactions: sharedReadCounts.transactions - before.transactions,
  shared: sharedReadCounts.shared - before.shared,
  fallbacks: sharedReadCounts.fallbacks - before.fallbacks,
});

test("ten subscribers of one organization and role get every event, read in one transaction per batch, not ten", async () => {
  const t = await createTenant(fx.db, "Ten");
  const members = [t.members.member, ...(await Promise.all(Array.from({ length: 9 }, () => addMember(t, "member"))))];
  const subs = await subscribed(t, members);
  try {
    const before = counts();
    const created = await createDocument(t.members.member, "Shared");
    const got = await Promise.all(subs.map((s) => s.waitFor((e) => e.documentId === created.document.rowId)));
    const delta = since(before);
    for (const [i, s] of subs.entries()) {
      expect({ i, errors: s.errors }).toEqual({ i, errors: [] });
      expect(got[i]!.document).toEqual({ title: "Shared", orgId: t.orgId, author: { fullName: "Ten member" }, org: { invitationsByOrgId: { totalCount: 0 } } });
    }
    // Every subscriber's reads went through the sharing, and ten callers per batch made one transaction.
    expect(delta.callers).toBeGreaterThanOrEqual(10);
    expect(delta.callers % 10).toBe(0);
    expect(delta.fallbacks).toBe(0);
    expect(delta.transactions * 10).toBe(delta.callers);
  } finally {
    await Promise.all(subs.map((s) => s.close()));
  }
});

test("two organizations never share: each organization's subscribers get only their own rows", async () => {
  const a = await createTenant(fx.db, "Alpha");
  const b = await createTenant(fx.db, "Beta");
  const subsA = await subscribed(a, [a.members.member, await addMember(a, "member"), await addMember(a, "member")]);
  const subsB = await subscribed(b, [b.members.member, await addMember(b, "member"), await addMember(b, "member")]);
  try {
    const [docA, docB] = await Promise.all([createDocument(a.members.member, "Alpha secret"), createDocument(b.members.member, "Beta secret")]);
    await Promise.all([
      ...subsA.map((s) => s.waitFor((e) => e.documentId === docA.document.rowId)),
      ...subsB.map((s) => s.waitFor((e) => e.documentId === docB.document.rowId)),
    ]);
    for (const [subs, own, other] of [
      [subsA, a, docB],
      [subsB, b, docA],
    ] as const) {
      for (const s of subs) {
        expect(s.errors).toEqual([]);
        expect(s.events.filter((e) => e.documentId === other.document.rowId)).toEqual([]);
        expect(s.events.filter((e) => e.document !== null && e.document.orgId !== own.orgId)).toEqual([]);
        expect(JSON.stringify(s.events)).not.toContain(own === a ? "Beta" : "Alpha");
      }
    }
  } finally {
    await Promise.all([...subsA, ...subsB].map((s) => s.close()));
  }
});

test("a viewer and an admin of one organization read apart, and a stale admin claim reads as the role it has now", async () => {
  const t = await createTenant(fx.db, "Roles");
  const staleAdmin = await addMember(t, "admin");
  // Demoted after signing in: the token still says admin, the database says viewer.
  await query(fx.db.name, "update app_public.memberships set role = 'viewer' where user_id = $1", [staleAdmin.userId], "root");
  const members = [t.members.admin, await addMember(t, "admin"), staleAdmin, t.members.viewer, await addMember(t, "viewer")];
  const subs = await subscribed(t, members);
  try {
    const created = await createDocument(t.members.member, "Roles doc");
    const got = await Promise.all(subs.map((s) => s.waitFor((e) => e.documentId === created.document.rowId)));
    // The fixture's one pending invitation is visible to admins only.
    expect(got.map((e) => e.document?.org.invitationsByOrgId.totalCount)).toEqual([1, 1, 0, 0, 0]);
    for (const s of subs) expect(s.errors).toEqual([]);
  } finally {
    await Promise.all(subs.map((s) => s.close()));
  }
});

test("a subscriber whose session ends is closed and gets nothing more, while the others carry on", async () => {
  const t = await createTenant(fx.db, "Revoke");
  const members = [t.members.member, await addMember(t, "member"), await addMember(t, "member")];
  const subs = await subscribed(t, members);
  try {
    await query(fx.db.name, "update app_private.sessions set revoked_at = now() where id = $1", [members[1]!.sessionId], "root");
    // Its socket is closed by server/live-sockets.ts; the subscription ends.
    for (let tries = 0; subs[1]!.errors.length === 0 && tries < 250; tries++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(subs[1]!.errors).toEqual([expect.objectContaining({ code: 4401 })]);
    const created = await createDocument(t.members.member, "After revoke");
    await Promise.all([subs[0]!, subs[2]!].map((s) => s.waitFor((e) => e.documentId === created.document.rowId)));
    expect(subs[1]!.events.filter((e) => e.documentId === created.document.rowId)).toEqual([]);
  } finally {
    await Promise.all(subs.map((s) => s.close()));
  }
});

/** The request settings of `m`, a member of `t`, as the server computes them for a subscription. */
const settingsOf = (t: Tenant, m: Member) =>
  pgSettingsFor(
    testConfig(fx.db.name),
    { userId: m.userId, orgId: t.orgId, sessionId: m.sessionId, role: m.role, expiresAt: new Date(Date.now() + 60_000) },
    randomUUID(),
    null,
  );

/** A sharing withPgClient on the server's pool, as server/context.ts makes for WebSocket reads. */
const sharedReads = () => shareReads(makeWithPgClient(app.pool), endedSessionsIn(app.pool));

test("in a shared batch, a revoked session reads nothing (representative or not) and the others read as themselves", async () => {
  const t = await createTenant(fx.db, "Batch");
  const members = [await addMember(t, "member"), await addMember(t, "member"), await addMember(t, "member")];
  const shared = sharedReads();
  const read = (m: Member) =>
    shared(settingsOf(t, m), async (client) => {
      const { rows } = await client.query<{ title: string }>({ text: "select title from app_public.documents order by title", values: [] });
      return rows.map((r) => r.title);
    });
  for (const revoked of [0, 1]) {
    await query(fx.db.name, "update app_private.sessions set revoked_at = now() where id = $1", [members[revoked]!.sessionId], "root");
    const before = counts();
    const results = await Promise.allSettled(members.map(read));
    expect(since(before).shared).toBe(1);
    expect(results.map((r) => r.status)).toEqual(members.map((_, i) => (i <= revoked ? "rejected" : "fulfilled")));
    expect(results[2]).toEqual({ status: "fulfilled", value: ["Batch handbook"] });
    for (const r of results) if (r.status === "rejected") expect(r.reason).toMatchObject({ code: "LOGIN" });
  }
});

test("a person's own questions and answers are never read for another subscriber of the same organization and role", async () => {
  const t = await createTenant(fx.db, "Asking");
  const asker = t.members.member;
  const colleague = await addMember(t, "member");
  // An answer job of the asker's, with its question and answer (rows as the worker writes them).
  const [job] = await query<{ id: string }>(
    fx.db.name,
    `with j as (insert into app_public.jobs (org_id, kind, status, requested_by) values ($1, 'answer', 'running', $2) returning id),
          q as (insert into app_public.questions (org_id, asked_by, job_id, question) select $1, $2, j.id, 'My private question?' from j returning id, job_id)
     insert into app_public.answers (org_id, question_id, job_id, asked_by, content, provider, model, prompt_tokens, completion_tokens, latency_ms)
     select $1, q.id, q.job_id, $2, 'My private answer.', 'extractive', 'extractive-v1', 1, 1, 0 from q returning job_id as id`,
    [t.orgId, asker.userId],
    "root",
  );
  const jobUpdated = `subscription ($id: UUID, $since: BigInt) { jobUpdated(jobId: $id, since: $since) { job { status question { question answer { content } } } } }`;
  interface JobEvent {
    job: { status: string; question: { question: string; answer: { content: string } | null } | null } | null;
  }
  const [last] = await query<{ seq: string }>(
    fx.db.name,
    "select coalesce(max(seq), 0) as seq from app_public.live_events where org_id = $1",
    [t.orgId],
    "root",
  );
  // From the last event on: the change below is delivered however late the subscriptions start.
  const subs = [asker, colleague].map((m) => subscribe<JobEvent>(app.url, m.accessToken, jobUpdated, { id: job!.id, since: last!.seq }));
  try {
    await query(fx.db.name, "update app_public.jobs set status = 'succeeded', finished_at = now() where id = $1", [job!.id], "root");
    const [mine, theirs] = await Promise.all(subs.map((s) => s.waitFor((e) => e.job?.status === "succeeded")));
    expect(mine!.job!.question).toEqual({ question: "My private question?", answer: { content: "My private answer." } });
    expect(theirs!.job!.question).toBeNull();
  } finally {
    await Promise.all(subs.map((s) => s.close()));
  }
  // In one batch, the identical read of the per-person table is refused by the shared transaction and each caller
  // runs it alone, as itself.
  const shared = sharedReads();
  const read = (m: Member) =>
    shared(settingsOf(t, m), async (client) => {
      const { rows } = await client.query<{ question: string }>({ text: 'select question from "app_public"."questions" order by question', values: [] });
      return rows.map((r) => r.question);
    });
  const batch = counts();
  expect(await Promise.all([read(asker), read(colleague)])).toEqual([["My private question?"], []]);
  expect(since(batch)).toMatchObject({ shared: 1, fallbacks: 2 });
});
