// The Notion client against a fake Notion API on loopback: the OAuth flow (authorization URL, code exchange with
// HTTP Basic client credentials, rotating refresh, revocation), search pagination, pages read in full (paginated
// and nested children), pages published within Notion's request limits and rewritten idempotently, and the failure
// handling that matters in production: 429 honoured, 5xx retried, timeouts, expired tokens not retried, redirects
// to other hosts refused, pacing to ~3 requests per second, and messages that never carry a token or the secret.
import { codeChallenge, codeVerifier, state } from "../../lib/integrations/oauth.ts";
import { notionBlocksToMarkdown } from "../../lib/integrations/formats/notion-blocks.ts";
import { createNotionClient, type NotionClientOptions } from "../../lib/integrations/notion.ts";
import { parseMarkdown, renderMarkdown } from "../../lib/integrations/formats/markdown.ts";
import { startFakeNotion, type FakeNotion } from "../support/fake-notion.ts";
import { startFakeLlmServer } from "../support/fake-llm-server.ts";
import { failure, fakeClock, timedFetch } from "./helpers.ts";

let fake: FakeNotion;
beforeEach(async () => {
  fake = await startFakeNotion();
});
afterEach(async () => {
  await fake.close();
});

/** A client for the fake on a virtual clock (no real waiting), unpaced unless asked. */
function client(options: Partial<NotionClientOptions> = {}) {
  const clock = fakeClock();
  const notion = createNotionClient({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    redirectUri: fake.redirectUri,
    authBaseUrl: fake.url,
    apiBaseUrl: fake.url,
    requestsPerSecond: null,
    sleep: clock.sleep,
    now: clock.now,
    ...options,
  });
  return { notion, clock };
}

const text = (content: string) => ({ type: "text", text: { content, link: null } });
const paragraph = (content: string) => ({ object: "block", type: "paragraph", paragraph: { rich_text: [text(content)] } });
const normalized = (markdown: string) => renderMarkdown(parseMarkdown(markdown));

test("the authorization URL: Notion's authorize endpoint with client id, redirect URI, state, owner=user; PKCE only when enabled", () => {
  const { notion } = client();
  const challenge = codeChallenge(codeVerifier());
  const value = state();
  const url = new URL(notion.authorizationUrl({ state: value, codeChallenge: challenge }));
  expect(`${url.origin}${url.pathname}`).toBe(`${fake.url}/v1/oauth/authorize`);
  expect(Object.fromEntries(url.searchParams)).toEqual({
    client_id: fake.clientId,
    response_type: "code",
    owner: "user",
    redirect_uri: fake.redirectUri,
    state: value,
  });
  const pkce = new URL(client({ pkce: true }).notion.authorizationUrl({ state: value, codeChallenge: challenge }));
  expect(pkce.searchParams.get("code_challenge")).toBe(challenge);
  expect(pkce.searchParams.get("code_challenge_method")).toBe("S256");
});

test("code exchange: HTTP Basic client credentials, Notion-Version, the code and redirect URI; tokens and workspace returned", async () => {
  const { notion } = client();
  const code = fake.issueCode();
  const connection = await notion.exchangeCode({ code, codeVerifier: codeVerifier() });
  expect(connection).toMatchObject({ workspaceId: "workspace-1", workspaceName: "Acme Docs", botId: "bot-1", scopes: [] });
  expect(connection.tokens).toMatchObject({ refreshToken: expect.stringMatching(/^ntn_refresh_/), expiresAt: null, scopes: [] });
  expect(fake.isValid(connection.tokens.accessToken)).toBe(true);
  const [request] = fake.requests;
  expect(request).toMatchObject({ method: "POST", path: "/v1/oauth/token", body: { grant_type: "authorization_code", code, redirect_uri: fake.redirectUri } });
  expect(request!.headers.authorization).toBe(`Basic ${Buffer.from(`${fake.clientId}:${fake.clientSecret}`).toString("base64")}`);
  expect(request!.headers["notion-version"]).toBe("2022-06-28");
});

test("a used or unknown code is INVALID_GRANT, not retried; the message carries neither the code nor the secret", async () => {
  const { notion } = client();
  const code = fake.issueCode();
  await notion.exchangeCode({ code, codeVerifier: codeVerifier() });
  const error = await failure(notion.exchangeCode({ code, codeVerifier: codeVerifier() }));
  expect(error).toMatchObject({ code: "INVALID_GRANT", status: 400, retryable: false });
  expect(error.message).toBe(
    "The Notion authorization server refused the authorization grant; the integration must be connected again (HTTP 400): invalid_grant: Invalid code: [redacted]",
  );
  expect(fake.requests).toHaveLength(2);
});

test("a wrong client secret is REJECTED (a configuration problem, not a reason to re-authorize)", async () => {
  const { notion } = client({ clientSecret: "wrong-secret" });
  const error = await failure(notion.exchangeCode({ code: fake.issueCode(), codeVerifier: codeVerifier() }));
  expect(error).toMatchObject({ code: "REJECTED", status: 401 });
  expect(error.message).not.toContain("wrong-secret");
});

test("refresh returns new tokens and a new refresh token; the old refresh token is then INVALID_GRANT, with nothing secret in the message", async () => {
  const { notion } = client();
  const old = fake.issueRefreshToken();
  const tokens = await notion.refresh(old);
  expect(tokens.refreshToken).not.toBe(old);
  expect(fake.isValid(tokens.accessToken)).toBe(true);
  expect(fake.requests[0]).toMatchObject({ body: { grant_type: "refresh_token", refresh_token: old } });
  const error = await failure(notion.refresh(old));
  expect(error.code).toBe("INVALID_GRANT");
  expect(error.message).not.toContain(old);
  expect(error.message).not.toContain(fake.clientSecret);
  expect(error.message).toContain("[redacted]");
});

test("revoke invalidates the access token; revoking it again is fine", async () => {
  const { notion } = client();
  await notion.revoke(fake.accessToken);
  expect(fake.isValid(fake.accessToken)).toBe(false);
  expect(fake.requests[0]).toMatchObject({ method: "POST", path: "/v1/oauth/revoke", body: { token: fake.accessToken } });
  await notion.revoke(fake.accessToken);
});

test("listPages: search for pages, most recently edited first, cursor by cursor; a query filters by title", async () => {
  for (let i = 0; i < 5; i++) fake.addPage({ title: `Page ${i}`, lastEditedTime: `2030-01-0${i + 1}T00:00:00.000Z` });
  const parent = fake.addPage({ title: "Parent", lastEditedTime: "2029-01-01T00:00:00.000Z" });
  const child = fake.addPage({ title: "Child", parentId: parent, lastEditedTime: "2029-01-01T00:00:00.000Z" });
  const { notion } = client();
  const titles: string[] = [];
  let cursor: string | null = null;
  do {
    const result = await notion.listPages(fake.accessToken, { cursor, pageSize: 3 });
    titles.push(...result.pages.map((page) => page.title));
    cursor = result.nextCursor;
  } while (cursor);
  expect(titles).toEqual(["Page 4", "Page 3", "Page 2", "Page 1", "Page 0", expect.any(String), expect.any(String)]);
  expect(fake.requests.map((r) => r.body)).toEqual([
    { filter: { property: "object", value: "page" }, sort: { direction: "descending", timestamp: "last_edited_time" }, page_size: 3 },
    expect.objectContaining({ start_cursor: expect.any(String) }),
    expect.objectContaining({ start_cursor: expect.any(String) }),
  ]);
  const { pages, nextCursor } = await notion.listPages(fake.accessToken, { query: "chil" });
  expect(nextCursor).toBeNull();
  expect(pages).toEqual([
    {
      externalId: child,
      title: "Child",
      url: expect.stringMatching(/^https:\/\/www\.notion\.so\//),
      lastEditedAt: new Date("2029-01-01T00:00:00.000Z"),
      parentId: parent,
    },
  ]);
});

test("fetchPage reads every page of children (3 requests at 2 per page) and nested children, as Markdown", async () => {
  fake.childrenPageSize = 2;
  const id = fake.addPage({
    title: "Handbook",
    blocks: [
      { object: "block", type: "heading_1", heading_1: { rich_text: [text("Handbook")] } },
      paragraph("Intro"),
      {
        object: "block",
        type: "toggle",
        toggle: { rich_text: [text("More")], children: [paragraph("Hidden 1"), paragraph("Hidden 2"), paragraph("Hidden 3")] },
      },
      {
        object: "block",
        type: "bulleted_list_item",
        bulleted_list_item: {
          rich_text: [text("Item")],
          children: [{ object: "block", type: "bulleted_list_item", bulleted_list_item: { rich_text: [text("Sub")] } }],
        },
      },
      { object: "block", type: "code", code: { rich_text: [text("echo hi")], language: "shell" } },
    ],
  });
  const { notion } = client();
  const page = await notion.fetchPage(fake.accessToken, id);
  expect(page).toEqual({
    externalId: id,
    title: "Handbook",
    url: expect.stringContaining(id.replace(/-/g, "")),
    lastEditedAt: expect.any(Date),
    markdown: "# Handbook\n\nIntro\n\n- More\n\n  Hidden 1\n\n  Hidden 2\n\n  Hidden 3\n- Item\n  - Sub\n\n```shell\necho hi\n```",
  });
  const children = fake.requests.filter((r) => r.path.startsWith(`/v1/blocks/${id}/children`));
  expect(children.map((r) => new URL(r.path, "http://x").searchParams.get("start_cursor") !== null)).toEqual([false, true, true]);
});

test("fetchPage: nesting below maxDepth is marked, not read; an archived or missing page is NOT_FOUND", async () => {
  const nested = (depth: number): Record<string, unknown> => ({
    object: "block",
    type: "bulleted_list_item",
    bulleted_list_item: { rich_text: [text(`level ${depth}`)], ...(depth < 4 ? { children: [nested(depth + 1)] } : {}) },
  });
  const id = fake.addPage({ title: "Deep", blocks: [nested(1)] });
  const { notion } = client({ maxDepth: 2 });
  expect((await notion.fetchPage(fake.accessToken, id)).markdown).toBe(
    "- level 1\n  - level 2\n\n    <!-- notion: nested content below the depth limit not included -->",
  );
  fake.pages.get(id)!.archived = true;
  expect(await failure(notion.fetchPage(fake.accessToken, id))).toMatchObject({ code: "NOT_FOUND", message: "The Notion page is archived." });
  expect(await failure(notion.fetchPage(fake.accessToken, "00000000-0000-0000-0000-000000000000"))).toMatchObject({ code: "NOT_FOUND", status: 404 });
});

test("createPage publishes long, deeply nested Markdown within Notion's limits (the fake enforces them)", async () => {
  const parent = fake.addPage({ title: "Published" });
  const markdown = [
    "# Report",
    ...Array.from({ length: 230 }, (_, i) => `Paragraph ${i} with **bold** text.`),
    `${"Long ".repeat(1_000).trim()}.`,
    "- level 1\n  - level 2\n    - level 3\n      - level 4\n- back",
    "| k | v |\n| --- | --- |\n| a | 1 |",
    "```javascript\nconsole.log(1)\n```",
  ].join("\n\n");
  const { notion } = client();
  const page = await notion.createPage(fake.accessToken, { parentPageId: parent, title: "Q3 report", markdown });
  expect(fake.pages.get(page.externalId)).toMatchObject({ title: "Q3 report", parentId: parent });
  expect(notionBlocksToMarkdown(fake.contentOf(page.externalId))).toBe(normalized(markdown));
  const writes = fake.requests.filter((r) => r.method !== "GET");
  expect(writes[0]).toMatchObject({ method: "POST", path: "/v1/pages" });
  expect(writes.length).toBeGreaterThanOrEqual(4);
  for (const write of writes) expect(((write.body as { children?: unknown[] }).children ?? []).length).toBeLessThanOrEqual(100);
});

test("createPage is all or nothing: when appending the content fails, the new page is archived again", async () => {
  const parent = fake.addPage({ title: "Published" });
  fake.fault({
    match: (r) => r.method === "PATCH" && r.path.endsWith("/children"),
    reply: { status: 400, json: { object: "error", status: 400, code: "validation_error", message: "no" } },
  });
  const { notion } = client();
  const markdown = Array.from({ length: 150 }, (_, i) => `P${i}`).join("\n\n");
  expect(await failure(notion.createPage(fake.accessToken, { parentPageId: parent, title: "Broken", markdown }))).toMatchObject({ code: "REJECTED" });
  const created = [...fake.pages.values()].find((page) => page.title === "Broken");
  expect(created?.archived).toBe(true);
});

test("replacePageContent rewrites title and content, keeps child pages, and gives the same page when repeated", async () => {
  const id = fake.addPage({ title: "Old", blocks: [paragraph("old 1"), paragraph("old 2")] });
  const subPage = fake.addPage({ title: "Sub", parentId: id });
  fake.pages.get(id)!.children.push(subPage);
  fake.blocks.set(subPage, { id: subPage, type: "child_page", data: { title: "Sub" }, children: [], parentId: id, archived: false });
  const { notion } = client();
  const markdown = "## New\n\n- a\n  - b\n\nDone.";
  const first = await notion.replacePageContent(fake.accessToken, id, { title: "New title", markdown });
  expect(first.externalId).toBe(id);
  expect(fake.pages.get(id)!.title).toBe("New title");
  const expected = `${normalized(markdown)}\n\n<!-- notion: child page "Sub" not included -->`;
  const contentWithSubPageLast = () => {
    const content = fake.contentOf(id);
    return notionBlocksToMarkdown([...content.filter((b) => b.type !== "child_page"), ...content.filter((b) => b.type === "child_page")]);
  };
  expect(contentWithSubPageLast()).toBe(expected);
  await notion.replacePageContent(fake.accessToken, id, { title: "New title", markdown });
  expect(contentWithSubPageLast()).toBe(expected);
  expect(fake.blocks.get(subPage)!.archived).toBe(false);
});

test("an expired access token is AUTH_EXPIRED at once (no retry), and the message does not contain it", async () => {
  fake.expire(fake.accessToken);
  const { notion } = client();
  const error = await failure(notion.listPages(fake.accessToken));
  expect(error).toMatchObject({ code: "AUTH_EXPIRED", status: 401, retryable: false });
  expect(error.message).toBe("The Notion API refused the access token (HTTP 401): API token [redacted] is invalid.");
  expect(fake.requests).toHaveLength(1);
});

test("429: the Retry-After is waited out (virtual clock) and the request repeated: 2 requests", async () => {
  fake.fault({
    reply: { status: 429, headers: { "retry-after": "2" }, json: { object: "error", status: 429, code: "rate_limited", message: "Rate limited" } },
  });
  const { notion, clock } = client();
  await notion.listPages(fake.accessToken);
  expect(fake.requests).toHaveLength(2);
  expect(clock.state.waits).toEqual([2_000]);
});

test("500 then success: retried after a backoff", async () => {
  fake.fault({ reply: { status: 500, json: { object: "error", status: 500, code: "internal_server_error", message: "oops" } } });
  const { notion, clock } = client();
  expect((await notion.listPages(fake.accessToken)).pages).toEqual([]);
  expect(fake.requests).toHaveLength(2);
  expect(clock.state.waits).toHaveLength(1);
});

test("a Notion that never answers: TIMEOUT after maxRetries + 1 attempts", async () => {
  for (let i = 0; i < 3; i++) fake.fault({ reply: "hang" });
  const { notion } = client({ timeoutMs: 300, maxRetries: 2 });
  expect(await failure(notion.listPages(fake.accessToken))).toMatchObject({ code: "TIMEOUT", message: "The Notion API did not answer within 0.3 s." });
  expect(fake.requests).toHaveLength(3);
});

test("a redirect to another host is refused: the token never reaches it", async () => {
  const other = await startFakeLlmServer(() => ({ json: { results: [] } }));
  try {
    fake.fault({ reply: { status: 307, headers: { location: `${other.url}/v1/search` } } });
    const { notion } = client();
    expect(await failure(notion.listPages(fake.accessToken))).toMatchObject({ code: "BAD_RESPONSE", status: 307 });
    expect(other.requests).toHaveLength(0);
  } finally {
    await other.close();
  }
});

test("pacing: by default at most 3 requests per second per token (measured on the virtual clock)", async () => {
  const clock = fakeClock();
  const timed = timedFetch(clock.now);
  const notion = createNotionClient({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    redirectUri: fake.redirectUri,
    apiBaseUrl: fake.url,
    sleep: clock.sleep,
    now: clock.now,
    fetch: timed.fetch,
  });
  for (let i = 0; i < 10; i++) await notion.listPages(fake.accessToken);
  for (let i = 3; i < timed.times.length; i++) expect(timed.times[i]! - timed.times[i - 3]!).toBeGreaterThanOrEqual(1_000);
  expect((timed.times.length - 1) / ((timed.times.at(-1)! - timed.times[0]!) / 1_000)).toBeLessThanOrEqual(3);
});
