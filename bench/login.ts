// `node bench/login.ts`: does a login storm starve reads? Steady, paced authenticated GraphQL reads, then many
// simultaneous logins at bcrypt cost 12 while the reads go on.
//
// 1. forks bench/login-server.ts: Quire's server (what bin/start.ts composes, without the worker) in a child process
//    with a fresh DATA_DIR under the OS temp directory, free ports, LOG_LEVEL=warn, GRAPHILE_ENV=production, and
//    perf_hooks.monitorEventLoopDelay running inside it, answering this process over IPC;
// 2. creates one organization and BENCH_LOGINS member accounts through app_admin as the owner (setup: PostgreSQL
//    hashes each password at cost 12, so this takes a while and is not measured);
// 3. signs in once as the owner for the reads' token, and times a bare bcrypt.compare at the server's cost here,
//    while nothing else runs;
// 4. fires `{ currentUser { email } currentOrganization { slug } }` with that token at BENCH_RATE per second on a
//    fixed schedule (open loop: latency counts from the scheduled start, so queueing shows): a warm-up that is
//    thrown away, then "before" (BENCH_READ_SECONDS), then "during": BENCH_LOGINS logins with distinct accounts
//    sent at once, the phase lasting until every login has answered (at least BENCH_STORM_MIN_SECONDS);
// 5. reports read p50/p99/max per phase, the server's (and this process's) event-loop delay per phase, login
//    p50/p95 beside the bare verify, errors, and the two targets (reported, not asserted); writes
//    bench/results/login-latest.md when the run was clean;
// 6. stops the server with SIGTERM (its exit code must be 0) and removes the temp DATA_DIR.
// All load goes to 127.0.0.1 and every wait is bounded. It exits 1 on any error: a read that fails or answers
// anything but the checked body, a login that fails other than with RATE_LIMITED, a failed start or stop.
// Progress goes to stderr; only the results go to stdout.
import { fork, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import bcrypt from "bcrypt";
import pg from "pg";
import type { ChildMessage, LoopDelayStats, ParentMessage, ReadyMessage } from "./login-server.ts";
import { envInt, freePort, log, running, whole, finishRun, machineFacts } from "./support.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 45_000; // the harness gives itself 40 s to stop
const IPC_TIMEOUT_MS = 5_000;
const READ_TIMEOUT_MS = 30_000;
const PREFERRED_QUIRE_PORT = 56790;
const PREFERRED_POSTGRES_PORT = 54400;
const BCRYPT_COST = 12;
const PASSWORD = "bench passphrase 2026";
const OWNER_EMAIL = "owner@bench.example";
const ORGANIZATION = "Bench Org";
// What the issue asks of a login storm.
const TARGET_READ_P99_FACTOR = 2;
const TARGET_LOOP_DELAY_P99_MS = 20;
const LOOP_DELAY_RESOLUTION_MS = 10;

// The read token lives ACCESS_TOKEN_TTL_SECONDS (15 min by default): the phases must fit well inside it.
const readSeconds = envInt("BENCH_READ_SECONDS", 30, 1, 600);
const rate = envInt("BENCH_RATE", 200, 1, 2000);
const loginCount = envInt("BENCH_LOGINS", 100, 1, 1000);
const stormMinSeconds = envInt("BENCH_STORM_MIN_SECONDS", 5, 1, 120);
const warmupSeconds = envInt("BENCH_WARMUP_SECONDS", 2, 0, 60);
const bcryptSamples = envInt("BENCH_BCRYPT_SAMPLES", 5, 1, 50);
const graphileEnv = process.env["GRAPHILE_ENV"] || "production";
// Each login waits its turn for the server's bcrypt slots; generous, but bounded.
const loginTimeoutMs = 60_000 + loginCount * 2_000;

// Ctrl-C (or SIGTERM) aborts every request in flight and ends the loops; the finally block then cleans up.
const abortAll = new AbortController();
let interrupted = false;
const checkInterrupted = () => {
  if (interrupted) throw new Error("interrupted");
};
/** A wait that a signal cuts short (then throws "interrupted"). */
const pause = async (ms: number) => {
  await sleep(ms, undefined, { signal: abortAll.signal }).catch(() => {});
  checkInterrupted();
};

// --- ports and the server process -----------------------------------------------------------------------------

interface Harness {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly ready: Promise<ReadyMessage>;
  /** The server's event-loop delay since the last reset; `reset` starts a new period. */
  loopDelay(reset: boolean): Promise<LoopDelayStats>;
  /** The last lines the server wrote (it runs at LOG_LEVEL=warn, so normally none), for error reports. */
  readonly tail: string[];
}

function startHarness(port: number, postgresPort: number, dataDir: string): Harness {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: dataDir,
    EMBEDDED_POSTGRES_PORT: String(postgresPort),
    BCRYPT_COST: String(BCRYPT_COST),
    LOG_LEVEL: "warn",
    LOG_PRETTY: "false",
    GRAPHILE_ENV: graphileEnv,
    // Empty counts as unset for Quire: always the embedded PostgreSQL.
    DATABASE_URL: "",
    OWNER_DATABASE_URL: "",
    ROOT_DATABASE_URL: "",
  };
  delete env["NODE_ENV"]; // Quire's default (development); production would demand DATABASE_URL
  // Its own process group: a Ctrl-C at the terminal reaches only the bench, which then stops the server itself.
  const child = fork(path.join(root, "bench", "login-server.ts"), [], {
    cwd: root,
    env,
    execArgv: [],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    detached: true,
    serialization: "json",
  });
  const tail: string[] = [];
  const forward = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue;
      process.stderr.write(`[quire] ${line}\n`);
      tail.push(line);
      if (tail.length > 30) tail.shift();
    }
  };
  child.stdout!.on("data", forward);
  child.stderr!.on("data", forward);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );

  const pending = new Map<number, (stats: LoopDelayStats) => void>();
  let nextId = 1;
  let onReady: (message: ReadyMessage) => void = () => {};
  let onFailed: (error: Error) => void = () => {};
  const ready = new Promise<ReadyMessage>((resolve, reject) => {
    onReady = resolve;
    onFailed = reject;
  });
  ready.catch(() => {}); // handled where it is awaited
  child.on("message", (raw) => {
    const message = raw as ChildMessage;
    if (message.type === "ready") onReady(message);
    else if (message.type === "failed") onFailed(new Error(`the server failed to start: ${message.message}`));
    else if (message.type === "eld") {
      pending.get(message.id)?.(message.stats);
      pending.delete(message.id);
    }
  });
  void exited.then(({ code, signal }) => onFailed(new Error(`the server exited (code ${code}, signal ${signal})\n${tail.join("\n")}`)));

  return {
    child,
    exited,
    ready,
    tail,
    loopDelay(reset) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`the server did not report its event-loop delay within ${IPC_TIMEOUT_MS / 1000} s`));
        }, IPC_TIMEOUT_MS);
        pending.set(id, (stats) => {
          clearTimeout(timer);
          resolve(stats);
        });
        const message: ParentMessage = { cmd: "eld", id, reset };
        child.send(message);
      });
    },
  };
}

async function waitUntilReady(harness: Harness): Promise<ReadyMessage> {
  const timeout = Symbol("timeout");
  const result = await Promise.race([harness.ready, sleep(READY_TIMEOUT_MS, timeout, { ref: false })]);
  if (result === timeout) throw new Error(`the server was not ready within ${READY_TIMEOUT_MS / 1000} s`);
  return result as ReadyMessage;
}

/** SIGTERM, then waits for the exit (SIGKILL after STOP_TIMEOUT_MS). */
async function stopHarness(harness: Harness): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const started = Date.now();
  if (running(harness.child)) harness.child.kill("SIGTERM");
  const timedOut = Symbol("timed out");
  const result = await Promise.race([harness.exited, sleep(STOP_TIMEOUT_MS, timedOut, { ref: false })]);
  if (result === timedOut) {
    log(`the server did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM: sending SIGKILL`);
    harness.child.kill("SIGKILL");
    return { ...(await harness.exited), ms: Date.now() - started };
  }
  return { ...(result as Awaited<Harness["exited"]>), ms: Date.now() - started };
}

// --- setup: accounts --------------------------------------------------------------------------------------------

const memberEmail = (i: number) => `user${i}@bench.example`;

/** One organization (its owner is OWNER_EMAIL) and `count` members, through the operator functions as the owner.
 *  Resolves with the organization's slug. */
async function createAccounts(ownerUrl: string, count: number): Promise<string> {
  const deadline = Date.now() + 120_000 + count * 3_000;
  const connect = async () => {
    const client = new pg.Client({ connectionString: ownerUrl, application_name: "quire-bench-setup", query_timeout: 60_000 });
    await client.connect();
    return client;
  };
  const clients: pg.Client[] = [];
  try {
    const first = await connect();
    clients.push(first);
    const { rows } = await first.query<{ slug: string }>("select (app_admin.create_organization($1, $2, $3, $4)).slug", [
      ORGANIZATION,
      OWNER_EMAIL,
      "Owner",
      PASSWORD,
    ]);
    const slug = rows[0]!.slug;
    // The reads come from one user at BENCH_RATE a second, far over a tier's default request limits; this bench
    // measures what hashing does to reads, not the rate limits, so the tier's limits are raised out of the way.
    await first.query("select app_admin.set_tier_rate_limit('free', 1000000, 1000000)");
    // Each add_user hashes in PostgreSQL (pgcrypto, cost 12): one connection per core keeps them all busy.
    const parallel = Math.max(1, Math.min(os.availableParallelism(), count));
    while (clients.length < parallel) clients.push(await connect());
    let next = 1;
    let done = 0;
    let lastReport = Date.now();
    await Promise.all(
      clients.map(async (client) => {
        while (next <= count) {
          checkInterrupted();
          if (Date.now() > deadline) throw new Error("creating the accounts took too long");
          const i = next++;
          await client.query("select app_admin.add_user($1, $2, $3, 'member', $4)", [slug, memberEmail(i), `User ${i}`, PASSWORD]);
          done++;
          if (Date.now() - lastReport >= 5_000) {
            lastReport = Date.now();
            log(`  ${done} of ${count} accounts created`);
          }
        }
      }),
    );
    return slug;
  } finally {
    await Promise.allSettled(clients.map((client) => client.end()));
  }
}

// --- requests ---------------------------------------------------------------------------------------------------

const READ_QUERY = "{ currentUser { email } currentOrganization { slug } }";
const LOGIN_MUTATION = "mutation ($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }";

interface GraphQLAnswer {
  readonly status: number;
  readonly text: string;
}

async function post(url: string, body: string, timeoutMs: number, token?: string): Promise<GraphQLAnswer> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
  if (token !== undefined) headers["authorization"] = `Bearer ${token}`;
  const response = await fetch(url, {
    method: "POST",
    headers,
    body,
    signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), abortAll.signal]),
  });
  return { status: response.status, text: await response.text() };
}

/** A short, stable description of an unexpected answer (no per-request ids), to count errors by kind. */
function describe(answer: GraphQLAnswer): string {
  try {
    const parsed = JSON.parse(answer.text) as { errors?: Array<{ message?: unknown; extensions?: { code?: unknown } }> };
    const first = parsed.errors?.[0];
    if (first) return `HTTP ${answer.status} ${String(first.extensions?.code ?? "no code")}: ${String(first.message).slice(0, 120)}`;
  } catch {
    // not JSON: described by its text below
  }
  return `HTTP ${answer.status}: ${answer.text.slice(0, 120)}`;
}

const describeFailure = (error: unknown) => {
  const cause = (error as Error).cause ?? error;
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
};

const topKinds = (kinds: ReadonlyMap<string, number>, n = 5) =>
  [...kinds.entries()]
    .sort(([, a], [, b]) => b - a)
    .slice(0, n)
    .map(([kind, count]) => `${count} × ${kind}`)
    .join("; ");

type LoginOutcome =
  | { readonly kind: "ok"; readonly token: string }
  | { readonly kind: "rate-limited"; readonly retryAfterSeconds: unknown }
  | { readonly kind: "error"; readonly detail: string };

interface LoginBody {
  data?: { login?: { accessToken?: unknown } | null } | null;
  errors?: Array<{ message?: unknown; extensions?: { code?: unknown; retryAfterSeconds?: unknown } }>;
}

async function login(url: string, email: string): Promise<LoginOutcome> {
  let answer: GraphQLAnswer;
  try {
    answer = await post(url, JSON.stringify({ query: LOGIN_MUTATION, variables: { e: email, p: PASSWORD } }), loginTimeoutMs);
  } catch (error) {
    return { kind: "error", detail: describeFailure(error) };
  }
  let parsed: LoginBody;
  try {
    parsed = JSON.parse(answer.text) as LoginBody;
  } catch {
    return { kind: "error", detail: describe(answer) };
  }
  const first = parsed.errors?.[0];
  if (first?.extensions?.code === "RATE_LIMITED") return { kind: "rate-limited", retryAfterSeconds: first.extensions.retryAfterSeconds };
  const token = parsed.data?.login?.accessToken;
  if (answer.status === 200 && parsed.errors === undefined && typeof token === "string" && token !== "") return { kind: "ok", token };
  return { kind: "error", detail: describe(answer) };
}

// --- paced reads ------------------------------------------------------------------------------------------------

type Phase = "warm-up" | "before" | "during" | "after";

interface ReadSample {
  readonly phase: Phase;
  /** performance.now() of the scheduled start. */
  readonly at: number;
  readonly ms: number;
}

/** Open-loop reads: one every 1000/rate ms on a fixed schedule, whatever the answers do. */
class PacedReads {
  readonly samples: ReadSample[] = [];
  readonly sent = new Map<Phase, number>();
  readonly errors = new Map<Phase, number>();
  readonly errorKinds = new Map<string, number>();
  private readonly phases: Array<{ phase: Phase; from: number }> = [];
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private loop: Promise<void> | null = null;
  private readonly url: string;
  private readonly body: string;
  private readonly token: string;
  private readonly expected: string;

  constructor(url: string, token: string, expected: string) {
    this.url = url;
    this.body = JSON.stringify({ query: READ_QUERY });
    this.token = token;
    this.expected = expected;
  }

  /** Reads scheduled from now on belong to `phase`; returns the moment it started. */
  enter(phase: Phase): number {
    const from = performance.now();
    this.phases.push({ phase, from });
    return from;
  }

  start(): void {
    this.loop = this.run();
  }

  private phaseAt(at: number): Phase {
    for (let i = this.phases.length - 1; i >= 0; i--) {
      const entry = this.phases[i]!;
      if (entry.from <= at) return entry.phase;
    }
    return this.phases[0]?.phase ?? "warm-up";
  }

  private async run(): Promise<void> {
    const interval = 1000 / rate;
    let next = performance.now();
    while (!this.stopped && !interrupted) {
      const now = performance.now();
      // Late (this process's loop was busy): fire every read that is due, each still timed from its own slot.
      while (next <= now) {
        this.fire(next);
        next += interval;
      }
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait);
    }
  }

  private fire(at: number): void {
    const phase = this.phaseAt(at);
    this.sent.set(phase, (this.sent.get(phase) ?? 0) + 1);
    const request = post(this.url, this.body, READ_TIMEOUT_MS, this.token).then(
      (answer) => {
        const ms = performance.now() - at;
        if (answer.status === 200 && answer.text === this.expected) this.samples.push({ phase, at, ms });
        else this.fail(phase, describe(answer));
      },
      (error: unknown) => this.fail(phase, describeFailure(error)),
    );
    this.inFlight.add(request);
    void request.finally(() => this.inFlight.delete(request));
  }

  private fail(phase: Phase, kind: string): void {
    this.errors.set(phase, (this.errors.get(phase) ?? 0) + 1);
    this.errorKinds.set(kind, (this.errorKinds.get(kind) ?? 0) + 1);
  }

  /** Stops scheduling and waits (bounded by the reads' own timeout) for the reads in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    const drained = Promise.allSettled([...this.inFlight]).then(() => true);
    const done = await Promise.race([drained, sleep(READ_TIMEOUT_MS + 5_000, false, { ref: false })]);
    if (!done) throw new Error(`${this.inFlight.size} reads still in flight ${(READ_TIMEOUT_MS + 5_000) / 1000} s after the last was sent`);
  }

  latencies(phase: Phase): number[] {
    return this.samples.filter((s) => s.phase === phase).map((s) => s.ms);
  }
}

// --- statistics and formatting ----------------------------------------------------------------------------------

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

const ascending = (values: readonly number[]) => [...values].sort((a, b) => a - b);

function fmtMs(value: number): string {
  if (Number.isNaN(value)) return "–";
  if (value < 10) return `${value.toFixed(2)} ms`;
  if (value < 100) return `${value.toFixed(1)} ms`;
  return `${whole(value)} ms`;
}

interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
}

function summarise(values: readonly number[]): LatencySummary {
  const sorted = ascending(values);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? NaN,
  };
}

/** This process's own event-loop delay: if the load generator itself lags, its latencies say less. */
const clientLoop = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });

function clientLoopDelay(reset: boolean): LoopDelayStats {
  const empty = clientLoop.count === 0;
  const stats: LoopDelayStats = {
    p50: empty ? 0 : clientLoop.percentile(50) / 1e6,
    p99: empty ? 0 : clientLoop.percentile(99) / 1e6,
    max: empty ? 0 : clientLoop.max / 1e6,
    mean: empty ? 0 : clientLoop.mean / 1e6,
    count: clientLoop.count,
  };
  if (reset) clientLoop.reset();
  return stats;
}

// --- CPU accounting (Linux /proc) ------------------------------------------------------------------------------
// The box has few cores and other work may run on it (tests, builds): each phase reports how much CPU the whole
// machine, this bench with its server (and the server's PostgreSQL), and everything else used, so a run disturbed
// by other work can be told from one that was not.

const USER_HZ = 100; // the unit of /proc/stat and /proc/<pid>/stat on Linux

interface CpuSnapshot {
  readonly at: number;
  /** Machine-wide busy ticks (user, nice, system, irq, softirq), and ticks stolen by the hypervisor. */
  readonly busy: number;
  readonly steal: number;
  /** Ticks (including reaped children) of this process, the server's Node process, and its descendants
   *  (the embedded PostgreSQL's processes). */
  readonly bench: number;
  readonly server: number;
  readonly postgres: number;
}

interface CpuUse {
  /** In cores (1 = one core busy for the whole period). */
  readonly all: number;
  readonly bench: number;
  readonly server: number;
  readonly postgres: number;
  readonly other: number;
  readonly steal: number;
}

/** pid → [ppid, user+system ticks including reaped children]. */
function processTable(): Map<number, [number, number]> {
  const table = new Map<number, [number, number]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
      table.set(Number(entry), [Number(fields[1]), ticks]);
    } catch {
      // the process ended while we looked
    }
  }
  return table;
}

function cpuSnapshot(serverPid: number | undefined): CpuSnapshot | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    const table = processTable();
    const bench = table.get(process.pid)?.[1] ?? 0;
    let server = 0;
    let postgres = 0;
    if (serverPid !== undefined) {
      server = table.get(serverPid)?.[1] ?? 0;
      const children = new Map<number, number[]>();
      for (const [pid, [ppid]] of table) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
      const queue = [...(children.get(serverPid) ?? [])];
      while (queue.length > 0) {
        const pid = queue.pop()!;
        postgres += table.get(pid)?.[1] ?? 0;
        queue.push(...(children.get(pid) ?? []));
      }
    }
    const busy = user! + nice! + system! + irq! + softirq!;
    if (Number.isNaN(busy)) return null;
    return { at: performance.now(), busy, steal: steal ?? 0, bench, server, postgres };
  } catch {
    return null; // no /proc: not Linux
  }
}

function cpuBetween(a: CpuSnapshot | null, b: CpuSnapshot | null): CpuUse | null {
  if (!a || !b) return null;
  const seconds = (b.at - a.at) / 1000;
  if (seconds <= 0) return null;
  const cores = (ticks: number) => ticks / USER_HZ / seconds;
  const all = cores(b.busy - a.busy);
  const bench = cores(b.bench - a.bench);
  const server = cores(b.server - a.server);
  const postgres = cores(b.postgres - a.postgres);
  return { all, bench, server, postgres, other: Math.max(0, all - bench - server - postgres), steal: cores(b.steal - a.steal) };
}

const fmtCpu = (use: CpuUse | null) => (use ? [use.all, use.server, use.postgres, use.bench, use.other].map((n) => n.toFixed(2)).join(" / ") : "–");

// --- main -------------------------------------------------------------------------------------------------------

interface PhaseReport {
  readonly seconds: number;
  readonly sent: number;
  readonly errors: number;
  readonly reads: LatencySummary;
  readonly server: LoopDelayStats;
  readonly client: LoopDelayStats;
  readonly cpu: CpuUse | null;
}

interface LoginReport {
  readonly ok: number;
  readonly rateLimited: number;
  readonly errors: number;
  readonly latency: LatencySummary;
}

const failures: string[] = [];
let harness: Harness | null = null;
let ready: ReadyMessage | null = null;
let dataDir: string | null = null;
let reads: PacedReads | null = null;
let before: PhaseReport | null = null;
let during: PhaseReport | null = null;
let logins: LoginReport | null = null;
const verifyMs: number[] = [];
let setupMs: number | null = null;
let startMs: number | null = null;
let stormTimeline: Array<{ second: number; count: number; p99: number; max: number }> = [];
let stopped: Awaited<ReturnType<typeof stopHarness>> | null = null;
let quietCpu: CpuUse | null = null;

const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping the run and cleaning up`);
  abortAll.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
// Last resort if this process ends some other way: the server must not outlive it.
process.on("exit", () => {
  if (harness && running(harness.child)) harness.child.kill("SIGTERM");
});

try {
  // What else is running: other work on the box skews every number below.
  const quietFrom = cpuSnapshot(undefined);
  await sleep(1_000);
  quietCpu = cpuBetween(quietFrom, cpuSnapshot(undefined));
  if (quietCpu) {
    log(`before starting, other processes used ${quietCpu.other.toFixed(2)} of ${os.availableParallelism()} cores`);
    if (quietCpu.other > 0.2) log("WARNING: the machine is not idle; the results will be disturbed by that other work");
  }
  dataDir = await mkdtemp(path.join(os.tmpdir(), "quire-bench-login-"));
  // Run as root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter DATA_DIR.
  await chmod(dataDir, 0o755);
  const port = await freePort(PREFERRED_QUIRE_PORT, []);
  const postgresPort = await freePort(PREFERRED_POSTGRES_PORT, [port]);
  log(`starting the server on 127.0.0.1:${port} (embedded PostgreSQL on ${postgresPort}, DATA_DIR ${dataDir})`);
  const started = Date.now();
  harness = startHarness(port, postgresPort, dataDir);
  ready = await waitUntilReady(harness);
  startMs = Date.now() - started;
  log(
    `server ready after ${(startMs / 1000).toFixed(1)} s (bcrypt cost ${ready.bcryptCost}, ` +
      `${ready.passwordHashConcurrency} at once; pool of ${ready.poolMax})`,
  );
  const url = `http://127.0.0.1:${ready.port}/graphql`;

  log(`creating the organization and ${loginCount} member accounts (setup, not measured)`);
  const setupStarted = Date.now();
  const slug = await createAccounts(ready.ownerUrl, loginCount);
  setupMs = Date.now() - setupStarted;
  log(`accounts created in ${(setupMs / 1000).toFixed(1)} s`);
  checkInterrupted();

  // The reads' token, and the one answer every read must then give.
  const owner = await login(url, OWNER_EMAIL);
  if (owner.kind !== "ok") throw new Error(`signing in as ${OWNER_EMAIL} failed: ${JSON.stringify(owner)}`);
  const probe = await post(url, JSON.stringify({ query: READ_QUERY }), 5_000, owner.token);
  const expected = JSON.stringify({ data: { currentUser: { email: OWNER_EMAIL }, currentOrganization: { slug } } });
  if (probe.status !== 200 || probe.text !== expected) throw new Error(`the read answered ${probe.status}: ${probe.text.slice(0, 300)}`);

  // One bare bcrypt verification at the server's cost, timed here while nothing else runs.
  const hash = await bcrypt.hash(PASSWORD, ready.bcryptCost);
  await bcrypt.compare(PASSWORD, hash); // warm-up
  for (let i = 0; i < bcryptSamples; i++) {
    const t0 = performance.now();
    const matches = await bcrypt.compare(PASSWORD, hash);
    verifyMs.push(performance.now() - t0);
    if (!matches) throw new Error("bcrypt.compare did not match its own hash");
  }
  log(`bare bcrypt verify at cost ${ready.bcryptCost}: median ${fmtMs(percentile(ascending(verifyMs), 50))} of ${bcryptSamples}`);
  checkInterrupted();

  clientLoop.enable();
  reads = new PacedReads(url, owner.token, expected);
  reads.enter("warm-up");
  reads.start();
  log(`reads at ${rate}/s: warm-up ${warmupSeconds} s`);
  await pause(warmupSeconds * 1000);

  // Phase 1: reads only.
  await harness.loopDelay(true);
  clientLoopDelay(true);
  const beforeCpu = cpuSnapshot(harness.child.pid);
  const beforeFrom = reads.enter("before");
  log(`before: reads only for ${readSeconds} s`);
  await pause(readSeconds * 1000);

  // Phase 2: the same reads, and every login at once.
  const duringFrom = reads.enter("during");
  const beforeServer = await harness.loopDelay(true);
  const beforeClient = clientLoopDelay(true);
  const duringCpu = cpuSnapshot(harness.child.pid);
  log(`during: ${loginCount} logins at once, reads going on`);
  const stormStart = performance.now();
  let lastLogin = stormStart;
  const loginMs: number[] = [];
  const outcomes = await Promise.all(
    Array.from({ length: loginCount }, (_, i) =>
      login(url, memberEmail(i + 1)).then((outcome) => {
        lastLogin = performance.now();
        if (outcome.kind === "ok") loginMs.push(lastLogin - stormStart);
        return outcome;
      }),
    ),
  );
  log(`all ${loginCount} logins answered after ${fmtMs(lastLogin - stormStart)}`);
  const minEnd = stormStart + stormMinSeconds * 1000;
  if (performance.now() < minEnd) await pause(minEnd - performance.now());
  checkInterrupted();
  const duringEnd = reads.enter("after"); // the few reads sent while the phase is wound up are not counted
  const duringServer = await harness.loopDelay(true);
  const duringClient = clientLoopDelay(true);
  const endCpu = cpuSnapshot(harness.child.pid);
  await reads.stop();
  clientLoop.disable();

  const loginErrors = new Map<string, number>();
  for (const outcome of outcomes) {
    if (outcome.kind === "error") loginErrors.set(outcome.detail, (loginErrors.get(outcome.detail) ?? 0) + 1);
  }
  logins = {
    ok: outcomes.filter((o) => o.kind === "ok").length,
    rateLimited: outcomes.filter((o) => o.kind === "rate-limited").length,
    errors: outcomes.filter((o) => o.kind === "error").length,
    latency: summarise(loginMs),
  };
  before = {
    seconds: (duringFrom - beforeFrom) / 1000,
    sent: reads.sent.get("before") ?? 0,
    errors: reads.errors.get("before") ?? 0,
    reads: summarise(reads.latencies("before")),
    server: beforeServer,
    client: beforeClient,
    cpu: cpuBetween(beforeCpu, duringCpu),
  };
  during = {
    seconds: (duringEnd - duringFrom) / 1000,
    sent: reads.sent.get("during") ?? 0,
    errors: reads.errors.get("during") ?? 0,
    reads: summarise(reads.latencies("during")),
    server: duringServer,
    client: duringClient,
    cpu: cpuBetween(duringCpu, endCpu),
  };
  const bySecond = new Map<number, number[]>();
  for (const sample of reads.samples) {
    if (sample.phase !== "during") continue;
    const second = Math.floor((sample.at - duringFrom) / 1000);
    const bucket = bySecond.get(second) ?? [];
    bucket.push(sample.ms);
    bySecond.set(second, bucket);
  }
  stormTimeline = [...bySecond.entries()]
    .sort(([a], [b]) => a - b)
    .map(([second, values]) => {
      const s = summarise(values);
      return { second, count: s.count, p99: s.p99, max: s.max };
    });

  const warmupErrors = reads.errors.get("warm-up") ?? 0;
  const afterErrors = reads.errors.get("after") ?? 0;
  const readErrors = warmupErrors + before.errors + during.errors + afterErrors;
  if (readErrors > 0) {
    failures.push(
      `${readErrors} reads failed (warm-up ${warmupErrors}, before ${before.errors}, during ${during.errors}, ` +
        `after ${afterErrors}): ` +
        topKinds(reads.errorKinds),
    );
  }
  if (logins.errors > 0) failures.push(`${logins.errors} logins failed: ${topKinds(loginErrors)}`);
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
  if (reads) await reads.stop().catch(() => {});
} finally {
  clientLoop.disable();
  if (harness) {
    log("stopping the server (SIGTERM)");
    stopped = await stopHarness(harness);
    if (stopped.code !== 0) failures.push(`the server exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
    else log(`the server exited with code 0 after ${(stopped.ms / 1000).toFixed(1)} s`);
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
}

// --- report -----------------------------------------------------------------------------------------------------

const verifyMedian = percentile(ascending(verifyMs), 50);
// Other work on the machine during a measured phase makes the run say little about Quire: flag it.
const DISTURBED_CORES = 0.2;
const disturbance = (
  [
    ["before the storm", before?.cpu],
    ["during the storm", during?.cpu],
  ] as const
)
  .filter(([, use]) => use && use.other > DISTURBED_CORES)
  .map(([name, use]) => `${use!.other.toFixed(2)} cores ${name}`);
const disturbedLine =
  disturbance.length > 0
    ? `**Disturbed run:** other processes used ${disturbance.join(" and ")} (more than ${DISTURBED_CORES}); ` +
      "the numbers measure that contention as much as Quire. Run again on an idle machine."
    : null;
const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? (a / b).toFixed(1) : "–");
const yes = (met: boolean) => (met ? "**met**" : "**not met**");

function tables(): string {
  if (!before || !during || !logins) return "(no results: the run did not reach the measured phases)";
  const loopCell = (s: LoopDelayStats) => `${fmtMs(s.p50)} / ${fmtMs(s.p99)} / ${fmtMs(s.max)}`;
  const phaseRow = (name: string, p: PhaseReport) =>
    `| ${name} | ${p.seconds.toFixed(1)} s | ${whole(p.sent)} | ${p.errors} | ${fmtMs(p.reads.p50)} | ${fmtMs(p.reads.p99)} | ` +
    `${fmtMs(p.reads.max)} | ${loopCell(p.server)} | ${fmtMs(p.client.p99)} | ${fmtCpu(p.cpu)} |`;
  const readLimit = TARGET_READ_P99_FACTOR * before.reads.p99;
  const readMet = during.reads.p99 <= readLimit;
  const loopMet = during.server.p99 <= TARGET_LOOP_DELAY_P99_MS;
  const errorCount = before.errors + during.errors + logins.errors;
  const { latency } = logins;
  return [
    `Reads: \`${READ_QUERY}\` with a bearer token, ${rate}/s on a fixed schedule, latency from the scheduled start.`,
    "",
    "| Phase | Length | Reads | Errors | Read p50 | Read p99 | Read max | Server event-loop delay p50 / p99 / max | Bench event-loop delay p99 | CPU cores busy: all / server / PostgreSQL / bench / other |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    phaseRow("before the storm", before),
    phaseRow(`during the storm (${loginCount} login${loginCount === 1 ? "" : "s"})`, during),
    "",
    `Logins: ${loginCount} distinct accounts at once, bcrypt cost ${ready?.bcryptCost ?? BCRYPT_COST}, ` +
      `the server verifying ${ready?.passwordHashConcurrency ?? "?"} at a time. Latency from the moment all were sent.`,
    "",
    "| Logins | Signed in | RATE_LIMITED | Errors | p50 | p95 | max | Bare bcrypt verify (median) | p95 ÷ verify |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    `| ${loginCount} | ${logins.ok} | ${logins.rateLimited} | ${logins.errors} | ${fmtMs(latency.p50)} | ${fmtMs(latency.p95)} | ` +
      `${fmtMs(latency.max)} | ${fmtMs(verifyMedian)} (of ${verifyMs.length}) | ${ratio(latency.p95, verifyMedian)} |`,
    "",
    "| Target (reported, not asserted) | Measured | Result |",
    "| --- | --- | --- |",
    `| Read p99 during the storm ≤ ${TARGET_READ_P99_FACTOR}× before | ${fmtMs(during.reads.p99)} against ${fmtMs(readLimit)} ` +
      `(${TARGET_READ_P99_FACTOR} × ${fmtMs(before.reads.p99)}): ${ratio(during.reads.p99, before.reads.p99)}× | ${yes(readMet)} |`,
    `| Server event-loop delay p99 during the storm ≤ ${TARGET_LOOP_DELAY_P99_MS} ms | ${fmtMs(during.server.p99)} | ${yes(loopMet)} |`,
    `| No errors (RATE_LIMITED excepted) | ${errorCount} | ${yes(errorCount === 0)} |`,
  ].join("\n");
}

function timeline(): string {
  if (stormTimeline.length === 0) return "";
  return [
    "Reads during the storm, by second since it started (by scheduled start):",
    "",
    "| Second | Reads | p99 | max |",
    "| ---: | ---: | ---: | ---: |",
    ...stormTimeline.map((b) => `| ${b.second} | ${b.count} | ${fmtMs(b.p99)} | ${fmtMs(b.max)} |`),
  ].join("\n");
}

const facts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  `- bcrypt (native) for the bare verify`,
  `- Settings: BENCH_READ_SECONDS=${readSeconds}, BENCH_RATE=${rate}, BENCH_LOGINS=${loginCount}, ` +
    `BENCH_STORM_MIN_SECONDS=${stormMinSeconds}, BENCH_WARMUP_SECONDS=${warmupSeconds}, BENCH_BCRYPT_SAMPLES=${bcryptSamples}`,
  `- Server: bench/login-server.ts (Quire's server in-process, no worker), fresh embedded PostgreSQL, LOG_LEVEL=warn, ` +
    `GRAPHILE_ENV=${graphileEnv}, BCRYPT_COST=${ready?.bcryptCost ?? BCRYPT_COST}, ` +
    `PASSWORD_HASH_CONCURRENCY=${ready?.passwordHashConcurrency ?? "?"}, DATABASE_POOL_MAX=${ready?.poolMax ?? "?"}` +
    (startMs === null ? "" : `; ready ${(startMs / 1000).toFixed(1)} s after spawn`) +
    (setupMs === null ? "" : `; ${loginCount} accounts created in ${(setupMs / 1000).toFixed(1)} s`),
  `- Load generated by the bench process (global fetch, keep-alive) on the same machine, to 127.0.0.1`,
  `- CPU (from /proc, in cores of ${os.availableParallelism()}): "server" is the server's Node process (bcrypt's ` +
    `threads included), "PostgreSQL" its embedded database, "bench" this process, "other" everything else` +
    (quietCpu ? `; other processes used ${quietCpu.other.toFixed(2)} cores in the second before the run` : "") +
    (before?.cpu && during?.cpu ? `; hypervisor steal ${before.cpu.steal.toFixed(2)} cores before the storm, ${during.cpu.steal.toFixed(2)} during` : ""),
  `- Event-loop delay: perf_hooks.monitorEventLoopDelay at ${LOOP_DELAY_RESOLUTION_MS} ms resolution; it records ` +
    `each timer interval whole, so an idle loop reads about ${LOOP_DELAY_RESOLUTION_MS} ms`,
  stopped
    ? `- The server stopped on SIGTERM with exit code ${stopped.code}${stopped.signal ? ` (signal ${stopped.signal})` : ""} ` +
      `in ${(stopped.ms / 1000).toFixed(1)} s`
    : "- The server was not started",
];
const body = [tables(), "", timeline()].join("\n").trimEnd();
const report = [
  "# Quire login-storm benchmark: latest run",
  "",
  'Written by `node bench/login.ts`; see the "Login storm" section of bench/README.md for what is measured and how to read it.',
  "",
  ...facts,
  "",
  ...(disturbedLine ? [disturbedLine, ""] : []),
  body,
  "",
].join("\n");

process.stdout.write(`${tables()}\n\n${facts.join("\n")}\n${disturbedLine ? `\n${disturbedLine}\n` : ""}`);
if (disturbedLine) log(disturbedLine.replaceAll("**", ""));

if (failures.length === 0 && stormTimeline.length > 0) process.stderr.write(`\n${timeline()}\n\n`);
await finishRun("login-latest.md", failures, () => report);
