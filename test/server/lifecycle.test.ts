// An organization's data end to end, on a real PostgreSQL with a real worker: an owner's export is one archive of
// every row and file of the organization and nothing of another; deleting an organization waits out its grace
// period (cancellable), then erases every row and object while the audit chain keeps the record and verifies; a
// person deletes their own account, not while they are the last owner, and what they wrote stays.
import { Readable } from "node:stream";
import type pg from "pg";
import tar from "tar-stream";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { query, testConfig } from "../support/database.ts";
import { capturingLogger, type Line } from "../support/logs.ts";
import { until } from "../support/poll.ts";
import { codeOf, useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const fx = useQuireServer();
let a: Tenant;
let b: Tenant;
let pool: pg.Pool;
let worker: QuireWorker;
let workerLines: Line[];
beforeAll(async () => {
  a = await createTenant(fx.db, "Life Alpha");
  b = await createTenant(fx.db, "Life Bravo");
  const config = testConfig(fx.db.name);
  pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, capturingLogger().logger);
  const captured = capturingLogger("info");
  workerLines = captured.lines;
  worker = await startQuireWorker({ config, logger: captured.logger, pool });
});
afterAll(async () => {
  await worker?.stop();
  await pool?.end();
});

const count = async (sql: string, values: unknown[] = []) =>
  (await query<{ n: number }>(fx.db.name, `select count(*)::int as n from ${sql}`, values, "root"))[0]!.n;

async function upload(t: Tenant, name: string, data: string) {
  const form = new FormData();
  form.append("file", new Blob([data]), name);
  const response = await fetch(`${fx.app.url}/api/v1/documents/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${t.members.member.accessToken}` },
    body: form,
  });
  expect(response.status).toBe(201);
  return (await response.json()) as { document: { id: string }; file: { id: string } };
}

/** The entries of a tar archive, by name. */
async function untar(bytes: Buffer): Promise<Map<string, Buffer>> {
  const entries = new Map<string, Buffer>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on("entry", (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
      stream.on("end", () => {
        entries.set(header.name, Buffer.concat(chunks));
        next();
      });
    });
    extract.on("finish", resolve);
    extract.on("error", reject);
  });
  Readable.from([bytes]).pipe(extract as unknown as NodeJS.WritableStream);
  await done;
  return entries;
}

describe("exportOrganization", () => {
  test("an owner's export holds every row and file of the organization, no secret, and nothing of another organization", async () => {
    const uploaded = await upload(a, "notes.md", "# Notes for the export\n");
    const trashed = await upload(a, "old.md", "# Old\n");
    expect(
      codeOf(
        await fx.gql(a.members.member.accessToken, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { clientMutationId } }", {
          id: trashed.document.id,
        }),
      ),
    ).toBeNull();
    expect(codeOf(await fx.gql(a.members.admin.accessToken, "mutation { exportOrganization(input: {}) { job { rowId } } }"))).toBe("FORBIDDEN");
    const started = await fx.gql(a.members.owner.accessToken, "mutation { exportOrganization(input: {}) { job { rowId kind status } } }");
    const job = (started.data as { exportOrganization: { job: { rowId: string; kind: string; status: string } } }).exportOrganization.job;
    expect(job).toMatchObject({ kind: "export" });
    const finished = await until(
      async () => (await query<{ status: string }>(fx.db.name, "select status from app_public.jobs where id = $1", [job.rowId], "root"))[0]!.status,
      (status) => status === "succeeded" || status === "failed",
      "the export job",
    );
    expect(finished).toBe("succeeded");

    const listed = await fx.gql(
      a.members.owner.accessToken,
      "query ($id: UUID!) { job(rowId: $id) { export { rowId bytes fileCount rowCounts expiresAt } } }",
      { id: job.rowId },
    );
    const exported = (listed.data as { job: { export: { rowId: string; bytes: string; fileCount: number; rowCounts: Record<string, number> } } }).job.export;
    expect(exported.fileCount).toBe(2); // the two uploads; the fixture's file row has no object and is listed as missing
    const memberView = await fx.gql(a.members.admin.accessToken, "query ($id: UUID!) { job(rowId: $id) { export { rowId } } }", { id: job.rowId });
    expect(memberView.data).toEqual({ job: { export: null } });

    const urlOf = (token: string) => fx.gql(token, "query ($id: UUID!) { organizationExportUrl(exportId: $id) { url } }", { id: exported.rowId });
    expect(codeOf(await urlOf(a.members.admin.accessToken))).toBe("FORBIDDEN");
    expect(codeOf(await urlOf(b.members.owner.accessToken))).toBe("NOT_FOUND");
    const url = ((await urlOf(a.members.owner.accessToken)).data as { organizationExportUrl: { url: string } }).organizationExportUrl.url;
    const response = await fetch(url.replace(/^https?:\/\/[^/]+/, fx.app.url));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/x-tar");
    expect(response.headers.get("content-disposition")).toMatch(/^attachment; filename="quire-export-life-alpha[-a-z0-9]*-\d{8}T\d{6}Z\.tar"/);
    const archive = Buffer.from(await response.arrayBuffer());
    expect(archive.length).toBe(Number(exported.bytes));
    const entries = await untar(archive);

    // Every table of the organization, row for row, and its members' user rows.
    const tables = await query<{ table_name: string }>(fx.db.name, "select table_name from app_hidden.export_tables()", [], "root");
    expect(tables.map((t) => t.table_name)).toEqual(
      expect.arrayContaining(["audit_events", "documents", "document_revisions", "files", "jobs", "summaries", "templates", "usage_records"]),
    );
    const linesOf = (name: string) =>
      entries
        .get(`tables/${name}.jsonl`)!
        .toString("utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    // Rows written once the export had read its tables (the export's own audit events and row) are not in it.
    const [{ started_at: startedAt } = { started_at: new Date() }] = await query<{ started_at: Date }>(
      fx.db.name,
      "select started_at from app_public.jobs where id = $1",
      [job.rowId],
      "root",
    );
    for (const { table_name: table } of tables) {
      const rows = linesOf(table);
      const exportedIds = rows.map((r) => r.id as string).sort();
      const before =
        table === "audit_events"
          ? "and occurred_at < $2 and $3::uuid is not null"
          : table === "organization_exports"
            ? "and job_id <> $3 and $2::timestamptz is not null"
            : "and $2::timestamptz is not null and $3::uuid is not null";
      const ids = await query<{ id: string }>(
        fx.db.name,
        `select id from app_public.${table} where org_id = $1 ${before} order by id`,
        [a.orgId, startedAt, job.rowId],
        "root",
      );
      expect({ table, exportedIds }).toEqual({ table, exportedIds: expect.arrayContaining(ids.map((r) => r.id)) });
      if (table !== "audit_events") expect({ table, exportedIds }).toEqual({ table, exportedIds: ids.map((r) => r.id).sort() });
      expect(rows.every((r) => r.org_id === a.orgId)).toBe(true);
      expect(exported.rowCounts[table]).toBe(rows.length);
    }
    expect(linesOf("organizations").map((o) => o.id)).toEqual([a.orgId]);
    const members = await query<{ user_id: string }>(
      fx.db.name,
      "select user_id from app_public.memberships where org_id = $1 order by user_id",
      [a.orgId],
      "root",
    );
    expect(
      linesOf("users")
        .map((u) => u.id)
        .sort(),
    ).toEqual(members.map((m) => m.user_id).sort());
    expect(linesOf("documents").map((d) => d.id)).toContain(trashed.document.id);

    // The originals, byte for byte; the manifest names what is missing.
    expect(entries.get(`files/${uploaded.file.id}/notes.md`)!.toString()).toBe("# Notes for the export\n");
    const manifest = JSON.parse(entries.get("manifest.json")!.toString()) as { organizationId: string; missingFiles: string[]; tables: Record<string, number> };
    expect(manifest.organizationId).toBe(a.orgId);
    expect(manifest.missingFiles).toHaveLength(1);

    // Nothing of B, and no secret or internal column.
    const text = [...entries.values()].map((e) => e.toString("latin1")).join("\n");
    expect(text).not.toContain(b.orgId);
    for (const member of Object.values(b.members)) expect(text).not.toContain(member.userId);
    // No secret or internal column: not as a row's key, nor inside an audit event's values, nor any hash's value.
    const forbidden = ["password_hash", "secret_hash", "storage_key", "refresh_token_hash", "search"];
    for (const { table_name: table } of tables) {
      for (const row of linesOf(table)) {
        const objects = [row, (row.new_values ?? {}) as object, (row.old_values ?? {}) as object];
        for (const object of objects) expect(Object.keys(object).filter((key) => forbidden.includes(key))).toEqual([]);
      }
    }
    const hashes = await query<{ hex: string }>(
      fx.db.name,
      `select encode(secret_hash, 'hex') as hex from app_public.api_keys where org_id = $1
       union all select password_hash from app_private.user_secrets s join app_public.memberships m on m.user_id = s.user_id where m.org_id = $1`,
      [a.orgId],
      "root",
    );
    expect(hashes.length).toBeGreaterThan(0);
    for (const { hex } of hashes) expect(text).not.toContain(hex);

    // The owner who asked is told by email, with a link to sign in and download (no token in it).
    const mail = await until(
      async () => workerLines.find((l) => (l.email as { subject?: string } | undefined)?.subject === "Your Quire export is ready"),
      (line) => line !== undefined,
      "the export email",
    );
    expect(mail!.email).toMatchObject({ to: a.members.owner.email, text: expect.stringContaining("/settings/exports") });
    expect(JSON.stringify(mail!.email)).not.toMatch(/token=/);
  });

  test("two exports asked at once make one job; the other answers CONFLICT", async () => {
    const t = await createTenant(fx.db, "Life Twice");
    const ask = () => fx.gql(t.members.owner.accessToken, "mutation { exportOrganization(input: {}) { job { rowId } } }");
    const answers = await Promise.all([ask(), ask()]);
    expect(answers.map((a) => codeOf(a)).sort()).toEqual(["CONFLICT", null].sort());
    expect(await count("app_public.jobs where org_id = $1 and kind = 'export' and status <> 'succeeded'", [t.orgId])).toBeLessThanOrEqual(1);
  });

  test("one export at a time: CONFLICT while one is queued or running", async () => {
    const [queued] = await query<{ id: string }>(
      fx.db.name,
      "insert into app_public.jobs (org_id, kind, status, requested_by) values ($1, 'export', 'queued', $2) returning id",
      [b.orgId, b.members.owner.userId],
      "root",
    );
    try {
      expect(codeOf(await fx.gql(b.members.owner.accessToken, "mutation { exportOrganization(input: {}) { job { rowId } } }"))).toBe("CONFLICT");
      expect(await count("app_public.jobs where org_id = $1 and kind = 'export'", [b.orgId])).toBe(2); // the fixture's and this one
    } finally {
      await query(fx.db.name, "delete from app_public.jobs where id = $1", [queued!.id], "root");
    }
  });
});

describe("deleteOrganization", () => {
  test("an owner schedules the erasure with the slug; it can be cancelled until it is due", async () => {
    const del = (token: string, slug: string) =>
      fx.gql(token, "mutation ($s: String!) { deleteOrganization(input: { confirmSlug: $s }) { organization { deletionScheduledFor } } }", { s: slug });
    expect(codeOf(await del(b.members.admin.accessToken, b.slug))).toBe("FORBIDDEN");
    expect(codeOf(await del(b.members.owner.accessToken, "not-the-slug"))).toBe("BAD_INPUT");
    const scheduled = await del(b.members.owner.accessToken, b.slug);
    const when = new Date(
      (scheduled.data as { deleteOrganization: { organization: { deletionScheduledFor: string } } }).deleteOrganization.organization.deletionScheduledFor,
    );
    expect(when.getTime() - Date.now()).toBeGreaterThan(13 * 86_400_000);
    expect(codeOf(await del(b.members.owner.accessToken, b.slug))).toBe("CONFLICT");
    const cancelled = await fx.gql(b.members.owner.accessToken, "mutation { cancelOrganizationDeletion(input: {}) { organization { deletionScheduledFor } } }");
    expect(cancelled.data).toEqual({ cancelOrganizationDeletion: { organization: { deletionScheduledFor: null } } });
    expect(codeOf(await fx.gql(b.members.owner.accessToken, "mutation { cancelOrganizationDeletion(input: {}) { clientMutationId } }"))).toBe("NOT_FOUND");
    const actions = await query<{ action: string }>(
      fx.db.name,
      "select action from app_public.audit_events where org_id = $1 and action like 'organization_deletion%' order by append_order",
      [b.orgId],
      "root",
    );
    expect(actions.map((r) => r.action)).toEqual(["organization_deletion_scheduled", "organization_deletion_cancelled"]);
  });

  test("an erasure an operator scheduled cannot be cancelled by an owner", async () => {
    const t = await createTenant(fx.db, "Life Operator");
    await query(fx.db.name, "select app_admin.delete_organization($1, '7 days')", [t.orgId]);
    expect(codeOf(await fx.gql(t.members.owner.accessToken, "mutation { cancelOrganizationDeletion(input: {}) { clientMutationId } }"))).toBe("FORBIDDEN");
    const [org] = await query(
      fx.db.name,
      "select deletion_scheduled_for is not null as scheduled from app_public.organizations where id = $1",
      [t.orgId],
      "root",
    );
    expect(org).toEqual({ scheduled: true });
  });

  test("when due, the worker erases every row and object of the organization; its audit chain records it and verifies", async () => {
    const victim = await createTenant(fx.db, "Life Doomed");
    const uploaded = await upload(victim, "doomed.md", "# Doomed\n");
    const [file] = await query<{ storage_key: string }>(fx.db.name, "select storage_key from app_public.files where id = $1", [uploaded.file.id], "root");
    // An operator erases at once (the same path as a grace period running out).
    await query(fx.db.name, "select app_admin.delete_organization($1)", [victim.orgId]);
    await until(
      () => count("app_public.organizations where id = $1", [victim.orgId]),
      (n) => n === 0,
      "the erasure",
    );
    const tables = await query<{ table_name: string }>(
      fx.db.name,
      "select table_name from app_hidden.export_tables() where table_name <> 'audit_events'",
      [],
      "root",
    );
    for (const { table_name: table } of tables)
      expect({ table, rows: await count(`app_public.${table} where org_id = $1`, [victim.orgId]) }).toEqual({ table, rows: 0 });
    expect(await count("app_private.sessions where org_id = $1", [victim.orgId])).toBe(0);
    await until(
      () => count("app_private.storage_deletions where org_id = $1", [victim.orgId]),
      (n) => n === 0,
      "the objects' deletion",
    );
    expect(await count("app_private.storage_deletions where storage_key = $1", [file!.storage_key])).toBe(0);
    // The people remain (they may belong elsewhere); B is untouched.
    expect(await count("app_public.documents where org_id = $1", [b.orgId])).toBeGreaterThan(0);
    await query(fx.db.name, "select app_admin.seal_audit_events()");
    const [erased] = await query(
      fx.db.name,
      "select details from app_public.audit_events where org_id = $1 and action = 'organization_erased'",
      [victim.orgId],
      "root",
    );
    expect(erased!.details).toMatchObject({ slug: victim.slug, reason: "scheduled deletion", files: 2, by_operator: true });
    // Its API keys' service accounts went with it; its audit log is kept under its tier's retention.
    expect(
      await count("app_public.users where email like 'api-key-%' and id in (select user_id from app_public.memberships where org_id = $1)", [victim.orgId]),
    ).toBe(0);
    expect(await count("app_private.erased_organizations where org_id = $1 and tier = 'free'", [victim.orgId])).toBe(1);
    const [verdict] = await query(fx.db.name, "select valid, problem from app_admin.verify_audit_chain($1)", [victim.orgId]);
    expect(verdict).toEqual({ valid: true, problem: null });
  });
});

describe("deleteMyAccount", () => {
  test("two owners deleting their accounts at once: one goes, the other is told it is the last owner", async () => {
    const t = await createTenant(fx.db, "Life Two Owners");
    await query(fx.db.name, "update app_public.memberships set role = 'owner' where org_id = $1 and user_id = $2", [t.orgId, t.members.admin.userId], "root");
    const leave = (token: string) =>
      fx.gql(token, "mutation ($p: String!) { deleteMyAccount(input: { password: $p }) { success } }", { p: "correct horse battery staple" });
    const answers = await Promise.all([leave(t.members.owner.accessToken), leave(t.members.admin.accessToken)]);
    expect(answers.map((a) => codeOf(a)).sort()).toEqual(["CONFLICT", null].sort());
    expect(await count("app_public.memberships where org_id = $1 and role = 'owner'", [t.orgId])).toBe(1);
  });

  test("an account without a password (single sign-on only) is deleted from a sign-in of the last 10 minutes", async () => {
    const t = await createTenant(fx.db, "Life SSO");
    const person = t.members.member;
    await query(fx.db.name, "delete from app_private.user_secrets where user_id = $1", [person.userId], "root");
    await query(
      fx.db.name,
      "update app_private.sessions set auth_method = 'sso', created_at = now() - interval '20 minutes' where id = $1",
      [person.sessionId],
      "root",
    );
    const leave = () => fx.gql(person.accessToken, "mutation { deleteMyAccount(input: {}) { success } }");
    expect(codeOf(await leave())).toBe("FORBIDDEN");
    await query(fx.db.name, "update app_private.sessions set created_at = now() where id = $1", [person.sessionId], "root");
    expect(await leave()).toEqual({ data: { deleteMyAccount: { success: true } } });
    // A password account that sends none is refused like a wrong password.
    expect(codeOf(await fx.gql(t.members.viewer.accessToken, "mutation { deleteMyAccount(input: {}) { success } }"))).toBe("INVALID_CREDENTIALS");
  });

  test("not while the last owner; otherwise the account goes and what the person wrote stays, attributed to a deleted user", async () => {
    const t = await createTenant(fx.db, "Life Leaver");
    const owner = t.members.owner;
    const del = (token: string, password: string) =>
      fx.gql(token, "mutation ($p: String!) { deleteMyAccount(input: { password: $p }) { success } }", { p: password });
    expect(codeOf(await del(owner.accessToken, "correct horse battery staple"))).toBe("CONFLICT");
    expect(codeOf(await del(t.members.member.accessToken, "wrong password"))).toBe("INVALID_CREDENTIALS");
    const [doc] = await query<{ id: string }>(
      fx.db.name,
      "select id from app_public.documents where org_id = $1 and author_id = $2",
      [t.orgId, t.members.member.userId],
      "root",
    );
    expect(await del(t.members.member.accessToken, "correct horse battery staple")).toEqual({ data: { deleteMyAccount: { success: true } } });
    const [user] = await query(
      fx.db.name,
      "select email, full_name, is_active, deleted_at is not null as deleted from app_public.users where id = $1",
      [t.members.member.userId],
      "root",
    );
    expect(user).toEqual({
      email: expect.stringMatching(/^deleted-[0-9a-f]{32}@deleted\.quire\.invalid$/),
      full_name: "Deleted user",
      is_active: false,
      deleted: true,
    });
    for (const table of ["app_public.memberships", "app_private.sessions", "app_private.user_secrets"]) {
      expect({ table, rows: await count(`${table} where user_id = $1`, [t.members.member.userId]) }).toEqual({ table, rows: 0 });
    }
    expect(await count("app_public.documents where id = $1 and author_id = $2", [doc!.id, t.members.member.userId])).toBe(1);
    // The old session is refused at once.
    expect(codeOf(await fx.gql(t.members.member.accessToken, "{ currentUser { rowId } }"))).toBe("UNAUTHENTICATED");
  });
});
