// Anthropic's Messages API. The prompt goes as one user message; the summary is the answer's text blocks joined,
// read whole from one JSON answer or, when the caller wants it as it is written, from the streamed text deltas.
// Anthropic's 529 (overloaded) is a 5xx like any other, so it is retryable (LLM_UNAVAILABLE), and so is an
// overloaded_error event in the middle of a stream.
import { answeredModel, boundedCompletion, eventJson, postEventStream, postJson, streamedText, streamError, tokenCount, type PostJsonOptions } from "./http.ts";
import { estimateTokens, LlmError, type LlmErrorCode, type LlmProvider } from "./provider.ts";

export interface AnthropicOptions {
  /** The API root, without /v1/messages. Default "https://api.anthropic.com". */
  readonly baseUrl?: string;
  readonly apiKey: string;
  readonly model: string;
  /** How long one request may take, body (a whole stream) included. Default 60_000. */
  readonly timeoutMs?: number;
  /** The model's context window in tokens. Default 200_000. */
  readonly contextTokens?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

const service = "Anthropic API";

type Exchange = Omit<PostJsonOptions, "body">;

interface Usage {
  readonly input_tokens?: unknown;
  readonly output_tokens?: unknown;
  readonly cache_creation_input_tokens?: unknown;
  readonly cache_read_input_tokens?: unknown;
}

/** What either way of reading the answer gives. */
interface Answer {
  readonly text: string;
  readonly usage: Usage | undefined;
  readonly model: string | undefined;
  readonly latencyMs: number;
}

export function createAnthropicProvider(options: AnthropicOptions): LlmProvider {
  const { apiKey, model } = options;
  if (!apiKey) throw new Error("The Anthropic provider needs an API key.");
  const endpoint = `${(options.baseUrl ?? "https://api.anthropic.com").replace(/\/+$/, "")}/v1/messages`;
  return {
    name: "anthropic",
    model,
    contextTokens: options.contextTokens ?? 200_000,
    async complete({ prompt, maxOutputTokens, signal, onDelta }) {
      const exchange: Exchange = {
        url: endpoint,
        headers: { "x-api-key": apiKey, "anthropic-version": "2023-06-01" },
        timeoutMs: options.timeoutMs ?? 60_000,
        signal,
        fetch: options.fetch ?? fetch,
        service,
        secrets: [apiKey],
      };
      const body = { model, max_tokens: maxOutputTokens, messages: [{ role: "user", content: prompt }] };
      const { text, usage, model: answered, latencyMs } = onDelta ? await streamedAnswer(exchange, body, onDelta) : await jsonAnswer(exchange, body);
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
        model: answered ?? model,
        latencyMs,
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
  const answer = json as { model?: unknown; content?: Array<{ type?: unknown; text?: unknown }>; usage?: Usage } | null;
  const blocks = Array.isArray(answer?.content) ? answer.content : [];
  const text = blocks
    .filter((block) => block?.type === "text" && typeof block.text === "string")
    .map((block) => block.text as string)
    .join("")
    .trim();
  if (!text) throw new LlmError("LLM_BAD_RESPONSE", `The ${service} answered without any text.`);
  return { text: boundedCompletion(text, service), usage: answer?.usage, model: answeredModel(answer?.model), latencyMs };
}

/** What an `error` event's error.type means (https://docs.anthropic.com/en/api/errors); any other is LLM_UNAVAILABLE. */
const streamErrorCodes: ReadonlyMap<string, LlmErrorCode> = new Map([
  ["overloaded_error", "LLM_UNAVAILABLE"],
  ["api_error", "LLM_UNAVAILABLE"],
  ["timeout_error", "LLM_TIMEOUT"],
  ["rate_limit_error", "LLM_RATE_LIMITED"],
  ["authentication_error", "LLM_AUTH"],
  ["permission_error", "LLM_AUTH"],
  ["invalid_request_error", "LLM_REJECTED"],
  ["not_found_error", "LLM_REJECTED"],
  ["request_too_large", "LLM_REJECTED"],
]);

/**
 * The answer streamed (`stream: true`): message_start gives the model and the input tokens, each content_block_delta
 * of type text_delta the next piece of text (other deltas, such as thinking, are not the summary), message_delta the
 * output tokens (a running total), and message_stop ends it; ping and other events are ignored. An `error` event is
 * an LlmError by its type; an answer complete without any text is LLM_BAD_RESPONSE.
 */
async function streamedAnswer(exchange: Exchange, body: object, onDelta: (text: string) => void): Promise<Answer> {
  const text = streamedText(service, onDelta);
  let input: Usage | undefined;
  let outputTokens: unknown;
  let answered: string | undefined;
  const { latencyMs, json } = await postEventStream({
    ...exchange,
    body: { ...body, stream: true },
    onEvent(event) {
      const data = eventJson(event, service) as {
        type?: unknown;
        message?: { model?: unknown; usage?: Usage };
        delta?: { type?: unknown; text?: unknown };
        usage?: { output_tokens?: unknown };
        error?: { type?: unknown };
      } | null;
      switch (data?.type) {
        case "message_start":
          answered = answeredModel(data.message?.model);
          input = data.message?.usage;
          break;
        case "content_block_delta":
          if (data.delta?.type === "text_delta" && typeof data.delta.text === "string") text.add(data.delta.text);
          break;
        case "message_delta":
          outputTokens = data.usage?.output_tokens;
          break;
        case "message_stop":
          return true;
        case "error": {
          const type = data.error?.type;
          throw streamError((typeof type === "string" && streamErrorCodes.get(type)) || "LLM_UNAVAILABLE", data, exchange);
        }
      }
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
  return { text: text.text(), usage: { ...input, output_tokens: outputTokens }, model: answered, latencyMs };
}
