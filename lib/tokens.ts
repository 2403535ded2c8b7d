// Access and refresh tokens.
// - Access token: a JWT, HS256 (or RS256/ES256 with JWT_PRIVATE_KEY) pinned on verify, issuer and audience checked. Its claims name the user, the
//   organization and the session; the database re-reads the session on every request (app_hidden.enter_context,
//   section Foundation of migrations/committed/000001-quire.sql), so the token alone never carries rights.
// - Refresh token: `<session>.<generation>.<mac>`, the MAC an HMAC-SHA256 under a key derived from JWT_SECRET.
//   It is unguessable without the key, the database keeps only its SHA-256, and because the server can recompute
//   the token of any generation, concurrent refreshes inside the grace window get the very same new token.
import { createHash, createHmac, createSecretKey, hkdfSync, timingSafeEqual } from "node:crypto";
import jwt from "jsonwebtoken";
import type { Config } from "./config.ts";

export const memberRoles = ["viewer", "member", "admin", "owner"] as const;
export type MemberRole = (typeof memberRoles)[number];

/** What an access token asserts, after verification. */
export interface AccessClaims {
  readonly userId: string;
  readonly orgId: string;
  readonly sessionId: string;
  readonly role: MemberRole;
  readonly expiresAt: Date;
}

export interface SessionGrant {
  readonly sessionId: string;
  readonly userId: string;
  readonly orgId: string;
  readonly role: MemberRole;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Why an access token was refused, for the log (never the token itself). Clients learn only whether it expired
 * (refresh it) or is invalid otherwise (sign in again): server/context.ts.
 */
export type TokenRefusal =
  | "expired"
  | "not_yet_valid"
  | "bad_signature"
  | "wrong_algorithm"
  | "unknown_key"
  | "wrong_issuer"
  | "wrong_audience"
  | "malformed"
  | "bad_claims"
  | "not_bearer"
  | "api_key_invalid";

export class InvalidTokenError extends Error {
  readonly refusal: TokenRefusal;
  constructor(refusal: TokenRefusal, detail: string = refusal) {
    super(detail);
    this.name = "InvalidTokenError";
    this.refusal = refusal;
  }
}

/** The refusal a jsonwebtoken verification error stands for. */
function refusalOf(error: Error): TokenRefusal {
  if (error.name === "TokenExpiredError") return "expired";
  if (error.name === "NotBeforeError") return "not_yet_valid";
  if (error.message === "invalid signature") return "bad_signature";
  if (error.message === "unknown key id") return "unknown_key";
  if (error.message === "invalid algorithm" || /must be an? a?symmetric key/.test(error.message)) return "wrong_algorithm";
  if (error.message.startsWith("jwt audience invalid")) return "wrong_audience";
  if (error.message.startsWith("jwt issuer invalid")) return "wrong_issuer";
  return "malformed";
}

export interface TokenService {
  signAccessToken(grant: SessionGrant): { token: string; expiresAt: Date };
  /** Verifies signature, algorithm, issuer, audience, expiry and claim shapes; throws InvalidTokenError saying which failed. */
  verifyAccessToken(token: string): AccessClaims;
  refreshToken(sessionId: string, generation: number): string;
  /** The session and generation a refresh token names, or null when it is malformed or its MAC is wrong. */
  parseRefreshToken(token: string): { sessionId: string; generation: number } | null;
  /** SHA-256 of a token: what the database stores and compares. */
  digest(token: string): Buffer;
}

export function createTokenService(config: Pick<Config, "jwt" | "auth">): TokenService {
  const { secret, issuer, audience, signingKey } = config.jwt;
  // One algorithm, pinned: with a configured key an HS256 token (say, one forged with JWT_SECRET) is refused.
  const algorithm = signingKey?.algorithm ?? "HS256";
  // The HS256 secret as a KeyObject: given a string, jsonwebtoken first tries (and fails) to parse it as a public key
  // on every verification, which cost about a tenth of a GraphQL request's CPU (bench/README.md).
  const secretKey = createSecretKey(Buffer.from(secret, "utf8"));
  const signWith = signingKey?.privateKey ?? secretKey;
  const verifyWith = signingKey?.publicKey ?? secretKey;
  const refreshKey = Buffer.from(hkdfSync("sha256", secret, "quire", "refresh-token", 32));
  const mac = (sessionId: string, generation: number) => createHmac("sha256", refreshKey).update(`${sessionId}.${generation}`).digest("base64url");

  return {
    signAccessToken({ sessionId, userId, orgId, role }) {
      const token = jwt.sign({ org_id: orgId, role, sid: sessionId }, signWith, {
        algorithm,
        ...(signingKey ? { keyid: signingKey.keyId } : {}),
        subject: userId,
        issuer,
        audience,
        expiresIn: config.auth.accessTokenTtlSeconds,
      });
      const { exp } = jwt.decode(token) as { exp: number };
      return { token, expiresAt: new Date(exp * 1000) };
    },

    verifyAccessToken(token) {
      let payload: jwt.JwtPayload | string;
      try {
        const verified = jwt.verify(token, verifyWith, { algorithms: [algorithm], issuer, audience, complete: true });
        if (signingKey && verified.header.kid !== signingKey.keyId) throw new Error("unknown key id");
        payload = verified.payload;
      } catch (error) {
        throw new InvalidTokenError(refusalOf(error as Error), (error as Error).message);
      }
      if (typeof payload === "string") throw new InvalidTokenError("bad_claims", "payload is not an object");
      const { sub, org_id: orgId, sid, role, exp } = payload as jwt.JwtPayload & Record<string, unknown>;
      if (typeof sub !== "string" || !uuidPattern.test(sub)) throw new InvalidTokenError("bad_claims", "bad sub");
      if (typeof orgId !== "string" || !uuidPattern.test(orgId)) throw new InvalidTokenError("bad_claims", "bad org_id");
      if (typeof sid !== "string" || !uuidPattern.test(sid)) throw new InvalidTokenError("bad_claims", "bad sid");
      if (typeof role !== "string" || !(memberRoles as readonly string[]).includes(role)) throw new InvalidTokenError("bad_claims", "bad role");
      if (typeof exp !== "number") throw new InvalidTokenError("bad_claims", "no exp");
      return { userId: sub, orgId, sessionId: sid, role: role as MemberRole, expiresAt: new Date(exp * 1000) };
    },

    refreshToken(sessionId, generation) {
      return `${sessionId}.${generation}.${mac(sessionId, generation)}`;
    },

    parseRefreshToken(token) {
      const match = /^([0-9a-f-]{36})\.([1-9]\d{0,8})\.([A-Za-z0-9_-]{43})$/.exec(token);
      if (!match || !uuidPattern.test(match[1]!)) return null;
      const [, sessionId, generationText, given] = match as unknown as [string, string, string, string];
      const generation = Number(generationText);
      const expected = Buffer.from(mac(sessionId, generation));
      const actual = Buffer.from(given);
      return expected.length === actual.length && timingSafeEqual(expected, actual) ? { sessionId, generation } : null;
    },

    digest(token) {
      return createHash("sha256").update(token).digest();
    },
  };
}
