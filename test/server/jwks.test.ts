// Asymmetric access tokens: with JWT_PRIVATE_KEY the server signs RS256 or ES256 with a key id, publishes the
// public key as a JWKS that verifies its tokens, and refuses tokens of any other algorithm or key.
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import jwt from "jsonwebtoken";
import { ConfigError } from "../../lib/config.ts";
import { createTestDatabase, testConfig, type TestDatabase } from "../support/database.ts";
import { startTestServer } from "../support/server.ts";
import { createTenant, fixturePassword } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();

test.each([
  ["RS256", rsa, "RSA"],
  ["ES256", ec, "EC"],
])("%s: tokens carry the key id, the JWKS verifies them, other algorithms and keys are refused", async (algorithm, pem, kty) => {
  const config = testConfig(db.name, { JWT_PRIVATE_KEY: pem.replaceAll("\n", "\\n"), BCRYPT_COST: "10" });
  const app = await startTestServer(config);
  try {
    const t = await createTenant(db, `Keys ${algorithm}`);
    const loginResponse = await fetch(`${app.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: `mutation { login(input: { email: "${t.members.admin.email}", password: "${fixturePassword}" }) { accessToken } }` }),
    });
    const token = ((await loginResponse.json()) as { data: { login: { accessToken: string } } }).data.login.accessToken;
    const { header } = jwt.decode(token, { complete: true })!;
    expect(header).toMatchObject({ alg: algorithm, kid: config.jwt.signingKey!.keyId });

    const jwksResponse = await fetch(`${app.url}/.well-known/jwks.json`);
    const { keys } = (await jwksResponse.json()) as { keys: Array<Record<string, string>> };
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ kty, kid: header.kid, alg: algorithm, use: "sig" });
    expect(keys[0]).not.toHaveProperty("d"); // never the private part
    const publicKey = createPublicKey({ key: keys[0]!, format: "jwk" });
    expect(jwt.verify(token, publicKey, { algorithms: [algorithm as jwt.Algorithm] })).toMatchObject({ sub: t.members.admin.userId });

    const ask = (bearer: string) =>
      fetch(`${app.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
        body: JSON.stringify({ query: "{ currentUser { email } }" }),
      });
    expect((await ask(token)).status).toBe(200);
    const claims = jwt.decode(token) as Record<string, unknown>;
    // The HS256 algorithm-confusion forgery: signed with the shared secret (or the public key as a secret).
    expect((await ask(jwt.sign(claims, config.jwt.secret, { algorithm: "HS256", keyid: header.kid }))).status).toBe(401);
    // Same algorithm, another key claiming the same kid.
    const other = algorithm === "RS256" ? generateKeyPairSync("rsa", { modulusLength: 2048 }) : generateKeyPairSync("ec", { namedCurve: "P-256" });
    expect((await ask(jwt.sign(claims, other.privateKey, { algorithm: algorithm as jwt.Algorithm, keyid: header.kid }))).status).toBe(401);
  } finally {
    await app.close();
  }
});

test("with HS256 the JWKS is empty", async () => {
  const app = await startTestServer(db.config);
  try {
    expect(await (await fetch(`${app.url}/.well-known/jwks.json`)).json()).toEqual({ keys: [] });
  } finally {
    await app.close();
  }
});

test("a key that is not RSA ≥ 2048 or P-256 is refused at start-up, naming the variable", () => {
  const small = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const problems = (env: Record<string, string>) => {
    try {
      testConfig(db.name, env);
      return [];
    } catch (error) {
      return (error as ConfigError).problems;
    }
  };
  expect(problems({ JWT_PRIVATE_KEY: small })).toEqual(["JWT_PRIVATE_KEY must be an RSA key of at least 2048 bits or a P-256 EC key"]);
  expect(problems({ JWT_PRIVATE_KEY: "not a key" })).toEqual(["JWT_PRIVATE_KEY must be a PEM private key"]);
  expect(problems({ JWT_KEY_ID: "k1" })).toEqual(["JWT_KEY_ID only applies with JWT_PRIVATE_KEY"]);
});
