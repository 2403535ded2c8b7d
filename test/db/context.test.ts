// The request-context helpers every policy will use, and the timestamps trigger every table will use.
import pg from "pg";
import { createTestDatabase, query, roles, rootUrl, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

/** Runs `sql` in one transaction as the authenticator switched to `role`, with `settings` applied as PostGraphile does. */
async function asApiRole<R extends pg.QueryResultRow>(role: string, settings: Record<string, string>, sql: string): Promise<R[]> {
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query("select set_config('role', $1, true)", [role]);
    for (const [key, value] of Object.entries(settings)) await client.query("select set_config($1, $2, true)", [key, value]);
    const { rows } = await client.query<R>(sql);
    await client.query("commit");
    return rows;
  } finally {
    await client.end();
  }
}

const orgId = "0b0e1c6a-7c4d-4f43-9a53-1d7f1e9f2a10";

describe("current_org_id() / current_user_id() / current_member_role()", () => {
  let tenant: Tenant;
  beforeAll(async () => {
    tenant = await createTenant(db, "Context");
  });
  const read = "select app_public.current_org_id() as org, app_public.current_user_id() as usr, app_public.current_member_role() as role";

  test.each([
    ["unset", {}],
    ["empty (a pooled connection's leftover)", { "jwt.claims.session_id": "", "jwt.claims.org_id": "" }],
    ["garbage", { "jwt.claims.session_id": "'; drop table x; --", "jwt.claims.org_id": "not-a-uuid" }],
  ])("%s claims read as NULL, never an error", async (_label, settings) => {
    expect(await asApiRole(roles.anonymous, settings, read)).toEqual([{ org: null, usr: null, role: null }]);
  });

  test("a live session reads back its organization, user and role (from the database, not the claims)", async () => {
    const owner = tenant.members.owner;
    const rows = await asApiRole(
      roles.authenticated,
      { "jwt.claims.session_id": owner.sessionId, "jwt.claims.org_id": tenant.orgId, "jwt.claims.role": "viewer" },
      read,
    );
    expect(rows).toEqual([{ org: tenant.orgId, usr: owner.userId, role: "owner" }]);
  });

  test("a session that is unknown, revoked, or claimed for another organization fails with LOGIN", async () => {
    const viewer = tenant.members.viewer;
    const unknown = { "jwt.claims.session_id": orgId, "jwt.claims.org_id": tenant.orgId };
    await expect(asApiRole(roles.authenticated, unknown, read)).rejects.toMatchObject({ code: "LOGIN" });
    const otherOrg = { "jwt.claims.session_id": viewer.sessionId, "jwt.claims.org_id": orgId };
    await expect(asApiRole(roles.authenticated, otherOrg, read)).rejects.toMatchObject({ code: "LOGIN" });
    await query(db.name, "update app_private.sessions set revoked_at = now() where id = $1", [viewer.sessionId], "root");
    const revoked = { "jwt.claims.session_id": viewer.sessionId, "jwt.claims.org_id": tenant.orgId };
    await expect(asApiRole(roles.authenticated, revoked, read)).rejects.toMatchObject({ code: "LOGIN" });
  });

  test("they are declared stable and are plain SQL (no definer, no SET), so the planner inlines them", async () => {
    const rows = await query<{ proname: string; provolatile: string }>(
      db.name,
      "select proname, provolatile from pg_proc where pronamespace = 'app_public'::regnamespace and proname like 'current\\_%' order by 1",
    );
    const definers = await query<{ proname: string }>(
      db.name,
      "select proname from pg_proc where pronamespace = 'app_public'::regnamespace and proname in ('current_org_id', 'current_user_id', 'current_member_role', 'current_job_id') and (prosecdef or proconfig is not null or prolang <> (select oid from pg_language where lanname = 'sql'))",
    );
    expect(rows).toEqual([
      { proname: "current_job_id", provolatile: "s" },
      { proname: "current_job_kind", provolatile: "s" },
      { proname: "current_member_role", provolatile: "s" },
      { proname: "current_org_id", provolatile: "s" },
      { proname: "current_user_id", provolatile: "s" },
    ]);
    expect(definers).toEqual([]);
  });
});

describe("the context is checked once per transaction (app_hidden.enter_context)", () => {
  let tenant: Tenant;
  let client: pg.Client;
  beforeAll(async () => {
    tenant = await createTenant(db, "Once");
    // A superuser connection that then acts as the API role: only a superuser may turn on function statistics.
    client = new pg.Client({ connectionString: rootUrl().replace(/\/[^/]*$/, `/${db.name}`) });
    await client.connect();
    await client.query("set track_functions = 'pl'");
  });
  afterAll(async () => {
    await client?.end();
  });

  /** Begins a transaction as the authenticated role with `member`'s session settings. */
  async function beginAs(member: { sessionId: string }) {
    await client.query("begin");
    await client.query("select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true)", [
      roles.authenticated,
      member.sessionId,
      tenant.orgId,
    ]);
  }
  // The backend's pending function counts, which only grow within a transaction (they may include earlier
  // transactions not yet flushed to the statistics, so tests compare with a reading taken after `begin`).
  const checks = async () =>
    Number(
      (await client.query<{ n: string | null }>("select pg_stat_get_xact_function_calls('app_hidden.enter_context()'::regprocedure) as n")).rows[0]!.n ?? 0,
    );

  test("many statements, each reading several helpers and policies, run the definer check once", async () => {
    await beginAs(tenant.members.member);
    const before = await checks();
    for (let i = 0; i < 5; i++) {
      await client.query("select count(*) from app_public.documents");
      await client.query("select count(*) from app_public.memberships");
      await client.query("select app_public.current_org_id(), app_public.current_user_id(), app_public.current_member_role()");
    }
    expect((await checks()) - before).toBe(1);
    await client.query("commit");
  });

  test("the policies fold the helpers into the plan: no SubPlan, no per-row function call", async () => {
    await beginAs(tenant.members.member);
    const { rows } = await client.query<{ "QUERY PLAN": string }>(
      "explain (verbose, costs off) select id from app_public.documents order by created_at desc limit 20",
    );
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    await client.query("rollback");
    expect(plan).not.toMatch(/SubPlan/);
    expect(plan).not.toMatch(/current_org_id|session_context/);
    expect(plan).toMatch(/current_setting\('quire\.ctx'/);
  });

  test("a cached context never outlives its transaction: a revoked session fails on the same connection's next one", async () => {
    const viewer = tenant.members.viewer;
    await beginAs(viewer);
    expect((await client.query("select app_public.current_member_role() as role")).rows).toEqual([{ role: "viewer" }]);
    await client.query("commit");
    await query(db.name, "update app_private.sessions set revoked_at = now() where id = $1", [viewer.sessionId], "root");
    await beginAs(viewer);
    await expect(client.query("select app_public.current_org_id()")).rejects.toMatchObject({ code: "LOGIN" });
    await client.query("rollback");
  });

  test("the cache answers only for the inputs it was computed for: other claims in the same transaction are checked afresh", async () => {
    await beginAs(tenant.members.owner);
    const before = await checks();
    expect((await client.query("select app_public.current_member_role() as role")).rows).toEqual([{ role: "owner" }]);
    await client.query("select set_config('jwt.claims.session_id', $1, true)", [tenant.members.member.sessionId]);
    expect((await client.query("select app_public.current_member_role() as role, app_public.current_user_id() as usr")).rows).toEqual([
      { role: "member", usr: tenant.members.member.userId },
    ]);
    expect((await checks()) - before).toBe(2);
    await client.query("rollback");
  });
});

describe("the authenticator and the API roles", () => {
  test("API roles cannot call the app_private functions the authenticator may", async () => {
    await expect(asApiRole(roles.anonymous, {}, "select app_private.readiness()")).rejects.toMatchObject({ code: "42501" });
    await expect(asApiRole(roles.authenticated, {}, "select app_private.record_worker_heartbeat('x', 'h', 1)")).rejects.toMatchObject({
      code: "42501",
    });
  });

  test("the authenticator cannot become the owner or a superuser", async () => {
    await expect(asApiRole(roles.owner, {}, "select 1")).rejects.toMatchObject({ code: "42501" });
    await expect(asApiRole("postgres", {}, "select 1")).rejects.toMatchObject({ code: "42501" });
  });

  test("the authenticator reads nothing of app_private directly", async () => {
    await expect(query(db.name, "select * from app_private.worker_heartbeats", [], roles.authenticator)).rejects.toMatchObject({
      code: "42501",
    });
  });
});

describe("tg__timestamps", () => {
  beforeAll(async () => {
    await query(
      db.name,
      `create table app_hidden.stamped (id int primary key, note text,
         created_at timestamptz not null default now(), updated_at timestamptz not null default now());
       create trigger _100_timestamps before insert or update on app_hidden.stamped
         for each row execute procedure app_private.tg__timestamps();`,
    );
  });

  test("ignores client-sent values: created_at is the insert time and never changes", async () => {
    const [row] = await query<{ created_at: Date; updated_at: Date }>(
      db.name,
      "insert into app_hidden.stamped values (1, 'a', '2000-01-01', '2000-01-01') returning created_at, updated_at",
    );
    expect(row!.created_at.getUTCFullYear()).toBeGreaterThan(2000);
    const [updated] = await query<{ created_at: Date }>(
      db.name,
      "update app_hidden.stamped set note = 'b', created_at = '2000-01-01' where id = 1 returning created_at",
    );
    expect(updated!.created_at.getTime()).toBe(row!.created_at.getTime());
  });

  test("updated_at moves forward on every update, even twice in one transaction", async () => {
    const [row] = await query<{ updated_at: Date }>(db.name, "select updated_at from app_hidden.stamped where id = 1");
    const client = new pg.Client({ connectionString: urlFor(roles.owner, db.name) });
    await client.connect();
    try {
      await client.query("begin");
      const a = await client.query<{ t: Date }>("update app_hidden.stamped set note = 'c' where id = 1 returning updated_at as t");
      const b = await client.query<{ t: Date }>("update app_hidden.stamped set note = 'd' where id = 1 returning updated_at as t");
      await client.query("commit");
      expect(a.rows[0]!.t.getTime()).toBeGreaterThan(row!.updated_at.getTime());
      expect(b.rows[0]!.t.getTime()).toBeGreaterThan(a.rows[0]!.t.getTime());
    } finally {
      await client.end();
    }
  });
});
