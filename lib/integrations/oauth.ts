// OAuth 2.0 pieces both integrations share: the random `state` that ties a callback to the session that started
// it, PKCE (RFC 7636) verifiers and S256 challenges, the token set we store, and reading a token endpoint's answer.
import { createHash, randomBytes } from "node:crypto";
import { badResponse } from "./errors.ts";
import type { Classification, Failure } from "./http.ts";

/** What a successful code exchange or refresh yields, in the shape Quire stores. */
export interface TokenSet {
  readonly accessToken: string;
  /** Null when the service issued none (Notion integrations without refresh, Atlassian without offline_access). */
  readonly refreshToken: string | null;
  /** Null when the service did not say (Notion access tokens do not expire by time). */
  readonly expiresAt: Date | null;
  /** The granted scopes, when the service reports them (Atlassian does, Notion does not: then empty). */
  readonly scopes: readonly string[];
}

const base64url = (bytes: Buffer) => bytes.toString("base64url");

/** An unguessable `state` for one authorization: 32 random bytes, base64url (43 characters). */
export const state = (): string => base64url(randomBytes(32));

/** A PKCE code verifier: 32 random bytes, base64url, i.e. 43 characters of the unreserved set RFC 7636 allows. */
export const codeVerifier = (): string => base64url(randomBytes(32));

const verifierPattern = /^[A-Za-z0-9\-._~]{43,128}$/;

/** The S256 code challenge of `verifier`: base64url(SHA-256(verifier)). Throws RangeError for a malformed verifier. */
export function codeChallenge(verifier: string): string {
  if (!verifierPattern.test(verifier)) throw new RangeError("A PKCE code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~.");
  return base64url(createHash("sha256").update(verifier, "ascii").digest());
}

/** The HTTP Basic credentials header value for a client id and secret. */
export const basicAuthorization = (clientId: string, clientSecret: string) => `Basic ${Buffer.from(`${clientId}:${clientSecret}`, "utf8").toString("base64")}`;

/**
 * The token set in a token endpoint's JSON answer (RFC 6749 §5.1): access_token required; refresh_token, expires_in
 * (seconds, counted from `now`) and scope (space-separated) when present. Throws BAD_RESPONSE without an access token.
 */
export function tokenSetFrom(body: unknown, service: string, now: Date = new Date()): TokenSet {
  const answer = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const accessToken = answer.access_token;
  if (typeof accessToken !== "string" || !accessToken) throw badResponse(service, "an access token");
  const refreshToken = typeof answer.refresh_token === "string" && answer.refresh_token ? answer.refresh_token : null;
  const expiresIn = answer.expires_in;
  const expiresAt = typeof expiresIn === "number" && Number.isFinite(expiresIn) && expiresIn > 0 ? new Date(now.getTime() + expiresIn * 1000) : null;
  const scopes = typeof answer.scope === "string" ? answer.scope.split(/\s+/).filter(Boolean) : [];
  return { accessToken, refreshToken, expiresAt, scopes };
}

/**
 * What an error from a token endpoint means. `invalid_grant` (RFC 6749 §5.2: the code or refresh token is invalid,
 * expired, revoked or already used) means the user must authorize again; so does Atlassian's
 * `unauthorized_client` "refresh_token is invalid", which its endpoint answers for a rotated-out refresh token. A
 * 401, `invalid_client` or `access_denied` there means our client id or secret was refused: a configuration problem
 * that re-authorizing would not fix. Anything else keeps its status's usual meaning.
 */
export function tokenEndpointMeaning({ status, body }: Failure): Classification | undefined {
  if (status < 400 || status >= 500 || status === 429) return undefined;
  const answer = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const error = typeof answer.error === "string" ? answer.error : typeof answer.code === "string" ? answer.code : "";
  const description = typeof answer.error_description === "string" ? answer.error_description : "";
  if (error === "invalid_grant" || (error === "unauthorized_client" && /refresh.?token/i.test(description))) {
    return { code: "INVALID_GRANT", what: "refused the authorization grant; the integration must be connected again" };
  }
  if (status === 401 || error === "invalid_client" || error === "access_denied" || error === "unauthorized_client") {
    return { code: "REJECTED", what: "refused the client credentials" };
  }
  return undefined;
}
