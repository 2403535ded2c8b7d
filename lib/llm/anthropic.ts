// Anthropic's Messages API. The prompt goes as one user message; the summary is the answer's text blocks joined.
// Anthropic's 529 (overloaded) is a 5xx like any other, so it is retryable (LLM_UNAVAILABLE).
import { answeredModel, boundedCompletion, postJson, tokenCount } from "./http.ts";
import { estimateTokens, LlmError, type LlmProvider } from "./provider.ts";

export interface AnthropicOptions {
  /** The API root, without /v1/messages. Default "https://api.anthropic.com". */
  readonly baseUrl?: string;
  readonly apiKey: string;
  readonly model: string;
  /** How long one request may take, body included. Default 60_000. */
  readonly timeoutMs?: number;
  /** The model's context window in tokens. Default 200_000. */
  readonly contextTokens?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

const service = "Anthropic API";

export function createAnthropicProvider(options: AnthropicOptions): LlmProvider {
  const { apiKey, model } = options;
  if (!apiKey) throw new Error("The Anthropic provider needs an API key.");
  const endpoint = `${(options.baseUrl ?? "https://api.anthropic.com").replace(/\/+$/, "")}/v1/messages`;
  return {
    name: "anthropic",
    model,
    contextTokens: options.contextTokens ?? 200_000,
    async complete({ prompt, maxOutputTokens, signal }) {
      const { body, latencyMs } = await postJson({
        url: endpoint,
        headers: { "x-api-key": apiKey, "anthropic-version": "2023-06-01" },
        body: { model, max_tokens: maxOutputTokens, messages: [{ role: "user", content: prompt }] },
        timeoutMs: options.timeoutMs ?? 60_000,
        signal,
        fetch: options.fetch ?? fetch,
        service,
        secrets: [apiKey],
      });
      const answer = body as {
        model?: unknown;
        content?: Array<{ type?: unknown; text?: unknown }>;
        usage?: { input_tokens?: unknown; output_tokens?: unknown; cache_creation_input_tokens?: unknown; cache_read_input_tokens?: unknown };
      } | null;
      const blocks = Array.isArray(answer?.content) ? answer.content : [];
      const text = blocks
        .filter((block) => block?.type === "text" && typeof block.text === "string")
        .map((block) => block.text as string)
        .join("")
        .trim();
      if (!text) throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered without any text.`);
      boundedCompletion(text, service);
      const usage = answer?.usage;
      const input = tokenCount(usage?.input_tokens);
      return {
        text,
        // Prompt caching reports the cached part of the input apart; all of it is prompt.
        promptTokens:
          input === undefined
            ? estimateTokens(prompt)
            : input + (tokenCount(usage?.cache_creation_input_tokens) ?? 0) + (tokenCount(usage?.cache_read_input_tokens) ?? 0),
        completionTokens: tokenCount(usage?.output_tokens) ?? estimateTokens(text),
        provider: "anthropic",
        model: answeredModel(answer?.model) ?? model,
        latencyMs,
      };
    },
  };
}
