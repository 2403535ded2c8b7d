// Why a file's text could not be extracted, with the stable code (lib/errors.ts) and HTTP status a client gets.
// Messages are written for the person who uploaded the file: they never carry a library's own error text.
import type { ErrorCode } from "../errors.ts";

export type ExtractErrorCode = Extract<ErrorCode, "BAD_INPUT" | "TOO_LARGE" | "UNSUPPORTED_TYPE">;

const statusByCode = { BAD_INPUT: 400, TOO_LARGE: 413, UNSUPPORTED_TYPE: 415 } as const satisfies Record<ExtractErrorCode, number>;

export class ExtractError extends Error {
  readonly code: ExtractErrorCode;
  readonly status: 400 | 413 | 415;
  constructor(code: ExtractErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ExtractError";
    this.code = code;
    this.status = statusByCode[code];
  }
}

export const isExtractErrorCode = (code: unknown): code is ExtractErrorCode => typeof code === "string" && Object.hasOwn(statusByCode, code);
