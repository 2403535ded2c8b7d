// `node deploy/drill/run.ts`: the restore drill. Proves that pgBackRest backups and archived WAL bring Quire's
// database back to a chosen moment, on this machine, in a few minutes, leaving nothing behind:
//
//   1. initdb a throwaway PostgreSQL in a temporary directory (loopback only, a free port), archiving its WAL with
//      `pgbackrest archive-push` into a temporary repository, with the settings of deploy/pgbackrest/pgbackrest.conf
//      (zstd compression, asynchronous archiving, retention) and the paths of the temporary directory;
//   2. apply Quire's real schema the way production does (`node bin/migrate.ts`: roles, database, migrations);
//   3. write in four phases (drill rows, organizations and documents, audit events through the app_admin functions,
//      sealed into their hash chains): a full backup after the first, a differential after the second, the target
//      time after the third, and the fourth after the target;
//   4. lose the server (stopped, its data directory and WAL spool deleted), restore to the target time into a fresh
//      data directory (`--type=time --target-action=promote`), start it, and time it until the rows are readable;
//   5. check that exactly what was committed before the target is there (row counts per phase, organizations,
//      documents, audit events), that every audit chain verifies and still holds its head as of the target
//      (app_admin.verify_audit_chains), that heads recorded after the target are reported missing, and that the
//      restored server archives its new timeline into the repository.
//
// It prints a line per step with its duration, a summary, and last a one-line JSON result; it exits 1 on any
// mismatch or failure, and 2 when it cannot run here (no PostgreSQL binaries, no pgbackrest). PostgreSQL refuses to
// run as root, so under root the server and pgbackrest run as the `postgres` OS user (the temporary directory is
// handed to it); anyone else runs them as themselves. If pgbackrest is missing it is installed with apt-get only when
// running as root with apt-get available (and says so); nothing else is installed.
//
// Environment (all optional): DRILL_PG_BINDIR (the PostgreSQL binaries; default the newest /usr/lib/postgresql/*/bin,
// else initdb on PATH), DRILL_TIMEOUT_SECONDS (default 300: the whole drill, clean-up aside), DRILL_KEEP=1 (keep the
// temporary directory, for a look at the logs), DRILL_OS_USER (whom to run PostgreSQL as under root; default postgres).
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { appendFile, chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

const projectRoot = fileURLToPath(new URL("../../", import.meta.url));
const stanza = "drill";
const rowsPerPhase = 1000;
const phases = ["before-full", "before-diff", "before-target", "after-target"] as const;
type Phase = (typeof phases)[number];

/** A failure the drill names itself: printed as one line, without a stack. exitCode 2: cannot run here. */
class DrillError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Time bounds and clean-up

const timeoutSeconds = Number(process.env.DRILL_TIMEOUT_SECONDS ?? "300");
if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
  process.stderr.write("DRILL_TIMEOUT_SECONDS must be a positive number of seconds\n");
  process.exit(2);
}
/** Aborted on timeout or on SIGINT/SIGTERM: every child process is started with this signal, so it is killed. */
const abort = new AbortController();
/** Run in reverse order of registration: clients closed, then the server stopped, then the directory removed. */
const cleanups: Array<() => Promise<void>> = [];
const started = performance.now();
const timings: Record<string, number> = {};

const deadline = setTimeout(() => abort.abort(new DrillError(`the drill took longer than DRILL_TIMEOUT_SECONDS=${timeoutSeconds}`)), timeoutSeconds * 1000);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => abort.abort(new DrillError(`stopped by ${signal}`)));
}

const seconds = (ms: number) => Math.round(ms) / 1000;
const log = (line: string) => process.stdout.write(line + "\n");

/** Runs one named step, printing it with its duration; the duration is kept for the JSON result. */
async function step<T>(name: string, key: string, body: () => Promise<T>): Promise<T> {
  abort.signal.throwIfAborted();
  const t0 = performance.now();
  process.stdout.write(`  ${name} ... `);
  try {
    const result = await body();
    timings[key] = seconds(performance.now() - t0);
    process.stdout.write(`ok (${timings[key].toFixed(2)} s)\n`);
    return result;
  } catch (error) {
    process.stdout.write(`FAILED (${seconds(performance.now() - t0).toFixed(2)} s)\n`);
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

interface RunAs {
  readonly uid: number;
  readonly gid: number;
  readonly name: string;
}

/** Whom PostgreSQL and pgbackrest run as: the postgres OS user under root (PostgreSQL refuses root), else ourselves. */
let runAs: RunAs | null = null;

interface RunOptions {
  /** Kill the command after this long. */
  readonly timeoutMs?: number;
  /** Run as ourselves even under root (bin/migrate.ts, apt-get). */
  readonly asSelf?: boolean;
  readonly env?: NodeJS.ProcessEnv;
  /** Not killed when the drill is aborted: clean-up's own commands. */
  readonly duringCleanup?: boolean;
}

/** Runs a command to completion; rejects naming it, with the end of its output, when it fails or times out. */
function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const as = options.asSelf ? null : runAs;
    const cancel = options.duringCleanup ? undefined : abort.signal;
    const child = spawn(command, args, {
      cwd: workDir ?? tmpdir(),
      env: options.env ?? baseEnv(),
      stdio: ["ignore", "pipe", "pipe"],
      signal: cancel,
      timeout: options.timeoutMs ?? 120_000,
      killSignal: "SIGKILL",
      ...(as ? { uid: as.uid, gid: as.gid } : {}),
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("error", (error) => reject(cancel?.aborted ? cancel.reason : new DrillError(`${command}: ${error.message}`)));
    child.on("close", (code, signal) => {
      if (code === 0) return resolve(output);
      if (cancel?.aborted) return reject(cancel.reason);
      const how = signal ? `was killed (${signal}${signal === "SIGKILL" ? ", timed out" : ""})` : `exited ${code}`;
      const tail = output.trim().split("\n").slice(-15).join("\n");
      reject(new DrillError(`${[command, ...args].join(" ")} ${how}${tail ? `:\n${tail}` : ""}`));
    });
  });
}

/** A minimal environment for child processes: no inherited PG*, PGBACKREST_* or DATABASE_URL can redirect them. */
function baseEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C.UTF-8", TZ: "UTC", HOME: workDir ?? tmpdir() };
}

const commandExists = (name: string) => {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
};

/** A TCP port nobody listens on right now, on the loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Prerequisites

/** The directory holding initdb, pg_ctl and postgres. */
function postgresBinDir(): string {
  const fromEnv = process.env.DRILL_PG_BINDIR;
  if (fromEnv) {
    if (!existsSync(join(fromEnv, "initdb"))) throw new DrillError(`DRILL_PG_BINDIR=${fromEnv} has no initdb`, 2);
    return fromEnv;
  }
  const versions = existsSync("/usr/lib/postgresql")
    ? readdirSync("/usr/lib/postgresql")
        .filter((v) => /^\d+$/.test(v) && existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0]) return `/usr/lib/postgresql/${versions[0]}/bin`;
  if (commandExists("initdb") && commandExists("pg_ctl")) {
    return execFileSync("sh", ["-c", 'dirname "$(readlink -f "$(command -v initdb)")"'], { encoding: "utf8" }).trim();
  }
  throw new DrillError("no PostgreSQL server binaries (initdb, pg_ctl): install PostgreSQL or set DRILL_PG_BINDIR", 2);
}

/** The pgbackrest binary; installed with apt-get when missing, only as root with apt-get available. */
async function pgbackrestBinary(): Promise<string> {
  if (!commandExists("pgbackrest")) {
    if (process.getuid?.() !== 0 || !commandExists("apt-get")) {
      throw new DrillError("pgbackrest is not installed: install it (Debian/Ubuntu: apt-get install pgbackrest) and run the drill again", 2);
    }
    log("  pgbackrest is missing: installing it with apt-get install -y pgbackrest");
    const env = { ...baseEnv(), DEBIAN_FRONTEND: "noninteractive" };
    await run("apt-get", ["install", "-y", "--no-install-recommends", "pgbackrest"], { asSelf: true, env, timeoutMs: 180_000 });
  }
  return execFileSync("sh", ["-c", "command -v pgbackrest"], { encoding: "utf8" }).trim();
}

function lookUpRunAs(): RunAs | null {
  if (process.getuid?.() !== 0) return null;
  const name = process.env.DRILL_OS_USER ?? "postgres";
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8", stdio: "pipe" }).trim());
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8", stdio: "pipe" }).trim());
    if (uid === 0) throw new Error("is root");
    return { uid, gid, name };
  } catch {
    throw new DrillError(
      `running as root, and PostgreSQL refuses root: there is no OS user "${name}" to run it as (create one, set DRILL_OS_USER, or run the drill as a non-root user)`,
      2,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The throwaway cluster

let workDir: string | null = null;

interface Layout {
  readonly root: string;
  readonly data: string;
  readonly socket: string;
  readonly confPath: string;
  readonly repo: string;
  readonly spool: string;
  readonly pgLog: string;
  readonly pgbackrestLog: string;
}

function layoutOf(root: string): Layout {
  return {
    root,
    data: join(root, "pgdata"),
    socket: join(root, "socket"),
    confPath: join(root, "pgbackrest"),
    repo: join(root, "repo"),
    spool: join(root, "spool"),
    pgLog: join(root, "postgres.log"),
    pgbackrestLog: join(root, "pgbackrest-log"),
  };
}

/** A directory PostgreSQL's OS user owns, mode 0700. */
async function ownedDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  await chmod(path, 0o700);
  if (runAs) await chown(path, runAs.uid, runAs.gid);
}

/**
 * pgbackrest's configuration for the drill: deploy/pgbackrest/pgbackrest.conf's settings, with this directory's
 * paths. Every pgbackrest call passes --config-path, so /etc/pgbackrest and its conf.d are never read.
 */
function pgbackrestConf(l: Layout, port: number): string {
  return `[global]
repo1-path=${l.repo}
repo1-retention-full-type=count
repo1-retention-full=4
compress-type=zst
compress-level=3
archive-async=y
spool-path=${l.spool}
lock-path=${join(l.root, "lock")}
log-path=${l.pgbackrestLog}
log-level-console=warn
log-level-file=detail
start-fast=y
process-max=2

[global:archive-push]
process-max=2

[global:archive-get]
process-max=2

[${stanza}]
pg1-path=${l.data}
pg1-port=${port}
pg1-socket-path=${l.socket}
pg1-user=postgres
`;
}

/** postgresql.conf additions: loopback and a private socket only, WAL archived with pgbackrest. */
function postgresConf(l: Layout, port: number, pgbackrest: string): string {
  return `
# Added by deploy/drill/run.ts
listen_addresses = '127.0.0.1'
port = ${port}
unix_socket_directories = '${l.socket}'
wal_level = replica
archive_mode = on
archive_command = '${pgbackrest} --config-path=${l.confPath} --stanza=${stanza} archive-push %p'
archive_timeout = 60
max_connections = 30
shared_buffers = 32MB
log_line_prefix = '%m [%p] '
`;
}

const pgbackrestArgs = (l: Layout, ...rest: string[]) => [`--config-path=${l.confPath}`, `--stanza=${stanza}`, ...rest];

/** The postmaster last started, so clean-up can stop it even if its data directory is gone. */
let serverPid: number | null = null;

async function startServer(bin: string, l: Layout): Promise<void> {
  // -w waits for the server to accept connections (after recovery to a target, once it is consistent).
  await run(join(bin, "pg_ctl"), ["start", "-w", "-t", "120", "-D", l.data, "-l", l.pgLog], { timeoutMs: 130_000 });
  serverPid = Number((await readFile(join(l.data, "postmaster.pid"), "utf8")).split("\n")[0]);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function stopServer(bin: string, l: Layout, mode: "fast" | "immediate", duringCleanup = false): Promise<void> {
  if (existsSync(join(l.data, "postmaster.pid"))) {
    await run(join(bin, "pg_ctl"), ["stop", "-w", "-t", "30", "-m", mode, "-D", l.data], { timeoutMs: 40_000, duringCleanup });
  }
  serverPid = null;
}

/** Clean-up's stop: pg_ctl if it can, else the postmaster's pid (SIGQUIT is an immediate shutdown), SIGKILL last. */
async function stopServerSurely(bin: string, l: Layout): Promise<void> {
  const pid = serverPid;
  await stopServer(bin, l, "immediate", true).catch(() => undefined);
  if (pid === null || !alive(pid)) return;
  process.kill(pid, "SIGQUIT");
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  if (alive(pid)) process.kill(pid, "SIGKILL");
}

// ---------------------------------------------------------------------------------------------------------------
// What the drill writes and reads

interface Logins {
  readonly root: string;
  readonly owner: string;
  readonly authenticator: string;
}

interface Snapshot {
  /** Drill rows per phase. */
  readonly rows: Record<Phase, number>;
  /** Organizations by slug, with their tier: what app_admin.list_organizations() shows. */
  readonly organizations: string[];
  /** Documents per organization slug, with a digest of their titles and contents. */
  readonly documents: Record<string, { count: number; digest: string }>;
  /** Each audit chain: its head (seq and hash), sealed events and events not sealed yet. */
  readonly chains: Array<{ org: string; seq: number; hash: string; events: number; pending: number }>;
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, statement_timeout: 60_000 });
  await client.connect();
  return client;
}

async function snapshot(root: pg.Client): Promise<Snapshot> {
  const counts = await root.query<{ phase: Phase; n: string }>("select phase, count(*) as n from drill.rows group by phase");
  const rows = Object.fromEntries(phases.map((p) => [p, Number(counts.rows.find((r) => r.phase === p)?.n ?? 0)])) as Record<Phase, number>;
  const orgs = await root.query<{ line: string }>("select slug || ' ' || tier || ' ' || members as line from app_admin.list_organizations() order by slug");
  const docs = await root.query<{ slug: string; count: string; digest: string }>(
    `select o.slug, count(*) as count, encode(sha256(convert_to(string_agg(d.title || E'\\n' || d.content, E'\\n' order by d.title), 'UTF8')), 'hex') as digest
       from app_public.documents d join app_public.organizations o on o.id = d.org_id group by o.slug order by o.slug`,
  );
  const chains = await root.query<{ org: string; seq: string; hash: string; events: string; pending: string }>(
    `select c.org_id as org, c.last_seq as seq, encode(c.last_hash, 'hex') as hash,
            (select count(*) from app_public.audit_events e where e.org_id = c.org_id and e.seq is not null) as events,
            (select count(*) from app_public.audit_events e where e.org_id = c.org_id and e.seq is null) as pending
       from app_private.audit_chains c order by c.org_id`,
  );
  return {
    rows,
    organizations: orgs.rows.map((r) => r.line),
    documents: Object.fromEntries(docs.rows.map((r) => [r.slug, { count: Number(r.count), digest: r.digest }])),
    chains: chains.rows.map((r) => ({ org: r.org, seq: Number(r.seq), hash: r.hash, events: Number(r.events), pending: Number(r.pending) })),
  };
}

/**
 * One phase of writes: drill rows, and tenant changes through Quire's own operator functions (as the owner, the
 * way an operator works in psql), whose triggers append audit events; then the events are sealed into their chains,
 * as the worker's sealer does.
 */
async function writePhase(phase: Phase, root: pg.Client, owner: pg.Client): Promise<void> {
  const passphrase = randomBytes(18).toString("base64url");
  const addDocuments = (slug: string, n: number, label: string) =>
    root.query(
      `insert into app_public.documents (org_id, title, content)
       select o.id, $2 || ' ' || g, 'Written in phase ' || $3 || ', document ' || g || '.' from app_public.organizations o, generate_series(1, $4) g
        where o.slug = $1`,
      [slug, label, phase, n],
    );
  await root.query("insert into drill.rows (phase, n) select $1, g from generate_series(1, $2) g", [phase, rowsPerPhase]);
  switch (phase) {
    case "before-full":
      await owner.query("select app_admin.create_organization('Drill Alpha', 'ann@alpha.drill.invalid', 'Ann Alpha', $1, 'drill-alpha')", [passphrase]);
      await addDocuments("drill-alpha", 20, "Alpha handbook");
      break;
    case "before-diff":
      await owner.query("select app_admin.create_organization('Drill Beta', 'bob@beta.drill.invalid', 'Bob Beta', $1, 'drill-beta')", [passphrase]);
      await owner.query("select app_admin.add_user('drill-alpha', 'carl@alpha.drill.invalid', 'Carl Alpha', 'admin', $1)", [passphrase]);
      await addDocuments("drill-alpha", 10, "Alpha runbook");
      await addDocuments("drill-beta", 15, "Beta notes");
      break;
    case "before-target":
      await owner.query("select app_admin.set_tier('drill-alpha', 'premium')");
      await owner.query("select app_admin.add_user('drill-beta', 'ann@alpha.drill.invalid', 'Ann Alpha', 'viewer')");
      await root.query("update app_public.documents set content = content || ' Revised before the target.' where title like 'Alpha handbook %'");
      break;
    case "after-target":
      // Everything here must be missing after the restore: a new organization, a tier change, a member, documents,
      // a deletion and an edit.
      await owner.query("select app_admin.create_organization('Drill Gamma', 'gus@gamma.drill.invalid', 'Gus Gamma', $1, 'drill-gamma')", [passphrase]);
      await owner.query("select app_admin.set_tier('drill-beta', 'basic')");
      await owner.query("select app_admin.add_user('drill-alpha', 'dora@alpha.drill.invalid', 'Dora Alpha', 'member', $1)", [passphrase]);
      await addDocuments("drill-gamma", 5, "Gamma draft");
      await root.query("delete from app_public.documents where title = 'Alpha runbook 3'");
      await root.query("update app_public.documents set content = 'Edited after the target.' where title = 'Beta notes 1'");
      break;
  }
  await owner.query("select app_admin.seal_audit_events()");
}

// ---------------------------------------------------------------------------------------------------------------
// The drill

interface Result {
  ok: boolean;
  drill: "pgbackrest-pitr";
  date: string;
  postgres: string;
  pgbackrest: string;
  target: string;
  recoverySeconds: number;
  restoreSeconds: number;
  startSeconds: number;
  totalSeconds: number;
  restoredFrom: string;
  backups: Array<{ label: string; type: string; sizeBytes: number; repoBytes: number }>;
  present: { rows: number; organizations: number; documents: number; auditEvents: number; auditChains: number };
  absent: { rows: number; organizations: number; auditEvents: number };
  expected: Snapshot;
  steps: Record<string, number>;
  error?: string;
}

async function drill(): Promise<Result> {
  log("Restore drill: pgBackRest full + differential backups, WAL archive, point-in-time restore into a fresh data directory");
  const bin = postgresBinDir();
  runAs = lookUpRunAs();
  const pgbackrest = await pgbackrestBinary();
  const postgresVersion = execFileSync(join(bin, "postgres"), ["--version"], { encoding: "utf8" })
    .trim()
    .replace(/^postgres \(PostgreSQL\) /, "");
  const pgbackrestVersion = execFileSync(pgbackrest, ["version"], { encoding: "utf8" })
    .trim()
    .replace(/^pgBackRest /, "");
  log(
    `  PostgreSQL ${postgresVersion} (${bin}), pgBackRest ${pgbackrestVersion}${runAs ? `, both run as OS user ${runAs.name} (PostgreSQL refuses root)` : ""}`,
  );

  workDir = await mkdtemp(join(tmpdir(), "quire-drill-"));
  const l = layoutOf(workDir);
  await ownedDir(l.root);
  cleanups.push(async () => {
    if (process.env.DRILL_KEEP === "1") log(`  kept ${l.root} (DRILL_KEEP=1)`);
    else await rm(l.root, { recursive: true, force: true });
  });
  // Stops whichever server is running, however the drill ends (clean-ups run last registered first).
  cleanups.push(() => stopServerSurely(bin, l));
  const port = await freePort();
  const superuserPassword = randomBytes(24).toString("base64url");
  const ownerPassword = randomBytes(24).toString("base64url");
  const authenticatorPassword = randomBytes(24).toString("base64url");
  const url = (role: string, password: string, database: string) => `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  const logins: Logins = {
    root: url("postgres", superuserPassword, "quire"),
    owner: url("quire_owner", ownerPassword, "quire"),
    authenticator: url("quire_authenticator", authenticatorPassword, "quire"),
  };

  await step("initdb, pgBackRest configuration, start with WAL archiving", "init", async () => {
    for (const dir of [l.socket, l.confPath, l.repo, l.spool, l.pgbackrestLog, join(l.root, "lock")]) await ownedDir(dir);
    const pwfile = join(l.root, "pwfile");
    await writeFile(pwfile, superuserPassword + "\n", { mode: 0o600 });
    if (runAs) await chown(pwfile, runAs.uid, runAs.gid);
    // Local socket connections (pgbackrest's) are trusted: the socket sits in a 0700 directory only this OS user can
    // enter. TCP on the loopback (ours) needs the random password.
    await run(join(bin, "initdb"), [
      "-D",
      l.data,
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C",
      "--data-checksums",
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      `--pwfile=${pwfile}`,
    ]);
    await rm(pwfile);
    await appendFile(join(l.data, "postgresql.conf"), postgresConf(l, port, pgbackrest));
    const conf = join(l.confPath, "pgbackrest.conf");
    await writeFile(conf, pgbackrestConf(l, port), { mode: 0o640 });
    if (runAs) await chown(conf, runAs.uid, runAs.gid);
    await startServer(bin, l);
  });

  await step("deploy/pgbackrest/pgbackrest.conf parses with this pgBackRest (no unknown options)", "deployConf", async () => {
    // A copy the OS user can read, and an empty include directory so that /etc/pgbackrest/conf.d is not read.
    const copy = join(l.confPath, "deploy.conf");
    await writeFile(copy, await readFile(join(projectRoot, "deploy/pgbackrest/pgbackrest.conf")), { mode: 0o640 });
    await ownedDir(join(l.root, "lint"));
    if (runAs) await chown(copy, runAs.uid, runAs.gid);
    const output = await run(pgbackrest, [
      `--config=${copy}`,
      `--config-include-path=${join(l.root, "lint")}`,
      "--stanza=quire",
      `--repo1-path=${join(l.root, "lint")}`,
      `--lock-path=${join(l.root, "lock")}`,
      "--log-level-console=warn",
      "info",
    ]);
    if (/WARN|ERROR/.test(output)) throw new DrillError(`deploy/pgbackrest/pgbackrest.conf: ${output.trim()}`);
  });

  await step("pgbackrest stanza-create and check (WAL reaches the repository)", "stanza", async () => {
    await run(pgbackrest, pgbackrestArgs(l, "stanza-create"));
    await run(pgbackrest, pgbackrestArgs(l, "check"));
  });

  await step("Quire schema: node bin/migrate.ts (roles, database, migrations)", "migrate", async () => {
    await run(process.execPath, [join(projectRoot, "bin/migrate.ts")], {
      asSelf: true,
      timeoutMs: 120_000,
      env: {
        ...baseEnv(),
        NODE_ENV: "production",
        LOG_LEVEL: "warn",
        // DATA_DIR in the temporary directory: nothing is read from or written to the project's .data.
        DATA_DIR: join(l.root, "quire-data"),
        DATABASE_URL: logins.authenticator,
        OWNER_DATABASE_URL: logins.owner,
        ROOT_DATABASE_URL: url("postgres", superuserPassword, "postgres"),
        JWT_SECRET: randomBytes(32).toString("base64url"),
      },
    });
  });

  const root = await connect(logins.root);
  const owner = await connect(logins.owner);
  const clients = [root, owner];
  cleanups.push(async () => {
    for (const c of clients) await c.end().catch(() => undefined);
  });
  // Drill rows live in a schema of their own; Quire's schemas are only changed through Quire's functions.
  await root.query("create schema drill; create table drill.rows (id bigint generated always as identity primary key, phase text not null, n int not null)");

  await step(`phase 1: ${rowsPerPhase} rows, organization Alpha and its documents, sealed`, "write1", () => writePhase("before-full", root, owner));
  await step("full backup", "fullBackup", () => run(pgbackrest, pgbackrestArgs(l, "--type=full", "backup"), { timeoutMs: 180_000 }));
  await step(`phase 2: ${rowsPerPhase} rows, organization Beta, a member, documents, sealed`, "write2", () => writePhase("before-diff", root, owner));
  await step("differential backup", "diffBackup", () => run(pgbackrest, pgbackrestArgs(l, "--type=diff", "backup"), { timeoutMs: 180_000 }));
  // pgBackRest picks the backup set for a time target by whole seconds: one that stopped in the target's second is
  // passed over for an older one. The pause makes the restore use the differential (full + differential + WAL).
  await new Promise((resolve) => setTimeout(resolve, 1100));
  await step(`phase 3: ${rowsPerPhase} rows, a tier change, a member, edited documents, sealed`, "write3", () => writePhase("before-target", root, owner));

  // The target: the server's clock after every phase-3 commit, read in a statement of its own. What commits after
  // it (phase 4, from the next statement on) must be lost; a short pause keeps the two apart on any clock.
  const expected = await snapshot(root);
  const target = (await root.query<{ t: string }>("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' as t")).rows[0]!.t;
  await new Promise((resolve) => setTimeout(resolve, 200));
  log(`  target time: ${target}`);

  await step(`phase 4 (after the target): ${rowsPerPhase} rows, organization Gamma, changes, sealed`, "write4", () => writePhase("after-target", root, owner));
  const lost = await snapshot(root);
  await step("pgbackrest check: the WAL of phase 4 is archived too", "archiveAfter", () => run(pgbackrest, pgbackrestArgs(l, "check")));

  const info = JSON.parse(await run(pgbackrest, pgbackrestArgs(l, "--output=json", "info"))) as Array<{
    backup: Array<{ label: string; type: string; info: { size: number; repository: { delta: number } } }>;
  }>;
  const backups = (info[0]?.backup ?? []).map((b) => ({ label: b.label, type: b.type, sizeBytes: b.info.size, repoBytes: b.info.repository.delta }));

  await step("lose the server: immediate stop, data directory and WAL spool deleted", "lose", async () => {
    for (const c of clients.splice(0)) await c.end().catch(() => undefined);
    await stopServer(bin, l, "immediate");
    await rm(l.data, { recursive: true, force: true });
    await rm(l.spool, { recursive: true, force: true });
    await ownedDir(l.spool);
    await ownedDir(l.data); // fresh and empty
    await writeFile(l.pgLog, "");
  });

  // Recovery time: from the restore command to the first read of the restored rows on the promoted server.
  const recoveryStart = performance.now();
  const restoredFrom = await step(`pgbackrest restore --type=time --target="${target}" --target-action=promote`, "restore", async () => {
    const output = await run(
      pgbackrest,
      pgbackrestArgs(l, "--log-level-console=info", "--type=time", `--target=${target}`, "--target-action=promote", "restore"),
      {
        timeoutMs: 180_000,
      },
    );
    return /restore backup set (\S+?),/.exec(output)?.[1] ?? "?";
  });
  const restoreSeconds = seconds(performance.now() - recoveryStart);
  const startAt = performance.now();
  const restored = await step("start the restored server, replay WAL to the target, promote", "start", async () => {
    await startServer(bin, l);
    for (;;) {
      abort.signal.throwIfAborted();
      const client = await connect(logins.root).catch(() => null);
      if (client) {
        const promoted = await client
          .query<{ r: boolean }>("select not pg_is_in_recovery() as r")
          .then((q) => q.rows[0]!.r)
          .catch(() => false);
        if (promoted) {
          await client.query("select count(*) from drill.rows");
          return client;
        }
        await client.end();
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });
  clients.push(restored);
  const startSeconds = seconds(performance.now() - startAt);
  const recoverySeconds = seconds(performance.now() - recoveryStart);

  await step("exactly the writes before the target are there (rows, organizations, documents, audit)", "compare", async () => {
    const got = await snapshot(restored);
    const problems: string[] = [];
    if (restoredFrom !== backups.at(-1)?.label) problems.push(`restored from backup set ${restoredFrom}, expected the differential ${backups.at(-1)?.label}`);
    // Recovery must have stopped at the target, not run out of WAL before it.
    if (!(await readFile(l.pgLog, "utf8")).includes("recovery stopping before commit"))
      problems.push("the server's log does not say recovery stopped at the target");
    for (const phase of phases) {
      if (got.rows[phase] !== expected.rows[phase]) problems.push(`drill rows of ${phase}: ${got.rows[phase]}, expected ${expected.rows[phase]}`);
    }
    if (got.rows["after-target"] !== 0) problems.push(`${got.rows["after-target"]} rows written after the target are there`);
    const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
    if (!same(got.organizations, expected.organizations))
      problems.push(`organizations: ${JSON.stringify(got.organizations)}, expected ${JSON.stringify(expected.organizations)}`);
    if (!same(got.documents, expected.documents)) problems.push(`documents: ${JSON.stringify(got.documents)}, expected ${JSON.stringify(expected.documents)}`);
    if (!same(got.chains, expected.chains)) problems.push(`audit chain heads: ${JSON.stringify(got.chains)}, expected ${JSON.stringify(expected.chains)}`);
    if (same(expected, lost)) problems.push("phase 4 changed nothing the drill checks: it proves nothing");
    if (problems.length > 0) throw new DrillError(`the restored database differs from the target:\n    ${problems.join("\n    ")}`);
  });

  await step("audit chains verify, holding their heads as of the target (app_admin.verify_audit_chains)", "auditVerify", async () => {
    const asCheckpoints = (s: Snapshot) => JSON.stringify(s.chains.map((c) => ({ org: c.org, kind: "head", seq: c.seq, hash: c.hash })));
    const verdicts = await restored.query<{ org_id: string; valid: boolean; events: string; problem: string | null; pending: string }>(
      "select * from app_admin.verify_audit_chains($1::jsonb)",
      [asCheckpoints(expected)],
    );
    const bad = verdicts.rows.filter((v) => !v.valid || Number(v.pending) !== 0);
    if (verdicts.rows.length !== expected.chains.length || bad.length > 0) {
      throw new DrillError(`audit chains after the restore: ${JSON.stringify(verdicts.rows)}`);
    }
    // Heads recorded after the target name events the restore took away: verification must say so for exactly the
    // chains phase 4 moved (an operator verifying against later checkpoints sees the same).
    const moved = lost.chains.filter((c) => !expected.chains.some((e) => e.org === c.org && e.seq === c.seq)).map((c) => c.org);
    const later = await restored.query<{ org_id: string; valid: boolean }>("select org_id, valid from app_admin.verify_audit_chains($1::jsonb)", [
      asCheckpoints(lost),
    ]);
    const flagged = later.rows.filter((v) => !v.valid).map((v) => v.org_id);
    if (moved.length === 0 || JSON.stringify(flagged.sort()) !== JSON.stringify(moved.sort())) {
      throw new DrillError(`checkpoints from after the target: flagged ${JSON.stringify(flagged)}, expected ${JSON.stringify(moved)}`);
    }
  });

  await step("the restored server archives its new timeline (pgbackrest check)", "archiveRestored", () => run(pgbackrest, pgbackrestArgs(l, "check")));

  return {
    ok: true,
    drill: "pgbackrest-pitr",
    date: new Date().toISOString(),
    postgres: postgresVersion,
    pgbackrest: pgbackrestVersion,
    target,
    recoverySeconds,
    restoreSeconds,
    startSeconds,
    totalSeconds: 0,
    restoredFrom,
    backups,
    present: {
      rows: phases.reduce((n, p) => n + expected.rows[p], 0),
      organizations: expected.organizations.length,
      documents: Object.values(expected.documents).reduce((n, d) => n + d.count, 0),
      auditEvents: expected.chains.reduce((n, c) => n + c.events, 0),
      auditChains: expected.chains.length,
    },
    absent: {
      rows: lost.rows["after-target"],
      organizations: lost.organizations.length - expected.organizations.length,
      auditEvents: lost.chains.reduce((n, c) => n + c.events, 0) - expected.chains.reduce((n, c) => n + c.events, 0),
    },
    expected,
    steps: timings,
  };
}

async function cleanUp(): Promise<void> {
  const t0 = performance.now();
  for (const cleanup of cleanups.splice(0).reverse()) {
    await cleanup().catch((error: unknown) => process.stderr.write(`clean-up: ${(error as Error).message}\n`));
  }
  timings.cleanup = seconds(performance.now() - t0);
}

async function main(): Promise<number> {
  let result: Result | null = null;
  let failure: unknown = null;
  try {
    result = await drill();
  } catch (error) {
    failure = abort.signal.aborted ? abort.signal.reason : error;
    // The server's log says why a start or a recovery failed; it holds no secrets (no statements are logged).
    const pgLog = workDir ? join(workDir, "postgres.log") : null;
    if (pgLog && existsSync(pgLog) && !(failure instanceof DrillError && failure.exitCode === 2)) {
      const tail = (await readFile(pgLog, "utf8").catch(() => "")).trim().split("\n").slice(-20);
      if (tail.length > 0 && tail[0] !== "") process.stderr.write(`last lines of the server's log:\n  ${tail.join("\n  ")}\n`);
    }
  } finally {
    clearTimeout(deadline);
    // A clean-up that hangs must not keep the drill from ending.
    const hard = setTimeout(() => {
      process.stderr.write("clean-up did not finish in 60 s; exiting\n");
      process.exit(1);
    }, 60_000);
    await cleanUp();
    clearTimeout(hard);
  }
  const totalSeconds = seconds(performance.now() - started);
  if (result && !failure) {
    result.totalSeconds = totalSeconds;
    const { present, absent } = result;
    log("");
    log(
      `Restore drill passed: restored to ${result.target} and readable ${result.recoverySeconds.toFixed(2)} s after the restore began ` +
        `(restore ${result.restoreSeconds.toFixed(2)} s, start + WAL replay + promotion ${result.startSeconds.toFixed(2)} s); drill ${totalSeconds.toFixed(1)} s in all.`,
    );
    log(
      `  present: ${present.rows} drill rows, ${present.organizations} organizations, ${present.documents} documents, ` +
        `${present.auditEvents} sealed audit events in ${present.auditChains} verified chains; absent as they should be: ` +
        `the ${absent.rows} rows, ${absent.organizations} organization and ${absent.auditEvents} audit events written after the target.`,
    );
    log(
      `  restored from ${result.restoredFrom} (${result.backups.map((b) => `${b.type} ${(b.repoBytes / 1024).toFixed(0)} KiB`).join(" + ")} in the repository) and the archived WAL.`,
    );
    const { expected: _expected, ...summary } = result;
    log(JSON.stringify(summary));
    return 0;
  }
  const error = failure instanceof Error ? failure : new Error(String(failure));
  const code = error instanceof DrillError ? error.exitCode : 1;
  process.stderr.write(`\nRestore drill FAILED: ${error instanceof DrillError ? error.message : (error.stack ?? error.message)}\n`);
  log(
    JSON.stringify({
      ok: false,
      drill: "pgbackrest-pitr",
      date: new Date().toISOString(),
      totalSeconds,
      steps: timings,
      error: error.message.replace(/:?\n\s*/g, "; "),
    }),
  );
  return code;
}

process.exitCode = await main();
