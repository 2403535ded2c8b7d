// The single sign-on part of the GraphQL API (server/sso.ts): startSso (anonymous: where to send the browser) and
// configureSso (admins: connect the organization's identity provider). completeSso, which signs in, is with the
// other sign-ins in server/auth-plugin.ts; setRequireSso and removeSso come from the database's functions.
import { access, context, list, sideEffect } from "postgraphile/grafast";
import { sideEffectWithPgClient } from "postgraphile/@dataplan/pg";
import { extendSchema, gql } from "postgraphile/utils";
import { signedInClaims } from "./request-origin.ts";
import type { Sso } from "./sso.ts";

interface ConfigureSsoInput {
  issuer: string;
  clientId: string;
  clientSecret: string;
  allowedDomains: string[];
  defaultRole: string;
}

export function makeSsoPlugin(sso: Sso) {
  return extendSchema((build) => {
    const providers = build.pgResources.sso_providers;
    if (!providers) throw new Error("the sso_providers table is not exposed");
    return {
      typeDefs: gql`
        input StartSsoInput {
          """
          The organization to sign in to.
          """
          organizationSlug: String
          """
          Or your work email address: its domain finds the organization (when exactly one allows it).
          """
          email: String
        }
        type StartSsoPayload {
          """
          Send the browser here. The provider sends it back to this server, which redirects to
          APP_URL/sso/complete#code=… (then call completeSso) or #error=….
          """
          authorizationUrl: String!
          """
          Keep this in the app that started the sign-in (e.g. sessionStorage; never in a URL) and pass it to
          completeSso: a sign-in finishes only where it started.
          """
          browserBinding: String!
        }
        input ConfigureSsoInput {
          """
          The provider's issuer URL (https). It is checked by fetching its discovery document.
          """
          issuer: String!
          clientId: String!
          """
          Sealed at rest; never shown again.
          """
          clientSecret: String!
          """
          Email domains whose verified addresses join on first sign-in; empty: only existing members sign in.
          """
          allowedDomains: [String!]! = []
          """
          The role of people who join on first sign-in (at most admin).
          """
          defaultRole: MembershipRole! = member
        }
        type ConfigureSsoPayload {
          ssoProvider: SsoProvider
        }
        extend type Mutation {
          """
          Starts a single sign-on through the organization's identity provider. Signed in, it also links your
          account to the provider account you sign in with, the first time.
          """
          startSso(input: StartSsoInput!): StartSsoPayload
          """
          Connects (or replaces) the organization's OpenID Connect identity provider. Admins; not API keys.
          Register APP's callback, PUBLIC_URL/auth/sso/callback, as a redirect URI at the provider.
          """
          configureSso(input: ConfigureSsoInput!): ConfigureSsoPayload
        }
      `,
      objects: {
        Mutation: {
          plans: {
            startSso: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                const { organizationSlug, email } = input as { organizationSlug?: string | null; email?: string | null };
                // Signed in, the person links their account to the provider account they sign in with (if new).
                return sso.start({ organizationSlug, email }, ctx.quireAuth?.userId ?? null);
              }),
            configureSso: (_$root, args) => {
              const $input = args.getRaw("input");
              // The provider is discovered before the transaction begins: no connection is held during the fetch.
              const $issuer = sideEffect([$input, context()], async ([input, ctx]) => {
                signedInClaims(ctx);
                return sso.discover(String((input as ConfigureSsoInput).issuer));
              });
              const $id = sideEffectWithPgClient(build.pgExecutor, list([$input, $issuer, context()]), async (client, [input, issuer, ctx]) => {
                const given = input as ConfigureSsoInput;
                return sso.configure(client, signedInClaims(ctx).orgId, { ...given, issuer: issuer as string });
              });
              return list([$id]);
            },
          },
        },
        ConfigureSsoPayload: {
          plans: { ssoProvider: ($r) => providers.get({ id: access($r, 0) }) },
        },
      },
    };
  }, "QuireSsoPlugin");
}
