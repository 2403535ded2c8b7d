// The summarize task with the offline default (extractive) and with a long document split to fit a small context
// window (map, then reduce), each through a real worker and a real database.
import pg from "pg";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { startFakeLlmServer } from "../support/fake-llm-server.ts";
import { createTestDatabase, query, roles, rootUrl, silentLogger, testConfig, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let db: TestDatabase;
let t: Tenant;
beforeAll(async () => {
  db = await createTestDatabase();
  t = await createTenant(db, "Worker");
});
afterAll(async () => {
  await db?.drop();
});

/** Creates a document and queues its summary through summarize_document, as the tenant's member would. */
async function queue(title: string, content: string): Promise<string> {
  const [doc] = await query<{ id: string }>(
    db.name,
    "insert into app_public.documents (org_id, title, content) values ($1, $2, $3) returning id",
    [t.orgId, title, content],
    "root",
  );
  const client = new pg.Client({ connectionString: urlFor(roles.authenticator, db.name) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query("select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true)", [
      roles.authenticated,
      t.members.member.sessionId,
      t.orgId,
    ]);
    const { rows } = await client.query<{ id: string }>("select (app_public.summarize_document($1)).id", [doc!.id]);
    await client.query("commit");
    return rows[0]!.id;
  } finally {
    await client.end();
  }
}

async function runUntilSettled<T>(env: NodeJS.ProcessEnv, jobId: string, then: () => Promise<T>): Promise<T> {
  const config = testConfig(db.name, env);
  const pool: pg.Pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [row] = await query<{ status: string }>(db.name, "select status from app_public.jobs where id = $1", [jobId], "root");
      if (row!.status !== "queued" && row!.status !== "running") break;
      if (Date.now() > deadline) throw new Error(`job still ${row!.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return await then();
  } finally {
    await worker.stop();
    await pool.end();
  }
}

const report = [
  "Revenue grew by twelve percent in the third quarter.",
  "The board approved the new budget for engineering.",
  "Customer churn fell to its lowest level in three years.",
  "The team must ship the mobile app before the end of March.",
  "Office plants were watered on Tuesday.",
  "Hiring will focus on support engineers in Lisbon.",
  "Revenue from enterprise customers grew faster than revenue from small businesses.",
].join(" ");

test("the offline default writes an extractive summary from the document's own sentences", async () => {
  const jobId = await queue("Q3 report", report);
  await runUntilSettled({}, jobId, async () => {
    const [summary] = await query<{ content: string; provider: string; model: string; status: string }>(
      db.name,
      "select s.content, s.provider, s.model, j.status from app_public.summaries s join app_public.jobs j on j.id = s.job_id where s.job_id = $1",
      [jobId],
      "root",
    );
    expect(summary).toEqual(expect.objectContaining({ provider: "extractive", model: "extractive-v1", status: "succeeded" }));
    const sentences = summary!.content.split(/(?<=\.)\s+/).filter(Boolean);
    expect(sentences.length).toBeGreaterThan(0);
    expect(sentences.length).toBeLessThanOrEqual(5); // "at most five sentences" in the Executive summary template
    for (const sentence of sentences) expect(report).toContain(sentence);
  });
});

test("a document longer than the context window is summarized in stages, each call fitting the window", async () => {
  const fake = await startFakeLlmServer((request) => {
    const prompt = (request.body as { messages: Array<{ content: string }> }).messages[0]!.content;
    return {
      json: { choices: [{ message: { content: `part of ${prompt.length}` } }], usage: { prompt_tokens: 100, completion_tokens: 10 }, model: "m" },
    };
  });
  try {
    const long = Array.from({ length: 400 }, (_, i) => `Paragraph ${i} says something specific about topic ${i}.`).join("\n\n");
    const jobId = await queue("Long", long);
    await runUntilSettled({ LLM_PROVIDER: "openai", LLM_BASE_URL: fake.url, LLM_CONTEXT_TOKENS: "2000", LLM_MAX_OUTPUT_TOKENS: "200" }, jobId, async () => {
      expect(fake.requests.length).toBeGreaterThan(2);
      for (const request of fake.requests) {
        const prompt = (request.body as { messages: Array<{ content: string }> }).messages[0]!.content;
        expect(Math.ceil(prompt.length / 4) + 200).toBeLessThanOrEqual(2000);
      }
      const [usage] = await query<{ prompt_tokens: number; completion_tokens: number }>(
        db.name,
        "select prompt_tokens, completion_tokens from app_public.usage_records where job_id = $1",
        [jobId],
        "root",
      );
      expect(usage).toEqual({ prompt_tokens: 100 * fake.requests.length, completion_tokens: 10 * fake.requests.length });
    });
  } finally {
    await fake.close();
  }
});

test("a template saved before templates were bounded, that places the content many times, fails the job at once with BAD_TEMPLATE and makes no summary", async () => {
  const [version] = await query<{ id: string; body: string }>(
    db.name,
    "select v.id, v.body from app_public.global_template_versions v join app_public.global_templates g on g.id = v.global_template_id where g.name = 'Executive summary' order by v.version desc limit 1",
    [],
    "root",
  );
  // As an old row would be: written with the save-time check (a trigger) switched off.
  const setBody = async (body: string) => {
    const root = new pg.Client({ connectionString: rootUrl().replace(/\/[^/]*$/, `/${db.name}`) });
    await root.connect();
    try {
      await root.query("set session_replication_role = replica");
      await root.query("update app_public.global_template_versions set body = $2 where id = $1", [version!.id, body]);
    } finally {
      await root.end();
    }
  };
  await setBody("{{document.content}} ".repeat(100));
  try {
    const jobId = await queue("Oversized prompt", "A sentence that is long enough to count. ".repeat(30_000));
    await runUntilSettled({}, jobId, async () => {
      const [job] = await query<{ status: string; error_code: string; attempts: number }>(
        db.name,
        "select status, error_code, attempts from app_public.jobs where id = $1",
        [jobId],
        "root",
      );
      expect(job).toEqual({ status: "failed", error_code: "BAD_TEMPLATE", attempts: 1 });
      const summaries = await query(db.name, "select 1 from app_public.summaries where job_id = $1", [jobId], "root");
      expect(summaries).toHaveLength(0);
    });
  } finally {
    await setBody(version!.body);
  }
});

test("a summary job costs the worker two statements of its own, start_summary_job and finish_summary_job, and its progress notifications", async () => {
  const jobId = await queue("Counted", report);
  const config = testConfig(db.name, {});
  const pool: pg.Pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  // Every statement any client of the worker's pool sends, as its text.
  const sent: string[] = [];
  pool.on("connect", (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const text = typeof args[0] === "string" ? args[0] : (args[0] as { text?: string } | undefined)?.text;
      if (text) sent.push(text);
      return original(...args);
    };
  });
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const [row] = await query<{ status: string }>(db.name, "select status from app_public.jobs where id = $1", [jobId], "root");
      if (row!.status === "succeeded") break;
      if (Date.now() > deadline) throw new Error(`job still ${row!.status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await worker.stop();
    await pool.end();
  }
  // What is left once graphile-worker's own queue statements and the process's heartbeat, metrics and audit sealer
  // (a timer, not the job's) are set aside.
  const own = sent.filter(
    (text) =>
      !/graphile_worker|LISTEN|unlock_worker_jobs|worker_heartbeat|release_dead_workers|forget_worker|job_queue|checkpoint|seal_audit_events/i.test(text),
  );
  // The summary's text reached jobProgress subscribers in notifications (one NOTIFY statement per flush), beside.
  const progress = own.filter((text) => text.includes("pg_notify"));
  expect(progress.length).toBeGreaterThanOrEqual(1);
  expect(own.filter((text) => !text.includes("pg_notify")).map((text) => /app_private\.(\w+)/.exec(text)?.[1] ?? text)).toEqual([
    "start_summary_job",
    "finish_summary_job",
  ]);
  const [counts] = await query<{ summaries: number; usage: number }>(
    db.name,
    "select (select count(*)::int from app_public.summaries where job_id = $1) as summaries, (select count(*)::int from app_public.usage_records where job_id = $1) as usage",
    [jobId],
    "root",
  );
  expect(counts).toEqual({ summaries: 1, usage: 1 });
});
