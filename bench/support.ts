// What the benchmarks share: their knobs from the environment, progress on stderr, free loopback ports, the
// machine's facts, and how a run's report reaches bench/results/.
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";

/** A whole-number setting from the environment; a bad value stops the bench with the variable's name. */
export function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    process.stderr.write(`${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(raw)})\n`);
    process.exit(2);
  }
  return value;
}

/** Progress goes to stderr, so stdout holds only the results. */
export const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

/** Ctrl-C or SIGTERM: the run is to stop at its next step (`check` throws from then on) and clean up. */
export function watchInterrupts(): { readonly stopped: boolean; check(): void } {
  let stopped = false;
  process.on("SIGINT", () => {
    stopped = true;
    log("SIGINT: stopping the run and cleaning up");
  });
  process.on("SIGTERM", () => {
    stopped = true;
  });
  return {
    get stopped() {
      return stopped;
    },
    check() {
      if (stopped) throw new Error("interrupted");
    },
  };
}

function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(null));
    probe.listen(port, "127.0.0.1", () => {
      const bound = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(bound));
    });
  });
}

/** `preferred` if nothing listens on it on 127.0.0.1, else a port the OS reports free. */
export async function freePort(preferred: number, avoid: readonly number[]): Promise<number> {
  if (!avoid.includes(preferred) && (await listenOnce(preferred)) !== null) return preferred;
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await listenOnce(0);
    if (port !== null && !avoid.includes(port)) return port;
  }
  throw new Error("could not find a free port on 127.0.0.1");
}

export const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

export const whole = (n: number) => Math.round(n).toLocaleString("en-US");

// --- shared by the live benchmarks (job-pipeline.ts, subscriptions.ts) -----------------------------------------

/** Milliseconds on a clock every thread of this process shares (performance.now() alone is per thread). */
export const clock = () => performance.timeOrigin + performance.now();

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export function summarise(values: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => percentile(sorted, p);
  return { count: sorted.length, p50: at(50), p90: at(90), p99: at(99), max: sorted.length > 0 ? sorted[sorted.length - 1]! : NaN };
}

export function fmtMs(value: number): string {
  if (Number.isNaN(value)) return "–";
  if (value < 10) return `${value.toFixed(2)} ms`;
  if (value < 100) return `${value.toFixed(1)} ms`;
  return `${whole(value)} ms`;
}

/** VmRSS of `pid` in bytes, from /proc; null where there is none. */
export function rssOf(pid: number): number | null {
  try {
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kib === undefined ? null : Number(kib) * 1024;
  } catch {
    return null;
  }
}

/** The machine a run measured: OS, CPUs, memory and Node. */
export function machineFacts(): string {
  const cpus = os.cpus();
  return (
    `${os.type()} ${os.release()} ${os.arch()}, ${cpus.length} × ${cpus[0]?.model.trim() ?? "unknown CPU"}, ` +
    `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, Node ${process.version}`
  );
}

const resultsDir = fileURLToPath(new URL("results/", import.meta.url));

/**
 * How every bench ends. A failed run logs each failure, sets exit code 1 and leaves bench/results/`name` as the last
 * clean run wrote it; a clean run writes `report()` there (built only then).
 */
export async function finishRun(name: string, failures: readonly string[], report: () => string): Promise<void> {
  const file = path.join(resultsDir, name);
  const shown = path.relative(process.cwd(), file);
  if (failures.length > 0) {
    for (const failure of failures) log(`FAILED: ${failure}`);
    log(`not writing ${shown} (the run failed)`);
    process.exitCode = 1;
    return;
  }
  await mkdir(resultsDir, { recursive: true });
  await writeFile(file, report());
  log(`wrote ${shown}`);
}
