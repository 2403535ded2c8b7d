// Identity providers for single sign-on tests, on loopback:
// - startIdentityProvider: a real OpenID Connect provider (the oidc-provider package, certified by the OpenID
//   Foundation) with one confidential client, whose sign-in page signs in whichever account the test chose;
// - startHostileProvider: a server that speaks the same protocol but mints the ID token the test asks for (another
//   issuer, another audience, an expired one), signed with its own published key, as a compromised or confused
//   provider would.
// followSignIn plays the browser: from startSso's URL through the provider back to Quire's callback.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import Provider, { type KoaContextWithOIDC } from "oidc-provider";

/** The public origin tests configure Quire with: the redirect URI registered at the providers. */
export const quirePublicUrl = "http://quire.test";
export const callbackUrl = `${quirePublicUrl}/auth/sso/callback`;

export interface Account {
  readonly sub: string;
  readonly email?: string;
  readonly emailVerified?: boolean;
  readonly name?: string;
}

export interface IdentityProvider {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** The account the next sign-in page signs in. */
  signInAs(account: Account): void;
  close(): Promise<void>;
}

const listen = (server: Server) =>
  new Promise<string>((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
const closeServer = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

/** oidc-provider's storage, in memory: each provider a test starts keeps its own (the package's default warns). */
function memoryAdapter() {
  const store = new Map<string, Record<string, unknown>>();
  return class MemoryAdapter {
    readonly #name: string;
    constructor(name: string) {
      this.#name = name;
    }
    #key = (id: string) => `${this.#name}:${id}`;
    async upsert(id: string, payload: Record<string, unknown>) {
      store.set(this.#key(id), payload);
    }
    async find(id: string) {
      return store.get(this.#key(id));
    }
    async findByUid(uid: string) {
      return [...store.entries()].find(([k, v]) => k.startsWith(`${this.#name}:`) && v.uid === uid)?.[1];
    }
    async findByUserCode(userCode: string) {
      return [...store.entries()].find(([k, v]) => k.startsWith(`${this.#name}:`) && v.userCode === userCode)?.[1];
    }
    async consume(id: string) {
      const payload = store.get(this.#key(id));
      if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      store.delete(this.#key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [k, v] of store) if (v.grantId === grantId) store.delete(k);
    }
  };
}

export async function startIdentityProvider(): Promise<IdentityProvider> {
  const server = createServer();
  const issuer = await listen(server);
  const clientId = "quire-test";
  const clientSecret = "a-client-secret-of-the-test-provider";
  const accounts = new Map<string, Account>();
  let next: Account = { sub: "nobody" };
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  const provider = new Provider(issuer, {
    adapter: memoryAdapter(),
    jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: "test", alg: "RS256", use: "sig" }] },
    clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: [callbackUrl], token_endpoint_auth_method: "client_secret_post" }],
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
    findAccount: (_ctx: KoaContextWithOIDC, sub: string) => {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        claims: () => ({ sub, email: account.email, email_verified: account.emailVerified, name: account.name }),
      };
    },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx: KoaContextWithOIDC, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    cookies: { keys: ["test-cookie-key-of-the-test-provider"] },
    ttl: { Interaction: 600, Session: 3600, Grant: 3600, AccessToken: 600, AuthorizationCode: 60, IdToken: 600 },
  });
  const callback = provider.callback();
  server.on("request", (req, res) => {
    if (!req.url?.startsWith("/interaction/")) return void callback(req, res);
    // The sign-in page: signs in the chosen account and consents to what the client asked for.
    void (async () => {
      const details = await provider.interactionDetails(req, res);
      const account = next;
      accounts.set(account.sub, account);
      const grant = new provider.Grant({ accountId: account.sub, clientId: String(details.params.client_id) });
      grant.addOIDCScope(String(details.params.scope));
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { login: { accountId: account.sub }, consent: { grantId } }, { mergeWithLastSubmission: false });
    })().catch((error: unknown) => {
      res.statusCode = 500;
      res.end(String(error));
    });
  });
  return {
    issuer,
    clientId,
    clientSecret,
    signInAs(account) {
      next = account;
    },
    close: () => closeServer(server),
  };
}

export interface HostileProvider {
  readonly issuer: string;
  /** The claims of the next ID token (over iss = this issuer, aud = the client, a fresh iat/exp and the nonce asked). */
  mint(claims: Record<string, unknown>): void;
  close(): Promise<void>;
}

/** A provider whose discovery, JWKS and token endpoint are genuine, but whose ID token says what the test wants. */
export async function startHostileProvider(clientId: string): Promise<HostileProvider> {
  const server = createServer();
  const issuer = await listen(server);
  const { publicKey, privateKey } = await generateKeyPair("RS256");
  const jwk = { ...(await exportJWK(publicKey)), kid: "hostile", alg: "RS256", use: "sig" };
  let extra: Record<string, unknown> = {};
  const nonces = new Map<string, string>(); // code → nonce of its authorization request
  server.on("request", (req, res) => {
    const url = new URL(req.url ?? "/", issuer);
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === "/.well-known/openid-configuration") {
      return json(200, {
        issuer,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ["code"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256"],
        code_challenge_methods_supported: ["S256"],
      });
    }
    if (url.pathname === "/jwks") return json(200, { keys: [jwk] });
    if (url.pathname === "/auth") {
      // Straight back with a code, remembering the nonce to put in the ID token.
      const code = `code-${nonces.size}`;
      nonces.set(code, url.searchParams.get("nonce") ?? "");
      const back = new URL(url.searchParams.get("redirect_uri")!);
      back.searchParams.set("code", code);
      back.searchParams.set("state", url.searchParams.get("state") ?? "");
      res.writeHead(303, { location: back.href });
      return void res.end();
    }
    if (url.pathname === "/token" && req.method === "POST") {
      let body = "";
      req.on("data", (chunk: Buffer) => (body += chunk.toString()));
      req.on("end", () => {
        const code = new URLSearchParams(body).get("code") ?? "";
        const now = Math.floor(Date.now() / 1000);
        void new SignJWT({ sub: "hostile-subject", email: "mallory@acme.example", email_verified: true, nonce: nonces.get(code), ...extra })
          .setProtectedHeader({ alg: "RS256", kid: "hostile" })
          .setIssuer(typeof extra.iss === "string" ? extra.iss : issuer)
          .setAudience(typeof extra.aud === "string" ? extra.aud : clientId)
          .setIssuedAt(typeof extra.iat === "number" ? extra.iat : now)
          .setExpirationTime(typeof extra.exp === "number" ? extra.exp : now + 300)
          .sign(privateKey)
          .then((idToken) => json(200, { access_token: "opaque", token_type: "Bearer", expires_in: 300, id_token: idToken }));
      });
      return;
    }
    json(404, { error: "not_found" });
  });
  return {
    issuer,
    mint(claims) {
      extra = claims;
    },
    close: () => closeServer(server),
  };
}

/** Cookies a browser would keep, per origin (enough for one provider's sign-in). */
class CookieJar {
  readonly #cookies = new Map<string, string>();
  store(response: Response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const eq = pair!.indexOf("=");
      this.#cookies.set(pair!.slice(0, eq).trim(), pair!.slice(eq + 1).trim());
    }
  }
  header = () => [...this.#cookies].map(([k, v]) => `${k}=${v}`).join("; ");
}

/**
 * Plays the browser from startSso's authorization URL until the provider redirects to Quire's callback, and returns
 * that callback URL (on quirePublicUrl; the test sends it to the real server, and may first tamper with it).
 */
export async function followToCallback(authorizationUrl: string): Promise<URL> {
  const jar = new CookieJar();
  let url = authorizationUrl;
  for (let hop = 0; hop < 10; hop += 1) {
    if (url.startsWith(callbackUrl)) return new URL(url);
    const response = await fetch(url, { redirect: "manual", headers: { cookie: jar.header() } });
    jar.store(response);
    const location = response.headers.get("location");
    if (!location) throw new Error(`the provider stopped at ${response.status}: ${(await response.text()).slice(0, 300)}`);
    url = new URL(location, url).href;
  }
  throw new Error("too many redirects");
}
