// GraphQL limits: an operation nested too deeply, with too many aliases or field selections, or asking for too
// large a page is refused with HTTP 400 and a stable code before anything runs, over HTTP and graphql-ws alike.
// Introspection answers only where it is enabled, and a trusted-documents file restricts the server to its documents.
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildSchema, getIntrospectionQuery, parse, specifiedRules, validate } from "postgraphile/graphql";
import WebSocket from "ws";
import { complexityRule, loadTrustedDocuments, pageSizeRule, pageSizeVariables, withoutSuggestionsRule } from "../../server/graphql-limits.ts";
import { estimateResponseBytes, exceedsJsonLength } from "../../server/response-size.ts";
import { query } from "../support/database.ts";
import { codeOf, useQuireServer, type GraphQLBody, type TestServer } from "../support/server.ts";
import { createTenant } from "../support/tenants.ts";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const trustedQuery = "query Trusted($n: Int) { documents(first: $n) { totalCount } }";

let token: string; // a member's: anonymous callers may not read documents at all
const fx = useQuireServer({ env: { BCRYPT_COST: "10" } });
const app = fx.app; // the defaults: depth 12, 30 aliases, 500 fields, pages of 100; introspection on (not production)
const locked = fx.server({ GRAPHQL_INTROSPECTION: "false" });
const trustedFile = join(mkdtempSync(join(tmpdir(), "quire-trusted-")), "documents.json");
writeFileSync(trustedFile, JSON.stringify({ [sha256(trustedQuery)]: trustedQuery }));
const trusted = fx.server({ GRAPHQL_TRUSTED_DOCUMENTS_FILE: trustedFile });
beforeAll(async () => {
  token = (await createTenant(fx.db, "Limits")).members.member.accessToken;
});

/** `{ query { query { … { __typename } } } }`: `levels` fields deep (PostGraphile's Query has a `query` field). */
const nested = (levels: number) => "{ ".concat("query { ".repeat(levels - 1), "__typename", " }".repeat(levels));
const aliased = (count: number) => `{ ${Array.from({ length: count }, (_, i) => `a${i}: __typename`).join(" ")} }`;
const selections = (count: number) => `{ ${"__typename ".repeat(count)}}`;

/** Expects a refusal before execution: HTTP 400, no `data` at all, and `code` on the first error. */
function expectRefused(response: { status: number; body: GraphQLBody }, code: string) {
  expect(response.status).toBe(400);
  expect(response.body.data).toBeUndefined();
  expect(codeOf(response.body)).toBe(code);
}

/** Runs one operation over graphql-ws and returns what the server sent for it: its `next` or its `error` payload. */
async function overWebSocket(server: TestServer, operation: { query: string; variables?: Record<string, unknown> }) {
  const socket = new WebSocket(`${server.url.replace("http", "ws")}/graphql`, "graphql-transport-ws");
  try {
    return await new Promise<{ type: string; payload: unknown }>((resolve, reject) => {
      socket.on("error", reject);
      socket.on("open", () => socket.send(JSON.stringify({ type: "connection_init", payload: {} })));
      socket.on("message", (data) => {
        const message = JSON.parse(data.toString()) as { type: string; payload?: unknown };
        if (message.type === "connection_ack") socket.send(JSON.stringify({ id: "1", type: "subscribe", payload: operation }));
        if (message.type === "next" || message.type === "error") resolve({ type: message.type, payload: message.payload });
      });
    });
  } finally {
    socket.terminate();
  }
}

const documentsTitled = async (title: string) =>
  (await query<{ n: number }>(fx.db.name, "select count(*)::int as n from app_public.documents where title = $1", [title], "root"))[0]!.n;

const randomSuffix = () => Math.random().toString(36).slice(2, 10);
/** A mutation that writes a row and whose payload reaches back into the organization's documents. */
const creation = (title: string) => `createDocument(input: { document: { title: "${title}", content: "limits" } })`;
const asMember = (text: string) => app.graphql(text, {}, token);

describe("query depth", () => {
  test("an operation nested deeper than GRAPHQL_MAX_DEPTH (12) is refused with QUERY_TOO_COMPLEX", async () => {
    const response = await app.graphql(nested(13));
    expectRefused(response, "QUERY_TOO_COMPLEX");
    expect(response.body.errors![0]!.message).toBe("The operation nests fields 13 deep; at most 12 are allowed.");
  });

  test("exactly the limit runs", async () => {
    const { status, body } = await app.graphql(nested(12));
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
  });

  test("depth through fragments counts as if they were written out", async () => {
    const response = await app.graphql(`{ query { ...Deep } } fragment Deep on Query { ${nested(12).slice(2, -2)} }`);
    expectRefused(response, "QUERY_TOO_COMPLEX");
  });
});

describe("aliases", () => {
  test("more than GRAPHQL_MAX_ALIASES (30) aliases are refused; 30 run", async () => {
    const response = await app.graphql(aliased(31));
    expectRefused(response, "QUERY_TOO_COMPLEX");
    expect(response.body.errors![0]!.message).toBe("The operation uses 31 aliases; at most 30 are allowed.");
    expect((await app.graphql(aliased(30))).status).toBe(200);
  });
});

describe("field selections", () => {
  test("more than GRAPHQL_MAX_FIELDS (500) selections are refused; 500 run", async () => {
    expectRefused(await app.graphql(selections(501)), "QUERY_TOO_COMPLEX");
    expect((await app.graphql(selections(500))).status).toBe(200);
  });

  test("a fragment counts every time it is spread, so a short document cannot expand past the limit", async () => {
    const document = `query Spread { ${"...Ten ".repeat(51)}} fragment Ten on Query { ${"__typename ".repeat(10)}}`;
    const response = await app.graphql(document);
    expectRefused(response, "QUERY_TOO_COMPLEX");
    expect(response.body.errors![0]!.message).toMatch(/^Operation "Spread" selects 510 fields/);
  });
});

describe("page size", () => {
  test("`first` or `last` above GRAPHQL_MAX_PAGE_SIZE (100) is refused with BAD_INPUT; 100 runs", async () => {
    const response = await app.graphql("{ documents(first: 1000) { totalCount } }");
    expectRefused(response, "BAD_INPUT");
    expect(response.body.errors![0]!.message).toMatch(/^`first` may be at most 100, got 1000/);
    expectRefused(await app.graphql("{ documents(last: 101) { totalCount } }"), "BAD_INPUT");
    const { status, body } = await app.graphql("{ documents(first: 100) { totalCount } }", {}, token);
    expect(status).toBe(200);
    expect(body.data).toEqual({ documents: { totalCount: expect.any(Number) } });
  });

  test("a page size sent as a variable, or as a variable's default, is refused the same way", async () => {
    const byVariable = await app.graphql("query ($n: Int) { documents(first: $n) { totalCount } }", { n: 1000 });
    expectRefused(byVariable, "BAD_INPUT");
    expect(byVariable.body.errors).toEqual([{ message: expect.stringMatching(/^`\$n` may be at most 100, got 1000/), extensions: { code: "BAD_INPUT" } }]);
    expectRefused(await app.graphql("query ($n: Int = 1000) { documents(first: $n) { totalCount } }"), "BAD_INPUT");
    // A large number in a variable that is not a page size is nobody's business here.
    const unrelated = await app.graphql("query ($n: Int, $m: Int) { documents(first: $n, offset: $m) { totalCount } }", { n: 5, m: 1000 }, token);
    expect(unrelated).toEqual({ status: 200, body: { data: { documents: { totalCount: expect.any(Number) } } } });
  });
});

describe("nothing runs when an operation is refused", () => {
  test.each([
    [
      "too deep",
      "QUERY_TOO_COMPLEX",
      (r: string) => `mutation { ${r} { document { org { ${"documentsByOrgId { nodes { org { ".repeat(4)}name${" } } }".repeat(4)} } } } }`,
    ],
    [
      "too many aliases",
      "QUERY_TOO_COMPLEX",
      (r: string) => `mutation { ${r} { ${Array.from({ length: 31 }, (_, i) => `a${i}: clientMutationId`).join(" ")} } }`,
    ],
    ["too many fields", "QUERY_TOO_COMPLEX", (r: string) => `mutation { ${r} { ${"clientMutationId ".repeat(500)}} }`],
    ["too large a page", "BAD_INPUT", (r: string) => `mutation { ${r} { document { org { documentsByOrgId(first: 1000) { totalCount } } } } }`],
  ])("a document creation %s is refused with %s and writes nothing", async (_name, code, mutation) => {
    const title = `refused-${randomSuffix()}`;
    expectRefused(await asMember(mutation(creation(title))), code);
    expect(await documentsTitled(title)).toBe(0);
  });

  test("while the same creation within the limits runs", async () => {
    const title = `allowed-${randomSuffix()}`;
    const { status, body } = await asMember(`mutation { ${creation(title)} { document { org { documentsByOrgId(first: 100) { totalCount } } } } }`);
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
    expect(await documentsTitled(title)).toBe(1);
  });
});

describe("over graphql-ws", () => {
  test("the same limits apply to operations sent on a WebSocket", async () => {
    const deep = await overWebSocket(app, { query: nested(13) });
    expect(deep).toEqual({ type: "error", payload: [expect.objectContaining({ extensions: { code: "QUERY_TOO_COMPLEX" } })] });
    const page = await overWebSocket(app, { query: "query ($n: Int) { documents(first: $n) { totalCount } }", variables: { n: 1000 } });
    expect(page).toEqual({ type: "error", payload: [expect.objectContaining({ extensions: { code: "BAD_INPUT" } })] });
    expect(await overWebSocket(app, { query: nested(12) })).toMatchObject({ type: "next" });
  });
});

describe("introspection", () => {
  test("is answered where enabled (outside production by default), and GraphiQL's full query fits the limits", async () => {
    const { status, body } = await app.graphql(getIntrospectionQuery({ descriptions: true, inputValueDeprecation: true }));
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
    expect(body.data).toHaveProperty("__schema.queryType.name", "Query");
  });

  test("with GRAPHQL_INTROSPECTION=false, __schema and __type are refused, over HTTP and WebSockets", async () => {
    expectRefused(await locked.graphql("{ __schema { queryType { name } } }"), "BAD_REQUEST");
    expectRefused(await locked.graphql('{ __type(name: "Query") { name } }'), "BAD_REQUEST");
    expect(await overWebSocket(locked, { query: "{ __schema { queryType { name } } }" })).toEqual({
      type: "error",
      payload: expect.arrayContaining([expect.objectContaining({ extensions: { code: "BAD_REQUEST" } })]),
    });
  });

  test("but __typename is still answered", async () => {
    expect(await locked.graphql("{ __typename }")).toEqual({ status: 200, body: { data: { __typename: "Query" } } });
  });
});

describe("trusted documents", () => {
  const post = (body: Record<string, unknown>) =>
    fetch(`${trusted.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    }).then(async (response) => ({ status: response.status, body: (await response.json()) as GraphQLBody }));

  test("a document named by its sha256 runs: Apollo's persistedQuery extension or documentId", async () => {
    const apollo = await post({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256(trustedQuery) } }, variables: { n: 5 } });
    expect(apollo).toEqual({ status: 200, body: { data: { documents: { totalCount: expect.any(Number) } } } });
    const byId = await post({ documentId: `sha256:${sha256(trustedQuery)}` });
    expect(byId).toEqual({ status: 200, body: { data: { documents: { totalCount: expect.any(Number) } } } });
  });

  test("anything else is refused with UNTRUSTED_DOCUMENT: a raw query, or an unknown hash", async () => {
    expectRefused(await post({ query: "{ __typename }" }), "UNTRUSTED_DOCUMENT");
    expectRefused(await post({ documentId: sha256("{ __typename }") }), "UNTRUSTED_DOCUMENT");
    expect(await overWebSocket(trusted, { query: "{ __typename }" })).toEqual({
      type: "error",
      payload: [expect.objectContaining({ extensions: { code: "UNTRUSTED_DOCUMENT" } })],
    });
  });

  test("the limits still apply to trusted documents", async () => {
    expectRefused(await post({ documentId: sha256(trustedQuery), variables: { n: 1000 } }), "BAD_INPUT");
  });

  test("a file whose hashes do not match its documents stops the start", () => {
    const file = join(mkdtempSync(join(tmpdir(), "quire-trusted-")), "bad.json");
    writeFileSync(file, JSON.stringify({ [sha256("{ a }")]: "{ b }" }));
    expect(() => loadTrustedDocuments(file)).toThrow(/is not the sha256 \(hex\) of its document/);
    writeFileSync(file, "[]");
    expect(() => loadTrustedDocuments(file)).toThrow(/must be a JSON object/);
  });
});

describe("the rules on their own", () => {
  const schema = buildSchema("type Query { a: Int, self: Query, list(first: Int, last: Int): [Query] }");
  const errorsOf = (source: string) =>
    validate(schema, parse(source), [...specifiedRules, complexityRule({ maxDepth: 3, maxAliases: 1, maxFields: 6 }), pageSizeRule(10)]).map((e) => [
      e.extensions["code"] ?? null,
      e.message,
    ]);

  test("each operation of a document is measured on its own", () => {
    expect(errorsOf("query A { self { self { a } } } query B { self { self { self { a } } } }")).toEqual([
      ["QUERY_TOO_COMPLEX", 'Operation "B" nests fields 4 deep; at most 3 are allowed.'],
    ]);
  });

  test("a fragment cycle is GraphQL's own error, not a hang", () => {
    expect(errorsOf("{ self { ...F } } fragment F on Query { self { ...F } }")).toEqual([[null, 'Cannot spread fragment "F" within itself.']]);
  });

  test("page sizes are checked wherever they appear, fragments included", () => {
    expect(errorsOf("{ ...F } fragment F on Query { list(last: 11) { a } }")).toEqual([
      ["BAD_INPUT", "`last` may be at most 10, got 11; fetch further pages with a cursor (`after`/`before`)."],
    ]);
    expect(errorsOf("query ($n: Int = 11) { ...F } fragment F on Query { list(first: $n) { a } }")).toEqual([
      ["BAD_INPUT", "`$n` may be at most 10, got 11; fetch further pages with a cursor (`after`/`before`)."],
    ]);
  });

  test("pageSizeVariables finds the variables passed as first or last", () => {
    expect([...pageSizeVariables("query ($a: Int, $b: Int, $c: Int) { list(first: $a, last: $b) { self { a } } x: list { a } }")]).toEqual(["a", "b"]);
    expect([...pageSizeVariables("{ not valid")]).toEqual([]);
  });
});

describe("document size", () => {
  // Valid documents that are mostly a comment: what an anonymous caller can send by the hundred.
  const padded = (bytes: number) => `# ${"x".repeat(bytes - 17)}\n{ __typename }`;

  test("a document over GRAPHQL_MAX_DOCUMENT_BYTES (64 KiB) is refused with 413 QUERY_TOO_LARGE before parsing; one under runs", async () => {
    const response = await app.graphql(padded(65_537));
    expect(response.status).toBe(413);
    expect(response.body).toEqual({
      errors: [{ message: "The GraphQL document is larger than 65536 bytes; send large values as variables.", extensions: { code: "QUERY_TOO_LARGE" } }],
    });
    expect(await app.graphql(padded(65_000))).toEqual({ status: 200, body: { data: { __typename: "Query" } } });
  });

  test("bytes count, not characters: a document of 30,000 three-byte characters is over 64 KiB", async () => {
    const response = await app.graphql(`# ${"€".repeat(30_000)}\n{ __typename }`);
    expect(response.status).toBe(413);
    expect(codeOf(response.body)).toBe("QUERY_TOO_LARGE");
  });

  test("the parse and operation-plan caches keep 200 documents, not grafserv's and grafast's default 500", async () => {
    expect(app.server.pgl.getResolvedPreset().grafserv?.parseAndValidateCacheSize).toBe(200);
    const schema = await app.server.pgl.getSchema();
    expect(schema.extensions.grafast?.operationsCacheMaxLength).toBe(200);
  });

  test("the same limit applies to graphql-ws subscribe messages", async () => {
    expect(await overWebSocket(app, { query: padded(70_000) })).toEqual({
      type: "error",
      payload: [expect.objectContaining({ extensions: { code: "QUERY_TOO_LARGE" } })],
    });
  });

  test("large values travel in variables, which only the request body limit bounds", async () => {
    const content = "y".repeat(200_000);
    const { status, body } = await app.graphql(
      'mutation ($content: String!) { createDocument(input: { document: { title: "Big", content: $content } }) { document { contentLength } } }',
      { content },
      token,
    );
    expect(status).toBe(200);
    expect(body).toEqual({ data: { createDocument: { document: { contentLength: 200_000 } } } });
  });
});

describe("negative counts", () => {
  test.each(["first", "last", "offset"])("a negative `%s` is BAD_INPUT, as a literal or a variable, never INTERNAL", async (name) => {
    const literal = await app.graphql(`{ documents(${name}: -1) { totalCount } }`, {}, token);
    expectRefused(literal, "BAD_INPUT");
    expect(literal.body.errors![0]!.message).toBe(`\`${name}\` must not be negative, got -1.`);
    const variable = await app.graphql(`query ($n: Int) { documents(${name}: $n) { totalCount } }`, { n: -5 }, token);
    expectRefused(variable, "BAD_INPUT");
    expect(variable.body.errors![0]!.message).toBe("`$n` must not be negative, got -5.");
  });
});

describe("suggestions", () => {
  test("with introspection off, validation errors do not suggest field names (they would spell out the schema)", async () => {
    const locked_ = await locked.graphql("{ documentz { totalCount } }");
    expect(locked_.status).toBe(400);
    expect(locked_.body.errors![0]!.message).toBe('Cannot query field "documentz" on type "Query".');
    expect(JSON.stringify(locked_.body)).not.toContain("Did you mean");
    // Where introspection is on, the schema is public anyway and the suggestions help.
    expect((await app.graphql("{ documentz { totalCount } }")).body.errors![0]!.message).toMatch(/Did you mean "document/);
  });

  test("nor over graphql-ws", async () => {
    const answer = await overWebSocket(locked, { query: "{ documentz { totalCount } }" });
    expect(JSON.stringify(answer)).not.toContain("Did you mean");
  });
});

describe("response size", () => {
  test("a list of whole contents is refused with RESPONSE_TOO_LARGE before it runs (no page size: unbounded)", async () => {
    const response = await app.graphql("{ documents { nodes { title content } } }", {}, token);
    expectRefused(response, "RESPONSE_TOO_LARGE");
    expect(response.body.errors![0]!.message).toMatch(/^This operation could answer an unbounded amount of content; at most 8\.0 MiB/);
    expect(response.body.errors![0]!.message).toMatch(/contentLength/);
  });

  test("page sizes multiply, as literals or variables; aliases and fragment spreads add up", async () => {
    // 20 × 5 MiB, the reported case.
    expectRefused(await app.graphql("{ documents(first: 20) { nodes { content } } }", {}, token), "RESPONSE_TOO_LARGE");
    expectRefused(await app.graphql("query ($n: Int) { documents(first: $n) { nodes { content } } }", { n: 2 }, token), "RESPONSE_TOO_LARGE");
    const one = "documents(first: 1) { nodes { content } }";
    expectRefused(await app.graphql(`{ a: ${one} b: ${one} }`, {}, token), "RESPONSE_TOO_LARGE");
    expectRefused(await app.graphql(`{ ...F ...F } fragment F on Query { ${one} }`, {}, token), "RESPONSE_TOO_LARGE");
    expect(await app.graphql(`{ ${one} }`, {}, token)).toMatchObject({ status: 200, body: { data: { documents: { nodes: expect.any(Array) } } } });
    // Lists of documents without their content are fine at any page size.
    const list = await app.graphql("{ documents(first: 100) { nodes { title contentLength excerpt(maxChars: 100) } } }", {}, token);
    expect(list.status).toBe(200);
    expect(list.body.errors).toBeUndefined();
  });

  test("over graphql-ws too", async () => {
    // Refused where grafast executes, so graphql-ws sends it as the operation's result: errors and no data.
    const answer = await overWebSocket(app, { query: "{ documents(first: 50) { nodes { content } } }" });
    expect(answer).toEqual({ type: "next", payload: { errors: [expect.objectContaining({ extensions: { code: "RESPONSE_TOO_LARGE" } })] } });
  });

  test("a refused mutation changes nothing", async () => {
    const title = `large-${randomSuffix()}`;
    const mutation = `mutation { ${creation(title)} { document { org { documentsByOrgId { nodes { content } } } } } }`;
    expectRefused(await asMember(mutation), "RESPONSE_TOO_LARGE");
    expect(await documentsTitled(title)).toBe(0);
  });

  test("the estimate follows nesting through connections, edges, fragments and interfaces", () => {
    const schema = buildSchema(`
      type Query { doc: Doc, docs(first: Int, last: Int): DocConnection, things: [Doc] }
      type DocConnection { nodes: [Doc], edges: [DocEdge] }
      type DocEdge { node: Doc }
      type Doc { title: String, content: String, children(first: Int): DocConnection }
    `);
    const heavy = new Map([["Doc.content", 1000]]);
    const estimate = (source: string, variables: Record<string, unknown> = {}) =>
      estimateResponseBytes(schema, parse(source), undefined, variables, { heavy, maxPageSize: 100 });
    expect(estimate("{ doc { title content } }")).toBe(1000);
    expect(estimate("{ docs(first: 3) { nodes { content } edges { node { content } } } }")).toBe(6000);
    expect(estimate("{ docs(first: 3, last: 2) { nodes { content } } }")).toBe(2000);
    expect(estimate("{ docs(first: 3) { nodes { children(first: 4) { nodes { content } } } } }")).toBe(12_000);
    expect(estimate("query ($n: Int = 7) { docs(first: $n) { nodes { content } } }")).toBe(7000);
    expect(estimate("query ($n: Int = 7) { docs(first: $n) { nodes { content } } }", { n: 2 })).toBe(2000);
    expect(estimate("{ docs { nodes { title } } }")).toBe(0);
    expect(estimate("{ docs { nodes { content } } }")).toBe(Number.POSITIVE_INFINITY);
    expect(estimate("{ things { content } }")).toBe(100_000);
    expect(estimate("{ a: doc { ...C } b: doc { ... on Doc { content } } } fragment C on Doc { content }")).toBe(2000);
  });

  test("the answer itself is measured before it is serialized, without building it, however deep", () => {
    expect(exceedsJsonLength({ a: "x".repeat(100) }, 1000)).toBe(false);
    expect(exceedsJsonLength({ a: ["x".repeat(600), "y".repeat(600)] }, 1000)).toBe(true);
    let deep: unknown = "leaf";
    for (let i = 0; i < 100_000; i++) deep = { d: deep };
    expect(exceedsJsonLength(deep, 10_000_000)).toBe(false);
  });

  test("withoutSuggestionsRule keeps the error and drops the guess", () => {
    const schema = buildSchema("type Query { document: Int }");
    const errors = validate(schema, parse("{ documnt }"), specifiedRules.map(withoutSuggestionsRule));
    expect(errors.map((e) => e.message)).toEqual(['Cannot query field "documnt" on type "Query".']);
  });
});
