// A request's bearer token is verified exactly once, whichever route it takes: the GraphQL endpoint and the upload
// route verify it in authenticateHttp, before the rate limiter, and everything after (limiter, upload handler,
// GraphQL context) reads that one result. Counted by wrapping the server's TokenService.
import { createTokenService, type TokenService } from "../../lib/tokens.ts";
import { createTestDatabase, query, testConfig, type TestDatabase } from "../support/database.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let app: TestServer;
let t: Tenant;
let verifications = 0;

beforeAll(async () => {
  db = await createTestDatabase();
  const config = testConfig(db.name);
  const real = createTokenService(config);
  const counting: TokenService = {
    ...real,
    verifyAccessToken(token) {
      verifications++;
      return real.verifyAccessToken(token);
    },
  };
  app = await startTestServer(config, undefined, { tokens: counting });
  t = await createTenant(db, "Bearer Once");
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});
beforeEach(() => {
  verifications = 0;
});

async function upload(token: string | null, text = "Once, and only once.") {
  const form = new FormData();
  form.append("file", new Blob([text], { type: "text/plain" }), "once.txt");
  const response = await fetch(`${app.url}/api/v1/documents/upload`, {
    method: "POST",
    headers: token ? { authorization: `Bearer ${token}` } : {},
    body: form,
  });
  return { status: response.status, body: (await response.json()) as { document?: { id: string }; error?: { code: string; reason?: string } } };
}

const uploaded = async () =>
  (await query<{ n: number }>(db.name, "select count(*)::int as n from app_public.documents where org_id = $1 and source = 'upload'", [t.orgId], "root"))[0]!.n;

describe("the bearer token is verified once per request", () => {
  test("a GraphQL query: one verification, and the query runs as the caller", async () => {
    const { status, body } = await app.graphql("{ currentUser { email } }", {}, t.members.member.accessToken);
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
    expect((body.data!["currentUser"] as { email: string }).email).toMatch(/^member@/);
    expect(verifications).toBe(1);
  });

  test("an upload: one verification for the limiter and the handler together, and the document is stored", async () => {
    const before = await uploaded();
    const { status, body } = await upload(t.members.member.accessToken);
    expect(status).toBe(201);
    expect(body.document?.id).toEqual(expect.any(String));
    expect(verifications).toBe(1);
    expect(await uploaded()).toBe(before + 1);
  });

  test("an upload with a forged token: one verification, 401 UNAUTHENTICATED in the REST shape, nothing stored", async () => {
    const before = await uploaded();
    const forged = `${t.members.member.accessToken.slice(0, -4)}AAAA`;
    const { status, body } = await upload(forged);
    expect(status).toBe(401);
    expect(body.error).toMatchObject({ code: "UNAUTHENTICATED", reason: "TOKEN_INVALID" });
    expect(verifications).toBe(1);
    expect(await uploaded()).toBe(before);
  });

  test("a GraphQL request with a forged token: one verification, 401 UNAUTHENTICATED in the GraphQL shape", async () => {
    const forged = `${t.members.member.accessToken.slice(0, -4)}AAAA`;
    const { status, body } = await app.graphql("{ currentUser { email } }", {}, forged);
    expect(status).toBe(401);
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: "UNAUTHENTICATED", reason: "TOKEN_INVALID" });
    expect(verifications).toBe(1);
  });

  test("an upload without a token: nothing to verify, 401 UNAUTHENTICATED", async () => {
    const { status, body } = await upload(null);
    expect(status).toBe(401);
    expect(body.error?.code).toBe("UNAUTHENTICATED");
    expect(verifications).toBe(0);
  });
});
