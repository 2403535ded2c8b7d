// erase_organizations: erases the organizations whose scheduled deletion is due (deleteOrganization after its grace
// period, or app_admin.delete_organization). For each: its integrations are revoked at their providers (best
// effort, like disconnecting: a provider that is down must not keep an organization's data alive), then
// app_private.erase_organization records the erasure in the audit chain and deletes the organization, every row of
// it cascading; its files' and exports' objects are queued for delete_stored_objects. Added at each scheduled time
// and run hourly besides, so an erasure missed while no worker ran happens at the next hour.
import type { Task } from "graphile-worker";
import type { Connectors } from "../../lib/integrations/connectors.ts";
import { open, type SealingKeys } from "../../lib/sealing.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      erase_organizations: Record<string, unknown>;
    }
  }
}

interface SealedAccess {
  readonly id: string;
  readonly provider: "notion" | "confluence";
  readonly key_id: string;
  readonly access_nonce: Buffer;
  readonly access_ciphertext: Buffer;
}

export function makeEraseOrganizations(connectors: Connectors, keys: SealingKeys | null): Task<"erase_organizations"> {
  return async (_payload, helpers) => {
    const due = await helpers.query<{ id: string }>("select id from app_private.organizations_due_for_erasure(100) as id");
    for (const { id: orgId } of due.rows) {
      const integrations = await helpers.query<SealedAccess>("select * from app_private.integrations_to_revoke($1)", [orgId]);
      let revoked = 0;
      for (const integration of integrations.rows) {
        const connector = connectors[integration.provider];
        if (!connector || !keys) continue;
        try {
          const token = await open(
            keys,
            { keyId: integration.key_id, nonce: integration.access_nonce, ciphertext: integration.access_ciphertext },
            { orgId, integrationId: integration.id, provider: integration.provider, purpose: "access" },
          );
          await connector.revoke(token);
          revoked++;
        } catch (error) {
          helpers.logger.warn(`erase_organizations: revoking integration ${integration.id} failed (${(error as Error).name}); erasing anyway`);
        }
      }
      await helpers.query("select app_private.erase_organization($1, 'scheduled deletion')", [orgId]);
      helpers.logger.info(`erase_organizations: erased organization ${orgId} (${revoked} of ${integrations.rows.length} integrations revoked)`);
    }
  };
}
