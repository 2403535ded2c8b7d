// Notion as a source and a destination of documents: OAuth for public integrations (authorize, code exchange and
// revocation with HTTP Basic client credentials, refresh for integrations that receive refresh tokens), search for
// pages, pages read as Markdown (every block child, page by page, nested children to a bounded depth), and pages
// written from Markdown within Notion's request limits (≤ 100 children per request, two levels of nesting, rich
// text items ≤ 2000 characters, ≤ 1000 blocks / 500 KB per payload). Requests carry Notion-Version 2022-06-28 and
// are paced per access token (3 per second by default, Notion's documented average).
import { badResponse, IntegrationError } from "./errors.ts";
import { createHttpClient, type HttpClientOptions, type HttpMethod } from "./http.ts";
import { markdownToNodes, notionBlocksToMdBlocks, richTextOf, richTextSpans, separatePages, takeBatch, type BlockNode } from "./formats/notion-blocks.ts";
import { plainText, renderMarkdown, span } from "./formats/markdown.ts";
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
