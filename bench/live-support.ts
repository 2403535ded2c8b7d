// What the live benchmarks (job-pipeline.ts, subscriptions.ts) share: GraphQL over HTTP, organizations with a
// member's token each made through the public API, documents, the zero-latency fake LLM and the graphql-ws
// subscribers (each in a worker thread), and the live-event bookkeeping read as the superuser.
import { Worker } from "node:worker_threads";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { FakeLlmMessage } from "./fake-llm.ts";
import { cpuSnapshot, type CpuSnapshot, type CpuUse } from "./proc-cpu.ts";
import type { ClientsCommand, ClientsMessage, Delivery, LiveClientsSetup, LoopStats } from "./live-clients.ts";
import { log } from "./support.ts";

// --- CPU -------------------------------------------------------------------------------------------------------

/** CPU of Quire's Node process, of its embedded PostgreSQL (the process tree under it) and of this bench; before
 *  Quire runs (null), of this bench alone, so `other` is what the rest of the machine does. */
export const liveCpuSnapshot = (quirePid: number | null): CpuSnapshot | null =>
  cpuSnapshot({
    ...(quirePid === null ? {} : { quire: { pid: quirePid, descendants: false }, postgres: { pid: quirePid, descendants: true } }),
    bench: { pid: process.pid, descendants: false },
  });

/** "all / Quire / PostgreSQL / bench / other", in cores. */
export const fmtCpu = (use: CpuUse | null) =>
  use
    ? [use.all, use.groups.get("quire") ?? 0, use.groups.get("postgres") ?? 0, use.groups.get("bench") ?? 0, use.other].map((n) => n.toFixed(2)).join(" / ")
    : "–";

// --- GraphQL over HTTP ----------------------------------------------------------------------------------------

class GraphQLFailure extends Error {
  override readonly name = "GraphQLFailure";
}

/** POSTs one operation; resolves with `data`, throws GraphQLFailure for any error or non-200 answer. */
export async function graphql<T>(base: string, query: string, variables: Record<string, unknown>, token: string | null, timeoutMs = 30_000): Promise<T> {
  const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
  if (token !== null) headers["authorization"] = `Bearer ${token}`;
  const response = await fetch(`${base}/graphql`, {
    method: "POST",
    headers,
    body: JSON.stringify({ query, variables }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let parsed: { data?: T; errors?: Array<{ message?: string; extensions?: { code?: string } }> };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    throw new GraphQLFailure(`HTTP ${response.status}: ${text.slice(0, 200)}`);
  }
  const first = parsed.errors?.[0];
  if (first) throw new GraphQLFailure(`HTTP ${response.status} ${first.extensions?.code ?? "no code"}: ${first.message ?? ""}`.slice(0, 300));
  if (response.status !== 200 || parsed.data === undefined) throw new GraphQLFailure(`HTTP ${response.status}: ${text.slice(0, 200)}`);
  return parsed.data;
}

/** Runs `fn` over `items` with at most `parallel` at once, in order of start; resolves with the results in order. */
export async function inParallel<I, O>(items: readonly I[], parallel: number, fn: (item: I, index: number) => Promise<O>): Promise<O[]> {
  const results = new Array<O>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, lane));
  return results;
}

// --- organizations, members, documents ------------------------------------------------------------------------

export interface Tenant {
  readonly index: number;
  readonly orgId: string;
  readonly slug: string;
  /** A `member` (not the owner) of the organization, signed in to it. */
  readonly memberToken: string;
  readonly documentIds: string[];
}

const PASSWORD = "bench passphrase 2026";

const REGISTER = `mutation ($i: RegisterInput!) { register(input: $i) { success } }`;
const LOGIN = `mutation ($i: LoginInput!) { login(input: $i) { accessToken organization { rowId slug } } }`;
const INVITE = `mutation ($e: String!) { inviteMember(input: { email: $e, role: member }) { inviteLink } }`;
const ACCEPT = `mutation ($t: String!, $p: String!, $n: String!) { acceptInvitation(input: { token: $t, password: $p, fullName: $n }) { accessToken organization { rowId } } }`;
const CREATE_DOCUMENT = `mutation ($d: DocumentInput!) { createDocument(input: { document: $d }) { document { rowId } } }`;

/**
 * `count` organizations through the public API, as people would make them: `register` (an owner and the
 * organization) and `login`; the owner's address verified as its emailed link would (here by the operator's
 * app_admin.verify_email on `ownerUrl`, since no mail leaves); `inviteMember` by the owner (without SMTP_URL the link
 * comes back in the answer) and `acceptInvitation` by the new member, whose token is the one kept. Then
 * `documentsPerOrg` documents each, created by the member. Each sign-up hashes a password three times at the
 * server's BCRYPT_COST, so the benches run Quire at 10.
 */
export async function createTenants(base: string, ownerUrl: string, count: number, documentsPerOrg: number, content: string): Promise<Tenant[]> {
  const run = `${Date.now().toString(36)}`;
  let made = 0;
  let lastReport = Date.now();
  const operator = new pg.Client({ connectionString: ownerUrl, application_name: "bench-verify-email" });
  await operator.connect();
  try {
    return await makeTenants();
  } finally {
    await operator.end();
  }
  function makeTenants() {
    return inParallel(
      Array.from({ length: count }, (_, i) => i),
      4,
      async (index) => {
        const name = `Bench Org ${index + 1}`;
        const ownerEmail = `owner${index + 1}.${run}@bench.example`;
        await graphql(base, REGISTER, { i: { organizationName: name, email: ownerEmail, password: PASSWORD, fullName: `Owner ${index + 1}` } }, null);
        const signedIn = await graphql<{ login: { accessToken: string; organization: { rowId: string; slug: string } } }>(
          base,
          LOGIN,
          { i: { email: ownerEmail, password: PASSWORD } },
          null,
        );
        const { accessToken: ownerToken, organization } = signedIn.login;
        await operator.query("select app_admin.verify_email($1)", [ownerEmail]);
        const invited = await graphql<{ inviteMember: { inviteLink: string | null } }>(
          base,
          INVITE,
          { e: `member${index + 1}.${run}@bench.example` },
          ownerToken,
        );
        const link = invited.inviteMember.inviteLink;
        const invitation = link ? new URL(link).searchParams.get("token") : null;
        if (!invitation) throw new Error("inviteMember returned no link (is SMTP_URL set in the environment? the bench needs it unset)");
        const accepted = await graphql<{ acceptInvitation: { accessToken: string; organization: { rowId: string } } }>(
          base,
          ACCEPT,
          { t: invitation, p: PASSWORD, n: `Member ${index + 1}` },
          null,
        );
        if (accepted.acceptInvitation.organization.rowId !== organization.rowId) throw new Error("acceptInvitation signed in to another organization");
        const memberToken = accepted.acceptInvitation.accessToken;
        const documentIds: string[] = [];
        for (let d = 0; d < documentsPerOrg; d++) {
          const created = await graphql<{ createDocument: { document: { rowId: string } } }>(
            base,
            CREATE_DOCUMENT,
            { d: { title: `${name} document ${d + 1}`, content, format: "markdown" } },
            memberToken,
          );
          documentIds.push(created.createDocument.document.rowId);
        }
        made++;
        if (Date.now() - lastReport >= 5_000) {
          lastReport = Date.now();
          log(`  ${made} of ${count} organizations ready`);
        }
        return { index, orgId: organization.rowId, slug: organization.slug, memberToken, documentIds };
      },
    );
  }
}

/** Each organization's last live-event seq (0 when it has none yet): where a subscription resumes with `since`. */
export async function lastSeqs(db: pg.Client, orgIds: readonly string[]): Promise<Map<string, number>> {
  const { rows } = await db.query<{ org_id: string; last_seq: string }>(
    "select org_id, last_seq from app_private.live_event_counters where org_id = any($1::uuid[])",
    [orgIds],
  );
  const seqs = new Map<string, number>(orgIds.map((id) => [id, 0]));
  for (const row of rows) seqs.set(row.org_id, Number(row.last_seq));
  return seqs;
}

/** The server's connections by application_name, and how many of them are LISTENing (their last statement). */
export async function listenConnections(db: pg.Client): Promise<{ listeners: number; byApplication: string }> {
  const { rows } = await db.query<{ application_name: string; connections: number; listening: number }>(
    `select application_name, count(*)::int as connections, count(*) filter (where query ilike 'listen%')::int as listening
       from pg_stat_activity
      where datname = current_database() and application_name like 'quire-%'
      group by application_name
      order by application_name`,
  );
  const listeners = rows.find((r) => r.application_name === "quire-listener")?.listening ?? 0;
  const byApplication = rows.map((r) => `${r.application_name} ${r.connections}${r.listening > 0 ? ` (${r.listening} listening)` : ""}`).join(", ");
  return { listeners, byApplication };
}

// --- the fake LLM ---------------------------------------------------------------------------------------------

export interface FakeLlm {
  readonly url: string;
  /** Stops it; resolves with how many completions it answered. */
  close(): Promise<number>;
}

/** The fake LLM in a worker thread, answering each completion after `latencyMs` (default 0: at once). */
export async function startFakeLlm(latencyMs = 0): Promise<FakeLlm> {
  const worker = new Worker(new URL("./fake-llm.ts", import.meta.url), { workerData: { latencyMs } });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const next = () =>
    new Promise<FakeLlmMessage>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the fake LLM did not answer within 10 s")), 10_000);
      worker.once("message", (message: FakeLlmMessage) => {
        clearTimeout(timer);
        resolve(message);
      });
      worker.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  const started = await next();
  if (!("port" in started)) throw new Error("the fake LLM did not report its port");
  return {
    url: `http://127.0.0.1:${started.port}/v1`,
    async close() {
      const answered = next();
      worker.postMessage("close");
      const message = await answered.catch(() => null);
      await Promise.race([exited, sleep(5_000, undefined, { ref: false })]);
      await worker.terminate();
      return message && "requests" in message ? message.requests : NaN;
    },
  };
}

// --- the subscribers ------------------------------------------------------------------------------------------

export interface ClientSpec {
  readonly id: number;
  readonly token: string;
  readonly variables: Readonly<Record<string, unknown>>;
}

/** graphql-ws subscribers spread over `threads` worker threads (bench/live-clients.ts). */
export class LiveClients {
  /** Problems the clients reported (errors, closed connections), in arrival order. */
  readonly problems: Array<{ client: number; message: string }> = [];
  private readonly workers: Worker[];
  private readonly onDeliveries: (deliveries: readonly Delivery[]) => void;
  private readonly waiting = new Map<Worker, Array<(message: ClientsMessage) => void>>();
  private readonly openedCounts: Promise<{ connected: number; failed: number }>;

  constructor(options: {
    base: string;
    query: string;
    clients: readonly ClientSpec[];
    threads: number;
    maxConnecting: number;
    onDeliveries: (deliveries: readonly Delivery[]) => void;
  }) {
    this.onDeliveries = options.onDeliveries;
    const threads = Math.max(1, Math.min(options.threads, options.clients.length));
    const url = `${options.base.replace(/^http/, "ws")}/graphql`;
    this.workers = Array.from({ length: threads }, (_, t) => {
      const setup: LiveClientsSetup = {
        url,
        query: options.query,
        clients: options.clients.filter((_, i) => i % threads === t),
        maxConnecting: Math.max(1, Math.ceil(options.maxConnecting / threads)),
      };
      const worker = new Worker(new URL("./live-clients.ts", import.meta.url), { workerData: setup });
      this.waiting.set(worker, []);
      worker.on("message", (message: ClientsMessage) => this.receive(worker, message));
      worker.on("error", (error) => this.problems.push({ client: -1, message: `subscriber thread failed: ${error.message}` }));
      return worker;
    });
    this.openedCounts = Promise.all(this.workers.map((worker) => this.expect(worker, "opened", 300_000))).then((messages) =>
      messages.reduce((sum, m) => (m.type === "opened" ? { connected: sum.connected + m.connected, failed: sum.failed + m.failed } : sum), {
        connected: 0,
        failed: 0,
      }),
    );
  }

  private receive(worker: Worker, message: ClientsMessage): void {
    if (message.type === "events") this.onDeliveries(message.deliveries);
    else if (message.type === "problem") this.problems.push({ client: message.client, message: message.message });
    else this.waiting.get(worker)?.shift()?.(message);
  }

  /** The next control message (opened, loop, closed) of `worker`; they come in the order they were asked for. */
  private expect(worker: Worker, type: ClientsMessage["type"], timeoutMs: number): Promise<ClientsMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the subscriber thread did not answer "${type}" within ${timeoutMs / 1000} s`)), timeoutMs);
      this.waiting.get(worker)!.push((message) => {
        clearTimeout(timer);
        if (message.type === type) resolve(message);
        else reject(new Error(`the subscriber thread answered "${message.type}", expected "${type}"`));
      });
    });
  }

  /** Resolves once every client was acknowledged by the server or failed. */
  opened(): Promise<{ connected: number; failed: number }> {
    return this.openedCounts;
  }

  /** The worst event-loop delay among the subscriber threads since the last reset. */
  async loopDelay(reset: boolean): Promise<LoopStats> {
    const command: ClientsCommand = { cmd: "loop", reset };
    const answers = await Promise.all(
      this.workers.map((worker) => {
        const answer = this.expect(worker, "loop", 10_000);
        worker.postMessage(command);
        return answer;
      }),
    );
    const stats = answers.flatMap((m) => (m.type === "loop" ? [m.stats] : []));
    return {
      p50: Math.max(...stats.map((s) => s.p50)),
      p99: Math.max(...stats.map((s) => s.p99)),
      max: Math.max(...stats.map((s) => s.max)),
    };
  }

  /** Disposes every client and ends the threads. */
  async close(): Promise<void> {
    const command: ClientsCommand = { cmd: "close" };
    await Promise.all(
      this.workers.map(async (worker) => {
        const closed = this.expect(worker, "closed", 30_000);
        worker.postMessage(command);
        await closed.catch(() => undefined);
        await worker.terminate();
      }),
    );
  }
}
