// One pino logger per process. JSON lines in production (for log shippers), pino-pretty in development.
// Anything that can carry a credential is redacted here, once, so no call site has to remember.
// Every line written while a request or job is handled names it, its organization and its user
// (lib/log-context.ts); with tracing on (lib/tracing.ts), a line written inside a span carries its traceId and spanId.
import { pino, type Logger } from "pino";
import type { Config } from "./config.ts";
import { currentLogContext } from "./log-context.ts";
import { activeTraceIds, isTracingEnabled } from "./tracing.ts";

export type { Logger };

/**
 * Paths whose values never reach a log line: credentials of every kind, and document and summary bodies (which
 * belong to their organization, not to whoever reads the logs). `*` is one level of nesting, so each name is listed
 * at the top level and one and two levels down (graphile-worker's debug lines hold a job's payload, with its job
 * token, at job.payload.token).
 */
const secretKeys = [
  "password",
  "newPassword",
  "currentPassword",
  "passwordHash",
  "token",
  "accessToken",
  "refreshToken",
  "secret",
  "clientSecret",
  "apiKey",
  "authorization",
  "cookie",
  "content",
  "body",
  "variables",
];
const redact = [
  "req.headers.authorization",
  "req.headers.cookie",
  'res.headers["set-cookie"]',
  ...secretKeys,
  ...secretKeys.map((key) => `*.${key}`),
  ...secretKeys.map((key) => `*.*.${key}`),
];

/** The process's logger; `destination` (default: stdout, or pino-pretty's) is for tests that read the lines. */
export function createLogger(log: Config["log"], destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: log.level,
    redact: { paths: redact, censor: "[redacted]" },
    // Tracing is decided once: it starts before any logger is made (lib/start-tracing.ts).
    mixin: isTracingEnabled() ? () => ({ ...currentLogContext(), ...activeTraceIds() }) : currentLogContext,
    ...(log.pretty && !destination ? { transport: { target: "pino-pretty", options: { colorize: true, translateTime: "HH:MM:ss.l" } } } : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}
