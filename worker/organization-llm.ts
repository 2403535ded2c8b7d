// Which language model a job uses. An organization may have its own (app_public.llm_settings: provider, model and a
// sealed API key), and a template may pin a model; otherwise the deployment's LLM_* configuration applies. The start
// step of each LLM job returns the organization's choice with the sealed key (never the key in the clear); the key
// is opened here with SEALING_KEYS, bound to that organization, so a sealing copied to another organization does not
// open. Providers are kept per (provider, model, sealing) for reuse, at most `maxCached`.
//
// A key that cannot be opened (SEALING_KEYS lost the key that sealed it, or the row was tampered with) fails the job
// with LLM_AUTH, as a key the provider refuses does; other organizations are untouched either way.
import { createLlmProvider, LlmError, type LlmOptions, type LlmProvider, type ProviderName } from "../lib/llm/index.ts";
import type { Metrics } from "../lib/metrics.ts";
import { open, SealError, sealContexts, type SealingKeys } from "../lib/sealing.ts";

/** The llm_* columns a start step returns (app_private.job_llm). Null provider: the deployment's. */
export interface OrganizationLlmRow {
  readonly llm_provider: string | null;
  readonly llm_model: string | null;
  readonly llm_key_id: string | null;
  readonly llm_nonce: Buffer | null;
  readonly llm_ciphertext: Buffer | null;
}

export interface OrganizationLlmOptions {
  /** The deployment's model (LLM_*, with LLM_ALLOWED_MODELS), and the provider built from it. */
  readonly deployment: LlmOptions & { readonly allowedModels: readonly string[] | null };
  readonly defaultProvider: LlmProvider;
  /** SEALING_KEYS; null: organizations' own keys cannot be used. */
  readonly keys: SealingKeys | null;
  readonly metrics?: Metrics;
  /** Providers kept for reuse. Default 200. */
  readonly maxCached?: number;
}

export type OrganizationLlm = (orgId: string, row: OrganizationLlmRow) => Promise<LlmProvider>;

const isProviderName = (value: string): value is ProviderName => value === "extractive" || value === "openai" || value === "anthropic";

export function organizationLlm(options: OrganizationLlmOptions): OrganizationLlm {
  const { deployment, defaultProvider, keys, metrics, maxCached = 200 } = options;
  const cache = new Map<string, LlmProvider>();
  const allowed = deployment.allowedModels === null ? null : new Set([...deployment.allowedModels, ...(deployment.model ? [deployment.model] : [])]);
  /**
   * The deployment's endpoint (LLM_BASE_URL) serves only the models the operator allows (LLM_ALLOWED_MODELS), whatever
   * key is sent: the deployment pays for its own key, and a self-hosted server or gateway may not check keys at all.
   */
  const allowedOnDeployment = (model: string) => {
    if (allowed && !allowed.has(model)) {
      throw new LlmError(
        "LLM_REJECTED",
        `The model ${model} is not available on this deployment's endpoint: choose another (or another provider, with the organization's own key).`,
      );
    }
  };

  const build = (key: string, llm: LlmOptions): LlmProvider => {
    let provider = cache.get(key);
    if (provider) {
      // Most recently used last, so the first is the one to evict.
      cache.delete(key);
      cache.set(key, provider);
      return provider;
    }
    provider = createLlmProvider(llm, metrics);
    cache.set(key, provider);
    if (cache.size > maxCached) cache.delete(cache.keys().next().value!);
    return provider;
  };

  return async (orgId, row) => {
    const providerName = row.llm_provider ?? deployment.provider;
    if (!isProviderName(providerName)) throw new LlmError("LLM_REJECTED", "The organization's language model provider is not supported.");
    // The deployment's provider, its key, and at most another model (the organization's, or its template's).
    if (row.llm_provider === null && row.llm_ciphertext === null) {
      if (row.llm_model === null) return defaultProvider;
      allowedOnDeployment(row.llm_model);
      return build(`deployment|${row.llm_model}`, { ...deployment, model: row.llm_model });
    }
    let apiKey: string | null = null;
    if (row.llm_ciphertext && row.llm_nonce && row.llm_key_id) {
      if (!keys) throw new LlmError("LLM_AUTH", "The organization's API key cannot be used: this server has no SEALING_KEYS.");
      try {
        apiKey = await open(keys, { keyId: row.llm_key_id, nonce: row.llm_nonce, ciphertext: row.llm_ciphertext }, sealContexts.llm(orgId));
      } catch (error) {
        if (error instanceof SealError) throw new LlmError("LLM_AUTH", "The organization's API key cannot be opened on this server: set it again.");
        throw error;
      }
    }
    // The deployment's base URL and key serve its own provider only (and only its allowed models, whatever key is
    // sent): another provider is reached at its public API, with the organization's key alone.
    const sameProvider = providerName === deployment.provider;
    if (sameProvider && row.llm_model !== null) allowedOnDeployment(row.llm_model);
    apiKey ??= sameProvider ? deployment.apiKey : null;
    const llm: LlmOptions = {
      ...deployment,
      provider: providerName,
      model: row.llm_model ?? (sameProvider ? deployment.model : null),
      apiKey,
      baseUrl: sameProvider ? deployment.baseUrl : null,
    };
    if (providerName === "anthropic" && !apiKey) throw new LlmError("LLM_AUTH", "The organization's anthropic model has no API key.");
    return build(`${orgId}|${providerName}|${row.llm_model ?? ""}|${row.llm_key_id ?? ""}|${row.llm_nonce?.toString("hex") ?? ""}`, llm);
  };
}
