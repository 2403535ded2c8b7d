// `npm run audit:verify -- [--public-key <base64url>]… <checkpoint file or directory>…`: checks every audit chain
// against the signed checkpoints the worker wrote (AUDIT_CHECKPOINT_DIR files, objects fetched from
// AUDIT_CHECKPOINT_URL, or log files: lines carrying `auditCheckpoint`). A checkpoint whose signature does not check
// out with a trusted public key is refused and named; every organization is listed with its verdict, and the command
// exits 1 if anything was refused or any chain was rewritten. Trusted keys: each --public-key, else the one derived
// from AUDIT_CHECKPOINT_KEY (verifying needs only the public key). `npm run audit:verify -- --print-public-key`
// prints the configured key's public half. Connects as the owner (OWNER_DATABASE_URL); with the embedded default the
// embedded PostgreSQL must be running (`npm start` in another terminal).
import pg from "pg";
import { checkpointPublicKey, readCheckpoints, verifyAuditChains } from "../lib/audit-checkpoints.ts";
import { ConfigError } from "../lib/config.ts";
import { runOnce } from "../lib/process.ts";

await runOnce("audit-verify", async (config) => {
  const args = process.argv.slice(2);
  const trusted: string[] = [];
  const paths: string[] = [];
  let printOnly = false;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--public-key") trusted.push(args[++i] ?? "");
    else if (args[i] === "--print-public-key") printOnly = true;
    else paths.push(args[i]!);
  }
  const own = config.auditCheckpoints.key ? await checkpointPublicKey(config.auditCheckpoints.key) : null;
  if (printOnly) {
    if (!own) throw new ConfigError(["AUDIT_CHECKPOINT_KEY is not set: there is no public key to print"]);
    process.stdout.write(own + "\n");
    return;
  }
  if (trusted.length === 0 && own) trusted.push(own);
  if (trusted.length === 0) throw new ConfigError(["no public key: pass --public-key <base64url> or set AUDIT_CHECKPOINT_KEY"]);
  if (paths.length === 0) throw new ConfigError(["name the checkpoint files or directories to verify against"]);
  if (!config.database.ownerUrl) throw new ConfigError(["OWNER_DATABASE_URL is required for `npm run audit:verify`"]);

  const checkpoints = await readCheckpoints(paths);
  const owner = new pg.Client({ connectionString: config.database.ownerUrl });
  await owner.connect();
  try {
    const result = await verifyAuditChains(owner, checkpoints, trusted);
    const out: string[] = [`${checkpoints.length} checkpoints read, ${result.refused.length} refused`];
    for (const r of result.refused) out.push(`REFUSED ${JSON.stringify(r.checkpoint)}: ${r.problem}`);
    for (const c of result.chains) {
      out.push(
        c.valid
          ? `ok      ${c.orgId} (${c.events} events${c.pending > 0 ? `, ${c.pending} not sealed yet` : ""})`
          : `BROKEN  ${c.orgId} at event ${c.firstBrokenSeq ?? "?"}${c.firstBrokenId ? ` (${c.firstBrokenId})` : ""}: ${c.problem}`,
      );
    }
    process.stdout.write(out.join("\n") + "\n");
    if (!result.ok) throw new Error("the audit log does not match its checkpoints (see above)");
  } finally {
    await owner.end();
  }
});
