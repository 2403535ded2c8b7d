// Any OpenAI-compatible chat-completions endpoint: OpenAI itself, or a local server (Ollama, vLLM, llama.cpp,
// LM Studio) that needs no API key. The prompt goes as one user message; the answer's first choice is the summary.
import { answeredModel, boundedCompletion, postJson, tokenCount } from "./http.ts";
import { estimateTokens, LlmError, type LlmProvider } from "./provider.ts";

export interface OpenAiOptions {
  /** The API root, without /chat/completions. Default "https://api.openai.com/v1". */
  readonly baseUrl?: string;
  /** Sent as a bearer token when set; local servers need none. Default: none. */
  readonly apiKey?: string | null;
  readonly model: string;
  /** How long one request may take, body included. Default 60_000. */
  readonly timeoutMs?: number;
  /** The model's context window in tokens. Default 128_000. */
  readonly contextTokens?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

const service = "OpenAI-compatible service";

export function createOpenAiProvider(options: OpenAiOptions): LlmProvider {
  const endpoint = `${(options.baseUrl ?? "https://api.openai.com/v1").replace(/\/+$/, "")}/chat/completions`;
  const apiKey = options.apiKey || null;
  const { model } = options;
  return {
    name: "openai",
    model,
    contextTokens: options.contextTokens ?? 128_000,
    async complete({ prompt, maxOutputTokens, signal }) {
      const { body, latencyMs } = await postJson({
        url: endpoint,
        headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
        body: { model, messages: [{ role: "user", content: prompt }], max_tokens: maxOutputTokens },
        timeoutMs: options.timeoutMs ?? 60_000,
        signal,
        fetch: options.fetch ?? fetch,
        service,
        secrets: apiKey ? [apiKey] : [],
      });
      const answer = body as {
        model?: unknown;
        choices?: Array<{ message?: { content?: unknown; refusal?: unknown } }>;
        usage?: { prompt_tokens?: unknown; completion_tokens?: unknown };
      } | null;
      const message = Array.isArray(answer?.choices) ? answer.choices[0]?.message : undefined;
      if (typeof message?.content !== "string" || !message.content.trim()) {
        if (typeof message?.refusal === "string") throw new LlmError("LLM_REJECTED", "The model declined to answer.");
        throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered without any text.`);
      }
      const text = boundedCompletion(message.content.trim(), service);
      const usage = answer?.usage;
      return {
        text,
        promptTokens: tokenCount(usage?.prompt_tokens) ?? estimateTokens(prompt),
        completionTokens: tokenCount(usage?.completion_tokens) ?? estimateTokens(text),
        provider: "openai",
        model: answeredModel(answer?.model) ?? model,
        latencyMs,
      };
    },
  };
}
