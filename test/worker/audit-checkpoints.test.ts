// The audit chain against its own database owner. The owner can edit rows and recompute every later hash and the
// head, delete the newest rows and rewind the head, or delete everything: the chain alone still verifies then. The
// worker's checkpoint_audit task signs the chain heads (Ed25519) and writes them to the log, a directory and an HTTP
// PUT; verifying against those checkpoints names each rewrite, refuses forged checkpoints, and accepts a purge whose
// anchor was checkpointed. Changing a row's id breaks its hash even without checkpoints.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runOnce } from "graphile-worker";
import pg from "pg";
import { pino } from "pino";
import { createPool } from "../../db/pool.ts";
import { ConfigError, loadConfig } from "../../lib/config.ts";
import { workerLogger } from "../../lib/worker-logger.ts";
import {
  checkpointProblem,
  checkpointPublicKey,
  parseCheckpointKey,
  readCheckpoints,
  signCheckpoint,
  verifyAuditChains,
  type AuditCheckpointSettings,
  type Checkpoint,
  type Verification,
} from "../../lib/audit-checkpoints.ts";
import { makeCheckpointAudit } from "../../worker/tasks/checkpoint_audit.ts";
import { createTestDatabase, query, roles, silentLogger, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant } from "../support/tenants.ts";

const newKey = () => parseCheckpointKey(randomBytes(32).toString("base64url"));
const seed = randomBytes(32).toString("base64url");
const key = parseCheckpointKey(seed);
let publicKey: string;
let db: TestDatabase;
let pool: pg.Pool;
let dir: string;

/** PUT requests the fake object store received; it answers `status`. */
interface Put {
  readonly path: string;
  readonly authorization: string | undefined;
  readonly body: string;
}
const puts: Put[] = [];
let storeStatus = 200;
let store: Server;
let storeUrl: string;
const storeToken = "store-bearer-token-0123456789";

/** Log lines (parsed pino JSON) the checkpoint task wrote. */
const lines: Record<string, unknown>[] = [];
const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });

beforeAll(async () => {
  db = await createTestDatabase();
  publicKey = await checkpointPublicKey(key);
  pool = createPool({ url: db.config.database.url, max: 3, applicationName: "quire-test-checkpoints" }, silentLogger);
  dir = await mkdtemp(join(tmpdir(), "quire-checkpoints-"));
  store = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => res.destroy());
    req.on("end", () => {
      if (req.method === "PUT" && storeStatus === 200) {
        puts.push({ path: req.url ?? "", authorization: req.headers.authorization, body: Buffer.concat(chunks).toString("utf8") });
      }
      res.writeHead(req.method === "PUT" ? storeStatus : 405).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    store.once("error", reject);
    store.listen(0, "127.0.0.1", resolve);
  });
  storeUrl = `http://127.0.0.1:${(store.address() as AddressInfo).port}/bucket/audit`;
}, 60_000);
afterAll(async () => {
  await pool?.end();
  await new Promise((resolve) => store?.close(resolve));
  if (dir) await rm(dir, { recursive: true, force: true });
  await db?.drop();
});

const settings = (): AuditCheckpointSettings => ({ key, dir, url: storeUrl, token: storeToken });

/** Chains every committed audit event not yet sealed, as the worker's sealer does about every second. */
const seal = () => query(db.name, "select app_admin.seal_audit_events()");

/** Seals, then queues checkpoint_audit on demand (as an operator would) and runs the queue's checkpoint jobs once. */
async function checkpoint(with_: AuditCheckpointSettings = settings()): Promise<void> {
  await seal();
  await query(db.name, "select app_admin.checkpoint_audit_chains()");
  await runOnce({ pgPool: pool, noHandleSignals: true, logger: workerLogger(logger) }, { checkpoint_audit: makeCheckpointAudit(with_) as never });
}

/** Every checkpoint written to the directory sink so far. */
const stored = () => readCheckpoints([dir]);

async function verifyAll(checkpoints: readonly unknown[], trusted = [publicKey]): Promise<Verification> {
  const owner = new pg.Client({ connectionString: urlFor(roles.owner, db.name) });
  await owner.connect();
  try {
    return await verifyAuditChains(owner, checkpoints, trusted);
  } finally {
    await owner.end();
  }
}
const verdictOf = (v: Verification, orgId: string) => v.chains.find((c) => c.orgId === orgId);

/** The chain's own verdict, without checkpoints (what an owner's rewrite can fool). */
const verifyAlone = async (orgId: string) => {
  await seal();
  return (
    await query<{ valid: boolean; first_broken_seq: string | null; problem: string | null }>(db.name, "select * from app_admin.verify_audit_chain($1)", [orgId])
  )[0]!;
};

/** As the owner: set quire.definer and run `body` (plpgsql) with `org` bound to the organization. */
const asOwner = (orgId: string, body: string) =>
  query(
    db.name,
    `do $$ declare org uuid := '${orgId}'; e app_public.audit_events; v_prev bytea; begin perform set_config('quire.definer', 'on', true); ${body} end $$`,
  );

/** Recomputes every hash from event `from` on, and the head, as an owner covering a rewrite would. */
const rechainFrom = (from: number) => `
  select a.hash into v_prev from app_public.audit_events a where a.org_id = org and a.seq = ${from - 1};
  for e in select * from app_public.audit_events a where a.org_id = org and a.seq >= ${from} order by a.seq loop
    e.prev_hash := v_prev;
    v_prev := app_private.audit_hash(v_prev, e);
    update app_public.audit_events a set prev_hash = e.prev_hash, hash = v_prev where a.id = e.id;
  end loop;
  update app_private.audit_chains c set last_hash = v_prev where c.org_id = org;`;

const eventCount = async (orgId: string) =>
  Number((await query<{ n: string }>(db.name, "select count(*) as n from app_public.audit_events where org_id = $1", [orgId], "root"))[0]!.n);

describe("the checkpoint task", () => {
  test("signs each moved head into the log, the directory and a PUT with the bearer token; an unmoved head is not signed again", async () => {
    const t = await createTenant(db, "Checkpointed");
    const head = await eventCount(t.orgId);
    lines.length = 0;
    puts.length = 0;
    await checkpoint();

    const logged = lines.filter((l) => l.msg === "audit checkpoint").map((l) => ({ level: l.level, checkpoint: l.auditCheckpoint as Checkpoint }));
    const mine = logged.find((l) => l.checkpoint.org === t.orgId);
    expect(mine).toMatchObject({ level: 30, checkpoint: { v: 1, org: t.orgId, kind: "head", seq: head, key: publicKey } });
    expect(await checkpointProblem(mine!.checkpoint, [publicKey])).toBeNull();
    const [{ hash }] = (await query<{ hash: Buffer }>(
      db.name,
      "select hash from app_public.audit_events where org_id = $1 and seq = $2",
      [t.orgId, head],
      "root",
    )) as [{ hash: Buffer }];
    expect(mine!.checkpoint.hash).toBe(hash.toString("hex"));

    const file = (await readFile(join(dir, `${t.orgId}.jsonl`), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Checkpoint);
    expect(file).toEqual([mine!.checkpoint]);

    const put = puts.find((p) => p.path.includes(t.orgId));
    expect(put).toEqual({
      path: `/bucket/audit/${t.orgId}/${String(head).padStart(20, "0")}-head-${hash.toString("hex").slice(0, 16)}.json`,
      authorization: `Bearer ${storeToken}`,
      body: JSON.stringify(mine!.checkpoint),
    });
    // Nothing secret in the log: the line holds the public key and signature only.
    expect(JSON.stringify(lines)).not.toContain(storeToken);

    lines.length = 0;
    await checkpoint();
    expect(lines.filter((l) => l.msg === "audit checkpoint" && (l.auditCheckpoint as Checkpoint).org === t.orgId)).toHaveLength(0);
    expect(await verifyAll(await stored())).toMatchObject({ ok: true, refused: [] });
  });

  test("a checkpoint the store refuses is not recorded, and the next run writes it", async () => {
    const t = await createTenant(db, "Store down");
    storeStatus = 503;
    try {
      await checkpoint();
    } finally {
      storeStatus = 200;
    }
    const recorded = async () =>
      (await query<{ checkpoint_seq: string }>(db.name, "select checkpoint_seq from app_private.audit_chains where org_id = $1", [t.orgId], "root"))[0]!
        .checkpoint_seq;
    expect(await recorded()).toBe("0");
    expect(puts.some((p) => p.path.includes(t.orgId))).toBe(false);
    await query(db.name, "select graphile_worker.remove_job('checkpoint_audit')", [], "root");
    await checkpoint();
    expect(Number(await recorded())).toBe(await eventCount(t.orgId));
    expect(puts.some((p) => p.path.includes(t.orgId))).toBe(true);
  });

  test("without AUDIT_CHECKPOINT_KEY nothing is signed and nothing recorded", async () => {
    const t = await createTenant(db, "Unkeyed");
    lines.length = 0;
    await checkpoint({ ...settings(), key: null });
    expect(lines.filter((l) => l.msg === "audit checkpoint")).toHaveLength(0);
    expect(lines.some((l) => String(l.msg).includes("AUDIT_CHECKPOINT_KEY is not configured"))).toBe(true);
    expect((await query(db.name, "select 1 from app_private.audit_chains where org_id = $1 and checkpoint_seq > 0", [t.orgId], "root")).length).toBe(0);
    // Nor can the worker's login mark a checkpoint of an event that is not in the chain.
    await query(db.name, "select app_private.record_audit_checkpoint($1, 'head', 999999, sha256(''))", [t.orgId], roles.authenticator);
    expect((await query(db.name, "select 1 from app_private.audit_chains where org_id = $1 and checkpoint_seq > 0", [t.orgId], "root")).length).toBe(0);
  });
});

/** Runs `npm run audit:verify -- <args>` (its script, with node) against the test database; its exit code and output. */
function auditVerify(args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["bin/audit-verify.ts", ...args], {
      env: {
        PATH: process.env.PATH,
        NODE_ENV: "test",
        LOG_LEVEL: "silent",
        DATABASE_URL: urlFor(roles.authenticator, db.name),
        OWNER_DATABASE_URL: urlFor(roles.owner, db.name),
        JWT_SECRET: "test-secret-that-is-at-least-32-characters-long",
        AUDIT_CHECKPOINT_KEY: seed,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout }));
  });
}

describe("npm run audit:verify", () => {
  test("passes while every chain holds its checkpoints, prints the public key, and exits 1 naming a rewound chain", async () => {
    const t = await createTenant(db, "Command line");
    await checkpoint();
    const head = await eventCount(t.orgId);
    expect(await auditVerify(["--print-public-key"])).toEqual({ code: 0, stdout: `${publicKey}\n` });
    const good = await auditVerify([dir]);
    expect(good.stdout).toContain(`ok      ${t.orgId} (${head} events)`);
    expect(good).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+ checkpoints read, 0 refused\n/) });

    await asOwner(
      t.orgId,
      `delete from app_public.audit_events a where a.org_id = org and a.seq = ${head};
       update app_private.audit_chains c set last_seq = ${head - 1},
         last_hash = (select a.hash from app_public.audit_events a where a.org_id = org and a.seq = ${head - 1}) where c.org_id = org;`,
    );
    const bad = await auditVerify(["--public-key", publicKey, dir]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`BROKEN  ${t.orgId} at event ${head}: the head is at event ${head - 1} but checkpoint ${head} was made`);
  });
});

describe("an owner's rewrite, verified against the checkpoints", () => {
  test("(a) an edited event with every later hash and the head recomputed is named", async () => {
    const t = await createTenant(db, "Rewritten");
    await checkpoint();
    const head = await eventCount(t.orgId);
    await asOwner(t.orgId, `update app_public.audit_events a set details = '{"forged": true}' where a.org_id = org and a.seq = 2; ${rechainFrom(2)}`);
    expect(await verifyAlone(t.orgId)).toMatchObject({ valid: true }); // the chain alone is fooled
    const verdict = verdictOf(await verifyAll(await stored()), t.orgId);
    expect(verdict).toMatchObject({ valid: false, firstBrokenSeq: head, problem: expect.stringMatching(/checkpoint \d+ is no longer in the chain/) });
  });

  test("(b) the newest events removed and the head rewound are named", async () => {
    const t = await createTenant(db, "Rewound");
    await checkpoint();
    const head = await eventCount(t.orgId);
    await asOwner(
      t.orgId,
      `delete from app_public.audit_events a where a.org_id = org and a.seq > ${head - 2};
       update app_private.audit_chains c set last_seq = ${head - 2},
         last_hash = (select a.hash from app_public.audit_events a where a.org_id = org and a.seq = ${head - 2}) where c.org_id = org;`,
    );
    expect(await verifyAlone(t.orgId)).toMatchObject({ valid: true });
    expect(verdictOf(await verifyAll(await stored()), t.orgId)).toMatchObject({
      valid: false,
      firstBrokenSeq: head - 1,
      problem: expect.stringMatching(/head is at event \d+ but checkpoint \d+ was made/),
    });
  });

  test("(c) everything deleted, the chain's head included, is named; so is a head reset to nothing", async () => {
    const gone = await createTenant(db, "Erased");
    const reset = await createTenant(db, "Reset");
    await checkpoint();
    await asOwner(gone.orgId, "delete from app_public.audit_events a where a.org_id = org; delete from app_private.audit_chains c where c.org_id = org;");
    await asOwner(
      reset.orgId,
      "delete from app_public.audit_events a where a.org_id = org; update app_private.audit_chains c set last_seq = 0, last_hash = decode(repeat('00', 32), 'hex') where c.org_id = org;",
    );
    expect(await verifyAlone(gone.orgId)).toMatchObject({ valid: true });
    expect(await verifyAlone(reset.orgId)).toMatchObject({ valid: true });
    const result = await verifyAll(await stored());
    expect(result.ok).toBe(false);
    expect(verdictOf(result, gone.orgId)).toMatchObject({ valid: false, events: 0, problem: expect.stringMatching(/no chain, but checkpoint \d+ was made/) });
    expect(verdictOf(result, reset.orgId)).toMatchObject({
      valid: false,
      events: 0,
      problem: expect.stringMatching(/newest events were removed and the head rewound/),
    });
  });

  test("(d) a changed id breaks the event's hash, even without checkpoints", async () => {
    const t = await createTenant(db, "Renumbered");
    await seal();
    await asOwner(t.orgId, "update app_public.audit_events a set id = gen_random_uuid() where a.org_id = org and a.seq = 2;");
    expect(await verifyAlone(t.orgId)).toMatchObject({ valid: false, first_broken_seq: "2", problem: expect.stringMatching(/edited/) });
  });

  test("(e) a purge verifies once its anchor is checkpointed; an anchor set by hand is named", async () => {
    const t = await createTenant(db, "Purged");
    await checkpoint();
    const total = await eventCount(t.orgId);
    await query(db.name, "update app_public.documents set title = 'Later' where org_id = $1", [t.orgId], "root");
    const [{ purged }] = (await query<{ purged: string }>(
      db.name,
      "select app_admin.purge_audit_events($1, (select occurred_at from app_public.audit_events where org_id = $1 and action = 'update' order by seq desc limit 1)) as purged",
      [t.orgId],
      "root",
    )) as [{ purged: string }];
    expect(Number(purged)).toBe(total);
    expect(verdictOf(await verifyAll(await stored()), t.orgId)).toMatchObject({
      valid: false,
      problem: expect.stringMatching(/no anchor checkpoint records a purge/),
    });
    await checkpoint(); // the purge queued it too
    const checkpoints = await stored();
    expect(checkpoints).toContainEqual(expect.objectContaining({ org: t.orgId, kind: "anchor", seq: total }));
    expect(verdictOf(await verifyAll(checkpoints), t.orgId)).toMatchObject({ valid: true, events: 1 });

    // Events removed by hand, with the anchor moved to cover them, are not a purge on record.
    const u = await createTenant(db, "Hand purged");
    await checkpoint();
    await asOwner(
      u.orgId,
      `update app_private.audit_chains c set anchor_seq = 2, anchor_hash = (select a.hash from app_public.audit_events a where a.org_id = org and a.seq = 2), anchor_checkpointed = true where c.org_id = org;
       delete from app_public.audit_events a where a.org_id = org and a.seq <= 2;`,
    );
    expect(await verifyAlone(u.orgId)).toMatchObject({ valid: true });
    expect(verdictOf(await verifyAll(await stored()), u.orgId)).toMatchObject({
      valid: false,
      firstBrokenSeq: 2,
      problem: expect.stringMatching(/no anchor checkpoint/),
    });
  });

  test("(f) a checkpoint with a bad signature, or signed by an untrusted key, is refused and not used", async () => {
    const t = await createTenant(db, "Forged");
    await checkpoint();
    const genuine = (await stored()).filter((c) => (c as Checkpoint).org === t.orgId) as Checkpoint[];
    expect(genuine.length).toBeGreaterThan(0);
    const original = genuine[genuine.length - 1]!;
    // A checkpoint claiming events that never existed, with the genuine signature: it would name a rewind if used.
    const tampered = { ...original, seq: original.seq + 100 };
    const otherKey = await signCheckpoint(newKey(), { ...original, seq: original.seq + 100 });
    const result = await verifyAll([...genuine, tampered, otherKey]);
    expect(result.refused).toEqual([
      { checkpoint: tampered, problem: "bad signature" },
      { checkpoint: otherKey, problem: "signed with a key that is not trusted" },
    ]);
    expect(result.ok).toBe(false);
    expect(verdictOf(result, t.orgId)).toMatchObject({ valid: true });
    // Trusting only another key refuses every genuine checkpoint.
    expect((await verifyAll(genuine, [await checkpointPublicKey(newKey())])).refused).toHaveLength(genuine.length);
  });
});

describe("configuration", () => {
  test("AUDIT_CHECKPOINT_KEY must be a 32-byte base64url seed, and the error does not echo it", () => {
    const bad = "not-a-key-but-still-secret";
    let error: unknown;
    try {
      loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://a:b@localhost/quire", JWT_SECRET: "x".repeat(32), AUDIT_CHECKPOINT_KEY: bad });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual(["AUDIT_CHECKPOINT_KEY must be 32 random bytes, base64url (43 characters)"]);
    expect((error as Error).message).not.toContain(bad);
  });

  test("outside production a key is generated once and kept; the configuration never shows it", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "quire-dev-secrets-"));
    try {
      const first = loadConfig({ NODE_ENV: "development", DATA_DIR: dataDir }).auditCheckpoints;
      const again = loadConfig({ NODE_ENV: "development", DATA_DIR: dataDir }).auditCheckpoints;
      expect(first.key).not.toBeNull();
      expect(await checkpointPublicKey(again.key!)).toBe(await checkpointPublicKey(first.key!));
      const seed = (JSON.parse(await readFile(join(dataDir, "secrets.json"), "utf8")) as { auditCheckpointKey: string }).auditCheckpointKey;
      expect(JSON.stringify(first)).not.toContain(seed);
      const production = loadConfig({ NODE_ENV: "production", DATABASE_URL: "postgres://a:b@localhost/quire", JWT_SECRET: "x".repeat(32) });
      expect(production.auditCheckpoints.key).toBeNull();
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
