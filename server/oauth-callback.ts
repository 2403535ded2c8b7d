// GET /oauth/:provider/callback: where Notion or Atlassian sends the browser back after the consent screen.
//
// There is no session here (a plain browser redirect), so the `state` is the proof: it is looked up by its
// SHA-256, consumed at once (single use, whatever follows), and must be unexpired and for this provider. Only then
// is the code exchanged (with the PKCE verifier kept for it), the tokens sealed with the organization, integration
// and provider as associated data, and the integration stored, in one transaction, for the organization and admin
// that started the flow. The browser is always redirected to the frontend: to returnTo with
// `?integration=<id>&status=connected`, or with `?status=error&error=<CODE>`, and any failure stores nothing.
import { createHash } from "node:crypto";
import type { RequestHandler } from "express";
import type pg from "pg";
import type { Config } from "../lib/config.ts";
import type { Connectors, IntegrationProvider } from "../lib/integrations/connectors.ts";
import { sealedColumns, sealTokens } from "../lib/integrations/credentials.ts";
import { IntegrationError } from "../lib/integrations/errors.ts";
import type { Logger } from "../lib/logger.ts";

export const oauthCallbackPath = "/oauth/:provider/callback";

/** Why connecting failed, as the frontend receives it in `error=`. */
export type CallbackError = "INVALID_STATE" | "ACCESS_DENIED" | "PROVIDER_ERROR" | "FORBIDDEN" | "NOT_CONFIGURED" | "INTERNAL";

interface Grant {
  org_id: string;
  user_id: string;
  return_to: string;
  code_verifier: string;
}

export interface OAuthCallbackOptions {
  readonly config: Config;
  /** Any pool on the authenticator: the callback uses only the functions granted to it. */
  readonly pool: pg.Pool;
  readonly connectors: Connectors;
  readonly logger: Logger;
}

export function oauthCallback({ config, pool, connectors, logger }: OAuthCallbackOptions): RequestHandler {
  /** returnTo with the outcome in its query; a relative returnTo is on APP_URL. */
  const redirect = (returnTo: string | null, outcome: Record<string, string>) => {
    const url = new URL(returnTo ?? "/integrations", `${config.mail.appUrl}/`);
    for (const [k, v] of Object.entries(outcome)) url.searchParams.set(k, v);
    return url.toString();
  };
  const fail = (returnTo: string | null, error: CallbackError) => redirect(returnTo, { status: "error", error });

  return async (req, res) => {
    const provider = req.params.provider as IntegrationProvider;
    const connector = provider === "notion" || provider === "confluence" ? connectors[provider] : undefined;
    const keys = config.integrations.sealingKeys;
    const param = (name: string) => (typeof req.query[name] === "string" ? (req.query[name] as string) : null);
    const state = param("state");
    if (!connector || !keys) return res.redirect(303, fail(null, "NOT_CONFIGURED"));
    if (!state || state.length > 200) return res.redirect(303, fail(null, "INVALID_STATE"));
    let grant: Grant | null = null;
    try {
      const stateHash = createHash("sha256").update(state, "utf8").digest();
      const { rows } = await pool.query<{ g: Grant | null }>("select to_json(app_private.consume_oauth_state($1, $2)) as g", [provider, stateHash]);
      grant = rows[0]?.g ?? null;
      if (!grant || !grant.org_id) return res.redirect(303, fail(null, "INVALID_STATE"));
      if (param("error")) return res.redirect(303, fail(grant.return_to, "ACCESS_DENIED"));
      const code = param("code");
      if (!code || code.length > 2000) return res.redirect(303, fail(grant.return_to, "PROVIDER_ERROR"));

      const account = await connector.connect(code, grant.code_verifier);
      const client = await pool.connect();
      try {
        await client.query("begin");
        const { rows: ids } = await client.query<{ id: string }>("select app_private.integration_id_for($1, $2, $3) as id", [
          grant.org_id,
          provider,
          account.externalId,
        ]);
        const integrationId = ids[0]!.id;
        const sealed = await sealTokens(keys, account.tokens, { orgId: grant.org_id, integrationId, provider });
        await client.query(
          `select app_private.complete_integration($1, ($2, $3, $4, $5)::app_private.oauth_grant, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
          [
            integrationId,
            grant.org_id,
            grant.user_id,
            grant.return_to,
            grant.code_verifier,
            provider,
            account.externalId,
            account.externalName,
            account.externalUrl,
            [...account.tokens.scopes],
            ...sealedColumns(sealed),
          ],
        );
        await client.query("commit");
        return res.redirect(303, redirect(grant.return_to, { status: "connected", integration: integrationId }));
      } catch (error) {
        await client.query("rollback").catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === "DNIED") return res.redirect(303, fail(grant?.return_to ?? null, "FORBIDDEN"));
      if (error instanceof IntegrationError) {
        logger.warn({ provider, reason: error.code }, "OAuth code exchange failed");
        return res.redirect(303, fail(grant?.return_to ?? null, "PROVIDER_ERROR"));
      }
      logger.error({ err: error, provider }, "OAuth callback failed");
      return res.redirect(303, fail(grant?.return_to ?? null, "INTERNAL"));
    }
  };
}
