// Passwords: the policy a new password must meet, and bcrypt hashing that never blocks the event loop.
// bcrypt (the native package) runs on libuv's thread pool; on top of that at most `concurrency` hashes run at once
// and the rest queue, so a login storm cannot take every core from the requests that only read.
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
}

export function createPasswordHasher({ cost, concurrency, maxQueue = 200 }: HasherOptions): PasswordHasher {
  let running = 0;
  const waiting: Array<() => void> = [];
  const limited = async <T>(work: () => Promise<T>): Promise<T> => {
    if (running >= concurrency) {
      if (waiting.length >= maxQueue) {
        throw new QuireError("RLIMT", "The service is busy signing people in; try again in a few seconds.", { retryAfterSeconds: 5 });
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
    running++;
    try {
      return await work();
    } finally {
      running--;
      waiting.shift()?.();
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
