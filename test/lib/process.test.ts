// The process policy of lib/process.ts's runService, in a real child process: a rejected promise nobody awaited is
// logged and the service goes on; an uncaught exception stops it (exit 1); SIGTERM stops it cleanly (exit 0).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const processModule = pathToFileURL(join(import.meta.dirname, "../../lib/process.ts")).href;

interface Run {
  readonly lines: () => Array<{ msg?: string; level?: number }>;
  readonly exited: Promise<number | null>;
  signal(name: NodeJS.Signals): void;
}

/** Runs a service whose start() runs `afterStart` once it is up, and whose stop() logs "stopped by test". */
function runServiceWith(afterStart: string): Run {
  const dataDir = mkdtempSync(join(tmpdir(), "quire-process-"));
  const script = `
    import { runService } from ${JSON.stringify(processModule)};
    await runService("probe", async (_config, logger) => {
      setTimeout(() => { logger.info("started"); ${afterStart} }, 10);
      const alive = setInterval(() => undefined, 1000);
      return async () => { clearInterval(alive); logger.info("stopped by test"); };
    });`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    env: {
      PATH: process.env.PATH,
      NODE_ENV: "test",
      DATA_DIR: dataDir,
      LOG_LEVEL: "info",
      LOG_PRETTY: "false",
      JWT_SECRET: "x".repeat(40),
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  void exited.then(() => rmSync(dataDir, { recursive: true, force: true }));
  return {
    lines: () =>
      out
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { msg?: string; level?: number }),
    exited,
    signal: (name) => child.kill(name),
  };
}

async function until(condition: () => boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test("an unhandled rejection is logged as an error and the service keeps running until SIGTERM, which exits 0", async () => {
  const run = runServiceWith(`Promise.reject(new Error("lost write")); setTimeout(() => logger.info("still here"), 200);`);
  await until(() => run.lines().some((l) => l.msg === "still here"), "the service to go on after the rejection");
  const rejection = run.lines().find((l) => l.msg?.startsWith("unhandled promise rejection"));
  expect(rejection?.level).toBe(50);
  run.signal("SIGTERM");
  expect(await run.exited).toBe(0);
  expect(run.lines().some((l) => l.msg === "stopped by test")).toBe(true);
});

test("an uncaught exception stops the service through its stop function and exits 1", async () => {
  const run = runServiceWith(`throw new Error("broken state");`);
  expect(await run.exited).toBe(1);
  expect(run.lines().some((l) => l.msg === "uncaught exception" && l.level === 60)).toBe(true);
  expect(run.lines().some((l) => l.msg === "stopped by test")).toBe(true);
});
