// Rotating the sealing key: with a new key first in SEALING_KEYS, app_admin.reseal_integration_secrets() has the
// worker re-seal every integration secret with it; afterwards the old key is no longer needed to open them.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { sealTokens } from "../../lib/integrations/credentials.ts";
import { generateSealingKey, open, parseSealingKeys } from "../../lib/sealing.ts";
import { startQuireWorker } from "../../worker/runner.ts";
import { createTestDatabase, query, silentLogger, testConfig, type TestDatabase } from "../support/database.ts";
import { createTenant } from "../support/tenants.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

test("reseal_secrets moves every secret to the current key, and only the new key is then needed", async () => {
  const t = await createTenant(db, "Rotate");
  const oldKey = `k1:${generateSealingKey()}`;
  const newKey = `k2:${generateSealingKey()}`;
  const [integration] = await query<{ id: string }>(db.name, "select id from app_public.integrations where org_id = $1", [t.orgId], "root");
  const where = { orgId: t.orgId, integrationId: integration!.id, provider: "notion" };
  const sealed = await sealTokens(parseSealingKeys(oldKey), { accessToken: "access-1", refreshToken: "refresh-1", expiresAt: null, scopes: [] }, where);
  await query(
    db.name,
    `insert into app_private.integration_secrets (integration_id, org_id, key_id, access_nonce, access_ciphertext, refresh_nonce, refresh_ciphertext)
     values ($1, $2, $3, $4, $5, $6, $7)`,
    [integration!.id, t.orgId, sealed.keyId, sealed.access.nonce, sealed.access.ciphertext, sealed.refresh!.nonce, sealed.refresh!.ciphertext],
    "root",
  );

  const config = testConfig(db.name, { SEALING_KEYS: `${newKey},${oldKey}` });
  const pool: pg.Pool = createPool({ url: config.database.url, max: 4, applicationName: "quire-test-worker" }, silentLogger);
  const worker = await startQuireWorker({ config, logger: silentLogger, pool });
  try {
    await query(db.name, "select app_admin.reseal_integration_secrets()");
    let row: { key_id: string; access_nonce: Buffer; access_ciphertext: Buffer; refresh_nonce: Buffer; refresh_ciphertext: Buffer } | undefined;
    for (let i = 0; i < 200; i++) {
      [row] = await query(
        db.name,
        "select key_id, access_nonce, access_ciphertext, refresh_nonce, refresh_ciphertext from app_private.integration_secrets where integration_id = $1",
        [integration!.id],
        "root",
      );
      if (row?.key_id === "k2") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(row!.key_id).toBe("k2");
    const onlyNew = parseSealingKeys(newKey);
    expect(await open(onlyNew, { keyId: "k2", nonce: row!.access_nonce, ciphertext: row!.access_ciphertext }, { ...where, purpose: "access" })).toBe(
      "access-1",
    );
    expect(await open(onlyNew, { keyId: "k2", nonce: row!.refresh_nonce, ciphertext: row!.refresh_ciphertext }, { ...where, purpose: "refresh" })).toBe(
      "refresh-1",
    );
  } finally {
    await worker.stop();
    await pool.end();
  }
});
