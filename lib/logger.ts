// One pino logger per process. JSON lines in production (for log shippers), pino-pretty in development.
// Anything that can carry a credential is redacted here, once, so no call site has to remember.
import { pino, type Logger } from "pino";
import type { Config } from "./config.ts";

export type { Logger };

/** Paths whose values never reach a log line. */
const redact = [
  "req.headers.authorization",
  "req.headers.cookie",
  'res.headers["set-cookie"]',
  "*.password",
  "*.token",
  "*.accessToken",
  "*.refreshToken",
  "*.secret",
];

export function createLogger(log: Config["log"]): Logger {
  return pino({
    level: log.level,
    redact: { paths: redact, censor: "[redacted]" },
    ...(log.pretty ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l" } } } : {}),
  });
}
