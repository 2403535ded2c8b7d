// `node bench/subscriptions.ts`: many live subscribers. 1,000 graphql-ws clients across 100 organizations (10 per
// organization, each its own WebSocket connection with that organization's member token) subscribe to
// `documentChanged`; the bench changes documents at a steady 100 events per second and measures what the issue
// asks of live updates:
//
// - delivery latency, from the moment the bench sends a document's change to the moment each subscriber of that
//   organization receives the event (p50/p99 over every delivery);
// - exactly-once delivery: every subscriber of organization X gets every event of X once (by X's `seq`), none lost
//   or repeated;
// - isolation: every id a subscriber receives (entityId, documentId) belongs to its own organization;
// - server memory per idle subscription: Quire's process after a full GC (through the V8 inspector), with no
//   subscriber and with all 1,000 connected and idle, the difference divided by 1,000, as RSS and as V8 heap;
// - the LISTEN connections the server holds (pg_stat_activity, application_name quire-listener): one.
//
// How: Quire runs as `node --inspect=127.0.0.1:0 bin/start.ts` (server and worker in one process, see quire-child.ts).
// Organizations, members and documents are made through the public API. Subscribers run in BENCH_THREADS worker
// threads (bench/live-clients.ts), so the bench measures Quire rather than its own event loop; each subscribes
// with `since` set to its organization's last seq, so none can miss an event however late its subscription
// starts, and one event per organization proves every subscription live. Memory is read then; then come
// BENCH_WARMUP_SECONDS of changes at the full rate (delivery checked, latency not counted: the server's pool and
// V8's compiled code warm up) and the measured BENCH_SECONDS. Events are made by the superuser with `update app_public.documents set title = …` followed, in the same
// implicit transaction (one simple-protocol round trip), by reading the outbox row the trigger appended: the
// triggers run as for any writer, and the bench learns each event's place in the outbox, then its seq once Quire's
// numberer has given it. Send time is taken just before the round trip, so latency includes the update's own
// commit and the wait for the numberer.
//
// Exits 1 on a correctness failure (a lost, repeated, unexpected or cross-organization delivery, a subscriber error
// or dropped connection, a LISTEN count other than one, a failed start or stop); the latency and memory targets
// are reported, never asserted. Progress goes to stderr; the results table to stdout and, on a clean run, with the
// machine's facts to bench/results/subscriptions-latest.md.
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { Delivery, LoopStats } from "./live-clients.ts";
import { LiveClients, createTenants, fmtCpu, lastSeqs, listenConnections, liveCpuSnapshot, type Tenant } from "./live-support.ts";
import { cpuBetween, DISTURBED_CORES, type CpuUse } from "./proc-cpu.ts";
import { startQuire, type ExitStatus, type HeapReading, type ProfileSummary, type Quire } from "./quire-child.ts";
import { clock, envInt, fmtMs, log, machineFacts, rssOf, summarise, watchInterrupts, whole, type LatencySummary, finishRun } from "./support.ts";

const orgCount = envInt("BENCH_ORGS", 100, 1, 1000);
const clientsPerOrg = envInt("BENCH_CLIENTS_PER_ORG", 10, 1, 100);
const rate = envInt("BENCH_RATE", 100, 1, 5000);
const seconds = envInt("BENCH_SECONDS", 20, 1, 600);
const documentsPerOrg = envInt("BENCH_DOCS_PER_ORG", 5, 1, 100);
const threads = envInt("BENCH_THREADS", 2, 1, 16);
const settleSeconds = envInt("BENCH_SETTLE_SECONDS", 3, 0, 60);
const drainSeconds = envInt("BENCH_DRAIN_SECONDS", 15, 1, 300);
const warmupSeconds = envInt("BENCH_WARMUP_SECONDS", 5, 0, 60);
const profile = envInt("BENCH_PROFILE", 0, 0, 1) === 1;
// 1: subscribers select `document { title }`, which Quire re-reads under each subscriber's RLS for every delivery
// (what a client showing the document does); 0: ids only, no re-read, to see what the re-reads cost.
const reread = envInt("BENCH_REREAD", 1, 0, 1) === 1;
const clientCount = orgCount * clientsPerOrg;

// What the issue asks (reported, not asserted).
const TARGET_P50_MS = 30;
const TARGET_P99_MS = 150;
const TARGET_BYTES_PER_SUBSCRIPTION = 200 * 1024;

const SELECTION = `seq entity op entityId documentId${reread ? " document { title }" : ""}`;
const SUBSCRIPTION = `subscription ($since: BigInt) { documentChanged(since: $since) { ${SELECTION} } }`;

interface ChangeEvent {
  readonly orgIndex: number;
  /** The organization's number of the event, once the server's numberer has given it (resolveSeqs). */
  seq: number;
  /** The event's place in the outbox, known when the change commits (the number comes after). */
  readonly appendOrder: string;
  readonly documentId: string;
  readonly title: string;
  readonly sentAt: number;
  /** How long the update's round trip (and commit) took. */
  readonly sourceMs: number;
  /** False for the warm-up's changes: their deliveries are checked but not timed. */
  readonly measured: boolean;
}

interface DocumentChanged {
  readonly seq: string;
  readonly entity: string;
  readonly entityId: string;
  readonly documentId: string | null;
  /** Absent with BENCH_REREAD=0. */
  readonly document?: { readonly title: string } | null;
}

const interrupt = watchInterrupts();
const checkInterrupted = interrupt.check;

/** Changes one document's title and returns its event (its seq still unknown: see resolveSeqs). */
async function change(pool: pg.Pool, tenant: Tenant, documentId: string, title: string, measured: boolean): Promise<ChangeEvent> {
  const sentAt = clock();
  // Two statements in one simple-protocol query run as one transaction: the second reads the outbox row our own
  // trigger just appended (rows this transaction wrote have its xid as xmin). Values are inlined (a uuid and a
  // title made here), since the simple protocol takes no parameters.
  const results = (await pool.query(
    `update app_public.documents set title = '${title}' where id = '${documentId}';
     select e.append_order::text from app_public.live_events e where e.xmin = pg_current_xact_id()::xid`,
  )) as unknown as Array<pg.QueryResult<{ append_order: string }>>;
  const sourceMs = clock() - sentAt;
  const appendOrder = results[1]?.rows[0]?.append_order;
  if (results[0]?.rowCount !== 1 || !appendOrder) throw new Error(`changing document ${documentId} did not make an event`);
  return { orgIndex: tenant.index, seq: Number.NaN, appendOrder, documentId, title, sentAt, sourceMs, measured };
}

/**
 * Fills in each event's seq once Quire's numberer has given it (server/live-numberer.ts numbers committed events
 * every LIVE_NUMBER_INTERVAL_MS); fails after 60 s.
 */
async function resolveSeqs(pool: pg.Pool, events: readonly ChangeEvent[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  let open = events.filter((e) => Number.isNaN(e.seq));
  while (open.length > 0) {
    const { rows } = await pool.query<{ append_order: string; seq: string }>(
      "select append_order::text, seq::text from app_public.live_events where append_order = any($1::bigint[]) and seq is not null",
      [open.map((e) => e.appendOrder)],
    );
    const seqs = new Map(rows.map((r) => [r.append_order, Number(r.seq)]));
    for (const event of open) event.seq = seqs.get(event.appendOrder) ?? Number.NaN;
    open = open.filter((e) => Number.isNaN(e.seq));
    if (open.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${open.length} events were not numbered within 60 s`);
    await sleep(20);
  }
}

// --- the run ----------------------------------------------------------------------------------------------------

interface Outcome {
  readonly openMs: number;
  readonly warmupMs: number;
  readonly heapBefore: HeapReading;
  readonly heapAfter: HeapReading;
  readonly rssBefore: number;
  readonly rssAfter: number;
  readonly listenersBefore: { listeners: number; byApplication: string };
  readonly listenersAfter: { listeners: number; byApplication: string };
  readonly sentEvents: number;
  readonly phaseSeconds: number;
  readonly lateSends: number;
  readonly source: LatencySummary;
  readonly latency: LatencySummary;
  readonly expected: number;
  readonly received: number;
  readonly lost: number;
  readonly duplicated: number;
  readonly unexpected: number;
  readonly crossOrg: number;
  readonly nullRereads: number;
  readonly newerRereads: number;
  readonly cpu: CpuUse | null;
  readonly subscriberLoop: LoopStats;
  readonly benchLoop: LoopStats;
  readonly profile: ProfileSummary | null;
  readonly drainedMs: number;
  /** Delivery latency by second of the phase (by the change's send time). */
  readonly timeline: ReadonlyArray<{ readonly second: number; readonly latency: LatencySummary }>;
}

const failures: string[] = [];
let quire: Quire | null = null;
let db: pg.Client | null = null;
let pool: pg.Pool | null = null;
let clients: LiveClients | null = null;
let outcome: Outcome | null = null;
let setupMs = NaN;
let stopped: ExitStatus | null = null;
let quietCpu: CpuUse | null = null;

try {
  // Other work on this 2-core machine changes everything below: measure it first.
  const quietFrom = liveCpuSnapshot(null);
  await sleep(1_000);
  quietCpu = cpuBetween(quietFrom, liveCpuSnapshot(null));
  if (quietCpu && quietCpu.other > DISTURBED_CORES) log(`WARNING: other processes use ${quietCpu.other.toFixed(2)} cores; the results will be disturbed`);
  quire = await startQuire(
    {
      label: "subscriptions",
      preferredPort: 56800,
      preferredPostgresPort: 54410,
      inspect: true,
      env: { BCRYPT_COST: "10", PASSWORD_HASH_CONCURRENCY: "2", ACCESS_TOKEN_TTL_SECONDS: "3600" },
    },
    () => interrupt.stopped,
  );
  const server = quire;
  const inspector = server.inspector!;
  db = new pg.Client({ connectionString: server.superuserUrl, application_name: "bench-observer" });
  await db.connect();
  pool = new pg.Pool({ connectionString: server.superuserUrl, application_name: "bench-event-source", max: 4 });

  log(`setup: ${orgCount} organizations with a member and ${documentsPerOrg} documents each (not measured)`);
  const setupStarted = Date.now();
  const tenants = await createTenants(server.base, server.ownerUrl, orgCount, documentsPerOrg, "A document whose title the bench keeps changing.");
  setupMs = Date.now() - setupStarted;
  log(`setup done in ${(setupMs / 1000).toFixed(1)} s`);
  checkInterrupted();

  await sleep(settleSeconds * 1000);
  const heapBefore = await inspector.heapAfterGc();
  const rssBefore = rssOf(server.pid) ?? heapBefore.rss;
  const listenersBefore = await listenConnections(db);

  // --- subscribers ---
  const orgOfClient = (client: number) => Math.floor(client / clientsPerOrg);
  const documentsOf = tenants.map((t) => new Set(t.documentIds));
  const deliveries: Delivery[] = [];
  const warmupSeen = new Set<number>();
  let warmupSeqs: number[] = [];
  const onDeliveries = (batch: readonly Delivery[]) => {
    for (const delivery of batch) {
      deliveries.push(delivery);
      const seq = Number((delivery.data as DocumentChanged).seq);
      if (seq === warmupSeqs[orgOfClient(delivery.client)]) warmupSeen.add(delivery.client);
    }
  };
  const since = await lastSeqs(
    db,
    tenants.map((t) => t.orgId),
  );
  const specs = tenants.flatMap((tenant) =>
    Array.from({ length: clientsPerOrg }, (_, c) => ({
      id: tenant.index * clientsPerOrg + c,
      token: tenant.memberToken,
      variables: { since: String(since.get(tenant.orgId) ?? 0) },
    })),
  );
  log(`opening ${clientCount} subscribers (${clientsPerOrg} per organization) in ${threads} worker threads`);
  const openStarted = clock();
  clients = new LiveClients({ base: server.base, query: SUBSCRIPTION, clients: specs, threads, maxConnecting: 50, onDeliveries });
  const opened = await clients.opened();
  const openMs = clock() - openStarted;
  if (opened.failed > 0) throw new Error(`${opened.failed} of ${clientCount} subscribers could not connect: ${clients.problems[0]?.message ?? "?"}`);
  log(`${opened.connected} subscribers connected in ${fmtMs(openMs)}`);

  // One event per organization; every subscriber must receive its own before anything is measured.
  const warmupStarted = clock();
  const warmups = await Promise.all(tenants.map((t) => change(pool!, t, t.documentIds[0]!, "subscribed", false)));
  await resolveSeqs(pool!, warmups);
  warmupSeqs = warmups.map((e) => e.seq);
  for (const delivery of deliveries) {
    if (Number((delivery.data as DocumentChanged).seq) === warmupSeqs[orgOfClient(delivery.client)]) warmupSeen.add(delivery.client);
  }
  const warmupDeadline = Date.now() + 120_000;
  while (warmupSeen.size < clientCount) {
    checkInterrupted();
    if (clients.problems.length > 0) throw new Error(`subscriber problem during warm-up: ${clients.problems[0]!.message}`);
    if (Date.now() > warmupDeadline) throw new Error(`only ${warmupSeen.size} of ${clientCount} subscribers received the warm-up event within 120 s`);
    await sleep(50);
  }
  const warmupMs = clock() - warmupStarted;
  log(`every subscriber received its warm-up event (${fmtMs(warmupMs)} after they were sent)`);

  await sleep(settleSeconds * 1000);
  const heapAfter = await inspector.heapAfterGc();
  const rssAfter = rssOf(server.pid) ?? heapAfter.rss;
  log(
    `idle: RSS ${((rssAfter - rssBefore) / clientCount / 1024).toFixed(1)} KiB and heap ` +
      `${((heapAfter.heapUsed - heapBefore.heapUsed) / clientCount / 1024).toFixed(1)} KiB per subscription`,
  );
  deliveries.length = 0;

  // --- load: a warm-up at the same rate (its deliveries are checked, not timed), then the measured phase ---
  // The warm-up takes the cold start out of the numbers: the server's pool opening connections, V8 compiling the
  // delivery path. Changes go out on one fixed schedule across both, spread round-robin over the organizations.
  const events: ChangeEvent[] = [];
  const sendErrors: string[] = [];
  const interval = 1000 / rate;
  const warmupEvents = rate * warmupSeconds;
  const total = warmupEvents + rate * seconds;
  const inFlight = new Set<Promise<void>>();
  const scheduleStart = clock();
  let lateSends = 0;
  const produce = async (from: number, to: number, measured: boolean) => {
    for (let i = from; i < to && !interrupt.stopped; i++) {
      const wait = scheduleStart + i * interval - clock();
      if (wait > 0) await sleep(wait);
      else if (wait < -interval && measured) lateSends++;
      const tenant = tenants[i % orgCount]!;
      const documentId = tenant.documentIds[Math.floor(i / orgCount) % documentsPerOrg]!;
      const sending = change(pool!, tenant, documentId, `bench event ${i}`, measured).then(
        (event) => void events.push(event),
        (error: unknown) => void sendErrors.push(String(error)),
      );
      inFlight.add(sending);
      void sending.finally(() => inFlight.delete(sending));
    }
  };
  log(`warm-up: ${rate} events/s for ${warmupSeconds} s (deliveries checked, not timed)`);
  await produce(0, warmupEvents, false);
  const benchLoop = monitorEventLoopDelay({ resolution: 10 });
  benchLoop.enable();
  await clients.loopDelay(true);
  if (profile) await inspector.startProfile();
  const cpuFrom = liveCpuSnapshot(server.pid);
  const phaseStart = clock();
  log(`measuring: ${rate} events/s for ${seconds} s`);
  await produce(warmupEvents, total, true);
  await Promise.all([...inFlight]);
  const phaseSeconds = (clock() - phaseStart) / 1000;
  checkInterrupted();
  if (sendErrors.length > 0) throw new Error(`${sendErrors.length} changes failed: ${sendErrors[0]}`);

  // Wait until every expected delivery arrived (or the drain time ran out: then some are lost).
  const expected = events.length * clientsPerOrg;
  const drainStart = clock();
  await resolveSeqs(pool!, events);
  const byOrgSeq = new Map<string, ChangeEvent>(events.map((e) => [`${e.orgIndex}:${e.seq}`, e]));
  const countMeasured = () => deliveries.reduce((n, d) => n + (byOrgSeq.has(`${orgOfClient(d.client)}:${(d.data as DocumentChanged).seq}`) ? 1 : 0), 0);
  while (countMeasured() < expected && clock() - drainStart < drainSeconds * 1000 && !interrupt.stopped) await sleep(100);
  const drainedMs = clock() - drainStart;
  const cpu = cpuBetween(cpuFrom, liveCpuSnapshot(server.pid));
  const profileSummary = profile ? await inspector.stopProfile() : null;
  benchLoop.disable();
  const subscriberLoop = await clients.loopDelay(true);
  const listenersAfter = await listenConnections(db);

  // --- what arrived ---
  const seen = new Set<string>();
  const latencies: number[] = [];
  const bySecond = new Map<number, number[]>();
  let duplicated = 0;
  let unexpected = 0;
  let crossOrg = 0;
  let nullRereads = 0;
  let newerRereads = 0;
  for (const delivery of deliveries) {
    const org = orgOfClient(delivery.client);
    const data = delivery.data as DocumentChanged;
    const own = documentsOf[org]!;
    if (!own.has(data.entityId) || (data.documentId !== null && !own.has(data.documentId))) crossOrg++;
    const event = byOrgSeq.get(`${org}:${data.seq}`);
    if (!event) {
      unexpected++;
      continue;
    }
    const key = `${delivery.client}:${data.seq}`;
    if (seen.has(key)) {
      duplicated++;
      continue;
    }
    seen.add(key);
    if (event.measured) {
      latencies.push(delivery.at - event.sentAt);
      const second = Math.floor((event.sentAt - phaseStart) / 1000);
      bySecond.set(second, [...(bySecond.get(second) ?? []), delivery.at - event.sentAt]);
    }
    if (data.entityId !== event.documentId) crossOrg++;
    if (data.document === null) nullRereads++;
    else if (data.document !== undefined && data.document.title !== event.title) newerRereads++;
  }
  const benchLoopStats = { p50: benchLoop.percentile(50) / 1e6, p99: benchLoop.percentile(99) / 1e6, max: benchLoop.max / 1e6 };
  outcome = {
    openMs,
    warmupMs,
    heapBefore,
    heapAfter,
    rssBefore,
    rssAfter,
    listenersBefore,
    listenersAfter,
    sentEvents: events.filter((e) => e.measured).length,
    phaseSeconds,
    lateSends,
    source: summarise(events.filter((e) => e.measured).map((e) => e.sourceMs)),
    latency: summarise(latencies),
    expected,
    received: seen.size,
    lost: expected - seen.size,
    duplicated,
    unexpected,
    crossOrg,
    nullRereads,
    newerRereads,
    cpu,
    subscriberLoop,
    benchLoop: benchLoopStats,
    profile: profileSummary,
    drainedMs,
    timeline: [...bySecond.entries()].sort(([a], [b]) => a - b).map(([second, values]) => ({ second, latency: summarise(values) })),
  };

  if (outcome.lost > 0) failures.push(`${outcome.lost} of ${expected} deliveries were lost (not received within ${drainSeconds} s of the last change)`);
  if (duplicated > 0) failures.push(`${duplicated} deliveries were repeats of an event the subscriber already had`);
  if (unexpected > 0) failures.push(`${unexpected} deliveries were of events the bench did not make`);
  if (crossOrg > 0) failures.push(`${crossOrg} deliveries named a document of another organization`);
  if (nullRereads > 0) failures.push(`${nullRereads} deliveries re-read their document as null (it was never deleted)`);
  for (const [name, reading] of [
    ["before the subscribers", listenersBefore],
    ["after the measured phase", listenersAfter],
  ] as const) {
    if (reading.listeners !== 1) failures.push(`${reading.listeners} LISTEN connections ${name} (expected 1): ${reading.byApplication}`);
  }
  if (clients.problems.length > 0) {
    failures.push(`${clients.problems.length} subscriber problems, the first: client ${clients.problems[0]!.client}: ${clients.problems[0]!.message}`);
  }
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  if (clients) await clients.close().catch((error: unknown) => log(`closing the subscribers: ${String(error)}`));
  await pool?.end().catch(() => undefined);
  await db?.end().catch(() => undefined);
  if (quire) {
    log("stopping Quire (SIGTERM)");
    stopped = await quire.stop();
    if (stopped.code !== 0) failures.push(`Quire exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
    else log(`Quire exited with code 0 after ${(stopped.ms / 1000).toFixed(1)} s`);
  }
}

// --- report -------------------------------------------------------------------------------------------------------

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
const verdict = (met: boolean) => (met ? "**met**" : "**not met**");

function tables(o: Outcome): string {
  const rssPer = (o.rssAfter - o.rssBefore) / clientCount;
  const heapPer = (o.heapAfter.heapUsed - o.heapBefore.heapUsed) / clientCount;
  const externalPer = (o.heapAfter.external + o.heapAfter.arrayBuffers - o.heapBefore.external - o.heapBefore.arrayBuffers) / clientCount;
  const l = o.latency;
  return [
    `${whole(clientCount)} subscribers (${clientsPerOrg} per organization × ${orgCount}), each its own WebSocket, ` +
      `\`documentChanged(since)\` selecting \`${SELECTION}\`; ` +
      `${whole(o.sentEvents)} title changes at ${rate}/s over ${o.phaseSeconds.toFixed(1)} s, after a ${warmupSeconds} s warm-up at the same rate ` +
      `(timed: the measured phase; checked for exactly-once delivery: both).`,
    "",
    "| Measure | Result | Target (reported, not asserted) | |",
    "| --- | ---: | --- | --- |",
    `| Delivery latency p50 | ${fmtMs(l.p50)} | ≤ ${TARGET_P50_MS} ms | ${verdict(l.p50 <= TARGET_P50_MS)} |`,
    `| Delivery latency p90 / p99 / max | ${fmtMs(l.p90)} / ${fmtMs(l.p99)} / ${fmtMs(l.max)} | p99 ≤ ${TARGET_P99_MS} ms | ${verdict(l.p99 <= TARGET_P99_MS)} |`,
    `| Deliveries received / expected (warm-up included) | ${whole(o.received)} / ${whole(o.expected)} | all | ${verdict(o.lost === 0)} |`,
    `| Lost / repeated / unexpected deliveries | ${o.lost} / ${o.duplicated} / ${o.unexpected} | 0 / 0 / 0 | ${verdict(o.lost + o.duplicated + o.unexpected === 0)} |`,
    `| Cross-organization deliveries | ${o.crossOrg} | 0 | ${verdict(o.crossOrg === 0)} |`,
    `| Server memory per idle subscription: RSS | ${kib(rssPer)} | ≤ ${TARGET_BYTES_PER_SUBSCRIPTION / 1024} KiB | ${verdict(rssPer <= TARGET_BYTES_PER_SUBSCRIPTION)} |`,
    `| Server memory per idle subscription: V8 heap used (external + array buffers) | ${kib(heapPer)} (${kib(externalPer)}) | | |`,
    `| LISTEN connections (quire-listener), before / after | ${o.listenersBefore.listeners} / ${o.listenersAfter.listeners} | 1 | ${verdict(o.listenersBefore.listeners === 1 && o.listenersAfter.listeners === 1)} |`,
    "",
    "| Detail | Value |",
    "| --- | --- |",
    `| Change round trip (superuser update + outbox read, commit included) p50 / p99 | ${fmtMs(o.source.p50)} / ${fmtMs(o.source.p99)} |`,
    `| Changes sent more than one interval late (bench fell behind) | ${o.lateSends} |`,
    `| Re-reads that already saw a newer title | ${o.newerRereads} |`,
    `| Time for the last deliveries after the last change | ${fmtMs(o.drainedMs)} |`,
    `| Opening ${whole(clientCount)} subscribers (50 connecting at once) | ${fmtMs(o.openMs)} |`,
    `| Warm-up: one event per organization to all subscribers | ${fmtMs(o.warmupMs)} |`,
    `| Quire process after GC, no subscribers → ${whole(clientCount)} idle | RSS ${mib(o.rssBefore)} → ${mib(o.rssAfter)}, heap used ${mib(o.heapBefore.heapUsed)} → ${mib(o.heapAfter.heapUsed)} |`,
    `| CPU cores busy during the phase: all / Quire / PostgreSQL / bench / other | ${fmtCpu(o.cpu)} |`,
    `| Event-loop delay p99 (10 ms resolution): subscriber threads / bench main thread | ${fmtMs(o.subscriberLoop.p99)} / ${fmtMs(o.benchLoop.p99)} |`,
    `| Server connections (pg_stat_activity) after the phase | ${o.listenersAfter.byApplication} |`,
    ...(disturbance(o) ? ["", disturbance(o)!] : []),
  ].join("\n");
}

/** A warning when other processes used the machine before the run or during the phase, else null. */
function disturbance(o: Outcome): string | null {
  const before = quietCpu && quietCpu.other > DISTURBED_CORES ? `${quietCpu.other.toFixed(2)} cores before the run` : null;
  const during = o.cpu && o.cpu.other > DISTURBED_CORES ? `${o.cpu.other.toFixed(2)} cores during the phase` : null;
  if (!before && !during) return null;
  return `**Disturbed run:** other processes used ${[before, during].filter(Boolean).join(" and ")}; the numbers measure that contention as much as Quire.`;
}

function timelineTable(o: Outcome): string {
  return [
    "Delivery latency by second of the measured phase (by the change's send time):",
    "",
    "| Second | Deliveries | p50 | p99 | max |",
    "| ---: | ---: | ---: | ---: | ---: |",
    ...o.timeline.map(({ second, latency: l }) => `| ${second} | ${whole(l.count)} | ${fmtMs(l.p50)} | ${fmtMs(l.p99)} | ${fmtMs(l.max)} |`),
  ].join("\n");
}

function profileTable(p: ProfileSummary): string {
  return [
    `Quire's main thread, sampled during the measured phase (${fmtMs(p.totalMs)} profiled): self time by package and by function.`,
    "",
    "| Package | Self time | Share |",
    "| --- | ---: | ---: |",
    ...p.packages.map((e) => `| ${e.name} | ${fmtMs(e.ms)} | ${((e.ms / p.totalMs) * 100).toFixed(1)} % |`),
    "",
    "| Function | Self time | Share |",
    "| --- | ---: | ---: |",
    ...p.functions.map((e) => `| \`${e.name}\` | ${fmtMs(e.ms)} | ${((e.ms / p.totalMs) * 100).toFixed(1)} % |`),
  ].join("\n");
}

const facts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  `- Settings: BENCH_ORGS=${orgCount}, BENCH_CLIENTS_PER_ORG=${clientsPerOrg}, BENCH_RATE=${rate}, BENCH_SECONDS=${seconds}, ` +
    `BENCH_DOCS_PER_ORG=${documentsPerOrg}, BENCH_THREADS=${threads}, BENCH_SETTLE_SECONDS=${settleSeconds}, BENCH_WARMUP_SECONDS=${warmupSeconds}, ` +
    `BENCH_REREAD=${reread ? 1 : 0}, ` +
    `BENCH_PROFILE=${profile ? 1 : 0}`,
  `- Quire: \`node --inspect=127.0.0.1:0 bin/start.ts\` (server and worker in one process), fresh embedded PostgreSQL, LOG_LEVEL=warn, ` +
    `GRAPHILE_ENV=${process.env["GRAPHILE_ENV"] || "production"}, BCRYPT_COST=10, DATABASE_POOL_MAX=${process.env["DATABASE_POOL_MAX"] || "10"}` +
    (quire ? `; ready ${(quire.readyMs / 1000).toFixed(1)} s after spawn` : "") +
    (Number.isNaN(setupMs) ? "" : `; setup (organizations, members, documents) ${(setupMs / 1000).toFixed(1)} s`),
  `- Subscribers: graphql-ws clients over \`ws\` in ${threads} worker threads of the bench; events by the superuser over ` +
    `a pool of 4 connections; everything on this machine, over 127.0.0.1`,
  stopped
    ? `- Quire stopped on SIGTERM with exit code ${stopped.code}${stopped.signal ? ` (signal ${stopped.signal})` : ""} in ${(stopped.ms / 1000).toFixed(1)} s`
    : "- Quire was not started",
];
const body = outcome
  ? [tables(outcome), ...(outcome.profile ? ["", profileTable(outcome.profile)] : [])].join("\n")
  : "(no results: the run did not reach the measured phase)";
process.stdout.write(`${body}\n\n${facts.join("\n")}\n`);
if (outcome) process.stderr.write(`\n${timelineTable(outcome)}\n\n`);

await finishRun("subscriptions-latest.md", failures, () =>
  [
    "# Quire live subscriptions benchmark: latest run",
    "",
    "Written by `node bench/subscriptions.ts`; see bench/results/live.md for what is measured and how to read it.",
    "",
    ...facts,
    "",
    body,
    "",
    ...(outcome ? [timelineTable(outcome), ""] : []),
  ].join("\n"),
);
