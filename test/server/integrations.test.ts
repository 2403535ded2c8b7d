// Notion and Confluence end to end: the OAuth flow through the real callback route (every state failure stores
// nothing), sealed tokens, browsing, import, sync and publishing jobs run by a real worker, single-flight token
// refresh with Atlassian's rotating refresh tokens, invalid_grant, disconnecting, and another organization's
// attempts on all of it. The providers are local HTTP servers speaking their APIs (test/support/fake-*.ts).
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { generateSealingKey } from "../../lib/sealing.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { startFakeAtlassian, type FakeAtlassian } from "../support/fake-atlassian.ts";
import { startFakeNotion, type FakeNotion } from "../support/fake-notion.ts";
import { createTestDatabase, query, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { subscribe } from "../support/live.ts";
import { codeOf, startTestServer, type GraphQLBody, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let notion: FakeNotion;
let atlassian: FakeAtlassian;
let db: TestDatabase;
let app: TestServer;
let workerPool: pg.Pool;
let worker: QuireWorker;
let a: Tenant;
let b: Tenant;
const appOrigin = "https://app.quire.test";

beforeAll(async () => {
  notion = await startFakeNotion();
  atlassian = await startFakeAtlassian();
  db = await createTestDatabase();
  const config = testConfig(db.name, {
    PUBLIC_URL: "https://quire.test",
    APP_URL: appOrigin,
    SEALING_KEYS: `k1:${generateSealingKey()}`,
    NOTION_CLIENT_ID: notion.clientId,
    NOTION_CLIENT_SECRET: notion.clientSecret,
    NOTION_API_URL: notion.url,
    ATLASSIAN_CLIENT_ID: atlassian.clientId,
    ATLASSIAN_CLIENT_SECRET: atlassian.clientSecret,
    ATLASSIAN_AUTH_URL: atlassian.url,
    ATLASSIAN_API_URL: atlassian.url,
    INTEGRATION_TIMEOUT_SECONDS: "2",
    INTEGRATION_MAX_RETRIES: "1",
    JOB_MAX_ATTEMPTS: "1",
  });
  app = await startTestServer(config);
  workerPool = createPool({ url: config.database.url, max: 6, applicationName: "quire-test-worker" }, silentLogger);
  worker = await startQuireWorker({ config, logger: silentLogger, pool: workerPool });
  a = await createTenant(db, "Alpha");
  b = await createTenant(db, "Beta");
});
afterAll(async () => {
  await worker?.stop();
  await workerPool?.end();
  await app?.close();
  await db?.drop();
  await notion?.close();
  await atlassian?.close();
});

const gql = async (token: string, text: string, variables: Record<string, unknown> = {}) => (await app.graphql(text, variables, token)).body;
const count = async (sql: string, values: unknown[] = []) =>
  Number((await query<{ n: string }>(db.name, `select count(*) as n from ${sql}`, values, "root"))[0]!.n);
const data = <T>(body: GraphQLBody, field: string) => {
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data![field] as T;
};

async function start(token: string, provider: "notion" | "confluence", returnTo = "/settings/integrations") {
  return gql(token, "mutation ($p: IntegrationProvider!, $r: String!) { startIntegration(input: { provider: $p, returnTo: $r }) { authorizationUrl } }", {
    p: provider,
    r: returnTo,
  });
}
/** Starts the flow as `tenant`'s admin and returns the authorization URL's state. */
async function stateFor(tenant: Tenant, provider: "notion" | "confluence", returnTo?: string): Promise<string> {
  const { authorizationUrl } = data<{ authorizationUrl: string }>(await start(tenant.members.admin.accessToken, provider, returnTo), "startIntegration");
  return new URL(authorizationUrl).searchParams.get("state")!;
}
/** The browser's return from the provider: the redirect's target. */
async function callback(provider: string, params: Record<string, string>): Promise<URL> {
  const response = await fetch(`${app.url}/oauth/${provider}/callback?${new URLSearchParams(params)}`, { redirect: "manual" });
  expect(response.status).toBe(303);
  return new URL(response.headers.get("location")!);
}
async function connect(tenant: Tenant, provider: "notion" | "confluence"): Promise<string> {
  const code = provider === "notion" ? notion.issueCode() : atlassian.issueCode();
  const location = await callback(provider, { state: await stateFor(tenant, provider), code });
  expect(location.searchParams.get("error") ?? location.searchParams.get("status")).toBe("connected");
  return location.searchParams.get("integration")!;
}
async function settled(jobId: string) {
  for (let i = 0; i < 300; i++) {
    const [row] = await query<{ status: string; error_code: string | null }>(
      db.name,
      "select status, error_code from app_public.jobs where id = $1",
      [jobId],
      "root",
    );
    if (row && ["succeeded", "failed", "cancelled"].includes(row.status)) return row;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`job ${jobId} did not finish`);
}
const pagesQuery = "query ($i: UUID!, $q: String) { integrationPages(integrationId: $i, query: $q) { pages { externalId title url } nextCursor } }";

describe("connecting", () => {
  test("the authorization URL carries the client, redirect URI and a fresh state; only admins may start", async () => {
    const url = new URL(data<{ authorizationUrl: string }>(await start(a.members.owner.accessToken, "notion"), "startIntegration").authorizationUrl);
    expect(url.origin).toBe(notion.url);
    expect(url.searchParams.get("client_id")).toBe(notion.clientId);
    expect(url.searchParams.get("redirect_uri")).toBe("https://quire.test/oauth/notion/callback");
    expect(url.searchParams.get("response_type")).toBe("code");
    expect(url.searchParams.get("state")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(codeOf(await start(a.members.member.accessToken, "notion"))).toBe("FORBIDDEN");
    for (const returnTo of ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"]) {
      expect(codeOf(await start(a.members.admin.accessToken, "notion", returnTo))).toBe("BAD_INPUT");
    }
    expect(codeOf(await start(a.members.admin.accessToken, "notion", `${appOrigin}/done`))).toBeNull();
  });

  test("the callback stores the integration and its sealed tokens, and redirects to returnTo", async () => {
    const id = await connect(a, "notion");
    const [row] = await query(db.name, "select provider, status, external_id, external_name from app_public.integrations where id = $1", [id], "root");
    expect(row).toEqual({ provider: "notion", status: "connected", external_id: "workspace-1", external_name: "Acme Docs" });
    const [secret] = await query<{ key_id: string; access_ciphertext: Buffer; refresh_ciphertext: Buffer | null }>(
      db.name,
      "select key_id, access_ciphertext, refresh_ciphertext from app_private.integration_secrets where integration_id = $1",
      [id],
      "root",
    );
    expect(secret!.key_id).toBe("k1");
    // No token is stored in the clear: none of the tokens the fake issued appears in the stored bytes.
    const stored = Buffer.concat([secret!.access_ciphertext, secret!.refresh_ciphertext ?? Buffer.alloc(0)]).toString("latin1");
    expect(stored).not.toMatch(/ntn_/);
  });

  test("a replayed, expired, other-provider or unknown state stores nothing", async () => {
    const integrations = await count("app_public.integrations");
    const state = await stateFor(a, "notion");
    const code = notion.issueCode();
    // The other provider's callback consumes nothing of this state's and refuses it.
    expect((await callback("confluence", { state, code })).searchParams.get("error")).toBe("INVALID_STATE");
    expect((await callback("notion", { state, code })).searchParams.get("status")).toBe("connected");
    expect((await callback("notion", { state, code: notion.issueCode() })).searchParams.get("error")).toBe("INVALID_STATE");
    const expired = await stateFor(a, "notion");
    await query(db.name, "update app_private.oauth_states set expires_at = now() - interval '1 second' where used_at is null", [], "root");
    expect((await callback("notion", { state: expired, code: notion.issueCode() })).searchParams.get("error")).toBe("INVALID_STATE");
    expect((await callback("notion", { state: "made-up", code: notion.issueCode() })).searchParams.get("error")).toBe("INVALID_STATE");
    expect((await callback("notion", { code: notion.issueCode() })).searchParams.get("error")).toBe("INVALID_STATE");
    // Reconnecting the same workspace reused its row: the count is unchanged.
    expect(await count("app_public.integrations")).toBe(integrations);
  });

  test("denied consent, a refused code and a demoted admin store nothing", async () => {
    const c = await createTenant(db, "Gamma");
    const deny = await callback("notion", { state: await stateFor(c, "notion"), error: "access_denied" });
    expect(deny.origin + deny.pathname).toBe(`${appOrigin}/settings/integrations`);
    expect(deny.searchParams.get("error")).toBe("ACCESS_DENIED");
    expect((await callback("notion", { state: await stateFor(c, "notion"), code: "not-a-code" })).searchParams.get("error")).toBe("PROVIDER_ERROR");
    const state = await stateFor(c, "notion");
    await query(db.name, "update app_public.memberships set role = 'member' where user_id = $1", [c.members.admin.userId], "root");
    expect((await callback("notion", { state, code: notion.issueCode() })).searchParams.get("error")).toBe("FORBIDDEN");
    expect(await count("app_public.integrations where org_id = $1 and provider = 'notion' and external_id = 'workspace-1'", [c.orgId])).toBe(0);
    expect(await count("app_private.integration_secrets where org_id = $1", [c.orgId])).toBe(0);
  });
});

describe("browsing, importing, syncing and publishing with Notion", () => {
  let integrationId: string;
  let roadmap: string;
  let handbook: string;
  beforeAll(async () => {
    integrationId = await connect(a, "notion");
    roadmap = notion.addPage({
      title: "Roadmap 2027",
      blocks: [
        { type: "heading_1", heading_1: { rich_text: [{ type: "text", text: { content: "Goals" } }] } },
        { type: "bulleted_list_item", bulleted_list_item: { rich_text: [{ type: "text", text: { content: "Ship sync" } }] } },
      ],
    });
    handbook = notion.addPage({
      title: "Handbook",
      blocks: [{ type: "paragraph", paragraph: { rich_text: [{ type: "text", text: { content: "Be kind." } }] } }],
    });
  });

  test("integrationPages lists what the workspace shares; another organization cannot use the integration", async () => {
    const list = data<{ pages: Array<{ externalId: string; title: string }> }>(
      await gql(a.members.member.accessToken, pagesQuery, { i: integrationId, q: "roadmap" }),
      "integrationPages",
    );
    expect(list.pages.map((p) => p.externalId)).toEqual([roadmap]);
    expect(codeOf(await gql(a.members.viewer.accessToken, pagesQuery, { i: integrationId }))).toBe("FORBIDDEN");
    expect(codeOf(await gql(b.members.owner.accessToken, pagesQuery, { i: integrationId }))).toBe("NOT_FOUND");
    expect(codeOf(await gql(b.members.owner.accessToken, '{ integration(rowId: "' + integrationId + '") { rowId } }'))).toBeNull();
    expect((await gql(b.members.owner.accessToken, '{ integration(rowId: "' + integrationId + '") { rowId } }')).data!.integration).toBeNull();
  });

  test("importDocuments makes Markdown documents; importing again updates the same document", async () => {
    const importPages = (ids: string[]) =>
      gql(
        a.members.member.accessToken,
        "mutation ($i: UUID!, $e: [String]!) { importDocuments(input: { integrationId: $i, externalIds: $e }) { job { rowId } } }",
        {
          i: integrationId,
          e: ids,
        },
      );
    const first = data<{ job: { rowId: string } }>(await importPages([roadmap, handbook]), "importDocuments").job.rowId;
    expect(await settled(first)).toEqual({ status: "succeeded", error_code: null });
    const [doc] = await query<{ id: string; title: string; content: string; revision: number; source: string }>(
      db.name,
      "select id, title, content, revision, source from app_public.documents where external_id = $1",
      [roadmap],
      "root",
    );
    expect(doc).toEqual(expect.objectContaining({ title: "Roadmap 2027", source: "notion", revision: 1 }));
    expect(doc!.content).toContain("# Goals");
    expect(doc!.content).toContain("- Ship sync");
    const [run] = await query(
      db.name,
      "select status, seen, imported, updated, skipped, failed from app_public.integration_sync_runs where job_id = $1",
      [first],
      "root",
    );
    expect(run).toEqual({ status: "finished", seen: 2, imported: 2, updated: 0, skipped: 0, failed: 0 });

    notion.pages.get(roadmap)!.title = "Roadmap 2027 (revised)";
    const second = data<{ job: { rowId: string } }>(await importPages([roadmap]), "importDocuments").job.rowId;
    await settled(second);
    const [again] = await query<{ id: string; title: string; revision: number }>(
      db.name,
      "select id, title, revision from app_public.documents where external_id = $1",
      [roadmap],
      "root",
    );
    expect(again).toEqual({ id: doc!.id, title: "Roadmap 2027 (revised)", revision: 1 });
    expect(await count("app_public.documents where external_id = $1", [roadmap])).toBe(1);
    // Viewers cannot import; another organization cannot import with this integration.
    expect(
      codeOf(
        await gql(
          a.members.viewer.accessToken,
          'mutation ($i: UUID!) { importDocuments(input: { integrationId: $i, externalIds: ["x"] }) { job { rowId } } }',
          { i: integrationId },
        ),
      ),
    ).toBe("FORBIDDEN");
    expect(
      codeOf(
        await gql(b.members.owner.accessToken, 'mutation ($i: UUID!) { importDocuments(input: { integrationId: $i, externalIds: ["x"] }) { job { rowId } } }', {
          i: integrationId,
        }),
      ),
    ).toBe("NOT_FOUND");
  });

  test("a sync flags pages deleted at the source, and a page it cannot read makes the run partial", async () => {
    notion.pages.get(handbook)!.archived = true;
    const sync = async () =>
      data<{ job: { rowId: string } }>(
        await gql(a.members.member.accessToken, "mutation ($i: UUID!) { syncIntegration(input: { integrationId: $i }) { job { rowId } } }", {
          i: integrationId,
        }),
        "syncIntegration",
      ).job.rowId;
    const first = await sync();
    await settled(first);
    const [run] = await query(
      db.name,
      "select status, seen, skipped, deleted_at_source, failed from app_public.integration_sync_runs where job_id = $1",
      [first],
      "root",
    );
    expect(run).toEqual({ status: "finished", seen: 2, skipped: 1, deleted_at_source: 1, failed: 0 });
    expect(await count("app_public.documents where external_id = $1 and metadata ? 'deletedAtSource'", [handbook])).toBe(1);

    // The roadmap's blocks answer 500 on every try: that page fails, the run is partial, not finished.
    for (let i = 0; i < 3; i++)
      notion.fault({
        match: (r) => r.path.includes(`/v1/blocks/${roadmap}/children`),
        reply: { status: 500, json: { object: "error", status: 500, code: "internal_server_error", message: "boom" } },
      });
    const second = await sync();
    await settled(second);
    const [partial] = await query(db.name, "select status, failed from app_public.integration_sync_runs where job_id = $1", [second], "root");
    expect(partial).toEqual({ status: "partial", failed: 1 });
    const [integration] = await query(db.name, "select last_sync_status from app_public.integrations where id = $1", [integrationId], "root");
    expect(integration).toEqual({ last_sync_status: "partial" });
  });

  test("publishing the same summary to the same page twice updates it rather than duplicating it", async () => {
    const parent = notion.addPage({ title: "Summaries" });
    const [summary] = await query<{ id: string }>(db.name, "select id from app_public.summaries where org_id = $1 limit 1", [a.orgId], "root");
    const publish = async () =>
      data<{ job: { rowId: string } }>(
        await gql(
          a.members.member.accessToken,
          "mutation ($s: UUID!, $i: UUID!, $p: String) { publishSummary(input: { summaryId: $s, integrationId: $i, parentPageId: $p }) { job { rowId } } }",
          {
            s: summary!.id,
            i: integrationId,
            p: parent,
          },
        ),
        "publishSummary",
      ).job.rowId;
    expect(await settled(await publish())).toEqual({ status: "succeeded", error_code: null });
    const children = () => [...notion.pages.values()].filter((p) => p.parentId === parent && !p.archived);
    expect(children()).toHaveLength(1);
    expect(await settled(await publish())).toEqual({ status: "succeeded", error_code: null });
    expect(children()).toHaveLength(1);
    expect(await count("app_public.summary_publications where summary_id = $1 and integration_id = $2", [summary!.id, integrationId])).toBe(1);
    const [s] = await query<{ published_url: string }>(db.name, "select published_url from app_public.summaries where id = $1", [summary!.id], "root");
    expect(s!.published_url).toMatch(/^https?:\/\//);
    // Publishing to Notion without a parent page is refused before anything is queued.
    expect(
      codeOf(
        await gql(
          a.members.member.accessToken,
          "mutation ($s: UUID!, $i: UUID!) { publishSummary(input: { summaryId: $s, integrationId: $i }) { job { rowId } } }",
          { s: summary!.id, i: integrationId },
        ),
      ),
    ).toBe("BAD_INPUT");
  });

  test("disconnecting revokes at Notion, deletes the sealed tokens and refuses new jobs", async () => {
    const c = await createTenant(db, "Delta");
    const id = await connect(c, "notion");
    expect(
      codeOf(
        await gql(c.members.member.accessToken, "mutation ($i: UUID!) { disconnectIntegration(input: { integrationId: $i }) { integration { status } } }", {
          i: id,
        }),
      ),
    ).toBe("FORBIDDEN");
    const revokes = notion.requests.filter((r) => r.path === "/v1/oauth/revoke").length;
    const body = await gql(
      c.members.admin.accessToken,
      "mutation ($i: UUID!) { disconnectIntegration(input: { integrationId: $i }) { integration { status } } }",
      { i: id },
    );
    expect(data<{ integration: { status: string } }>(body, "disconnectIntegration").integration.status).toBe("disconnected");
    expect(notion.requests.filter((r) => r.path === "/v1/oauth/revoke").length).toBe(revokes + 1);
    expect(await count("app_private.integration_secrets where integration_id = $1", [id])).toBe(0);
    expect(
      codeOf(await gql(c.members.member.accessToken, "mutation ($i: UUID!) { syncIntegration(input: { integrationId: $i }) { job { rowId } } }", { i: id })),
    ).toBe("BAD_INPUT");
  });
});

describe("Confluence", () => {
  let integrationId: string;
  let space: string;
  beforeAll(async () => {
    integrationId = await connect(b, "confluence");
    space = atlassian.addSpace({ key: "ENG", name: "Engineering" });
    atlassian.addPage({ spaceId: space, title: "Architecture", storage: "<h1>Overview</h1><p>Postgres <strong>first</strong>.</p>" });
  });
  const refreshes = () =>
    atlassian.requests.filter((r) => r.path === "/oauth/token" && (r.body as { grant_type?: string } | undefined)?.grant_type === "refresh_token").length;

  test("an expired access token is refreshed once for concurrent callers, and the rotated refresh token is stored", async () => {
    const [before] = await query<{ refresh_ciphertext: Buffer }>(
      db.name,
      "select refresh_ciphertext from app_private.integration_secrets where integration_id = $1",
      [integrationId],
      "root",
    );
    for (const token of atlassian.requests.map((r) => /^Bearer (.+)$/.exec(r.headers.authorization ?? "")?.[1]).filter(Boolean)) atlassian.expire(token!);
    const startRefreshes = refreshes();
    const answers = await Promise.all([1, 2, 3].map(() => gql(b.members.member.accessToken, pagesQuery, { i: integrationId })));
    for (const answer of answers) expect(data<{ pages: unknown[] }>(answer, "integrationPages").pages).toHaveLength(1);
    expect(refreshes() - startRefreshes).toBe(1);
    const [after] = await query<{ refresh_ciphertext: Buffer }>(
      db.name,
      "select refresh_ciphertext from app_private.integration_secrets where integration_id = $1",
      [integrationId],
      "root",
    );
    expect(after!.refresh_ciphertext.equals(before!.refresh_ciphertext)).toBe(false);
  });

  test("spaces are listed, and a summary is published into a space once, then updated", async () => {
    const spaces = data<{ spaces: Array<{ id: string; key: string }> }>(
      await gql(b.members.member.accessToken, "query ($i: UUID!) { integrationSpaces(integrationId: $i) { spaces { id key name url } nextCursor } }", {
        i: integrationId,
      }),
      "integrationSpaces",
    );
    expect(spaces.spaces).toEqual([expect.objectContaining({ id: space, key: "ENG" })]);
    const [summary] = await query<{ id: string }>(db.name, "select id from app_public.summaries where org_id = $1 limit 1", [b.orgId], "root");
    const publish = async () =>
      data<{ job: { rowId: string } }>(
        await gql(
          b.members.member.accessToken,
          "mutation ($s: UUID!, $i: UUID!, $sp: String) { publishSummary(input: { summaryId: $s, integrationId: $i, spaceId: $sp }) { job { rowId } } }",
          {
            s: summary!.id,
            i: integrationId,
            sp: space,
          },
        ),
        "publishSummary",
      ).job.rowId;
    const inSpace = () => [...atlassian.pages.values()].filter((p) => p.spaceId === space && p.title.startsWith("Summary:"));
    expect(await settled(await publish())).toEqual({ status: "succeeded", error_code: null });
    expect(inSpace()).toHaveLength(1);
    expect(await settled(await publish())).toEqual({ status: "succeeded", error_code: null });
    expect(inSpace()).toHaveLength(1);
    expect(inSpace()[0]!.version).toBe(2);
  });

  test("a ciphertext moved to another organization's integration does not open", async () => {
    const other = await connect(a, "confluence");
    await query(
      db.name,
      `update app_private.integration_secrets t set key_id = s.key_id, access_nonce = s.access_nonce, access_ciphertext = s.access_ciphertext
         from app_private.integration_secrets s where s.integration_id = $1 and t.integration_id = $2`,
      [integrationId, other],
      "root",
    );
    const calls = atlassian.requests.length;
    expect(codeOf(await gql(a.members.member.accessToken, pagesQuery, { i: other }))).toBe("INTERNAL");
    expect(atlassian.requests.length).toBe(calls);
  });

  test("invalid_grant marks the integration needs_reauth and tells the organization's subscribers", async () => {
    const live = subscribe<{ integration: { status: string } | null }>(
      app.url,
      b.members.viewer.accessToken,
      "subscription ($i: UUID) { integrationChanged(integrationId: $i) { integration { status } } }",
      { i: integrationId },
    );
    try {
      for (const token of atlassian.requests.map((r) => /^Bearer (.+)$/.exec(r.headers.authorization ?? "")?.[1]).filter(Boolean)) atlassian.expire(token!);
      atlassian.fault({
        match: (r) => r.path === "/oauth/token",
        reply: { status: 400, json: { error: "invalid_grant", error_description: "Unknown or invalid refresh token." } },
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const body = await gql(b.members.member.accessToken, pagesQuery, { i: integrationId });
      expect(body.errors?.[0]?.extensions).toEqual(expect.objectContaining({ code: "UPSTREAM_ERROR", reason: "INVALID_GRANT" }));
      const [row] = await query(db.name, "select status, last_error_code from app_public.integrations where id = $1", [integrationId], "root");
      expect(row).toEqual({ status: "needs_reauth", last_error_code: "INVALID_GRANT" });
      await live.waitFor((e) => e.integration?.status === "needs_reauth");
      expect(
        codeOf(
          await gql(b.members.member.accessToken, "mutation ($i: UUID!) { syncIntegration(input: { integrationId: $i }) { job { rowId } } }", {
            i: integrationId,
          }),
        ),
      ).toBe("BAD_INPUT");
    } finally {
      await live.close();
    }
  });
});
