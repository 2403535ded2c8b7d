// Summaries as background jobs, end to end: GraphQL mutation → graphile-worker task → a local HTTP server speaking
// the OpenAI chat-completions API (the real client code runs) → summary, usage and job rows → graphql-ws events.
// Also the failure paths (429, 500, timeout, 401), quotas, roles, cancelling, deleting, a worker killed mid-job,
// and subscriptions that never cross organizations.
import { spawn } from "node:child_process";
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { startFakeLlmServer, type FakeLlmServer, type Reply } from "../support/fake-llm-server.ts";
import { createTestDatabase, query, roles, silentLogger, testConfig, urlFor, type TestDatabase } from "../support/database.ts";
import { subscribe } from "../support/live.ts";
import { codeOf, startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

const apiKey = "sk-test-secret-never-shown";
let reply: (index: number) => Reply = () => completion("A summary.");
const completion = (content: string): Reply => ({
  json: {
    id: "chatcmpl-1",
    object: "chat.completion",
    model: "fake-model",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
    usage: { prompt_tokens: 42, completion_tokens: 7, total_tokens: 49 },
  },
});

let fake: FakeLlmServer;
let db: TestDatabase;
let app: TestServer;
let workerPool: pg.Pool;
let worker: QuireWorker;
let t: Tenant;
let other: Tenant;
const llmEnv = () => ({
  LLM_PROVIDER: "openai",
  LLM_BASE_URL: `${fake.url}/v1`,
  LLM_API_KEY: apiKey,
  LLM_TIMEOUT_SECONDS: "1",
  LLM_MAX_RETRIES: "1",
  // No retries in later runs: a lasting failure fails the job after the quick ones (test/worker/durability.test.ts
  // covers the retry window).
  LLM_RETRY_WINDOW_SECONDS: "0",
  JOB_MAX_ATTEMPTS: "1",
  WORKER_HEARTBEAT_SECONDS: "1",
  READY_WORKER_MAX_AGE_SECONDS: "2",
});

beforeAll(async () => {
  fake = await startFakeLlmServer((_request, index) => reply(index));
  db = await createTestDatabase();
  const config = testConfig(db.name, llmEnv());
  app = await startTestServer(config);
  workerPool = createPool({ url: config.database.url, max: 6, applicationName: "quire-test-worker" }, silentLogger);
  worker = await startQuireWorker({ config, logger: silentLogger, pool: workerPool });
  t = await createTenant(db, "Acme");
  other = await createTenant(db, "Globex");
});
afterAll(async () => {
  await worker?.stop();
  await workerPool?.end();
  await app?.close();
  await db?.drop();
  await fake?.close();
});
beforeEach(() => {
  reply = () => completion("A summary.");
  fake.requests.length = 0;
});

interface JobView {
  rowId: string;
  status: string;
  attempts: number;
  errorCode: string | null;
  errorMessage: string | null;
  summary: { rowId: string; content: string; provider: string; model: string; promptTokens: number; completionTokens: number } | null;
}
interface Event {
  seq: string;
  entity: string;
  op: string;
  entityId: string;
  documentId: string | null;
  missedEarlier: boolean;
  job: JobView | null;
  document: { rowId: string; title: string } | null;
  summary: { rowId: string; stale: boolean } | null;
}
const jobFields = "rowId status attempts errorCode errorMessage summary { rowId content provider model promptTokens completionTokens }";
const eventFields = `seq entity op entityId documentId missedEarlier job { ${jobFields} } document { rowId title } summary { rowId stale }`;
const jobUpdated = `subscription ($jobId: UUID, $since: BigInt) { jobUpdated(jobId: $jobId, since: $since) { ${eventFields} } }`;
const documentChanged = `subscription ($documentId: UUID, $since: BigInt) { documentChanged(documentId: $documentId, since: $since) { ${eventFields} } }`;

const gql = async (token: string, text: string, variables: Record<string, unknown> = {}) => (await app.graphql(text, variables, token)).body;
async function createDocument(token: string, title = "Quarterly report", content = "Revenue grew. Costs fell. We hire two engineers.") {
  const body = await gql(token, "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }", {
    d: { title, content },
  });
  return (body.data!.createDocument as { document: { rowId: string } }).document.rowId;
}
const summarize = (token: string, documentId: string, templateId?: string) =>
  gql(token, "mutation ($d: UUID!, $t: UUID) { summarizeDocument(input: { documentId: $d, templateId: $t }) { job { rowId status } } }", {
    d: documentId,
    t: templateId ?? null,
  });
const jobIdOf = (body: Awaited<ReturnType<typeof gql>>) => (body.data!.summarizeDocument as { job: { rowId: string } }).job.rowId;
const lastSeq = async (orgId: string) =>
  String((await query<{ s: string }>(db.name, "select coalesce(max(seq), 0) as s from app_public.live_events where org_id = $1", [orgId], "root"))[0]!.s);
const count = async (sql: string, values: unknown[]) => Number((await query<{ n: string }>(db.name, `select count(*) as n from ${sql}`, values, "root"))[0]!.n);
const jobRow = async (jobId: string) =>
  (
    await query<{ status: string; attempts: number; error_code: string | null; error_message: string | null }>(
      db.name,
      "select status, attempts, error_code, error_message from app_public.jobs where id = $1",
      [jobId],
      "root",
    )
  )[0]!;
async function settled(jobId: string, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const row = await jobRow(jobId);
    if (["succeeded", "failed", "cancelled"].includes(row.status)) return row;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${row.status}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("the happy path", () => {
  test("summarize → running → succeeded, streamed with the summary; one summary and one usage row", async () => {
    const documentId = await createDocument(t.members.member.accessToken);
    reply = () => ({ ...(completion("A summary.") as object), delayMs: 300 });
    const live = subscribe<Event>(app.url, t.members.member.accessToken, jobUpdated, { since: await lastSeq(t.orgId) });
    try {
      const body = await summarize(t.members.member.accessToken, documentId);
      expect(body.errors).toBeUndefined();
      const jobId = jobIdOf(body);
      expect((body.data!.summarizeDocument as { job: { status: string } }).job.status).toBe("queued");
      const done = await live.waitFor((e) => e.job?.rowId === jobId && e.job.status === "succeeded");
      expect(done.job!.summary).toEqual(
        expect.objectContaining({ content: "A summary.", provider: "openai", model: "fake-model", promptTokens: 42, completionTokens: 7 }),
      );
      expect(live.events.some((e) => e.entityId === jobId && e.job?.status === "running")).toBe(true);
      const seqs = live.events.map((e) => Number(e.seq));
      expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
      expect(await count("app_public.summaries where job_id = $1", [jobId])).toBe(1);
      const usage = await query(
        db.name,
        "select provider, model, prompt_tokens, completion_tokens from app_public.usage_records where job_id = $1",
        [jobId],
        "root",
      );
      expect(usage).toEqual([{ provider: "openai", model: "fake-model", prompt_tokens: 42, completion_tokens: 7 }]);
      // The real client sent the rendered default template ("Executive summary") with the document in it.
      expect(fake.requests).toHaveLength(1);
      const sent = fake.requests[0]!.body as { model: string; messages: Array<{ content: string }> };
      expect(sent.model).toBe("gpt-4o-mini");
      expect(sent.messages[0]!.content).toContain("Revenue grew. Costs fell.");
      expect(sent.messages[0]!.content).toContain("executive summary");
      expect(fake.requests[0]!.headers.authorization).toBe(`Bearer ${apiKey}`);
    } finally {
      await live.close();
    }
  });

  test("an organization template is used, pinned to its version, and shown in preview", async () => {
    const documentId = await createDocument(t.members.member.accessToken, "Pinned");
    const [template] = await query<{ id: string }>(db.name, "select id from app_public.templates where org_id = $1", [t.orgId], "root");
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, documentId, template!.id));
    await settled(jobId);
    const sent = fake.requests.at(-1)!.body as { messages: Array<{ content: string }> };
    expect(sent.messages[0]!.content).toBe("Summarize Pinned for Acme:\nRevenue grew. Costs fell. We hire two engineers.");
    const [row] = await query<{ template_version_id: string | null; global_template_version_id: string | null }>(
      db.name,
      "select template_version_id, global_template_version_id from app_public.summaries where job_id = $1",
      [jobId],
      "root",
    );
    expect(row!.template_version_id).not.toBeNull();
    expect(row!.global_template_version_id).toBeNull();
  });

  test("editing the document marks its summaries stale", async () => {
    const documentId = await createDocument(t.members.member.accessToken, "Stale soon");
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, documentId));
    expect((await settled(jobId)).status).toBe("succeeded");
    await gql(
      t.members.member.accessToken,
      'mutation ($id: UUID!) { updateDocument(input: { rowId: $id, patch: { title: "Renamed" } }) { document { rowId } } }',
      { id: documentId },
    );
    expect(await count("app_public.summaries where job_id = $1 and stale", [jobId])).toBe(0);
    await gql(
      t.members.member.accessToken,
      'mutation ($id: UUID!) { updateDocument(input: { rowId: $id, patch: { content: "New text." } }) { document { rowId } } }',
      { id: documentId },
    );
    expect(await count("app_public.summaries where job_id = $1 and stale", [jobId])).toBe(1);
  });
});

describe("LLM failures", () => {
  test("429 with Retry-After is retried after the wait, then succeeds", async () => {
    reply = (i) => (i === 0 ? { status: 429, headers: { "retry-after": "1" }, json: { error: { message: "slow down" } } } : completion("After the wait."));
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, await createDocument(t.members.member.accessToken)));
    expect((await settled(jobId)).status).toBe("succeeded");
    expect(fake.requests).toHaveLength(2);
    expect(fake.requests[1]!.at - fake.requests[0]!.at).toBeGreaterThanOrEqual(900);
    expect(await count("app_public.summaries where job_id = $1", [jobId])).toBe(1);
  });

  test("a lasting 500 fails the job with LLM_UNAVAILABLE after the retries; nothing is written or charged", async () => {
    reply = () => ({ status: 500, json: { error: { message: "boom" } } });
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, await createDocument(t.members.member.accessToken)));
    const row = await settled(jobId);
    expect(row).toEqual(expect.objectContaining({ status: "failed", error_code: "LLM_UNAVAILABLE", attempts: 1 }));
    expect(row.error_message).not.toContain(apiKey);
    expect(fake.requests).toHaveLength(2);
    expect(await count("app_public.summaries where job_id = $1", [jobId])).toBe(0);
    expect(await count("app_public.usage_records where job_id = $1", [jobId])).toBe(0);
  });

  test("a service that never answers fails the job with LLM_TIMEOUT", async () => {
    reply = () => "hang";
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, await createDocument(t.members.member.accessToken)));
    const row = await settled(jobId);
    expect(row).toEqual(expect.objectContaining({ status: "failed", error_code: "LLM_TIMEOUT" }));
    expect(fake.requests).toHaveLength(2);
  });

  test("401 is not retried: LLM_AUTH, one request, and the key is never in the message", async () => {
    reply = () => ({ status: 401, json: { error: { message: `Incorrect API key provided: ${apiKey}` } } });
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, await createDocument(t.members.member.accessToken)));
    const row = await settled(jobId);
    expect(row).toEqual(expect.objectContaining({ status: "failed", error_code: "LLM_AUTH" }));
    expect(row.error_message).not.toContain(apiKey);
    expect(fake.requests).toHaveLength(1);
  });
});

describe("who may ask, and how much", () => {
  test("a viewer is refused with FORBIDDEN and nothing is queued", async () => {
    const before = await count("app_public.jobs where org_id = $1", [t.orgId]);
    const documentId = await createDocument(t.members.member.accessToken);
    expect(codeOf(await summarize(t.members.viewer.accessToken, documentId))).toBe("FORBIDDEN");
    expect(await count("app_public.jobs where org_id = $1", [t.orgId])).toBe(before);
  });

  test("another organization's document or template is NOT_FOUND", async () => {
    const documentId = await createDocument(t.members.member.accessToken);
    const [theirTemplate] = await query<{ id: string }>(db.name, "select id from app_public.templates where org_id = $1", [other.orgId], "root");
    expect(codeOf(await summarize(other.members.owner.accessToken, documentId))).toBe("NOT_FOUND");
    expect(codeOf(await summarize(t.members.member.accessToken, documentId, theirTemplate!.id))).toBe("NOT_FOUND");
    expect(await count("app_public.jobs where document_id = $1", [documentId])).toBe(0);
  });

  test("beyond the monthly allowance: QUOTA_EXCEEDED, nothing queued; organizationUsage reports it", async () => {
    const q = await createTenant(db, "Quota");
    await query(db.name, "update app_public.organizations set tier = 'premium' where id = $1", [q.orgId], "root");
    // The fixture's summary and answer count against it, and the first summary below.
    await query(db.name, "select app_admin.set_tier_allowance('premium', 3, 1000000)");
    const documentId = await createDocument(q.members.member.accessToken);
    const first = await summarize(q.members.member.accessToken, documentId);
    expect(first.errors).toBeUndefined();
    await settled(jobIdOf(first));
    const graphileJobs = await count("graphile_worker._private_jobs", []);
    const refused = await summarize(q.members.member.accessToken, documentId);
    expect(codeOf(refused)).toBe("QUOTA_EXCEEDED");
    expect(await count("app_public.jobs where org_id = $1 and kind = 'summarize'", [q.orgId])).toBe(2); // the fixture's and the first
    expect(await count("graphile_worker._private_jobs", [])).toBe(graphileJobs);
    const usage = await gql(
      q.members.viewer.accessToken,
      "{ organizationUsage { tier summaries jobsInFlight promptTokens completionTokens summaryAllowance tokenAllowance } }",
    );
    expect(usage.data!.organizationUsage).toEqual({
      tier: "premium",
      // The fixture's summary (10 + 5 tokens), answer (12 + 6) and embeddings (8), and the first summary (42 + 7).
      summaries: 3,
      jobsInFlight: 0,
      promptTokens: "72",
      completionTokens: "18",
      summaryAllowance: 3,
      tokenAllowance: "1000000",
    });
  });
});

describe("cancelling", () => {
  test("cancelling a running job drops its result: no summary, no usage, status stays cancelled", async () => {
    reply = () => ({ ...(completion("Too late.") as object), delayMs: 800 });
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, await createDocument(t.members.member.accessToken)));
    while ((await jobRow(jobId)).status !== "running") await new Promise((resolve) => setTimeout(resolve, 20));
    expect(codeOf(await gql(t.members.viewer.accessToken, "mutation ($j: UUID!) { cancelJob(input: { jobId: $j }) { job { status } } }", { j: jobId }))).toBe(
      "FORBIDDEN",
    );
    const cancelled = await gql(t.members.member.accessToken, "mutation ($j: UUID!) { cancelJob(input: { jobId: $j }) { job { status } } }", { j: jobId });
    expect(cancelled.data!.cancelJob).toEqual({ job: { status: "cancelled" } });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await jobRow(jobId)).status).toBe("cancelled");
    expect(await count("app_public.summaries where job_id = $1", [jobId])).toBe(0);
    expect(await count("app_public.usage_records where job_id = $1", [jobId])).toBe(0);
    // Finished jobs cannot be cancelled; another organization's job does not exist for the caller.
    expect(
      codeOf(await gql(t.members.member.accessToken, "mutation ($j: UUID!) { cancelJob(input: { jobId: $j }) { job { status } } }", { j: jobId })),
    ).toBeNull();
    expect(
      codeOf(await gql(other.members.owner.accessToken, "mutation ($j: UUID!) { cancelJob(input: { jobId: $j }) { job { status } } }", { j: jobId })),
    ).toBe("NOT_FOUND");
  });
});

describe("live updates", () => {
  test("a subscriber of another organization receives nothing about this one: not a row, not an id", async () => {
    const theirs = subscribe<Event>(app.url, other.members.viewer.accessToken, jobUpdated, { since: await lastSeq(other.orgId) });
    const theirDocs = subscribe<Event>(app.url, other.members.viewer.accessToken, documentChanged, { since: await lastSeq(other.orgId) });
    const mine = subscribe<Event>(app.url, t.members.viewer.accessToken, documentChanged, { since: await lastSeq(t.orgId) });
    try {
      const documentId = await createDocument(t.members.member.accessToken, "Secret plans");
      const jobId = jobIdOf(await summarize(t.members.member.accessToken, documentId));
      await settled(jobId);
      await mine.waitFor((e) => e.entity === "summary" && e.documentId === documentId);
      // Their own organization's change still arrives, proving the subscription was live all along.
      const theirDoc = await createDocument(other.members.member.accessToken, "Their own");
      await theirDocs.waitFor((e) => e.documentId === theirDoc);
      const seen = JSON.stringify([theirs.events, theirDocs.events]);
      for (const id of [t.orgId, documentId, jobId, "Secret plans"]) expect(seen).not.toContain(id);
      expect(theirs.events).toHaveLength(0);
    } finally {
      await Promise.all([theirs.close(), theirDocs.close(), mine.close()]);
    }
  });

  test("`since` replays what a client missed, in order, then goes on live", async () => {
    const documentId = await createDocument(t.members.member.accessToken, "Replayed");
    const jobId = jobIdOf(await summarize(t.members.member.accessToken, documentId));
    await settled(jobId);
    const live = subscribe<Event>(app.url, t.members.viewer.accessToken, documentChanged, { documentId, since: "0" });
    try {
      await live.waitFor((e) => e.entity === "summary");
      expect(live.events.map((e) => `${e.entity}:${e.op}`)).toEqual(["document:insert", "summary:insert"]);
      expect(Number(live.events[1]!.seq)).toBeGreaterThan(Number(live.events[0]!.seq));
      await gql(
        t.members.member.accessToken,
        'mutation ($id: UUID!) { updateDocument(input: { rowId: $id, patch: { content: "v2" } }) { document { rowId } } }',
        { id: documentId },
      );
      await live.waitFor((e) => e.entity === "summary" && e.op === "update" && e.summary?.stale === true);
      expect(live.events.every((e) => e.missedEarlier === false)).toBe(true);
    } finally {
      await live.close();
    }
  });

  test("events the outbox no longer holds are flagged with missedEarlier", async () => {
    const documentId = await createDocument(t.members.member.accessToken, "Pruned");
    await query(db.name, "delete from app_public.live_events where org_id = $1 and entity_id <> $2", [t.orgId, documentId], "root");
    const live = subscribe<Event>(app.url, t.members.viewer.accessToken, documentChanged, { since: "0" });
    try {
      const first = await live.waitFor(() => true);
      expect(first).toEqual(expect.objectContaining({ entityId: documentId, missedEarlier: true }));
    } finally {
      await live.close();
    }
  });

  test("when the server loses its LISTEN connection, subscriptions carry on: what was sent meanwhile arrives once it is back", async () => {
    const since = await lastSeq(t.orgId);
    const live = subscribe<Event>(app.url, t.members.viewer.accessToken, documentChanged, { since });
    try {
      const before = await createDocument(t.members.member.accessToken, "Before the drop");
      await live.waitFor((e) => e.documentId === before);
      await query(
        db.name,
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'quire-listener' and datname = current_database()",
        [],
        "root",
      );
      const during = await createDocument(t.members.member.accessToken, "During the drop");
      await live.waitFor((e) => e.documentId === during);
      const after = await createDocument(t.members.member.accessToken, "After the drop");
      await live.waitFor((e) => e.documentId === after);
      expect(live.errors).toEqual([]);
      expect(live.events.filter((e) => e.documentId === during && e.op === "insert")).toHaveLength(1);
      expect(live.events.some((e) => e.missedEarlier)).toBe(false);
    } finally {
      await live.close();
    }
  });

  test("a mutation's liveSeq, passed as `since`, delivers every event of its job, even those sent before subscribing", async () => {
    const created = await gql(
      t.members.member.accessToken,
      "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { liveSeq document { rowId } } }",
      {
        d: { title: "Sequenced", content: "Revenue grew. Costs fell." },
      },
    );
    const { liveSeq: documentSeq, document } = created.data!.createDocument as { liveSeq: string; document: { rowId: string } };
    const body = await gql(t.members.member.accessToken, "mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { liveSeq job { rowId } } }", {
      d: document.rowId,
    });
    expect(body.errors).toBeUndefined();
    const { liveSeq, job } = body.data!.summarizeDocument as { liveSeq: string; job: { rowId: string } };
    expect(Number(liveSeq)).toBeGreaterThanOrEqual(Number(documentSeq));
    // The job runs to its end before anyone subscribes.
    await settled(job.rowId);
    const jobs = subscribe<Event>(app.url, t.members.viewer.accessToken, jobUpdated, { jobId: job.rowId, since: liveSeq });
    const documents = subscribe<Event>(app.url, t.members.viewer.accessToken, documentChanged, { documentId: document.rowId, since: documentSeq });
    try {
      await jobs.waitFor((e) => e.job?.status === "succeeded");
      expect(jobs.events[0]).toEqual(expect.objectContaining({ entityId: job.rowId, op: "insert", missedEarlier: false }));
      expect(jobs.events.map((e) => e.op)).toEqual(["insert", ...jobs.events.slice(1).map(() => "update")]);
      await documents.waitFor((e) => e.entity === "summary");
      expect(documents.events[0]).toEqual(expect.objectContaining({ entity: "document", entityId: document.rowId, op: "insert" }));
    } finally {
      await jobs.close();
      await documents.close();
    }
  });

  test("without a token a subscription is refused with UNAUTHENTICATED", async () => {
    const live = subscribe<Event>(app.url, null, jobUpdated);
    try {
      await expect(
        new Promise((resolve, reject) => {
          const timer = setInterval(() => {
            if (live.errors.length > 0) {
              clearInterval(timer);
              resolve(live.errors[0]);
            }
          }, 20);
          setTimeout(() => reject(new Error("no error")), 5_000);
        }),
      ).resolves.toEqual(expect.objectContaining({ extensions: expect.objectContaining({ code: "UNAUTHENTICATED" }) }));
      expect(live.events).toHaveLength(0);
    } finally {
      await live.close();
    }
  });
});

describe("documents and jobs without a worker", () => {
  let db2: TestDatabase;
  let app2: TestServer;
  let u: Tenant;
  beforeAll(async () => {
    db2 = await createTestDatabase();
    // Three attempts, so a job whose worker was killed has attempts left.
    app2 = await startTestServer(testConfig(db2.name, { ...llmEnv(), JOB_MAX_ATTEMPTS: "3" }));
    u = await createTenant(db2, "Initech");
  });
  afterAll(async () => {
    await app2?.close();
    await db2?.drop();
  });
  const gql2 = async (token: string, text: string, variables: Record<string, unknown> = {}) => (await app2.graphql(text, variables, token)).body;
  const count2 = async (sql: string, values: unknown[]) =>
    Number((await query<{ n: string }>(db2.name, `select count(*) as n from ${sql}`, values, "root"))[0]!.n);
  const queue = async (documentId: string) =>
    jobIdOf(
      await gql2(u.members.member.accessToken, "mutation ($d: UUID!) { summarizeDocument(input: { documentId: $d }) { job { rowId status } } }", {
        d: documentId,
      }),
    );
  const newDocument = async () =>
    (
      (
        await gql2(
          u.members.member.accessToken,
          'mutation { createDocument(input: { document: { title: "Queued", content: "Some text. More text." } }) { document { rowId } } }',
        )
      ).data!.createDocument as { document: { rowId: string } }
    ).document.rowId;

  test("a worker killed on a job's last attempt: the job fails with WORKER_LOST instead of running for ever", async () => {
    const jobId = await queue(await newDocument());
    // As if a worker (heartbeat long gone) had taken the job on its last attempt and died.
    await query(
      db2.name,
      "insert into app_private.worker_heartbeats (worker_id, hostname, pid, last_seen_at) values ('dead', 'h', 1, now() - interval '1 hour')",
      [],
      "root",
    );
    await query(
      db2.name,
      "update graphile_worker._private_jobs set locked_at = now(), locked_by = 'dead-lock', attempts = max_attempts where key = $1",
      [jobId],
      "root",
    );
    await query(db2.name, "update app_public.jobs set status = 'running', attempts = 3 where id = $1", [jobId], "root");
    await query(db2.name, "update app_private.job_tokens set runner_id = 'dead', lock_id = 'dead-lock' where job_id = $1", [jobId], "root");
    const [released] = await query<{ n: number }>(db2.name, "select app_private.release_dead_workers(30) as n", [], "root");
    expect(released!.n).toBe(1);
    const [job] = await query(db2.name, "select status, error_code from app_public.jobs where id = $1", [jobId], "root");
    expect(job).toEqual({ status: "failed", error_code: "WORKER_LOST" });
    expect(await count2("graphile_worker._private_jobs where key = $1", [jobId])).toBe(0);
  });

  test("cancelling a queued job removes it from the queue", async () => {
    const jobId = await queue(await newDocument());
    expect(await count2("graphile_worker._private_jobs where key = $1", [jobId])).toBe(1);
    const body = await gql2(u.members.member.accessToken, "mutation ($j: UUID!) { cancelJob(input: { jobId: $j }) { job { status finishedAt } } }", {
      j: jobId,
    });
    expect((body.data!.cancelJob as { job: { status: string } }).job.status).toBe("cancelled");
    expect(await count2("graphile_worker._private_jobs where key = $1", [jobId])).toBe(0);
  });

  test("deleting a document cancels its pending jobs and trashes its summaries; emptying the trash deletes them; usage stays", async () => {
    const documentId = await newDocument();
    const jobId = await queue(documentId);
    const [fixtureDoc] = await query<{ id: string }>(
      db2.name,
      "select id from app_public.documents where org_id = $1 and title like '%handbook'",
      [u.orgId],
      "root",
    );
    for (const id of [documentId, fixtureDoc!.id]) {
      const body = await gql2(u.members.member.accessToken, "mutation ($id: UUID!) { deleteDocument(input: { documentId: $id }) { document { rowId } } }", {
        id,
      });
      expect(body.errors).toBeUndefined();
    }
    const [job] = await query(db2.name, "select status, error_code, document_id from app_public.jobs where id = $1", [jobId], "root");
    expect(job).toEqual({ status: "cancelled", error_code: "DOCUMENT_DELETED", document_id: documentId });
    expect(await count2("graphile_worker._private_jobs where key = $1", [jobId])).toBe(0);
    expect(await count2("app_public.summaries where org_id = $1 and trashed_at is null", [u.orgId])).toBe(0);
    expect(await count2("app_public.summaries where org_id = $1", [u.orgId])).toBe(1);
    const emptied = await gql2(u.members.admin.accessToken, "mutation { emptyTrash(input: {}) { deletedCount } }");
    expect(emptied.data).toEqual({ emptyTrash: { deletedCount: 2 } });
    expect((await query(db2.name, "select document_id from app_public.jobs where id = $1", [jobId], "root"))[0]).toEqual({ document_id: null });
    expect(await count2("app_public.summaries where org_id = $1", [u.orgId])).toBe(0);
    expect(await count2("app_public.usage_records where org_id = $1 and kind = 'summary'", [u.orgId])).toBe(1);
  });

  test("a worker killed mid-job: the job runs again on a live worker within seconds, and makes exactly one summary", async () => {
    let calls = 0;
    reply = () => (++calls === 1 ? "hang" : completion("Made once."));
    const config = testConfig(db2.name, { ...llmEnv(), LLM_TIMEOUT_SECONDS: "600" });
    const jobId = await queue(await newDocument());
    const child = spawn(process.execPath, ["bin/worker.ts"], {
      env: {
        PATH: process.env.PATH,
        NODE_ENV: "test",
        LOG_LEVEL: "silent",
        JWT_SECRET: "test-secret-that-is-at-least-32-characters-long",
        DATABASE_URL: urlFor(roles.authenticator, db2.name),
        DATABASE_AUTHENTICATED_ROLE: roles.authenticated,
        DATABASE_ANONYMOUS_ROLE: roles.anonymous,
        ...llmEnv(),
        LLM_TIMEOUT_SECONDS: "600",
      },
      stdio: "ignore",
    });
    try {
      const deadline = Date.now() + 20_000;
      while (calls === 0) {
        if (Date.now() > deadline) throw new Error("the child worker never called the LLM");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      child.kill("SIGKILL");
      await new Promise((resolve) => child.once("exit", resolve));
      expect((await query<{ status: string }>(db2.name, "select status from app_public.jobs where id = $1", [jobId], "root"))[0]!.status).toBe("running");
      const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker-2" }, silentLogger);
      const second = await startQuireWorker({ config, logger: silentLogger, pool });
      try {
        const started = Date.now();
        for (;;) {
          const [row] = await query<{ status: string; attempts: number }>(
            db2.name,
            "select status, attempts from app_public.jobs where id = $1",
            [jobId],
            "root",
          );
          if (row!.status === "succeeded") {
            expect(row!.attempts).toBe(2);
            break;
          }
          if (Date.now() - started > 20_000) throw new Error(`job still ${row!.status}`);
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        expect(await count2("app_public.summaries where job_id = $1", [jobId])).toBe(1);
        expect(await count2("app_public.usage_records where job_id = $1", [jobId])).toBe(1);
      } finally {
        await second.stop();
        await pool.end();
      }
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
