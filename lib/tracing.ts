// OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set. Off, nothing of the SDK is loaded: `tracer`
// is the API's no-op tracer and withSpan just calls its function. On, spans are batched to the endpoint as OTLP/HTTP
// JSON; incoming HTTP requests, pg queries and outgoing fetch/http calls are instrumented, and Quire adds spans
// where it already measures (GraphQL operations, job runs, LLM calls), so they nest: request → operation → SQL.
//
// pg under ESM, without --import: what is instrumented is CommonJS (pg, pg-pool) or built in (node:http), patched by
// the instrumentations' require() hook (require-in-the-middle). Quire's own `import pg from "pg"` never goes through
// require(), and a loader hook (module.register + import-in-the-middle) registered from inside the app would come too
// late: Node resolves and loads the whole static import graph before running any of it. But Node executes an
// imported CommonJS package only when evaluation reaches it, in import order, and pg's own require() calls
// (./client, pg-pool) do go through the hook. So each entry point imports lib/start-tracing.ts first, which calls
// startTracing synchronously (hence createRequire, not import()): the hooks are on before pg runs. startTracing then
// requires pg, pg-pool and node:http(s) once more, since the hook also patches a module required again after it is
// enabled, cached or not: what ran before tracing started is covered too. The patches are on shared prototypes
// (pg.Client.prototype.query, pg-pool's connect, http.Server.prototype.emit), so ES module imports see them.
import { createRequire } from "node:module";
import { IncomingMessage } from "node:http";
import {
  context,
  diag,
  DiagLogLevel,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type DiagLogger,
  type Span,
  type Tracer,
} from "@opentelemetry/api";
import type { Config } from "./config.ts";

type TracingConfig = Config["tracing"];

export interface TracingOptions extends TracingConfig {
  /**
   * The route pattern of a request path (its `http.route`, and the server span's name `POST /graphql`); null when the
   * path is none of the application's routes (the span is then named by the method alone). Default: none known.
   */
  readonly routeOf?: (path: string) => string | null;
  /** Request paths (without query) not traced at all: probes and scrapes. Default: /health, /health/ready, /metrics. */
  readonly ignoredPaths?: readonly string[];
}

/** The running SDK; null while tracing is off. */
let running: { shutdown(): Promise<void> } | null = null;

/**
 * Quire's tracer for manual spans. A proxy: the API's no-op tracer while tracing is off, the SDK's once
 * {@link startTracing} has registered it.
 */
export const tracer: Tracer = trace.getTracer("quire");

/** A span that records nothing, handed to withSpan's function while tracing is off. */
const noopSpan: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

export const isTracingEnabled = (): boolean => running !== null;

/**
 * Runs `fn` in a new active span (a child of the active one, if any) with `attributes`, and ends it when `fn`
 * settles; an error `fn` throws is recorded on the span, which is marked failed, and rethrown. While tracing is off,
 * `fn` runs directly with a span that records nothing. Attributes never carry content, prompts or secrets.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => T | PromiseLike<T>,
  kind: SpanKind = SpanKind.INTERNAL,
): Promise<T> {
  if (!running) return fn(noopSpan);
  return tracer.startActiveSpan(name, { kind, attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** The active span's context, when there is a real one (never while tracing is off). */
function activeSpanContext() {
  const spanContext = trace.getSpan(context.active())?.spanContext();
  return spanContext && isSpanContextValid(spanContext) ? spanContext : null;
}

/** The trace id (32 hex digits) of the active span; null outside spans or while tracing is off. */
export const currentTraceId = (): string | null => activeSpanContext()?.traceId ?? null;

/** `{ traceId, spanId }` of the active span, or nothing: the logger's mixin (lib/logger.ts). */
export function activeTraceIds(): { traceId?: string; spanId?: string } {
  const spanContext = activeSpanContext();
  return spanContext ? { traceId: spanContext.traceId, spanId: spanContext.spanId } : {};
}

/**
 * The SDK's errors (a collector that cannot be reached, an export refused) as JSON lines on stderr in pino's shape,
 * level error: tracing starts before the process's logger exists.
 */
function stderrDiagLogger(): DiagLogger {
  const write = (message: string, ...args: unknown[]) => {
    let text = message;
    try {
      // The SDK's error handler passes an error serialized as JSON; its message is what an operator needs.
      const parsed = JSON.parse(message) as { message?: unknown } | null;
      if (typeof parsed?.message === "string") text = parsed.message;
    } catch {
      // Plain text already.
    }
    const details = args.map((arg) => (arg instanceof Error ? arg.message : String(arg)));
    process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), pid: process.pid, msg: ["tracing:", text, ...details].join(" ") })}\n`);
  };
  return { error: write, warn: write, info: write, debug: write, verbose: write };
}

const pathOf = (url: string | undefined) => (url ?? "/").split("?")[0]!;

/** A query string with every value replaced: OAuth callbacks carry codes, GraphQL GETs variables. */
function redactedQuery(url: string | undefined): string | null {
  const at = (url ?? "").indexOf("?");
  if (at < 0) return null;
  return [...new URLSearchParams(url!.slice(at + 1)).keys()].map((key) => `${encodeURIComponent(key)}=REDACTED`).join("&");
}

/**
 * Starts tracing when `options.endpoint` is set and returns true; returns false (and loads nothing) when it is null.
 * Once per process: a second call throws.
 */
export function startTracing(options: TracingOptions): boolean {
  if (options.endpoint === null) return false;
  if (running) throw new Error("Tracing is already started in this process.");
  const require = createRequire(import.meta.url);
  // The packages' own types, for their CommonJS builds loaded synchronously here (see the header).
  const { AsyncLocalStorageContextManager } = require("@opentelemetry/context-async-hooks") as typeof import("@opentelemetry/context-async-hooks");
  const { getRPCMetadata, RPCType, W3CTraceContextPropagator } = require("@opentelemetry/core") as typeof import("@opentelemetry/core");
  const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-http") as typeof import("@opentelemetry/exporter-trace-otlp-http");
  const { registerInstrumentations } = require("@opentelemetry/instrumentation") as typeof import("@opentelemetry/instrumentation");
  const { HttpInstrumentation } = require("@opentelemetry/instrumentation-http") as typeof import("@opentelemetry/instrumentation-http");
  const { PgInstrumentation } = require("@opentelemetry/instrumentation-pg") as typeof import("@opentelemetry/instrumentation-pg");
  const { UndiciInstrumentation } = require("@opentelemetry/instrumentation-undici") as typeof import("@opentelemetry/instrumentation-undici");
  const { resourceFromAttributes } = require("@opentelemetry/resources") as typeof import("@opentelemetry/resources");
  const { BatchSpanProcessor, TracerProvider } = require("@opentelemetry/sdk-trace") as typeof import("@opentelemetry/sdk-trace");
  const { version } = require("../package.json") as { version: string };

  // Errors only: the warnings are about modules already in the require cache (the ESM loader pre-parses pg into it),
  // which the requires below cover.
  diag.setLogger(stderrDiagLogger(), DiagLogLevel.ERROR);
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": options.serviceName, "service.version": version }),
    // Long SQL texts are cut: a span is for finding the slow statement, not for keeping it whole.
    spanLimits: { attributeValueLengthLimit: 4096 },
    spanProcessors: [new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${options.endpoint}/v1/traces` }) })],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);

  const ignored = new Set(options.ignoredPaths ?? ["/health", "/health/ready", "/metrics"]);
  const unregister = registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({
        ignoreIncomingRequestHook: (request) => ignored.has(pathOf(request.url)),
        startIncomingSpanHook: (request) => {
          const query = redactedQuery(request.url);
          return query === null ? {} : { "url.query": query };
        },
        requestHook: (_span, request) => {
          if (!(request instanceof IncomingMessage)) return;
          const route = options.routeOf?.(pathOf(request.url)) ?? null;
          const metadata = getRPCMetadata(context.active());
          // Read when the response finishes: names the span `POST /graphql` and sets http.route.
          if (route !== null && metadata?.type === RPCType.HTTP) metadata.route = route;
        },
        // Outgoing calls only as part of something traced (not the pool's or the worker's background chatter).
        requireParentforOutgoingSpans: true,
      }),
      new UndiciInstrumentation({ requireParentforSpans: true }),
      // Statement text but never parameter values (enhancedDatabaseReporting stays off); only inside a traced
      // request or job, so the worker's polling and LISTEN connections make no traces of their own.
      new PgInstrumentation({ requireParentSpan: true }),
    ],
  });
  // Whatever of them ran before this (see the header): required again, they are patched now.
  require("node:http");
  require("node:https");
  require("pg");
  createRequire(require.resolve("pg"))("pg-pool");

  running = {
    async shutdown() {
      unregister();
      await provider.shutdown();
    },
  };
  return true;
}

/**
 * Sends the spans still buffered and stops tracing, waiting at most `timeoutMs` (default 5 s: a collector that is
 * down must not hold up shutdown). Nothing to do while tracing is off.
 */
export async function shutdownTracing(timeoutMs = 5_000): Promise<void> {
  const current = running;
  if (!current) return;
  running = null;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    if ((await Promise.race([current.shutdown(), timedOut])) === "timeout") diag.error(`the last spans could not be sent within ${timeoutMs} ms`);
  } catch (error) {
    diag.error("flushing spans failed:", error);
  } finally {
    clearTimeout(timer);
  }
}
