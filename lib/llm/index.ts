// The language model the worker summarizes with, chosen by configuration: the offline extractive summarizer by
// default, or an OpenAI-compatible or Anthropic service. Every provider comes wrapped in retries, and each request
// is a tracing span (./tracing.ts; nothing while tracing is off).
import { createAnthropicProvider } from "./anthropic.ts";
import { createExtractiveProvider } from "./extractive.ts";
import { createOpenAiProvider } from "./openai.ts";
import type { LlmProvider, ProviderName } from "./provider.ts";
import { withRetries } from "./retry.ts";
import { traceLlm } from "./tracing.ts";
import type { Metrics } from "../metrics.ts";

export { LlmError, estimateTokens, llmErrorCodes, providerNames } from "./provider.ts";
export type { Completion, CompletionRequest, LlmErrorCode, LlmProvider, ProviderName } from "./provider.ts";
export { splitText, summarizeInStages, type StagedCompletion, type StagedSummaryOptions } from "./map-reduce.ts";

export interface LlmOptions {
  readonly provider: ProviderName;
  /** The service's API root. Null: the provider's default (OpenAI's or Anthropic's public API). */
  readonly baseUrl: string | null;
  /** Required for anthropic; for openai only when the server asks for one (local servers do not). */
  readonly apiKey: string | null;
  /** Null: gpt-4o-mini (openai), claude-sonnet-4-5 (anthropic); the extractive provider has only extractive-v1. */
  readonly model: string | null;
  /** How long one request may take. */
  readonly timeoutMs: number;
  /** The model's context window. Null: 128_000 (openai), 200_000 (anthropic), 1_000_000 (extractive). */
  readonly contextTokens: number | null;
  /** Retries of a failed request (timeouts, 429, 5xx, unreachable service) within one job attempt. */
  readonly maxRetries: number;
}

/**
 * The configured provider, with retries, and with each request (retries included) traced, and measured in `metrics`
 * when given; throws when the configuration cannot work (anthropic without a key).
 */
export function createLlmProvider(options: LlmOptions, metrics?: Metrics): LlmProvider {
  const { timeoutMs } = options;
  const contextTokens = options.contextTokens ?? undefined;
  const baseUrl = options.baseUrl ?? undefined;
  let provider: LlmProvider;
  switch (options.provider) {
    case "extractive":
      provider = createExtractiveProvider({ contextTokens });
      break;
    case "openai":
      provider = createOpenAiProvider({ baseUrl, apiKey: options.apiKey, model: options.model ?? "gpt-4o-mini", timeoutMs, contextTokens });
      break;
    case "anthropic":
      if (!options.apiKey) throw new Error("The anthropic LLM provider needs an API key.");
      provider = createAnthropicProvider({ baseUrl, apiKey: options.apiKey, model: options.model ?? "claude-sonnet-4-5", timeoutMs, contextTokens });
      break;
  }
  const traced = traceLlm(provider);
  return withRetries(metrics ? metrics.measureLlm(traced) : traced, { maxRetries: options.maxRetries });
}
