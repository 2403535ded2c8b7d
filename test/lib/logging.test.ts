// What log lines carry and what they never do: credentials and document bodies are redacted wherever a call passes
// them; every line of a request names its request id (and, once verified, its organization and user), and every
// line of a job names Quire's job, its organization and requester. Read from a real logger's output.
import { createPool } from "../../db/pool.ts";
import { withLogContext, addToLogContext } from "../../lib/log-context.ts";
import { createQuireServer, type QuireServer } from "../../server/app.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, type TestDatabase } from "../support/database.ts";
import { capturingLogger, type Line } from "../support/logs.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

describe("redaction", () => {
  test("credentials and bodies are redacted at the top level and one level down; other fields stay", () => {
    const { logger, lines } = capturingLogger();
    logger.info(
      {
        password: "hunter2-top",
        apiKey: "sk-top",
        content: "The confidential document body",
        user: { token: "tok-nested", refreshToken: "rt-nested", clientSecret: "cs-nested", email: "kept@example.com" },
        request: { variables: { password: "in-variables" }, authorization: "Bearer abc.def.ghi" },
        document: { body: "another body", title: "Kept title" },
      },
      "redaction probe",
    );
    const text = JSON.stringify(lines);
    for (const secret of ["hunter2-top", "sk-top", "confidential", "tok-nested", "rt-nested", "cs-nested", "in-variables", "abc.def.ghi", "another body"]) {
      expect(text).not.toContain(secret);
    }
    expect(lines[0]).toMatchObject({ password: "[redacted]", user: { token: "[redacted]", email: "kept@example.com" }, document: { title: "Kept title" } });
  });
});

describe("context", () => {
  test("lines inside a context carry it, what is learned later is added, and lines outside carry none", async () => {
    const { logger, lines } = capturingLogger();
    logger.info("outside");
    await withLogContext({ requestId: "req-1" }, async () => {
      logger.info("before auth");
      addToLogContext({ orgId: "org-1", userId: "user-1" });
      await new Promise((resolve) => setTimeout(resolve, 5));
      logger.info("after an await");
      await withLogContext({ jobId: "job-1" }, async () => logger.info("nested"));
    });
    expect(lines.map(({ msg, requestId, orgId, userId, jobId }) => ({ msg, requestId, orgId, userId, jobId }))).toEqual([
      { msg: "outside", requestId: undefined, orgId: undefined, userId: undefined, jobId: undefined },
      { msg: "before auth", requestId: "req-1", orgId: undefined, userId: undefined, jobId: undefined },
      { msg: "after an await", requestId: "req-1", orgId: "org-1", userId: "user-1", jobId: undefined },
      { msg: "nested", requestId: "req-1", orgId: "org-1", userId: "user-1", jobId: "job-1" },
    ]);
  });
});

describe("a real server and worker", () => {
  let db: TestDatabase;
  let t: Tenant;
  let server: QuireServer;
  let url: string;
  const captured = capturingLogger();
  const pools: Array<{ end(): Promise<void> }> = [];
  beforeAll(async () => {
    db = await createTestDatabase();
    t = await createTenant(db, "Logged");
    const pool = createPool({ url: db.config.database.url, max: 4, applicationName: "quire-test-logging" }, captured.logger);
    pools.push(pool);
    server = await createQuireServer({ config: db.config, logger: captured.logger, pool });
    url = `http://127.0.0.1:${(await server.listen(0)).port}`;
  }, 60_000);
  afterAll(async () => {
    await server?.close(2_000);
    for (const pool of pools) await pool.end();
    await db?.drop();
  });

  const post = (body: unknown, token?: string) =>
    fetch(`${url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });

  test("a request's lines carry its request id, and its access line the verified organization and user", async () => {
    const failed = await post({
      query: 'mutation ($e: String!) { login(input: { email: $e, password: "wrong" }) { accessToken } }',
      variables: { e: t.members.member.email },
    });
    const failedId = failed.headers.get("x-request-id");
    await failed.json();
    const signInLine = captured.lines.find((l) => l.msg === "sign-in failed");
    expect(signInLine).toMatchObject({ requestId: failedId });

    const ok = await post({ query: "{ currentUser { email } }" }, t.members.member.accessToken);
    const okId = ok.headers.get("x-request-id");
    await ok.json();
    await new Promise((resolve) => setTimeout(resolve, 50)); // the access line is written when the response ends
    const access = captured.lines.find((l) => (l.req as { id?: string } | undefined)?.id === okId);
    expect(access).toMatchObject({ orgId: t.orgId, userId: t.members.member.userId });
    expect(JSON.stringify(captured.lines)).not.toContain(t.members.member.accessToken);
  });

  test("a job's lines carry Quire's job id, its organization and its requester", async () => {
    const workerPool = createPool({ url: db.config.database.url, max: 4, applicationName: "quire-test-logging-worker" }, captured.logger);
    pools.push(workerPool);
    const worker = await startQuireWorker({ config: db.config, logger: captured.logger, pool: workerPool });
    try {
      const listed = (await (await post({ query: "{ documents(first: 1) { nodes { rowId } } }" }, t.members.member.accessToken)).json()) as {
        data: { documents: { nodes: Array<{ rowId: string }> } };
      };
      const documentId = listed.data.documents.nodes[0]!.rowId;
      const queued = (await (
        await post(
          { query: "mutation ($id: UUID!) { summarizeDocument(input: { documentId: $id }) { job { rowId } } }", variables: { id: documentId } },
          t.members.member.accessToken,
        )
      ).json()) as { data: { summarizeDocument: { job: { rowId: string } } } };
      const jobId = queued.data.summarizeDocument.job.rowId;
      const deadline = Date.now() + 20_000;
      let line: Line | undefined;
      while (!line && Date.now() < deadline) {
        line = captured.lines.find((l) => l.jobId === jobId && typeof l.msg === "string" && l.msg.startsWith("summarize:"));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(line).toMatchObject({ jobId, orgId: t.orgId, userId: t.members.member.userId, graphileJobId: expect.any(String) });
      // graphile-worker's lines carry the job it is about, reduced to its ids and attempts: never its payload (the
      // job token, an email's text).
      const jobLines = captured.lines.filter((l) => (l.job as { task?: string } | undefined)?.task === "summarize");
      expect(jobLines.length).toBeGreaterThan(0);
      for (const l of jobLines) expect(Object.keys(l.job as object).sort()).toEqual(["attempts", "id", "maxAttempts", "task"]);
      expect(JSON.stringify(captured.lines)).not.toContain('"payload"');
    } finally {
      await worker.stop();
    }
  }, 30_000);
});
