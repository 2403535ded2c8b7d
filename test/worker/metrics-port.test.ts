// `npm run worker` as production runs it (docker-compose.yml's worker service): a process of its own, with no server
// to serve its metrics. With METRICS_PORT it answers GET /metrics there with its jobs, queue and pool, and closes
// that port when SIGTERM stops it; without METRICS_PORT it serves nothing, as before.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";
import { freePort } from "../support/ports.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

interface Worker {
  /** The JSON log lines' messages so far. */
  messages(): string[];
  output(): string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Starts `node bin/worker.ts` on the test database and waits for "worker started". */
async function startWorker(env: Record<string, string>): Promise<Worker> {
  const child = spawn(process.execPath, ["bin/worker.ts"], {
    cwd: root,
    env: {
      PATH: process.env.PATH,
      NODE_ENV: "test",
      LOG_LEVEL: "info",
      LOG_PRETTY: "false",
      HOST: "127.0.0.1",
      JWT_SECRET: "test-secret-that-is-at-least-32-characters-long",
      DATABASE_URL: urlFor(roles.authenticator, db.name),
      DATABASE_AUTHENTICATED_ROLE: roles.authenticated,
      DATABASE_ANONYMOUS_ROLE: roles.anonymous,
      WORKER_CONCURRENCY: "1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const messages = () =>
    output
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => (JSON.parse(line) as { msg: string }).msg);
  const deadline = Date.now() + 30_000;
  while (!messages().includes("worker started")) {
    if (child.exitCode !== null) throw new Error(`the worker exited early (${child.exitCode}):\n${output}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the worker did not start within 30 s:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    messages,
    output: () => output,
    stop() {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

/** The value of the sample `name{labels}` in a Prometheus text exposition, or null. */
function sample(text: string, name: string, labels: string): number | null {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? null : Number(line.slice(line.lastIndexOf(" ") + 1));
}

test("with METRICS_PORT it serves /metrics there: its pool, the queue and the jobs it runs; SIGTERM closes it", async () => {
  const port = await freePort();
  const worker = await startWorker({ METRICS_PORT: String(port) });
  const url = `http://127.0.0.1:${port}/metrics`;
  try {
    const first = await fetch(url);
    expect(first.status).toBe(200);
    expect(first.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await first.text();
    expect(sample(text, "quire_db_pool_max_connections", 'pool="worker"')).toBe(3);
    expect(sample(text, "quire_db_pool_max_connections", 'pool="server"')).toBeNull();
    expect(sample(text, "quire_job_queue_oldest_age_seconds", 'task="summarize"')).toBe(0);
    expect(text).toMatch(/^process_cpu_user_seconds_total \S+$/m);
    expect((await fetch(`http://127.0.0.1:${port}/graphql`)).status).toBe(404);

    // A job the worker runs shows up in its own metrics.
    await query(db.name, "select graphile_worker.add_job('prune_live_events', '{}'::json)", [], "root");
    const deadline = Date.now() + 20_000;
    let runs: number | null = null;
    while (runs === null && Date.now() < deadline) {
      runs = sample(await (await fetch(url)).text(), "quire_jobs_total", 'task="prune_live_events",outcome="success"');
      if (runs === null) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(runs).toBe(1);
    expect(worker.messages()).toContain("metrics listening");
  } finally {
    expect(await worker.stop()).toBe(0);
  }
  await expect(fetch(url)).rejects.toThrow();
});

test("without METRICS_PORT it starts as before and serves no metrics", async () => {
  const worker = await startWorker({});
  try {
    expect(worker.messages()).not.toContain("metrics listening");
  } finally {
    expect(await worker.stop()).toBe(0);
  }
  expect(worker.output()).not.toMatch(/metrics/i);
});
