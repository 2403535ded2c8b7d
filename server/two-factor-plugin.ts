// The two-factor part of the GraphQL API: startMfaEnrollment, confirmMfaEnrollment and disableMfa, for the
// signed-in person (server/two-factor.ts). They run outside the request's transaction, as the sign-in mutations
// do, so a person whose organization requires 2FA (every other request refused with MFA_ENROLLMENT_REQUIRED) can
// enroll. setRequireMfa and User.mfaEnabled come from the database's functions.
import { context, sideEffect } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { onBehalfOf, originOf, signedInClaims } from "./request-origin.ts";
import type { TwoFactor } from "./two-factor.ts";

export function makeTwoFactorPlugin(twoFactor: TwoFactor) {
  return extendSchema(
    () => ({
      typeDefs: gql`
        """
        A new authenticator secret, shown once: scan otpauthUri as a QR code (or type secret), then confirmMfaEnrollment.
        """
        type StartMfaEnrollmentPayload {
          """
          The secret in base32, for apps that cannot scan.
          """
          secret: String!
          """
          otpauth://totp/Quire:<email>?secret=…&issuer=Quire (SHA-1, 6 digits, 30 seconds).
          """
          otpauthUri: String!
        }
        input StartMfaEnrollmentInput {
          """
          Your current password: a session alone does not change how the account signs in.
          """
          password: String!
        }
        input MfaCodeInput {
          """
          The six-digit code the authenticator app shows (disableMfa also takes a recovery code).
          """
          code: String!
        }
        type ConfirmMfaEnrollmentPayload {
          """
          Ten single-use recovery codes, shown once: each signs in once in place of a code.
          """
          recoveryCodes: [String!]!
        }
        type DisableMfaPayload {
          success: Boolean!
        }
        extend type Mutation {
          """
          Starts enrolling an authenticator app for two-factor authentication (replaces an unconfirmed one), with
          your password. Not for API keys. CONFLICT when 2FA is already on.
          """
          startMfaEnrollment(input: StartMfaEnrollmentInput!): StartMfaEnrollmentPayload
          """
          Turns two-factor authentication on with a first code from the app; returns the recovery codes. Your other
          sessions end.
          """
          confirmMfaEnrollment(input: MfaCodeInput!): ConfirmMfaEnrollmentPayload
          """
          Turns two-factor authentication off, with a fresh code or a recovery code.
          """
          disableMfa(input: MfaCodeInput!): DisableMfaPayload
        }
      `,
      objects: {
        Mutation: {
          plans: {
            startMfaEnrollment: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], ([input, ctx]) => {
                const { sessionId, userId } = signedInClaims(ctx);
                const password = String((input as { password: string }).password);
                return onBehalfOf(originOf(ctx), () => twoFactor.startEnrollment(sessionId, userId, password));
              }),
            confirmMfaEnrollment: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                const { sessionId } = signedInClaims(ctx);
                const code = String((input as { code: string }).code);
                return { recoveryCodes: await onBehalfOf(originOf(ctx), () => twoFactor.confirmEnrollment(sessionId, code)) };
              }),
            disableMfa: (_$root, args) =>
              sideEffect([args.getRaw("input"), context()], async ([input, ctx]) => {
                const { sessionId } = signedInClaims(ctx);
                const code = String((input as { code: string }).code);
                await onBehalfOf(originOf(ctx), () => twoFactor.disable(sessionId, code));
                return { success: true };
              }),
          },
        },
      },
    }),
    "QuireTwoFactorPlugin",
  );
}
