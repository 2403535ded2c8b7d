// An integration's access token, for the server (browsing) and the worker (imports, syncs, publishing) alike.
//
// The tokens live sealed in app_private.integration_secrets and are read and written only through the database's
// functions, in a transaction that carries the caller's context (a member's session, or the job's token), so the
// database decides who may use which integration. A token about to expire, or one the provider answers 401 to, is
// refreshed single-flight: the refresher holds the secrets row's lock while it calls the provider, so a second
// refresher waits and then finds the new tokens instead of spending the (rotating, single-use) refresh token again.
// The new refresh token is stored before the new access token is used. A refresh the provider refuses
// (invalid_grant) marks the integration needs_reauth, which also fails its other unfinished jobs.
import type { PoolClient } from "pg";
import type { Connector } from "./connectors.ts";
import { IntegrationError } from "./errors.ts";
import type { TokenSet } from "./oauth.ts";
import { open, seal, type SealContext, type Sealed, type SealingKeys } from "../sealing.ts";

/** Runs `fn` in one transaction with the caller's settings (session or job context); commits if it resolves. */
export type InTransaction = <T>(fn: (client: PoolClient) => Promise<T>) => Promise<T>;

interface CredentialsRow {
  integration_id: string;
  org_id: string;
  provider: "notion" | "confluence";
  external_id: string;
  key_id: string;
  access_nonce: Buffer;
  access_ciphertext: Buffer;
  refresh_nonce: Buffer | null;
  refresh_ciphertext: Buffer | null;
  access_expires_at: Date | null;
}

/** A token this close to its expiry is refreshed before use. */
const expiryMarginMs = 60_000;

const contextOf = (row: CredentialsRow, purpose: "access" | "refresh"): SealContext => ({
  orgId: row.org_id,
  integrationId: row.integration_id,
  provider: row.provider,
  purpose,
});

async function read(client: PoolClient, integrationId: string, lock: boolean): Promise<CredentialsRow> {
  const { rows } = await client.query<CredentialsRow>("select * from app_public.integration_credentials($1, $2)", [integrationId, lock]);
  return rows[0]!;
}

/** The sealed forms of a token set, for store_integration_tokens or complete_integration. */
export async function sealTokens(keys: SealingKeys, tokens: TokenSet, where: Omit<SealContext, "purpose">) {
  const access = await seal(keys, tokens.accessToken, { ...where, purpose: "access" });
  const refresh = tokens.refreshToken === null ? null : await seal(keys, tokens.refreshToken, { ...where, purpose: "refresh" });
  return { keyId: access.keyId, access, refresh, expiresAt: tokens.expiresAt };
}

/** A sealed token set as the database functions take it: key_id, access nonce and ciphertext, refresh nonce and ciphertext, access_expires_at. */
export const sealedColumns = (sealed: Awaited<ReturnType<typeof sealTokens>>) => [
  sealed.keyId,
  sealed.access.nonce,
  sealed.access.ciphertext,
  sealed.refresh?.nonce ?? null,
  sealed.refresh?.ciphertext ?? null,
  sealed.expiresAt,
];

export interface CredentialOptions {
  readonly keys: SealingKeys;
  readonly connector: Connector;
  readonly inTransaction: InTransaction;
}

export interface IntegrationSession {
  /** The provider's id of the workspace or site (the Atlassian cloud id). */
  readonly externalId: string;
  /** Calls `fn` with a live access token; on AUTH_EXPIRED it refreshes once and calls it again. */
  use<T>(fn: (accessToken: string) => Promise<T>): Promise<T>;
}

/** Opens the integration's tokens for the caller; NOT_FOUND (NTFND) when it is not theirs or not connected. */
export async function openIntegration(integrationId: string, { keys, connector, inTransaction }: CredentialOptions): Promise<IntegrationSession> {
  const row = await inTransaction((client) => read(client, integrationId, false));
  let accessToken = await open(keys, { keyId: row.key_id, nonce: row.access_nonce, ciphertext: row.access_ciphertext }, contextOf(row, "access"));
  let expiresAt = row.access_expires_at;

  /** Refreshes under the row lock, unless another refresher already replaced the token we hold. */
  const refresh = async (stale: string): Promise<void> => {
    const next = await inTransaction(async (client) => {
      const locked = await read(client, integrationId, true);
      const current = await open(keys, { keyId: locked.key_id, nonce: locked.access_nonce, ciphertext: locked.access_ciphertext }, contextOf(locked, "access"));
      if (current !== stale) return { accessToken: current, expiresAt: locked.access_expires_at };
      if (!locked.refresh_nonce || !locked.refresh_ciphertext) {
        await client.query("select app_public.integration_needs_reauth($1, 'INVALID_GRANT')", [integrationId]);
        return new IntegrationError("INVALID_GRANT", "The provider's token expired and cannot be refreshed; an admin must connect again.");
      }
      const sealedRefresh: Sealed = { keyId: locked.key_id, nonce: locked.refresh_nonce, ciphertext: locked.refresh_ciphertext };
      const refreshToken = await open(keys, sealedRefresh, contextOf(locked, "refresh"));
      let tokens: TokenSet;
      try {
        tokens = await connector.refresh(refreshToken);
      } catch (error) {
        if (error instanceof IntegrationError && error.code === "INVALID_GRANT") {
          await client.query("select app_public.integration_needs_reauth($1, 'INVALID_GRANT')", [integrationId]);
          return error;
        }
        throw error;
      }
      // A provider that does not rotate refresh tokens answers without one: keep the one we have.
      const kept = { ...tokens, refreshToken: tokens.refreshToken ?? refreshToken };
      const sealed = await sealTokens(keys, kept, { orgId: locked.org_id, integrationId, provider: locked.provider });
      await client.query("select app_public.store_integration_tokens($1, $2, $3, $4, $5, $6, $7)", [integrationId, ...sealedColumns(sealed)]);
      return { accessToken: kept.accessToken, expiresAt: kept.expiresAt };
    });
    // invalid_grant is thrown only now, after its transaction committed the needs_reauth marking.
    if (next instanceof IntegrationError) throw next;
    accessToken = next.accessToken;
    expiresAt = next.expiresAt;
  };

  return {
    externalId: row.external_id,
    async use(fn) {
      if (expiresAt && expiresAt.getTime() - Date.now() < expiryMarginMs) await refresh(accessToken);
      try {
        return await fn(accessToken);
      } catch (error) {
        if (!(error instanceof IntegrationError) || error.code !== "AUTH_EXPIRED") throw error;
        await refresh(accessToken);
        return fn(accessToken);
      }
    },
  };
}
