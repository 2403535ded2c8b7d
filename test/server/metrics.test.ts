// GET /metrics: who may read it (a port of its own, or the public port with the bearer token, else 404), and that
// real traffic through a real server and worker shows up as the series operators alert on, with bounded labels.
import pg from "pg";
import { createPool } from "../../db/pool.ts";
import { createMetrics } from "../../lib/metrics.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { startFakeLlmServer } from "../support/fake-llm-server.ts";
import { subscribe } from "../support/live.ts";
import { freePort } from "../support/ports.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, fixturePassword, type Tenant } from "../support/tenants.ts";

const token = "metrics-token-for-tests-0123456789";

let db: TestDatabase;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Metrics");
});
afterAll(async () => {
  await db?.drop();
});

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The samples of a Prometheus text exposition. */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The samples named `name` whose labels include `labels`. */
const select = (samples: Sample[], name: string, labels: Record<string, string> = {}) =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
/** The sum of those samples (0 when there are none). */
const total = (samples: Sample[], name: string, labels: Record<string, string> = {}) => select(samples, name, labels).reduce((sum, s) => sum + s.value, 0);

async function scrape(url: string, headers: Record<string, string> = { authorization: `Bearer ${token}` }): Promise<Sample[]> {
  const response = await fetch(`${url}/metrics`, { headers });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return parse(await response.text());
}

const signIn = (app: TestServer, password: string) =>
  app.graphql("mutation SignIn($i: LoginInput!) { login(input: $i) { accessToken } }", { i: { email: t.members.member.email, password } });

describe("with METRICS_TOKEN", () => {
  let app: TestServer;
  beforeAll(async () => {
    app = await startTestServer(testConfig(db.name, { METRICS_TOKEN: token }));
  });
  afterAll(async () => {
    await app?.close();
  });

  test("the public port's /metrics answers 401 without the token or with a wrong one", async () => {
    for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: `Bearer ${token.slice(0, -1)}x` }, { authorization: token }]) {
      const response = await fetch(`${app.url}/metrics`, { headers });
      expect(response.status).toBe(401);
      expect(response.headers.get("www-authenticate")).toBe('Bearer realm="metrics"');
      expect(await response.json()).toEqual({ error: { code: "UNAUTHENTICATED", message: "Metrics need the metrics bearer token." } });
    }
  });

  test("counts the requests made, by route and status, with GraphQL operations, their error codes and sign-ins", async () => {
    for (let i = 0; i < 3; i++) expect((await fetch(`${app.url}/health`)).status).toBe(200);
    expect((await fetch(`${app.url}/no/such/${Math.random()}`)).status).toBe(404);
    for (let i = 0; i < 2; i++) expect((await app.graphql("query Probe { __typename }")).body.errors).toBeUndefined();
    expect((await app.graphql("{ __typename }")).body.errors).toBeUndefined();
    expect((await signIn(app, "not the password")).body.errors?.[0]?.extensions?.code).toBe("INVALID_CREDENTIALS");
    expect((await signIn(app, fixturePassword)).body.errors).toBeUndefined();
    expect((await app.graphql("query Broken { noSuchField }")).body.errors?.[0]?.extensions?.code).toBe("BAD_REQUEST");

    const samples = await scrape(app.url);
    expect(total(samples, "quire_http_requests_total", { route: "/health", status: "200" })).toBe(3);
    expect(total(samples, "quire_http_request_duration_seconds_count", { route: "/health", status: "200" })).toBe(3);
    expect(total(samples, "quire_http_request_duration_seconds_sum", { route: "/health" })).toBeGreaterThan(0);
    expect(total(samples, "quire_http_requests_total", { route: "other", status: "404" })).toBe(1);
    expect(total(samples, "quire_http_requests_total", { route: "/graphql" })).toBe(6);
    // The four refusals of the test before; this scrape itself is counted once it is answered.
    expect(total(samples, "quire_http_requests_total", { route: "/metrics", status: "401" })).toBe(4);
    expect(select(samples, "quire_http_requests_total").every((s) => /^(\/[a-z/.:-]*|other)$/.test(s.labels.route!))).toBe(true);

    expect(total(samples, "quire_graphql_operations_total", { operation: "Probe", type: "query" })).toBe(2);
    expect(total(samples, "quire_graphql_operations_total", { operation: "anonymous", type: "query" })).toBe(1);
    expect(total(samples, "quire_graphql_operations_total", { operation: "SignIn", type: "mutation" })).toBe(2);
    expect(total(samples, "quire_graphql_operations_total", { type: "invalid" })).toBe(1);
    expect(total(samples, "quire_graphql_operation_duration_seconds_count", { operation: "Probe", type: "query" })).toBe(2);
    expect(select(samples, "quire_graphql_errors_total")).toEqual([
      { name: "quire_graphql_errors_total", labels: { operation: "SignIn", type: "mutation", code: "INVALID_CREDENTIALS" }, value: 1 },
      { name: "quire_graphql_errors_total", labels: { operation: "anonymous", type: "invalid", code: "BAD_REQUEST" }, value: 1 },
    ]);
    expect(select(samples, "quire_sign_ins_total")).toEqual([
      { name: "quire_sign_ins_total", labels: { outcome: "invalid_credentials" }, value: 1 },
      { name: "quire_sign_ins_total", labels: { outcome: "success" }, value: 1 },
    ]);

    expect(total(samples, "quire_db_pool_max_connections", { pool: "server" })).toBe(4);
    expect(total(samples, "quire_db_pool_connections", { pool: "server" })).toBeGreaterThanOrEqual(1);
    expect(total(samples, "quire_db_pool_connections", { pool: "server" })).toBeLessThanOrEqual(4);
    expect(select(samples, "quire_db_pool_idle_connections", { pool: "server" })).toHaveLength(1);
    expect(total(samples, "quire_db_pool_waiting_clients", { pool: "server" })).toBe(0);
    expect(select(samples, "quire_live_subscriptions")).toEqual([{ name: "quire_live_subscriptions", labels: {}, value: 0 }]);
    // Node's default process metrics, under their usual names.
    expect(total(samples, "process_cpu_user_seconds_total")).toBeGreaterThan(0);
    expect(select(samples, "nodejs_eventloop_lag_seconds")).toHaveLength(1);

    const again = await scrape(app.url);
    expect(total(again, "quire_http_requests_total", { route: "/metrics", status: "200" })).toBe(1);
  });

  test("subscriptions count as operations of type subscription, and the gauge follows the open ones", async () => {
    const until = async (check: (samples: Sample[]) => boolean) => {
      const deadline = Date.now() + 10_000;
      for (let samples = await scrape(app.url); ; samples = await scrape(app.url)) {
        if (check(samples)) return samples;
        if (Date.now() > deadline) throw new Error("metrics never matched");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const before = await scrape(app.url);
    const live = subscribe<unknown>(app.url, t.members.member.accessToken, "subscription Live { jobUpdated { seq } }");
    const refused = subscribe<unknown>(app.url, "not-a-token", "subscription Refused { jobUpdated { seq } }");
    try {
      const open = await until((samples) => total(samples, "quire_live_subscriptions") === 1);
      expect(total(open, "quire_graphql_operations_total", { operation: "Live", type: "subscription" })).toBe(1);
      await until(() => refused.errors.length > 0);
    } finally {
      await live.close();
      await refused.close();
    }
    const closed = await until((samples) => total(samples, "quire_live_subscriptions") === 0);
    // The refused one never ran: it counts as invalid, with the code its client got.
    const added = (name: string, labels: Record<string, string>) => total(closed, name, labels) - total(before, name, labels);
    expect(added("quire_graphql_operations_total", { type: "invalid" })).toBe(1);
    expect(added("quire_graphql_errors_total", {})).toBe(1);
    // The subscription read where its organization's events stand through the shared reads: counted.
    expect(
      select(closed, "quire_live_shared_reads_total")
        .map((sample) => sample.labels.kind)
        .sort(),
    ).toEqual(["callers", "fallbacks", "shared", "transactions"]);
    expect(added("quire_live_shared_reads_total", { kind: "callers" })).toBeGreaterThanOrEqual(1);
    expect(added("quire_live_shared_reads_total", { kind: "transactions" })).toBeGreaterThanOrEqual(1);
    expect(added("quire_graphql_errors_total", { operation: "anonymous", type: "invalid", code: "UNAUTHENTICATED" })).toBe(1);
  });

  test("operation names are bounded: past the cap, new names count as `other`", async () => {
    const before = await scrape(app.url);
    const known = new Set(select(before, "quire_graphql_operations_total").map((s) => s.labels.operation));
    const names = Array.from({ length: 230 }, (_, i) => `Distinct${i}`);
    for (let i = 0; i < names.length; i += 23) {
      await Promise.all(names.slice(i, i + 23).map(async (name) => expect((await app.graphql(`query ${name} { __typename }`)).body.errors).toBeUndefined()));
    }
    const after = await scrape(app.url);
    const operations = new Set(select(after, "quire_graphql_operations_total").map((s) => s.labels.operation));
    // 200 distinct names at most (anonymous and `other` aside), whatever the clients send.
    expect([...operations].filter((name) => name !== "anonymous" && name !== "other")).toHaveLength(200);
    const kept = [...operations].filter((name) => name!.startsWith("Distinct")).length;
    expect(kept).toBe(200 - [...known].filter((name) => name !== "anonymous" && name !== "other").length);
    expect(total(after, "quire_graphql_operations_total", { operation: "other" })).toBe(names.length - kept);
    expect(total(after, "quire_graphql_operations_total", { type: "query" }) - total(before, "quire_graphql_operations_total", { type: "query" })).toBe(
      names.length,
    );
  });
});

test("configuration: both unset by default; a short token is refused without echoing it; the ports must differ", () => {
  expect(testConfig(db.name).metrics).toEqual({ port: null, token: null });
  expect(testConfig(db.name, { METRICS_PORT: "9464", METRICS_TOKEN: token }).metrics).toEqual({ port: 9464, token });
  expect(() => testConfig(db.name, { METRICS_TOKEN: "short-secret" })).toThrow(/^Invalid configuration: METRICS_TOKEN must be at least 16 characters$/);
  expect(() => testConfig(db.name, { PORT: "9464", METRICS_PORT: "9464" })).toThrow("METRICS_PORT must differ from PORT");
});

test("with neither METRICS_TOKEN nor METRICS_PORT, /metrics is a 404 like any unknown path", async () => {
  const app = await startTestServer(db.config);
  try {
    for (const headers of [{}, { authorization: `Bearer ${token}` }]) {
      const response = await fetch(`${app.url}/metrics`, { headers });
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({ error: { code: "NOT_FOUND", message: "No such route." } });
    }
  } finally {
    await app.close();
  }
});

test("METRICS_PORT serves /metrics on its own port, without a token, and the public port does not", async () => {
  const port = await freePort();
  const app = await startTestServer(testConfig(db.name, { METRICS_PORT: String(port) }));
  const metricsUrl = `http://127.0.0.1:${port}`;
  try {
    expect((await fetch(`${app.url}/health`)).status).toBe(200);
    const samples = await scrape(metricsUrl, {});
    expect(total(samples, "quire_http_requests_total", { route: "/health", status: "200" })).toBe(1);
    expect((await fetch(`${app.url}/metrics`)).status).toBe(404);
    expect((await fetch(`${app.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(404);
    expect((await fetch(`${metricsUrl}/graphql`)).status).toBe(404);
    expect((await fetch(`${metricsUrl}/metrics`, { method: "POST" })).status).toBe(404);
    // The public port's refusals count as its traffic; scrapes of the metrics port do not.
    const again = await scrape(metricsUrl, {});
    expect(total(again, "quire_http_requests_total", { route: "/metrics", status: "404" })).toBe(2);
    expect(total(again, "quire_http_requests_total", { route: "/metrics", status: "200" })).toBe(0);
  } finally {
    await app.close();
  }
  await expect(fetch(`${metricsUrl}/metrics`)).rejects.toThrow();
});

test("a worker sharing the server's metrics: job runs by task and outcome, LLM calls by outcome, tokens, its pool", async () => {
  // The LLM refuses the first request (429, retry at once), then answers.
  const fake = await startFakeLlmServer((_request, index) =>
    index === 0
      ? { status: 429, headers: { "retry-after": "0" }, json: { error: { message: "slow down" } } }
      : { json: { choices: [{ message: { content: "Revenue grew." } }], usage: { prompt_tokens: 100, completion_tokens: 10 }, model: "gpt-4o-mini-2024" } },
  );
  const config = testConfig(db.name, { METRICS_TOKEN: token, LLM_PROVIDER: "openai", LLM_BASE_URL: fake.url });
  const app = await startTestServer(config);
  const workerPool: pg.Pool = createPool({ url: config.database.url, max: 3, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool: workerPool, metrics: app.server.metrics });
  try {
    const member = t.members.member.accessToken;
    const created = await app.graphql(
      "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }",
      { d: { title: "Metrics", content: "Revenue grew. Costs fell." } },
      member,
    );
    const documentId = (created.body.data!.createDocument as { document: { rowId: string } }).document.rowId;
    const queued = await app.graphql("mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId } } }", { d: documentId }, member);
    const jobId = (queued.body.data!.summarizeDocument as { job: { rowId: string } }).job.rowId;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [row] = await query<{ status: string }>(db.name, "select status from app_public.jobs where id = $1", [jobId], "root");
      if (row!.status === "succeeded") break;
      if (Date.now() > deadline) throw new Error(`job still ${row!.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // graphile-worker reports the run just after the task's own transaction commits.
    let samples = await scrape(app.url);
    while (total(samples, "quire_jobs_total", { task: "summarize" }) === 0 && Date.now() < deadline) samples = await scrape(app.url);

    expect(total(samples, "quire_jobs_total", { task: "summarize", outcome: "success" })).toBe(1);
    expect(total(samples, "quire_jobs_total", { task: "summarize", outcome: "failure" })).toBe(0);
    expect(total(samples, "quire_job_duration_seconds_count", { task: "summarize", outcome: "success" })).toBe(1);
    expect(total(samples, "quire_job_duration_seconds_sum", { task: "summarize", outcome: "success" })).toBeGreaterThan(0);
    const llm = { provider: "openai", model: "gpt-4o-mini" };
    expect(total(samples, "quire_llm_calls_total", { ...llm, outcome: "LLM_RATE_LIMITED" })).toBe(1);
    expect(total(samples, "quire_llm_calls_total", { ...llm, outcome: "ok" })).toBe(1);
    expect(total(samples, "quire_llm_call_duration_seconds_count", llm)).toBe(2);
    expect(total(samples, "quire_llm_tokens_total", { ...llm, kind: "prompt" })).toBe(100);
    expect(total(samples, "quire_llm_tokens_total", { ...llm, kind: "completion" })).toBe(10);
    expect(fake.requests).toHaveLength(2);
    expect(total(samples, "quire_db_pool_max_connections", { pool: "worker" })).toBe(3);
    expect(total(samples, "quire_db_pool_max_connections", { pool: "server" })).toBe(4);
    // Nothing of a known task is left waiting.
    expect(select(samples, "quire_job_queue_oldest_age_seconds", { task: "summarize" })).toEqual([
      { name: "quire_job_queue_oldest_age_seconds", labels: { task: "summarize" }, value: 0 },
    ]);
  } finally {
    await worker.stop();
    await workerPool.end();
    await app.close();
    await fake.close();
  }
});

test("a worker on its own (`npm run worker`) serves its metrics on METRICS_PORT", async () => {
  const port = await freePort();
  const config = testConfig(db.name, { METRICS_PORT: String(port) });
  const pool = createPool({ url: config.database.url, max: 2, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    const samples = await scrape(`http://127.0.0.1:${port}`, {});
    expect(total(samples, "quire_db_pool_max_connections", { pool: "worker" })).toBe(2);
    expect(select(samples, "quire_db_pool_connections", { pool: "server" })).toEqual([]);
    expect(select(samples, "quire_job_queue_oldest_age_seconds", { task: "summarize" })).toHaveLength(1);
  } finally {
    await worker.stop();
    await pool.end();
  }
  await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
});

test("the queue gauge reports how long the oldest due job of each task has waited", async () => {
  const metrics = createMetrics();
  const pool = createPool({ url: db.config.database.url, max: 1, applicationName: "quire-test-metrics" }, silentLogger);
  try {
    metrics.observeJobQueue(pool, ["metrics_probe", "send_email"], silentLogger);
    // Tasks no worker here knows, so nothing takes them: one due a minute ago, one later, one not yet due.
    for (const [task, secondsAgo] of [
      ["metrics_probe", 60],
      ["metrics_probe", 5],
      ["metrics_later", -3600],
    ] as const) {
      await query(db.name, "select graphile_worker.add_job($1, '{}'::json, run_at := now() - make_interval(secs => $2))", [task, secondsAgo], "root");
    }
    const samples = parse(await metrics.render());
    const age = total(samples, "quire_job_queue_oldest_age_seconds", { task: "metrics_probe" });
    expect(age).toBeGreaterThanOrEqual(60);
    expect(age).toBeLessThan(120);
    expect(total(samples, "quire_job_queue_oldest_age_seconds", { task: "send_email" })).toBe(0);
    expect(select(samples, "quire_job_queue_oldest_age_seconds", { task: "metrics_later" })).toEqual([]);
  } finally {
    await query(
      db.name,
      "delete from graphile_worker._private_jobs where task_id in (select id from graphile_worker._private_tasks where identifier like 'metrics_%')",
      [],
      "root",
    );
    await pool.end();
  }
});

test("LLM model labels are bounded: past the limit, new model names (organizations choose them) count as other", async () => {
  const metrics = createMetrics({ maxOperationNames: 2 });
  const call = (model: string) =>
    metrics
      .measureLlm({
        name: "openai",
        model,
        contextTokens: 1000,
        complete: async () => ({ text: "ok", promptTokens: 1, completionTokens: 1, provider: "openai", model, latencyMs: 0 }),
      })
      .complete({ prompt: "p", sourceText: "", maxOutputTokens: 1 });
  for (const model of ["m1", "m2", "m3", "m4", "m1"]) await call(model);
  const text = await metrics.render();
  const models = [...text.matchAll(/^quire_llm_calls_total\{[^}]*model="([^"]+)"/gm)].map((m) => m[1]);
  expect(new Set(models)).toEqual(new Set(["m1", "m2", "other"]));
  expect(text).toMatch(/quire_llm_calls_total\{[^}]*model="other"[^}]*\} 2/);
});
