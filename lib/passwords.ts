// Passwords: the policy a new password must meet, and bcrypt hashing that never blocks the event loop.
// bcrypt (the native package) runs on libuv's thread pool; on top of that at most `concurrency` hashes run at once,
// each slot works at most `dutyPercent` of the time, and callers who would wait longer than `maxWaitMs` are turned
// away at once with RATE_LIMITED, so a login storm cannot take the cores from the requests that only read.
// Hashes are standard `$2b$` strings that pgcrypto's crypt() (used by app_admin functions) also verifies.
import bcrypt from "bcrypt";
import { dictionary } from "@zxcvbn-ts/language-common";
import { QuireError } from "./quire-error.ts";

/** bcrypt reads at most 72 bytes; longer passwords are refused rather than silently truncated. */
export const maxPasswordBytes = 72;
export const minPasswordLength = 8;

// The ~49,000 most common passwords of @zxcvbn-ts's list (lowercase), loaded once.
const commonPasswords = new Set<string>(dictionary["passwords-common"] as string[]);

/** Throws BADIN naming what is wrong with a proposed password. */
export function assertAcceptablePassword(password: string): void {
  if ([...password].length < minPasswordLength) {
    throw new QuireError("BADIN", `The password must be at least ${minPasswordLength} characters long.`, { field: "password" });
  }
  if (Buffer.byteLength(password, "utf8") > maxPasswordBytes) {
    throw new QuireError("BADIN", `The password must be at most ${maxPasswordBytes} bytes long.`, { field: "password" });
  }
  if (commonPasswords.has(password.toLowerCase())) {
    throw new QuireError("BADIN", "This password is too common; choose another.", { field: "password" });
  }
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /** True when `password` matches `hash`. With a null hash (unknown user) it still spends the same time. */
  verify(password: string, hash: string | null): Promise<boolean>;
}

export interface HasherOptions {
  /** bcrypt cost of new hashes (BCRYPT_COST, default 12). */
  readonly cost: number;
  /** Hashes or verifications in flight at once (PASSWORD_HASH_CONCURRENCY). */
  readonly concurrency: number;
  /** Callers allowed to wait for a turn before new ones are turned away with RATE_LIMITED (default 200). */
  readonly maxQueue?: number;
  /**
   * Longest expected wait for a turn (PASSWORD_HASH_MAX_WAIT_MS, default 5000): a caller who would wait longer, by
   * the queue ahead and the recent time per hash, is turned away at once with RATE_LIMITED rather than queued.
   */
  readonly maxWaitMs?: number;
  /**
   * Share of the time each hashing slot may work (PASSWORD_HASH_DUTY_PERCENT, default 50): after a hash of d ms its
   * slot rests d × (100 / duty − 1) ms, so a login storm leaves the rest of a core to the requests that only read.
   */
  readonly dutyPercent?: number;
}

/** A rest that never holds the process open. */
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

export function createPasswordHasher({ cost, concurrency, maxQueue = 200, maxWaitMs = 5000, dutyPercent = 50 }: HasherOptions): PasswordHasher {
  let running = 0;
  const waiting: Array<() => void> = [];
  /** Recent time a slot is held per hash (work and rest), ms: a moving average, from the first hash on. */
  let slotMs = 0;
  const busy = (retryAfterSeconds: number) =>
    new QuireError("RLIMT", "The service is busy signing people in; try again in a few seconds.", { retryAfterSeconds });
  const limited = async <T>(work: () => Promise<T>): Promise<T> => {
    if (running >= concurrency) {
      const expectedWaitMs = ((waiting.length + 1) * slotMs) / concurrency;
      if (waiting.length >= maxQueue || expectedWaitMs > maxWaitMs) throw busy(Math.max(1, Math.ceil(expectedWaitMs / 1000)));
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    running++;
    const started = performance.now();
    try {
      return await work();
    } finally {
      const worked = performance.now() - started;
      const rest = worked * (100 / dutyPercent - 1);
      slotMs = slotMs === 0 ? worked + rest : 0.8 * slotMs + 0.2 * (worked + rest);
      const release = () => {
        running--;
        waiting.shift()?.();
      };
      // The slot rests (still held) before the next caller's turn; the caller has its answer already.
      if (rest > 0) void sleep(rest).then(release);
      else release();
    }
  };
  // A real hash of a random value at the same cost: verifying against it costs what a real verification costs.
  // Made at once (off the event loop), not on first use: otherwise the first unknown-email sign-in would pay a hash
  // and a verification, answering measurably slower than a wrong password.
  const dummy = bcrypt.hash(crypto.randomUUID(), cost);
  return {
    hash: (password) => limited(() => bcrypt.hash(password, cost)),
    verify: (password, hash) =>
      limited(async () => {
        const against = hash ?? (await dummy);
        const matches = await bcrypt.compare(password, against);
        return hash !== null && matches;
      }),
  };
}
