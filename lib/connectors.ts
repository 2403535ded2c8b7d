// One shape for every provider Quire connects to, so the server and the worker handle Notion and Confluence alike:
// OAuth (authorization URL, code exchange, refresh, revocation), browsing, reading a page as Markdown and
// publishing one. The provider clients under lib/integrations/ speak each API; this adapts them.
import type { Config } from "./config.ts";
import type { TokenSet } from "./integrations/oauth.ts";

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
  listPages(accessToken: string, externalId: string, options: { cursor: string | null; query: string | null }): Promise<{ pages: PageRef[]; nextCursor: string | null }>;
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

/** The connectors this configuration enables (a provider without client credentials is absent). */
export function createConnectors(config: Config): Connectors {
  const connectors: Partial<Record<IntegrationProvider, Connector>> = {};
  void config;
  return connectors;
}
