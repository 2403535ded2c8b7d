// createLlmProvider: the configured provider with its defaults (model, context window), wrapped in retries, and a
// clear error for a configuration that cannot work.
import { createLlmProvider, type LlmOptions } from "../../lib/llm/index.ts";
import { openAiAnswer, startFakeLlmServer } from "../support/fake-llm-server.ts";

const options: LlmOptions = { provider: "extractive", baseUrl: null, apiKey: null, model: null, timeoutMs: 1_000, contextTokens: null, maxRetries: 2 };

test("defaults: extractive-v1 / 1M tokens, gpt-4o-mini / 128k, claude-sonnet-4-5 / 200k", () => {
  expect(createLlmProvider(options)).toMatchObject({ name: "extractive", model: "extractive-v1", contextTokens: 1_000_000 });
  expect(createLlmProvider({ ...options, provider: "openai" })).toMatchObject({ name: "openai", model: "gpt-4o-mini", contextTokens: 128_000 });
  expect(createLlmProvider({ ...options, provider: "anthropic", apiKey: "sk-ant" })).toMatchObject({
    name: "anthropic",
    model: "claude-sonnet-4-5",
    contextTokens: 200_000,
  });
});

test("model and context window can be configured", () => {
  expect(createLlmProvider({ ...options, provider: "openai", model: "llama3.2", contextTokens: 8192 })).toMatchObject({
    model: "llama3.2",
    contextTokens: 8192,
  });
  expect(createLlmProvider({ ...options, contextTokens: 4096 }).contextTokens).toBe(4096);
});

test("anthropic without an API key is refused with a clear message", () => {
  expect(() => createLlmProvider({ ...options, provider: "anthropic" })).toThrow("The anthropic LLM provider needs an API key.");
});

test("the provider retries: maxRetries 2 makes three requests to a failing server", async () => {
  const server = await startFakeLlmServer((_, index) => (index < 2 ? { status: 502, headers: { "retry-after": "0" } } : { json: openAiAnswer("ok") }));
  try {
    const provider = createLlmProvider({ ...options, provider: "openai", baseUrl: server.url });
    expect((await provider.complete({ prompt: "p", sourceText: "p", maxOutputTokens: 5 })).text).toBe("ok");
    expect(server.requests).toHaveLength(3);
  } finally {
    await server.close();
  }
});
