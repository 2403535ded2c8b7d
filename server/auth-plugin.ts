// The sign-in part of the GraphQL API (names are the frontend's contract): register, verifyEmail,
// resendVerificationEmail, login, refreshToken, verifyMfa, completeSso, switchOrganization, logout, logoutEverywhere,
// changePassword, requestPasswordReset, resetPassword, inviteMember, acceptInvitation, currentUser,
// currentOrganization. Each mutation runs in
// server/sessions.ts; the payload's user and organization are then read through RLS as the new session.
import { access, context, inhibitOnNull, lambda, sideEffect, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { pgSettingsFor } from "./context.ts";
import type { Config } from "../lib/config.ts";
import { oneTimeToken } from "../lib/one-time-token.ts";
import { onBehalfOf, originOf, signedInClaims } from "./request-origin.ts";
import type { Sessions, SignedIn } from "./sessions.ts";
import type { TokenService } from "../lib/tokens.ts";
import { sideEffectWithPgClient } from "postgraphile/@dataplan/pg";

type Ctx = Grafast.Context;

/**
 * After a sign-in, the rest of this request (reading the payload's user and organization) runs as the new session:
 * the context's settings are replaced, which PostGraphile applies to the transactions that follow.
 */
function actAs(ctx: Ctx, config: Config, result: SignedIn): SignedIn {
  const { userId, orgId, sessionId, role, expiresAt } = result;
  const claims = { userId, orgId, sessionId, role, expiresAt };
  const requestId = ctx.pgSettings?.["quire.request_id"] ?? "";
  ctx.pgSettings = pgSettingsFor(config, claims, requestId, ctx.quireClientIp ?? null);
  ctx.quireAuth = claims;
  return result;
}

export function makeAuthPlugin(config: Config, sessions: Sessions, tokens: TokenService) {
  return extendSchema((build) => {
    const { users, organizations, invitations } = build.pgResources;
    if (!users || !organizations || !invitations) throw new Error("the users, organizations and invitations tables are not exposed");
    const signIn = ($input: Step, run: (input: Record<string, unknown>, ctx: Ctx) => Promise<SignedIn>) =>
      sideEffect([$input, context()], async ([input, ctx]) =>
        actAs(ctx, config, await onBehalfOf(originOf(ctx), () => run(input as Record<string, unknown>, ctx))),
      );

    return {
      typeDefs: gql`
        input RegisterInput {
          organizationName: String!
          email: String!
          """
          At least 8 characters, at most 72 bytes, and not one of the most common passwords.
          """
          password: String!
          fullName: String!
        }
        type RegisterPayload {
          """
          Always true: the answer never reveals whether the address already has an account.
          """
          success: Boolean!
        }
        input VerifyEmailInput {
          token: String!
        }
        type VerifyEmailPayload {
          success: Boolean!
        }
        type ResendVerificationEmailPayload {
          """
          False when the address is already verified.
          """
          sent: Boolean!
        }
        input LoginInput {
          email: String!
          password: String!
          """
          The organization to sign in to; by default the one this person used most recently.
          """
          organizationSlug: String
        }
        input VerifyMfaInput {
          """
          The challenge of the MFA_REQUIRED answer to login (its extensions.challenge): single use, five minutes.
          """
          challenge: String!
          """
          The six-digit code the authenticator app shows, or one of the recovery codes (each works once).
          """
          code: String!
        }
        input CompleteSsoInput {
          """
          The code of APP_URL/sso/complete#code=…, where single sign-on sent the browser: single use, one minute.
          """
          code: String!
          """
          The browserBinding startSso returned to the app that started this sign-in.
          """
          browserBinding: String!
        }
        input RefreshTokenInput {
          refreshToken: String!
        }
        input SwitchOrganizationInput {
          organizationSlug: String!
        }
        """
        A signed-in session: send accessToken as 'Authorization: Bearer …'; trade refreshToken for a new pair before expiresAt.
        """
        type AuthPayload {
          accessToken: String!
          """
          Single use: each refresh returns a new one, and reusing a spent one ends the session.
          """
          refreshToken: String!
          """
          When the access token expires.
          """
          expiresAt: Datetime!
          user: User
          organization: Organization
        }
        type LogoutPayload {
          """
          False when the session had already ended.
          """
          success: Boolean!
        }
        type LogoutEverywherePayload {
          sessionsEnded: Int!
        }
        input ChangePasswordInput {
          currentPassword: String!
          newPassword: String!
        }
        input DeleteMyAccountInput {
          """
          Your current password: a session alone does not delete an account. An account without a password (single
          sign-on only) leaves it out and must have signed in within the last 10 minutes.
          """
          password: String
        }
        type DeleteMyAccountPayload {
          success: Boolean!
        }
        type ChangePasswordPayload {
          """
          How many of your other sessions ended (this one stays).
          """
          otherSessionsEnded: Int!
        }
        input RequestPasswordResetInput {
          email: String!
        }
        type RequestPasswordResetPayload {
          """
          Always true: the answer never reveals whether the address has an account.
          """
          success: Boolean!
        }
        input ResetPasswordInput {
          token: String!
          newPassword: String!
        }
        type ResetPasswordPayload {
          success: Boolean!
        }
        input InviteMemberInput {
          email: String!
          role: MembershipRole! = member
        }
        type InviteMemberPayload {
          invitation: Invitation
          """
          The link to hand to the invitee when this deployment sends no email (SMTP_URL unset); null when emailed.
          """
          inviteLink: String
        }
        input AcceptInvitationInput {
          token: String!
          """
          The existing account's password (unless signed in as it), or the new account's.
          """
          password: String
          """
          For a new account.
          """
          fullName: String
        }
        extend type Mutation {
          """
          Changes your password and ends your other sessions.
          """
          changePassword(input: ChangePasswordInput!): ChangePasswordPayload
          """
          Deletes your account, with your password: your memberships, sessions, password, second factor and single
          sign-on links go; what you wrote stays with each organization, attributed to a deleted user. CONFLICT
          while you are the last owner of an organization (make someone else an owner, or delete it, first).
          """
          deleteMyAccount(input: DeleteMyAccountInput!): DeleteMyAccountPayload
          """
          Emails a one-hour reset link if the address has an account.
          """
          requestPasswordReset(input: RequestPasswordResetInput!): RequestPasswordResetPayload
          """
          Sets a new password with a reset link's token; every session of the account ends.
          """
          resetPassword(input: ResetPasswordInput!): ResetPasswordPayload
          """
          Invites someone to the current organization (admins; owners to invite owners). Valid for 7 days.
          """
          inviteMember(input: InviteMemberInput!): InviteMemberPayload
          """
          Accepts an invitation and signs in to its organization.
          """
          acceptInvitation(input: AcceptInvitationInput!): AuthPayload
          """
          Creates an organization with you as its owner and emails a link that verifies your address; then sign in
          with login. Answers the same when the address already has an account (its owner is told by email).
          """
          register(input: RegisterInput!): RegisterPayload
          """
          Verifies an email address with the token of the link emailed after registering (24 hours, used once).
          """
          verifyEmail(input: VerifyEmailInput!): VerifyEmailPayload
          """
          Emails a new verification link to the signed-in person, while their address is unverified (three an hour).
          """
          resendVerificationEmail: ResendVerificationEmailPayload
          """
          Signs in with a password. With two-factor authentication on, answers MFA_REQUIRED with
          extensions.challenge instead: complete the sign-in with verifyMfa.
          """
          login(input: LoginInput!): AuthPayload
          """
          Completes a sign-in that answered MFA_REQUIRED, with a code from the authenticator app or a recovery code.
          Codes are rate-limited like passwords; a code is accepted once.
          """
          verifyMfa(input: VerifyMfaInput!): AuthPayload
          """
          Completes a single sign-on (startSso): the tokens of a session in the organization, as for a password sign-in.
          A sign-in that links your account (started while signed in) completes only with that same session's token.
          """
          completeSso(input: CompleteSsoInput!): AuthPayload
          refreshToken(input: RefreshTokenInput!): AuthPayload
          """
          New tokens for another organization you belong to.
          """
          switchOrganization(input: SwitchOrganizationInput!): AuthPayload
          """
          Ends this session: its tokens stop working on the next request.
          """
          logout: LogoutPayload
          """
          Ends every session of the signed-in person.
          """
          logoutEverywhere: LogoutEverywherePayload
        }
        extend type Query {
          """
          The signed-in person, or null.
          """
          currentUser: User
          """
          The organization of the current session, or null.
          """
          currentOrganization: Organization
        }
      `,
      objects: {
        Mutation: {
          plans: {
            register: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                await onBehalfOf(originOf(ctx), () => sessions.register(input as never, ctx.quireClientIp ?? null));
                return { success: true };
              }),
            verifyEmail: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                await onBehalfOf(originOf(ctx), () => sessions.verifyEmail(String((input as { token: string }).token)));
                return { success: true };
              }),
            resendVerificationEmail: () =>
              sideEffect(context(), async (ctx) => ({
                sent: await onBehalfOf(originOf(ctx), () => sessions.resendVerificationEmail(signedInClaims(ctx).sessionId)),
              })),
            login: (_$root, args) => signIn(args.getRaw("input"), (input, ctx) => sessions.login(input as never, ctx.quireClientIp ?? null)),
            verifyMfa: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) => sessions.verifyMfa(String(input.challenge), String(input.code), ctx.quireClientIp ?? null)),
            completeSso: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) =>
                sessions.completeSso(String(input.code), String(input.browserBinding), ctx.quireAuth?.userId ?? null),
              ),
            refreshToken: (_$root, args) => signIn(args.getRaw("input"), (input) => sessions.refresh(String(input.refreshToken))),
            switchOrganization: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) => sessions.switchOrganization(signedInClaims(ctx).sessionId, String(input.organizationSlug))),
            changePassword: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                const { currentPassword, newPassword } = input as { currentPassword: string; newPassword: string };
                const ended = await onBehalfOf(originOf(ctx), () => sessions.changePassword(signedInClaims(ctx).sessionId, currentPassword, newPassword));
                return { otherSessionsEnded: ended };
              }),
            deleteMyAccount: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                const { sessionId, userId } = signedInClaims(ctx);
                const given = (input as { password?: string | null }).password;
                await onBehalfOf(originOf(ctx), () => sessions.deleteAccount(sessionId, userId, given == null ? null : String(given)));
                return { success: true };
              }),
            requestPasswordReset: (_$root, args) =>
              sideEffect(args.getRaw("input"), async (input) => {
                await sessions.requestPasswordReset(String((input as { email: string }).email));
                return { success: true };
              }),
            resetPassword: (_$root, args) =>
              sideEffect(args.getRaw("input"), async (input) => {
                const { token, newPassword } = input as { token: string; newPassword: string };
                await sessions.resetPassword(token, newPassword);
                return { success: true };
              }),
            inviteMember: (_$root, args) =>
              // Runs in the request's own transaction and settings: the database checks the inviter's role.
              sideEffectWithPgClient(build.pgExecutor, args.getRaw("input"), async (client, input) => {
                const { email, role } = input as { email: string; role: string };
                // With mail, only a reference is queued and send_email makes the token when it sends; without, the
                // token is made here and the link goes back to the inviting admin.
                const token = config.mail.smtpUrl ? null : oneTimeToken();
                const { rows } = await client.query<{ id: string }>({
                  text: "select id from app_hidden.create_invitation($1, $2, $3, interval '7 days')",
                  values: [email, role, token === null ? null : tokens.digest(token)],
                });
                return { invitationId: rows[0]!.id, inviteLink: token === null ? null : `${config.mail.appUrl}/accept-invitation?token=${token}` };
              }),
            acceptInvitation: (_$root, args) =>
              signIn(args.getRaw("input"), (input, ctx) => sessions.acceptInvitation(input as never, ctx.quireAuth?.userId ?? null)),
            logout: () =>
              sideEffect(context(), async (ctx) => ({ success: await onBehalfOf(originOf(ctx), () => sessions.logout(signedInClaims(ctx).sessionId)) })),
            logoutEverywhere: () =>
              sideEffect(context(), async (ctx) => ({
                sessionsEnded: await onBehalfOf(originOf(ctx), () => sessions.logoutEverywhere(signedInClaims(ctx).userId)),
              })),
          },
        },
        Query: {
          plans: {
            // Anonymous: null without a query (the anonymous role may not read these tables at all).
            currentUser: () => users.get({ id: inhibitOnNull(lambda(context(), (ctx) => ctx.quireAuth?.userId ?? null)) }),
            currentOrganization: () => organizations.get({ id: inhibitOnNull(lambda(context(), (ctx) => ctx.quireAuth?.orgId ?? null)) }),
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
        RegisterPayload: { plans: { success: ($r) => access($r, "success") } },
        VerifyEmailPayload: { plans: { success: ($r) => access($r, "success") } },
        ResendVerificationEmailPayload: { plans: { sent: ($r) => access($r, "sent") } },
        ChangePasswordPayload: { plans: { otherSessionsEnded: ($r) => access($r, "otherSessionsEnded") } },
        RequestPasswordResetPayload: { plans: { success: ($r) => access($r, "success") } },
        ResetPasswordPayload: { plans: { success: ($r) => access($r, "success") } },
        InviteMemberPayload: {
          plans: {
            invitation: ($r) => invitations.get({ id: access($r, "invitationId") }),
            inviteLink: ($r) => access($r, "inviteLink"),
          },
        },
        LogoutEverywherePayload: { plans: { sessionsEnded: ($r) => access($r, "sessionsEnded") } },
      },
    };
  }, "QuireAuthPlugin");
}
