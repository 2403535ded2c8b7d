// Single sign-on through an organization's OpenID Connect provider (Okta, Entra ID, Google Workspace, Keycloak…).
//
// openid-client does the protocol: discovery, the authorization-code flow with PKCE (S256), state and nonce, and the
// ID token's checks (signature against the provider's JWKS, issuer, audience, expiry, nonce). The database keeps
// the rest: the provider's settings and sealed client secret, each attempt's state digest, nonce and verifier (ten
// minutes, spent when the provider sends the browser back), who an (issuer, subject) is, and the one-minute handoff
// the browser trades for tokens with completeSso. The browser never carries tokens in a URL.
//
//   startSso ─► provider ─► GET /auth/sso/callback ─► APP_URL/sso/complete#code=… ─► completeSso(code) ─► tokens
import { createHash } from "node:crypto";
import type { RequestHandler } from "express";
import * as oidc from "openid-client";
import type pg from "pg";
import type { PgClient } from "postgraphile/@dataplan/pg";
import { SafeError } from "postgraphile/grafast";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { oneTimeToken } from "../lib/one-time-token.ts";
import { publicFetch } from "../lib/public-fetch.ts";
import { QuireError } from "../lib/quire-error.ts";
import { open, seal, sealContexts, type Sealed, type SealingKeys } from "../lib/sealing.ts";

export const ssoCallbackPath = "/auth/sso/callback";

/** Why a single sign-on failed, as the frontend receives it in `error=` on APP_URL/sso/complete. */
export type SsoCallbackError = "INVALID_STATE" | "ACCESS_DENIED" | "PROVIDER_ERROR" | "FORBIDDEN" | "ACCOUNT_EXISTS" | "NOT_CONFIGURED" | "INTERNAL";

/** How long one request to an identity provider may take, in seconds (discovery, JWKS, the token request). */
const providerTimeoutSeconds = 10;
/** How long a provider's discovery document is reused before it is fetched again. */
const discoveryTtlMs = 10 * 60_000;
/** At most this many providers' configurations are kept (the oldest use is forgotten first). */
const maxCachedProviders = 1000;
const scope = "openid email profile";

const sealContext = sealContexts.oidc;

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest();

interface ProviderRow {
  org_id: string;
  issuer: string;
  client_id: string;
  key_id: string;
  secret_nonce: Buffer;
  secret_ciphertext: Buffer;
}

export interface SsoProviderInput {
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly allowedDomains: readonly string[];
  readonly defaultRole: string;
}

export interface Sso {
  /**
   * The provider URL to send the browser to, for the organization named by slug or by the email's domain.
   * `linkUserId`: the signed-in person starting it, whom a new subject is linked to (their account proved by their
   * session); null for an anonymous start.
   */
  start(input: { organizationSlug?: string | null; email?: string | null }, linkUserId: string | null): Promise<SsoStart>;
  /** GET /auth/sso/callback. */
  readonly callback: RequestHandler;
  /**
   * The provider's issuer as its discovery document states it (what its ID tokens carry); BAD_INPUT for a URL that
   * is not https (or http with SSO_ALLOW_HTTP), UPSTREAM_ERROR when it cannot be discovered.
   */
  discover(issuer: string): Promise<string>;
  /** Seals the client secret and stores the provider (issuer as discovered), in the caller's transaction (the database checks the role). */
  configure(client: PgClient, orgId: string, input: SsoProviderInput): Promise<string>;
}

/** Where to send the browser, and the binding the starting app keeps for completeSso (never put in a URL). */
export interface SsoStart {
  readonly authorizationUrl: string;
  readonly browserBinding: string;
}

export interface SsoOptions {
  readonly config: Config;
  /** Any pool on the authenticator: the anonymous steps use only the functions granted to it. */
  readonly pool: pg.Pool;
  readonly logger: Logger;
}

const unreachable = () =>
  new SafeError("The identity provider could not be reached or answered wrongly; try again later.", { code: "UPSTREAM_ERROR", reason: "UNAVAILABLE" });

export function createSso({ config, pool, logger }: SsoOptions): Sso {
  const redirectUri = `${config.integrations.publicUrl}${ssoCallbackPath}`;
  // Issuers are chosen by tenants' admins: every request to a provider goes through publicFetch (no private
  // addresses unless SSO_ALLOW_HTTP, at most 1 MiB, no redirects followed, a deadline).
  const fetchForProviders = publicFetch({ allowPrivate: config.auth.ssoAllowHttp, timeoutMs: providerTimeoutSeconds * 1000 });
  const discoveryOptions = (): oidc.DiscoveryRequestOptions => ({
    timeout: providerTimeoutSeconds,
    [oidc.customFetch]: fetchForProviders,
    execute: [
      (configuration: oidc.Configuration) => {
        configuration[oidc.customFetch] = fetchForProviders;
        configuration.timeout = providerTimeoutSeconds;
      },
      ...(config.auth.ssoAllowHttp ? [oidc.allowInsecureRequests] : []),
    ],
  });
  const configurations = new Map<string, { readonly at: number; readonly configuration: oidc.Configuration }>();

  const keysOrFail = (): SealingKeys => {
    const keys = config.integrations.sealingKeys;
    if (!keys) throw new QuireError("BADIN", "Single sign-on is not configured on this server (SEALING_KEYS is unset).");
    return keys;
  };

  /** The provider's configuration from its discovery document, cached per issuer, client and secret. */
  async function configurationFor(row: ProviderRow, keys: SealingKeys): Promise<oidc.Configuration> {
    const sealed: Sealed = { keyId: row.key_id, nonce: row.secret_nonce, ciphertext: row.secret_ciphertext };
    const secret = await open(keys, sealed, sealContext(row.org_id));
    const cacheKey = `${row.issuer}\n${row.client_id}\n${sha256(secret).toString("hex")}`;
    const cached = configurations.get(cacheKey);
    if (cached && Date.now() - cached.at < discoveryTtlMs) return cached.configuration;
    const configuration = await oidc.discovery(new URL(row.issuer), row.client_id, secret, oidc.ClientSecretPost(secret), discoveryOptions());
    configurations.delete(cacheKey);
    configurations.set(cacheKey, { at: Date.now(), configuration });
    if (configurations.size > maxCachedProviders) configurations.delete(configurations.keys().next().value!);
    return configuration;
  }

  /** APP_URL/sso/complete with the outcome in the fragment: never sent to a server, nor in a Referer. */
  const completeUrl = (outcome: Record<string, string>) => {
    const url = new URL("/sso/complete", `${config.mail.appUrl}/`);
    url.hash = new URLSearchParams(outcome).toString();
    return url.toString();
  };

  return {
    async start({ organizationSlug, email }, linkUserId) {
      const keys = keysOrFail();
      const slug = organizationSlug?.trim() || null;
      const domain = email?.trim().toLowerCase().split("@")[1] ?? null;
      if ((slug === null && domain === null) || (slug ?? domain ?? "").length > 320) {
        throw new QuireError("BADIN", "Name the organization (organizationSlug) or give your work email address (email).");
      }
      const { rows } = await pool.query<ProviderRow>("select * from app_private.sso_provider_for($1, $2)", [slug, slug === null ? domain : null]);
      const row = rows[0];
      if (!row) throw new QuireError("NTFND", "Single sign-on is not set up for this organization.");
      let configuration: oidc.Configuration;
      try {
        configuration = await configurationFor(row, keys);
      } catch (error) {
        logger.warn(
          { orgId: row.org_id, issuer: row.issuer, reason: (error as { code?: unknown }).code ?? (error as Error).name },
          "identity provider discovery failed",
        );
        throw unreachable();
      }
      const codeVerifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      // Binds the attempt to the app that started it: completeSso must present this (login CSRF, RFC 6749 10.12).
      const browserBinding = oneTimeToken();
      await pool.query("select app_private.save_sso_state($1, $2, $3, $4, $5, $6)", [
        row.org_id,
        sha256(state),
        nonce,
        codeVerifier,
        linkUserId,
        sha256(browserBinding),
      ]);
      const url = oidc.buildAuthorizationUrl(configuration, {
        redirect_uri: redirectUri,
        scope,
        response_type: "code",
        code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: "S256",
        state,
        nonce,
        ...(email && slug === null ? { login_hint: email.trim() } : {}),
      });
      return { authorizationUrl: url.href, browserBinding };
    },

    callback: async (req, res) => {
      const param = (name: string) => (typeof req.query[name] === "string" ? (req.query[name] as string) : null);
      const fail = (error: SsoCallbackError) => res.redirect(303, completeUrl({ error }));
      const state = param("state");
      const keys = config.integrations.sealingKeys;
      if (!keys) return fail("NOT_CONFIGURED");
      if (!state || state.length > 200) return fail("INVALID_STATE");
      let orgId: string | null = null;
      try {
        const { rows } = await pool.query<ProviderRow & { nonce: string; code_verifier: string; link_user_id: string | null; binding_hash: Buffer | null }>(
          "select * from app_private.take_sso_state($1)",
          [sha256(state)],
        );
        const attempt = rows[0];
        if (!attempt) return fail("INVALID_STATE");
        orgId = attempt.org_id;
        if (param("error")) return fail("ACCESS_DENIED");
        // The URL the provider redirected to, on our public origin (never the request's Host header).
        const current = new URL(redirectUri);
        for (const [k, v] of Object.entries(req.query)) if (typeof v === "string") current.searchParams.set(k, v);
        let claims: oidc.IDToken;
        let profile: Record<string, unknown>;
        try {
          const configuration = await configurationFor(attempt, keys);
          const tokens = await oidc.authorizationCodeGrant(configuration, current, {
            pkceCodeVerifier: attempt.code_verifier,
            expectedState: state,
            expectedNonce: attempt.nonce,
            idTokenExpected: true,
          });
          claims = tokens.claims()!;
          // Providers may leave the profile out of the ID token and answer it at the UserInfo endpoint, for the
          // same subject (checked by openid-client).
          profile =
            typeof claims.email === "string" || !configuration.serverMetadata().userinfo_endpoint
              ? claims
              : await oidc.fetchUserInfo(configuration, tokens.access_token, claims.sub);
        } catch (error) {
          const { code, name } = error as { code?: unknown; name?: unknown };
          logger.warn({ orgId, issuer: attempt.issuer, reason: code ?? name }, "single sign-on refused by its checks or the provider");
          return fail("PROVIDER_ERROR");
        }
        const handoff = oneTimeToken();
        await pool.query("select app_private.sso_sign_in($1, $2, $3, $4, $5, $6, $7, $8, $9)", [
          orgId,
          claims.iss,
          claims.sub,
          typeof profile.email === "string" ? profile.email : null,
          profile.email_verified === true,
          typeof profile.name === "string" ? profile.name : null,
          sha256(handoff),
          attempt.link_user_id,
          attempt.binding_hash,
        ]);
        return res.redirect(303, completeUrl({ code: handoff }));
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === "DNIED" || code === "NTFND") return fail("FORBIDDEN");
        if (code === "TAKEN") return fail("ACCOUNT_EXISTS");
        logger.error({ err: error, orgId }, "single sign-on callback failed");
        return fail("INTERNAL");
      }
    },

    async discover(issuer) {
      let url: URL;
      try {
        url = new URL(issuer.trim());
      } catch {
        throw new QuireError("BADIN", "issuer must be the provider's issuer URL.", { field: "issuer" });
      }
      if (url.protocol !== "https:" && !(config.auth.ssoAllowHttp && url.protocol === "http:")) {
        throw new QuireError("BADIN", "issuer must be an https URL.", { field: "issuer" });
      }
      if (url.href.length > 500 || url.search || url.hash || url.username || url.password) {
        throw new QuireError("BADIN", "issuer must be a plain URL of at most 500 characters.", { field: "issuer" });
      }
      try {
        const configuration = await oidc.discovery(url, "quire", undefined, oidc.None(), discoveryOptions());
        return configuration.serverMetadata().issuer;
      } catch (error) {
        logger.warn({ issuer: url.origin, reason: (error as { code?: unknown }).code ?? (error as Error).name }, "identity provider discovery failed");
        throw unreachable();
      }
    },

    async configure(client, orgId, input) {
      const keys = keysOrFail();
      if (input.clientSecret.length === 0 || input.clientSecret.length > 1000) {
        throw new QuireError("BADIN", "clientSecret must be between 1 and 1000 characters.", { field: "clientSecret" });
      }
      if (input.allowedDomains.length > 50) throw new QuireError("BADIN", "At most 50 allowedDomains.", { field: "allowedDomains" });
      const sealed = await seal(keys, input.clientSecret, sealContext(orgId));
      const { rows } = await client.query<{ id: string }>({
        text: "select id from app_hidden.configure_sso($1, $2, $3, $4, $5, $6, $7)",
        values: [input.issuer, input.clientId, input.allowedDomains, input.defaultRole, sealed.keyId, sealed.nonce, sealed.ciphertext],
      });
      return rows[0]!.id;
    },
  };
}
