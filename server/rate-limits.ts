// Request rate limits, enforced before a request does any work, without a database statement per request. Each
// API request (GraphQL over HTTP, uploads, and each operation over a WebSocket, in server/context.ts) is counted in
// this instance's memory; every RATE_LIMIT_SYNC_MS one statement adds this instance's new counts to the shared
// UNLOGGED table app_private.rate_limit_windows and reads back the cluster-wide totals of every key it tracks (and
// the limits of their organizations' tiers), so the budget holds across every instance within one sync interval.
//
// Anonymous requests count against the client's address; signed-in ones against the user and the organization,
// with the limits of the organization's tier. Over a limit the answer is 429 RATE_LIMITED with Retry-After (the
// seconds to the end of the one-minute window) and the scope that was hit.
//
// Tolerance: a request is judged on the last shared totals plus this instance's own counts since. With N
// instances, each can admit at most what the others have not yet reported: the overshoot of a limit is bounded by
// the requests the other instances admitted for that key within one sync interval (plus one interval of
// in-flight sync). A key this instance has not seen yet in the current window, or has not seen for a few seconds
// (idle keys are left out of the syncs), waits for one sync before it is judged, so it starts from the shared
// count and its tier's limits.
//
// When the database cannot be reached, counts stay in memory (they are sent with the next sync that succeeds) and
// requests are judged on what this instance knows: limits keep holding per instance, never failing requests.
import type { Request, RequestHandler, Response } from "express";
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import type { ErrorCode } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import { timedQuery } from "../lib/timed-query.ts";
import type { AccessClaims } from "../lib/tokens.ts";
import type { ClientAddress } from "./client-address.ts";
import { authOf } from "./bearer-auth.ts";

/** The verdict on one request: 0 seconds to wait means go ahead; otherwise which limit it hit. */
export interface RequestCount {
  readonly retryAfterSeconds: number;
  readonly scope: "address" | "user" | "organization" | null;
}

/** Counts one request from `ip` (anonymous when `claims` is null) against its limits. */
export type CountRequest = (ip: string | null, claims: AccessClaims | null) => Promise<RequestCount>;

export interface RateLimiter {
  readonly count: CountRequest;
  /** Sends the counts not yet synced and waits for the answer (tests and shutdown). */
  sync(): Promise<void>;
  /** Stops the sync timer after a last sync. */
  close(): Promise<void>;
}

/** One key's state in the current window. */
interface Counter {
  /** The other instances' count at the last sync. */
  others: number;
  /** This instance's count this window. */
  local: number;
  /** This instance's counts not yet sent. */
  pending: number;
  /** This instance's counts sent in the sync now in flight. */
  sending: number;
  /** Whether a sync has answered for this key in this window (until then it waits for one). */
  known: boolean;
  /** When this instance last counted a hit on the key (ms). */
  lastHit: number;
}

/** Keys hit within this long (ms) are synced even with nothing new, so their other instances' counts stay fresh. */
const activeMs = 5_000;

/** A tier's limits, requests a minute. */
interface TierLimits {
  readonly user: number;
  readonly org: number;
}

const windowMs = 60_000;
/** Longest a sync waits for its answer (after the pool's own wait for a connection) before it counts as failed. */
const syncTimeoutMs = 5_000;
const windowOf = (now: number) => Math.floor(now / windowMs) * windowMs;

const allowed: RequestCount = { retryAfterSeconds: 0, scope: null };

/** What the sync function answers: cluster totals per key, and the limits of each organization's tier. */
interface SyncAnswer {
  readonly hits: Record<string, number>;
  readonly limits: Record<string, [number, number]>;
}

export interface RateLimiterOptions {
  readonly config: Config;
  /** The pool the sync statement runs on (the authenticator's). */
  readonly pool: pg.Pool;
  readonly logger: Logger;
  /** Milliseconds since the epoch; windows are the clock's minutes. Default: Date.now (tests pin it to a minute). */
  readonly clock?: () => number;
}

export function createRateLimiter({ config, pool, logger, clock = Date.now }: RateLimiterOptions): RateLimiter {
  const { enabled, anonymousPerMinute, syncMs, maxKeys } = config.rateLimits;
  let window = windowOf(clock());
  let counters = new Map<string, Counter>();
  /** Organizations of the signed-in requests this window: each sync reads their tiers' limits. */
  let orgsSeen = new Set<string>();
  /** Limits by organization id, from the last sync that named it. */
  const tierLimits = new Map<string, TierLimits>();
  let inFlight: Promise<void> | null = null;
  let overflowWarned = -1;
  let failureWarned = 0;

  const rollWindow = (now: number) => {
    const current = windowOf(now);
    if (current === window) return;
    window = current;
    counters = new Map();
    orgsSeen = new Set();
  };

  /** One round trip: this instance's new counts in, the cluster totals (and tier limits) out. */
  const syncOnce = async () => {
    rollWindow(clock());
    const sentWindow = window;
    const sent = counters;
    // Only keys in use: those with new counts, waiting for their first answer, or hit lately.
    const now = clock();
    const keys = [...sent].filter(([, c]) => c.pending > 0 || !c.known || now - c.lastHit < activeMs).map(([key]) => key);
    if (keys.length === 0) return;
    const deltas = keys.map((key) => {
      const counter = sent.get(key)!;
      counter.sending = counter.pending;
      counter.pending = 0;
      return counter.sending;
    });
    const orgIds = [...orgsSeen];
    try {
      // A sync that hangs (a stalled connection) would hold every new key's first request, and shutdown, with it.
      const { rows } = await pool.query<{ answer: SyncAnswer }>(
        timedQuery("select app_private.sync_rate_limits($1, $2, $3, $4) as answer", [keys, deltas, new Date(sentWindow).toISOString(), orgIds], syncTimeoutMs),
      );
      const { hits, limits } = rows[0]!.answer;
      for (const [orgId, [user, org]] of Object.entries(limits)) tierLimits.set(orgId, { user, org });
      for (const key of keys) {
        const counter = sent.get(key)!;
        // The total counts every hit of this instance sent so far: all but those still pending.
        if (key in hits) counter.others = Math.max(0, hits[key]! - (counter.local - counter.pending));
        counter.sending = 0;
        counter.known = true;
      }
    } catch (error) {
      // Keep the counts for the next sync; judge on what this instance knows meanwhile.
      for (const key of keys) {
        const counter = sent.get(key)!;
        if (sent === counters) counter.pending += counter.sending;
        counter.sending = 0;
        counter.known = true;
      }
      const now = clock();
      if (now - failureWarned > windowMs) {
        failureWarned = now;
        logger.warn({ err: error }, "rate limit counts not synced: the database is unavailable; limits hold per instance until it is back");
      }
    }
  };

  /** Runs a sync now, or after the one in flight (so the caller's counts are in the answer it waits for). */
  let next: Promise<void> | null = null;
  const sync = (): Promise<void> => {
    if (!inFlight) {
      inFlight = syncOnce().finally(() => {
        inFlight = null;
      });
      return inFlight;
    }
    next ??= inFlight.then(() => {
      next = null;
      return sync();
    });
    return next;
  };

  const timer = enabled ? setInterval(() => void sync(), syncMs) : null;
  timer?.unref();

  /** Counts one hit on `key`; the counter, or null when the key cannot be tracked (over RATE_LIMIT_MAX_KEYS). */
  const hit = (key: string): Counter | null => {
    let counter = counters.get(key);
    if (!counter) {
      if (counters.size >= maxKeys) {
        if (overflowWarned !== window) {
          overflowWarned = window;
          logger.warn({ maxKeys }, "rate limits: RATE_LIMIT_MAX_KEYS keys tracked this minute; further keys are not limited until the next");
        }
        return null;
      }
      counter = { others: 0, local: 0, pending: 0, sending: 0, known: false, lastHit: 0 };
      counters.set(key, counter);
    }
    const now = clock();
    // A key idle for a while was left out of the syncs: it waits for one again before it is judged.
    if (counter.known && now - counter.lastHit >= activeMs) counter.known = false;
    counter.local += 1;
    counter.pending += 1;
    counter.lastHit = now;
    return counter;
  };
  const retryAfter = () => Math.max(1, Math.ceil((window + windowMs - clock()) / 1000));

  /**
   * Counts a hit on `key` and judges it by its place in the window: the other instances' count plus this instance's
   * hits up to this one (after one sync when the key is new this window, so concurrent first hits are ordered too).
   */
  const judge = async (key: string, limit: () => number, scope: RequestCount["scope"]): Promise<RequestCount> => {
    const counter = hit(key);
    if (!counter) return allowed;
    const place = counter.local;
    if (!counter.known) await sync();
    return counter.others + place > limit() ? { retryAfterSeconds: retryAfter(), scope } : allowed;
  };

  const count: CountRequest = async (ip, claims) => {
    if (!enabled) return allowed;
    rollWindow(clock());
    if (!claims) return ip ? judge(`ip:${ip}`, () => anonymousPerMinute, "address") : allowed;
    // A request over its user's limit is not counted against its organization.
    orgsSeen.add(claims.orgId);
    const limits = () => tierLimits.get(claims.orgId);
    const user = await judge(`user:${claims.userId}`, () => limits()?.user ?? Infinity, "user");
    return user.retryAfterSeconds > 0 ? user : judge(`org:${claims.orgId}`, () => limits()?.org ?? Infinity, "organization");
  };

  return {
    count,
    sync,
    async close() {
      if (timer) clearInterval(timer);
      if (enabled) await sync();
    },
  };
}

/** Answers in the shape of the route: GraphQL's `errors` under /graphql, `{ error }` elsewhere (server/app.ts). */
function refuse(req: Request, res: Response, status: number, code: ErrorCode, message: string, retryAfterSeconds: number, extra = {}) {
  res.set("retry-after", String(retryAfterSeconds)).status(status);
  const extensions = { code, retryAfterSeconds, ...extra };
  res.json(
    req.baseUrl.startsWith("/graphql") || req.path.startsWith("/graphql") ? { errors: [{ message, extensions }] } : { error: { ...extensions, message } },
  );
}

export interface RateLimitOptions {
  readonly limiter: RateLimiter;
  readonly addressOf: ClientAddress;
}

/** Express middleware counting each HTTP request (but CORS preflights) against the limits. */
export function rateLimit({ limiter, addressOf }: RateLimitOptions): RequestHandler {
  return async (req, res, next) => {
    if (req.method === "OPTIONS") return next();
    try {
      const { retryAfterSeconds: wait, scope } = await limiter.count(addressOf(req), authOf(req));
      if (wait > 0) {
        refuse(req, res, 429, "RATE_LIMITED", "Too many requests; try again later.", wait, { scope });
        return;
      }
      next();
    } catch (error) {
      next(error);
    }
  };
}
