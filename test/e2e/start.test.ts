// `npm start` as a user runs it, with nothing configured: an embedded PostgreSQL under DATA_DIR, migrations,
// server and worker in one process; ready, answering GraphQL, stopping cleanly on a signal with no postgres left
// behind, reusing its data on the next start, and recovering the database a killed run left running.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../support/ports.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
let dataDir: string;

beforeAll(() => {
  dataDir = mkdtempSync(join(tmpdir(), "quire-e2e-"));
  chmodSync(dataDir, 0o755); // PostgreSQL runs as its own user when the tests run as root
});
afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

interface Started {
  readonly child: ChildProcess;
  readonly url: string;
  output(): string;
  exited: Promise<number | null>;
}

async function start(ports: { http: number; postgres: number }): Promise<Started> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  Object.assign(env, {
    DATA_DIR: dataDir,
    PORT: String(ports.http),
    EMBEDDED_POSTGRES_PORT: String(ports.postgres),
    LOG_PRETTY: "false",
    WORKER_HEARTBEAT_SECONDS: "1",
  });
  const child = spawn(process.execPath, ["bin/start.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${ports.http}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`npm start exited early (${child.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`not ready within 90 s:\n${output}`);
    const ready = await fetch(`${url}/health/ready`).then(
      (r) => r.status,
      () => 0,
    );
    if (ready === 200) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { child, url, output: () => output, exited };
}

/** PIDs of processes whose command line names our data directory (the embedded postgres and its children). */
const postgresProcesses = () =>
  readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dataDir);
      } catch {
        return false;
      }
    });

const logLines = (output: string) =>
  output
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { msg: string; [key: string]: unknown });

test("start, serve, stop on SIGTERM, restart on the same data, recover from a killed run", async () => {
  const ports = { http: await freePort(), postgres: await freePort() };

  // First start: initialises the cluster, migrates, serves.
  const first = await start(ports);
  const response = await fetch(`${first.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ __typename }" }),
  });
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ data: { __typename: "Query" } });
  expect(postgresProcesses().length).toBeGreaterThan(0);
  first.child.kill("SIGTERM");
  expect(await first.exited).toBe(0);
  expect(postgresProcesses()).toEqual([]);
  const firstLog = logLines(first.output());
  expect(firstLog.map((l) => l.msg)).toEqual(
    expect.arrayContaining(["initialising embedded PostgreSQL (first run)", "created database", "shutting down", "embedded PostgreSQL stopped", "stopped"]),
  );
  // One log line per request, with its id, method, path, status and duration.
  const requestLine = firstLog.find((l) => (l.req as { path?: string } | undefined)?.path === "/graphql");
  expect(requestLine).toMatchObject({ req: { method: "POST", path: "/graphql" }, res: { status: 200 } });
  expect(typeof (requestLine!.req as { id: unknown }).id).toBe("string");
  expect(typeof requestLine!.durationMs).toBe("number");

  // Second start: same data, no initialisation, nothing to migrate; Ctrl-C (SIGINT) stops it as cleanly.
  const second = await start(ports);
  second.child.kill("SIGINT");
  expect(await second.exited).toBe(0);
  const secondMessages = logLines(second.output()).map((l) => l.msg);
  expect(secondMessages).not.toContain("initialising embedded PostgreSQL (first run)");
  expect(secondMessages).not.toContain("created database");
  expect(postgresProcesses()).toEqual([]);

  // A run killed outright leaves its postgres running; the next start stops that orphan and carries on.
  const third = await start(ports);
  third.child.kill("SIGKILL");
  await third.exited;
  expect(existsSync(join(dataDir, "postgres", "postmaster.pid"))).toBe(true);
  const fourth = await start(ports);
  expect(logLines(fourth.output()).map((l) => l.msg)).toContain("stopping embedded PostgreSQL left running by an earlier run");
  fourth.child.kill("SIGTERM");
  expect(await fourth.exited).toBe(0);
  expect(postgresProcesses()).toEqual([]);
}, 240_000);
