// The live-event fan-out on its own, with a listener and an outbox in memory: a LISTEN connection that stays down
// past the grace ends subscriptions (and refuses new ones) with UNAVAILABLE, and a subscriber slower than its events
// holds a bounded queue, reading the rest from the outbox, losing nothing.
import { silentLogger } from "../support/database.ts";
import { createLiveEvents, type LiveEvent, type Outbox } from "../../server/live-events.ts";
import type { NotificationListener } from "../../lib/notifications.ts";

const orgId = "00000000-0000-4000-8000-000000000001";
const event = (seq: number): LiveEvent => ({
  orgId,
  seq,
  entity: "document",
  op: "update",
  entityId: "00000000-0000-4000-8000-000000000002",
  documentId: "00000000-0000-4000-8000-000000000002",
  missedEarlier: false,
});

/** A listener driven by the test: `notify` delivers, `lose` and `restore` play the connection. */
function fakeListener() {
  const handlers = new Map<string, (payload: string) => void>();
  const interrupted: Array<() => void> = [];
  const restored: Array<() => void> = [];
  let listening = true;
  const listener: NotificationListener = {
    on: (channel, handler) => void handlers.set(channel, handler),
    onInterrupted: (handler) => void interrupted.push(handler),
    onRestored: (handler) => void restored.push(handler),
    get listening() {
      return listening;
    },
    start: async () => undefined,
    close: async () => undefined,
  };
  return {
    listener,
    notify: (e: LiveEvent) => handlers.get("quire_live")!(JSON.stringify(e)),
    lose() {
      listening = false;
      for (const h of interrupted) h();
    },
    restore() {
      listening = true;
      for (const h of restored) h();
    },
  };
}

/** An outbox holding `events`, counting the reads and the most events one read returned. */
function memoryOutbox(events: LiveEvent[], pageSize = 10) {
  const stats = { reads: 0, largestPage: 0 };
  const outbox: Outbox = {
    async read(afterSeq, beforeSeq) {
      stats.reads++;
      const after = events.filter((e) => e.seq > afterSeq && (beforeSeq === null || e.seq < beforeSeq));
      const page = after.slice(0, pageSize);
      stats.largestPage = Math.max(stats.largestPage, page.length);
      return { events: page, oldestSeq: events[0]?.seq ?? null, complete: after.length <= pageSize };
    },
    lastSeq: async () => events.at(-1)?.seq ?? 0,
  };
  return { outbox, stats };
}

const nextWithin = async <T>(iterator: AsyncIterator<T>, ms = 2_000) =>
  Promise.race([iterator.next(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms))]);

test("a LISTEN connection down past the grace ends subscriptions and refuses new ones with UNAVAILABLE, until it is back", async () => {
  const fake = fakeListener();
  const live = createLiveEvents(fake.listener, silentLogger, { outageGraceMs: 50 });
  const { outbox } = memoryOutbox([]);
  const open = live.subscribe(orgId, { since: null, accept: () => true, outbox });
  const first = open.next();
  await new Promise((resolve) => setTimeout(resolve, 10));
  fake.lose();
  await expect(first).rejects.toMatchObject({ extensions: { code: "UNAVAILABLE" } });
  const refused = live.subscribe(orgId, { since: null, accept: () => true, outbox });
  await expect(refused.next()).rejects.toMatchObject({ extensions: { code: "UNAVAILABLE" } });
  fake.restore();
  const served = live.subscribe(orgId, { since: null, accept: () => true, outbox });
  const pending = served.next();
  await new Promise((resolve) => setTimeout(resolve, 10));
  fake.notify(event(1));
  expect(await pending).toEqual({ done: false, value: event(1) });
  await served.return!();
  live.close();
});

test("a slow subscriber's queue stays bounded: past it, events are read from the outbox a page at a time, none lost", async () => {
  const fake = fakeListener();
  const live = createLiveEvents(fake.listener, silentLogger, { maxQueuedEvents: 5 });
  const kept: LiveEvent[] = [];
  const { outbox, stats } = memoryOutbox(kept, 10);
  const subscription = live.subscribe(orgId, { since: 0, accept: () => true, outbox });
  // The subscription has replayed the (empty) outbox and waits for live events.
  const first = subscription.next();
  await new Promise((resolve) => setTimeout(resolve, 10));
  expect(stats.reads).toBe(1);
  // 100 events arrive before the subscriber reads any: it queues 5 at most, and reads the rest from the outbox.
  for (let seq = 1; seq <= 100; seq++) {
    kept.push(event(seq));
    fake.notify(event(seq));
  }
  const seen: number[] = [(await first).value!.seq];
  for (let i = 1; i < 100; i++) {
    const { value } = await nextWithin(subscription);
    seen.push(value!.seq);
  }
  expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  // Ten pages of ten, not a hundred events held in memory.
  expect(stats.reads).toBeGreaterThanOrEqual(1 + 10);
  expect(stats.largestPage).toBeLessThanOrEqual(10);
  await subscription.return!();
  live.close();
});
