// Development secrets: outside production Quire must start with no configuration at all, so the secrets it needs
// (JWT signing key, passwords of the embedded PostgreSQL's logins, the key that seals integration tokens, the key that signs audit checkpoints) are generated once and kept in
// `<DATA_DIR>/secrets.json` (mode 0600). Keeping them makes a second `npm start` reuse the same database and keeps
// issued tokens valid across restarts. Production never reads this file: its secrets must come from the environment.
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface DevSecrets {
  readonly jwtSecret: string;
  readonly postgresPassword: string;
  readonly ownerPassword: string;
  readonly authenticatorPassword: string;
  /** 32 random bytes, base64url: the development sealing key (SEALING_KEYS `dev:<this>`). */
  readonly sealingKey: string;
  /** 32 random bytes, base64url: the development AUDIT_CHECKPOINT_KEY (an Ed25519 seed). */
  readonly auditCheckpointKey: string;
}

const keys = ["jwtSecret", "postgresPassword", "ownerPassword", "authenticatorPassword", "sealingKey", "auditCheckpointKey"] as const;

const fresh = () => randomBytes(32).toString("base64url");

/** Returns the secrets stored under `dataDir`, creating the file (or any missing key) on first use. */
export function readDevSecrets(dataDir: string): DevSecrets {
  const file = join(dataDir, "secrets.json");
  let stored: Partial<Record<(typeof keys)[number], unknown>> = {};
  try {
    stored = JSON.parse(readFileSync(file, "utf8")) as typeof stored;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new Error(`${file} is unreadable (${(error as Error).message}); delete it to generate new development secrets`);
    }
  }
  const complete = keys.every((k) => typeof stored[k] === "string" && (stored[k] as string).length >= 32);
  if (complete) return stored as unknown as DevSecrets;
  const secrets = Object.fromEntries(
    keys.map((k) => [k, typeof stored[k] === "string" && (stored[k] as string).length >= 32 ? stored[k] : fresh()]),
  ) as unknown as DevSecrets;
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, JSON.stringify(secrets, null, 2) + "\n", { mode: 0o600 });
  return secrets;
}
