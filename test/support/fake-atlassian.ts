// A real HTTP server on loopback standing in for both Atlassian hosts the Confluence client talks to: the
// authorization server (POST /oauth/token with client credentials in the JSON body; refresh tokens ROTATE, so a
// refresh token works once and is rejected afterwards) and the API gateway (accessible-resources, and Confluence
// Cloud REST v2 under /ex/confluence/{cloudId}/wiki/api/v2: spaces and pages with cursor pagination via
// _links.next, page bodies in storage format, create, update with version.number + 1, and a small CQL title search
// at /wiki/rest/api/content/search). Every request is recorded and faults can be queued.
import { randomUUID } from "node:crypto";
import { startFakeLlmServer, type RecordedRequest, type Reply } from "./fake-llm-server.ts";
import type { Fault } from "./fake-notion.ts";

type Json = Record<string, unknown>;

export interface FakeSite {
  readonly id: string;
  readonly name: string;
  readonly url: string;
  readonly scopes: readonly string[];
}

export interface FakeConfluencePage {
  readonly id: string;
  readonly spaceId: string;
  readonly parentId: string | null;
  title: string;
  storage: string;
  version: number;
  versionCreatedAt: string;
}

export interface FakeAtlassian {
  /** http://127.0.0.1:<port>, both the auth and the API base URL. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  readonly clientId: string;
  readonly clientSecret: string;
  readonly redirectUri: string;
  readonly site: FakeSite;
  readonly sites: FakeSite[];
  /** An access token valid from the start. */
  readonly accessToken: string;
  readonly pages: Map<string, FakeConfluencePage>;
  /** Results per list page when the request asks for more (lower it to force pagination). */
  pageSize: number;
  /** A one-time authorization code granting `scopes`. */
  issueCode(scopes?: readonly string[]): string;
  expire(accessToken: string): void;
  isValidRefreshToken(token: string): boolean;
  addSpace(space: { key: string; name: string }): string;
  addPage(page: { spaceId: string; title: string; storage: string; parentId?: string | null; modifiedAt?: string }): string;
  fault(fault: Fault): void;
  close(): Promise<void>;
}

const confluenceError = (status: number, title: string): Reply => ({
  status,
  json: { errors: [{ status, code: title.toUpperCase().replace(/\W+/g, "_"), title, detail: null }] },
});

export async function startFakeAtlassian(): Promise<FakeAtlassian> {
  const clientId = "atlassian-client-id";
  const clientSecret = "atlassian-client-secret-SECRET";
  const redirectUri = "https://quire.test/oauth/confluence/callback";
  const accessTokens = new Set<string>(["atl_initial_ACCESS_TOKEN"]);
  const refreshTokens = new Set<string>();
  const rotatedOut = new Set<string>();
  const codes = new Map<string, readonly string[]>();
  const spaces = new Map<string, { id: string; key: string; name: string }>();
  const pages = new Map<string, FakeConfluencePage>();
  const faults: Fault[] = [];
  let nextId = 10_000;
  const site: FakeSite = {
    id: "11111111-2222-3333-4444-555555555555",
    name: "acme",
    url: "https://acme.atlassian.net",
    scopes: ["read:page:confluence", "write:page:confluence", "read:space:confluence", "search:confluence"],
  };
  const sites: FakeSite[] = [
    { id: "99999999-0000-0000-0000-000000000000", name: "acme-jira", url: "https://acme-jira.atlassian.net", scopes: ["read:jira-work"] },
    site,
  ];
  const base = `${site.url}/wiki`;

  const pageJson = (page: FakeConfluencePage, withBody: boolean): Json => {
    const space = spaces.get(page.spaceId)!;
    return {
      id: page.id,
      status: "current",
      title: page.title,
      spaceId: page.spaceId,
      parentId: page.parentId,
      parentType: page.parentId ? "page" : null,
      authorId: "user-1",
      createdAt: page.versionCreatedAt,
      version: { number: page.version, createdAt: page.versionCreatedAt, message: "", minorEdit: false, authorId: "user-1" },
      ...(withBody ? { body: { storage: { representation: "storage", value: page.storage } } } : {}),
      _links: {
        webui: `/spaces/${space.key}/pages/${page.id}/${page.title.split(/\s+/).map(encodeURIComponent).join("+")}`,
        editui: `/pages/resumedraft.action?draftId=${page.id}`,
        tinyui: `/x/${page.id}`,
        base,
      },
    };
  };

  /** One page of `items` after the cursor (an index), with the `_links.next` Confluence would send. */
  function paginate<T>(items: readonly T[], params: URLSearchParams, nextPath: string) {
    const limit = Math.min(Number(params.get("limit") ?? 25), fake.pageSize);
    const start = Number(params.get("cursor") ?? 0);
    const slice = items.slice(start, start + limit);
    const more = start + limit < items.length;
    const next = new URLSearchParams(params);
    next.set("cursor", String(start + limit));
    return { slice, links: { base, ...(more ? { next: `${nextPath}?${next}` } : {}) } };
  }

  function token(request: RecordedRequest): Reply {
    const body = (request.body ?? {}) as Json;
    if (body.client_id !== clientId || body.client_secret !== clientSecret)
      return { status: 401, json: { error: "access_denied", error_description: "Unauthorized" } };
    let scopes: readonly string[];
    if (body.grant_type === "authorization_code") {
      const granted = typeof body.code === "string" ? codes.get(body.code) : undefined;
      if (!granted || body.redirect_uri !== redirectUri)
        return { status: 403, json: { error: "invalid_grant", error_description: "Invalid authorization code" } };
      codes.delete(body.code as string);
      scopes = granted;
    } else if (body.grant_type === "refresh_token") {
      const refresh = String(body.refresh_token);
      if (rotatedOut.has(refresh)) return { status: 403, json: { error: "unauthorized_client", error_description: "refresh_token is invalid" } };
      if (!refreshTokens.delete(refresh))
        return { status: 403, json: { error: "invalid_grant", error_description: `Unknown or invalid refresh token ${refresh}.` } };
      rotatedOut.add(refresh);
      scopes = [...site.scopes, "offline_access"];
    } else return { status: 400, json: { error: "unsupported_grant_type" } };
    const access = `atl_${randomUUID()}`;
    accessTokens.add(access);
    let refresh: string | undefined;
    if (scopes.includes("offline_access")) {
      refresh = `atl_refresh_${randomUUID()}`;
      refreshTokens.add(refresh);
    }
    return { json: { access_token: access, expires_in: 3600, scope: scopes.join(" "), token_type: "Bearer", ...(refresh ? { refresh_token: refresh } : {}) } };
  }

  function wiki(request: RecordedRequest, path: string, params: URLSearchParams): Reply {
    const body = (request.body ?? {}) as Json;
    let m: RegExpExecArray | null;
    if (request.method === "GET" && path === "/api/v2/spaces") {
      const { slice, links } = paginate([...spaces.values()], params, "/wiki/api/v2/spaces");
      return {
        json: { results: slice.map((space) => ({ ...space, type: "global", status: "current", _links: { webui: `/spaces/${space.key}` } })), _links: links },
      };
    }
    if (request.method === "GET" && (m = /^\/api\/v2\/spaces\/([^/]+)$/.exec(path))) {
      const space = spaces.get(decodeURIComponent(m[1]!));
      return space
        ? { json: { ...space, type: "global", status: "current", _links: { webui: `/spaces/${space.key}`, base } } }
        : confluenceError(404, "Not Found");
    }
    if (path === "/api/v2/pages" && request.method === "GET") {
      const spaceId = params.get("space-id");
      const found = [...pages.values()]
        .filter((page) => !spaceId || page.spaceId === spaceId)
        .sort((a, b) => b.versionCreatedAt.localeCompare(a.versionCreatedAt) || a.id.localeCompare(b.id));
      const { slice, links } = paginate(found, params, "/wiki/api/v2/pages");
      return { json: { results: slice.map((page) => pageJson(page, false)), _links: links } };
    }
    if (path === "/api/v2/pages" && request.method === "POST") {
      if (typeof body.spaceId !== "string" || !spaces.has(body.spaceId)) return confluenceError(400, "Space not found");
      const storage = ((body.body ?? {}) as Json).representation === "storage" ? String(((body.body ?? {}) as Json).value ?? "") : null;
      if (storage === null || typeof body.title !== "string" || !body.title) return confluenceError(400, "Invalid page");
      const id = addPage({ spaceId: body.spaceId, title: body.title, storage, parentId: typeof body.parentId === "string" ? body.parentId : null });
      return { json: pageJson(pages.get(id)!, true) };
    }
    if ((m = /^\/api\/v2\/pages\/([^/]+)$/.exec(path))) {
      const page = pages.get(decodeURIComponent(m[1]!));
      if (!page) return confluenceError(404, "Not Found");
      if (request.method === "GET") return { json: pageJson(page, params.get("body-format") === "storage") };
      if (request.method === "PUT") {
        const number = ((body.version ?? {}) as Json).number;
        if (number !== page.version + 1) return confluenceError(409, `Version must be incremented on update. Current version is: ${page.version}`);
        page.title = String(body.title);
        page.storage = String(((body.body ?? {}) as Json).value ?? "");
        page.version = number;
        page.versionCreatedAt = new Date().toISOString();
        return { json: pageJson(page, true) };
      }
    }
    if (request.method === "GET" && path === "/rest/api/content/search") {
      const cql = params.get("cql") ?? "";
      const title = /title ~ "((?:[^"\\]|\\.)*)"/.exec(cql)?.[1]?.replace(/\\(.)/g, "$1").toLowerCase();
      const key = /space = "((?:[^"\\]|\\.)*)"/.exec(cql)?.[1];
      if (!/type = page/.test(cql)) return { status: 400, json: { statusCode: 400, message: "Could not parse cql" } };
      const found = [...pages.values()].filter(
        (page) => (!title || page.title.toLowerCase().includes(title)) && (!key || spaces.get(page.spaceId)?.key === key),
      );
      const { slice, links } = paginate(found, params, "/rest/api/content/search");
      const results = slice.map((page) => {
        const json = pageJson(page, false);
        return {
          id: page.id,
          type: "page",
          status: "current",
          title: page.title,
          version: { number: page.version, when: page.versionCreatedAt },
          ancestors: page.parentId ? [{ id: page.parentId }] : [],
          _links: { webui: (json._links as Json).webui },
        };
      });
      return { json: { results, start: 0, limit: slice.length, size: slice.length, _links: links } };
    }
    return confluenceError(404, "Not Found");
  }

  function answer(request: RecordedRequest): Reply {
    const fault = faults.findIndex((candidate) => candidate.match?.(request) ?? true);
    if (fault >= 0) return faults.splice(fault, 1)[0]!.reply;
    const parsed = new URL(request.path, "http://fake.invalid");
    if (request.method === "POST" && parsed.pathname === "/oauth/token") return token(request);
    const bearer = /^Bearer (.+)$/.exec(request.headers.authorization ?? "")?.[1] ?? "";
    if (!accessTokens.has(bearer)) return { status: 401, json: { code: 401, message: `Unauthorized; token ${bearer} is expired` } };
    if (request.method === "GET" && parsed.pathname === "/oauth/token/accessible-resources") {
      return { json: sites.map((s) => ({ ...s, avatarUrl: "https://avatars.invalid/1.png" })) };
    }
    const m = /^\/ex\/confluence\/([^/]+)\/wiki(\/.*)$/.exec(parsed.pathname);
    if (!m || !sites.some((s) => s.id === decodeURIComponent(m[1]!))) return { status: 404, json: { code: 404, message: "Not Found" } };
    return wiki(request, m[2]!, parsed.searchParams);
  }

  function addPage(page: { spaceId: string; title: string; storage: string; parentId?: string | null; modifiedAt?: string }): string {
    const id = String(nextId++);
    pages.set(id, {
      id,
      spaceId: page.spaceId,
      parentId: page.parentId ?? null,
      title: page.title,
      storage: page.storage,
      version: 1,
      versionCreatedAt: page.modifiedAt ?? new Date().toISOString(),
    });
    return id;
  }

  const server = await startFakeLlmServer(answer);
  const fake: FakeAtlassian = {
    url: server.url,
    requests: server.requests,
    clientId,
    clientSecret,
    redirectUri,
    site,
    sites,
    accessToken: "atl_initial_ACCESS_TOKEN",
    pages,
    pageSize: 25,
    issueCode(scopes = [...site.scopes, "offline_access"]) {
      const code = `code-${randomUUID()}`;
      codes.set(code, scopes);
      return code;
    },
    expire: (accessToken) => void accessTokens.delete(accessToken),
    isValidRefreshToken: (refreshToken) => refreshTokens.has(refreshToken),
    addSpace({ key, name }) {
      const id = String(nextId++);
      spaces.set(id, { id, key, name });
      return id;
    },
    addPage,
    fault: (fault) => void faults.push(fault),
    close: () => server.close(),
  };
  return fake;
}
