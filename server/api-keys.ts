// API keys as bearer credentials (`Authorization: Bearer qk_<id>_<secret>`, created by createApiKey). A key is
// checked against the database (app_private.api_key_grant: the SHA-256 of its secret, not revoked, not expired,
// its organization active), which answers the session its service account holds; from there a key request is a
// signed-in request like any other: the same settings, row-level security, rate limits and audit. Answers are kept
// for `cacheMs`, so a busy key costs one lookup per interval, never one per request; revocation still applies to the
// very next request, because every request's transaction checks the session itself (app_hidden.enter_context).
import { createHash } from "node:crypto";
import pLimit from "p-limit";
import type pg from "pg";
import { InvalidTokenError, type AccessClaims, type MemberRole } from "../lib/tokens.ts";

/** A key as createApiKey returns it: `qk_`, the key's id (32 hex digits), `_`, the secret (64 hex digits). */
const keyPattern = /^qk_([0-9a-f]{32})_([0-9a-f]{64})$/;

/** Whether a bearer credential is shaped like an API key (rather than an access token). */
export const isApiKey = (credential: string): boolean => credential.startsWith("qk_");

export interface ApiKeyOptions {
  /** The authenticator pool the check runs on. */
  readonly pool: pg.Pool;
  /** How long (ms) an answer is kept (default 10 000). */
  readonly cacheMs?: number;
  /** Most answers kept at once; the oldest go first (default 10 000). */
  readonly maxCached?: number;
  /** Lookups waiting for one of the 4 lookup slots before more keys are refused at once (default 1 000). */
  readonly maxWaiting?: number;
}

export interface ApiKeys {
  /** The claims of a live key; InvalidTokenError ("api_key_invalid") for a malformed, unknown, revoked or expired one. */
  verify(key: string): Promise<AccessClaims>;
}

/**
 * A key request's claims last as long as a day at most: that is when a WebSocket opened with it closes and must
 * reconnect (server/live-sockets.ts), so a key's expiry is still seen by long-lived connections.
 */
const maxClaimsMs = 24 * 3600 * 1000;

interface GrantRow {
  session_id: string | null;
  user_id: string;
  org_id: string;
  role: MemberRole;
}

export function createApiKeys({ pool, cacheMs = 10_000, maxCached = 10_000, maxWaiting = 1_000 }: ApiKeyOptions): ApiKeys {
  // Keys are checked before the rate limits (which need the claims), so a flood of made-up keys is bounded here:
  // at most 4 lookups at once, and a bounded queue. A key already checked is answered from the cache meanwhile.
  const lookups = pLimit(4);
  /** By SHA-256 of the whole key: the claims and until when they may be used without asking again. */
  const cache = new Map<string, { claims: AccessClaims | null; until: number }>();
  /** Keeps the newest answer last in the map's order, so the entry evicted when full is the one checked longest ago. */
  const remember = (digest: string, claims: AccessClaims | null) => {
    cache.delete(digest);
    if (cache.size >= maxCached) cache.delete(cache.keys().next().value!);
    cache.set(digest, { claims, until: Date.now() + cacheMs });
  };
  return {
    async verify(key) {
      const match = keyPattern.exec(key);
      if (!match) throw new InvalidTokenError("api_key_invalid", "malformed API key");
      const digest = createHash("sha256").update(key).digest("hex");
      const cached = cache.get(digest);
      let claims: AccessClaims | null;
      if (cached && cached.until > Date.now()) {
        claims = cached.claims;
      } else {
        const id = match[1]!.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
        const secretHash = createHash("sha256").update(match[2]!, "utf8").digest();
        if (lookups.pendingCount >= maxWaiting) throw new InvalidTokenError("api_key_invalid", "too many API key checks waiting");
        const { rows } = await lookups(() => pool.query<GrantRow>("select * from app_private.api_key_grant($1, $2)", [id, secretHash]));
        const row = rows[0];
        claims =
          row?.session_id != null
            ? { sessionId: row.session_id, userId: row.user_id, orgId: row.org_id, role: row.role, expiresAt: new Date(Date.now() + maxClaimsMs) }
            : null;
        remember(digest, claims);
      }
      if (!claims) throw new InvalidTokenError("api_key_invalid", "unknown, revoked or expired API key");
      return claims;
    },
  };
}
