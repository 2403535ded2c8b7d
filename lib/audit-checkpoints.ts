// Checkpoints of the audit hash chains, kept outside the database. The database owner can rewrite audit rows and
// recompute every later hash and the chain's head, or delete the newest rows and rewind the head; the chain alone
// then still verifies. A checkpoint says "organization O's chain held event `seq` with hash H at time T", signed with
// an Ed25519 key (AUDIT_CHECKPOINT_KEY) that the database never sees, and is written where the owner cannot reach it:
// the log, a directory (AUDIT_CHECKPOINT_DIR) and/or an HTTP PUT to object storage (AUDIT_CHECKPOINT_URL).
// `npm run audit:verify` reads checkpoints back, refuses any whose signature does not check out with the public key,
// and has app_admin.verify_audit_chains name every chain that no longer holds its checkpoints.
//
// The signed message (UTF-8), one field a line:
//   quire-audit-checkpoint/1 \n <org uuid> \n <kind: head|anchor> \n <seq> \n <hash, 64 lowercase hex> \n <time, ISO 8601 UTC>
// A checkpoint as stored (one JSON object; a JSON line in a directory, the `auditCheckpoint` field of a log line):
//   {"v":1,"org":…,"kind":…,"seq":…,"hash":…,"time":…,"key":<public key, base64url>,"sig":<signature, base64url>}
// `head` checkpoints a chain's newest event; `anchor` the point a purge (app_admin.purge_audit_events) removed events
// up to, so every removal of events is on record outside the database.
import { appendFile, mkdir, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import sodium from "libsodium-wrappers";
import type pg from "pg";

const seedBytes = 32; // crypto_sign_SEEDBYTES
const domain = "quire-audit-checkpoint/1";
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const hashPattern = /^[0-9a-f]{64}$/;
const base64url = /^[A-Za-z0-9_-]+$/;

/** What a checkpoint vouches for. */
export interface CheckpointBody {
  readonly org: string;
  readonly kind: "head" | "anchor";
  readonly seq: number;
  /** The event's hash, lowercase hex. */
  readonly hash: string;
  /** When it was signed, ISO 8601 UTC. */
  readonly time: string;
}

/** A signed checkpoint, as written to the log and the sinks. */
export interface Checkpoint extends CheckpointBody {
  readonly v: 1;
  /** The Ed25519 public key that signed it, base64url (verification also requires it to be a trusted one). */
  readonly key: string;
  readonly sig: string;
}

/** Returns the private key's seed; assigned by CheckpointKey's static block, the one place that sees #seed. */
let seedOf: (key: CheckpointKey) => Uint8Array;

/**
 * Parsed AUDIT_CHECKPOINT_KEY. Only {@link parseCheckpointKey} makes one, and the seed sits in a private field, so
 * logging or serializing the configuration never shows it.
 */
class CheckpointKey {
  readonly #seed: Uint8Array;
  static {
    seedOf = (key) => key.#seed;
  }
  constructor(seed: Uint8Array) {
    this.#seed = seed;
  }
}
export type { CheckpointKey };

/** Parses AUDIT_CHECKPOINT_KEY: the Ed25519 private key's 32-byte seed, base64url. Throws a message without the key. */
export function parseCheckpointKey(text: string): CheckpointKey {
  const seed = base64url.test(text) ? Buffer.from(text, "base64url") : Buffer.alloc(0);
  if (seed.length !== seedBytes) throw new Error("must be 32 random bytes, base64url (43 characters)");
  return new CheckpointKey(new Uint8Array(seed));
}

/** The public key of `key`, base64url: what verification needs (`npm run audit:verify -- --public-key`). */
export async function checkpointPublicKey(key: CheckpointKey): Promise<string> {
  await sodium.ready;
  return Buffer.from(sodium.crypto_sign_seed_keypair(seedOf(key)).publicKey).toString("base64url");
}

const message = (b: CheckpointBody) => new TextEncoder().encode([domain, b.org, b.kind, String(b.seq), b.hash, b.time].join("\n"));

/** Signs `body` with `key`. */
export async function signCheckpoint(key: CheckpointKey, body: CheckpointBody): Promise<Checkpoint> {
  await sodium.ready;
  const pair = sodium.crypto_sign_seed_keypair(seedOf(key));
  const signed: CheckpointBody = { org: body.org, kind: body.kind, seq: body.seq, hash: body.hash, time: body.time };
  const sig = sodium.crypto_sign_detached(message(signed), pair.privateKey);
  return { v: 1, ...signed, key: Buffer.from(pair.publicKey).toString("base64url"), sig: Buffer.from(sig).toString("base64url") };
}

/**
 * Why `value` is not a checkpoint signed by one of `trustedKeys` (base64url public keys), or null when it is one.
 * Its fields are checked for shape first, so a malformed checkpoint is refused with a reason rather than thrown on.
 */
export async function checkpointProblem(value: unknown, trustedKeys: readonly string[]): Promise<string | null> {
  if (typeof value !== "object" || value === null) return "not a JSON object";
  const c = value as Record<string, unknown>;
  if (c.v !== 1) return "unknown version";
  if (typeof c.org !== "string" || !uuidPattern.test(c.org)) return "org is not a lowercase UUID";
  if (c.kind !== "head" && c.kind !== "anchor") return "kind is neither head nor anchor";
  if (typeof c.seq !== "number" || !Number.isSafeInteger(c.seq) || c.seq < 1) return "seq is not a positive whole number";
  if (typeof c.hash !== "string" || !hashPattern.test(c.hash)) return "hash is not 64 lowercase hex digits";
  if (typeof c.time !== "string" || Number.isNaN(Date.parse(c.time))) return "time is not a date";
  if (typeof c.key !== "string" || !trustedKeys.includes(c.key)) return "signed with a key that is not trusted";
  if (typeof c.sig !== "string" || !base64url.test(c.sig)) return "sig is not base64url";
  await sodium.ready;
  const sig = Buffer.from(c.sig, "base64url");
  const publicKey = Buffer.from(c.key, "base64url");
  const body: CheckpointBody = { org: c.org, kind: c.kind as CheckpointBody["kind"], seq: c.seq, hash: c.hash, time: c.time };
  let good = false;
  try {
    good = sodium.crypto_sign_verify_detached(sig, message(body), publicKey);
  } catch {
    good = false; // a signature or key of the wrong length
  }
  return good ? null : "bad signature";
}

/** Where checkpoints are written besides the log (AUDIT_CHECKPOINT_*). */
export interface CheckpointSinks {
  /** AUDIT_CHECKPOINT_DIR: each organization's checkpoints are appended to `<dir>/<org>.jsonl`. null: none. */
  readonly dir: string | null;
  /**
   * AUDIT_CHECKPOINT_URL: each checkpoint is PUT to `<url>/<org>/<seq, 20 digits>-<kind>-<first 16 hex of hash>.json`
   * (a new object per checkpoint; a rewritten chain never overwrites an old one). null: none.
   */
  readonly url: string | null;
  /** AUDIT_CHECKPOINT_TOKEN: sent as `Authorization: Bearer <token>` with each PUT. null: no header. */
  readonly token: string | null;
  /** Longest one PUT may take (default 30 s). */
  readonly timeoutMs?: number;
}

/** config.auditCheckpoints: the key that signs checkpoints and the sinks they go to besides the log. */
export interface AuditCheckpointSettings extends CheckpointSinks {
  /** AUDIT_CHECKPOINT_KEY (generated in development); null: no checkpoints are made. */
  readonly key: CheckpointKey | null;
}

/** The object name a checkpoint is PUT under, below AUDIT_CHECKPOINT_URL. */
export const checkpointObjectName = (c: Checkpoint) => `${c.org}/${String(c.seq).padStart(20, "0")}-${c.kind}-${c.hash.slice(0, 16)}.json`;

/** Writes `checkpoint` to every configured sink; throws (without the URL or token) when one fails. */
export async function writeCheckpoint(checkpoint: Checkpoint, sinks: CheckpointSinks): Promise<void> {
  const line = JSON.stringify(checkpoint);
  if (sinks.dir) {
    await mkdir(sinks.dir, { recursive: true });
    await appendFile(join(sinks.dir, `${checkpoint.org}.jsonl`), line + "\n", { mode: 0o644 });
  }
  if (sinks.url) {
    let response: Response;
    try {
      response = await fetch(`${sinks.url.replace(/\/+$/, "")}/${checkpointObjectName(checkpoint)}`, {
        method: "PUT",
        headers: { "content-type": "application/json", ...(sinks.token ? { authorization: `Bearer ${sinks.token}` } : {}) },
        body: line,
        signal: AbortSignal.timeout(sinks.timeoutMs ?? 30_000),
      });
    } catch (error) {
      throw new Error(`the checkpoint store could not be reached (${(error as Error).name})`);
    }
    await response.body?.cancel().catch(() => undefined);
    if (!response.ok) throw new Error(`the checkpoint store answered ${response.status} to a PUT`);
  }
}

/**
 * The checkpoints in `paths` (files, or directories read recursively): every line that is a JSON checkpoint, or a
 * log line carrying one in `auditCheckpoint`. Other lines (the rest of a log) are skipped.
 */
export async function readCheckpoints(paths: readonly string[]): Promise<unknown[]> {
  const found: unknown[] = [];
  const visit = async (path: string, depth: number): Promise<void> => {
    if ((await stat(path)).isDirectory()) {
      if (depth > 16) throw new Error(`${path}: directories nested too deep`);
      for (const entry of (await readdir(path)).sort()) await visit(join(path, entry), depth + 1);
      return;
    }
    for (const line of (await readFile(path, "utf8")).split("\n")) {
      if (!line.trim().startsWith("{")) continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        continue;
      }
      const v = value as Record<string, unknown>;
      if (typeof v.auditCheckpoint === "object" && v.auditCheckpoint !== null) found.push(v.auditCheckpoint);
      else if ("sig" in v && "seq" in v) found.push(v);
    }
  };
  for (const path of paths) await visit(path, 0);
  return found;
}

/** One organization's verdict, from app_admin.verify_audit_chains. */
export interface ChainVerdict {
  readonly orgId: string;
  readonly valid: boolean;
  readonly events: number;
  readonly firstBrokenSeq: number | null;
  readonly firstBrokenId: string | null;
  readonly problem: string | null;
  /** Events committed but not sealed yet: not covered by any hash (the worker seals them about every second). */
  readonly pending: number;
}

export interface Verification {
  /** Checkpoints not used because their shape or signature is wrong, with why. */
  readonly refused: readonly { readonly checkpoint: unknown; readonly problem: string }[];
  /** Every organization's chain, checked against the checkpoints that were not refused. */
  readonly chains: readonly ChainVerdict[];
  /** True when nothing was refused and every chain is valid. */
  readonly ok: boolean;
}

/**
 * Checks `checkpoints`' signatures against `trustedKeys`, then has the database (`owner`: a connection as the
 * database owner, who may call app_admin) check every chain against those that are genuine.
 */
export async function verifyAuditChains(owner: pg.ClientBase, checkpoints: readonly unknown[], trustedKeys: readonly string[]): Promise<Verification> {
  const refused: { checkpoint: unknown; problem: string }[] = [];
  const genuine: Checkpoint[] = [];
  for (const checkpoint of checkpoints) {
    const problem = await checkpointProblem(checkpoint, trustedKeys);
    if (problem) refused.push({ checkpoint, problem });
    else genuine.push(checkpoint as Checkpoint);
  }
  const { rows } = await owner.query<{
    org_id: string;
    valid: boolean;
    events: string;
    first_broken_seq: string | null;
    first_broken_id: string | null;
    problem: string | null;
    pending: string;
  }>("select * from app_admin.verify_audit_chains($1::jsonb)", [JSON.stringify(genuine.map((c) => ({ org: c.org, kind: c.kind, seq: c.seq, hash: c.hash })))]);
  const chains = rows.map((r) => ({
    orgId: r.org_id,
    valid: r.valid,
    events: Number(r.events),
    firstBrokenSeq: r.first_broken_seq === null ? null : Number(r.first_broken_seq),
    firstBrokenId: r.first_broken_id,
    problem: r.problem,
    pending: Number(r.pending),
  }));
  return { refused, chains, ok: refused.length === 0 && chains.every((c) => c.valid) };
}
