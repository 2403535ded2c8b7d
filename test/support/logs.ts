// A logger whose lines are kept, parsed, for tests to read.
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../lib/logger.ts";

export type Line = Record<string, unknown> & { msg?: string };

/** A logger at `level` (default debug) whose lines are collected, parsed, in `lines`. */
export function capturingLogger(level: "debug" | "info" = "debug"): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString("utf8").split("\n")) if (text) lines.push(JSON.parse(text) as Line);
      done();
    },
  });
  return { logger: createLogger({ level, pretty: false }, destination), lines };
}
