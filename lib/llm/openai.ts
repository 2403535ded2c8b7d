// Any OpenAI-compatible chat-completions endpoint: OpenAI itself, or a local server (Ollama, vLLM, llama.cpp,
// LM Studio) that needs no API key. The prompt goes as one user message; the answer's first choice is the summary,
// read whole from one JSON answer or, when the caller wants it as it is written, from the streamed chunks.
import { answeredModel, boundedCompletion, eventJson, postEventStream, postJson, streamedText, streamError, tokenCount, type PostJsonOptions } from "./http.ts";
import { estimateTokens, LlmError, type LlmProvider } from "./provider.ts";

export interface OpenAiOptions {
  /** The API root, without /chat/completions. Default "https://api.openai.com/v1". */
  readonly baseUrl?: string;
  /** Sent as a bearer token when set; local servers need none. Default: none. */
  readonly apiKey?: string | null;
  readonly model: string;
  /** How long one request may take, body (a whole stream) included. Default 60_000. */
  readonly timeoutMs?: number;
  /** The model's context window in tokens. Default 128_000. */
  readonly contextTokens?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

const service = "OpenAI-compatible service";

type Exchange = Omit<PostJsonOptions, "body">;

interface Usage {
  readonly prompt_tokens?: unknown;
  readonly completion_tokens?: unknown;
}

/** What either way of reading the answer gives. */
interface Answer {
  readonly text: string;
  readonly usage: Usage | undefined;
  readonly model: string | undefined;
  readonly latencyMs: number;
}

export function createOpenAiProvider(options: OpenAiOptions): LlmProvider {
  const endpoint = `${(options.baseUrl ?? "https://api.openai.com/v1").replace(/\/+$/, "")}/chat/completions`;
  const apiKey = options.apiKey || null;
  const { model } = options;
  return {
    name: "openai",
    model,
    contextTokens: options.contextTokens ?? 128_000,
    async complete({ prompt, maxOutputTokens, signal, onDelta }) {
      const exchange: Exchange = {
        url: endpoint,
        headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
        timeoutMs: options.timeoutMs ?? 60_000,
        signal,
        fetch: options.fetch ?? fetch,
        service,
        secrets: apiKey ? [apiKey] : [],
      };
      const body = { model, messages: [{ role: "user", content: prompt }], max_tokens: maxOutputTokens };
      const answer = onDelta ? await streamedAnswer(exchange, body, onDelta) : await jsonAnswer(exchange, body);
      return {
        text: answer.text,
        promptTokens: tokenCount(answer.usage?.prompt_tokens) ?? estimateTokens(prompt),
        completionTokens: tokenCount(answer.usage?.completion_tokens) ?? estimateTokens(answer.text),
        provider: "openai",
        model: answer.model ?? model,
        latencyMs: answer.latencyMs,
      };
    },
  };
}

async function jsonAnswer(exchange: Exchange, body: object): Promise<Answer> {
  const { body: json, latencyMs } = await postJson({ ...exchange, body });
  return answerOf(json, latencyMs);
}

/** A whole (not streamed) answer's text, usage and model. */
function answerOf(json: unknown, latencyMs: number): Answer {
  const answer = json as {
    model?: unknown;
    choices?: Array<{ message?: { content?: unknown; refusal?: unknown } }>;
    usage?: Usage;
  } | null;
  const message = Array.isArray(answer?.choices) ? answer.choices[0]?.message : undefined;
  if (typeof message?.content !== "string" || !message.content.trim()) {
    if (typeof message?.refusal === "string") throw new LlmError("LLM_REJECTED", "The model declined to answer.");
    throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered without any text.`);
  }
  return { text: boundedCompletion(message.content.trim(), service), usage: answer?.usage, model: answeredModel(answer?.model), latencyMs };
}

/**
 * The answer streamed (`stream: true`): chunks whose first choice's delta carries the next piece of text, a last
 * chunk with the usage (asked for with `include_usage`; servers that ignore it leave the tokens estimated), then
 * `data: [DONE]`. A chunk with an `error` (OpenAI's and vLLM's way to fail mid-stream) is LLM_UNAVAILABLE, a refusal
 * LLM_REJECTED, and an answer complete without any text LLM_BAD_RESPONSE.
 */
async function streamedAnswer(exchange: Exchange, body: object, onDelta: (text: string) => void): Promise<Answer> {
  const text = streamedText(service, onDelta);
  let usage: Usage | undefined;
  let answered: string | undefined;
  const { latencyMs, json } = await postEventStream({
    ...exchange,
    body: { ...body, stream: true, stream_options: { include_usage: true } },
    onEvent(event) {
      if (event.data === "[DONE]") return true;
      const chunk = eventJson(event, service) as {
        error?: unknown;
        model?: unknown;
        choices?: Array<{ delta?: { content?: unknown; refusal?: unknown } }>;
        usage?: Usage | null;
      } | null;
      if (chunk?.error !== undefined && chunk.error !== null) throw streamError("LLM_UNAVAILABLE", chunk, exchange);
      answered ??= answeredModel(chunk?.model);
      if (chunk?.usage) usage = chunk.usage;
      const delta = Array.isArray(chunk?.choices) ? chunk.choices[0]?.delta : undefined;
      // Chunks carry `refusal: null` beside the text; a refusal is a non-empty string.
      if (typeof delta?.refusal === "string" && delta.refusal) throw new LlmError("LLM_REJECTED", "The model declined to answer.");
      if (typeof delta?.content === "string") text.add(delta.content);
      return false;
    },
  });
  if (json !== undefined) {
    // The server did not stream: its whole answer is one delta.
    const whole = answerOf(json, latencyMs);
    onDelta(whole.text);
    return whole;
  }
  if (!text.text()) throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered without any text.`);
  return { text: text.text(), usage, model: answered, latencyMs };
}
