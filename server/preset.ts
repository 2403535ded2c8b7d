// The PostGraphile preset: the GraphQL API generated from the app_public schema, served by grafserv with
// graphql-ws subscriptions. Amber is V5's recommended base; simplified inflection gives `documents` rather than
// `allDocuments`.
import type pg from "pg";
import { PgSimplifyInflectionPreset } from "@graphile/simplify-inflection";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import type { Config } from "../lib/config.ts";
import { createConnectors, type Connectors } from "../lib/integrations/connectors.ts";
import type { Logger } from "../lib/logger.ts";
import type { Metrics } from "../lib/metrics.ts";
import { createPasswordHasher } from "../lib/passwords.ts";
import { createTokenService, type TokenService } from "../lib/tokens.ts";
import { createApiKeys, type ApiKeys } from "./api-keys.ts";
import { createObjectStore } from "../lib/storage/index.ts";
import type { ObjectStore } from "../lib/storage/object-store.ts";
import { makeAuthPlugin } from "./auth-plugin.ts";
import { makeContext } from "./context.ts";
import { makeWithPgClient } from "./pg-client.ts";
import { endedSessionsIn, shareReads } from "./shared-reads.ts";
import type { LiveEvents } from "./live-events.ts";
import { makeIntegrationsPlugin } from "./integrations-plugin.ts";
import { makeFilesPlugin } from "./files-plugin.ts";
import { makeLivePlugin } from "./live-plugin.ts";
import { makeJobProgressPlugin } from "./progress-plugin.ts";
import type { JobProgress } from "./job-progress.ts";
import { makeLlmSettingsPlugin } from "./llm-settings-plugin.ts";
import type { LiveSockets } from "./live-sockets.ts";
import { clientAddress, type ClientAddress } from "./client-address.ts";
import { makeMaskError, RequestErrorCodesPlugin, ServiceStatusPlugin } from "./errors.ts";
import { documentCacheSize, makeGraphQLLimitsPlugin } from "./graphql-limits.ts";
import { heavyFields } from "./response-size.ts";
import { summaryMaxBytes } from "../lib/llm/provider.ts";
import { countSignIns, makeGraphqlMetrics } from "./graphql-metrics.ts";
import type { CountRequest } from "./rate-limits.ts";
import { makeRequestAuditPlugin } from "./request-audit.ts";
import { TenantKeysPlugin } from "./tenant-keys-plugin.ts";
import { ColleaguesPlugin } from "./colleagues-plugin.ts";
import { createSessions } from "./sessions.ts";
import { createTwoFactor } from "./two-factor.ts";
import { makeTwoFactorPlugin } from "./two-factor-plugin.ts";
import { makeSsoPlugin } from "./sso-plugin.ts";
import { createSso, type Sso } from "./sso.ts";

export interface PresetOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** The authenticator pool the API runs its queries on (owned by the caller, who ends it). */
  readonly pool: pg.Pool;
  /** Shared with the HTTP middleware that verifies bearer tokens (default: made from config). */
  readonly tokens?: TokenService;
  /** Checks API keys presented over WebSockets; shared with the HTTP middleware (default: checked on `pool`). */
  readonly apiKeys?: ApiKeys;
  /** How a request's client address is read (default: made from TRUSTED_PROXIES). */
  readonly addressOf?: ClientAddress;
  /** Where WebSocket connections are tracked so a session's end closes them (none when only printing the schema). */
  readonly liveSockets?: LiveSockets;
  /** Where subscriptions get their organization's events (none when only printing the schema). */
  readonly liveEvents?: LiveEvents;
  /** Where jobProgress subscriptions get the text being written (none when only printing the schema). */
  readonly jobProgress?: JobProgress;
  /** The Notion and Confluence clients (default: made from config). */
  readonly connectors?: Connectors;
  /** Where GraphQL operations, their errors and sign-ins are counted (none when only printing the schema). */
  readonly metrics?: Metrics;
  /** Counts each WebSocket operation against the rate limits (default: counts nothing, for printing the schema). */
  readonly countRequest?: CountRequest;
  /** Single sign-on (default: made from config, pool and logger). */
  readonly sso?: Sso;
  /** Where file originals are stored (default: the store STORAGE_BACKEND names). */
  readonly store?: ObjectStore;
}

const countNothing: CountRequest = async () => ({ retryAfterSeconds: 0, scope: null });

/** The database's bounds (migrations) on a template body (characters) and on documents.metadata (bytes of JSON text). */
const templateBodyMaxChars = 20_000;
const jsonObjectMaxBytes = 64 * 1024;

/** Where GraphiQL (Ruru) and its assets are served when GRAPHIQL is on (server/security.ts relaxes their CSP). */
export const graphiqlPaths = { page: "/graphiql", assets: "/ruru-static/" } as const;

/** For a preset that never serves (printing the schema): subscriptions there have nothing to hear. */
const idleLiveEvents: LiveEvents = {
  subscribe: () => {
    throw new Error("this server does not serve subscriptions");
  },
  size: 0,
  close: () => undefined,
};

const idleJobProgress: JobProgress = {
  subscribe: () => Promise.reject(new Error("this server does not serve subscriptions")),
  size: 0,
  close: () => undefined,
};

export function makePreset({
  config,
  logger,
  pool,
  tokens = createTokenService(config),
  apiKeys = createApiKeys({ pool }),
  addressOf = clientAddress(config.http.trustedProxies),
  liveSockets,
  liveEvents = idleLiveEvents,
  jobProgress = idleJobProgress,
  connectors = createConnectors(config),
  metrics,
  countRequest = countNothing,
  sso = createSso({ config, pool, logger }),
  store = createObjectStore(config),
}: PresetOptions): GraphileConfig.Preset {
  const hasher = createPasswordHasher({
    cost: config.auth.bcryptCost,
    concurrency: config.auth.passwordHashConcurrency,
    maxWaitMs: config.auth.passwordHashMaxWaitMs,
    dutyPercent: config.auth.passwordHashDutyPercent,
  });
  const created = createSessions({ config, logger, pool, hasher, tokens });
  const sessions = metrics ? countSignIns(created, metrics) : created;
  const graphqlMetrics = metrics ? makeGraphqlMetrics(metrics) : null;
  const maskError = makeMaskError(logger, { suggestions: config.graphql.introspection });
  const withPgClient = makeWithPgClient(pool);
  return {
    extends: [PostGraphileAmberPreset, PgSimplifyInflectionPreset],
    plugins: [
      TenantKeysPlugin,
      ColleaguesPlugin,
      makeAuthPlugin(config, sessions, tokens),
      makeTwoFactorPlugin(createTwoFactor({ config, pool, hasher })),
      makeSsoPlugin(sso),
      makeLivePlugin(liveEvents),
      makeJobProgressPlugin(jobProgress),
      makeLlmSettingsPlugin(config),
      makeIntegrationsPlugin({ config, pool, connectors }),
      makeFilesPlugin(pool, store),
      RequestErrorCodesPlugin,
      ServiceStatusPlugin,
      makeRequestAuditPlugin({ pool, logger, addressOf }),
      makeGraphQLLimitsPlugin(config.graphql, {
        heavy: heavyFields({
          documentBytes: config.documents.maxBytes,
          summaryBytes: summaryMaxBytes,
          templateBodyBytes: templateBodyMaxChars * 4,
          jsonObjectBytes: jsonObjectMaxBytes,
        }),
      }),
      ...(graphqlMetrics ? [graphqlMetrics.plugin] : []),
    ],
    // Subscriptions listen through the server's own LISTEN connection (lib/notifications.ts), not PostGraphile's.
    pgServices: [makePgService({ pool, schemas: ["app_public"], pubsub: false })],
    grafast: {
      context: makeContext({
        config,
        tokens,
        apiKeys,
        addressOf,
        liveSockets,
        logger,
        countRequest,
        withPgClient,
        subscriptionWithPgClient: shareReads(withPgClient, endedSessionsIn(pool)),
      }),
    },
    grafserv: {
      graphqlPath: "/graphql",
      graphiql: config.http.graphiql,
      graphiqlPath: graphiqlPaths.page,
      graphiqlStaticPath: graphiqlPaths.assets,
      // Only at /graphiql: a browser opening /graphql gets the API's locked-down headers, under which Ruru cannot run.
      graphiqlOnGraphQLGET: false,
      websockets: true,
      // Bodies are buffered (and checked) before grafserv, with this same limit (server/app.ts).
      maxRequestLength: config.http.maxRequestBytes,
      // Parsed documents kept (each at most GRAPHQL_MAX_DOCUMENT_BYTES of text): see server/graphql-limits.ts.
      parseAndValidateCacheSize: documentCacheSize,
      maskError: graphqlMetrics ? graphqlMetrics.countErrors(maskError) : maskError,
    },
  };
}
