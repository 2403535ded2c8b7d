// Two-factor authentication for a signed-in person: enrolling an authenticator app (a fresh secret, sealed at rest
// with SEALING_KEYS, shown once; confirmed by a first code, which turns 2FA on and yields the recovery codes) and
// turning it off with a fresh code. The database decides (app_private.stage_mfa, begin_mfa_check, enable_mfa,
// disable_mfa): whether the session is live, whether a code's time step was already spent, the sign-in budgets
// every guess counts against. This module holds the key, so it seals, opens and checks codes.
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import { QuireError } from "../lib/quire-error.ts";
import type { PasswordHasher } from "../lib/passwords.ts";
import { open, seal, sealContexts, type Sealed, type SealingKeys } from "../lib/sealing.ts";
import { looksLikeRecoveryCode, newRecoveryCodes, newTotpSecret, otpauthUri, recoveryCodeDigest, totpStep } from "../lib/totp.ts";
import { verifySessionPassword } from "./password-check.ts";
import { recordedQuery, requestIp, throttled } from "./request-origin.ts";

const sealContext = sealContexts.totp;

/** The issuer authenticator apps show beside the account. */
const issuer = "Quire";

/** The longest code text looked at: a recovery code with spaces to spare. Anything longer is BAD_INPUT. */
const maxCodeLength = 64;

/** A person's sealed secret as the database returns it (app_private.user_mfa). */
export interface SealedSecretRow {
  readonly key_id: string | null;
  readonly secret_nonce: Buffer | null;
  readonly secret_ciphertext: Buffer | null;
}

/** A code checked against a secret: the time step to spend, or the digest of a recovery code for the database to spend. */
export type CheckedCode = { readonly step: number; readonly recoveryHash: null } | { readonly step: null; readonly recoveryHash: Buffer };

export function sealingKeysFor2fa(config: Config): SealingKeys {
  const keys = config.integrations.sealingKeys;
  if (!keys) throw new QuireError("BADIN", "Two-factor authentication is not configured on this server (SEALING_KEYS is unset).");
  return keys;
}

/**
 * Checks `code` (six digits, or a recovery code) for the person `userId` whose sealed secret is `row`: a recovery
 * code is passed on as its digest (the database knows whether it is unused); a TOTP code is checked here, within
 * ±1 step of now. Null: wrong.
 */
export async function checkSecondFactor(keys: SealingKeys, userId: string, row: SealedSecretRow, code: string, now = Date.now()): Promise<CheckedCode | null> {
  if (code.length > maxCodeLength) throw new QuireError("BADIN", "The code is too long.", { field: "code" });
  if (looksLikeRecoveryCode(code)) return { step: null, recoveryHash: recoveryCodeDigest(code) };
  if (!row.key_id || !row.secret_nonce || !row.secret_ciphertext) return null;
  const sealed: Sealed = { keyId: row.key_id, nonce: row.secret_nonce, ciphertext: row.secret_ciphertext };
  const step = totpStep(await open(keys, sealed, sealContext(userId)), code, now);
  return step === null ? null : { step, recoveryHash: null };
}

/**
 * Runs a statement that spends a checked code (`recorded`, for the request's audit settings): a spent TOTP step or a
 * recovery code that is not the person's (CREDS from the database) is recorded as a failed guess too.
 */
export async function spendingCode<R extends pg.QueryResultRow>(
  recorded: ReturnType<typeof recordedQuery>,
  userId: string,
  text: string,
  values: unknown[],
): Promise<pg.QueryResult<R>> {
  try {
    return await recorded<R>(text, values);
  } catch (error) {
    if ((error as { code?: unknown }).code === "CREDS") await recorded("select app_private.record_mfa_failure($1)", [userId]);
    throw error;
  }
}

export interface Enrollment {
  /** The secret in base32, for typing into an app that cannot scan. */
  readonly secret: string;
  /** `otpauth://totp/Quire:<email>?secret=…`, for a QR code. */
  readonly otpauthUri: string;
}

export interface TwoFactor {
  /**
   * Enrollment step 1: a fresh secret for the session's person, shown once, pending until confirmed. Takes their
   * password (counted like a sign-in), so a stolen session alone cannot put an attacker's authenticator on the account.
   */
  startEnrollment(sessionId: string, userId: string, password: string): Promise<Enrollment>;
  /** Enrollment step 2: a first code turns 2FA on and ends the person's other sessions; returns the ten recovery codes, shown once. */
  confirmEnrollment(sessionId: string, code: string): Promise<string[]>;
  /** Turns 2FA off with a fresh code or a recovery code. */
  disable(sessionId: string, code: string): Promise<void>;
}

export function createTwoFactor({ config, pool, hasher }: { config: Config; pool: pg.Pool; hasher: PasswordHasher }): TwoFactor {
  const recorded = recordedQuery(pool);
  const wrongCode = () => new QuireError("CREDS", "The code is incorrect.");
  /** A right password or code gives its sign-in budget slot back. */
  const refund = (userId: string) => pool.query("select app_private.refund_sign_in_budget($1, $2)", [userId, requestIp()]);

  /**
   * A code guess of the session's person: counted, then checked; a wrong one recorded (mfa_failed) and refused.
   * Answers the code and the sealing it was checked against.
   */
  async function checked(sessionId: string, code: string, needEnabled: boolean): Promise<CheckedCode & { userId: string; keyId: string; nonce: Buffer }> {
    const keys = sealingKeysFor2fa(config);
    const { rows } = await pool.query<SealedSecretRow & { user_id: string; retry_after_seconds: number; enabled: boolean | null }>(
      "select * from app_private.begin_mfa_check($1, $2)",
      [sessionId, requestIp()],
    );
    const row = rows[0]!;
    if (row.retry_after_seconds > 0) throw throttled(row.retry_after_seconds);
    if (!row.key_id || Boolean(row.enabled) !== needEnabled) {
      throw new QuireError("BADIN", needEnabled ? "Two-factor authentication is not on." : "Start enrollment first (startMfaEnrollment).");
    }
    // Enrollment is confirmed with the app's code, never a recovery code (there are none yet).
    const result = needEnabled || !looksLikeRecoveryCode(code) ? await checkSecondFactor(keys, row.user_id, row, code) : null;
    if (!result) {
      await recorded("select app_private.record_mfa_failure($1)", [row.user_id]);
      throw wrongCode();
    }
    return { ...result, userId: row.user_id, keyId: row.key_id, nonce: row.secret_nonce! };
  }

  return {
    async startEnrollment(sessionId, userId, password) {
      const keys = sealingKeysFor2fa(config);
      await verifySessionPassword(pool, hasher, sessionId, password, () => new QuireError("CREDS", "The password is incorrect."));
      await refund(userId);
      const secret = newTotpSecret();
      const sealed = await seal(keys, secret, sealContext(userId));
      const { rows } = await pool.query<{ email: string }>("select app_private.stage_mfa($1, $2, $3, $4, $5) as email", [
        sessionId,
        userId,
        sealed.keyId,
        sealed.nonce,
        sealed.ciphertext,
      ]);
      return { secret, otpauthUri: otpauthUri(secret, issuer, rows[0]!.email) };
    },

    async confirmEnrollment(sessionId, code) {
      const { step, keyId, nonce, userId } = await checked(sessionId, code, false);
      const recoveryCodes = newRecoveryCodes();
      await recorded("select app_private.enable_mfa($1, $2, $3, $4, $5)", [sessionId, step, recoveryCodes.map(recoveryCodeDigest), keyId, nonce]);
      await refund(userId);
      return recoveryCodes;
    },

    async disable(sessionId, code) {
      const { step, recoveryHash, userId } = await checked(sessionId, code, true);
      await spendingCode(recorded, userId, "select app_private.disable_mfa($1, $2, $3)", [sessionId, step, recoveryHash]);
      await refund(userId);
    },
  };
}
