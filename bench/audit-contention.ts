// `node bench/audit-contention.ts`: audited writes of one organization under contention. BENCH_WRITERS (default
// 100) connections of one organization's owner each commit audited changes (BENCH_WRITE, below) as fast as they
// can for BENCH_SECONDS (default 20), the way the API runs them (authenticator login, `begin` with the settings of server/context.ts, the insert,
// `commit`). Before issue 12 every audited change took its organization's chain head until it committed, so these
// writers took turns; now they append unsealed events and the worker's sealer (worker/audit-sealer.ts, run here
// at its default interval when this checkout has it) chains them; live events (documents) are numbered by the API
// server's numberer (server/live-numberer.ts), run here too.
//
// It starts an embedded PostgreSQL (db/embedded.ts, a temp DATA_DIR), applies the migrations, runs the writers,
// then seals what is left and checks the chain (app_admin.verify_audit_chain): the run exits 1 if the chain does not
// verify or holds a different number of events than the transactions committed. It prints transactions/s, mean
// and p99 commit latency, and the events left unsealed when the writers stopped; results go to
// bench/results/audit-contention-latest.md.
import "../lib/graphile-env.ts";
import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { loadConfig } from "../lib/config.ts";
import { createLogger } from "../lib/logger.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { pgSettingsFor } from "../server/context.ts";
import { beginWith } from "../server/pg-client.ts";
import { envInt, freePort, log, percentile, finishRun } from "./support.ts";

const writers = envInt("BENCH_WRITERS", 100, 1, 500);
const seconds = envInt("BENCH_SECONDS", 20, 1, 600);
/** BENCH_AUDIT=off: the same writes with the audit triggers of the two tables disabled, the ceiling without audit. */
const audited = process.env.BENCH_AUDIT !== "off";
/**
 * BENCH_WRITE: what each transaction writes. `templates` (default): a template (two audited rows: the template and
 * its first version, no live event). `documents`: a document (one audited row and one live event, whose
 * per-organization numbering is a lock of its own at commit).
 */
const write = process.env.BENCH_WRITE === "documents" ? "documents" : "templates";
const statement =
  write === "documents"
    ? "insert into app_public.documents (title, content) values ($1, 'Contended content')"
    : "insert into app_public.templates (name, body) values ($1, 'Summarize {{document.title}}')";
const eventsPerWrite = write === "documents" ? 1 : 2;

let embedded: EmbeddedPostgres | null = null;
let dataDir: string | null = null;
let failed = false;
try {
  dataDir = await mkdtemp(path.join(os.tmpdir(), "quire-audit-contention-"));
  await chmod(dataDir, 0o755);
  const port = await freePort(54440, []);
  const config = loadConfig({ DATA_DIR: dataDir, EMBEDDED_POSTGRES_PORT: String(port) });
  const logger = createLogger({ level: "warn", pretty: false });
  log(`starting embedded PostgreSQL on 127.0.0.1:${port} and applying the migrations`);
  embedded = await startEmbeddedPostgres(config.database.embedded!, logger);
  await prepareDatabase(config.database, logger);
  const superuserUrl = new URL(config.database.rootUrl!);
  superuserUrl.pathname = `/${config.database.name}`;
  const admin = new pg.Client({ connectionString: superuserUrl.href });
  await admin.connect();
  const version = (await admin.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]!.v;
  const [{ org_id: orgId, user_id: userId }] = (
    await admin.query<{ org_id: string; user_id: string }>(
      `with o as (insert into app_public.organizations (name, slug) values ('Contended', 'contended') returning id),
            u as (insert into app_public.users (email, full_name) values ('owner@contended.example', 'Owner') returning id),
            m as (insert into app_public.memberships (org_id, user_id, role) select o.id, u.id, 'owner' from o, u returning org_id, user_id)
       select org_id, user_id from m`,
    )
  ).rows as [{ org_id: string; user_id: string }];
  const sessionId = randomUUID();
  await admin.query(
    "insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at) values ($1, $2, $3, sha256($4::bytea), now() + interval '1 day')",
    [sessionId, userId, orgId, Buffer.from(sessionId)],
  );
  if (!audited) {
    await admin.query(
      "alter table app_public.templates disable trigger _900_audit; alter table app_public.template_versions disable trigger _900_audit; alter table app_public.documents disable trigger _900_audit",
    );
  }
  const eventsBefore = Number((await admin.query<{ n: string }>("select count(*) as n from app_public.audit_events where org_id = $1", [orgId])).rows[0]!.n);

  // The worker's sealer, where this checkout has one (before issue 12 the chain was built by the writers).
  const sealerModule = await import("../worker/audit-sealer.ts").catch(() => null);
  const sealerPool = new pg.Pool({ connectionString: config.database.url, max: 2 });
  const sealer = sealerModule?.startAuditSealer(sealerPool, config.worker.auditSealIntervalMs ?? 500, logger) ?? null;
  // And the API server's live-event numberer, where this checkout has one (before, changes numbered their own).
  const numbererModule = await import("../server/live-numberer.ts").catch(() => null);
  const numberer = numbererModule?.startLiveNumberer(sealerPool, config.live.numberIntervalMs ?? 10, logger) ?? null;

  const settings = pgSettingsFor(config, { userId, orgId, sessionId, role: "owner", expiresAt: new Date(Date.now() + 3_600_000) }, "bench", "127.0.0.1");
  const clients = await Promise.all(
    Array.from({ length: writers }, async () => {
      const client = new pg.Client({ connectionString: config.database.url, application_name: "bench-audit-writer" });
      await client.connect();
      return client;
    }),
  );
  log(`${writers} writers of one organization for ${seconds} s${sealer ? " (sealer on)" : " (no sealer: this checkout chains at write time)"}`);
  const latencies: number[] = [];
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    clients.map(async (client, w) => {
      for (let i = 0; performance.now() < until; i++) {
        const t0 = performance.now();
        try {
          // As the API begins a transaction: begin and the request's settings in one message.
          await client.query(beginWith(client, Object.entries(settings)));
          await client.query(statement, [`w${w}-${i}`]);
          await client.query("commit");
          latencies.push(performance.now() - t0);
        } catch (error) {
          errors++;
          await client.query("rollback").catch(() => undefined);
          if (errors <= 3) log(`write failed: ${(error as Error).message}`);
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const pending = Number(
    (
      await admin
        .query<{ n: string }>("select count(*) as n from app_public.audit_events where org_id = $1 and seq is null", [orgId])
        .catch(() => ({ rows: [{ n: "0" }] }))
    ).rows[0]!.n,
  );
  await sealer?.stop();
  await numberer?.stop();
  await sealerPool.end();
  for (const client of clients) await client.end();
  if (sealerModule) await admin.query("select app_admin.seal_audit_events()");
  const verdict = (
    await admin.query<{ valid: boolean; events: string; problem: string | null }>("select valid, events, problem from app_admin.verify_audit_chain($1)", [
      orgId,
    ])
  ).rows[0]!;
  const stored = Number((await admin.query<{ n: string }>("select count(*) as n from app_public.audit_events where org_id = $1", [orgId])).rows[0]!.n);
  await admin.end();

  const committed = latencies.length;
  const sorted = latencies.sort((a, b) => a - b);
  const mean = sorted.reduce((s, x) => s + x, 0) / Math.max(1, committed);
  const expected = eventsBefore + (audited ? eventsPerWrite * committed : 0);
  failed = !verdict.valid || Number(verdict.events) !== expected || stored !== expected || errors > 0;
  const lines = [
    `# Audit under contention (${new Date().toISOString()})`,
    "",
    `PostgreSQL ${version} (embedded), ${writers} writers of one organization writing ${write}, ${seconds} s, ${os.cpus().length} CPUs${audited ? "" : ", audit triggers off (BENCH_AUDIT=off)"}.`,
    "",
    "| Transactions | Transactions/s | Mean latency | p99 latency | Errors | Unsealed when writers stopped | Chain |",
    "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    `| ${committed} | ${(committed / elapsed).toFixed(0)} | ${mean.toFixed(1)} ms | ${percentile(sorted, 99).toFixed(1)} ms | ${errors} | ${sealerModule ? pending : "n/a"} | ${verdict.valid ? "verifies" : `BROKEN: ${verdict.problem}`}, ${verdict.events} events (expected ${expected}) |`,
    "",
  ];
  process.stdout.write(lines.join("\n"));
  await finishRun("audit-contention-latest.md", [], () => lines.join("\n"));
} catch (error) {
  failed = true;
  log(`failed: ${(error as Error).stack ?? String(error)}`);
} finally {
  await embedded?.stop().catch(() => undefined);
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
