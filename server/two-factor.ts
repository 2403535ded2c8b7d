// Two-factor authentication for a signed-in person: enrolling an authenticator app (a fresh secret, sealed at rest
// with SEALING_KEYS, shown once; confirmed by a first code, which turns 2FA on and yields the recovery codes) and
// turning it off with a fresh code. The database decides (app_private.stage_mfa, begin_mfa_check, enable_mfa,
// disable_mfa): whether the session is live, whether a code's time step was already spent, the sign-in budgets
// every guess counts against. This module holds the key, so it seals, opens and checks codes.
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import { QuireError } from "../lib/quire-error.ts";
import { open, seal, type SealContext, type Sealed, type SealingKeys } from "../lib/sealing.ts";
import { looksLikeRecoveryCode, newRecoveryCodes, newTotpSecret, otpauthUri, recoveryCodeDigest, totpStep } from "../lib/totp.ts";
import { recordedQuery, requestIp, throttled } from "./request-origin.ts";

/** Where a person's TOTP secret is sealed: bound to them, so a sealed secret copied to another person fails to open. */
const sealContext = (userId: string): SealContext => ({ orgId: "", integrationId: userId, provider: "totp", purpose: "mfa_secret" });

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

export interface Enrollment {
  /** The secret in base32, for typing into an app that cannot scan. */
  readonly secret: string;
  /** `otpauth://totp/Quire:<email>?secret=…`, for a QR code. */
  readonly otpauthUri: string;
}

export interface TwoFactor {
  /** Enrollment step 1: a fresh secret for the session's person, shown once, pending until confirmed. */
  startEnrollment(sessionId: string, userId: string): Promise<Enrollment>;
  /** Enrollment step 2: a first code turns 2FA on; returns the ten recovery codes, shown once. */
  confirmEnrollment(sessionId: string, code: string): Promise<string[]>;
  /** Turns 2FA off with a fresh code or a recovery code. */
  disable(sessionId: string, code: string): Promise<void>;
}

export function createTwoFactor({ config, pool }: { config: Config; pool: pg.Pool }): TwoFactor {
  const recorded = recordedQuery(pool);
  const wrongCode = () => new QuireError("CREDS", "The code is incorrect.");

  /** A code guess of the session's person: counted, then checked; a wrong one recorded (mfa_failed) and refused. */
  async function checked(sessionId: string, code: string, needEnabled: boolean): Promise<CheckedCode> {
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
    return result;
  }

  return {
    async startEnrollment(sessionId, userId) {
      const keys = sealingKeysFor2fa(config);
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
      const { step } = await checked(sessionId, code, false);
      const recoveryCodes = newRecoveryCodes();
      await recorded("select app_private.enable_mfa($1, $2, $3)", [sessionId, step, recoveryCodes.map(recoveryCodeDigest)]);
      return recoveryCodes;
    },

    async disable(sessionId, code) {
      const { step, recoveryHash } = await checked(sessionId, code, true);
      await recorded("select app_private.disable_mfa($1, $2, $3)", [sessionId, step, recoveryHash]);
    },
  };
}
