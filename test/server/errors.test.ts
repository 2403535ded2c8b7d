// Errors reach GraphQL clients only through lib/errors.ts: Quire's custom SQLSTATEs with their own message, a few
// standard ones with a fixed message, everything else masked as INTERNAL with an id and no detail.
import { constraintField, customSqlStates, standardSqlStates } from "../../lib/errors.ts";
import { query, roles } from "../support/database.ts";
import { useQuireServer } from "../support/server.ts";
import { createTenant } from "../support/tenants.ts";

const fx = useQuireServer({
  setup: async (db) => {
    // A function that raises whatever it is asked to, in this file's own database only.
    await query(
      db.name,
      `create function app_public.test_raise(sqlstate text, message text) returns int
         language plpgsql stable as $$ begin raise exception using errcode = sqlstate, message = message; end $$`,
    );
    await query(db.name, `grant execute on function app_public.test_raise(text, text) to ${roles.anonymous}`);
  },
});

const raise = (sqlstate: string, message: string) =>
  fx.app.graphql("query ($s: String!, $m: String!) { testRaise(sqlstate: $s, message: $m) }", { s: sqlstate, m: message });

describe("PostgreSQL errors in GraphQL responses", () => {
  test.each(Object.entries(customSqlStates))("custom SQLSTATE %s reaches the client as %s with its message", async (sqlstate, code) => {
    const { body } = await raise(sqlstate, `Message written for users (${sqlstate}).`);
    expect(body.errors).toHaveLength(1);
    expect(body.errors![0]).toMatchObject({ message: `Message written for users (${sqlstate}).`, extensions: { code } });
  });

  test("a standard SQLSTATE gets its code and a fixed message, never PostgreSQL's text", async () => {
    const { body } = await raise("23505", 'duplicate key value violates unique constraint "secret_constraint_name"');
    expect(body.errors![0]).toMatchObject({ message: standardSqlStates["23505"]!.message, extensions: { code: "CONFLICT" } });
    expect(JSON.stringify(body)).not.toContain("secret_constraint_name");
  });

  test("any other error is masked as INTERNAL with an id, and its message is not disclosed", async () => {
    const { body } = await raise("XX000", "internal detail: password=hunter2");
    expect(body.errors).toHaveLength(1);
    const [error] = body.errors!;
    expect(error!.message).toBe("An internal error occurred.");
    expect(error!.extensions).toEqual({ code: "INTERNAL", errorId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect(JSON.stringify(body)).not.toContain("hunter2");
  });
});

describe("malformed requests", () => {
  test("an invalid GraphQL document is a 400 naming the problem, without running anything", async () => {
    const { status, body } = await fx.app.graphql("{ noSuchField }");
    expect(status).toBe(400);
    expect(body.data).toBeUndefined();
    expect(body.errors![0]!.message).toMatch(/Cannot query field "noSuchField"/);
    expect(body.errors![0]!.extensions).toEqual({ code: "BAD_REQUEST" });
  });

  test("a document that does not parse is a 400 with BAD_REQUEST", async () => {
    const { status, body } = await fx.app.graphql("{ unclosed");
    expect(status).toBe(400);
    expect(body.errors![0]!.extensions).toEqual({ code: "BAD_REQUEST" });
  });

  test("a body that is not JSON is refused with a 4xx", async () => {
    const response = await fetch(`${fx.app.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });

  test("a body over the size limit is refused with 413", async () => {
    const big = JSON.stringify({ query: `{ __typename } #${"x".repeat(2 * fx.db.config.documents.maxBytes + 100_000)}` });
    const response = await fetch(`${fx.app.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: big });
    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({ errors: [{ message: "The request body is too large.", extensions: { code: "TOO_LARGE" } }] });
  });
});

describe("every refusal has a code", () => {
  test.each([
    ["GET", {}, undefined],
    ["PUT", { "content-type": "application/json" }, '{"query":"{ __typename }"}'],
    ["DELETE", {}, undefined],
  ])("%s /graphql is 405 METHOD_NOT_ALLOWED with Allow: POST", async (method, headers, body) => {
    const response = await fetch(`${fx.app.url}/graphql`, { method, headers, body });
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("POST");
    expect(await response.json()).toEqual({ errors: [{ message: expect.any(String), extensions: { code: "METHOD_NOT_ALLOWED" } }] });
  });

  test.each(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])("a %s body is 415 UNSUPPORTED_MEDIA_TYPE", async (type) => {
    const response = await fetch(`${fx.app.url}/graphql`, { method: "POST", headers: { "content-type": type }, body: '{"query":"{ __typename }"}' });
    expect(response.status).toBe(415);
    expect(await response.json()).toEqual({ errors: [{ message: expect.any(String), extensions: { code: "UNSUPPORTED_MEDIA_TYPE" } }] });
  });

  test("a method the upload route does not answer is 405 in the REST shape", async () => {
    const response = await fetch(`${fx.app.url}/api/v1/documents/upload`);
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("POST");
    expect(await response.json()).toEqual({ error: { code: "METHOD_NOT_ALLOWED", message: expect.any(String) } });
  });
});

describe("data exceptions are the client's", () => {
  // Every SQLSTATE of class 22 is about a value the client sent: BAD_INPUT with a fixed message, never INTERNAL.
  test.each([
    ["22008", "A date or time is out of range."],
    ["22009", "A time zone offset is out of range."],
    ["2201W", "A page size (first, last) must not be negative."],
    ["2201X", "An offset must not be negative."],
    ["22012", "A value is not valid."], // division by zero
    ["2200H", "A value is not valid."], // sequence generator limit exceeded
  ])("SQLSTATE %s is BAD_INPUT: %s", async (sqlstate, message) => {
    const { body } = await raise(sqlstate, "detail the client must not see: 1234");
    expect(body.errors).toEqual([expect.objectContaining({ message, extensions: { code: "BAD_INPUT" } })]);
  });

  test("a Datetime argument PostgreSQL cannot take (offset +99:99, year -4713) is BAD_INPUT", async () => {
    const { members } = await createTenant(fx.db, "Dates");
    for (const value of ["2020-01-01T00:00:00+99:99", "-4713-01-01T00:00:00Z", "294277-01-01T00:00:00Z"]) {
      const { body } = await fx.app.graphql(
        "query ($at: Datetime) { documents(condition: { createdAt: $at }) { totalCount } }",
        { at: value },
        members.member.accessToken,
      );
      expect(body.errors).toEqual([expect.objectContaining({ extensions: { code: "BAD_INPUT" } })]);
    }
  });

  test("an invalid or foreign cursor is BAD_INPUT", async () => {
    const { members } = await createTenant(fx.db, "Cursors");
    for (const after of ["garbage", Buffer.from('["natural",1]').toString("base64")]) {
      const { body } = await fx.app.graphql("query ($after: Cursor) { documents(after: $after) { totalCount } }", { after }, members.member.accessToken);
      expect(body.errors).toEqual([expect.objectContaining({ extensions: { code: "BAD_INPUT" } })]);
    }
  });
});

describe("refused values name their field", () => {
  test.each([
    ["title", '{ title: "" }', "title"],
    ["externalUrl", '{ title: "x", externalUrl: "ftp://example.com" }', "externalUrl"],
    ["metadata", '{ title: "x", metadata: "[1]" }', "metadata"],
  ])("a %s the database refuses is BAD_INPUT naming it", async (_name, document, field) => {
    const { members } = await createTenant(fx.db, `Fields ${field}`);
    const { body } = await fx.app.graphql(
      `mutation { createDocument(input: { document: ${document} }) { document { rowId } } }`,
      {},
      members.member.accessToken,
    );
    expect(body.errors).toEqual([
      expect.objectContaining({
        message: `${field} is not allowed: it is empty, too long, or not in the accepted form.`,
        extensions: { code: "BAD_INPUT", field },
      }),
    ]);
  });

  test("metadata is bounded (64 KiB of JSON), so a list of documents cannot carry megabytes of it", async () => {
    const { members } = await createTenant(fx.db, "Metadata");
    const { body } = await fx.app.graphql(
      'mutation ($m: JSON!) { createDocument(input: { document: { title: "x", metadata: $m } }) { document { rowId } } }',
      { m: { blob: "z".repeat(70_000) } },
      members.member.accessToken,
    );
    expect(body.errors).toEqual([expect.objectContaining({ extensions: { code: "BAD_INPUT", field: "metadata" } })]);
  });

  test("constraintField reads PostgreSQL's own constraint names and nothing else", () => {
    expect(constraintField({ table: "documents", constraint: "documents_title_check" })).toBe("title");
    expect(constraintField({ table: "documents", constraint: "documents_metadata_check1" })).toBe("metadata");
    expect(constraintField({ table: "organizations", constraint: "organizations_settings_valid" })).toBe("settings");
    expect(constraintField({ table: "summaries", constraint: "summaries_check" })).toBeNull();
    expect(constraintField({ table: "documents", column: "title" })).toBe("title");
    expect(constraintField({ table: "documents", constraint: 'documents_x"; drop' })).toBeNull();
  });
});
