// PostgreSQL restarting under load: `npm start` (server and worker in one process) runs against a PostgreSQL this
// test owns and stops mid-load. While it is down, requests fail fast with 503 UNAVAILABLE and Retry-After, and the
// process stays up; once it is back, service resumes by itself within seconds, with the same access token; and
// every write the API acknowledged is in the database afterwards.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../db/embedded.ts";
import { silentLogger } from "../support/database.ts";
import { freePort } from "../support/ports.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
let dataDir: string;
let postgres: EmbeddedPostgres | null = null;
let child: ChildProcess | null = null;

afterAll(async () => {
  child?.kill("SIGKILL");
  await postgres?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Answer {
  status: number;
  ms: number;
  retryAfter: string | null;
  code: string | null;
  id: string | null;
}

test("a PostgreSQL restart mid-load: fast 503s while down, recovery within seconds, no acknowledged write lost", async () => {
  dataDir = mkdtempSync(join(tmpdir(), "quire-restart-"));
  chmodSync(dataDir, 0o755); // PostgreSQL runs as its own user when the tests run as root
  const pgPort = await freePort();
  const httpPort = await freePort();
  const embedded = { dataDir: join(dataDir, "postgres"), port: pgPort, superuserPassword: "restart-root" };
  postgres = await startEmbeddedPostgres(embedded, silentLogger);
  const at = (user: string, password: string, database: string) => `postgres://${user}:${password}@127.0.0.1:${pgPort}/${database}`;

  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATA_DIR: dataDir,
    PORT: String(httpPort),
    LOG_PRETTY: "false",
    LOG_LEVEL: "warn",
    JWT_SECRET: "restart-test-secret-restart-test-secret",
    DATABASE_URL: at("restart_authenticator", "a-pass", "quire_restart"),
    OWNER_DATABASE_URL: at("restart_owner", "o-pass", "quire_restart"),
    ROOT_DATABASE_URL: at("postgres", "restart-root", "postgres"),
    DATABASE_AUTHENTICATED_ROLE: "restart_authenticated",
    DATABASE_ANONYMOUS_ROLE: "restart_anonymous",
    DATABASE_POOL_WAIT_MS: "1000",
    WORKER_HEARTBEAT_SECONDS: "1",
    BCRYPT_COST: "10",
  };
  child = spawn(process.execPath, ["bin/start.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child!.on("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${httpPort}`;
  const ready = async (deadlineMs: number) => {
    const deadline = Date.now() + deadlineMs;
    while (Date.now() < deadline) {
      if (child!.exitCode !== null) throw new Error(`npm start exited (${child!.exitCode}):\n${output}`);
      if (
        (await fetch(`${url}/health/ready`).then(
          (r) => r.status,
          () => 0,
        )) === 200
      )
        return true;
      await sleep(200);
    }
    return false;
  };
  expect(await ready(90_000)).toBe(true);

  const gql = async (query: string, variables: Record<string, unknown>, token?: string) => {
    const started = performance.now();
    const response = await fetch(`${url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
      signal: AbortSignal.timeout(15_000),
    });
    const body = (await response.json()) as { data?: Record<string, unknown> | null; errors?: Array<{ extensions?: { code?: string } }> };
    return { response, body, ms: performance.now() - started };
  };
  await gql("mutation ($i: RegisterInput!) { register(input: $i) { success } }", {
    i: { organizationName: "Restart", email: "restart@example.com", password: "a long enough passphrase", fullName: "Re Start" },
  });
  const signedIn = await gql("mutation ($i: LoginInput!) { login(input: $i) { accessToken } }", {
    i: { email: "restart@example.com", password: "a long enough passphrase" },
  });
  const token = (signedIn.body.data!.login as { accessToken: string }).accessToken;

  const write = async (n: number): Promise<Answer> => {
    const { response, body, ms } = await gql(
      'mutation ($t: String!) { createDocument(input: { document: { title: $t, content: "body" } }) { document { rowId } } }',
      { t: `Doc ${n}` },
      token,
    ).catch(() => ({ response: null, body: null, ms: 0 }));
    const id = (body?.data?.createDocument as { document: { rowId: string } } | undefined)?.document.rowId ?? null;
    return {
      status: response?.status ?? 0,
      ms,
      retryAfter: response?.headers.get("retry-after") ?? null,
      code: body?.errors?.[0]?.extensions?.code ?? null,
      id,
    };
  };

  // Load: 4 writers, each writing as fast as answers come, through the restart.
  const answers: Answer[] = [];
  let counter = 0;
  let loading = true;
  const writers = Array.from({ length: 4 }, async () => {
    while (loading) {
      const answer = await write(counter++);
      answers.push(answer);
      if (answer.status !== 200) await sleep(50);
    }
  });
  await sleep(1_000);
  expect(answers.filter((a) => a.id).length).toBeGreaterThan(0);

  await postgres.stop();
  postgres = null;
  const whileDown: Answer[] = [];
  for (let i = 0; i < 5; i++) whileDown.push(await write(-i));
  // Fast: within DATABASE_POOL_WAIT_MS (1 s) and some slack, never hanging; the process is alive.
  for (const answer of whileDown) {
    expect({ status: answer.status, code: answer.code, retryAfter: answer.retryAfter }).toEqual({ status: 503, code: "UNAVAILABLE", retryAfter: "5" });
    expect(answer.ms).toBeLessThan(2_500);
  }
  expect(child.exitCode).toBeNull();

  postgres = await startEmbeddedPostgres(embedded, silentLogger);
  const back = Date.now();
  let recovered: Answer | null = null;
  while (Date.now() - back < 20_000) {
    const answer = await write(1_000_000 + counter++);
    if (answer.id) {
      recovered = answer;
      break;
    }
    await sleep(200);
  }
  expect(recovered).not.toBeNull();
  const recoverySeconds = (Date.now() - back) / 1000;
  expect(recoverySeconds).toBeLessThan(20);
  expect(await ready(20_000)).toBe(true);
  loading = false;
  await Promise.all(writers);

  // Every acknowledged write is there; unacknowledged ones may or may not be, but nothing answered 5xx but 503.
  const acknowledged = [...answers, recovered!].filter((a) => a.id).map((a) => a.id!);
  expect(answers.filter((a) => a.status >= 500 && a.status !== 503)).toEqual([]);
  const client = new pg.Client({ connectionString: at("postgres", "restart-root", "quire_restart") });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>("select count(*)::int as n from app_public.documents where id = any($1::uuid[])", [acknowledged]);
    expect(rows[0]!.n).toBe(acknowledged.length);
  } finally {
    await client.end();
  }

  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  child = null;
}, 180_000);
