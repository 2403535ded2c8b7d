// Quire as the live benchmarks run it: `node bin/start.ts` (server and worker in one process, exactly what `npm start`
// runs) as a child process with a fresh DATA_DIR under the OS temp directory, so its embedded PostgreSQL is
// initialised from scratch and .data is never touched; free loopback ports, LOG_LEVEL=warn, GRAPHILE_ENV=production
// (as in `npm run bench`). Optionally with the V8 inspector on a loopback port, through which the bench asks for a
// full garbage collection and the heap's size, or records a CPU profile, without changing Quire's code.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { freePort, log, running } from "./support.ts";

const root = fileURLToPath(new URL("..", import.meta.url));
const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 45_000; // Quire gives itself SHUTDOWN_TIMEOUT_SECONDS (10) + 15 s before it gives up

export interface QuireOptions {
  /** Short name for the temp directory. */
  readonly label: string;
  readonly preferredPort: number;
  readonly preferredPostgresPort: number;
  /** Settings on top of the bench's environment and the fixed ones above. */
  readonly env: Readonly<Record<string, string>>;
  /** Start Node with the inspector on 127.0.0.1 (a free port) and connect to it. */
  readonly inspect: boolean;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly ms: number;
}

export interface Quire {
  readonly pid: number;
  /** http://127.0.0.1:<port> */
  readonly base: string;
  readonly readyMs: number;
  /** The embedded PostgreSQL's superuser and owner logins, on the `quire` database. */
  readonly superuserUrl: string;
  readonly ownerUrl: string;
  /** Present when started with `inspect`. */
  readonly inspector: Inspector | null;
  /** SIGTERM, wait for the exit (SIGKILL after 45 s), remove DATA_DIR. */
  stop(): Promise<ExitStatus>;
}

/** Starts Quire and waits until GET /health/ready answers 200; cleans up and throws if it does not. */
export async function startQuire(options: QuireOptions, interrupted: () => boolean): Promise<Quire> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `quire-bench-${options.label}-`));
  // Run as root, the embedded PostgreSQL runs as a `postgres` user, which must be able to enter DATA_DIR.
  await chmod(dataDir, 0o755);
  const port = await freePort(options.preferredPort, []);
  const postgresPort = await freePort(options.preferredPostgresPort, [port]);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: dataDir,
    EMBEDDED_POSTGRES_PORT: String(postgresPort),
    LOG_LEVEL: "warn",
    LOG_PRETTY: "false",
    GRAPHILE_ENV: process.env["GRAPHILE_ENV"] || "production",
    // Empty counts as unset for Quire, and keeps a `.env` from supplying these: always the embedded PostgreSQL.
    DATABASE_URL: "",
    OWNER_DATABASE_URL: "",
    ROOT_DATABASE_URL: "",
    ...options.env,
  };
  delete env["NODE_ENV"]; // Quire's default (development); production would demand DATABASE_URL
  const args = [...(options.inspect ? ["--inspect=127.0.0.1:0"] : []), "bin/start.ts"];
  // Its own process group: a Ctrl-C at the terminal reaches only the bench, which then stops Quire itself.
  const child: ChildProcess = spawn(process.execPath, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  if (child.pid === undefined) throw new Error("could not spawn `node bin/start.ts`");
  const pid = child.pid;
  const tail: string[] = [];
  let inspectorUrl: string | null = null;
  const forward = (chunk: Buffer) => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue;
      const debuggerUrl = /^Debugger listening on (ws:\/\/\S+)/.exec(line)?.[1];
      if (debuggerUrl) inspectorUrl = debuggerUrl;
      if (debuggerUrl || line.startsWith("For help, see: https://nodejs.org") || line === "Debugger attached." || line.startsWith("Debugger ending on"))
        continue;
      process.stderr.write(`[quire] ${concise(line)}\n`);
      tail.push(line);
      if (tail.length > 30) tail.shift();
    }
  };
  child.stdout!.on("data", forward);
  child.stderr!.on("data", forward);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  // Last resort if the bench ends some other way: Quire must not outlive it.
  const onExit = () => {
    if (running(child)) child.kill("SIGTERM");
  };
  process.on("exit", onExit);

  let inspector: Inspector | null = null;
  const stop = async (): Promise<ExitStatus> => {
    inspector?.close();
    const started = Date.now();
    if (running(child)) child.kill("SIGTERM");
    const timedOut = Symbol("timed out");
    let result = await Promise.race([exited, sleep(STOP_TIMEOUT_MS, timedOut, { ref: false })]);
    if (result === timedOut) {
      log(`Quire did not exit within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM: sending SIGKILL`);
      child.kill("SIGKILL");
      result = await exited;
    }
    process.off("exit", onExit);
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
    return { ...result, ms: Date.now() - started };
  };

  const base = `http://127.0.0.1:${port}`;
  try {
    log(`starting Quire on ${base} (embedded PostgreSQL on ${postgresPort}, DATA_DIR ${dataDir})`);
    const readyMs = await waitUntilReady(`${base}/health/ready`, child, exited, tail, interrupted);
    log(`Quire ready after ${(readyMs / 1000).toFixed(1)} s`);
    if (options.inspect) {
      if (!inspectorUrl) throw new Error("Quire started without announcing its inspector URL");
      inspector = await Inspector.connect(inspectorUrl);
    }
    const secrets = JSON.parse(readFileSync(path.join(dataDir, "secrets.json"), "utf8")) as { postgresPassword: string; ownerPassword: string };
    const url = (user: string, password: string) => `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${postgresPort}/quire`;
    return {
      pid,
      base,
      readyMs,
      superuserUrl: url("postgres", secrets.postgresPassword),
      ownerUrl: url("quire_owner", secrets.ownerPassword),
      inspector,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

const levels: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };

/** A pino line as "level message: error"; pino's JSON (an error may carry a whole pg client) is too long to read. */
function concise(line: string): string {
  try {
    const entry = JSON.parse(line) as { level?: number; msg?: unknown; err?: { message?: unknown } };
    if (typeof entry.msg === "string") {
      const error = typeof entry.err?.message === "string" ? `: ${entry.err.message}` : "";
      return `${levels[entry.level ?? 0] ?? "log"} ${entry.msg}${error}`.slice(0, 1000);
    }
  } catch {
    // not JSON: shown as it is
  }
  return line.length > 1000 ? `${line.slice(0, 1000)}…` : line;
}

async function waitUntilReady(
  url: string,
  child: ChildProcess,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  tail: readonly string[],
  interrupted: () => boolean,
): Promise<number> {
  const started = Date.now();
  let last = "no answer yet";
  while (Date.now() - started < READY_TIMEOUT_MS) {
    if (interrupted()) throw new Error("interrupted");
    if (!running(child)) {
      const { code, signal } = await exited;
      throw new Error(`Quire exited (code ${code}, signal ${signal}) before it was ready:\n${tail.join("\n")}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      const body = await response.text();
      if (response.status === 200) return Date.now() - started;
      last = `${response.status} ${body.slice(0, 300)}`;
    } catch (error) {
      last = String((error as Error).cause ?? error);
    }
    await sleep(250);
  }
  throw new Error(`Quire was not ready within ${READY_TIMEOUT_MS / 1000} s (last answer: ${last})`);
}

// --- the inspector --------------------------------------------------------------------------------------------

/** process.memoryUsage() of Quire's process, in bytes, right after a full garbage collection. */
export interface HeapReading {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

/** Where a CPU profile's samples fell: self time by function and by package, largest first. */
export interface ProfileSummary {
  readonly totalMs: number;
  readonly functions: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
  readonly packages: ReadonlyArray<{ readonly name: string; readonly ms: number }>;
}

interface ProfileNode {
  readonly id: number;
  readonly hitCount?: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

/** A Chrome DevTools Protocol session with Quire's main thread. */
export class Inspector {
  private readonly socket: WebSocket;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();
  private nextId = 1;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (message.id === undefined) return;
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error) waiter?.reject(new Error(`inspector: ${message.error.message}`));
      else waiter?.resolve(message.result);
    });
    socket.on("close", () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error("inspector connection closed"));
      this.pending.clear();
    });
  }

  static connect(url: string): Promise<Inspector> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { perMessageDeflate: false });
      socket.once("open", () => resolve(new Inspector(socket)));
      socket.once("error", reject);
    });
  }

  private call<T>(method: string, params: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`inspector: ${method} did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Collects garbage twice (the second pass frees what the first one's finalizers released), then reads memory. */
  async heapAfterGc(): Promise<HeapReading> {
    await this.call("HeapProfiler.collectGarbage");
    await this.call("HeapProfiler.collectGarbage");
    const { result } = await this.call<{ result: { value: string } }>("Runtime.evaluate", {
      expression: "JSON.stringify(process.memoryUsage())",
      returnByValue: true,
    });
    return JSON.parse(result.value) as HeapReading;
  }

  /** Starts sampling Quire's main thread every `intervalUs` microseconds. */
  async startProfile(intervalUs = 500): Promise<void> {
    await this.call("Profiler.enable");
    await this.call("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.call("Profiler.start");
  }

  async stopProfile(): Promise<ProfileSummary> {
    const { profile } = await this.call<{ profile: { nodes: ProfileNode[]; startTime: number; endTime: number } }>("Profiler.stop");
    await this.call("Profiler.disable");
    const hits = profile.nodes.reduce((sum, node) => sum + (node.hitCount ?? 0), 0);
    // Samples cover the profile's wall time (µs); each hit stands for an equal share of it.
    const totalMs = (profile.endTime - profile.startTime) / 1000;
    const msPerHit = hits > 0 ? totalMs / hits : 0;
    const byFunction = new Map<string, number>();
    const byPackage = new Map<string, number>();
    for (const node of profile.nodes) {
      const ms = (node.hitCount ?? 0) * msPerHit;
      if (ms === 0) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      const name = url ? `${functionName || "(anonymous)"} (${shortUrl(url)}:${lineNumber + 1})` : functionName || "(anonymous)";
      byFunction.set(name, (byFunction.get(name) ?? 0) + ms);
      // V8's pseudo-frames ((idle), (program), (garbage collector)) and native functions have no script.
      const pkg = url ? packageOf(url) : functionName.startsWith("(") ? functionName : "(native)";
      byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + ms);
    }
    const top = (map: Map<string, number>, n: number) =>
      [...map.entries()]
        .sort(([, a], [, b]) => b - a)
        .slice(0, n)
        .map(([name, ms]) => ({ name, ms }));
    return { totalMs, functions: top(byFunction, 15), packages: top(byPackage, 12) };
  }

  close(): void {
    this.socket.close();
  }
}

/** The npm package a script belongs to, "quire" for the project's own files, "node" for Node's internals. */
function packageOf(url: string): string {
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (modules) return modules[1]!;
  return url.startsWith("node:") ? "node" : "quire";
}

const shortUrl = (url: string) => {
  const modules = url.lastIndexOf("node_modules/");
  if (modules >= 0) return url.slice(modules + "node_modules/".length);
  return url.startsWith("file://") ? path.relative(root, fileURLToPath(url)) : url;
};
