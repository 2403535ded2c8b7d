// The integrations part of the GraphQL API that needs more than SQL: startIntegration (the OAuth authorization
// URL), disconnectIntegration (revoking at the provider first) and integrationPages (browsing the provider with
// the organization's token). importDocuments, syncIntegration and publishSummary are SQL functions (section
// Integrations of migrations/committed/000001-quire.sql). Every database step runs as the caller (db/as-caller.ts), so the database decides who may do what.
import { createHash } from "node:crypto";
import type pg from "pg";
import { context, lambda, object, sideEffect, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { asCaller } from "../db/as-caller.ts";
import type { Config } from "../lib/config.ts";
import type { Connector, Connectors, IntegrationProvider, PageRef } from "../lib/integrations/connectors.ts";
import { openIntegration, type IntegrationSession } from "../lib/integrations/credentials.ts";
import { IntegrationError } from "../lib/integrations/errors.ts";
import { codeChallenge, codeVerifier, state as newState } from "../lib/integrations/oauth.ts";
import { QuireError } from "../lib/quire-error.ts";
import { callerSettings } from "./request-origin.ts";
import { upstreamError } from "./upstream-errors.ts";

type Ctx = Grafast.Context;

export interface IntegrationsPluginOptions {
  readonly config: Config;
  /** The server's pool; integration work runs on it as the caller. */
  readonly pool: pg.Pool;
  readonly connectors: Connectors;
}

/** `returnTo` as given when it is a relative path or on an allowed frontend origin; null otherwise. */
export function allowedReturnTo(returnTo: string, config: Config): string | null {
  if (/^\/(?![/\\])[^\s\\]*$/.test(returnTo) && returnTo.length <= 1000) return returnTo;
  try {
    const url = new URL(returnTo);
    return config.integrations.frontendOrigins.includes(url.origin) ? url.toString() : null;
  } catch {
    return null;
  }
}

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest();

export function makeIntegrationsPlugin({ config, pool, connectors }: IntegrationsPluginOptions) {
  const connectorFor = (provider: IntegrationProvider): Connector => {
    const connector = connectors[provider];
    if (!connector || !config.integrations.sealingKeys) throw new QuireError("BADIN", `${provider} is not configured on this server.`);
    return connector;
  };
  /** The integration's provider, read as the caller (NOT_FOUND when it is not theirs). */
  const providerOf = async (settings: Record<string, string>, integrationId: string): Promise<IntegrationProvider> => {
    const rows = await asCaller(
      pool,
      settings,
      async (client) =>
        (await client.query<{ provider: IntegrationProvider }>("select provider from app_public.integrations where id = $1", [integrationId])).rows,
    );
    if (!rows[0]) throw new QuireError("NTFND", "No such integration.");
    return rows[0].provider;
  };
  const sessionFor = (settings: Record<string, string>, integrationId: string, connector: Connector) =>
    openIntegration(integrationId, {
      keys: config.integrations.sealingKeys!,
      connector,
      inTransaction: (fn) => asCaller(pool, settings, fn),
    });

  /** Runs `fn` with the integration's connector and tokens, as the caller; provider failures become clear codes. */
  const browse = async <T>(ctx: Ctx, integrationId: string, fn: (connector: Connector, session: IntegrationSession) => Promise<T>): Promise<T> => {
    const settings = callerSettings(ctx);
    const connector = connectorFor(await providerOf(settings, integrationId));
    const session = await sessionFor(settings, integrationId, connector);
    try {
      return await fn(connector, session);
    } catch (error) {
      if (error instanceof IntegrationError) throw upstreamError(error);
      throw error;
    }
  };

  return extendSchema((build) => {
    const { integrations } = build.pgResources;
    if (!integrations) throw new Error("the integrations table is not exposed");
    return {
      typeDefs: gql`
        input StartIntegrationInput {
          provider: IntegrationProvider!
          "Where the browser goes after connecting: a relative path, or a URL on an allowed frontend origin (FRONTEND_ORIGINS)."
          returnTo: String!
        }
        type StartIntegrationPayload {
          "Send the browser here; the provider returns it to /oauth/<provider>/callback, which redirects to returnTo."
          authorizationUrl: String!
        }
        input DisconnectIntegrationInput {
          integrationId: UUID!
        }
        type DisconnectIntegrationPayload {
          integration: Integration
        }
        "A page the integration can see at the provider."
        type IntegrationPage {
          externalId: String!
          title: String!
          url: String!
          lastEditedAt: Datetime
        }
        "A Confluence space: where summaries can be published."
        type IntegrationSpace {
          id: String!
          key: String!
          name: String!
          url: String!
        }
        type IntegrationSpaceList {
          spaces: [IntegrationSpace!]!
          nextCursor: String
        }
        type IntegrationPageList {
          pages: [IntegrationPage!]!
          "Pass as cursor for the next page of results; null at the end."
          nextCursor: String
        }
        extend type Mutation {
          "Starts connecting a Notion workspace or Confluence site (admins and owners): returns the provider's authorization URL."
          startIntegration(input: StartIntegrationInput!): StartIntegrationPayload
          "Revokes the integration's tokens at the provider where it offers revocation, deletes them and cancels its unfinished jobs (admins and owners)."
          disconnectIntegration(input: DisconnectIntegrationInput!): DisconnectIntegrationPayload
        }
        extend type Query {
          "The pages a connected integration can see at the provider, searched by title (members and above)."
          integrationPages(integrationId: UUID!, query: String, cursor: String): IntegrationPageList
          "The spaces of a connected Confluence site (members and above); Notion has none (BAD_INPUT)."
          integrationSpaces(integrationId: UUID!, cursor: String): IntegrationSpaceList
        }
      `,
      objects: {
        Mutation: {
          plans: {
            startIntegration(_$root: Step, fieldArgs: { getRaw(path: string[]): Step }) {
              const $input = fieldArgs.getRaw(["input"]) as Step<{ provider: IntegrationProvider; returnTo: string }>;
              const $url = sideEffect([$input, context()], async ([input, ctx]) => {
                const settings = callerSettings(ctx);
                const connector = connectorFor(input.provider);
                const returnTo = allowedReturnTo(input.returnTo, config);
                if (!returnTo) throw new QuireError("BADIN", "returnTo must be a relative path or a URL on an allowed frontend origin.");
                const state = newState();
                const verifier = codeVerifier();
                await asCaller(pool, settings, (client) =>
                  client.query("select app_public.begin_integration_oauth($1, $2, $3, $4)", [input.provider, sha256(state), returnTo, verifier]),
                );
                return connector.authorizationUrl(state, codeChallenge(verifier));
              });
              return object({ authorizationUrl: $url });
            },
            disconnectIntegration(_$root: Step, fieldArgs: { getRaw(path: string[]): Step }) {
              const $input = fieldArgs.getRaw(["input"]) as Step<{ integrationId: string }>;
              const $id = sideEffect([$input, context()], async ([input, ctx]) => {
                const settings = callerSettings(ctx);
                const [{ role } = { role: null }] = await asCaller(
                  pool,
                  settings,
                  async (client) => (await client.query<{ role: string | null }>("select app_public.current_member_role()::text as role")).rows,
                );
                if (role !== "admin" && role !== "owner") throw new QuireError("DNIED", "Only admins and owners disconnect integrations.");
                const provider = await providerOf(settings, input.integrationId);
                const connector = connectors[provider];
                // Revocation is best effort: a provider that is down must not keep an admin from disconnecting.
                if (connector && config.integrations.sealingKeys) {
                  await sessionFor(settings, input.integrationId, connector)
                    .then((session) => session.use((token) => connector.revoke(token)))
                    .catch(() => undefined);
                }
                await asCaller(pool, settings, (client) => client.query("select app_public.disconnect_integration($1)", [input.integrationId]));
                return input.integrationId;
              });
              return object({ integration: integrations.get({ id: $id }) });
            },
          },
        },
        Query: {
          plans: {
            integrationPages(_$root: Step, fieldArgs: { getRaw(name: string): Step }) {
              const $args = object({ id: fieldArgs.getRaw("integrationId"), query: fieldArgs.getRaw("query"), cursor: fieldArgs.getRaw("cursor") }) as Step<{
                id: string;
                query?: string | null;
                cursor?: string | null;
              }>;
              return lambda([$args, context()], ([args, ctx]) =>
                browse(ctx, args.id, async (connector, session) => {
                  const found = await session.use((token) =>
                    connector.listPages(token, session.externalId, { cursor: args.cursor ?? null, query: args.query ?? null }),
                  );
                  return {
                    pages: found.pages.map((p: PageRef) => ({ ...p, lastEditedAt: p.lastEditedAt?.toISOString() ?? null })),
                    nextCursor: found.nextCursor,
                  };
                }),
              );
            },
            integrationSpaces(_$root: Step, fieldArgs: { getRaw(name: string): Step }) {
              const $args = object({ id: fieldArgs.getRaw("integrationId"), cursor: fieldArgs.getRaw("cursor") }) as Step<{
                id: string;
                cursor?: string | null;
              }>;
              return lambda([$args, context()], ([args, ctx]) =>
                browse(ctx, args.id, async (connector, session) => {
                  const listSpaces = connector.listSpaces;
                  if (!listSpaces) throw new QuireError("BADIN", `${connector.provider} has no spaces.`);
                  return session.use((token) => listSpaces(token, session.externalId, { cursor: args.cursor ?? null }));
                }),
              );
            },
          },
        },
      },
    };
  }, "QuireIntegrationsPlugin");
}
