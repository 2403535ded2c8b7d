// reseal_secrets: after an operator put a new key first in SEALING_KEYS, re-seals every integration secret still
// sealed with an older key (queued by app_admin.reseal_integration_secrets()). It runs as the authenticator through
// two app_private functions; a secret that changed meanwhile (a token refresh seals with the current key anyway) is
// left as it is. A secret no configured key opens is logged and skipped: it stays unusable until reconnected.
import type { Task } from "graphile-worker";
import { open, seal, SealError, type Sealed, type SealingKeys } from "../../lib/sealing.ts";

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
    helpers.logger.info(`reseal_secrets: re-sealed ${resealed} secrets, ${skipped.size} could not be opened`);
  };
}
