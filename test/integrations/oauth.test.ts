// The OAuth helpers: PKCE against RFC 7636's own example, random state and verifiers, Basic credentials, reading a
// token endpoint's answer, and what token endpoint errors mean.
import { IntegrationError } from "../../lib/integrations/errors.ts";
import { basicAuthorization, codeChallenge, codeVerifier, state, tokenEndpointMeaning, tokenSetFrom } from "../../lib/integrations/oauth.ts";

test("PKCE: the S256 challenge of RFC 7636 Appendix B's verifier is the RFC's", () => {
  expect(codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
  expect(() => codeChallenge("too-short")).toThrow(RangeError);
  expect(() => codeChallenge(`${"a".repeat(43)} `)).toThrow(RangeError);
});

test("verifiers and states are 43 base64url characters (32 random bytes), never repeated", () => {
  const values = Array.from({ length: 50 }, () => [codeVerifier(), state()]).flat();
  for (const value of values) expect(value).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(new Set(values).size).toBe(values.length);
  expect(codeChallenge(codeVerifier())).toMatch(/^[A-Za-z0-9_-]{43}$/);
});

test("Basic credentials are base64 of id:secret", () => {
  expect(basicAuthorization("id", "sécret")).toBe(`Basic ${Buffer.from("id:sécret").toString("base64")}`);
});

test("a token answer becomes a TokenSet; without an access token it is BAD_RESPONSE", () => {
  const now = new Date("2030-01-01T00:00:00Z");
  expect(tokenSetFrom({ access_token: "a", refresh_token: "r", expires_in: 3600, scope: "read:page:confluence  offline_access" }, "Auth", now)).toEqual({
    accessToken: "a",
    refreshToken: "r",
    expiresAt: new Date("2030-01-01T01:00:00Z"),
    scopes: ["read:page:confluence", "offline_access"],
  });
  expect(tokenSetFrom({ access_token: "a", expires_in: "soon" }, "Auth", now)).toEqual({ accessToken: "a", refreshToken: null, expiresAt: null, scopes: [] });
  expect(() => tokenSetFrom({ token: "a" }, "Auth")).toThrow(IntegrationError);
  expect(() => tokenSetFrom(null, "Auth")).toThrow("The Auth answered without an access token.");
});

test("token endpoint errors: a dead grant needs re-authorization, refused client credentials do not", () => {
  const grant = { code: "INVALID_GRANT", what: "refused the authorization grant; the integration must be connected again" };
  const credentials = { code: "REJECTED", what: "refused the client credentials" };
  expect(tokenEndpointMeaning({ status: 400, body: { error: "invalid_grant" } })).toEqual(grant);
  expect(tokenEndpointMeaning({ status: 403, body: { error: "unauthorized_client", error_description: "refresh_token is invalid" } })).toEqual(grant);
  expect(tokenEndpointMeaning({ status: 401, body: { error: "access_denied", error_description: "Unauthorized" } })).toEqual(credentials);
  expect(tokenEndpointMeaning({ status: 400, body: { error: "invalid_client" } })).toEqual(credentials);
  expect(tokenEndpointMeaning({ status: 400, body: { error: "unsupported_grant_type" } })).toBeUndefined();
  expect(tokenEndpointMeaning({ status: 429, body: { error: "invalid_grant" } })).toBeUndefined();
  expect(tokenEndpointMeaning({ status: 503, body: undefined })).toBeUndefined();
});
