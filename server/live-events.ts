// Live events for subscribers: the quire_live notifications of the server's LISTEN connection, handed to the
// subscribers of the event's organization only, plus replay from the outbox (app_public.live_events).
//
// Each organization numbers its events (seq). A subscription with `since` first gets the events after it, read
// under the subscriber's RLS, then live ones; a live event that skips numbers is preceded by the skipped ones read
// from the outbox (so nothing is lost between the replay and the live stream), and repeats are dropped. Events the
// outbox no longer holds are reported by `missedEarlier` on the next event, telling the client to refetch.
import { SafeError } from "postgraphile/grafast";
import type { Logger } from "../lib/logger.ts";
import type { NotificationListener } from "./notifications.ts";

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

/**
 * Reads a page of an organization's outbox after `afterSeq` (and before `beforeSeq`), in order, under the
 * subscriber's RLS; `complete` is false when more follow; `oldestSeq` is the oldest event still kept.
 */
export type ReadOutbox = (afterSeq: number, beforeSeq: number | null) => Promise<{ events: LiveEvent[]; oldestSeq: number | null; complete: boolean }>;

export interface LiveEvents {
  /** The organization's events for one subscriber, from `since` (exclusive) when given, filtered by `accept`. */
  subscribe(orgId: string, options: { since: number | null; accept: (event: LiveEvent) => boolean; read: ReadOutbox }): AsyncIterableIterator<LiveEvent>;
  /** Open subscriptions (for metrics and tests). */
  readonly size: number;
  /** Ends every subscription (the server is stopping). */
  close(): void;
}

/** Ends subscriptions when the LISTEN connection dropped (code UNAVAILABLE): resubscribe with `since` to catch up. */
export const liveEventsInterrupted = () =>
  new SafeError("Live updates were interrupted; subscribe again with `since` set to the last seq you received.", { code: "UNAVAILABLE" });

const isUuid = (v: unknown): v is string => typeof v === "string" && /^[0-9a-f-]{36}$/i.test(v);

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
  fail(error: Error): void;
  end(): void;
}

export function createLiveEvents(listener: NotificationListener, logger: Logger): LiveEvents {
  const byOrg = new Map<string, Set<Subscriber>>();
  let size = 0;

  listener.on("quire_live", (payload) => {
    const event = parseEvent(payload);
    if (!event) {
      logger.warn("ignored a malformed quire_live notification");
      return;
    }
    for (const subscriber of byOrg.get(event.orgId) ?? []) subscriber.push(event);
  });
  listener.onInterrupted(() => {
    for (const subscribers of byOrg.values()) for (const s of [...subscribers]) s.fail(liveEventsInterrupted());
  });

  function subscribe(orgId: string, { since, accept, read }: Parameters<LiveEvents["subscribe"]>[1]): AsyncIterableIterator<LiveEvent> {
    // Events arrive in `inbox` from the moment of subscribing, so the replay below cannot miss any.
    const inbox: LiveEvent[] = [];
    let wake: (() => void) | null = null;
    let failure: Error | null = null;
    let ended = false;
    const subscriber: Subscriber = {
      push(event) {
        inbox.push(event);
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

    let lastSeq = since;
    const outbox: LiveEvent[] = [];
    /** Fills `outbox` with what the outbox holds after lastSeq (and before `beforeSeq`), marking a gap if any. */
    const catchUp = async (beforeSeq: number | null) => {
      for (let page = 0; lastSeq !== null; page++) {
        const { events, oldestSeq, complete } = await read(lastSeq, beforeSeq);
        const expectedFirst = lastSeq + 1;
        const gap = page === 0 && (events[0]?.seq ?? beforeSeq ?? Infinity) > expectedFirst && oldestSeq !== null && oldestSeq > expectedFirst;
        events.forEach((event, i) => outbox.push(i === 0 && gap ? { ...event, missedEarlier: true } : event));
        if (events.length > 0) lastSeq = events[events.length - 1]!.seq;
        if (complete) return;
      }
    };

    async function* run(): AsyncGenerator<LiveEvent> {
      try {
        await catchUp(null);
        for (;;) {
          while (outbox.length > 0) {
            const event = outbox.shift()!;
            if (accept(event)) yield event;
          }
          if (failure) throw failure;
          if (ended) return;
          const live = inbox.shift();
          if (!live) {
            await new Promise<void>((resolve) => (wake = resolve));
            wake = null;
            continue;
          }
          if (lastSeq !== null && live.seq <= lastSeq) continue;
          if (lastSeq !== null && live.seq > lastSeq + 1) await catchUp(live.seq);
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
      for (const subscribers of byOrg.values()) for (const s of [...subscribers]) s.end();
    },
  };
}
