// Checking the password of a signed-in person (changing it, enrolling 2FA): the same budgets as a sign-in's guess.
// The attempt is counted before the hash is compared (app_private.begin_password_check), a wrong one is recorded,
// and a password over bcrypt's 72 bytes never matches (bcrypt would compare its first 72 bytes only).
import type pg from "pg";
import type { PasswordHasher } from "../lib/passwords.ts";
import { QuireError } from "../lib/quire-error.ts";
import { recordedQuery, requestIp, throttled } from "./request-origin.ts";

/**
 * Verifies `password` for the person of the live session `sessionId`; answers their email address. Throws LOGIN
 * when the session has ended, RATE_LIMITED over a budget, and `wrong()` for a wrong password.
 */
export async function verifySessionPassword(pool: pg.Pool, hasher: PasswordHasher, sessionId: string, password: string, wrong: () => Error): Promise<string> {
  const ip = requestIp();
  const { rows } = await pool.query<{ email: string; password_hash: string | null; retry_after_seconds: number }>(
    "select * from app_private.begin_password_check($1, $2)",
    [sessionId, ip],
  );
  const check = rows[0];
  if (!check) throw new QuireError("LOGIN", "Your session has ended; sign in again.");
  if (check.retry_after_seconds > 0) throw throttled(check.retry_after_seconds);
  if (Buffer.byteLength(password) > 72 || !(await hasher.verify(password, check.password_hash))) {
    await recordedQuery(pool)("select app_private.record_login_failure($1, $2)", [check.email, ip]);
    throw wrong();
  }
  return check.email;
}
