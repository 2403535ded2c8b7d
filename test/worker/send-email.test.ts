// send_email against a real SMTP server listening on loopback (the smtp-server package): an email queued in the
// database is delivered by the worker through nodemailer, and an unreachable server makes the job retry.
import { SMTPServer } from "smtp-server";
import { createPool } from "../../db/pool.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, roles, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
let smtp: SMTPServer;
let port: number;
const received: Array<{ from: string; to: string[]; data: string }> = [];

beforeAll(async () => {
  db = await createTestDatabase();
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    onData(stream, session, callback) {
      let data = "";
      stream.on("data", (chunk: Buffer) => (data += chunk.toString()));
      stream.on("end", () => {
        received.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "", to: session.envelope.rcptTo.map((r) => r.address), data });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(0, "127.0.0.1", resolve));
  port = (smtp.server.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => smtp.close(() => resolve()));
  await db?.drop();
});

const jobCount = async () =>
  (await query<{ n: number }>(db.name, "select count(*)::int as n from graphile_worker._private_jobs", [], "root"))[0]!.n;

async function waitFor(check: () => Promise<boolean>, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test("a queued email is delivered through SMTP and its job removed", async () => {
  const config = testConfig(db.name, { SMTP_URL: `smtp://127.0.0.1:${port}`, MAIL_FROM: "Quire <no-reply@quire.example>" });
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    await query(db.name, "select app_private.enqueue_email('ann@example.com', 'Hello', 'A body with a link: https://app.example/x?token=abc')", [], "root");
    await waitFor(async () => received.length === 1 && (await jobCount()) === 0);
    expect(received[0]!.from).toBe("no-reply@quire.example");
    expect(received[0]!.to).toEqual(["ann@example.com"]);
    expect(received[0]!.data).toContain("Subject: Hello");
    expect(received[0]!.data).toContain("https://app.example/x?token=abc");
  } finally {
    await worker.stop();
    await pool.end();
  }
});

test("an unreachable SMTP server leaves the job queued for a retry, with the error recorded", async () => {
  const config = testConfig(db.name, { SMTP_URL: "smtp://127.0.0.1:1" });
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    await query(db.name, "select app_private.enqueue_email('bob@example.com', 'Retry me', 'body')", [], "root");
    await waitFor(async () => {
      const [job] = await query<{ attempts: number; last_error: string | null }>(db.name, "select attempts, last_error from graphile_worker._private_jobs", [], "root");
      return (job?.attempts ?? 0) >= 1 && job?.last_error != null;
    });
    const [job] = await query<{ attempts: number; max_attempts: number; last_error: string }>(db.name, "select attempts, max_attempts, last_error from graphile_worker._private_jobs", [], "root");
    expect(job).toMatchObject({ attempts: 1, max_attempts: 5 });
    expect(job!.last_error).toMatch(/ECONNREFUSED/);
  } finally {
    await worker.stop();
    await pool.end();
  }
});

test("neither the API roles nor the authenticator can queue email directly", async () => {
  await expect(query(db.name, "select app_private.enqueue_email('x@example.com', 's', 'b')", [], roles.authenticator)).rejects.toMatchObject({
    code: "42501",
  });
  const rows = await query<{ ok: boolean }>(
    db.name,
    "select bool_or(has_function_privilege(r, 'app_private.enqueue_email(text, text, text)', 'execute')) as ok from unnest($1::text[]) r",
    [[roles.authenticated, roles.anonymous]],
    "root",
  );
  expect(rows).toEqual([{ ok: false }]);
});
