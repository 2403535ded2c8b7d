// Rotating the sealing key: with a new key first in SEALING_KEYS, app_admin.reseal_integration_secrets() has the
// worker re-seal every secret with it (integration tokens, 2FA secrets, identity-provider client secrets);
// afterwards the old key is no longer needed to open them.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { sealTokens } from "../../lib/integrations/credentials.ts";
import { generateSealingKey, open, parseSealingKeys, seal, sealContexts } from "../../lib/sealing.ts";
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

  // A person's 2FA secret and the organization's identity-provider client secret, sealed with the old key too.
  const person = t.members.admin.userId;
  const totp = await seal(parseSealingKeys(oldKey), "JBSWY3DPEHPK3PXP", sealContexts.totp(person));
  await query(
    db.name,
    "insert into app_private.user_mfa (user_id, key_id, secret_nonce, secret_ciphertext, enabled_at) values ($1, $2, $3, $4, now())",
    [person, totp.keyId, totp.nonce, totp.ciphertext],
    "root",
  );
  const oidc = await seal(parseSealingKeys(oldKey), "client-secret-1", sealContexts.oidc(t.orgId));
  await query(
    db.name,
    "insert into app_private.sso_secrets (org_id, provider_id, key_id, secret_nonce, secret_ciphertext) select org_id, id, $2, $3, $4 from app_public.sso_providers where org_id = $1",
    [t.orgId, oidc.keyId, oidc.nonce, oidc.ciphertext],
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
    // The same run moves the 2FA and identity-provider secrets (integration tokens first, so they are done by now
    // or within a moment).
    let others: Array<{ kind: string; key_id: string; secret_nonce: Buffer; secret_ciphertext: Buffer }> = [];
    for (let i = 0; i < 200; i++) {
      others = await query(
        db.name,
        `select 'totp' as kind, key_id, secret_nonce, secret_ciphertext from app_private.user_mfa where user_id = $1
         union all select 'oidc', key_id, secret_nonce, secret_ciphertext from app_private.sso_secrets where org_id = $2 order by kind`,
        [person, t.orgId],
        "root",
      );
      if (others.every((o) => o.key_id === "k2")) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(others.map((o) => [o.kind, o.key_id])).toEqual([
      ["oidc", "k2"],
      ["totp", "k2"],
    ]);
    const [oidcRow, totpRow] = others;
    expect(await open(onlyNew, { keyId: "k2", nonce: oidcRow!.secret_nonce, ciphertext: oidcRow!.secret_ciphertext }, sealContexts.oidc(t.orgId))).toBe(
      "client-secret-1",
    );
    expect(await open(onlyNew, { keyId: "k2", nonce: totpRow!.secret_nonce, ciphertext: totpRow!.secret_ciphertext }, sealContexts.totp(person))).toBe(
      "JBSWY3DPEHPK3PXP",
    );
  } finally {
    await worker.stop();
    await pool.end();
  }
});
