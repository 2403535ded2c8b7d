// The Confluence client against a fake of Atlassian's authorization server and API gateway on loopback: the 3LO
// consent URL, code exchange with the accessible site picked, ROTATING refresh tokens (the new one returned, the
// old one refused afterwards), spaces and pages with _links.next cursors, CQL title search, pages read as Markdown
// and written from Markdown with the version incremented, and failures mapped to the right codes.
import { codeChallenge, codeVerifier, state } from "../../lib/integrations/oauth.ts";
import { createConfluenceClient, defaultConfluenceScopes, type ConfluenceClientOptions } from "../../lib/integrations/confluence.ts";
import { startFakeAtlassian, type FakeAtlassian } from "../support/fake-atlassian.ts";
import { startFakeLlmServer } from "../support/fake-llm-server.ts";
import { failure, fakeClock } from "./helpers.ts";

let fake: FakeAtlassian;
beforeEach(async () => {
  fake = await startFakeAtlassian();
});
afterEach(async () => {
  await fake.close();
});

function client(options: Partial<ConfluenceClientOptions> = {}) {
  const clock = fakeClock();
  const confluence = createConfluenceClient({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    redirectUri: fake.redirectUri,
    authBaseUrl: fake.url,
    apiBaseUrl: fake.url,
    sleep: clock.sleep,
    now: clock.now,
    ...options,
  });
  return { confluence, clock };
}

test("the consent URL: audience api.atlassian.com, scopes with offline_access, client id, redirect, state, prompt=consent", () => {
  const { confluence } = client();
  const value = state();
  const challenge = codeChallenge(codeVerifier());
  const url = new URL(confluence.authorizationUrl({ state: value, codeChallenge: challenge }));
  expect(`${url.origin}${url.pathname}`).toBe(`${fake.url}/authorize`);
  expect(Object.fromEntries(url.searchParams)).toEqual({
    audience: "api.atlassian.com",
    client_id: fake.clientId,
    scope: "read:page:confluence read:space:confluence write:page:confluence search:confluence offline_access",
    redirect_uri: fake.redirectUri,
    state: value,
    response_type: "code",
    prompt: "consent",
  });
  expect(defaultConfluenceScopes).toContain("offline_access");
  const pkce = new URL(client({ pkce: true }).confluence.authorizationUrl({ state: value, codeChallenge: challenge }));
  expect([pkce.searchParams.get("code_challenge"), pkce.searchParams.get("code_challenge_method")]).toEqual([challenge, "S256"]);
});

test("code exchange: credentials in the JSON body; tokens with expiry and scopes; the Confluence site among the accessible ones", async () => {
  const { confluence } = client();
  const code = fake.issueCode();
  const before = Date.now();
  const connection = await confluence.exchangeCode({ code, codeVerifier: codeVerifier() });
  expect(fake.requests[0]).toMatchObject({
    method: "POST",
    path: "/oauth/token",
    body: { grant_type: "authorization_code", code, redirect_uri: fake.redirectUri, client_id: fake.clientId, client_secret: fake.clientSecret },
  });
  expect(fake.requests[1]).toMatchObject({
    method: "GET",
    path: "/oauth/token/accessible-resources",
    headers: { authorization: `Bearer ${connection.tokens.accessToken}` },
  });
  expect(connection.tokens.refreshToken).toMatch(/^atl_refresh_/);
  expect(connection.tokens.scopes).toContain("offline_access");
  expect(connection.tokens.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 3_599_000);
  expect(connection.site).toEqual({ id: fake.site.id, name: "acme", url: "https://acme.atlassian.net", scopes: fake.site.scopes });
  expect(connection.sites.map((site) => site.id)).toEqual(fake.sites.map((site) => site.id));
});

test("refresh tokens rotate: the new one is returned and works; the old one is then refused as INVALID_GRANT", async () => {
  const { confluence } = client();
  const { tokens } = await confluence.exchangeCode({ code: fake.issueCode(), codeVerifier: codeVerifier() });
  const old = tokens.refreshToken!;
  const renewed = await confluence.refresh(old);
  expect(renewed.refreshToken).toMatch(/^atl_refresh_/);
  expect(renewed.refreshToken).not.toBe(old);
  expect(fake.isValidRefreshToken(old)).toBe(false);
  expect(fake.isValidRefreshToken(renewed.refreshToken!)).toBe(true);
  const reused = await failure(confluence.refresh(old));
  expect(reused).toMatchObject({ code: "INVALID_GRANT", status: 403, retryable: false });
  expect((await confluence.refresh(renewed.refreshToken!)).refreshToken).not.toBe(renewed.refreshToken);
  const unknown = await failure(confluence.refresh("atl_refresh_never-issued-TOKEN"));
  expect(unknown.code).toBe("INVALID_GRANT");
  expect(unknown.message).toBe(
    "The Atlassian authorization server refused the authorization grant; the integration must be connected again (HTTP 403): invalid_grant: Unknown or invalid refresh token [redacted].",
  );
});

test("a wrong client secret is REJECTED; revoke sends nothing (Atlassian has no revocation endpoint)", async () => {
  const error = await failure(client({ clientSecret: "not-the-secret" }).confluence.refresh("x"));
  expect(error).toMatchObject({
    code: "REJECTED",
    status: 401,
    message: "The Atlassian authorization server refused the client credentials (HTTP 401): access_denied: Unauthorized",
  });
  await client().confluence.revoke(fake.accessToken);
  expect(fake.requests).toHaveLength(1);
});

test("listSpaces and listPages follow _links.next cursors; pages come with absolute URLs, dates and parents", async () => {
  fake.pageSize = 2;
  const spaceIds = ["ENG", "OPS", "HR"].map((key) => fake.addSpace({ key, name: `${key} space` }));
  const root = fake.addPage({ spaceId: spaceIds[0]!, title: "Root", storage: "<p>r</p>", modifiedAt: "2030-01-01T00:00:00.000Z" });
  for (let i = 0; i < 4; i++)
    fake.addPage({ spaceId: spaceIds[0]!, title: `Page ${i}`, storage: "<p>x</p>", parentId: root, modifiedAt: `2030-02-0${i + 1}T00:00:00.000Z` });
  const { confluence } = client();
  const spaces = [];
  let cursor: string | null = null;
  do {
    const result: Awaited<ReturnType<typeof confluence.listSpaces>> = await confluence.listSpaces(fake.accessToken, fake.site.id, { cursor });
    spaces.push(...result.spaces);
    cursor = result.nextCursor;
  } while (cursor);
  expect(spaces.map((space) => [space.key, space.url])).toEqual([
    ["ENG", "https://acme.atlassian.net/wiki/spaces/ENG"],
    ["OPS", "https://acme.atlassian.net/wiki/spaces/OPS"],
    ["HR", "https://acme.atlassian.net/wiki/spaces/HR"],
  ]);
  const titles: string[] = [];
  do {
    const result: Awaited<ReturnType<typeof confluence.listPages>> = await confluence.listPages(fake.accessToken, fake.site.id, {
      cursor,
      spaceId: spaceIds[0]!,
    });
    titles.push(...result.pages.map((page) => page.title));
    if (result.pages[0]?.title === "Page 3") {
      expect(result.pages[0]).toEqual({
        externalId: expect.any(String),
        title: "Page 3",
        url: expect.stringMatching(/^https:\/\/acme\.atlassian\.net\/wiki\/spaces\/ENG\/pages\/\d+\/Page\+3$/),
        lastEditedAt: new Date("2030-02-04T00:00:00.000Z"),
        parentId: root,
      });
    }
    cursor = result.nextCursor;
  } while (cursor);
  expect(titles).toEqual(["Page 3", "Page 2", "Page 1", "Page 0", "Root"]);
  const listRequests = fake.requests.filter((r) => r.path.includes("/api/v2/pages?"));
  expect(listRequests).toHaveLength(3);
  expect(new URL(listRequests[0]!.path, "http://x").searchParams.get("space-id")).toBe(spaceIds[0]);
});

test("a query searches titles with CQL (in the space, by its key); quotes in the query are escaped", async () => {
  const eng = fake.addSpace({ key: "ENG", name: "Engineering" });
  const ops = fake.addSpace({ key: "OPS", name: "Operations" });
  fake.addPage({ spaceId: eng, title: 'Runbook "alpha"', storage: "" });
  fake.addPage({ spaceId: ops, title: 'Runbook "alpha" (ops)', storage: "" });
  fake.addPage({ spaceId: eng, title: "Design", storage: "" });
  const { confluence } = client();
  const { pages, nextCursor } = await confluence.listPages(fake.accessToken, fake.site.id, { query: 'runbook "alpha"', spaceId: eng });
  expect(pages.map((page) => page.title)).toEqual(['Runbook "alpha"']);
  expect(nextCursor).toBeNull();
  const search = fake.requests.find((r) => r.path.includes("/rest/api/content/search"))!;
  expect(new URL(search.path, "http://x").searchParams.get("cql")).toBe('type = page AND title ~ "runbook \\"alpha\\"" AND space = "ENG"');
});

test("fetchPage: the storage body as Markdown, with title, version, date and URL", async () => {
  const space = fake.addSpace({ key: "ENG", name: "Engineering" });
  const id = fake.addPage({
    spaceId: space,
    title: "Guide",
    storage: "<h2>Setup</h2><p>Run <code>make</code>.</p><ul><li>a</li></ul>",
    modifiedAt: "2030-03-01T10:00:00.000Z",
  });
  const { confluence } = client();
  expect(await confluence.fetchPage(fake.accessToken, fake.site.id, id)).toEqual({
    externalId: id,
    title: "Guide",
    url: `https://acme.atlassian.net/wiki/spaces/ENG/pages/${id}/Guide`,
    lastEditedAt: new Date("2030-03-01T10:00:00.000Z"),
    markdown: "## Setup\n\nRun `make`.\n\n- a",
    version: 1,
  });
  expect(fake.requests[0]!.path).toBe(`/ex/confluence/${fake.site.id}/wiki/api/v2/pages/${id}?body-format=storage`);
});

test("createPage and updatePage: storage from Markdown, version incremented, and the content reads back the same", async () => {
  const space = fake.addSpace({ key: "ENG", name: "Engineering" });
  const parent = fake.addPage({ spaceId: space, title: "Parent", storage: "" });
  const { confluence } = client();
  const markdown = "# Plan\n\n- [ ] write \\<docs> & ship\n\n```sql\nselect 1;\n```";
  const created = await confluence.createPage(fake.accessToken, fake.site.id, { spaceId: space, parentId: parent, title: "Plan", markdown });
  expect(created).toEqual({ externalId: expect.any(String), url: expect.stringContaining(`/pages/${created.externalId}/Plan`), version: 1 });
  expect(fake.pages.get(created.externalId)).toMatchObject({ parentId: parent, version: 1 });
  expect((await confluence.fetchPage(fake.accessToken, fake.site.id, created.externalId)).markdown).toBe(markdown);
  const updated = await confluence.updatePage(fake.accessToken, fake.site.id, created.externalId, { title: "Plan v2", markdown: "Done." });
  expect(updated.version).toBe(2);
  expect(fake.pages.get(created.externalId)).toMatchObject({ title: "Plan v2", storage: "<p>Done.</p>", version: 2 });
  const put = fake.requests.find((r) => r.method === "PUT")!;
  expect(put.body).toEqual({
    id: created.externalId,
    status: "current",
    title: "Plan v2",
    body: { representation: "storage", value: "<p>Done.</p>" },
    version: { number: 2 },
  });
});

test("updatePage loses a race to another editor: 409 is REJECTED with Confluence's reason", async () => {
  const space = fake.addSpace({ key: "ENG", name: "Engineering" });
  const id = fake.addPage({ spaceId: space, title: "Busy", storage: "" });
  fake.fault({
    match: (r) => r.method === "PUT",
    reply: { status: 409, json: { errors: [{ status: 409, code: "CONFLICT", title: "Version must be incremented on update. Current version is: 3" }] } },
  });
  const error = await failure(client().confluence.updatePage(fake.accessToken, fake.site.id, id, { title: "Busy", markdown: "x" }));
  expect(error).toMatchObject({
    code: "REJECTED",
    status: 409,
    message: "The Confluence API rejected the request (HTTP 409): Version must be incremented on update. Current version is: 3",
  });
});

test("401: an expired token is AUTH_EXPIRED (not retried, token masked); a missing scope is FORBIDDEN", async () => {
  fake.expire(fake.accessToken);
  const { confluence } = client();
  const expired = await failure(confluence.listSpaces(fake.accessToken, fake.site.id));
  expect(expired).toMatchObject({
    code: "AUTH_EXPIRED",
    retryable: false,
    message: "The Confluence API refused the access token (HTTP 401): Unauthorized; token [redacted] is expired",
  });
  expect(fake.requests).toHaveLength(1);
  fake.fault({ reply: { status: 401, json: { code: 401, message: "Unauthorized; scope does not match" } } });
  expect(await failure(confluence.listSpaces("any-token", fake.site.id))).toMatchObject({ code: "FORBIDDEN", status: 401 });
});

test("503 then success is retried; 429's Retry-After is honoured; a redirect to another host is refused", async () => {
  const space = fake.addSpace({ key: "ENG", name: "Engineering" });
  fake.addPage({ spaceId: space, title: "A", storage: "" });
  fake.fault({ reply: { status: 503, json: { message: "down" } } });
  fake.fault({ reply: { status: 429, headers: { "retry-after": "3" } } });
  const { confluence, clock } = client();
  expect((await confluence.listPages(fake.accessToken, fake.site.id)).pages).toHaveLength(1);
  expect(fake.requests).toHaveLength(3);
  expect(clock.state.waits).toHaveLength(2);
  expect(clock.state.waits[1]).toBe(3_000);
  const other = await startFakeLlmServer(() => ({ json: [] }));
  try {
    fake.fault({ reply: { status: 302, headers: { location: `${other.url}/oauth/token/accessible-resources` } } });
    expect(await failure(confluence.accessibleResources(fake.accessToken))).toMatchObject({ code: "BAD_RESPONSE" });
    expect(other.requests).toHaveLength(0);
  } finally {
    await other.close();
  }
});
