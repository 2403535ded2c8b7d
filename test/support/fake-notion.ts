// A real HTTP server on loopback speaking the subset of the Notion API (version 2022-06-28) Quire uses, so the
// Notion client's tests run its real code: OAuth token exchange and refresh with HTTP Basic client credentials
// (refresh tokens rotate), revocation, search, pages and their block children with cursor pagination, and page
// creation and block appends that enforce Notion's request limits (≤ 100 children per array, two levels of
// nesting, rich text ≤ 2000 characters per item and ≤ 100 items). Every request is recorded; faults (429, 5xx, a
// hang, a redirect) can be queued; error messages echo tokens, as a careless service might, to prove clients mask them.
import { randomUUID } from "node:crypto";
import { startFakeLlmServer, type RecordedRequest, type Reply } from "./fake-llm-server.ts";

type Json = Record<string, unknown>;

export interface FakeNotionBlock {
  readonly id: string;
  readonly type: string;
  /** The block's `<type>` object, without children. */
  readonly data: Json;
  readonly children: string[];
  parentId: string;
  archived: boolean;
}

export interface FakeNotionPage {
  readonly id: string;
  title: string;
  /** The name of the title property ("title" for pages under pages, e.g. "Name" for database rows). */
  readonly titleProperty: string;
  readonly parentId: string | null;
  lastEditedTime: string;
  archived: boolean;
  readonly children: string[];
}

/** A queued fault: the next request that `match`es (any, by default) gets `reply` instead of its answer. */
export interface Fault {
  readonly match?: (request: RecordedRequest) => boolean;
  readonly reply: Reply;
}

export interface FakeNotion {
  /** http://127.0.0.1:<port>, both the auth and the API base URL. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  readonly clientId: string;
  readonly clientSecret: string;
  readonly redirectUri: string;
  /** An access token valid from the start. */
  readonly accessToken: string;
  readonly pages: Map<string, FakeNotionPage>;
  readonly blocks: Map<string, FakeNotionBlock>;
  /** The most children one GET /v1/blocks/{id}/children answers with (Notion: 100). Lower it to force pagination. */
  childrenPageSize: number;
  /** A one-time authorization code for the code exchange. */
  issueCode(): string;
  /** A refresh token valid for one refresh (it rotates). */
  issueRefreshToken(): string;
  /** Makes an access token invalid: requests with it get 401. */
  expire(accessToken: string): void;
  isValid(accessToken: string): boolean;
  /** A page with `blocks` (block JSON as the API accepts it, children nested) as its content. */
  addPage(page: { title: string; parentId?: string | null; titleProperty?: string; blocks?: Json[]; lastEditedTime?: string }): string;
  /** A page's content as nested block JSON (archived blocks left out). */
  contentOf(blockId: string): Json[];
  fault(fault: Fault): void;
  close(): Promise<void>;
}

const version = "2022-06-28";
const notionError = (status: number, code: string, message: string): Reply => ({ status, json: { object: "error", status, code, message } });

/** Rich text as Notion answers it: plain_text and href added. */
const richTextOut = (items: unknown): Json[] =>
  (Array.isArray(items) ? items : []).map((item: Json) => {
    const text = (item.text ?? {}) as Json;
    const link = (text.link ?? null) as Json | null;
    return { ...item, plain_text: text.content ?? "", href: link?.url ?? null };
  });

function dataOut(data: Json): Json {
  const out: Json = { ...data };
  if (Array.isArray(out.rich_text)) out.rich_text = richTextOut(out.rich_text);
  if (Array.isArray(out.cells)) out.cells = out.cells.map(richTextOut);
  return out;
}

/** Why `children` breaks Notion's request limits, or null. `level` 1 is the top of the request. */
function limitViolation(children: unknown, path: string, level: number, count: { blocks: number }): string | null {
  if (!Array.isArray(children)) return `${path} should be an array`;
  if (children.length > 100) return `${path}.length should be ≤ \`100\`, instead was \`${children.length}\`.`;
  for (const [index, raw] of children.entries()) {
    const block = raw as Json;
    const type = block.type;
    if (typeof type !== "string" || typeof block[type] !== "object") return `${path}[${index}] should have a type and its object`;
    if (++count.blocks > 1000) return "body has more than 1000 blocks";
    const data = block[type] as Json;
    const richText = Array.isArray(data.rich_text) ? data.rich_text : [];
    if (richText.length > 100) return `${path}[${index}].${type}.rich_text.length should be ≤ \`100\``;
    for (const item of richText as Json[]) {
      const content = ((item.text ?? {}) as Json).content;
      if (typeof content === "string" && content.length > 2000)
        return `${path}[${index}].${type}.rich_text.text.content.length should be ≤ \`2000\`, instead was \`${content.length}\`.`;
    }
    if (type === "code" && typeof data.language !== "string") return `${path}[${index}].code.language should be defined`;
    if (type === "table" && !Array.isArray(data.children)) return `${path}[${index}].table.children should be defined`;
    if (data.children !== undefined) {
      if (level >= 2) return `${path}[${index}].${type}.children should be not present`;
      const nested = limitViolation(data.children, `${path}[${index}].${type}.children`, level + 1, count);
      if (nested) return nested;
    }
  }
  return null;
}

export async function startFakeNotion(): Promise<FakeNotion> {
  const clientId = "notion-client-id";
  const clientSecret = "notion-client-secret-SECRET";
  const redirectUri = "https://quire.test/oauth/notion/callback";
  const accessTokens = new Set<string>(["ntn_initial_ACCESS_TOKEN"]);
  const refreshTokens = new Set<string>();
  const codes = new Set<string>();
  const pages = new Map<string, FakeNotionPage>();
  const blocks = new Map<string, FakeNotionBlock>();
  const faults: Fault[] = [];

  const pageJson = (page: FakeNotionPage): Json => ({
    object: "page",
    id: page.id,
    created_time: page.lastEditedTime,
    last_edited_time: page.lastEditedTime,
    archived: page.archived,
    in_trash: page.archived,
    url: `https://www.notion.so/${page.title.replace(/\W+/g, "-")}-${page.id.replace(/-/g, "")}`,
    parent: page.parentId ? { type: "page_id", page_id: page.parentId } : { type: "workspace", workspace: true },
    properties: { [page.titleProperty]: { id: "title", type: "title", title: richTextOut([{ type: "text", text: { content: page.title, link: null } }]) } },
  });

  const blockJson = (block: FakeNotionBlock): Json => ({
    object: "block",
    id: block.id,
    type: block.type,
    has_children: block.children.some((id) => !blocks.get(id)?.archived),
    archived: block.archived,
    [block.type]: dataOut(block.data),
  });

  /** Stores `children` (request JSON) under `parentId`; returns the created first-level blocks. */
  const store = (parentId: string, children: readonly Json[], into: string[]): FakeNotionBlock[] =>
    children.map((raw) => {
      const type = raw.type as string;
      const { children: nested, ...data } = raw[type] as Json;
      const block: FakeNotionBlock = { id: randomUUID(), type, data, children: [], parentId, archived: false };
      blocks.set(block.id, block);
      into.push(block.id);
      if (Array.isArray(nested)) store(block.id, nested as Json[], block.children);
      return block;
    });

  const childrenOf = (id: string): string[] | undefined => pages.get(id)?.children ?? blocks.get(id)?.children;

  const contentOf = (id: string): Json[] =>
    (childrenOf(id) ?? [])
      .map((child) => blocks.get(child)!)
      .filter((block) => !block.archived)
      .map((block) => ({ ...blockJson(block), children: contentOf(block.id) }));

  const touch = (id: string) => {
    for (let current: string | null = id; current;) {
      const page = pages.get(current);
      if (page) {
        page.lastEditedTime = new Date().toISOString();
        return;
      }
      current = blocks.get(current)?.parentId ?? null;
    }
  };

  const issueTokens = () => {
    const access = `ntn_${randomUUID()}`;
    const refresh = `ntn_refresh_${randomUUID()}`;
    accessTokens.add(access);
    refreshTokens.add(refresh);
    return { access, refresh };
  };

  function oauth(request: RecordedRequest, path: string): Reply {
    const expected = `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString("base64")}`;
    if (request.headers.authorization !== expected)
      return { status: 401, json: { error: "invalid_client", error_description: "Client authentication failed." } };
    const body = (request.body ?? {}) as Json;
    if (path === "/v1/oauth/revoke") {
      if (typeof body.token !== "string" || !accessTokens.delete(body.token))
        return { status: 400, json: { error: "invalid_grant", error_description: "Unknown token." } };
      return { json: { request_id: randomUUID() } };
    }
    if (body.grant_type === "authorization_code") {
      if (typeof body.code !== "string" || !codes.delete(body.code) || body.redirect_uri !== redirectUri) {
        return { status: 400, json: { error: "invalid_grant", error_description: `Invalid code: ${String(body.code)}` } };
      }
    } else if (body.grant_type === "refresh_token") {
      if (typeof body.refresh_token !== "string" || !refreshTokens.delete(body.refresh_token)) {
        return { status: 400, json: { error: "invalid_grant", error_description: `Invalid refresh token ${String(body.refresh_token)} for ${clientSecret}` } };
      }
    } else return { status: 400, json: { error: "unsupported_grant_type" } };
    const { access, refresh } = issueTokens();
    return {
      json: {
        access_token: access,
        token_type: "bearer",
        refresh_token: refresh,
        bot_id: "bot-1",
        workspace_id: "workspace-1",
        workspace_name: "Acme Docs",
        workspace_icon: null,
        owner: { type: "user", user: { object: "user", id: "user-1" } },
        duplicated_template_id: null,
        request_id: randomUUID(),
      },
    };
  }

  function answer(request: RecordedRequest): Reply {
    const fault = faults.findIndex((candidate) => candidate.match?.(request) ?? true);
    if (fault >= 0) return faults.splice(fault, 1)[0]!.reply;
    const parsed = new URL(request.path, "http://fake.invalid");
    const path = parsed.pathname;
    if (request.headers["notion-version"] !== version) return notionError(400, "missing_version", "Notion-Version header failed validation.");
    if (request.method === "POST" && (path === "/v1/oauth/token" || path === "/v1/oauth/revoke")) return oauth(request, path);
    const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? "")?.[1] ?? "";
    if (!accessTokens.has(token)) return notionError(401, "unauthorized", `API token ${token} is invalid.`);
    const body = (request.body ?? {}) as Json;
    let m: RegExpExecArray | null;

    if (request.method === "POST" && path === "/v1/search") {
      const query = typeof body.query === "string" ? body.query.toLowerCase() : "";
      const size = Math.min(100, Number(body.page_size ?? 100));
      const found = [...pages.values()]
        .filter((page) => !page.archived && page.title.toLowerCase().includes(query))
        .sort((a, b) => b.lastEditedTime.localeCompare(a.lastEditedTime) || a.id.localeCompare(b.id));
      const start = typeof body.start_cursor === "string" ? found.findIndex((page) => page.id === body.start_cursor) : 0;
      if (start < 0) return notionError(400, "validation_error", "start_cursor is invalid.");
      const slice = found.slice(start, start + size);
      const next = found[start + size];
      return {
        json: {
          object: "list",
          results: slice.map(pageJson),
          next_cursor: next?.id ?? null,
          has_more: next !== undefined,
          type: "page_or_database",
          page_or_database: {},
        },
      };
    }

    if ((m = /^\/v1\/pages\/([^/]+)$/.exec(path))) {
      const page = pages.get(decodeURIComponent(m[1]!));
      if (!page) return notionError(404, "object_not_found", `Could not find page with ID: ${m[1]}.`);
      if (request.method === "GET") return { json: pageJson(page) };
      if (request.method === "PATCH") {
        const title = (((body.properties ?? {}) as Json)[page.titleProperty] as Json | undefined)?.title;
        if (Array.isArray(title)) page.title = title.map((item: Json) => ((item.text ?? {}) as Json).content ?? "").join("");
        if (typeof body.archived === "boolean") page.archived = body.archived;
        page.lastEditedTime = new Date().toISOString();
        return { json: pageJson(page) };
      }
    }

    if (request.method === "POST" && path === "/v1/pages") {
      const parentId = ((body.parent ?? {}) as Json).page_id;
      if (typeof parentId !== "string" || !pages.has(parentId)) return notionError(404, "object_not_found", "Could not find the parent page.");
      const violation = body.children === undefined ? null : limitViolation(body.children, "body.children", 1, { blocks: 0 });
      if (violation) return notionError(400, "validation_error", violation);
      const title = (((body.properties ?? {}) as Json).title as Json | undefined)?.title;
      const id = addPage({ title: Array.isArray(title) ? title.map((item: Json) => ((item.text ?? {}) as Json).content ?? "").join("") : "", parentId });
      store(id, (body.children ?? []) as Json[], pages.get(id)!.children);
      return { json: pageJson(pages.get(id)!) };
    }

    if ((m = /^\/v1\/blocks\/([^/]+)\/children$/.exec(path))) {
      const id = decodeURIComponent(m[1]!);
      const children = childrenOf(id);
      if (!children) return notionError(404, "object_not_found", `Could not find block with ID: ${id}.`);
      if (request.method === "GET") {
        const live = children.filter((child) => !blocks.get(child)!.archived);
        const size = Math.min(Number(parsed.searchParams.get("page_size") ?? 100), fake.childrenPageSize);
        const cursor = parsed.searchParams.get("start_cursor");
        const start = cursor ? live.indexOf(cursor) : 0;
        if (start < 0) return notionError(400, "validation_error", "start_cursor is invalid.");
        const next = live[start + size];
        return {
          json: {
            object: "list",
            results: live.slice(start, start + size).map((child) => blockJson(blocks.get(child)!)),
            next_cursor: next ?? null,
            has_more: next !== undefined,
            type: "block",
            block: {},
          },
        };
      }
      if (request.method === "PATCH") {
        const violation = limitViolation(body.children, "body.children", 1, { blocks: 0 });
        if (violation) return notionError(400, "validation_error", violation);
        const created = store(id, body.children as Json[], children);
        touch(id);
        return { json: { object: "list", results: created.map(blockJson), next_cursor: null, has_more: false, type: "block", block: {} } };
      }
    }

    if (request.method === "DELETE" && (m = /^\/v1\/blocks\/([^/]+)$/.exec(path))) {
      const block = blocks.get(decodeURIComponent(m[1]!));
      if (!block || block.archived) return notionError(404, "object_not_found", `Could not find block with ID: ${m[1]}.`);
      block.archived = true;
      touch(block.parentId);
      return { json: blockJson(block) };
    }
    return notionError(400, "invalid_request_url", `Invalid request URL: ${request.method} ${path}`);
  }

  function addPage(page: { title: string; parentId?: string | null; titleProperty?: string; blocks?: Json[]; lastEditedTime?: string }): string {
    const id = randomUUID();
    pages.set(id, {
      id,
      title: page.title,
      titleProperty: page.titleProperty ?? "title",
      parentId: page.parentId ?? null,
      lastEditedTime: page.lastEditedTime ?? new Date().toISOString(),
      archived: false,
      children: [],
    });
    store(id, page.blocks ?? [], pages.get(id)!.children);
    return id;
  }

  const server = await startFakeLlmServer(answer);
  const fake: FakeNotion = {
    url: server.url,
    requests: server.requests,
    clientId,
    clientSecret,
    redirectUri,
    accessToken: "ntn_initial_ACCESS_TOKEN",
    pages,
    blocks,
    childrenPageSize: 100,
    issueCode() {
      const code = `code-${randomUUID()}`;
      codes.add(code);
      return code;
    },
    issueRefreshToken() {
      const token = `ntn_refresh_${randomUUID()}`;
      refreshTokens.add(token);
      return token;
    },
    expire: (token) => void accessTokens.delete(token),
    isValid: (token) => accessTokens.has(token),
    addPage,
    contentOf,
    fault: (fault) => void faults.push(fault),
    close: () => server.close(),
  };
  return fake;
}
