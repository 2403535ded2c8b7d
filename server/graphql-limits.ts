// What a GraphQL operation may ask for, checked before anything runs, over HTTP and graphql-ws alike. Row-level
// security decides what a caller may see; these limits decide how much work one request may cost: how deeply
// fields nest, how many aliases and field selections an operation has (fragments counted at every spread, so a
// small document cannot expand into a huge one), and how large a page `first`/`last` may ask for. Introspection
// can be switched off, and the server can be restricted to a file of trusted documents.
//
// The document checks are validation rules (grafserv caches validation per document, so they cost nothing on
// repeated queries); failures are HTTP 400 with QUERY_TOO_COMPLEX, BAD_INPUT (page size) or BAD_REQUEST
// (introspection). Page sizes passed as variables, and trusted documents, are checked on the request body.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { SafeError } from "postgraphile/grafast";
import {
  GraphQLError,
  Kind,
  NoSchemaIntrospectionCustomRule,
  parse,
  visit,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationRule,
  type VariableNode,
} from "postgraphile/graphql";
import type { Config } from "../lib/config.ts";
import type { ErrorCode } from "../lib/errors.ts";

export type GraphQLLimits = Config["graphql"];

/** The arguments that size a page of a connection (or list). */
const pageArguments = new Set(["first", "last"]);

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
function costOf(
  selectionSet: SelectionSetNode,
  fragments: ReadonlyMap<string, FragmentDefinitionNode>,
  memo: Map<string, Cost>,
  introspecting: boolean,
): Cost {
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

const operationLabel = (operation: OperationDefinitionNode) =>
  operation.name ? `Operation "${operation.name.value}"` : "The operation";

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
          if (!pageArguments.has(argument.name.value)) continue;
          const { value } = argument;
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

/** The names of the variables `query` passes as `first` or `last` (none when it does not parse). */
export function pageSizeVariables(query: string): ReadonlySet<string> {
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
        if (pageArguments.has(argument.name.value) && argument.value.kind === Kind.VARIABLE) names.add(argument.value.name.value);
      }
    },
  });
  return names;
}

/**
 * An error grafserv answers with HTTP 400 before parsing or running anything. grafserv reads the status from
 * `extensions.statusCode`; it is not enumerable, so it stays out of the response, which shows only `code`.
 */
function refusal(message: string, code: ErrorCode): SafeError {
  const extensions = { code };
  Object.defineProperty(extensions, "statusCode", { value: 400, enumerable: false });
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
 * The grafserv plugin enforcing `limits`: the validation rules above (plus GraphQL's NoSchemaIntrospection rule
 * when introspection is off), and on each request body the trusted documents and page sizes in `variables`.
 */
export function makeGraphQLLimitsPlugin(limits: GraphQLLimits): GraphileConfig.Plugin {
  const trusted = limits.trustedDocumentsFile ? loadTrustedDocuments(limits.trustedDocumentsFile) : null;
  return {
    name: "QuireGraphQLLimitsPlugin",
    version: "1.0.0",
    grafserv: {
      middleware: {
        setPreset(next, event) {
          event.validationRules.push(complexityRule(limits), pageSizeRule(limits.maxPageSize));
          if (!limits.introspection) event.validationRules.push(NoSchemaIntrospectionCustomRule);
          return next();
        },
        processGraphQLRequestBody(next, { body }) {
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
            // Parsing again is only needed when some number is too large to be a page size anyway.
            const large = Object.entries(variables).filter(([, v]) => typeof v === "number" && v > limits.maxPageSize);
            if (large.length > 0) {
              const used = pageSizeVariables(body.query);
              const tooLarge = large.find(([name]) => used.has(name));
              if (tooLarge) throw refusal(pageSizeMessage(`$${tooLarge[0]}`, String(tooLarge[1]), limits.maxPageSize), "BAD_INPUT");
            }
          }
          return next();
        },
      },
    },
  };
}
