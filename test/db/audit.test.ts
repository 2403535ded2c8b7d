// The audit log, attacked and checked in SQL: no API role can write, change or remove audit rows, a trigger stops
// everyone but the owner; every committed change leaves exactly one row and a rolled-back one none; the per-
// organization hash chain holds under concurrent writers and names the first row an owner edited or removed; rows
// outlive their organization, and a purge keeps what remains verifiable.
import pg from "pg";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { beginAs, createTenant, type Member, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let a: Tenant;
let b: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  a = await createTenant(db, "Audit Alpha");
  b = await createTenant(db, "Audit Bravo");
}, 60_000);
afterAll(async () => {
  await db?.drop();
});

interface Verdict {
  valid: boolean;
  events: string;
  first_broken_seq: string | null;
  problem: string | null;
}
/** Chains every committed event not yet sealed, as the worker's sealer does about every second. */
const seal = async () => Number((await query<{ n: string }>(db.name, "select app_admin.seal_audit_events() as n", [], "root"))[0]!.n);
/** The chain's verdict once everything committed is sealed. */
const verify = async (orgId: string) => {
  await seal();
  return (await query<Verdict>(db.name, "select * from app_admin.verify_audit_chain($1)", [orgId]))[0]!;
};

const countEvents = async (orgId: string, where = "true", values: unknown[] = []) =>
  Number(
    (await query<{ n: string }>(db.name, `select count(*) as n from app_public.audit_events where org_id = $1 and ${where}`, [orgId, ...values], "root"))[0]!.n,
  );

/** Runs `statements` as `member` would through the API (authenticated role, session claims, request settings). */
async function asMember<T>(member: Member, orgId: string, work: (client: pg.Client) => Promise<T>, commit = true): Promise<T> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query(
      `select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true),
              set_config('jwt.claims.user_id', $4, true), set_config('quire.request_id', 'req-audit-1', true),
              set_config('quire.client_ip', '203.0.113.7', true)`,
      [roles.authenticated, member.sessionId, orgId, member.userId],
    );
    const result = await work(client);
    await client.query(commit ? "commit" : "rollback");
    return result;
  } catch (error) {
    await client.query("rollback").catch(() => undefined);
    throw error;
  } finally {
    await client.end();
  }
}

/** The SQLSTATE `sql` fails with when `role` runs it (anonymous or authenticated as A's member `member`). */
async function failureOf(role: "anonymous" | "authenticator" | Member, sql: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    if (role === "anonymous") await client.query("select set_config('role', $1, true)", [roles.anonymous]);
    else if (role !== "authenticator") {
      await client.query("select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true)", [
        roles.authenticated,
        role.sessionId,
        a.orgId,
      ]);
    }
    await client.query(sql);
    return null;
  } catch (error) {
    return (error as { code?: string }).code ?? "unknown";
  } finally {
    await client.query("rollback").catch(() => undefined);
    await client.end();
  }
}

describe("tampering", () => {
  const attempts = [
    "insert into app_public.audit_events (org_id, seq, action, prev_hash, hash) values ('%ORG%', 999, 'insert', sha256(''), sha256(''))",
    "update app_public.audit_events set action = 'forged' where org_id = '%ORG%'",
    "delete from app_public.audit_events where org_id = '%ORG%'",
    "truncate app_public.audit_events",
    "select app_private.append_audit_event('%ORG%', 'insert', null, null, '{}', null, null, '{}', null, null, null, null, null)",
    "update app_private.audit_chains set last_seq = 0",
  ];

  test.each(["owner", "admin", "member", "viewer", "anonymous", "authenticator"] as const)(
    "as %s: every write to the log or its chain heads is refused, and nothing changes",
    async (who) => {
      const role = who === "anonymous" || who === "authenticator" ? who : a.members[who];
      const before = await countEvents(a.orgId);
      const codes = [];
      for (const attempt of attempts) codes.push(await failureOf(role, attempt.replaceAll("%ORG%", a.orgId)));
      expect(codes).toEqual(attempts.map(() => "42501"));
      expect(await countEvents(a.orgId)).toBe(before);
      expect((await verify(a.orgId)).valid).toBe(true);
    },
  );

  test("the trigger refuses a superuser's update, delete and truncate (DNIED); only the owner role gets past it", async () => {
    for (const sql of [
      `update app_public.audit_events set action = 'forged' where org_id = '${a.orgId}'`,
      `delete from app_public.audit_events where org_id = '${a.orgId}'`,
      "truncate app_public.audit_events",
    ]) {
      await expect(query(db.name, sql, [], "root")).rejects.toMatchObject({ code: "DNIED" });
    }
    expect((await verify(a.orgId)).valid).toBe(true);
  });

  test("an owner's edit breaks the chain at that event, and removing the newest event is noticed too", async () => {
    const t = await createTenant(db, "Tampered");
    expect(await verify(t.orgId)).toMatchObject({ valid: true, problem: null });
    const total = await countEvents(t.orgId);
    expect(total).toBeGreaterThan(4);
    await query(
      db.name,
      `set quire.definer = 'on'; update app_public.audit_events set details = '{"edited": true}' where org_id = $1 and seq = 3`.replace("$1", `'${t.orgId}'`),
    );
    expect(await verify(t.orgId)).toMatchObject({ valid: false, first_broken_seq: "3", problem: expect.stringMatching(/edited/) });

    const u = await createTenant(db, "Truncated");
    await seal();
    await query(
      db.name,
      `set quire.definer = 'on'; delete from app_public.audit_events where org_id = '${u.orgId}' and seq = (select max(seq) from app_public.audit_events where org_id = '${u.orgId}')`,
    );
    expect(await verify(u.orgId)).toMatchObject({ valid: false, problem: expect.stringMatching(/newest events were removed/) });

    const v = await createTenant(db, "Holed");
    await seal();
    await query(db.name, `set quire.definer = 'on'; delete from app_public.audit_events where org_id = '${v.orgId}' and seq = 2`);
    expect(await verify(v.orgId)).toMatchObject({ valid: false, first_broken_seq: "3", problem: expect.stringMatching(/missing/) });
  });
});

describe("what is recorded", () => {
  test("one event per committed change, with actor, session, request id and address; none for a rolled-back one", async () => {
    const member = a.members.member;
    const before = await countEvents(a.orgId, "table_name = 'documents'");
    const id = await asMember(
      member,
      a.orgId,
      async (client) =>
        (await client.query<{ id: string }>("insert into app_public.documents (title, content) values ('Audited', 'secret body text') returning id")).rows[0]!
          .id,
    );
    await asMember(member, a.orgId, (client) => client.query("insert into app_public.documents (title, content) values ('Rolled back', 'x')"), false);
    expect(await countEvents(a.orgId, "table_name = 'documents'")).toBe(before + 1);
    const [event] = await query<Record<string, unknown>>(
      db.name,
      "select * from app_public.audit_events where org_id = $1 and record_id = $2",
      [a.orgId, id],
      "root",
    );
    expect(event).toMatchObject({
      action: "insert",
      table_name: "documents",
      actor_user_id: member.userId,
      actor_session_id: member.sessionId,
      request_id: "req-audit-1",
      client_ip: "203.0.113.7",
      db_role: roles.authenticator,
    });
    expect(event!.changed_columns).toEqual(expect.arrayContaining(["title", "content"]));
    expect(JSON.stringify(event!.new_values)).not.toMatch(/secret body text/);
    expect((event!.new_values as Record<string, unknown>).title).toBe("Audited");

    await asMember(member, a.orgId, (client) => client.query("update app_public.documents set content = 'another secret' where id = $1", [id]));
    await asMember(member, a.orgId, (client) => client.query("update app_public.documents set title = title where id = $1", [id]));
    const updates = await query<{ changed_columns: string[]; old_values: unknown; new_values: unknown }>(
      db.name,
      "select changed_columns, old_values, new_values from app_public.audit_events where record_id = $1 and action = 'update'",
      [id],
      "root",
    );
    expect(updates).toHaveLength(1); // the no-op update is not a change
    expect(updates[0]!.changed_columns).toContain("content");
    expect(JSON.stringify(updates[0])).not.toMatch(/secret/);
    expect((await verify(a.orgId)).valid).toBe(true);
  });

  test("a role change and an integration's connect and disconnect are named as such", async () => {
    const t = await createTenant(db, "Named");
    const baseline = await countEvents(t.orgId);
    await query(db.name, "update app_public.memberships set role = 'admin' where org_id = $1 and user_id = $2", [t.orgId, t.members.viewer.userId], "root");
    const [integration] = await query<{ id: string }>(
      db.name,
      "insert into app_public.integrations (org_id, provider, status, external_id, connected_by) values ($1, 'notion', 'connected', 'ws-1', $2) returning id",
      [t.orgId, t.members.owner.userId],
      "root",
    );
    await query(db.name, "update app_public.integrations set status = 'disconnected' where id = $1", [integration!.id], "root");
    await seal();
    const actions = await query<{ action: string; table_name: string; old_values: unknown; new_values: unknown }>(
      db.name,
      "select action, table_name, old_values, new_values from app_public.audit_events where org_id = $1 and seq > $2 and action in ('role_change', 'integration_connect', 'integration_disconnect') order by seq",
      [t.orgId, baseline],
      "root",
    );
    expect(actions).toEqual([
      { action: "role_change", table_name: "memberships", old_values: { role: "viewer" }, new_values: { role: "admin" } },
      expect.objectContaining({ action: "integration_connect", table_name: "integrations" }),
      expect.objectContaining({ action: "integration_disconnect", table_name: "integrations", new_values: { status: "disconnected" } }),
    ]);
  });

  test("concurrent writers of one organization never fork its chain", async () => {
    const t = await createTenant(db, "Concurrent");
    const before = await countEvents(t.orgId);
    const writers = 8;
    const each = 10;
    await Promise.all(
      Array.from({ length: writers }, (_, w) =>
        asMember(t.members.member, t.orgId, async (client) => {
          for (let i = 0; i < each; i++) await client.query("insert into app_public.documents (title, content) values ($1, 'x')", [`w${w}-${i}`]);
        }).then(() => undefined),
      ),
    );
    expect(await countEvents(t.orgId)).toBe(before + writers * each);
    await seal();
    const [{ seqs, max }] = (await query<{ seqs: string; max: string }>(
      db.name,
      "select count(distinct seq)::text as seqs, max(seq)::text as max from app_public.audit_events where org_id = $1",
      [t.orgId],
      "root",
    )) as [{ seqs: string; max: string }];
    expect(seqs).toBe(max);
    expect(await verify(t.orgId)).toMatchObject({ valid: true, events: max });
  });

  test("deleting an organization keeps its log: one delete event, the cascade not itemized, the chain intact", async () => {
    const t = await createTenant(db, "Deleted");
    const before = await countEvents(t.orgId);
    await query(db.name, "set quire.definer = 'on'; delete from app_public.organizations where id = '" + t.orgId + "'");
    expect(await countEvents(t.orgId)).toBe(before + 1);
    expect(await countEvents(t.orgId, "action = 'delete'")).toBe(1);
    expect(await countEvents(t.orgId, "action = 'delete' and table_name = 'organizations'")).toBe(1);
    expect(await verify(t.orgId)).toMatchObject({ valid: true });
  });

  test("a purge removes the oldest events and leaves a chain that still verifies and still notices removals", async () => {
    const t = await createTenant(db, "Purged");
    const total = await countEvents(t.orgId);
    await query(db.name, "update app_public.documents set title = 'Later' where org_id = $1", [t.orgId], "root");
    await seal();
    const [{ purged }] = (await query<{ purged: string }>(
      db.name,
      "select app_admin.purge_audit_events($1, (select occurred_at from app_public.audit_events where org_id = $1 and action = 'update' order by seq desc limit 1)) as purged",
      [t.orgId],
      "root",
    )) as [{ purged: string }];
    expect(Number(purged)).toBe(total);
    expect(await countEvents(t.orgId)).toBe(1);
    expect(await verify(t.orgId)).toMatchObject({ valid: true, events: "1" });
    await query(db.name, `set quire.definer = 'on'; delete from app_public.audit_events where org_id = '${t.orgId}'`);
    expect((await verify(t.orgId)).valid).toBe(false);
  });

  test("organization B's events are not A's: A's admin reads only A's", async () => {
    const visible = await asMember(a.members.admin, a.orgId, async (client) =>
      (await client.query<{ org_id: string }>("select distinct org_id from app_public.audit_events")).rows.map((r) => r.org_id),
    );
    expect(visible).toEqual([a.orgId]);
    expect(await countEvents(b.orgId)).toBeGreaterThan(0);
    const asMemberRole = await asMember(
      a.members.member,
      a.orgId,
      async (client) => (await client.query<{ n: string }>("select count(*) as n from app_public.audit_events")).rows[0]!.n,
    );
    expect(asMemberRole).toBe("0");
  });
});

describe("sealed after commit", () => {
  interface Pending {
    valid: boolean;
    pending: string;
  }
  test("a change's row waits unsealed (no seq, no hash) and is counted as pending; sealing chains it and the chain verifies", async () => {
    const t = await createTenant(db, "Sealing");
    await seal();
    await asMember(t.members.member, t.orgId, (client) => client.query("insert into app_public.documents (title, content) values ('Unsealed', 'x')"));
    const [row] = await query<{ seq: string | null; hash: Buffer | null; prev_hash: Buffer | null }>(
      db.name,
      "select seq, hash, prev_hash from app_public.audit_events where org_id = $1 and table_name = 'documents' and new_values->>'title' = 'Unsealed'",
      [t.orgId],
      "root",
    );
    expect(row).toEqual({ seq: null, hash: null, prev_hash: null });
    const before = (await query<Pending>(db.name, "select valid, pending from app_admin.verify_audit_chain($1)", [t.orgId]))[0]!;
    expect(before).toEqual({ valid: true, pending: "1" });
    expect(await seal()).toBeGreaterThanOrEqual(1);
    const after = (await query<Pending & { events: string }>(db.name, "select valid, pending, events from app_admin.verify_audit_chain($1)", [t.orgId]))[0]!;
    expect(after).toEqual({ valid: true, pending: "0", events: String(await countEvents(t.orgId)) });
  });

  test("writers of one organization no longer wait for each other: an open audited transaction does not block another's commit", async () => {
    const t = await createTenant(db, "Unblocked");
    const holder = await beginAs(db.name, t.members.admin, t.orgId);
    try {
      await holder.query("insert into app_public.templates (name, body) values ('Held open', 'x')");
      // Before, the second writer queued on the chain head held by the first until it committed: lock_timeout fired.
      await asMember(t.members.owner, t.orgId, async (client) => {
        await client.query("set local lock_timeout = '1s'");
        await client.query("insert into app_public.templates (name, body) values ('Not blocked', 'x')");
      });
      // The sealer chains what is committed and leaves the open transaction's row for a later run.
      await seal();
      const unsealed = await query<{ title: string }>(
        db.name,
        "select new_values->>'name' as title from app_public.audit_events where org_id = $1 and table_name = 'templates' and seq is null",
        [t.orgId],
        "root",
      );
      expect(unsealed).toEqual([]);
      await holder.query("commit");
    } finally {
      await holder.query("rollback").catch(() => undefined);
      await holder.end();
    }
    const verdict = await verify(t.orgId);
    expect(verdict).toMatchObject({ valid: true, pending: "0", events: String(await countEvents(t.orgId)) });
    const titles = await query<{ title: string }>(
      db.name,
      "select new_values->>'name' as title from app_public.audit_events where org_id = $1 and table_name = 'templates' and action = 'insert' order by seq desc limit 2",
      [t.orgId],
      "root",
    );
    // Chained in the order they became visible to the sealer: the commit that came first is first.
    expect(titles.map((r) => r.title)).toEqual(["Held open", "Not blocked"]);
  });

  test("one sealer at a time: a sealer that finds another at work returns 0 and seals nothing", async () => {
    const t = await createTenant(db, "Exclusive");
    const first = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
    await first.connect();
    try {
      await first.query("begin");
      await first.query("select app_private.seal_audit_events(1)");
      await asMember(t.members.member, t.orgId, (client) => client.query("insert into app_public.documents (title, content) values ('Queued', 'x')"));
      const second = await query<{ n: number }>(db.name, "select app_private.seal_audit_events(1000) as n", [], roles.authenticator);
      expect(second).toEqual([{ n: 0 }]);
      await first.query("commit");
    } finally {
      await first.query("rollback").catch(() => undefined);
      await first.end();
    }
    expect(await verify(t.orgId)).toMatchObject({ valid: true, pending: "0" });
  });
});
