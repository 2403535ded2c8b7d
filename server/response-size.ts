// How large an operation's answer may get. A few fields hold text that can be megabytes (a document's content, a
// summary, a rendered template preview); everything else is small and bounded by its column's check constraint.
// Before an operation runs, its worst case is estimated from the document and its variables: each heavy field
// costs its largest possible size, times the page sizes of every list above it (`first`/`last`; a connection asked
// for without either is unbounded), once per alias and per fragment spread. Over the limit, nothing runs and the
// client is told to fetch content one document at a time or with smaller pages (RESPONSE_TOO_LARGE). After it ran,
// the answer itself is measured before anything serializes it, so an estimate that was wrong can never build a
// string larger than the hard cap (or crash the process with "Invalid string length").
import {
  getNamedType,
  GraphQLError,
  isListType,
  isNonNullType,
  isObjectType,
  isAbstractType,
  Kind,
  valueFromASTUntyped,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLNamedType,
  type GraphQLOutputType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from "postgraphile/graphql";

/** The largest size, in bytes of the JSON answer, of each heavy field (`Type.field`); any other field is small. */
export type HeavyFields = ReadonlyMap<string, number>;

export interface HeavyFieldSizes {
  /** DOCUMENT_MAX_BYTES: a document's content, and a rendered template preview (content plus the template). */
  readonly documentBytes: number;
  /** The summaries.content bound of the database (bytes). */
  readonly summaryBytes: number;
  /** A template body's bound (characters) × 4 bytes. */
  readonly templateBodyBytes: number;
  /** The bound of documents.metadata (bytes of its JSON). */
  readonly jsonObjectBytes: number;
}

/**
 * Quire's heavy fields, at their byte bounds. JSON escaping can make the answer longer (quotes, backslashes, newlines
 * double); the hard cap measured after running (twice the limit) allows for that.
 */
export function heavyFields(sizes: HeavyFieldSizes): HeavyFields {
  const template = sizes.templateBodyBytes;
  // Not listed: audit events' oldValues/newValues. They record changed columns, content bodies excepted, so they are
  // small but for the rare metadata or template-body edit; costing every event at that worst case would refuse any
  // page of the audit log. The hard cap measured after running bounds them instead.
  return new Map([
    ["Document.content", sizes.documentBytes],
    ["Document.metadata", sizes.jsonObjectBytes],
    ["Summary.content", sizes.summaryBytes],
    ["Template.body", template],
    ["GlobalTemplate.body", template],
    ["TemplateVersion.body", template],
    ["GlobalTemplateVersion.body", template],
    // A preview is bounded by render_template's own output limit: one document's content and a template's text.
    ["Query.previewTemplate", sizes.documentBytes + sizes.templateBodyBytes],
  ]);
}

const pageArguments = ["first", "last"] as const;

/** The value an argument has in this request: a literal, a variable's value, or the variable's default. */
function argumentValue(value: ValueNode, variables: Readonly<Record<string, unknown>>, operation: OperationDefinitionNode): unknown {
  if (value.kind === Kind.VARIABLE) {
    const name = value.name.value;
    if (Object.hasOwn(variables, name)) return variables[name];
    const fallback = operation.variableDefinitions?.find((d) => d.variable.name.value === name)?.defaultValue;
    return fallback ? valueFromASTUntyped(fallback) : null;
  }
  return value.kind === Kind.INT ? Number(value.value) : null;
}

const unwrapsToList = (type: GraphQLOutputType): boolean => (isNonNullType(type) ? unwrapsToList(type.ofType) : isListType(type));

/**
 * How many times one selection of `field` may repeat below it: the page size asked for on a field that pages
 * (`first`/`last`; unbounded without one), one for a connection's `nodes`/`edges` (the connection counted it), and
 * `maxPageSize` for any other list.
 */
function multiplicity(field: FieldNode, parent: GraphQLNamedType, type: GraphQLOutputType, args: readonly { name: string }[], context: Walk): number {
  if (args.some((a) => a.name === "first" || a.name === "last")) {
    const sizes = pageArguments
      .map((name) => field.arguments?.find((a) => a.name.value === name))
      .map((argument) => (argument ? argumentValue(argument.value, context.variables, context.operation) : null))
      .filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    return sizes.length === 0 ? Number.POSITIVE_INFINITY : Math.max(0, Math.min(...sizes));
  }
  if (!unwrapsToList(type)) return 1;
  return parent.name.endsWith("Connection") || parent.name.endsWith("Edge") ? 1 : context.maxPageSize;
}

interface Walk {
  readonly schema: GraphQLSchema;
  readonly heavy: HeavyFields;
  readonly fragments: ReadonlyMap<string, FragmentDefinitionNode>;
  readonly variables: Readonly<Record<string, unknown>>;
  readonly operation: OperationDefinitionNode;
  readonly maxPageSize: number;
  /** Fragments being measured (a cycle counts nothing; GraphQL's validation refuses it anyway). */
  readonly visiting: Set<string>;
}

/** The worst-case bytes of the heavy fields in `selectionSet`, read on objects of type `parent`, once. */
function costOf(selectionSet: SelectionSetNode, parent: GraphQLNamedType, walk: Walk): number {
  let total = 0;
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      const name = selection.name.value;
      if (name.startsWith("__") || !(isObjectType(parent) || isAbstractType(parent))) continue;
      const field = isObjectType(parent) ? parent.getFields()[name] : undefined;
      // On an interface or union, the heaviest implementation's field counts.
      const candidates = field ? [{ owner: parent, field }] : implementationsOf(parent, name, walk.schema);
      let worst = 0;
      for (const { owner, field: definition } of candidates) {
        const own = walk.heavy.get(`${owner.name}.${name}`) ?? 0;
        const inner = selection.selectionSet ? costOf(selection.selectionSet, getNamedType(definition.type), walk) : 0;
        const times = multiplicity(selection, owner, definition.type, definition.args, walk);
        const cost = own + inner === 0 ? 0 : times * (own + inner);
        worst = Math.max(worst, cost);
      }
      total += worst;
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      const type = selection.typeCondition ? walk.schema.getType(selection.typeCondition.name.value) : parent;
      total += costOf(selection.selectionSet, type ?? parent, walk);
    } else {
      const fragment = walk.fragments.get(selection.name.value);
      if (!fragment || walk.visiting.has(fragment.name.value)) continue;
      walk.visiting.add(fragment.name.value);
      total += costOf(fragment.selectionSet, walk.schema.getType(fragment.typeCondition.name.value) ?? parent, walk);
      walk.visiting.delete(fragment.name.value);
    }
  }
  return total;
}

function implementationsOf(parent: GraphQLNamedType, name: string, schema: GraphQLSchema) {
  if (!isAbstractType(parent)) return [];
  return schema.getPossibleTypes(parent).flatMap((owner) => {
    const field = owner.getFields()[name];
    return field ? [{ owner: owner as GraphQLNamedType, field }] : [];
  });
}

export interface EstimateOptions {
  readonly heavy: HeavyFields;
  readonly maxPageSize: number;
}

/** The worst-case bytes of the heavy fields the operation `operationName` of `document` can answer (may be Infinity). */
export function estimateResponseBytes(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Readonly<Record<string, unknown>> | null | undefined,
  { heavy, maxPageSize }: EstimateOptions,
): number {
  const operations = document.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  const operation = operationName ? operations.find((o) => o.name?.value === operationName) : operations.length === 1 ? operations[0] : undefined;
  if (!operation) return 0; // grafast reports the missing or ambiguous operation itself
  const root =
    operation.operation === "query" ? schema.getQueryType() : operation.operation === "mutation" ? schema.getMutationType() : schema.getSubscriptionType();
  if (!root) return 0;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const walk: Walk = { schema, heavy, fragments, variables: variables ?? {}, operation, maxPageSize, visiting: new Set() };
  return costOf(operation.selectionSet, root, walk);
}

const formatBytes = (bytes: number) => (bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`);

/** The refusal of an operation whose estimate is over `maxBytes`. */
export function responseTooLargeEstimate(estimate: number, maxBytes: number): GraphQLError {
  const size = Number.isFinite(estimate) ? `up to ${formatBytes(estimate)}` : "an unbounded amount";
  return new GraphQLError(
    `This operation could answer ${size} of content; at most ${formatBytes(maxBytes)} are allowed. Ask for large fields ` +
      "(a document's content) one document at a time, list documents with `contentLength` or `excerpt` instead, " +
      "or pass a smaller `first`/`last`.",
    { extensions: { code: "RESPONSE_TOO_LARGE" } },
  );
}

/** The refusal of an answer that, once computed, turned out larger than the hard cap. */
export function responseTooLargeActual(maxBytes: number): GraphQLError {
  return new GraphQLError(
    `The answer to this operation is larger than ${formatBytes(maxBytes)}, so it was not sent; ask for less (smaller pages, fewer fields).`,
    { extensions: { code: "RESPONSE_TOO_LARGE" } },
  );
}

/**
 * Whether the JSON of `value` would be longer than `budget` characters: a walk that reads lengths and stops as soon
 * as the budget is passed, so it costs little and allocates nothing like the serialized text. Iterative, so the
 * answer's depth cannot overflow the stack.
 */
export function exceedsJsonLength(value: unknown, budget: number): boolean {
  let total = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === "string") total += item.length + 2;
    else if (item === null || typeof item !== "object") total += 24;
    else if (Array.isArray(item)) {
      total += 2 + item.length;
      for (const element of item) stack.push(element);
    } else {
      for (const [key, element] of Object.entries(item)) {
        total += key.length + 4;
        stack.push(element);
      }
    }
    if (total > budget) return true;
  }
  return false;
}
