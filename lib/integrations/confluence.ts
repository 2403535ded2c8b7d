// Confluence Cloud as a source and a destination of documents, through Atlassian's OAuth 2.0 (3LO): the consent
// URL (audience api.atlassian.com, prompt=consent), code exchange and refresh at auth.atlassian.com (refresh tokens
// ROTATE: every refresh returns a new one and invalidates the old), the sites the grant reaches (their id is the
// cloud id in every API path), and REST v2 through the gateway at api.atlassian.com/ex/confluence/{cloudId}: spaces,
// pages (cursor pagination via _links.next), page bodies in storage format, create, and update with the next
// version number. A title search uses CQL (REST v1), which v2 lacks. Storage format (Confluence's XHTML with ac:
// and ri: elements) is read by htmlparser2 and converted to Markdown; nothing in a page
// is ever executed, scripts are dropped, links keep only http(s)/mailto targets, and nesting depth is bounded.
import { badResponse, IntegrationError } from "./errors.ts";
import { createHttpClient, type Classification, type Failure, type HttpClientOptions, type HttpMethod } from "./http.ts";
import { markdownToStorage, storageToMarkdown } from "./formats/confluence-storage.ts";
import { tokenEndpointMeaning, tokenSetFrom, type TokenSet } from "./oauth.ts";
import { array, dateOf, record, text, type JsonRecord, type PageList, type PageRef, type PublishedPage } from "./types.ts";

/**
 * The default scopes: granular ones for the REST v2 calls (read:page, read:space, write:page), the classic
 * search:confluence for the CQL title search, and offline_access for a refresh token.
 */
export const defaultConfluenceScopes: readonly string[] = [
  "read:page:confluence",
  "read:space:confluence",
  "write:page:confluence",
  "search:confluence",
  "offline_access",
];

/**
 * Who the client is and where it calls; request timeout (default 30_000 ms), retries (default 4) and the fetch, sleep
 * and clock tests inject are the HTTP client's own options (./http.ts).
 */
export interface ConfluenceClientOptions extends Pick<HttpClientOptions, "timeoutMs" | "maxRetries" | "fetch" | "sleep" | "now"> {
  readonly clientId: string;
  readonly clientSecret: string;
  /** The callback URL registered for the app in the Atlassian developer console. */
  readonly redirectUri: string;
  /** The authorization server. Default "https://auth.atlassian.com". */
  readonly authBaseUrl?: string;
  /** The API gateway (accessible resources and /ex/confluence/{cloudId}/…). Default "https://api.atlassian.com". */
  readonly apiBaseUrl?: string;
  /** Scopes requested on the consent screen. Default defaultConfluenceScopes. */
  readonly scopes?: readonly string[];
  /** Requests per second per access token; null: unpaced (a Retry-After still pauses the token's requests). Default null. */
  readonly requestsPerSecond?: number | null;
  /**
   * Send PKCE (code_challenge S256 / code_verifier). Default false: Atlassian's 3LO documentation describes no PKCE
   * parameters; the client secret sent with the exchange and the caller's `state` check protect the flow.
   */
  readonly pkce?: boolean;
}

/** An Atlassian site the grant reaches (an entry of accessible-resources). */
export interface ConfluenceSite {
  /** The cloud id: the {cloudId} of API paths. */
  readonly id: string;
  readonly name: string;
  /** e.g. https://example.atlassian.net */
  readonly url: string;
  readonly scopes: readonly string[];
}

export interface ConfluenceConnection {
  readonly tokens: TokenSet;
  /** The site to use: the first with Confluence scopes (else the first of all). */
  readonly site: ConfluenceSite;
  /** Every site the grant reaches, for a picker. */
  readonly sites: readonly ConfluenceSite[];
}

export interface ConfluenceSpace {
  readonly id: string;
  readonly key: string;
  readonly name: string;
  readonly url: string;
}

export interface ConfluencePage {
  readonly externalId: string;
  readonly title: string;
  readonly url: string;
  readonly lastEditedAt: Date | null;
  readonly markdown: string;
  /** The current version number (updates must send this + 1). */
  readonly version: number;
}

export interface PublishedConfluencePage extends PublishedPage {
  readonly version: number;
}

export interface ConfluenceClient {
  /** Where to send the user to grant access. `codeChallenge` is sent only with the `pkce` option. */
  authorizationUrl(input: { readonly state: string; readonly codeChallenge: string }): string;
  /** Exchanges the code, then reads which sites the grant reaches. INVALID_GRANT for a bad or used code. */
  exchangeCode(input: { readonly code: string; readonly codeVerifier: string; readonly signal?: AbortSignal }): Promise<ConfluenceConnection>;
  /**
   * New tokens for a refresh token. Atlassian rotates refresh tokens: store the returned one at once, the one sent
   * is dead. INVALID_GRANT when the refresh token is refused (rotated out, expired after 90 idle days, revoked).
   */
  refresh(refreshToken: string, signal?: AbortSignal): Promise<TokenSet>;
  /**
   * Does nothing: Atlassian offers no token revocation endpoint for 3LO apps. The user removes the app under their
   * Atlassian account's connected apps; the caller should also forget the tokens.
   */
  revoke(accessToken: string): Promise<void>;
  /** The sites the access token reaches (GET /oauth/token/accessible-resources). */
  accessibleResources(accessToken: string, signal?: AbortSignal): Promise<readonly ConfluenceSite[]>;
  listSpaces(
    accessToken: string,
    siteId: string,
    options?: { readonly cursor?: string | null; readonly limit?: number; readonly signal?: AbortSignal },
  ): Promise<{ readonly spaces: readonly ConfluenceSpace[]; readonly nextCursor: string | null }>;
  /** Current pages, most recently modified first; with `query`, pages whose title matches it (CQL). */
  listPages(
    accessToken: string,
    siteId: string,
    options?: {
      readonly cursor?: string | null;
      readonly query?: string;
      readonly spaceId?: string;
      readonly limit?: number;
      readonly signal?: AbortSignal;
    },
  ): Promise<PageList>;
  fetchPage(accessToken: string, siteId: string, pageId: string, signal?: AbortSignal): Promise<ConfluencePage>;
  createPage(
    accessToken: string,
    siteId: string,
    input: {
      readonly spaceId: string;
      readonly parentId?: string | null;
      readonly title: string;
      readonly markdown: string;
      readonly signal?: AbortSignal;
    },
  ): Promise<PublishedConfluencePage>;
  /** Replaces title and body: reads the current version and writes the next one. REJECTED (409) if someone saved in between. */
  updatePage(
    accessToken: string,
    siteId: string,
    pageId: string,
    input: { readonly title: string; readonly markdown: string; readonly signal?: AbortSignal },
  ): Promise<PublishedConfluencePage>;
}

const service = "Confluence API";
const authService = "Atlassian authorization server";

/** A 401 "scope does not match" is a missing scope, which no token refresh can cure. */
function apiMeaning({ status, body }: Failure): Classification | undefined {
  if (status === 401 && /scope does not match/i.test(JSON.stringify(body ?? ""))) {
    return { code: "FORBIDDEN", what: "refused the request: the app lacks a scope it needs" };
  }
  return undefined;
}

/** The `cursor` parameter of a `_links.next` URL, or null. */
function cursorOf(answer: JsonRecord): string | null {
  const next = text(record(answer._links).next);
  if (!next) return null;
  try {
    return new URL(next, "https://cursor.invalid").searchParams.get("cursor");
  } catch {
    return null;
  }
}

const cqlString = (value: string) => `"${value.replace(/["\\]/g, "\\$&")}"`;

export function createConfluenceClient(options: ConfluenceClientOptions): ConfluenceClient {
  const authBase = (options.authBaseUrl ?? "https://auth.atlassian.com").replace(/\/+$/, "");
  const apiBase = (options.apiBaseUrl ?? "https://api.atlassian.com").replace(/\/+$/, "");
  const { clientId, clientSecret, redirectUri } = options;
  const scopes = options.scopes ?? defaultConfluenceScopes;
  const http = createHttpClient({
    service,
    requestsPerSecond: options.requestsPerSecond ?? null,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(options.maxRetries === undefined ? {} : { maxRetries: options.maxRetries }),
    ...(options.fetch ? { fetch: options.fetch } : {}),
    ...(options.sleep ? { sleep: options.sleep } : {}),
    ...(options.now ? { now: options.now } : {}),
  });

  const call = async (
    accessToken: string,
    method: HttpMethod,
    url: string,
    request: { readonly body?: unknown; readonly signal?: AbortSignal | undefined; readonly idempotent?: boolean } = {},
  ): Promise<unknown> =>
    http.request({
      method,
      url,
      headers: { authorization: `Bearer ${accessToken}` },
      body: request.body,
      signal: request.signal,
      secrets: [accessToken],
      paceKey: accessToken,
      classify: apiMeaning,
      ...(request.idempotent === undefined ? {} : { idempotent: request.idempotent }),
    });

  const wiki = (siteId: string) => `${apiBase}/ex/confluence/${encodeURIComponent(siteId)}/wiki`;
  const v2 = (siteId: string, path: string) => `${wiki(siteId)}/api/v2${path}`;

  const token = async (body: JsonRecord, secrets: readonly string[], signal: AbortSignal | undefined) =>
    tokenSetFrom(
      await http.request({
        method: "POST",
        url: `${authBase}/oauth/token`,
        body: { ...body, client_id: clientId, client_secret: clientSecret },
        signal,
        secrets: [clientSecret, ...secrets],
        idempotent: false,
        classify: tokenEndpointMeaning,
        service: authService,
      }),
      authService,
    );

  async function accessibleResources(accessToken: string, signal?: AbortSignal): Promise<readonly ConfluenceSite[]> {
    const answer = await call(accessToken, "GET", `${apiBase}/oauth/token/accessible-resources`, { signal });
    if (!Array.isArray(answer)) throw badResponse(service, "a list of accessible resources");
    return answer.map(record).flatMap((site) => {
      const id = text(site.id);
      return id ? [{ id, name: text(site.name) ?? "", url: text(site.url) ?? "", scopes: array(site.scopes).filter((s) => typeof s === "string") }] : [];
    });
  }

  /** Title, version and body of a page as the v2 API returns it. */
  async function getPage(accessToken: string, siteId: string, pageId: string, withBody: boolean, signal?: AbortSignal) {
    const query = withBody ? "?body-format=storage" : "";
    const page = record(await call(accessToken, "GET", v2(siteId, `/pages/${encodeURIComponent(pageId)}${query}`), { signal }));
    const id = text(page.id);
    const version = record(page.version).number;
    if (!id || typeof version !== "number") throw badResponse(service, "a page id and version");
    return { page, id, version };
  }

  const published = (page: JsonRecord, fallbackId: string): PublishedConfluencePage => {
    const version = record(page.version).number;
    return { externalId: text(page.id) ?? fallbackId, url: pageUrl(page, undefined), version: typeof version === "number" ? version : 1 };
  };

  return {
    authorizationUrl({ state, codeChallenge }) {
      const url = new URL(`${authBase}/authorize`);
      url.search = new URLSearchParams({
        audience: "api.atlassian.com",
        client_id: clientId,
        scope: scopes.join(" "),
        redirect_uri: redirectUri,
        state,
        response_type: "code",
        prompt: "consent",
        ...(options.pkce ? { code_challenge: codeChallenge, code_challenge_method: "S256" } : {}),
      }).toString();
      return url.toString();
    },

    async exchangeCode({ code, codeVerifier, signal }) {
      const tokens = await token(
        { grant_type: "authorization_code", code, redirect_uri: redirectUri, ...(options.pkce ? { code_verifier: codeVerifier } : {}) },
        [code, codeVerifier],
        signal,
      );
      const sites = await accessibleResources(tokens.accessToken, signal);
      const site = sites.find((candidate) => candidate.scopes.some((scope) => scope.includes("confluence"))) ?? sites[0];
      if (!site) throw new IntegrationError("FORBIDDEN", "The Atlassian authorization grants access to no site.");
      return { tokens, site, sites };
    },

    async refresh(refreshToken, signal) {
      return token({ grant_type: "refresh_token", refresh_token: refreshToken }, [refreshToken], signal);
    },

    async revoke() {},

    accessibleResources,

    async listSpaces(accessToken, siteId, { cursor, limit = 50, signal } = {}) {
      const query = new URLSearchParams({ limit: String(Math.min(250, Math.max(1, Math.floor(limit)))), ...(cursor ? { cursor } : {}) });
      const answer = record(await call(accessToken, "GET", v2(siteId, `/spaces?${query}`), { signal }));
      const base = text(record(answer._links).base);
      const spaces = array(answer.results)
        .map(record)
        .flatMap((space) => {
          const id = text(space.id) ?? (typeof space.id === "number" ? String(space.id) : undefined);
          const webui = text(record(space._links).webui) ?? "";
          return id ? [{ id, key: text(space.key) ?? "", name: text(space.name) ?? "", url: base ? base + webui : webui }] : [];
        });
      return { spaces, nextCursor: cursorOf(answer) };
    },

    async listPages(accessToken, siteId, { cursor, query, spaceId, limit = 50, signal } = {}) {
      const size = String(Math.min(250, Math.max(1, Math.floor(limit))));
      if (!query) {
        const params = new URLSearchParams({ limit: size, sort: "-modified-date", status: "current", ...(spaceId ? { "space-id": spaceId } : {}) });
        if (cursor) params.set("cursor", cursor);
        const answer = record(await call(accessToken, "GET", v2(siteId, `/pages?${params}`), { signal }));
        const base = text(record(answer._links).base);
        return { pages: array(answer.results).map((page) => pageRefOf(record(page), base)), nextCursor: cursorOf(answer) };
      }
      let cql = `type = page AND title ~ ${cqlString(query)}`;
      if (spaceId) {
        const space = record(await call(accessToken, "GET", v2(siteId, `/spaces/${encodeURIComponent(spaceId)}`), { signal }));
        const key = text(space.key);
        if (!key) throw badResponse(service, "the space's key");
        cql += ` AND space = ${cqlString(key)}`;
      }
      const params = new URLSearchParams({ cql, limit: size, expand: "version,ancestors" });
      if (cursor) params.set("cursor", cursor);
      const answer = record(await call(accessToken, "GET", `${wiki(siteId)}/rest/api/content/search?${params}`, { signal }));
      const base = text(record(answer._links).base);
      const pages = array(answer.results)
        .map(record)
        .filter((content) => content.type === undefined || content.type === "page")
        .map((content): PageRef => {
          const id = text(content.id);
          if (!id) throw badResponse(service, "a page id");
          return {
            externalId: id,
            title: text(content.title) ?? "",
            url: pageUrl(content, base),
            lastEditedAt: dateOf(record(content.version).when),
            parentId: text(record(array(content.ancestors).at(-1)).id) ?? null,
          };
        });
      return { pages, nextCursor: cursorOf(answer) };
    },

    async fetchPage(accessToken, siteId, pageId, signal) {
      const { page, id, version } = await getPage(accessToken, siteId, pageId, true, signal);
      const storage = text(record(record(page.body).storage).value) ?? "";
      return {
        externalId: id,
        title: text(page.title) ?? "",
        url: pageUrl(page, undefined),
        lastEditedAt: dateOf(record(page.version).createdAt),
        markdown: storageToMarkdown(storage),
        version,
      };
    },

    async createPage(accessToken, siteId, { spaceId, parentId, title, markdown, signal }) {
      const body = {
        spaceId,
        status: "current",
        title,
        ...(parentId ? { parentId } : {}),
        body: { representation: "storage", value: markdownToStorage(markdown) },
      };
      const page = record(await call(accessToken, "POST", v2(siteId, "/pages"), { body, signal, idempotent: false }));
      if (!text(page.id)) throw badResponse(service, "the id of the page it created");
      return published(page, "");
    },

    async updatePage(accessToken, siteId, pageId, { title, markdown, signal }) {
      const current = await getPage(accessToken, siteId, pageId, false, signal);
      const body = {
        id: current.id,
        status: "current",
        title,
        body: { representation: "storage", value: markdownToStorage(markdown) },
        version: { number: current.version + 1 },
      };
      const page = record(await call(accessToken, "PUT", v2(siteId, `/pages/${encodeURIComponent(current.id)}`), { body, signal }));
      return published(page, current.id);
    },
  };
}

function pageRefOf(page: JsonRecord, base: string | undefined): PageRef {
  const id = text(page.id);
  if (!id) throw badResponse(service, "a page id");
  return {
    externalId: id,
    title: text(page.title) ?? "",
    url: pageUrl(page, base),
    lastEditedAt: dateOf(record(page.version).createdAt),
    parentId: text(page.parentId) ?? null,
  };
}

/** The page's web URL: the site's wiki base (from the page or its list) and the page's webui path. */
function pageUrl(page: JsonRecord, listBase: string | undefined): string {
  const links = record(page._links);
  const webui = text(links.webui) ?? "";
  const base = text(links.base) ?? listBase;
  return base && webui.startsWith("/") ? base.replace(/\/+$/, "") + webui : webui;
}
