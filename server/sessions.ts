// The session life cycle: register, sign in, refresh, switch organization, sign out. The database decides
// (app_private functions, called as the authenticator); this module does what the database should not: bcrypt
// (off the event loop, never while holding a connection) and signing tokens.
import { randomUUID } from "node:crypto";
import pLimit from "p-limit";
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { assertAcceptablePassword, type PasswordHasher } from "../lib/passwords.ts";
import { QuireError } from "../lib/quire-error.ts";
import type { MemberRole, SessionGrant, TokenService } from "../lib/tokens.ts";
import { oneTimeToken } from "../lib/one-time-token.ts";
import { checkSecondFactor, sealingKeysFor2fa, spendingCode, type SealedSecretRow } from "./two-factor.ts";
import { verifySessionPassword } from "./password-check.ts";
import { recordedQuery, requestIp, throttled } from "./request-origin.ts";

/** What a successful sign-in (or refresh, or switch) returns to the client. */
export interface SignedIn extends SessionGrant {
  readonly accessToken: string;
  readonly refreshToken: string;
  /** When the access token expires. */
  readonly expiresAt: Date;
}

export interface RegisterInput {
  readonly organizationName: string;
  readonly email: string;
  readonly password: string;
  readonly fullName: string;
}

export interface LoginInput {
  readonly email: string;
  readonly password: string;
  readonly organizationSlug?: string | null;
}

export interface AcceptInvitationInput {
  readonly token: string;
  /** The existing account's password, or the new account's. */
  readonly password?: string | null;
  /** For a new account. */
  readonly fullName?: string | null;
}

export interface Sessions {
  /**
   * Creates an organization and its owner (address unverified, a verification email queued), or emails the owner of
   * an address that has an account; answers nothing either way. The registrant then signs in with login.
   */
  register(input: RegisterInput, ip: string | null): Promise<void>;
  /** Spends a verification link's token and marks its address verified; NOT_FOUND for a bad or expired link. */
  verifyEmail(token: string): Promise<void>;
  /** Sends the session's person a new verification link (at most three an hour); false when already verified. */
  resendVerificationEmail(sessionId: string): Promise<boolean>;
  /** Verifies the current password, sets the new one, ends the person's other sessions; returns how many ended. */
  changePassword(sessionId: string, currentPassword: string, newPassword: string): Promise<number>;
  /**
   * Deletes the session's person's account (app_private.delete_account) after checking their password, or, for an
   * account without one, that the session is a single sign-on of the last 10 minutes.
   */
  deleteAccount(sessionId: string, userId: string, password: string | null): Promise<void>;
  /** Queues a reset email when the address has an account; says nothing either way. */
  requestPasswordReset(email: string): Promise<void>;
  /** Spends a reset token and sets the new password; every session of the person ends. */
  resetPassword(token: string, newPassword: string): Promise<void>;
  /** Joins the invitation's organization (creating the account when needed) and signs in there. */
  acceptInvitation(input: AcceptInvitationInput, signedInUserId: string | null): Promise<SignedIn>;
  /** Signs in; MFA_REQUIRED with a challenge (extensions.challenge) when the person has 2FA on. */
  login(input: LoginInput, ip: string | null): Promise<SignedIn>;
  /**
   * Trades the handoff code of a single sign-on (APP_URL/sso/complete#code=…), with the browser binding its
   * startSso returned, for tokens; once, within a minute. A
   * sign-in that links a provider account completes only for `callerUserId`, the signed-in person who started it.
   */
  completeSso(code: string, browserBinding: string, callerUserId: string | null): Promise<SignedIn>;
  /** Completes a sign-in that answered MFA_REQUIRED, with a code from the authenticator app or a recovery code. */
  verifyMfa(challenge: string, code: string, ip: string | null): Promise<SignedIn>;
  refresh(refreshToken: string): Promise<SignedIn>;
  switchOrganization(currentSessionId: string, organizationSlug: string): Promise<SignedIn>;
  logout(sessionId: string): Promise<boolean>;
  logoutEverywhere(userId: string): Promise<number>;
}

export interface SessionsOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** Authenticator pool: the app_private sign-in functions are granted to that login only. */
  readonly pool: pg.Pool;
  readonly hasher: PasswordHasher;
  readonly tokens: TokenService;
}

const linkExpired = () => new QuireError("NTFND", "This link is invalid or has expired.");
const invalidCredentials = () => new QuireError("CREDS", "The email address or password is incorrect.");
const sessionEnded = () => new QuireError("LOGIN", "Your session has ended; sign in again.");

interface GrantRow {
  session_id: string;
  user_id: string;
  org_id: string;
  role: MemberRole;
}

/** How long a sign-in waits for its second factor (app_private.open_mfa_challenge). */
const mfaChallengeSeconds = 300;

const emailPattern = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;

function normalizedEmail(email: string): string {
  const normalized = email.trim().toLowerCase();
  if (normalized.length > 320 || !emailPattern.test(normalized)) {
    throw new QuireError("BADIN", "Enter a valid email address.", { field: "email" });
  }
  return normalized;
}

function requiredText(value: string, field: string, max: number): string {
  const trimmed = value.trim();
  if (trimmed.length === 0 || [...trimmed].length > max) {
    throw new QuireError("BADIN", `${field} must be between 1 and ${max} characters.`, { field });
  }
  return trimmed;
}

export function createSessions({ config, logger, pool, hasher, tokens }: SessionsOptions): Sessions {
  const expiresAt = () => new Date(Date.now() + config.auth.refreshTokenTtlSeconds * 1000);
  // A sign-in's statements lock its throttle rows (app_private.begin_login), so a storm of sign-ins from one
  // address would wait in PostgreSQL one after another, each holding a pooled connection meanwhile, and reads would
  // wait for connections (bench/login.ts: read p99 1 s during 100 sign-ins). They run one at a time per process
  // instead, waiting here: each takes a few milliseconds, while the password hashing between them allows only a
  // few sign-ins a second per core anyway.
  const signInStatements = pLimit(1);

  const recorded = recordedQuery(pool);

  /** A fresh session id and the first refresh token derived from it. */
  const newSession = () => {
    const sessionId = randomUUID();
    const refreshToken = tokens.refreshToken(sessionId, 1);
    return { sessionId, refreshToken, refreshHash: tokens.digest(refreshToken) };
  };

  const signedIn = (row: GrantRow, refreshToken: string): SignedIn => {
    const grant: SessionGrant = { sessionId: row.session_id, userId: row.user_id, orgId: row.org_id, role: row.role };
    const access = tokens.signAccessToken(grant);
    return { ...grant, accessToken: access.token, refreshToken, expiresAt: access.expiresAt };
  };

  return {
    async register(input, ip) {
      const organizationName = requiredText(input.organizationName, "organizationName", 200);
      const fullName = requiredText(input.fullName, "fullName", 200);
      const email = normalizedEmail(input.email);
      assertAcceptablePassword(input.password);
      // Hashed whether or not the address has an account: both answers take the same work.
      const passwordHash = await hasher.hash(input.password);
      await recorded("select app_private.register($1, $2, $3, $4)", [organizationName, email, fullName, passwordHash]);
      logger.info({ ip }, "registration received");
    },

    async verifyEmail(token) {
      if (token.length > 200) throw linkExpired();
      const { rows } = await recorded<{ verified: boolean }>("select app_private.verify_email($1) as verified", [tokens.digest(token)]);
      if (!rows[0]!.verified) throw linkExpired();
    },

    async resendVerificationEmail(sessionId) {
      const { rows } = await recorded<{ sent: boolean }>("select app_private.resend_verification_email($1) as sent", [sessionId]);
      return rows[0]!.sent;
    },

    async login(input, ip) {
      // A malformed email can match no account: it answers like a wrong password, after the same work.
      const email = input.email.trim().toLowerCase();
      // The attempt is counted before the password is verified, atomically: however many arrive at once, only
      // those within the throttle's budget get a verification (app_private.begin_login).
      const { rows } = await signInStatements(() =>
        pool.query<{ user_id: string | null; password_hash: string | null; retry_after_seconds: number }>("select * from app_private.begin_login($1, $2)", [
          email,
          ip,
        ]),
      );
      const attempt = rows[0]!;
      if (attempt.retry_after_seconds > 0) throw throttled(attempt.retry_after_seconds);
      const ok = Buffer.byteLength(input.password) <= 72 && (await hasher.verify(input.password, attempt.password_hash));
      if (!ok || !attempt.user_id) {
        await signInStatements(() => recorded("select app_private.record_login_failure($1, $2)", [email, ip]));
        logger.info({ ip }, "sign-in failed");
        throw invalidCredentials();
      }
      const session = newSession();
      const result = await signInStatements(() =>
        recorded<GrantRow>("select * from app_private.complete_login($1, $2, $3, $4, $5, $6, $7)", [
          attempt.user_id,
          email,
          ip,
          input.organizationSlug ?? null,
          session.sessionId,
          session.refreshHash,
          expiresAt(),
        ]),
      ).catch(async (error: unknown) => {
        // 2FA is on: the database opened no session. The client gets a challenge to complete with verifyMfa.
        if ((error as { code?: unknown }).code !== "MFARQ") throw error;
        const challenge = oneTimeToken();
        await pool.query("select app_private.open_mfa_challenge($1, $2, $3, $4)", [
          attempt.user_id,
          input.organizationSlug ?? null,
          ip,
          tokens.digest(challenge),
        ]);
        throw new QuireError("MFARQ", "Enter the code from your authenticator app, or a recovery code (verifyMfa).", {
          challenge,
          expiresInSeconds: mfaChallengeSeconds,
        });
      });
      logger.info({ userId: attempt.user_id, orgId: result.rows[0]!.org_id, ip }, "signed in");
      return signedIn(result.rows[0]!, session.refreshToken);
    },

    async verifyMfa(challenge, code, ip) {
      const keys = sealingKeysFor2fa(config);
      const digest = tokens.digest(challenge);
      const { rows } = await pool.query<SealedSecretRow & { user_id: string; retry_after_seconds: number }>(
        "select * from app_private.begin_mfa_challenge($1, $2)",
        [digest, ip],
      );
      const row = rows[0];
      if (!row) throw new QuireError("LOGIN", "This sign-in has expired; sign in again.");
      if (row.retry_after_seconds > 0) throw throttled(row.retry_after_seconds);
      const checked = await checkSecondFactor(keys, row.user_id, row, code);
      if (!checked) {
        await recorded("select app_private.record_mfa_failure($1)", [row.user_id]);
        logger.info({ userId: row.user_id, ip }, "second factor failed");
        throw new QuireError("CREDS", "The code is incorrect.");
      }
      const session = newSession();
      const result = await spendingCode<GrantRow>(recorded, row.user_id, "select * from app_private.complete_mfa_login($1, $2, $3, $4, $5, $6, $7)", [
        digest,
        checked.step,
        checked.recoveryHash,
        ip,
        session.sessionId,
        session.refreshHash,
        expiresAt(),
      ]);
      logger.info({ userId: row.user_id, orgId: result.rows[0]!.org_id, ip, recoveryCode: checked.step === null }, "signed in with a second factor");
      return signedIn(result.rows[0]!, session.refreshToken);
    },

    async completeSso(code, browserBinding, callerUserId) {
      if (code.length > 200 || browserBinding.length > 200) throw new QuireError("LOGIN", "This sign-in has expired; sign in again.");
      const session = newSession();
      const { rows } = await recorded<GrantRow>("select * from app_private.complete_sso($1, $2, $3, $4, $5, $6)", [
        tokens.digest(code),
        session.sessionId,
        session.refreshHash,
        expiresAt(),
        callerUserId,
        tokens.digest(browserBinding),
      ]);
      logger.info({ userId: rows[0]!.user_id, orgId: rows[0]!.org_id }, "signed in with single sign-on");
      return signedIn(rows[0]!, session.refreshToken);
    },

    async refresh(refreshToken) {
      const parsed = tokens.parseRefreshToken(refreshToken);
      if (!parsed) throw sessionEnded();
      const next = tokens.refreshToken(parsed.sessionId, parsed.generation + 1);
      const { rows } = await recorded<GrantRow & { outcome: string; generation: number }>(
        "select outcome, $1::uuid as session_id, user_id, org_id, role, generation from app_private.refresh_session($1, $2, $3, $4, $5, $6)",
        [
          parsed.sessionId,
          parsed.generation,
          tokens.digest(refreshToken),
          tokens.digest(next),
          config.auth.refreshGraceSeconds,
          config.auth.sessionIdleSeconds,
        ],
      );
      const row = rows[0]!;
      if (row.outcome === "reused") {
        logger.warn({ sessionId: parsed.sessionId }, "refresh token reused: session revoked");
      }
      if (row.outcome !== "rotated" && row.outcome !== "grace") throw sessionEnded();
      return signedIn(row, tokens.refreshToken(parsed.sessionId, row.generation));
    },

    async switchOrganization(currentSessionId, organizationSlug) {
      const session = newSession();
      const { rows } = await recorded<GrantRow>("select * from app_private.switch_organization($1, $2, $3, $4, $5)", [
        currentSessionId,
        organizationSlug,
        session.sessionId,
        session.refreshHash,
        expiresAt(),
      ]);
      return signedIn(rows[0]!, session.refreshToken);
    },

    async changePassword(sessionId, currentPassword, newPassword) {
      assertAcceptablePassword(newPassword);
      // Counted against the person's sign-in budgets before verifying, like a sign-in.
      await verifySessionPassword(pool, hasher, sessionId, currentPassword, invalidCredentials);
      const newHash = await hasher.hash(newPassword);
      const ended = await recorded<{ ended: number }>("select app_private.change_password($1, $2) as ended", [sessionId, newHash]);
      return ended.rows[0]!.ended;
    },

    async deleteAccount(sessionId, userId, password) {
      const { rows } = await pool.query<{ proof: string | null }>("select app_private.account_deletion_proof($1) as proof", [sessionId]);
      const proof = rows[0]?.proof ?? null;
      if (proof === null) throw new QuireError("LOGIN", "Your session has ended; sign in again.");
      if (proof === "password") await verifySessionPassword(pool, hasher, sessionId, password ?? "", invalidCredentials);
      else if (proof === "sign_in_again") {
        throw new QuireError("DNIED", "Your account signs in with single sign-on: sign in again, then delete it within 10 minutes.");
      }
      await recorded("select app_private.delete_account($1)", [userId]);
    },

    async requestPasswordReset(email) {
      const normalized = email.trim().toLowerCase();
      if (!emailPattern.test(normalized) || normalized.length > 320) return;
      // Only a reference is queued: send_email makes the link's token when it sends the email.
      await pool.query("select app_private.request_password_reset($1)", [normalized]);
    },

    async resetPassword(token, newPassword) {
      assertAcceptablePassword(newPassword);
      const newHash = await hasher.hash(newPassword);
      await recorded("select app_private.reset_password($1, $2)", [tokens.digest(token), newHash]);
    },

    async acceptInvitation(input, signedInUserId) {
      const digest = tokens.digest(input.token);
      const { rows } = await pool.query<{ email: string; user_id: string | null; password_hash: string | null }>(
        "select * from app_private.invitation_by_token($1)",
        [digest],
      );
      const invitation = rows[0];
      if (!invitation) throw new QuireError("NTFND", "This invitation is invalid or has expired.");
      let passwordHash: string | null = null;
      let fullName: string | null = null;
      if (invitation.user_id) {
        // Joining with an existing account takes that account: signed in as it, or its password.
        // Its password is checked like a sign-in's: counted against the account's budgets first.
        if (invitation.user_id !== signedInUserId) {
          const ip = requestIp();
          const attempt = await pool.query<{ retry_after_seconds: number }>("select retry_after_seconds from app_private.begin_login($1, $2)", [
            invitation.email,
            ip,
          ]);
          if (attempt.rows[0]!.retry_after_seconds > 0) throw throttled(attempt.rows[0]!.retry_after_seconds);
          const ok = typeof input.password === "string" && (await hasher.verify(input.password, invitation.password_hash));
          if (!ok) {
            await recorded("select app_private.record_login_failure($1, $2)", [invitation.email, ip]);
            throw invalidCredentials();
          }
          // A password alone does not sign in an account with 2FA on, here either.
          const mfa = await pool.query<{ on: boolean }>("select app_private.mfa_enabled($1) as on", [invitation.user_id]);
          if (mfa.rows[0]!.on) {
            throw new QuireError("LOGIN", "Your account has two-factor authentication: sign in first, then accept the invitation.");
          }
        }
      } else {
        fullName = requiredText(input.fullName ?? "", "fullName", 200);
        assertAcceptablePassword(input.password ?? "");
        passwordHash = await hasher.hash(input.password!);
      }
      const session = newSession();
      const accepted = await recorded<GrantRow>("select * from app_private.accept_invitation($1, $2, $3, $4, $5, $6)", [
        digest,
        fullName,
        passwordHash,
        session.sessionId,
        session.refreshHash,
        expiresAt(),
      ]);
      logger.info({ userId: accepted.rows[0]!.user_id, orgId: accepted.rows[0]!.org_id }, "invitation accepted");
      return signedIn(accepted.rows[0]!, session.refreshToken);
    },

    async logout(sessionId) {
      const { rows } = await recorded<{ ended: boolean }>("select app_private.revoke_session($1, 'logout') as ended", [sessionId]);
      return rows[0]!.ended;
    },

    async logoutEverywhere(userId) {
      const { rows } = await recorded<{ ended: number }>("select app_private.revoke_user_sessions($1, 'logout everywhere') as ended", [userId]);
      return rows[0]!.ended;
    },
  };
}
