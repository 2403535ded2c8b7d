// The Anthropic provider against a real HTTP server on loopback speaking the Messages API: headers and body sent,
// text blocks joined, usage read, 529 (overloaded) retried and 400 not.
import { createAnthropicProvider, type AnthropicOptions } from "../../lib/llm/anthropic.ts";
import { LlmError } from "../../lib/llm/provider.ts";
import { withRetries } from "../../lib/llm/retry.ts";
import { anthropicAnswer, anthropicError, startFakeLlmServer, type FakeLlmServer, type RecordedRequest, type Reply } from "../support/fake-llm-server.ts";

const servers: FakeLlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serve(reply: (request: RecordedRequest, index: number) => Reply) {
  const server = await startFakeLlmServer(reply);
  servers.push(server);
  return server;
}

const apiKey = "sk-ant-api03-SECRETSECRET";
const provider = (server: FakeLlmServer, options: Partial<AnthropicOptions> = {}) =>
  createAnthropicProvider({ baseUrl: server.url, apiKey, model: "claude-test", timeoutMs: 5_000, ...options });
const request = { prompt: "Summarize: It rained all day.", sourceText: "It rained all day.", maxOutputTokens: 100 };

async function failure(promise: Promise<unknown>): Promise<LlmError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(LlmError);
    return error as LlmError;
  }
  throw new Error("expected the call to fail");
}

test("the text is the answer's text blocks joined (other blocks ignored); usage gives the token counts", async () => {
  const server = await serve(() => ({
    json: anthropicAnswer(
      [
        { type: "thinking", thinking: "Let me think.", signature: "x" },
        { type: "text", text: "It rained " },
        { type: "text", text: "all day." },
      ],
      { input_tokens: 21, output_tokens: 6 },
      "claude-sonnet-4-5-20250929",
    ),
  }));
  expect(await provider(server).complete(request)).toEqual({
    text: "It rained all day.",
    promptTokens: 21,
    completionTokens: 6,
    provider: "anthropic",
    model: "claude-sonnet-4-5-20250929",
    latencyMs: expect.any(Number),
  });
});

test("cached input tokens count as prompt tokens", async () => {
  const usage = { input_tokens: 10, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000, output_tokens: 3 };
  const server = await serve(() => ({ json: anthropicAnswer([{ type: "text", text: "ok" }], usage) }));
  expect(await provider(server).complete(request)).toMatchObject({ promptTokens: 1110, completionTokens: 3 });
});

test("a POST to <baseUrl>/v1/messages with x-api-key and anthropic-version, model, max_tokens and one user message", async () => {
  const server = await serve(() => ({ json: anthropicAnswer([{ type: "text", text: "ok" }]) }));
  await provider(server, { baseUrl: `${server.url}/` }).complete(request);
  expect(server.requests).toHaveLength(1);
  const [sent] = server.requests;
  expect(sent!.method).toBe("POST");
  expect(sent!.path).toBe("/v1/messages");
  expect(sent!.headers["x-api-key"]).toBe(apiKey);
  expect(sent!.headers["anthropic-version"]).toBe("2023-06-01");
  expect(sent!.headers["content-type"]).toBe("application/json");
  expect(sent!.headers.authorization).toBeUndefined();
  expect(sent!.body).toEqual({ model: "claude-test", max_tokens: 100, messages: [{ role: "user", content: request.prompt }] });
});

test("529 overloaded is LLM_UNAVAILABLE and retried (after its retry-after), then succeeds", async () => {
  const server = await serve((_, index) =>
    index === 0
      ? { status: 529, headers: { "retry-after": "0" }, json: anthropicError("overloaded_error", "Overloaded") }
      : { json: anthropicAnswer([{ type: "text", text: "second try" }]) },
  );
  const first = await failure(provider(server).complete(request));
  expect(first).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, status: 529, retryAfterMs: 0 });
  expect(first.message).toBe("The Anthropic API is unavailable (HTTP 529): Overloaded");

  const again = await serve((_, index) =>
    index === 0 ? { status: 529, json: anthropicError("overloaded_error", "Overloaded") } : { json: anthropicAnswer([{ type: "text", text: "second try" }]) },
  );
  const completion = await withRetries(provider(again), { baseDelayMs: 10 }).complete(request);
  expect(completion.text).toBe("second try");
  expect(again.requests).toHaveLength(2);
});

test("400 is LLM_REJECTED with Anthropic's message, and not retried", async () => {
  const server = await serve(() => ({ status: 400, json: anthropicError("invalid_request_error", "max_tokens: Field required") }));
  const error = await failure(withRetries(provider(server), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_REJECTED", retryable: false, status: 400 });
  expect(error.message).toBe("The Anthropic API rejected the request (HTTP 400): max_tokens: Field required");
  expect(server.requests).toHaveLength(1);
});

test("401 is LLM_AUTH, not retried, and the key is masked when echoed", async () => {
  const server = await serve(() => ({ status: 401, json: anthropicError("authentication_error", `invalid x-api-key ${apiKey}`) }));
  const error = await failure(withRetries(provider(server), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_AUTH", retryable: false, status: 401 });
  // The service's own words are left out: such messages quote part of the key.
  expect(error.message).toBe("The Anthropic API refused the API key (HTTP 401).");
  expect(server.requests).toHaveLength(1);
});

test("an answer without text blocks is LLM_BAD_RESPONSE", async () => {
  const server = await serve(() => ({ json: anthropicAnswer([{ type: "tool_use", id: "t", name: "x", input: {} }]) }));
  expect(await failure(provider(server).complete(request))).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
});

test("an API key is required", () => {
  expect(() => createAnthropicProvider({ apiKey: "", model: "claude-test" })).toThrow("The Anthropic provider needs an API key.");
});

test("an answer over the size bound is LLM_BAD_RESPONSE, as with every provider", async () => {
  const server = await serve(() => ({ json: anthropicAnswer([{ type: "text", text: "a".repeat(3 * 1024 * 1024) }]) }));
  const error = await failure(provider(server).complete(request));
  expect(error.code).toBe("LLM_BAD_RESPONSE");
});
