// Errors reach GraphQL clients only through lib/errors.ts: Quire's custom SQLSTATEs with their own message, a few
// standard ones with a fixed message, everything else masked as INTERNAL with an id and no detail.
import { customSqlStates, standardSqlStates } from "../../lib/errors.ts";
import { createTestDatabase, query, roles, type TestDatabase } from "../support/database.ts";
import { startTestServer, type TestServer } from "../support/server.ts";

let db: TestDatabase;
let app: TestServer;
beforeAll(async () => {
  db = await createTestDatabase();
  // A function that raises whatever it is asked to, in this file's own database only.
  await query(
    db.name,
    `create function app_public.test_raise(sqlstate text, message text) returns int
       language plpgsql stable as $$ begin raise exception using errcode = sqlstate, message = message; end $$`,
  );
  await query(db.name, `grant execute on function app_public.test_raise(text, text) to ${roles.anonymous}`);
  app = await startTestServer(db.config);
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});

const raise = (sqlstate: string, message: string) =>
  app.graphql("query ($s: String!, $m: String!) { testRaise(sqlstate: $s, message: $m) }", { s: sqlstate, m: message });

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
    const { status, body } = await app.graphql("{ noSuchField }");
    expect(status).toBe(400);
    expect(body.data).toBeUndefined();
    expect(body.errors![0]!.message).toMatch(/Cannot query field "noSuchField"/);
    expect(body.errors![0]!.extensions).toEqual({ code: "BAD_REQUEST" });
  });

  test("a document that does not parse is a 400 with BAD_REQUEST", async () => {
    const { status, body } = await app.graphql("{ unclosed");
    expect(status).toBe(400);
    expect(body.errors![0]!.extensions).toEqual({ code: "BAD_REQUEST" });
  });

  test("a body that is not JSON is refused with a 4xx", async () => {
    const response = await fetch(`${app.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });

  test("a body over the size limit is refused with 413", async () => {
    const big = JSON.stringify({ query: `{ __typename } #${"x".repeat(2 * db.config.documents.maxBytes + 100_000)}` });
    const response = await fetch(`${app.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: big });
    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({ errors: [{ message: "The request body is too large.", extensions: { code: "TOO_LARGE" } }] });
  });
});
