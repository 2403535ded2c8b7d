// GraphQL and sign-in metrics. Operations are measured where Grafast executes them (its `execute` and `subscribe`
// middleware), so HTTP and WebSocket requests count alike, named from the parsed document rather than from what the
// client claims. Error codes are read where clients get them: after grafserv's maskError (server/errors.ts) has
// decided each error's public code. Requests refused before execution (a document that does not parse or validate,
// a WebSocket subscription with a bad token) count as operation type `invalid`, with the codes their client got.
// The same middleware wraps each executed operation in a tracing span (`query Name`, lib/tracing.ts), so the SQL it
// runs nests under it; grafast does not run graphql-js's execute, which OpenTelemetry's graphql instrumentation hooks.
import { AsyncLocalStorage } from "node:async_hooks";
import { SpanStatusCode } from "@opentelemetry/api";
import { isAsyncIterable, type GrafastExecutionArgs } from "postgraphile/grafast";
import type { Result } from "postgraphile/grafserv";
import { getOperationAST, type GraphQLError, type GraphQLFormattedError } from "postgraphile/graphql";
import { publicDatabaseError } from "../lib/errors.ts";
import type { Metrics } from "../lib/metrics.ts";
import { withSpan } from "../lib/tracing.ts";
import { responseBody } from "./errors.ts";
import type { Sessions } from "./sessions.ts";

type MaskErrorFn = (error: GraphQLError) => GraphQLError | GraphQLFormattedError;

interface Operation {
  /** null: an unnamed operation. */
  readonly name: string | null;
  /** query, mutation or subscription; `invalid` when the request never executed; `unknown` when not traceable. */
  readonly type: string;
}

const invalid: Operation = { name: null, type: "invalid" };
const unknown: Operation = { name: null, type: "unknown" };

export interface GraphqlMetrics {
  readonly plugin: GraphileConfig.Plugin;
  /** `mask`, with each error it returns counted by its code. */
  countErrors(mask: MaskErrorFn): MaskErrorFn;
}

const codeOf = (error: { extensions?: Record<string, unknown> | undefined }) => {
  const code = error.extensions?.code;
  return typeof code === "string" ? code : "BAD_REQUEST";
};

/** The codes of a JSON response's errors (GraphQL's own request errors may have none: they are BAD_REQUEST). */
const responseCodes = (result: Result): string[] => {
  const errors = responseBody(result)?.errors;
  return Array.isArray(errors) ? errors.map((error) => codeOf(error)) : [];
};

export function makeGraphqlMetrics(metrics: Metrics): GraphqlMetrics {
  // The HTTP request being handled (none over WebSockets): its operation once Grafast starts executing it.
  const httpRequests = new AsyncLocalStorage<{ operation: Operation | null }>();
  // Errors of an execution result, to the operation they came from, until maskError sees them.
  const origins = new WeakMap<GraphQLError, Operation>();

  const operationOf = (args: GrafastExecutionArgs): Operation => {
    const operation = getOperationAST(args.document, args.operationName ?? undefined);
    return operation ? { name: operation.name?.value ?? null, type: operation.operation } : invalid;
  };

  async function measure<R>(args: GrafastExecutionArgs, next: () => R | PromiseLike<R>): Promise<Awaited<R>> {
    const operation = operationOf(args);
    const request = httpRequests.getStore();
    if (request) request.operation = operation;
    const started = performance.now();
    // The document itself and the variables are never attributes: they can hold document text and passwords.
    const attributes = { "graphql.operation.type": operation.type, ...(operation.name === null ? {} : { "graphql.operation.name": operation.name }) };
    return withSpan(operation.name === null ? operation.type : `${operation.type} ${operation.name}`, attributes, async (span): Promise<Awaited<R>> => {
      try {
        const result = await next();
        if (!isAsyncIterable(result)) {
          const errors = (result as { errors?: readonly GraphQLError[] }).errors ?? [];
          for (const error of errors) origins.set(error, operation);
          if (errors.length > 0) span.setAttribute("quire.graphql.error_count", errors.length).setStatus({ code: SpanStatusCode.ERROR });
        }
        return result;
      } finally {
        metrics.recordGraphqlOperation(operation.name, operation.type, (performance.now() - started) / 1000);
      }
    });
  }

  const plugin: GraphileConfig.Plugin = {
    name: "QuireMetricsPlugin",
    version: "1.0.0",
    grafast: {
      middleware: {
        execute: (next, event) => measure(event.args, next),
        subscribe: (next, event) => measure(event.args, next),
      },
    },
    grafserv: {
      middleware: {
        async processRequest(next, event) {
          const graphqlPath = event.resolvedPreset.grafserv?.graphqlPath ?? "/graphql";
          if (event.requestDigest.path !== graphqlPath) return next();
          const request: { operation: Operation | null } = { operation: null };
          const started = performance.now();
          const result = await httpRequests.run(request, next);
          // Never executed: a malformed body, a document that does not parse or validate, a refused method (but
          // not GraphiQL's HTML, also served at this path).
          if (request.operation === null && result && /json/.test(result.headers["content-type"] ?? "")) {
            metrics.recordGraphqlOperation(invalid.name, invalid.type, (performance.now() - started) / 1000);
            for (const code of responseCodes(result)) metrics.recordGraphqlError(invalid.name, invalid.type, code);
          }
          return result;
        },
        // Over WebSockets a refusal before execution (a document that does not parse or validate, a bad token) is
        // a list of errors, which grafserv masks next: they are counted there, as this operation's.
        async onSubscribe(next) {
          const started = performance.now();
          const result = await next();
          if (Array.isArray(result)) {
            metrics.recordGraphqlOperation(invalid.name, invalid.type, (performance.now() - started) / 1000);
            for (const error of result) origins.set(error, invalid);
          }
          return result;
        },
      },
    },
  };

  return {
    plugin,
    countErrors(mask) {
      return (error) => {
        const masked = mask(error);
        const request = httpRequests.getStore();
        // A request that never executed is counted from its response, above.
        if (request?.operation !== null) {
          const operation = origins.get(error) ?? request?.operation ?? unknown;
          metrics.recordGraphqlError(operation.name, operation.type, codeOf(masked));
        }
        return masked;
      };
    },
  };
}

/** `sessions`, with each login counted by outcome: success, or the public error code (invalid_credentials, …). */
export function countSignIns(sessions: Sessions, metrics: Metrics): Sessions {
  return {
    ...sessions,
    async login(input, ip) {
      try {
        const signedIn = await sessions.login(input, ip);
        metrics.recordSignIn("success");
        return signedIn;
      } catch (error) {
        const code = (error as { code?: unknown } | null)?.code;
        const known = typeof code === "string" ? publicDatabaseError(code, "") : null;
        metrics.recordSignIn(known ? known.code.toLowerCase() : "error");
        throw error;
      }
    },
  };
}
