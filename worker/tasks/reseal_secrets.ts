// reseal_secrets: after an operator put a new key first in SEALING_KEYS, re-seals every secret still sealed with an
// older key (queued by app_admin.reseal_integration_secrets()): integration tokens, then people's 2FA secrets and
// organizations' identity-provider client secrets. It runs as the authenticator through app_private functions; a
// secret that changed meanwhile (a token refresh, a new enrollment or provider seals with the current key anyway) is
// left as it is. A secret no configured key opens is logged and skipped: it stays unusable until reconnected (an
// integration), re-enrolled (2FA; app_admin.reset_mfa) or configured again (configureSso).
import type { Task } from "graphile-worker";
import { open, seal, sealContexts, SealError, type Sealed, type SealingKeys } from "../../lib/sealing.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      reseal_secrets: Record<string, unknown>;
    }
  }
}

interface Row {
  integration_id: string;
  org_id: string;
  provider: string;
  key_id: string;
  access_nonce: Buffer;
  access_ciphertext: Buffer;
  refresh_nonce: Buffer | null;
  refresh_ciphertext: Buffer | null;
}

/**
 * A 2FA secret (kind totp, owner a person), an identity-provider client secret (kind oidc, owner an organization) or
 * an organization's LLM API key (kind llm).
 */
interface PersonOrOrgSecret {
  kind: "totp" | "oidc" | "llm";
  owner_id: string;
  key_id: string;
  secret_nonce: Buffer;
  secret_ciphertext: Buffer;
}

const batchSize = 100;

export function makeResealSecrets(keys: SealingKeys | null): Task<"reseal_secrets"> {
  return async (_payload, helpers) => {
    if (!keys) {
      helpers.logger.error("reseal_secrets: SEALING_KEYS is not configured");
      return;
    }
    const skipped = new Set<string>();
    let resealed = 0;
    for (;;) {
      const { rows } = await helpers.query<Row>("select * from app_private.secrets_to_reseal($1, $2)", [keys.currentKeyId, batchSize + skipped.size]);
      const todo = rows.filter((row) => !skipped.has(row.integration_id));
      if (todo.length === 0) break;
      for (const row of todo) {
        const where = { orgId: row.org_id, integrationId: row.integration_id, provider: row.provider };
        const reseal = async (nonce: Buffer, ciphertext: Buffer, purpose: string): Promise<Sealed> => {
          const plain = await open(keys, { keyId: row.key_id, nonce, ciphertext }, { ...where, purpose });
          return seal(keys, plain, { ...where, purpose });
        };
        try {
          const access = await reseal(row.access_nonce, row.access_ciphertext, "access");
          const refresh = row.refresh_nonce && row.refresh_ciphertext ? await reseal(row.refresh_nonce, row.refresh_ciphertext, "refresh") : null;
          await helpers.query("select app_private.reseal($1, $2, $3, $4, $5, $6, $7)", [
            row.integration_id,
            row.key_id,
            access.keyId,
            access.nonce,
            access.ciphertext,
            refresh?.nonce ?? null,
            refresh?.ciphertext ?? null,
          ]);
          resealed++;
        } catch (error) {
          if (!(error instanceof SealError)) throw error;
          skipped.add(row.integration_id);
          helpers.logger.error(`reseal_secrets: integration ${row.integration_id} cannot be opened (${error.code}); reconnect it`);
        }
      }
    }
    for (;;) {
      const { rows } = await helpers.query<PersonOrOrgSecret>("select * from app_private.person_and_org_secrets_to_reseal($1, $2)", [
        keys.currentKeyId,
        batchSize + skipped.size,
      ]);
      const todo = rows.filter((row) => !skipped.has(`${row.kind}:${row.owner_id}`));
      if (todo.length === 0) break;
      for (const row of todo) {
        const context = sealContexts[row.kind](row.owner_id);
        try {
          const plain = await open(keys, { keyId: row.key_id, nonce: row.secret_nonce, ciphertext: row.secret_ciphertext }, context);
          const sealed = await seal(keys, plain, context);
          await helpers.query("select app_private.reseal_person_or_org_secret($1, $2, $3, $4, $5, $6, $7)", [
            row.kind,
            row.owner_id,
            row.key_id,
            row.secret_nonce,
            sealed.keyId,
            sealed.nonce,
            sealed.ciphertext,
          ]);
          resealed++;
        } catch (error) {
          if (!(error instanceof SealError)) throw error;
          skipped.add(`${row.kind}:${row.owner_id}`);
          helpers.logger.error(`reseal_secrets: ${row.kind} secret of ${row.owner_id} cannot be opened (${error.code})`);
        }
      }
    }
    helpers.logger.info(`reseal_secrets: re-sealed ${resealed} secrets, ${skipped.size} could not be opened`);
  };
}
