// One shape for every provider Quire connects to, so the server and the worker handle Notion and Confluence alike:
// OAuth (authorization URL, code exchange, refresh, revocation), browsing, reading a page as Markdown and
// publishing one. The provider clients under lib/integrations/ speak each API; this adapts them.
import type { Config } from "../config.ts";
import { createConfluenceClient } from "./confluence.ts";
import { IntegrationError } from "./errors.ts";
import { createNotionClient } from "./notion.ts";
import type { TokenSet } from "./oauth.ts";

export type IntegrationProvider = "notion" | "confluence";

/** What connecting yields: the tokens and which workspace or site they are for. */
export interface ConnectedAccount {
  readonly tokens: TokenSet;
  /** Notion workspace id; Atlassian cloud id of the site. */
  readonly externalId: string;
  readonly externalName: string;
  /** The workspace's or site's https URL, when the provider says. */
  readonly externalUrl: string | null;
}

export interface PageRef {
  readonly externalId: string;
  readonly title: string;
  readonly url: string;
  readonly lastEditedAt: Date | null;
}

export interface SpaceRef {
  readonly id: string;
  readonly key: string;
  readonly name: string;
  readonly url: string;
}

export interface PageContent extends PageRef {
  readonly markdown: string;
}

/** Where to publish: a Notion parent page, or a Confluence space and optional parent page. */
export interface PublishTarget {
  readonly parentPageId: string | null;
  readonly spaceId: string | null;
}

export interface Connector {
  readonly provider: IntegrationProvider;
  /** Where to send the browser: `<PUBLIC_URL>/oauth/<provider>/callback` is the redirect URI. */
  authorizationUrl(state: string, codeChallenge: string): string;
  connect(code: string, codeVerifier: string): Promise<ConnectedAccount>;
  /** New tokens; IntegrationError INVALID_GRANT when the provider refuses the refresh token. */
  refresh(refreshToken: string): Promise<TokenSet>;
  /** Revokes at the provider where it offers revocation; a no-op where it does not. */
  revoke(accessToken: string): Promise<void>;
  listPages(
    accessToken: string,
    externalId: string,
    options: { cursor: string | null; query: string | null },
  ): Promise<{ pages: PageRef[]; nextCursor: string | null }>;
  /** Confluence spaces (publishing targets); null where the provider has none (Notion). */
  listSpaces:
    ((accessToken: string, externalId: string, options: { cursor: string | null }) => Promise<{ spaces: SpaceRef[]; nextCursor: string | null }>) | null;
  fetchPage(accessToken: string, externalId: string, pageId: string, signal?: AbortSignal): Promise<PageContent>;
  /** Creates the page, or replaces the content of `existingPageId` (re-publishing updates rather than duplicates). */
  publish(
    accessToken: string,
    externalId: string,
    target: PublishTarget,
    page: { title: string; markdown: string },
    existingPageId: string | null,
  ): Promise<{ externalId: string; url: string }>;
}

export type Connectors = Readonly<Partial<Record<IntegrationProvider, Connector>>>;

export const redirectUri = (config: Config, provider: IntegrationProvider) => `${config.integrations.publicUrl}/oauth/${provider}/callback`;

function notionConnector(config: Config, options: NonNullable<Config["integrations"]["notion"]>): Connector {
  const client = createNotionClient({
    clientId: options.clientId,
    clientSecret: options.clientSecret,
    redirectUri: redirectUri(config, "notion"),
    authBaseUrl: options.apiUrl,
    apiBaseUrl: options.apiUrl,
    timeoutMs: config.integrations.timeoutMs,
    maxRetries: config.integrations.maxRetries,
  });
  return {
    provider: "notion",
    authorizationUrl: (state, codeChallenge) => client.authorizationUrl({ state, codeChallenge }),
    async connect(code, codeVerifier) {
      const connection = await client.exchangeCode({ code, codeVerifier });
      // A workspace id is what a reconnection matches on; a grant without one is keyed by its bot.
      const externalId = connection.workspaceId ?? connection.botId;
      if (!externalId) throw new IntegrationError("BAD_RESPONSE", "The Notion authorization server named no workspace.");
      return { tokens: connection.tokens, externalId, externalName: connection.workspaceName ?? "Notion", externalUrl: null };
    },
    refresh: (refreshToken) => client.refresh(refreshToken),
    revoke: (accessToken) => client.revoke(accessToken),
    async listPages(accessToken, _externalId, { cursor, query }) {
      const list = await client.listPages(accessToken, { cursor, ...(query ? { query } : {}) });
      return { pages: [...list.pages], nextCursor: list.nextCursor };
    },
    listSpaces: null,
    fetchPage: (accessToken, _externalId, pageId, signal) => client.fetchPage(accessToken, pageId, signal),
    async publish(accessToken, _externalId, target, page, existingPageId) {
      if (existingPageId) return client.replacePageContent(accessToken, existingPageId, page);
      if (!target.parentPageId) throw new IntegrationError("REJECTED", "Publishing to Notion needs a parent page.");
      return client.createPage(accessToken, { parentPageId: target.parentPageId, ...page });
    },
  };
}

function confluenceConnector(config: Config, options: NonNullable<Config["integrations"]["atlassian"]>): Connector {
  const client = createConfluenceClient({
    clientId: options.clientId,
    clientSecret: options.clientSecret,
    redirectUri: redirectUri(config, "confluence"),
    authBaseUrl: options.authUrl,
    apiBaseUrl: options.apiUrl,
    timeoutMs: config.integrations.timeoutMs,
    maxRetries: config.integrations.maxRetries,
  });
  return {
    provider: "confluence",
    authorizationUrl: (state, codeChallenge) => client.authorizationUrl({ state, codeChallenge }),
    async connect(code, codeVerifier) {
      const { tokens, site } = await client.exchangeCode({ code, codeVerifier });
      return { tokens, externalId: site.id, externalName: site.name, externalUrl: site.url.startsWith("https://") ? site.url : null };
    },
    refresh: (refreshToken) => client.refresh(refreshToken),
    revoke: (accessToken) => client.revoke(accessToken),
    async listPages(accessToken, siteId, { cursor, query }) {
      const list = await client.listPages(accessToken, siteId, { cursor, ...(query ? { query } : {}) });
      return { pages: [...list.pages], nextCursor: list.nextCursor };
    },
    async listSpaces(accessToken, siteId, { cursor }) {
      const list = await client.listSpaces(accessToken, siteId, { cursor });
      return { spaces: [...list.spaces], nextCursor: list.nextCursor };
    },
    fetchPage: (accessToken, siteId, pageId, signal) => client.fetchPage(accessToken, siteId, pageId, signal),
    async publish(accessToken, siteId, target, page, existingPageId) {
      if (existingPageId) return client.updatePage(accessToken, siteId, existingPageId, page);
      if (!target.spaceId) throw new IntegrationError("REJECTED", "Publishing to Confluence needs a space.");
      return client.createPage(accessToken, siteId, { spaceId: target.spaceId, parentId: target.parentPageId, ...page });
    },
  };
}

/** The connectors this configuration enables (a provider without client credentials is absent). */
export function createConnectors(config: Config): Connectors {
  const { notion, atlassian } = config.integrations;
  return {
    ...(notion ? { notion: notionConnector(config, notion) } : {}),
    ...(atlassian ? { confluence: confluenceConnector(config, atlassian) } : {}),
  };
}
