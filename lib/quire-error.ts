// An error Quire's TypeScript raises for a client to act on. It carries one of the custom SQLSTATEs of
// lib/errors.ts as its `code`, so it reaches clients exactly like the same error raised in SQL, plus optional
// extensions (e.g. retryAfterSeconds for RATE_LIMITED).
import { customSqlStates } from "./errors.ts";

export type CustomSqlState = keyof typeof customSqlStates;

export class QuireError extends Error {
  readonly code: CustomSqlState;
  readonly extensions: Readonly<Record<string, unknown>>;
  constructor(code: CustomSqlState, message: string, extensions: Record<string, unknown> = {}) {
    super(message);
    this.name = "QuireError";
    this.code = code;
    this.extensions = extensions;
  }
}
