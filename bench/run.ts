// `npm run bench`: an HTTP benchmark of Quire against a plain node:http baseline taken in the same run.
//
// 1. starts the baseline (bench/baseline.ts) in a worker thread of this process, on a free port;
// 2. starts Quire through bench/quire-child.ts, the launcher every live bench shares (`node bin/start.ts` as a child
//    process with a fresh DATA_DIR under the OS temp directory, so its
//    embedded PostgreSQL is initialised from scratch and .data is never touched), with the anonymous rate limit
//    raised out of the load's way (the limiter still counts every request), and waits for /health/ready;
// 3. for each target checks one response by hand, warms up for 2 s, then measures with autocannon
//    (BENCH_DURATION seconds, default 10; BENCH_CONNECTIONS connections, default 10), all to 127.0.0.1;
// 4. prints a markdown table and, when every run was clean, writes it with the machine's facts to
//    bench/results/latest.md;
// 5. stops Quire with SIGTERM (its exit code must be 0), removes the temp DATA_DIR and closes the baseline.
// It exits 1 if Quire failed to start or stop cleanly, or any measured run saw errors, non-2xx answers or bodies
// different from the checked one. Progress goes to stderr; only the results go to stdout.
import { readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import autocannon, { type Instance, type Options, type Result } from "autocannon";
import { startQuire, type ExitStatus, type Quire } from "./quire-child.ts";
import { envInt, log, whole, finishRun, machineFacts } from "./support.ts";

const root = fileURLToPath(new URL("..", import.meta.url));

const WARMUP_SECONDS = 2;
const PREFERRED_QUIRE_PORT = 56780;
const PREFERRED_POSTGRES_PORT = 54390;

const durationSeconds = envInt("BENCH_DURATION", 10, 1, 3600);
const connections = envInt("BENCH_CONNECTIONS", 10, 1, 1000);
// Grafast reads GRAPHILE_ENV; development mode (npm start's default outside production) adds checks that make
// planning slower, so the bench pins production mode, what a deployment runs, unless told otherwise.
const graphileEnv = process.env["GRAPHILE_ENV"] || "production";

// --- the baseline, memory -------------------------------------------------------------------------------------

interface Baseline {
  readonly port: number;
  close(): Promise<void>;
}

async function startBaseline(): Promise<Baseline> {
  const worker = new Worker(new URL("./baseline.ts", import.meta.url));
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("baseline server did not start within 10 s")), 10_000);
    worker.once("message", (message: { port: number }) => {
      clearTimeout(timer);
      resolve(message.port);
    });
    worker.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  return {
    port,
    async close() {
      worker.postMessage("close");
      const closed = await Promise.race([exited.then(() => true), sleep(5_000, undefined, { ref: false }).then(() => false)]);
      if (!closed) await worker.terminate();
    },
  };
}

interface Memory {
  readonly rssMiB: number;
  readonly peakMiB: number;
}

/** VmRSS and VmHWM (peak RSS) of `pid` from /proc; null where there is no /proc. */
function memoryOf(pid: number): Memory | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN);
    const rss = kib("VmRSS");
    const peak = kib("VmHWM");
    return Number.isNaN(rss) ? null : { rssMiB: rss / 1024, peakMiB: peak / 1024 };
  } catch {
    return null;
  }
}

// --- load -----------------------------------------------------------------------------------------------------

interface Target {
  readonly name: string;
  readonly url: string;
  readonly method: "GET" | "POST";
  readonly headers?: Record<string, string>;
  readonly body?: string;
  /** Throws when a 200 answer is still not the expected one. */
  readonly check?: (body: string) => void;
}

/** One request by hand: the target must answer 200 (and pass its check). Returns the body, which every
 *  response of the measured run must then equal. */
async function probe(target: Target): Promise<string> {
  const init: RequestInit = { method: target.method, signal: AbortSignal.timeout(5_000) };
  if (target.headers) init.headers = target.headers;
  if (target.body !== undefined) init.body = target.body;
  const response = await fetch(target.url, init);
  const body = await response.text();
  if (response.status !== 200) throw new Error(`${target.name}: expected 200, got ${response.status}: ${body.slice(0, 300)}`);
  target.check?.(body);
  return body;
}

let current: Instance | null = null;
let interrupted = false;

function cannon(options: Options): Promise<Result> {
  return new Promise((resolve, reject) => {
    let guard: NodeJS.Timeout | undefined;
    const instance = autocannon(options, (error, result) => {
      clearTimeout(guard);
      current = null;
      if (error) reject(error);
      else resolve(result);
    });
    current = instance;
    // autocannon ends on its own after `duration`; this only bounds a run that somehow does not.
    guard = setTimeout(() => instance.stop(), ((options.duration ?? 10) + 30) * 1000);
  });
}

interface Row {
  readonly target: Target;
  readonly result: Result;
}

async function measure(target: Target): Promise<Row> {
  const expectBody = await probe(target);
  const options: Options = { url: target.url, method: target.method, connections, expectBody, title: target.name };
  if (target.headers) options.headers = target.headers;
  if (target.body !== undefined) options.body = target.body;
  log(`${target.name}: warm-up ${WARMUP_SECONDS} s`);
  await cannon({ ...options, duration: WARMUP_SECONDS });
  if (interrupted) throw new Error("interrupted");
  log(`${target.name}: measuring ${durationSeconds} s with ${connections} connections`);
  const result = await cannon({ ...options, duration: durationSeconds });
  if (interrupted) throw new Error("interrupted");
  return { target, result };
}

// --- report ---------------------------------------------------------------------------------------------------

const mib = (n: number) => `${n.toFixed(0)} MiB`;

function table(rows: readonly Row[]): string {
  const baseline = rows[0]?.result.requests.average ?? 0;
  const lines = [
    "| Target | Req/s (mean ± sd) | vs baseline | Latency p50 | p97.5 | p99 | Requests | Errors | Non-2xx | Body mismatches |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const { target, result } of rows) {
    const { requests, latency } = result;
    const share = baseline > 0 ? `${((requests.average / baseline) * 100).toFixed(0)} %` : "–";
    lines.push(
      `| ${target.name} | ${whole(requests.average)} ± ${whole(requests.stddev)} | ${share} | ${latency.p50} ms | ` +
        `${latency.p97_5} ms | ${latency.p99} ms | ${whole(latency.totalCount)} | ${result.errors} | ${result.non2xx} | ` +
        `${result.mismatches} |`,
    );
  }
  return lines.join("\n");
}

function autocannonVersion(): string {
  try {
    const manifest = JSON.parse(readFileSync(path.join(root, "node_modules", "autocannon", "package.json"), "utf8"));
    return String((manifest as { version?: unknown }).version ?? "?");
  } catch {
    return "?";
  }
}

// --- main -----------------------------------------------------------------------------------------------------

const failures: string[] = [];
const rows: Row[] = [];
let baseline: Baseline | null = null;
let quire: Quire | null = null;
let readyMs: number | null = null;
let memoryBefore: Memory | null = null;
let memoryAfter: Memory | null = null;
let stopped: ExitStatus | null = null;

const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) return;
  interrupted = true;
  log(`${signal}: stopping the run and cleaning up`);
  current?.stop();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

try {
  baseline = await startBaseline();
  log(`baseline node:http server on 127.0.0.1:${baseline.port} (worker thread)`);

  // Quire as every live bench starts it (bench/quire-child.ts), with the anonymous rate limit raised out of the
  // load's way: 300 a minute per address would answer the GraphQL target 429 within a second, while the limiter
  // still counts every request.
  quire = await startQuire(
    {
      label: "http",
      preferredPort: PREFERRED_QUIRE_PORT,
      preferredPostgresPort: PREFERRED_POSTGRES_PORT,
      env: { RATE_LIMIT_ANONYMOUS_PER_MINUTE: "1000000", GRAPHILE_ENV: graphileEnv },
      inspect: false,
    },
    () => interrupted,
  );
  readyMs = quire.readyMs;
  const base = quire.base;
  memoryBefore = memoryOf(quire.pid);

  const targets: Target[] = [
    { name: "baseline node:http `GET /`", url: `http://127.0.0.1:${baseline.port}/`, method: "GET" },
    { name: "Quire `GET /health`", url: `${base}/health`, method: "GET" },
    { name: "Quire `GET /health/ready`", url: `${base}/health/ready`, method: "GET" },
    {
      name: "Quire `POST /graphql { __typename }`",
      url: `${base}/graphql`,
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ query: "{ __typename }" }),
      check(body) {
        const parsed = JSON.parse(body) as { data?: { __typename?: unknown }; errors?: unknown };
        if (parsed.errors !== undefined || parsed.data?.__typename !== "Query") {
          throw new Error(`POST /graphql answered ${body.slice(0, 300)}`);
        }
      },
    },
  ];
  for (const target of targets) {
    if (interrupted) throw new Error("interrupted");
    const row = await measure(target);
    rows.push(row);
    const { result } = row;
    if (result.errors > 0 || result.non2xx > 0 || result.mismatches > 0) {
      failures.push(
        `${target.name}: ${result.errors} errors (${result.timeouts} timeouts), ${result.non2xx} non-2xx, ` +
          `${result.mismatches} body mismatches; status codes ${JSON.stringify(result.statusCodeStats)}`,
      );
    }
  }
  memoryAfter = memoryOf(quire.pid);
} catch (error) {
  failures.push(error instanceof Error ? error.message : String(error));
} finally {
  if (quire) {
    log("stopping Quire (SIGTERM)");
    stopped = await quire.stop();
    if (stopped.code !== 0) failures.push(`Quire exited with code ${stopped.code} (signal ${stopped.signal}) after SIGTERM`);
    else log(`Quire exited with code 0 after ${(stopped.ms / 1000).toFixed(1)} s`);
  }
  if (baseline) await baseline.close();
}

const facts = [
  `- Date: ${new Date().toISOString()}`,
  `- Machine: ${machineFacts()}`,
  `- autocannon ${autocannonVersion()}`,
  `- Load: ${connections} connections, ${WARMUP_SECONDS} s warm-up then ${durationSeconds} s measured per target, ` +
    `generated by the same process on the same machine, to 127.0.0.1`,
  `- Quire: \`node bin/start.ts\` with a fresh embedded PostgreSQL, LOG_LEVEL=warn, RATE_LIMIT_ANONYMOUS_PER_MINUTE=1000000, GRAPHILE_ENV=${graphileEnv}` +
    (readyMs === null ? "" : `; ready ${(readyMs / 1000).toFixed(1)} s after spawn`),
];
const memoryLine =
  memoryBefore && memoryAfter
    ? `- Quire process RSS: ${mib(memoryBefore.rssMiB)} before the runs, ${mib(memoryAfter.rssMiB)} after ` +
      `(peak ${mib(memoryAfter.peakMiB)}); the Node process only, not its embedded PostgreSQL`
    : "- Quire process RSS: not available";
const stopLine = stopped
  ? `- Quire stopped on SIGTERM with exit code ${stopped.code}${stopped.signal ? ` (signal ${stopped.signal})` : ""} ` +
    `in ${(stopped.ms / 1000).toFixed(1)} s`
  : "- Quire was not started";
const report = [
  "# Quire HTTP benchmark: latest run",
  "",
  "Written by `npm run bench` (bench/run.ts); see bench/README.md for what is measured and how to read it.",
  "",
  ...facts,
  "",
  table(rows),
  "",
  memoryLine,
  stopLine,
  "",
].join("\n");

process.stdout.write(`${table(rows)}\n\n${facts.join("\n")}\n${memoryLine}\n${stopLine}\n`);

await finishRun("latest.md", failures, () => report);
