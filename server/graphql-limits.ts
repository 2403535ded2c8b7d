// What a GraphQL operation may ask for, checked before anything runs, over HTTP and graphql-ws alike. Row-level
// security decides what a caller may see; these limits decide how much work one request may cost: how deeply
// fields nest, how many aliases and field selections an operation has (fragments counted at every spread, so a
// small document cannot expand into a huge one), and how large a page `first`/`last` may ask for. Introspection
// can be switched off, and the server can be restricted to a file of trusted documents.
//
// The document checks are validation rules (grafserv caches validation per document, so they cost nothing on
// repeated queries); failures are HTTP 400 with QUERY_TOO_COMPLEX, BAD_INPUT (page size) or BAD_REQUEST
// (introspection). Page sizes passed as variables, and trusted documents, are checked on the request body.
//
// Sizes are bounded too. The document (the `query` text) is checked before anything parses it (413
// QUERY_TOO_LARGE): values, however large, travel in `variables`, and only the request body limit bounds those.
// That bound is what keeps parsed documents in memory small: grafserv caches the parse and validation of the last
// `parseAndValidateCacheSize` documents (an LRU keyed by the query text's hash, holding each document's AST, whose
// locations keep the whole text) and grafast caches operation plans per parsed operation
// (`operationsCacheMaxLength`); both are set to {@link documentCacheSize}, so the two caches hold at most
// documentCacheSize × GRAPHQL_MAX_DOCUMENT_BYTES of text (12.5 MiB by default) plus what it parses into, which
// GRAPHQL_MAX_FIELDS bounds for valid documents. The answer is bounded as server/response-size.ts explains
// (RESPONSE_TOO_LARGE). When introspection is off, validation messages lose their "Did you mean …?" suggestions,
// which would otherwise spell out the schema one guess at a time.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { isAsyncIterable, SafeError } from "postgraphile/grafast";
import {
  GraphQLError,
  Kind,
  NoSchemaIntrospectionCustomRule,
  parse,
  visit,
  type DocumentNode,
  type ExecutionResult,
  type FieldNode,
  type FragmentDefinitionNode,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationRule,
  type VariableNode,
} from "postgraphile/graphql";
import type { Config } from "../lib/config.ts";
import type { ErrorCode } from "../lib/errors.ts";
import { responseBody, withoutSuggestions } from "./errors.ts";
import { estimateResponseBytes, exceedsJsonLength, responseTooLargeActual, responseTooLargeEstimate, type HeavyFields } from "./response-size.ts";

export type GraphQLLimits = Config["graphql"];

/** The arguments that size a page of a connection (or list). */
const pageArguments = new Set(["first", "last"]);
/** The arguments that must not be negative (PostgreSQL refuses a negative LIMIT or OFFSET). */
const countArguments = new Set(["first", "last", "offset"]);

/**
 * How many parsed documents grafserv, and how many operations' plans grafast, keep cached (their defaults: 500).
 * A deployment's clients send a few dozen distinct documents; each cached one holds up to GRAPHQL_MAX_DOCUMENT_BYTES.
 */
export const documentCacheSize = 200;

interface Cost {
  /** Deepest nesting of fields (a root field alone is 1). */
  readonly depth: number;
  readonly fields: number;
  readonly aliases: number;
}

const free: Cost = { depth: 0, fields: 0, aliases: 0 };

/**
 * The cost of a selection set with every fragment spread expanded. A fragment's cost is computed once (memo), so
 * fragments spread many times cost many times without being walked many times; a fragment cycle counts nothing
 * (GraphQL's own NoFragmentCycles rule refuses the document). Inside introspection (`__schema`, `__type`), `ofType`
 * adds no depth: its chain is linear (one type each), and the standard introspection query nests it many levels deep.
 */
function costOf(selectionSet: SelectionSetNode, fragments: ReadonlyMap<string, FragmentDefinitionNode>, memo: Map<string, Cost>, introspecting: boolean): Cost {
  let depth = 0;
  let fields = 0;
  let aliases = 0;
  for (const selection of selectionSet.selections) {
    let inner: Cost = free;
    let own = 0;
    if (selection.kind === Kind.FIELD) {
      const name = selection.name.value;
      const intoIntrospection = introspecting || name === "__schema" || name === "__type";
      if (selection.selectionSet) inner = costOf(selection.selectionSet, fragments, memo, intoIntrospection);
      own = introspecting && name === "ofType" ? 0 : 1;
      fields += 1;
      if (selection.alias) aliases += 1;
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      inner = costOf(selection.selectionSet, fragments, memo, introspecting);
    } else {
      const key = `${introspecting}:${selection.name.value}`;
      const known = memo.get(key);
      const fragment = fragments.get(selection.name.value);
      if (known) {
        inner = known;
      } else if (fragment) {
        memo.set(key, free); // while it is being measured: a cycle back to it counts nothing
        inner = costOf(fragment.selectionSet, fragments, memo, introspecting);
        memo.set(key, inner);
      }
    }
    depth = Math.max(depth, own + inner.depth);
    fields += inner.fields;
    aliases += inner.aliases;
  }
  return { depth, fields, aliases };
}

const operationLabel = (operation: OperationDefinitionNode) => (operation.name ? `Operation "${operation.name.value}"` : "The operation");

/** Refuses operations deeper, or with more aliases or field selections, than `limits` allow (QUERY_TOO_COMPLEX). */
export function complexityRule(limits: Pick<GraphQLLimits, "maxDepth" | "maxAliases" | "maxFields">): ValidationRule {
  return (context) => ({
    Document(document) {
      const fragments = new Map<string, FragmentDefinitionNode>();
      for (const definition of document.definitions) {
        if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
      }
      const memo = new Map<string, Cost>();
      for (const operation of document.definitions) {
        if (operation.kind !== Kind.OPERATION_DEFINITION) continue;
        const cost = costOf(operation.selectionSet, fragments, memo, false);
        const label = operationLabel(operation);
        const problems = [
          cost.depth > limits.maxDepth && `${label} nests fields ${cost.depth} deep; at most ${limits.maxDepth} are allowed.`,
          cost.aliases > limits.maxAliases && `${label} uses ${cost.aliases} aliases; at most ${limits.maxAliases} are allowed.`,
          cost.fields > limits.maxFields &&
            `${label} selects ${cost.fields} fields (a fragment counts each time it is spread); at most ${limits.maxFields} are allowed.`,
        ];
        for (const message of problems) {
          if (message) context.reportError(new GraphQLError(message, { nodes: [operation], extensions: { code: "QUERY_TOO_COMPLEX" } }));
        }
      }
    },
  });
}

const pageSizeMessage = (name: string, value: string, max: number) =>
  `\`${name}\` may be at most ${max}, got ${value}; fetch further pages with a cursor (\`after\`/\`before\`).`;

const negativeMessage = (name: string, value: string) => `\`${name}\` must not be negative, got ${value}.`;

/**
 * Refuses a `first` or `last` literal above `maxPageSize`, and a variable used as one whose default is above it
 * (BAD_INPUT). Values sent in `variables` are checked on the request body ({@link pageSizeVariables}).
 */
export function pageSizeRule(maxPageSize: number): ValidationRule {
  return (context) => {
    const pageVariables = new Set<VariableNode>();
    return {
      Field(field: FieldNode) {
        for (const argument of field.arguments ?? []) {
          const { value } = argument;
          if (countArguments.has(argument.name.value) && value.kind === Kind.INT && Number(value.value) < 0) {
            const message = negativeMessage(argument.name.value, value.value);
            context.reportError(new GraphQLError(message, { nodes: [argument], extensions: { code: "BAD_INPUT" } }));
          }
          if (!pageArguments.has(argument.name.value)) continue;
          if (value.kind === Kind.VARIABLE) pageVariables.add(value);
          else if (value.kind === Kind.INT && Number(value.value) > maxPageSize) {
            const message = pageSizeMessage(argument.name.value, value.value, maxPageSize);
            context.reportError(new GraphQLError(message, { nodes: [argument], extensions: { code: "BAD_INPUT" } }));
          }
        }
      },
      Document: {
        // Fragments may come after the operations that spread them, so defaults are checked once all is seen.
        leave(document) {
          for (const operation of document.definitions) {
            if (operation.kind !== Kind.OPERATION_DEFINITION) continue;
            for (const usage of context.getRecursiveVariableUsages(operation)) {
              if (!pageVariables.has(usage.node)) continue;
              const name = usage.node.name.value;
              const fallback = operation.variableDefinitions?.find((d) => d.variable.name.value === name)?.defaultValue;
              if (fallback?.kind === Kind.INT && Number(fallback.value) > maxPageSize) {
                const message = pageSizeMessage(`$${name}`, fallback.value, maxPageSize);
                context.reportError(new GraphQLError(message, { nodes: [fallback], extensions: { code: "BAD_INPUT" } }));
              }
            }
          }
        },
      },
    };
  };
}

/** The names of the variables `query` passes as `first`, `last` (or the `argumentNames` given); none when it does not parse. */
export function pageSizeVariables(query: string, argumentNames = pageArguments): ReadonlySet<string> {
  const names = new Set<string>();
  let document: DocumentNode;
  try {
    document = parse(query);
  } catch {
    return names; // grafserv reports the syntax error itself
  }
  visit(document, {
    Field(field) {
      for (const argument of field.arguments ?? []) {
        if (argumentNames.has(argument.name.value) && argument.value.kind === Kind.VARIABLE) names.add(argument.value.name.value);
      }
    },
  });
  return names;
}

/**
 * An error grafserv answers with HTTP 400 before parsing or running anything. grafserv reads the status from
 * `extensions.statusCode`; it is not enumerable, so it stays out of the response, which shows only `code`.
 */
function refusal(message: string, code: ErrorCode, statusCode = 400): SafeError {
  const extensions = { code };
  Object.defineProperty(extensions, "statusCode", { value: statusCode, enumerable: false });
  return new SafeError(message, extensions);
}

/**
 * Reads a trusted-documents file: a JSON object of lowercase hex SHA-256 hash → GraphQL document, each hash being
 * that of its document's UTF-8 text. Throws, naming the file and the problem, when it is anything else.
 */
export function loadTrustedDocuments(file: string): ReadonlyMap<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new Error(`GRAPHQL_TRUSTED_DOCUMENTS_FILE ${file}: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new Error(`GRAPHQL_TRUSTED_DOCUMENTS_FILE ${file}: must be a JSON object of sha256 hash → document`);
  }
  const documents = new Map<string, string>();
  for (const [hash, document] of Object.entries(parsed)) {
    if (typeof document !== "string" || createHash("sha256").update(document).digest("hex") !== hash) {
      throw new Error(`GRAPHQL_TRUSTED_DOCUMENTS_FILE ${file}: ${JSON.stringify(hash)} is not the sha256 (hex) of its document`);
    }
    documents.set(hash, document);
  }
  return documents;
}

/** The document a request names: Apollo's `extensions.persistedQuery.sha256Hash`, or `documentId`/`id` ("sha256:" optional). */
function documentIdOf(body: { id: unknown; documentId: unknown; extensions: unknown }): string | null {
  const persisted = (body.extensions as { persistedQuery?: { sha256Hash?: unknown } } | null | undefined)?.persistedQuery?.sha256Hash;
  const id = [persisted, body.documentId, body.id].find((v): v is string => typeof v === "string");
  return id === undefined ? null : id.replace(/^sha256:/, "").toLowerCase();
}

/**
 * `rule` with the "Did you mean …?" suggestions taken out of the errors it reports: the rule sees a context whose
 * reportError strips them and passes everything else on.
 */
export function withoutSuggestionsRule(rule: ValidationRule): ValidationRule {
  return (context) => {
    const quiet = Object.create(context, {
      reportError: {
        value(error: GraphQLError) {
          const message = withoutSuggestions(error.message);
          context.reportError(message === error.message ? error : new GraphQLError(message, { nodes: error.nodes, extensions: error.extensions }));
        },
      },
    }) as typeof context;
    return rule(quiet);
  };
}

/** What the answer-size checks need beyond the GraphQL limits. */
export interface ResponseLimits {
  readonly heavy: HeavyFields;
}

const hasOwnCode = (result: ExecutionResult, code: string) => result.errors?.some((e) => e.extensions?.code === code) === true;

/**
 * The grafserv plugin enforcing `limits`: the validation rules above (plus GraphQL's NoSchemaIntrospection rule
 * when introspection is off), on each request body the document size, trusted documents and page sizes in
 * `variables`, and on each operation the size of its answer (server/response-size.ts).
 */
export function makeGraphQLLimitsPlugin(limits: GraphQLLimits, { heavy }: ResponseLimits): GraphileConfig.Plugin {
  const trusted = limits.trustedDocumentsFile ? loadTrustedDocuments(limits.trustedDocumentsFile) : null;
  const hardCap = limits.maxResponseBytes * 2;
  /** Refuses before running what could answer too much; measures what ran before anything serializes it. */
  async function bounded<R>(
    args: { schema: Parameters<typeof estimateResponseBytes>[0]; document: DocumentNode; operationName?: string | null; variableValues?: unknown },
    next: () => R | PromiseLike<R>,
  ) {
    const variables = typeof args.variableValues === "object" && args.variableValues !== null ? (args.variableValues as Record<string, unknown>) : {};
    const estimate = estimateResponseBytes(args.schema, args.document, args.operationName, variables, { heavy, maxPageSize: limits.maxPageSize });
    if (estimate > limits.maxResponseBytes) return { errors: [responseTooLargeEstimate(estimate, limits.maxResponseBytes)] } as R;
    const result = await next();
    if (result === null || typeof result !== "object" || isAsyncIterable(result)) return result;
    const { data } = result as ExecutionResult;
    if (data && exceedsJsonLength(data, hardCap)) return { errors: [responseTooLargeActual(hardCap)] } as R;
    return result;
  }
  return {
    name: "QuireGraphQLLimitsPlugin",
    version: "1.0.0",
    schema: {
      hooks: {
        // grafast reads its operation-plan cache size from the schema's extensions.
        GraphQLSchema(config) {
          const extensions = config.extensions ?? {};
          config.extensions = { ...extensions, grafast: { ...extensions.grafast, operationsCacheMaxLength: documentCacheSize } };
          return config;
        },
      },
    },
    grafast: {
      middleware: {
        execute: (next, { args }) => bounded(args, next),
        subscribe: (next, { args }) => bounded(args, next),
      },
    },
    grafserv: {
      middleware: {
        setPreset(next, event) {
          event.validationRules.push(complexityRule(limits), pageSizeRule(limits.maxPageSize));
          if (!limits.introspection) {
            event.validationRules.push(NoSchemaIntrospectionCustomRule);
            event.validationRules.splice(0, event.validationRules.length, ...event.validationRules.map(withoutSuggestionsRule));
          }
          return next();
        },
        // An answer refused for its size ran nothing (or was not sent): a client error, whatever Accept said.
        async processRequest(next) {
          const result = await next();
          if (result?.type !== "buffer" || result.statusCode !== 200 || !result.buffer.includes('"RESPONSE_TOO_LARGE"')) return result;
          const body = responseBody(result);
          if (!body || body.data !== undefined || !hasOwnCode(body as ExecutionResult, "RESPONSE_TOO_LARGE")) return result;
          return { ...result, statusCode: 400 };
        },
        processGraphQLRequestBody(next, { body }) {
          // Before anything parses it: the query text of every request, HTTP or graphql-ws.
          if (typeof body.query === "string" && body.query.length > limits.maxDocumentBytes / 3 && Buffer.byteLength(body.query) > limits.maxDocumentBytes) {
            throw refusal(`The GraphQL document is larger than ${limits.maxDocumentBytes} bytes; send large values as variables.`, "QUERY_TOO_LARGE", 413);
          }
          if (trusted) {
            const id = documentIdOf(body);
            const document = id === null ? undefined : trusted.get(id);
            if (document === undefined) {
              throw refusal(
                id === null
                  ? "This server runs only trusted documents: send the document's sha256 as extensions.persistedQuery.sha256Hash or documentId."
                  : "No trusted document has this hash.",
                "UNTRUSTED_DOCUMENT",
              );
            }
            body.query = document;
          }
          const variables = body.variableValues;
          if (typeof body.query === "string" && typeof variables === "object" && variables !== null) {
            // Parsing again is only needed when some number is too large to be a page size anyway, or negative.
            const large = Object.entries(variables).filter(([, v]) => typeof v === "number" && v > limits.maxPageSize);
            if (large.length > 0) {
              const used = pageSizeVariables(body.query);
              const tooLarge = large.find(([name]) => used.has(name));
              if (tooLarge) throw refusal(pageSizeMessage(`$${tooLarge[0]}`, String(tooLarge[1]), limits.maxPageSize), "BAD_INPUT");
            }
            const negative = Object.entries(variables).filter(([, v]) => typeof v === "number" && v < 0);
            if (negative.length > 0) {
              const used = pageSizeVariables(body.query, countArguments);
              const below = negative.find(([name]) => used.has(name));
              if (below) throw refusal(negativeMessage(`$${below[0]}`, String(below[1])), "BAD_INPUT");
            }
          }
          return next();
        },
      },
    },
  };
}
