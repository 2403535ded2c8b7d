// Live events for subscribers: the quire_live notifications of the server's LISTEN connection, handed to the
// subscribers of the event's organization only, plus replay from the outbox (app_public.live_events).
//
// Each organization numbers its events (seq). A subscription with `since` first gets the events after it, read
// under the subscriber's RLS, then live ones; one without starts after the organization's last seq when it
// subscribes. A live event that skips numbers is preceded by the skipped ones read from the outbox (so nothing is
// lost between the replay and the live stream), and repeats are dropped. Events the outbox no longer holds are
// reported by `missedEarlier` on the next event, telling the client to refetch.
//
// Subscriptions outlive a lost LISTEN connection: each time it listens again, every subscription (those opened
// meanwhile included) catches up from the outbox after the last seq it delivered, so nothing sent in the gap is
// lost. Only when the connection stays down longer than the outage grace do subscriptions end with UNAVAILABLE (and
// new ones are refused with it until it is back); the client resubscribes with `since`.
//
// A subscriber slower than its organization's events (graphql-ws waits for each message to be written before
// taking the next) would make its queue grow without bound: past `maxQueuedEvents` the queue is dropped and the
// subscriber reads on from the outbox, a page at a time, instead.
import { SafeError } from "postgraphile/grafast";
import { isDatabaseUnavailable } from "../lib/errors.ts";
import type { Logger } from "../lib/logger.ts";
import type { NotificationListener } from "../lib/notifications.ts";
import { isUuid } from "../lib/uuid.ts";

export type LiveEntity = "job" | "document" | "summary" | "integration";

export interface LiveEvent {
  readonly orgId: string;
  readonly seq: number;
  readonly entity: LiveEntity;
  readonly op: "insert" | "update" | "delete";
  readonly entityId: string;
  readonly documentId: string | null;
  /** True when events between the previous one delivered and this one could not be replayed. */
  readonly missedEarlier: boolean;
}

/** An organization's outbox as one subscriber may read it (under their RLS). */
export interface Outbox {
  /**
   * A page of events after `afterSeq` (and before `beforeSeq`), in order; `complete` is false when more follow;
   * `oldestSeq` is the oldest event still kept.
   */
  read(afterSeq: number, beforeSeq: number | null): Promise<{ events: LiveEvent[]; oldestSeq: number | null; complete: boolean }>;
  /** The organization's last seq (0 before its first event): where a subscription without `since` starts. */
  lastSeq(): Promise<number>;
}

export interface LiveEventsOptions {
  /** How long subscriptions wait for a lost LISTEN connection before ending with UNAVAILABLE (default 30 s). */
  readonly outageGraceMs?: number;
  /** Events queued for one subscriber before it is switched to reading from the outbox (default 1000). */
  readonly maxQueuedEvents?: number;
}

export interface LiveEvents {
  /** The organization's events for one subscriber, from `since` (exclusive) when given, filtered by `accept`. */
  subscribe(orgId: string, options: { since: number | null; accept: (event: LiveEvent) => boolean; outbox: Outbox }): AsyncIterableIterator<LiveEvent>;
  /** Open subscriptions (for metrics and tests). */
  readonly size: number;
  /** Ends every subscription (the server is stopping). */
  close(): void;
}

/**
 * Ends subscriptions when the LISTEN connection stayed down past the outage grace, or a catch-up could not be read
 * (code UNAVAILABLE): resubscribe with `since` to catch up.
 */
export const liveEventsInterrupted = () =>
  new SafeError("Live updates were interrupted; subscribe again with `since` set to the last seq you received.", { code: "UNAVAILABLE" });

/** The notification payload, or null when it is not one of ours (never trusted beyond its shape). */
function parseEvent(payload: string): LiveEvent | null {
  try {
    const e = JSON.parse(payload) as Record<string, unknown>;
    if (!isUuid(e.orgId) || !isUuid(e.entityId) || typeof e.seq !== "number") return null;
    if (e.entity !== "job" && e.entity !== "document" && e.entity !== "summary" && e.entity !== "integration") return null;
    if (e.op !== "insert" && e.op !== "update" && e.op !== "delete") return null;
    return {
      orgId: e.orgId,
      seq: e.seq,
      entity: e.entity,
      op: e.op,
      entityId: e.entityId,
      documentId: isUuid(e.documentId) ? e.documentId : null,
      missedEarlier: false,
    };
  } catch {
    return null;
  }
}

interface Subscriber {
  push(event: LiveEvent): void;
  /** The LISTEN connection is back: read what the outbox holds after the last seq delivered. */
  resync(): void;
  fail(error: Error): void;
  end(): void;
}

export function createLiveEvents(
  listener: NotificationListener,
  logger: Logger,
  { outageGraceMs = 30_000, maxQueuedEvents = 1000 }: LiveEventsOptions = {},
): LiveEvents {
  const byOrg = new Map<string, Set<Subscriber>>();
  let size = 0;
  const everyone = () => [...byOrg.values()].flatMap((subscribers) => [...subscribers]);
  /** Set while the LISTEN connection has been down past the grace: subscribing fails with UNAVAILABLE. */
  let unavailable = false;
  let outage: NodeJS.Timeout | null = null;
  const startOutage = () => {
    if (outage || unavailable) return;
    outage = setTimeout(() => {
      outage = null;
      unavailable = true;
      logger.warn({ outageGraceMs }, "the LISTEN connection stayed down: ending live subscriptions");
      for (const s of everyone()) s.fail(liveEventsInterrupted());
    }, outageGraceMs);
    outage.unref();
  };
  // Not listening yet: until the first connection listens, events are only in the outbox.
  if (!listener.listening) startOutage();

  listener.on("quire_live", (payload) => {
    const event = parseEvent(payload);
    if (!event) {
      logger.warn("ignored a malformed quire_live notification");
      return;
    }
    for (const subscriber of byOrg.get(event.orgId) ?? []) subscriber.push(event);
  });
  listener.onInterrupted(startOutage);
  listener.onRestored(() => {
    if (outage) clearTimeout(outage);
    outage = null;
    unavailable = false;
    for (const s of everyone()) s.resync();
  });

  function subscribe(orgId: string, { since, accept, outbox: source }: Parameters<LiveEvents["subscribe"]>[1]): AsyncIterableIterator<LiveEvent> {
    // Events arrive in `inbox` from the moment of subscribing, so the replay below cannot miss any.
    const inbox: LiveEvent[] = [];
    let wake: (() => void) | null = null;
    let failure: Error | null = unavailable ? liveEventsInterrupted() : null;
    let ended = false;
    let resync = false;
    const subscriber: Subscriber = {
      push(event) {
        if (inbox.length >= maxQueuedEvents) {
          // Everything queued is in the outbox too: read it from there when the subscriber gets to it.
          inbox.length = 0;
          resync = true;
        } else inbox.push(event);
        wake?.();
      },
      resync() {
        resync = true;
        wake?.();
      },
      fail(error) {
        failure = error;
        wake?.();
      },
      end() {
        ended = true;
        wake?.();
      },
    };
    let subscribers = byOrg.get(orgId);
    if (!subscribers) byOrg.set(orgId, (subscribers = new Set()));
    subscribers.add(subscriber);
    size++;
    const detach = () => {
      if (!subscribers.delete(subscriber)) return;
      size--;
      if (subscribers.size === 0) byOrg.delete(orgId);
    };

    /** The last seq delivered (or skipped as not accepted); null until the subscription has its starting point. */
    let lastSeq = since;
    const outbox: LiveEvent[] = [];
    /**
     * Adds to `outbox` one page of what the outbox holds after lastSeq (and before `beforeSeq`), marking a gap if
     * any; resolves false when more follow.
     */
    const catchUpPage = async (beforeSeq: number | null): Promise<boolean> => {
      if (lastSeq === null) return true;
      const { events, oldestSeq, complete } = await source.read(lastSeq, beforeSeq);
      const expectedFirst = lastSeq + 1;
      const gap = (events[0]?.seq ?? beforeSeq ?? Infinity) > expectedFirst && oldestSeq !== null && oldestSeq > expectedFirst;
      events.forEach((event, i) => outbox.push(i === 0 && gap ? { ...event, missedEarlier: true } : event));
      if (events.length > 0) lastSeq = events[events.length - 1]!.seq;
      return complete;
    };

    /** Reads from the database; when it is unreachable, the subscription ends with UNAVAILABLE (not INTERNAL). */
    const reading = async <T>(read: () => Promise<T>): Promise<T> => {
      try {
        return await read();
      } catch (error) {
        if (!isDatabaseUnavailable(error)) throw error;
        logger.warn({ err: error }, "a live subscription could not read the outbox");
        throw liveEventsInterrupted();
      }
    };

    async function* run(): AsyncGenerator<LiveEvent> {
      try {
        if (failure) throw failure;
        // With `since`, the replay comes first. Without, the subscription starts after the organization's last
        // event, so that a catch-up (after a lost LISTEN connection) knows where to start.
        if (lastSeq === null) lastSeq = await reading(() => source.lastSeq());
        else resync = true;
        for (;;) {
          while (outbox.length > 0) {
            const event = outbox.shift()!;
            if (accept(event)) yield event;
          }
          if (failure) throw failure;
          if (ended) return;
          // A page at a time, so what is held for a slow subscriber stays bounded.
          if (resync) {
            resync = !(await reading(() => catchUpPage(null)));
            continue;
          }
          const live = inbox.shift();
          if (!live) {
            await new Promise<void>((resolve) => (wake = resolve));
            wake = null;
            continue;
          }
          if (lastSeq !== null && live.seq <= lastSeq) continue;
          if (lastSeq !== null && live.seq > lastSeq + 1) {
            // Fill the gap before the live event (bounded: the queue behind it is).
            for (let page = 0; page < 1_000 && !(await reading(() => catchUpPage(live.seq))); page++);
          }
          outbox.push(live);
          lastSeq = live.seq;
        }
      } finally {
        detach();
      }
    }
    // An async generator's return() waits for a pending next(); ending the subscriber first wakes it, so an
    // unsubscribe takes effect at once rather than at the organization's next event.
    const events = run();
    return {
      next: () => events.next(),
      return: (value?: unknown) => {
        subscriber.end();
        return events.return(value as undefined);
      },
      throw: (error?: unknown) => {
        subscriber.end();
        return events.throw(error);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  return {
    subscribe,
    get size() {
      return size;
    },
    close() {
      if (outage) clearTimeout(outage);
      outage = null;
      for (const s of everyone()) s.end();
    },
  };
}
