// send_email against a real SMTP server listening on loopback (the smtp-server package), with a real server and
// worker logging at debug level into memory. A password reset or an invitation queues only a reference; the
// worker makes the link's token when it sends, so neither the queue (graphile_worker's tables) nor any log line
// ever holds a token or a link, and the delivered link works. A failed attempt's token dies with the retry.
import { Writable } from "node:stream";
import { SMTPServer } from "smtp-server";
import { createPool } from "../../db/pool.ts";
import { createLogger } from "../../lib/logger.ts";
import { createMailer } from "../../lib/mailer.ts";
import { createQuireServer, type QuireServer } from "../../server/app.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, roles, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { codeOf, type GraphQLBody } from "../support/server.ts";
import { createTenant } from "../support/tenants.ts";

let db: TestDatabase;
let smtp: SMTPServer;
let port: number;
const received: Array<{ to: string[]; data: string; accepted: boolean }> = [];
/** Recipients whose next message the SMTP server refuses (after reading it) with a temporary failure. */
const refuseOnce = new Set<string>();

/** A debug-level logger whose lines are kept, as text. */
function capturingLogger() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      done();
    },
  });
  return { logger: createLogger({ level: "debug", pretty: false }, destination), lines };
}

beforeAll(async () => {
  db = await createTestDatabase();
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    onData(stream, session, callback) {
      let data = "";
      stream.on("data", (chunk: Buffer) => (data += chunk.toString()));
      stream.on("error", callback);
      stream.on("end", () => {
        const to = session.envelope.rcptTo.map((r) => r.address);
        const refused = to.some((address) => refuseOnce.delete(address));
        received.push({ to, data, accepted: !refused });
        if (refused) callback(Object.assign(new Error("mailbox busy, try later"), { responseCode: 451 }));
        else callback();
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

async function waitFor(check: () => Promise<boolean> | boolean, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Every row of graphile-worker's job tables, as text. */
const queueText = async () =>
  JSON.stringify([
    await query(db.name, "select * from graphile_worker._private_jobs", [], "root"),
    await query(db.name, "select * from graphile_worker.jobs", [], "root"),
  ]);
const sendEmailJobs = () =>
  query<{ payload: Record<string, unknown> }>(
    db.name,
    "select j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'send_email'",
    [],
    "root",
  );
const mailsTo = (address: string) => received.filter((m) => m.to.includes(address));
/** A received message, quoted-printable decoded. */
const decoded = (data: string) => data.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
/** The token of the link in a received message. */
const tokenIn = (data: string, path: string) => {
  const text = decoded(data);
  return new RegExp(`https://app\\.example\\.com/${path}\\?token=([A-Za-z0-9_-]{43})(?![A-Za-z0-9_-])`).exec(text)?.[1];
};

describe("with a server and a worker", () => {
  const captured = capturingLogger();
  const config = () => testConfig(db.name, { SMTP_URL: `smtp://127.0.0.1:${port}`, APP_URL: "https://app.example.com", BCRYPT_COST: "10" });
  let server: QuireServer;
  let url: string;
  let stopWorker: () => Promise<void>;
  const pools: Array<{ end(): Promise<void> }> = [];
  beforeAll(async () => {
    const serverPool = createPool({ url: config().database.url, max: 4, applicationName: "quire-test-mail-server" }, silentLogger);
    const workerPool = createPool({ url: config().database.url, max: 4, applicationName: "quire-test-mail-worker" }, silentLogger);
    pools.push(serverPool, workerPool);
    server = await createQuireServer({ config: config(), logger: captured.logger, pool: serverPool });
    url = `http://127.0.0.1:${(await server.listen(0)).port}`;
    const worker = await startQuireWorker({ config: config(), logger: captured.logger, pool: workerPool });
    stopWorker = () => worker.stop();
  }, 60_000);
  afterAll(async () => {
    await stopWorker?.();
    await server?.close(2_000);
    for (const pool of pools) await pool.end();
  });

  const gql = async (text: string, variables: Record<string, unknown>, token?: string) =>
    (await (
      await fetch(`${url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ query: text, variables }),
      })
    ).json()) as GraphQLBody;
  const requestReset = (email: string) => gql("mutation ($e: String!) { requestPasswordReset(input: { email: $e }) { success } }", { e: email });
  const reset = (token: string, password: string) =>
    gql("mutation ($t: String!, $p: String!) { resetPassword(input: { token: $t, newPassword: $p }) { success } }", { t: token, p: password });
  const login = (email: string, password: string) =>
    gql("mutation ($e: String!, $p: String!) { login(input: { email: $e, password: $p }) { accessToken } }", { e: email, p: password });

  test("a reset email carries a working link; the queue and the logs never hold its token", async () => {
    const t = await createTenant(db, "Mail Reset");
    const me = t.members.member.email;
    expect(await requestReset(me)).toEqual({ data: { requestPasswordReset: { success: true } } });
    // Queued (unless already sent): the job names an outbox row, and nothing else.
    for (const { payload } of await sendEmailJobs()) expect(Object.keys(payload)).toEqual(["outboxId"]);
    await waitFor(() => mailsTo(me).length === 1);
    const token = tokenIn(mailsTo(me)[0]!.data, "reset-password")!;
    expect(token).toHaveLength(43);
    expect(decoded(mailsTo(me)[0]!.data)).toContain("Choose a new password within an hour:");
    await waitFor(async () => !(await queueText()).includes("outboxId"));
    await new Promise((resolve) => setTimeout(resolve, 200)); // graphile-worker logs the completed job after deleting it
    expect(captured.lines.join("\n")).not.toContain(token);
    expect(captured.lines.join("\n")).not.toContain("reset-password?token");
    expect(captured.lines.some((line) => line.includes("Completed task"))).toBe(true);

    expect(await reset(token, "a brand new passphrase")).toEqual({ data: { resetPassword: { success: true } } });
    expect(codeOf(await login(me, "a brand new passphrase"))).toBeNull();
  }, 30_000);

  test("an invitation email carries a working link; the queue and the logs never hold its token", async () => {
    const t = await createTenant(db, "Mail Invite");
    const invited = `guest@${t.slug}.example`;
    const sent = await gql(
      "mutation ($e: String!) { inviteMember(input: { email: $e, role: viewer }) { inviteLink } }",
      { e: invited },
      t.members.admin.accessToken,
    );
    expect(sent).toEqual({ data: { inviteMember: { inviteLink: null } } }); // mailed, not handed to the admin
    await waitFor(() => mailsTo(invited).length === 1);
    const token = tokenIn(mailsTo(invited)[0]!.data, "accept-invitation")!;
    expect(decoded(mailsTo(invited)[0]!.data)).toContain("Accept within 7 days:");
    await waitFor(async () => !(await queueText()).includes("outboxId"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(captured.lines.join("\n")).not.toContain(token);
    expect(captured.lines.join("\n")).not.toContain("accept-invitation?token");

    const accepted = await gql(
      'mutation ($t: String!) { acceptInvitation(input: { token: $t, password: "a brand new passphrase", fullName: "Guest" }) { organization { slug } } }',
      { t: token },
    );
    expect(accepted).toEqual({ data: { acceptInvitation: { organization: { slug: t.slug } } } });
  }, 30_000);

  test("registering emails a verification link that works once; registering the address again emails its owner a notice without a token", async () => {
    const me = "newcomer@mail.example";
    const register = () =>
      gql("mutation ($i: RegisterInput!) { register(input: $i) { success } }", {
        i: { organizationName: "Mail Newcomer", email: me, password: "a brand new passphrase", fullName: "New Comer" },
      });
    expect(await register()).toEqual({ data: { register: { success: true } } });
    await waitFor(() => mailsTo(me).length === 1);
    const token = tokenIn(mailsTo(me)[0]!.data, "verify-email")!;
    expect(decoded(mailsTo(me)[0]!.data)).toContain("Confirm that this is your address within 24 hours:");
    const verify = () => gql("mutation ($t: String!) { verifyEmail(input: { token: $t }) { success } }", { t: token });
    expect(await verify()).toEqual({ data: { verifyEmail: { success: true } } });
    expect(codeOf(await verify())).toBe("NOT_FOUND");

    expect(await register()).toEqual({ data: { register: { success: true } } });
    await waitFor(() => mailsTo(me).length === 2);
    const notice = decoded(mailsTo(me)[1]!.data);
    expect(notice).toContain("Someone tried to create a Quire account with this address");
    expect(notice).toContain("https://app.example.com/sign-in");
    expect(notice).not.toContain("token=");
    await waitFor(async () => !(await queueText()).includes("outboxId"));
    // Delivered, its outbox row is gone, but the hour's limit still holds: a third attempt queues nothing.
    expect(await register()).toEqual({ data: { register: { success: true } } });
    expect(await sendEmailJobs()).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(captured.lines.join("\n")).not.toContain(token);
  }, 30_000);

  test("a failed attempt leaves no token in the queue; the retry sends a new link and only that one works", async () => {
    const t = await createTenant(db, "Mail Retry");
    const me = t.members.viewer.email;
    refuseOnce.add(me);
    await requestReset(me);
    await waitFor(async () => {
      const [job] = await query<{ last_error: string | null }>(
        db.name,
        "select last_error from graphile_worker.jobs where task_identifier = 'send_email'",
        [],
        "root",
      );
      return job?.last_error != null;
    });
    const refusedToken = tokenIn(mailsTo(me)[0]!.data, "reset-password")!;
    expect(mailsTo(me)[0]!.accepted).toBe(false);
    // The failed job waits for its retry: its row (payload, error) holds neither the token nor the link.
    const queued = await queueText();
    expect((await sendEmailJobs()).map((j) => Object.keys(j.payload))).toEqual([["outboxId"]]);
    expect(queued).not.toContain(refusedToken);
    expect(queued).not.toContain("token=");
    await query(db.name, "update graphile_worker._private_jobs set run_at = now()", [], "root"); // no backoff wait
    await waitFor(() => mailsTo(me).length === 2);
    const token = tokenIn(mailsTo(me)[1]!.data, "reset-password")!;
    expect(token).not.toBe(refusedToken);
    await waitFor(async () => !(await queueText()).includes("outboxId"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(captured.lines.join("\n")).not.toContain(refusedToken);
    expect(captured.lines.join("\n")).not.toContain(token);
    expect(captured.lines.some((line) => line.includes("Failed task"))).toBe(true);

    expect(codeOf(await reset(refusedToken, "a brand new passphrase"))).toBe("NOT_FOUND");
    expect(await reset(token, "a brand new passphrase")).toEqual({ data: { resetPassword: { success: true } } });
  }, 30_000);
});

test("an unreachable SMTP server leaves the job queued for a retry, with the error recorded", async () => {
  const t = await createTenant(db, "Unreachable");
  const config = testConfig(db.name, { SMTP_URL: "smtp://127.0.0.1:1" });
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  await query(db.name, "select app_private.request_password_reset($1)", [t.members.owner.email], roles.authenticator);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    await waitFor(async () => {
      const [job] = await query<{ attempts: number; last_error: string | null }>(
        db.name,
        "select attempts, last_error from graphile_worker._private_jobs",
        [],
        "root",
      );
      return (job?.attempts ?? 0) >= 1 && job?.last_error != null;
    });
    const [job] = await query<{ attempts: number; max_attempts: number; last_error: string }>(
      db.name,
      "select attempts, max_attempts, last_error from graphile_worker._private_jobs",
      [],
      "root",
    );
    expect(job).toMatchObject({ attempts: 1, max_attempts: 5 });
    expect(job!.last_error).toMatch(/ECONNREFUSED/);
  } finally {
    await worker.stop();
    await pool.end();
    await query(db.name, "delete from graphile_worker._private_jobs", [], "root");
  }
});

test("the API roles cannot queue email; the authenticator only through the reset, invitation and registration functions", async () => {
  await expect(query(db.name, "select app_private.queue_mail('password_reset', gen_random_uuid(), null)", [], roles.authenticator)).rejects.toMatchObject({
    code: "42501",
  });
  const rows = await query<{ ok: boolean }>(
    db.name,
    `select bool_or(has_function_privilege(r, f, 'execute')) as ok
       from unnest($1::text[]) r, unnest(array['app_private.queue_mail(text, uuid, uuid)', 'app_private.prepare_email(uuid, bytea)', 'app_private.email_sent(uuid)']) f`,
    [[roles.authenticated, roles.anonymous]],
    "root",
  );
  expect(rows).toEqual([{ ok: false }]);
});

test("without SMTP, a production mailer logs only the recipient; elsewhere the whole message", async () => {
  const mail = { smtpUrl: null, from: "Quire <no-reply@quire.example>", appUrl: "https://app.example.com" };
  const email = { to: "ann@example.com", subject: "Reset", text: "secret link https://app.example.com/reset-password?token=abc" };
  const production = capturingLogger();
  await createMailer({ env: "production", mail }, production.logger).send(email);
  expect(production.lines.join("\n")).toContain("ann@example.com");
  expect(production.lines.join("\n")).not.toContain("token=abc");
  const development = capturingLogger();
  await createMailer({ env: "development", mail }, development.logger).send(email);
  expect(development.lines.join("\n")).toContain("token=abc");
});

test("a job for nothing left to send is dropped without mail", async () => {
  const t = await createTenant(db, "Gone");
  const config = testConfig(db.name, { SMTP_URL: `smtp://127.0.0.1:${port}` });
  const pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  await query(db.name, "select app_private.request_password_reset($1)", [t.members.admin.email], roles.authenticator);
  await query(db.name, "update app_public.users set is_active = false where id = $1", [t.members.admin.userId], "root");
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    await waitFor(async () => (await query(db.name, "select 1 from graphile_worker._private_jobs", [], "root")).length === 0);
    expect(mailsTo(t.members.admin.email)).toEqual([]);
    const tokens = await query(db.name, "select 1 from app_private.password_reset_tokens where user_id = $1", [t.members.admin.userId], "root");
    expect(tokens).toEqual([]);
  } finally {
    await worker.stop();
    await pool.end();
  }
});
