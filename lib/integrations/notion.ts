// Notion as a source and a destination of documents: OAuth for public integrations (authorize, code exchange and
// revocation with HTTP Basic client credentials, refresh for integrations that receive refresh tokens), search for
// pages, pages read as Markdown (every block child, page by page, nested children to a bounded depth), and pages
// written from Markdown within Notion's request limits (≤ 100 children per request, two levels of nesting, rich
// text items ≤ 2000 characters, ≤ 1000 blocks / 500 KB per payload). Requests carry Notion-Version 2022-06-28 and
// are paced per access token (3 per second by default, Notion's documented average).
import { badResponse, IntegrationError } from "./errors.ts";
import { createHttpClient, type HttpClientOptions, type HttpMethod } from "./http.ts";
import { normalizeSpans, parseMarkdown, plainText, renderMarkdown, safeHref, span, trimSpans, type ListItem, type MdBlock, type Span } from "./markdown.ts";
import { basicAuthorization, tokenEndpointMeaning, tokenSetFrom, type TokenSet } from "./oauth.ts";
import { array, dateOf, record, text, type JsonRecord, type PageList, type PageRef, type PublishedPage } from "./types.ts";

export const notionVersion = "2022-06-28";

/**
 * Who the client is and where it calls; request timeout (default 30_000 ms), retries (default 4) and the fetch, sleep
 * and clock tests inject are the HTTP client's own options (./http.ts).
 */
export interface NotionClientOptions extends Pick<HttpClientOptions, "timeoutMs" | "maxRetries" | "fetch" | "sleep" | "now"> {
  readonly clientId: string;
  readonly clientSecret: string;
  /** The redirect URI registered for the integration; sent with the authorization and the code exchange. */
  readonly redirectUri: string;
  /** Where users authorize and tokens are exchanged. Default "https://api.notion.com". */
  readonly authBaseUrl?: string;
  /** The REST API root. Default "https://api.notion.com". */
  readonly apiBaseUrl?: string;
  /** Requests per second per access token; null: unpaced. Default 3, Notion's documented average. */
  readonly requestsPerSecond?: number | null;
  /**
   * Send PKCE (code_challenge S256 with the authorization, code_verifier with the exchange). Default false: Notion
   * documents no PKCE for public integrations, so the challenge would be ignored; the client secret sent with the
   * exchange and the caller's `state` check are what protect the flow.
   */
  readonly pkce?: boolean;
  /** How many levels of nested blocks (toggles, lists in lists) fetchPage reads. Default 5. */
  readonly maxDepth?: number;
  /** The most blocks fetchPage reads from one page; the Markdown then ends with a truncation marker. Default 5_000. */
  readonly maxBlocks?: number;
}

/** The result of connecting a workspace. */
export interface NotionConnection {
  readonly tokens: TokenSet;
  readonly workspaceId: string | null;
  readonly workspaceName: string | null;
  /** The integration's bot user in that workspace. */
  readonly botId: string | null;
  /** Notion grants capabilities per integration, not scopes per token: always empty. */
  readonly scopes: readonly string[];
}

export interface NotionPage {
  readonly externalId: string;
  readonly title: string;
  readonly url: string;
  readonly lastEditedAt: Date | null;
  readonly markdown: string;
}

export interface NotionClient {
  /** Where to send the user to connect a workspace. `codeChallenge` is sent only with the `pkce` option. */
  authorizationUrl(input: { readonly state: string; readonly codeChallenge: string }): string;
  /** Exchanges the code from the redirect. INVALID_GRANT when the code is invalid, expired or used. */
  exchangeCode(input: { readonly code: string; readonly codeVerifier: string; readonly signal?: AbortSignal }): Promise<NotionConnection>;
  /** New tokens for a refresh token (Notion rotates it: store the new one). INVALID_GRANT when it is refused. */
  refresh(refreshToken: string, signal?: AbortSignal): Promise<TokenSet>;
  /** Revokes an access token (POST /v1/oauth/revoke); a token the server no longer knows counts as revoked. */
  revoke(accessToken: string, signal?: AbortSignal): Promise<void>;
  /** Pages shared with the integration, most recently edited first (POST /v1/search, objects of type page). */
  listPages(
    accessToken: string,
    options?: { readonly cursor?: string | null; readonly query?: string; readonly pageSize?: number; readonly signal?: AbortSignal },
  ): Promise<PageList>;
  /** A page and all its content as Markdown. NOT_FOUND for a page that is missing, not shared or archived. */
  fetchPage(accessToken: string, pageId: string, signal?: AbortSignal): Promise<NotionPage>;
  /** A new page under `parentPageId`. If writing its content fails, the page is archived again before the error is thrown. */
  createPage(
    accessToken: string,
    input: { readonly parentPageId: string; readonly title: string; readonly markdown: string; readonly signal?: AbortSignal },
  ): Promise<PublishedPage>;
  /**
   * Rewrites a page: the title, then the new content appended and the old content deleted, so repeating it after a
   * failure converges on the same page. Child pages and databases inside it are left alone.
   */
  replacePageContent(
    accessToken: string,
    pageId: string,
    input: { readonly title: string; readonly markdown: string; readonly signal?: AbortSignal },
  ): Promise<PublishedPage>;
}

const service = "Notion API";
const authService = "Notion authorization server";

export function createNotionClient(options: NotionClientOptions): NotionClient {
  const authBase = (options.authBaseUrl ?? "https://api.notion.com").replace(/\/+$/, "");
  const apiBase = (options.apiBaseUrl ?? "https://api.notion.com").replace(/\/+$/, "");
  const { clientId, clientSecret, redirectUri, maxDepth = 5, maxBlocks = 5_000 } = options;
  const basic = basicAuthorization(clientId, clientSecret);
  const http = createHttpClient({
    service,
    requestsPerSecond: options.requestsPerSecond === undefined ? 3 : options.requestsPerSecond,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.sleep ? { sleep: options.sleep } : {}),
    ...(options.now ? { now: options.now } : {}),
  });

  const api = async (
    accessToken: string,
    method: HttpMethod,
    path: string,
    request: { readonly body?: unknown; readonly signal?: AbortSignal | undefined; readonly idempotent?: boolean } = {},
  ): Promise<JsonRecord> =>
    record(
      await http.request({
        method,
        url: `${apiBase}${path}`,
        headers: { authorization: `Bearer ${accessToken}`, "notion-version": notionVersion },
        body: request.body,
        signal: request.signal,
        secrets: [accessToken],
        paceKey: accessToken,
        ...(request.idempotent === undefined ? {} : { idempotent: request.idempotent }),
      }),
    );

  const oauth = async (path: string, body: JsonRecord, secrets: readonly string[], signal: AbortSignal | undefined, idempotent: boolean) =>
    http.request({
      method: "POST",
      url: `${authBase}${path}`,
      headers: { authorization: basic, "notion-version": notionVersion },
      body,
      signal,
      secrets: [clientSecret, basic.slice("Basic ".length), ...secrets],
      idempotent,
      classify: tokenEndpointMeaning,
      service: authService,
    });

  /** Every child block of `blockId`, page by page, with their own children read to `maxDepth`. */
  async function readChildren(accessToken: string, blockId: string, depth: number, budget: { left: number }, signal?: AbortSignal) {
    const blocks: JsonRecord[] = [];
    let cursor: string | null = null;
    do {
      const query = new URLSearchParams({ page_size: "100", ...(cursor ? { start_cursor: cursor } : {}) });
      const list = await api(accessToken, "GET", `/v1/blocks/${encodeURIComponent(blockId)}/children?${query}`, { signal });
      for (const raw of array(list.results)) {
        if (budget.left <= 0) return { blocks, truncated: true };
        budget.left--;
        const block = record(raw);
        const id = text(block.id);
        const type = text(block.type) ?? "";
        const readable = block.has_children === true && id !== undefined && !separatePages.has(type);
        if (readable && depth < maxDepth) {
          const nested = await readChildren(accessToken, id, depth + 1, budget, signal);
          blocks.push({ ...block, children: nested.blocks });
          if (nested.truncated) return { blocks, truncated: true };
        } else blocks.push({ ...block, children: readable ? null : [] });
      }
      cursor = list.has_more === true ? (text(list.next_cursor) ?? null) : null;
    } while (cursor);
    return { blocks, truncated: false };
  }

  /** Appends blocks under `parentId` in as few requests as Notion's limits allow, deeper levels by later requests. */
  async function appendChildren(accessToken: string, parentId: string, nodes: readonly BlockNode[], signal?: AbortSignal): Promise<void> {
    for (let start = 0; start < nodes.length;) {
      const batch = takeBatch(nodes, start, false);
      const answer = await api(accessToken, "PATCH", `/v1/blocks/${encodeURIComponent(parentId)}/children`, {
        body: { children: batch.payload },
        signal,
        idempotent: false,
      });
      // Notion answers with the created first-level blocks in order; a batch has at most 100, so all fit its one page.
      const created = array(answer.results);
      for (const { index, children } of batch.deferred) {
        const id = text(record(created[index]).id);
        if (!id) throw badResponse(service, "the ids of the blocks it created");
        await appendChildren(accessToken, id, children, signal);
      }
      start += batch.count;
    }
  }

  const titleRichText = (title: string) => richTextOf([span(title)]).slice(0, 100);

  return {
    authorizationUrl({ state, codeChallenge }) {
      const url = new URL(`${authBase}/v1/oauth/authorize`);
      url.search = new URLSearchParams({
        client_id: clientId,
        response_type: "code",
        owner: "user",
        redirect_uri: redirectUri,
        state,
        ...(options.pkce ? { code_challenge: codeChallenge, code_challenge_method: "S256" } : {}),
      }).toString();
      return url.toString();
    },

    async exchangeCode({ code, codeVerifier, signal }) {
      const body = {
        grant_type: "authorization_code",
        code,
        redirect_uri: redirectUri,
        ...(options.pkce ? { code_verifier: codeVerifier } : {}),
      };
      const answer = record(await oauth("/v1/oauth/token", body, [code, codeVerifier], signal, false));
      return {
        tokens: tokenSetFrom(answer, authService),
        workspaceId: text(answer.workspace_id) ?? null,
        workspaceName: text(answer.workspace_name) ?? null,
        botId: text(answer.bot_id) ?? null,
        scopes: [],
      };
    },

    async refresh(refreshToken, signal) {
      const answer = await oauth("/v1/oauth/token", { grant_type: "refresh_token", refresh_token: refreshToken }, [refreshToken], signal, false);
      return tokenSetFrom(answer, authService);
    },

    async revoke(accessToken, signal) {
      try {
        await oauth("/v1/oauth/revoke", { token: accessToken }, [accessToken], signal, true);
      } catch (error) {
        if (!(error instanceof IntegrationError && error.code === "INVALID_GRANT")) throw error;
      }
    },

    async listPages(accessToken, { cursor, query, pageSize = 50, signal } = {}) {
      const answer = await api(accessToken, "POST", "/v1/search", {
        body: {
          filter: { property: "object", value: "page" },
          sort: { direction: "descending", timestamp: "last_edited_time" },
          page_size: Math.min(100, Math.max(1, Math.floor(pageSize))),
          ...(query ? { query } : {}),
          ...(cursor ? { start_cursor: cursor } : {}),
        },
        signal,
        idempotent: true,
      });
      const pages = array(answer.results)
        .map(record)
        .filter((page) => page.object === "page")
        .map(pageRefOf);
      return { pages, nextCursor: answer.has_more === true ? (text(answer.next_cursor) ?? null) : null };
    },

    async fetchPage(accessToken, id, signal) {
      const page = await api(accessToken, "GET", `/v1/pages/${encodeURIComponent(id)}`, { signal });
      if (page.archived === true || page.in_trash === true) throw new IntegrationError("NOT_FOUND", "The Notion page is archived.");
      const ref = pageRefOf(page);
      const { blocks, truncated } = await readChildren(accessToken, ref.externalId, 1, { left: maxBlocks }, signal);
      const content = notionBlocksToMdBlocks(blocks);
      if (truncated) content.push({ type: "comment", text: `notion: content truncated after ${maxBlocks} blocks` });
      return { externalId: ref.externalId, title: ref.title, url: ref.url, lastEditedAt: ref.lastEditedAt, markdown: renderMarkdown(content) };
    },

    async createPage(accessToken, { parentPageId, title, markdown, signal }) {
      const nodes = markdownToNodes(markdown);
      const first = takeBatch(nodes, 0, true);
      const page = await api(accessToken, "POST", "/v1/pages", {
        body: {
          parent: { page_id: parentPageId },
          properties: { title: { title: titleRichText(title) } },
          ...(first.payload.length ? { children: first.payload } : {}),
        },
        signal,
        idempotent: false,
      });
      const id = text(page.id);
      if (!id) throw badResponse(service, "the id of the page it created");
      try {
        await appendChildren(accessToken, id, nodes.slice(first.count), signal);
      } catch (error) {
        // All or nothing: a half-written page would be mistaken for the document. Best effort, so no signal.
        await api(accessToken, "PATCH", `/v1/pages/${encodeURIComponent(id)}`, { body: { archived: true } }).catch(() => undefined);
        throw error;
      }
      return { externalId: id, url: text(page.url) ?? "" };
    },

    async replacePageContent(accessToken, id, { title, markdown, signal }) {
      const page = await api(accessToken, "GET", `/v1/pages/${encodeURIComponent(id)}`, { signal });
      const titleKey = Object.entries(record(page.properties)).find(([, value]) => record(value).type === "title")?.[0] ?? "title";
      await api(accessToken, "PATCH", `/v1/pages/${encodeURIComponent(id)}`, {
        body: { properties: { [titleKey]: { title: titleRichText(title) } } },
        signal,
        idempotent: true,
      });
      const old: string[] = [];
      let cursor: string | null = null;
      do {
        const query = new URLSearchParams({ page_size: "100", ...(cursor ? { start_cursor: cursor } : {}) });
        const list = await api(accessToken, "GET", `/v1/blocks/${encodeURIComponent(id)}/children?${query}`, { signal });
        for (const block of array(list.results).map(record)) {
          const blockId = text(block.id);
          if (blockId && !separatePages.has(text(block.type) ?? "")) old.push(blockId);
        }
        cursor = list.has_more === true ? (text(list.next_cursor) ?? null) : null;
      } while (cursor);
      await appendChildren(accessToken, id, markdownToNodes(markdown), signal);
      for (const blockId of old) {
        try {
          await api(accessToken, "DELETE", `/v1/blocks/${encodeURIComponent(blockId)}`, { signal });
        } catch (error) {
          if (!(error instanceof IntegrationError && error.code === "NOT_FOUND")) throw error;
        }
      }
      return { externalId: text(page.id) ?? id, url: text(page.url) ?? "" };
    },
  };
}

/** Blocks that are pages of their own: not read as content, never deleted when a page is rewritten. */
const separatePages: ReadonlySet<string> = new Set(["child_page", "child_database"]);

function pageRefOf(page: JsonRecord): PageRef {
  const id = text(page.id);
  if (!id) throw badResponse(service, "a page id");
  const titleProperty = Object.values(record(page.properties))
    .map(record)
    .find((property) => property.type === "title");
  const parent = record(page.parent);
  const parentId = text(parent.page_id) ?? text(parent.database_id) ?? text(parent.data_source_id) ?? text(parent.block_id) ?? null;
  return {
    externalId: id,
    title: plainText(richTextSpans(titleProperty?.title)).trim(),
    url: text(page.url) ?? "",
    lastEditedAt: dateOf(page.last_edited_time),
    parentId,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Notion blocks → Markdown

/** Rich text items as spans: plain_text (or text.content) with their annotations; only safe links are kept. */
function richTextSpans(value: unknown): Span[] {
  return normalizeSpans(
    array(value).map((raw) => {
      const item = record(raw);
      const annotations = record(item.annotations);
      const content = text(item.plain_text) ?? text(record(item.text).content) ?? "";
      const link = text(item.href) ?? text(record(record(item.text).link).url);
      return span(content, {
        bold: annotations.bold === true,
        italic: annotations.italic === true,
        strike: annotations.strikethrough === true,
        code: annotations.code === true || item.type === "equation",
        href: link ? safeHref(link) : null,
      });
    }),
  );
}

/** A block's children: read ones (`children`, null when not read) or, for blocks built to be sent, `<type>.children`. */
function childrenOf(block: JsonRecord, data: JsonRecord): readonly JsonRecord[] | null {
  if (block.children === null) return null;
  return array(Array.isArray(block.children) ? block.children : data.children).map(record);
}

const fromNotionLanguage: Readonly<Record<string, string>> = {
  "plain text": "",
  "c++": "cpp",
  "c#": "csharp",
  "f#": "fsharp",
  "objective-c": "objectivec",
  "vb.net": "vbnet",
  "visual basic": "vb",
  "java/c/c++/c#": "",
  "ascii art": "",
  "notion formula": "",
  "llvm ir": "llvm",
};

const listKinds: Readonly<Record<string, "bulleted" | "numbered">> = {
  bulleted_list_item: "bulleted",
  to_do: "bulleted",
  toggle: "bulleted",
  numbered_list_item: "numbered",
};

/** Notion blocks (as read, children attached, or as built for sending) as Markdown. Unknown types leave a marker. */
export function notionBlocksToMarkdown(blocks: readonly JsonRecord[]): string {
  return renderMarkdown(notionBlocksToMdBlocks(blocks));
}

function notionBlocksToMdBlocks(blocks: readonly JsonRecord[], depth = 0): MdBlock[] {
  const out: MdBlock[] = [];
  const nested = (children: readonly JsonRecord[] | null) => (children && depth < 32 ? notionBlocksToMdBlocks(children, depth + 1) : []);
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i]!;
    const type = text(block.type) ?? "";
    const data = record(block[type]);
    const children = childrenOf(block, data);
    const spans = trimSpans(richTextSpans(data.rich_text));
    const kind = listKinds[type];
    if (kind) {
      const items: ListItem[] = [];
      for (; i < blocks.length && listKinds[text(blocks[i]!.type) ?? ""] === kind; i++) {
        const item = blocks[i]!;
        const itemType = text(item.type) ?? "";
        const itemData = record(item[itemType]);
        const itemChildren = childrenOf(item, itemData);
        items.push({
          spans: trimSpans(richTextSpans(itemData.rich_text)),
          checked: itemType === "to_do" ? itemData.checked === true : null,
          blocks: [...nested(itemChildren), ...unreadMarker(item, itemChildren)],
        });
      }
      i--;
      out.push({ type: "list", ordered: kind === "numbered", items });
      continue;
    }
    switch (type) {
      case "paragraph":
        if (spans.length) out.push({ type: "paragraph", spans });
        out.push(...nested(children));
        break;
      case "heading_1":
      case "heading_2":
      case "heading_3":
        out.push({ type: "heading", level: Number(type.slice(-1)) as 1 | 2 | 3, spans }, ...nested(children));
        break;
      case "quote":
        out.push({ type: "quote", blocks: [...(spans.length ? [{ type: "paragraph", spans } as const] : []), ...nested(children)] });
        break;
      case "callout": {
        const icon = record(data.icon);
        const emoji = icon.type === "emoji" ? text(icon.emoji) : undefined;
        const lead = emoji ? [span(`${emoji} `), ...spans] : spans;
        out.push({ type: "quote", blocks: [...(lead.length ? [{ type: "paragraph", spans: lead } as const] : []), ...nested(children)] });
        break;
      }
      case "code": {
        const language = (text(data.language) ?? "").toLowerCase();
        out.push({ type: "code", language: fromNotionLanguage[language] ?? language.replace(/\s+/g, "-"), text: plainText(richTextSpans(data.rich_text)) });
        break;
      }
      case "divider":
        out.push({ type: "divider" });
        break;
      case "table": {
        const rows = (children ?? [])
          .filter((row) => row.type === "table_row")
          .map((row) => array(record(row.table_row).cells).map((cell) => trimSpans(richTextSpans(cell))));
        const width = Math.max(0, ...rows.map((row) => row.length));
        if (width) out.push({ type: "table", rows: rows.map((row) => Array.from({ length: width }, (_, k) => row[k] ?? [])) });
        break;
      }
      case "column_list":
      case "column":
      case "synced_block":
        out.push(...nested(children));
        break;
      case "child_page":
        out.push({ type: "comment", text: `notion: child page "${text(data.title) ?? ""}" not included` });
        break;
      default:
        out.push({ type: "comment", text: `notion: unsupported block "${type.replace(/[^\w-]/g, "")}" skipped` });
    }
    out.push(...unreadMarker(block, children));
  }
  return out;
}

/** A marker for children that exist but were not read (deeper than maxDepth). */
const unreadMarker = (block: JsonRecord, children: readonly JsonRecord[] | null): MdBlock[] =>
  children === null && block.has_children === true && !separatePages.has(text(block.type) ?? "")
    ? [{ type: "comment", text: "notion: nested content below the depth limit not included" }]
    : [];

// ---------------------------------------------------------------------------------------------------------------
// Markdown → Notion blocks

const notionLanguages: ReadonlySet<string> = new Set([
  "abap",
  "arduino",
  "bash",
  "basic",
  "c",
  "clojure",
  "coffeescript",
  "c++",
  "c#",
  "css",
  "dart",
  "diff",
  "docker",
  "elixir",
  "elm",
  "erlang",
  "flow",
  "fortran",
  "f#",
  "gherkin",
  "glsl",
  "go",
  "graphql",
  "groovy",
  "haskell",
  "html",
  "java",
  "javascript",
  "json",
  "julia",
  "kotlin",
  "latex",
  "less",
  "lisp",
  "livescript",
  "lua",
  "makefile",
  "markdown",
  "markup",
  "matlab",
  "mermaid",
  "nix",
  "objective-c",
  "ocaml",
  "pascal",
  "perl",
  "php",
  "plain text",
  "powershell",
  "prolog",
  "protobuf",
  "python",
  "r",
  "reason",
  "ruby",
  "rust",
  "sass",
  "scala",
  "scheme",
  "scss",
  "shell",
  "sql",
  "swift",
  "typescript",
  "vb.net",
  "verilog",
  "vhdl",
  "visual basic",
  "webassembly",
  "xml",
  "yaml",
  "java/c/c++/c#",
]);

const languageAliases: Readonly<Record<string, string>> = {
  js: "javascript",
  jsx: "javascript",
  mjs: "javascript",
  cjs: "javascript",
  ts: "typescript",
  tsx: "typescript",
  py: "python",
  rb: "ruby",
  sh: "shell",
  zsh: "shell",
  console: "shell",
  yml: "yaml",
  md: "markdown",
  cpp: "c++",
  cxx: "c++",
  cc: "c++",
  hpp: "c++",
  h: "c",
  cs: "c#",
  csharp: "c#",
  fs: "f#",
  fsharp: "f#",
  objc: "objective-c",
  objectivec: "objective-c",
  vbnet: "vb.net",
  vb: "visual basic",
  dockerfile: "docker",
  golang: "go",
  rs: "rust",
  kt: "kotlin",
  ps1: "powershell",
  pwsh: "powershell",
  ex: "elixir",
  exs: "elixir",
  erl: "erlang",
  hs: "haskell",
  ml: "ocaml",
  pl: "perl",
  proto: "protobuf",
  scm: "scheme",
  tex: "latex",
  wasm: "webassembly",
  gql: "graphql",
  make: "makefile",
  patch: "diff",
  jsonc: "json",
  htm: "html",
  svg: "xml",
  llvm: "plain text",
  text: "plain text",
  txt: "plain text",
  plaintext: "plain text",
};

/** A Markdown info string as one of Notion's code languages ("plain text" when it has no equivalent). */
const toNotionLanguage = (language: string) => {
  const lower = language.toLowerCase();
  const name = languageAliases[lower] ?? lower;
  return notionLanguages.has(name) ? name : "plain text";
};

/** A block to send, with the children that must or may go with it. */
interface BlockNode {
  readonly type: string;
  readonly data: JsonRecord;
  readonly children: readonly BlockNode[];
  /** Tables: Notion requires their rows in the request that creates them. */
  readonly childrenRequired: boolean;
}

const node = (type: string, data: JsonRecord, children: readonly BlockNode[] = [], childrenRequired = false): BlockNode => ({
  type,
  data,
  children,
  childrenRequired,
});

type RichText = JsonRecord;
const maxTextChars = 2000;
const maxRichTextItems = 100;
/** Characters per block, so a block of multi-byte text stays far below Notion's 500 KB payload limit. */
const maxBlockChars = 40_000;

/** `value` in pieces of at most `size` UTF-16 units, never splitting a surrogate pair. */
function chunks(value: string, size: number): string[] {
  const out: string[] = [];
  for (let start = 0; start < value.length;) {
    let end = Math.min(value.length, start + size);
    if (end < value.length && /[\uD800-\uDBFF]/.test(value[end - 1]!)) end--;
    out.push(value.slice(start, end));
    start = end;
  }
  return out;
}

function richTextOf(spans: readonly Span[]): RichText[] {
  const out: RichText[] = [];
  for (const s of normalizeSpans(spans)) {
    const href = s.href && s.href.length <= maxTextChars ? s.href : null;
    for (const content of chunks(s.text, maxTextChars)) {
      out.push({
        type: "text",
        text: { content, link: href ? { url: href } : null },
        annotations: { bold: s.bold, italic: s.italic, strikethrough: s.strike, underline: false, code: s.code, color: "default" },
      });
    }
  }
  return out;
}

/** Rich text split so no block carries more than 100 items or `maxBlockChars` characters. */
function richTextGroups(items: readonly RichText[]): RichText[][] {
  const groups: RichText[][] = [];
  let current: RichText[] = [];
  let chars = 0;
  for (const item of items) {
    const length = (text(record(item.text).content) ?? "").length;
    if (current.length && (current.length >= maxRichTextItems || chars + length > maxBlockChars)) {
      groups.push(current);
      current = [];
      chars = 0;
    }
    current.push(item);
    chars += length;
  }
  if (current.length || !groups.length) groups.push(current);
  return groups;
}

/** One block of `type` per group of its text; `children` go under the last. */
const textBlocks = (type: string, spans: readonly Span[], extra: JsonRecord = {}, children: readonly BlockNode[] = []) => {
  const groups = richTextGroups(richTextOf(spans));
  return groups.map((rich_text, index) => node(type, { rich_text, ...extra }, index === groups.length - 1 ? children : []));
};

function mdBlocksToNodes(blocks: readonly MdBlock[]): BlockNode[] {
  return blocks.flatMap((block): BlockNode[] => {
    switch (block.type) {
      case "heading":
        return textBlocks(`heading_${Math.min(block.level, 3)}`, block.spans);
      case "paragraph":
        return textBlocks("paragraph", block.spans);
      case "list":
        return block.items.flatMap((item) => {
          const type = item.checked !== null ? "to_do" : block.ordered ? "numbered_list_item" : "bulleted_list_item";
          return textBlocks(type, item.spans, item.checked !== null ? { checked: item.checked } : {}, mdBlocksToNodes(item.blocks));
        });
      case "code": {
        const language = toNotionLanguage(block.language);
        return chunks(block.text, maxBlockChars).map((part) => node("code", { rich_text: richTextOf([span(part)]), language }));
      }
      case "quote": {
        const [first, ...rest] = block.blocks;
        return first?.type === "paragraph"
          ? textBlocks("quote", first.spans, {}, mdBlocksToNodes(rest))
          : [node("quote", { rich_text: [] }, mdBlocksToNodes(block.blocks))];
      }
      case "divider":
        return [node("divider", {})];
      case "table": {
        const width = Math.min(100, block.rows[0]?.length ?? 0);
        if (!width) return [];
        const rows = block.rows.map((row) => node("table_row", { cells: row.slice(0, width).map((cell) => richTextOf(cell).slice(0, maxRichTextItems)) }));
        return [node("table", { table_width: width, has_column_header: true, has_row_header: false }, rows, true)];
      }
      case "comment":
        return [];
    }
  });
}

const markdownToNodes = (markdown: string) => mdBlocksToNodes(parseMarkdown(markdown));

/** A node as Notion block JSON, with `children` (already in JSON) when given. */
const blockJson = (n: BlockNode, children?: readonly JsonRecord[]): JsonRecord => ({
  object: "block",
  type: n.type,
  [n.type]: children?.length ? { ...n.data, children } : n.data,
});

/** Markdown as the Notion blocks it publishes to, children nested in full (requests split them further). */
export function markdownToNotionBlocks(markdown: string): JsonRecord[] {
  const full = (n: BlockNode): JsonRecord => blockJson(n, n.children.map(full));
  return markdownToNodes(markdown).map(full);
}

/**
 * A node as it goes into one request: with its children when they are leaves (two levels of nesting is Notion's
 * limit per request), a table with its first 100 rows; the rest is deferred to requests under the created block.
 */
function requestOf(n: BlockNode): { json: JsonRecord; blocks: number; deferred: readonly BlockNode[] } {
  if (!n.children.length) return { json: blockJson(n), blocks: 1, deferred: [] };
  if (n.childrenRequired) {
    const sent = n.children.slice(0, 100);
    return {
      json: blockJson(
        n,
        sent.map((c) => blockJson(c)),
      ),
      blocks: 1 + sent.length,
      deferred: n.children.slice(100),
    };
  }
  if (n.children.length <= 100 && n.children.every((c) => !c.children.length)) {
    return {
      json: blockJson(
        n,
        n.children.map((c) => blockJson(c)),
      ),
      blocks: 1 + n.children.length,
      deferred: [],
    };
  }
  return { json: blockJson(n), blocks: 1, deferred: n.children };
}

const maxBatchBlocks = 100;
const maxPayloadBlocks = 1000;
const maxPayloadBytes = 400_000;

/**
 * The next request's worth of nodes from `start`: at most 100 top-level blocks, 1000 blocks in all and ~400 KB.
 * With `leavesOnly` (the page-creation request, whose answer does not list the created blocks) it stops before the
 * first node that needs follow-up requests.
 */
function takeBatch(nodes: readonly BlockNode[], start: number, leavesOnly: boolean) {
  const payload: JsonRecord[] = [];
  const deferred: Array<{ index: number; children: readonly BlockNode[] }> = [];
  let blocks = 0;
  let bytes = 0;
  let count = 0;
  for (let i = start; i < nodes.length && payload.length < maxBatchBlocks; i++) {
    const request = requestOf(nodes[i]!);
    if (leavesOnly && request.deferred.length) break;
    const size = Buffer.byteLength(JSON.stringify(request.json));
    if (payload.length && (blocks + request.blocks > maxPayloadBlocks || bytes + size > maxPayloadBytes)) break;
    if (request.deferred.length) deferred.push({ index: payload.length, children: request.deferred });
    payload.push(request.json);
    blocks += request.blocks;
    bytes += size;
    count++;
  }
  return { payload, deferred, count };
}
