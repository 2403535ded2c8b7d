// Hybrid retrieval on the path CI has (real[] vectors, exact similarity in SQL): with an embedding provider
// configured (a local HTTP server speaking OpenAI's /embeddings), the worker embeds each chunk and charges the
// organization, and a question finds a passage by meaning alone — no word in common — while full-text matches still
// count; another organization's vectors are never compared.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker, type QuireWorker } from "../../worker/runner.ts";
import { startFakeLlmServer, type FakeLlmServer } from "../support/fake-llm-server.ts";
import { createTestDatabase, query, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { until } from "../support/poll.ts";
import { startTestServer, type TestServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

/** A toy embedding: how much a text is about vehicles, about food, and a constant (so no vector is zero). */
const concepts = [/\b(car|cars|automobile|vehicle)\b/gi, /\b(pizza|food|meal|lunch)\b/gi];
const embed = (text: string) => [...concepts.map((c) => text.match(c)?.length ?? 0), 0.1];

let fake: FakeLlmServer;
let db: TestDatabase;
let app: TestServer;
let workerPool: pg.Pool;
let worker: QuireWorker;
let a: Tenant;
let b: Tenant;

beforeAll(async () => {
  fake = await startFakeLlmServer((request) => {
    const input = (request.body as { input: string[] }).input;
    return {
      json: {
        object: "list",
        model: "toy-embed",
        data: input.map((text, index) => ({ object: "embedding", index, embedding: embed(text) })),
        usage: { prompt_tokens: input.length * 3, total_tokens: input.length * 3 },
      },
    };
  });
  db = await createTestDatabase();
  const config = testConfig(db.name, { EMBEDDINGS_BASE_URL: `${fake.url}/v1`, EMBEDDINGS_MODEL: "toy-embed" });
  app = await startTestServer(config);
  workerPool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  worker = await startQuireWorker({ config, logger: silentLogger, pool: workerPool });
  a = await createTenant(db, "Hybrid A");
  b = await createTenant(db, "Hybrid B");
}, 60_000);
afterAll(async () => {
  await worker?.stop();
  await workerPool?.end();
  await app?.close();
  await db?.drop();
  await fake?.close();
});

const root = <R extends Record<string, unknown>>(sql: string, values: unknown[] = []) => query<R>(db.name, sql, values, "root");

async function createDocument(t: Tenant, title: string, content: string): Promise<string> {
  const { body } = await app.graphql(
    "mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }",
    { d: { title, content } },
    t.members.member.accessToken,
  );
  return (body.data!.createDocument as { document: { rowId: string } }).document.rowId;
}

const embedded = (documentId: string) =>
  until(
    () => root<{ n: string }>("select count(*) as n from app_public.document_chunks where document_id = $1 and embedding is not null", [documentId]),
    (rows) => Number(rows[0]!.n) > 0,
    "the document's embedded chunks",
  );

test("chunks are embedded with the configured model, and the organization is charged for the tokens", async () => {
  const id = await createDocument(a, "Fleet", "The automobile needs new tyres every spring.");
  await embedded(id);
  const [chunk] = await root<{ embedding: number[]; embedding_model: string }>(
    "select embedding, embedding_model from app_public.document_chunks where document_id = $1",
    [id],
  );
  expect(chunk).toEqual({ embedding: [1, 0, 0.1], embedding_model: "toy-embed" });
  const requests = fake.requests.filter((r) => JSON.stringify(r.body).includes("automobile"));
  expect(requests).toHaveLength(1);
  expect(requests[0]!.body).toMatchObject({ model: "toy-embed", input: ["The automobile needs new tyres every spring."] });
  const usage = await root<{ kind: string; job_id: string | null; prompt_tokens: number }>(
    "select kind, job_id, prompt_tokens from app_public.usage_records where org_id = $1 and kind = 'embedding' and model = 'toy-embed'",
    [a.orgId],
  );
  expect(usage.length).toBeGreaterThanOrEqual(1);
  expect(usage[0]).toMatchObject({ kind: "embedding", job_id: null });
});

test("a question finds a passage by meaning alone, in its own organization only; full-text matches rank beside it", async () => {
  const fleet = await createDocument(a, "Fleet care", "Our automobile fleet is serviced by Garage Nord.");
  const lunch = await createDocument(a, "Lunch", "Pizza is served on Fridays.");
  const other = await createDocument(b, "Their fleet", "Every automobile of ours is serviced in Lyon.");
  await Promise.all([fleet, lunch, other].map(embedded));
  // "car" shares no word with the fleet document; only the vectors bring them together.
  const { body } = await app.graphql(
    "mutation ($q: String!) { askQuestion(input: { question: $q }) { job { rowId } } }",
    { q: "Who takes care of a car?" },
    a.members.member.accessToken,
  );
  const jobId = (body.data!.askQuestion as { job: { rowId: string } }).job.rowId;
  const [answer] = await until(
    () => root<{ sources: Array<{ documentId: string }> }>("select sources from app_public.answers where job_id = $1", [jobId]),
    (rows) => rows.length > 0,
    "the answer",
  );
  const sources = answer!.sources.map((s) => s.documentId);
  expect(sources).toContain(fleet);
  expect(sources).not.toContain(other);
  expect(sources.indexOf(fleet)).toBeLessThan(sources.includes(lunch) ? sources.indexOf(lunch) : Infinity);
  // The question itself was embedded for retrieval.
  expect(fake.requests.some((r) => JSON.stringify((r.body as { input: string[] }).input) === JSON.stringify(["Who takes care of a car?"]))).toBe(true);
});
