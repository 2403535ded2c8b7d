// The sign-in part of the GraphQL API (names are the frontend's contract): register, login, refreshToken,
// switchOrganization, logout, logoutEverywhere, currentUser, currentOrganization. Each mutation runs in
// server/sessions.ts; the payload's user and organization are then read through RLS as the new session.
import { access, context, inhibitOnNull, lambda, sideEffect, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { QuireError } from "../lib/quire-error.ts";
import { pgSettingsFor } from "./context.ts";
import type { Config } from "../lib/config.ts";
import type { Sessions, SignedIn } from "./sessions.ts";

type Ctx = Grafast.Context;

const signInRequired = () => new QuireError("LOGIN", "Sign in first.");

/**
 * After a sign-in, the rest of this request (reading the payload's user and organization) runs as the new session:
 * the context's settings are replaced, which PostGraphile applies to the transactions that follow.
 */
function actAs(ctx: Ctx, config: Config, result: SignedIn): SignedIn {
  const claims = { ...result, expiresAt: result.expiresAt };
  const requestId = ctx.pgSettings?.["quire.request_id"] ?? "";
  ctx.pgSettings = pgSettingsFor(config, claims, requestId, ctx.quireClientIp ?? null);
  ctx.quireAuth = claims;
  return result;
}

function claimsOf(ctx: Ctx) {
  if (!ctx.quireAuth) throw signInRequired();
  return ctx.quireAuth;
}

export function makeAuthPlugin(config: Config, sessions: Sessions) {
  return extendSchema((build) => {
    const { users, organizations } = build.pgResources;
    if (!users || !organizations) throw new Error("the users and organizations tables are not exposed");
    const signIn = ($input: Step, run: (input: Record<string, unknown>, ctx: Ctx) => Promise<SignedIn>) =>
      sideEffect([$input, context()], async ([input, ctx]) => actAs(ctx, config, await run(input as Record<string, unknown>, ctx)));

    return {
      typeDefs: gql`
        input RegisterInput {
          organizationName: String!
          email: String!
          """At least 8 characters, at most 72 bytes, and not one of the most common passwords."""
          password: String!
          fullName: String!
        }
        input LoginInput {
          email: String!
          password: String!
          """The organization to sign in to; by default the one this person used most recently."""
          organizationSlug: String
        }
        input RefreshTokenInput {
          refreshToken: String!
        }
        input SwitchOrganizationInput {
          organizationSlug: String!
        }
        """A signed-in session: send accessToken as 'Authorization: Bearer …'; trade refreshToken for a new pair before expiresAt."""
        type AuthPayload {
          accessToken: String!
          """Single use: each refresh returns a new one, and reusing a spent one ends the session."""
          refreshToken: String!
          """When the access token expires."""
          expiresAt: Datetime!
          user: User
          organization: Organization
        }
        type LogoutPayload {
          """False when the session had already ended."""
          success: Boolean!
        }
        type LogoutEverywherePayload {
          sessionsEnded: Int!
        }
        extend type Mutation {
          """Creates an organization with you as its owner, and signs you in."""
          register(input: RegisterInput!): AuthPayload
          login(input: LoginInput!): AuthPayload
          refreshToken(input: RefreshTokenInput!): AuthPayload
          """New tokens for another organization you belong to."""
          switchOrganization(input: SwitchOrganizationInput!): AuthPayload
          """Ends this session: its tokens stop working on the next request."""
          logout: LogoutPayload
          """Ends every session of the signed-in person."""
          logoutEverywhere: LogoutEverywherePayload
        }
        extend type Query {
          """The signed-in person, or null."""
          currentUser: User
          """The organization of the current session, or null."""
          currentOrganization: Organization
        }
      `,
      objects: {
        Mutation: {
          plans: {
            register: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) =>
                sessions.register(input as never, ctx.quireClientIp ?? null),
              ),
            login: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) => sessions.login(input as never, ctx.quireClientIp ?? null)),
            refreshToken: (_$root, args) =>
              signIn(args.getRaw("input"), (input) => sessions.refresh(String(input.refreshToken))),
            switchOrganization: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) =>
                sessions.switchOrganization(claimsOf(ctx).sessionId, String(input.organizationSlug)),
              ),
            logout: () =>
              sideEffect(context(), async (ctx) => ({ success: await sessions.logout(claimsOf(ctx).sessionId) })),
            logoutEverywhere: () =>
              sideEffect(context(), async (ctx) => ({ sessionsEnded: await sessions.logoutEverywhere(claimsOf(ctx).userId) })),
          },
        },
        Query: {
          plans: {
            // Anonymous: null without a query (the anonymous role may not read these tables at all).
            currentUser: () => users.get({ id: inhibitOnNull(lambda(context(), (ctx) => ctx.quireAuth?.userId ?? null)) }),
            currentOrganization: () =>
              organizations.get({ id: inhibitOnNull(lambda(context(), (ctx) => ctx.quireAuth?.orgId ?? null)) }),
          },
        },
        AuthPayload: {
          plans: {
            accessToken: ($r) => access($r, "accessToken"),
            refreshToken: ($r) => access($r, "refreshToken"),
            expiresAt: ($r) => lambda(access($r, "expiresAt"), (d) => (d as Date).toISOString()),
            user: ($r) => users.get({ id: access($r, "userId") }),
            organization: ($r) => organizations.get({ id: access($r, "orgId") }),
          },
        },
        LogoutPayload: { plans: { success: ($r) => access($r, "success") } },
        LogoutEverywherePayload: { plans: { sessionsEnded: ($r) => access($r, "sessionsEnded") } },
      },
    };
  }, "QuireAuthPlugin");
}
