// The paths a newcomer or an operator walks, run as they run them (`node bin/start.ts`, `node bin/seed.ts`, …, as child
// processes on their own DATA_DIR): one-shot commands and a second `npm start` beside a running `npm start`, a port
// already taken, and the database mistakes every entry point must name in one line (exit code 1, no stack).
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../support/ports.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const dataDirs: string[] = [];
const children: ChildProcess[] = [];

afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
});

function freshDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "quire-operator-"));
  chmodSync(dir, 0o755); // PostgreSQL runs as its own user when the tests run as root
  dataDirs.push(dir);
  return dir;
}

const baseEnv = (env: Record<string, string>): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  LOG_PRETTY: "false",
  WORKER_HEARTBEAT_SECONDS: "1",
  BCRYPT_COST: "10",
  ...env,
});

/** Runs an entry point to its end (asynchronously: the test's own connections to a running server stay serviced). */
function runToEnd(script: string, env: Record<string, string>): Promise<{ status: number | null; output: string; stderr: string }> {
  const child = spawn(process.execPath, [script], { cwd: root, env: baseEnv(env), stdio: ["ignore", "pipe", "pipe"], timeout: 150_000 });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (status) => resolve({ status, output: stdout + stderr, stderr }));
  });
}

/** Whether any process's command line names `dataDir` (the embedded postgres and its children). */
const postgresRunning = (dataDir: string) =>
  readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .some((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dataDir);
      } catch {
        return false;
      }
    });

const ready = (url: string) =>
  fetch(`${url}/health/ready`).then(
    (r) => r.status,
    () => 0,
  );

/** No stack trace: no line of the form `    at fn (file:line:col)`, in plain text or inside a JSON log line. */
const hasStack = (output: string) => /(^|\\n)\s+at \S+/m.test(output);

async function startQuire(env: Record<string, string>): Promise<{ child: ChildProcess; url: string; output: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ["bin/start.ts"], { cwd: root, env: baseEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`npm start exited early (${child.exitCode}):\n${output}`);
    if (Date.now() > deadline) throw new Error(`not ready within 180 s:\n${output}`);
    if ((await ready(url)) === 200) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { child, url, output: () => output, exited };
}

test("beside a running `npm start`: seed and migrate use its database, a second start refuses; operator mistakes are one line", async () => {
  const dataDir = freshDataDir();
  const env = { DATA_DIR: dataDir, PORT: String(await freePort()), EMBEDDED_POSTGRES_PORT: String(await freePort()) };
  const first = await startQuire(env);
  const pid = first.child.pid!;

  // `npm run seed`: connects to the running server's database, leaves it running.
  const seeded = await runToEnd("bin/seed.ts", env);
  expect(seeded.status).toBe(0);
  expect(seeded.output).toContain("owner@acme.example");
  expect(await ready(first.url)).toBe(200);
  // The seeded accounts are in the database the running server serves.
  const login = await fetch(`${first.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      query: 'mutation { login(input: { email: "owner@acme.example", password: "quire demo passphrase", organizationSlug: "acme" }) { accessToken } }',
    }),
  });
  expect(((await login.json()) as { data: { login: { accessToken: string } | null } }).data.login?.accessToken).toEqual(expect.any(String));

  // `npm run migrate` likewise.
  expect((await runToEnd("bin/migrate.ts", env)).status).toBe(0);
  expect(await ready(first.url)).toBe(200);

  // A second `npm start` on the same DATA_DIR (on another PORT): refused, naming the running one; nothing stopped.
  const second = await runToEnd("bin/start.ts", { ...env, PORT: String(await freePort()) });
  expect(second.status).toBe(1);
  expect(second.stderr).toContain(
    `Quire is already running on ${dataDir}: npm start (pid ${pid}, API at ${first.url}, PostgreSQL on port ${env.EMBEDDED_POSTGRES_PORT})`,
  );
  expect(hasStack(second.output)).toBe(false);
  expect(await ready(first.url)).toBe(200);

  // Database mistakes of the separate entry points, against this running PostgreSQL: one line each, exit 1.
  const secrets = JSON.parse(readFileSync(join(dataDir, "secrets.json"), "utf8")) as { postgresPassword: string };
  const at = (credentials: string, database: string) => `postgres://${credentials}@127.0.0.1:${env.EMBEDDED_POSTGRES_PORT}/${database}`;
  const production = { NODE_ENV: "production", JWT_SECRET: "operator-test-secret-operator-test-secret", LOG_LEVEL: "warn" };
  for (const script of ["bin/server.ts", "bin/worker.ts"]) {
    const wrongPassword = await runToEnd(script, { ...production, PORT: String(await freePort()), DATABASE_URL: at("quire_authenticator:wrong", "quire") });
    expect({ script, status: wrongPassword.status, stderr: wrongPassword.stderr.trim() }).toEqual({
      script,
      status: 1,
      stderr: `DATABASE_URL: PostgreSQL at quire_authenticator@127.0.0.1:${env.EMBEDDED_POSTGRES_PORT}/quire refused the password`,
    });
    const unmigrated = await runToEnd(script, {
      ...production,
      PORT: String(await freePort()),
      DATABASE_URL: at(`postgres:${secrets.postgresPassword}`, "postgres"),
    });
    expect({ script, status: unmigrated.status, stderr: unmigrated.stderr.trim() }).toEqual({
      script,
      status: 1,
      stderr: `DATABASE_URL: the database postgres@127.0.0.1:${env.EMBEDDED_POSTGRES_PORT}/postgres has no Quire schema: run \`npm run migrate\` first`,
    });
  }

  first.child.kill("SIGTERM");
  expect(await first.exited).toBe(0);
  expect(postgresRunning(dataDir)).toBe(false);
}, 480_000);

test("a taken PORT or METRICS_PORT: one line naming it, exit 1, fast, and no embedded database left running", async () => {
  const blocker: Server = createServer();
  const taken = await freePort();
  await new Promise<void>((resolve) => blocker.listen(taken, "127.0.0.1", resolve));
  try {
    for (const variable of ["PORT", "METRICS_PORT"]) {
      const dataDir = freshDataDir();
      const env = {
        DATA_DIR: dataDir,
        PORT: String(variable === "PORT" ? taken : await freePort()),
        METRICS_PORT: String(variable === "METRICS_PORT" ? taken : await freePort()),
        EMBEDDED_POSTGRES_PORT: String(await freePort()),
      };
      const result = await runToEnd("bin/start.ts", env);
      expect({ variable, status: result.status, stderr: result.stderr.trim() }).toEqual({
        variable,
        status: 1,
        stderr: `${variable}=${taken}: 127.0.0.1:${taken} is already in use (another Quire, or another program, listens there); free it or set ${variable} to another port`,
      });
      expect(hasStack(result.output)).toBe(false);
      expect(postgresRunning(dataDir)).toBe(false);
    }
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
}, 120_000);

test("an unreachable database: server, worker and migrate name DATABASE_URL (or the owner's) in one line, exit 1", async () => {
  const closed = await freePort();
  const env = {
    NODE_ENV: "production",
    JWT_SECRET: "operator-test-secret-operator-test-secret",
    DATABASE_URL: `postgres://quire_authenticator:x@127.0.0.1:${closed}/quire`,
    OWNER_DATABASE_URL: `postgres://quire_owner:x@127.0.0.1:${closed}/quire`,
  };
  for (const [script, variable, user] of [
    ["bin/server.ts", "DATABASE_URL", "quire_authenticator"],
    ["bin/worker.ts", "DATABASE_URL", "quire_authenticator"],
    ["bin/migrate.ts", "OWNER_DATABASE_URL", "quire_owner"],
  ] as const) {
    const result = await runToEnd(script, { ...env, PORT: String(await freePort()) });
    expect({ script, status: result.status, stderr: result.stderr.trim() }).toEqual({
      script,
      status: 1,
      stderr: `${variable}: PostgreSQL at ${user}@127.0.0.1:${closed}/quire refused the connection: is PostgreSQL running there?`,
    });
    expect(hasStack(result.output)).toBe(false);
  }
}, 120_000);
