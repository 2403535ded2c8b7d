// The OpenAI-compatible provider against a real HTTP server on loopback: what it sends, how it reads answers, and how
// each failure (status, timeout, network, redirect, cancel) becomes an LlmError that is retried or not, and whose
// message never carries the API key.
import { LlmError } from "../../lib/llm/provider.ts";
import { createOpenAiProvider, type OpenAiOptions } from "../../lib/llm/openai.ts";
import { withRetries } from "../../lib/llm/retry.ts";
import { freePort } from "../support/ports.ts";
import { openAiAnswer, openAiError, startFakeLlmServer, type FakeLlmServer, type RecordedRequest, type Reply } from "../support/fake-llm-server.ts";

const servers: FakeLlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serve(reply: (request: RecordedRequest, index: number) => Reply) {
  const server = await startFakeLlmServer(reply);
  servers.push(server);
  return server;
}

const provider = (server: FakeLlmServer, options: Partial<OpenAiOptions> = {}) =>
  createOpenAiProvider({ baseUrl: `${server.url}/v1`, model: "gpt-test", timeoutMs: 5_000, ...options });

const request = { prompt: "Summarize: The cat sat on the mat.", sourceText: "The cat sat on the mat.", maxOutputTokens: 64 };

async function failure(promise: Promise<unknown>): Promise<LlmError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(LlmError);
    return error as LlmError;
  }
  throw new Error("expected the call to fail");
}

test("a successful answer gives its text, the service's token counts, the model that answered and the latency", async () => {
  const server = await serve(() => ({ json: openAiAnswer("  A cat sat.  ", { prompt_tokens: 17, completion_tokens: 4 }) }));
  const completion = await provider(server).complete(request);
  expect(completion).toEqual({
    text: "A cat sat.",
    promptTokens: 17,
    completionTokens: 4,
    provider: "openai",
    model: "gpt-test-2025",
    latencyMs: expect.any(Number),
  });
  expect(completion.latencyMs).toBeGreaterThanOrEqual(0);
});

test("the request is a POST to <baseUrl>/chat/completions with the model, the prompt as one user message and max_tokens", async () => {
  const server = await serve(() => ({ json: openAiAnswer("ok", { prompt_tokens: 1, completion_tokens: 1 }) }));
  await createOpenAiProvider({ baseUrl: `${server.url}/v1/`, model: "gpt-test" }).complete(request);
  expect(server.requests).toHaveLength(1);
  const [sent] = server.requests;
  expect(sent!.method).toBe("POST");
  expect(sent!.path).toBe("/v1/chat/completions");
  expect(sent!.headers["content-type"]).toBe("application/json");
  expect(sent!.body).toEqual({ model: "gpt-test", messages: [{ role: "user", content: request.prompt }], max_tokens: 64 });
});

test("Authorization: Bearer is sent only when an API key is set", async () => {
  const server = await serve(() => ({ json: openAiAnswer("ok") }));
  await provider(server).complete(request);
  await provider(server, { apiKey: null }).complete(request);
  await provider(server, { apiKey: "sk-local-key" }).complete(request);
  expect(server.requests.map((r) => r.headers.authorization)).toEqual([undefined, undefined, "Bearer sk-local-key"]);
});

test("without usage in the answer, tokens are estimated as a quarter of the characters, rounded up", async () => {
  const server = await serve(() => ({ json: openAiAnswer("Eleven char") }));
  const completion = await provider(server).complete({ ...request, prompt: "x".repeat(10) });
  expect(completion.promptTokens).toBe(3);
  expect(completion.completionTokens).toBe(3);
});

test("429 with Retry-After: 1 is retried after the second asked for, then succeeds", async () => {
  const server = await serve((_, index) =>
    index === 0
      ? { status: 429, headers: { "retry-after": "1" }, json: openAiError("Rate limit reached", "rate_limit_exceeded") }
      : { json: openAiAnswer("done", { prompt_tokens: 5, completion_tokens: 1 }) },
  );
  const completion = await withRetries(provider(server), { maxRetries: 3 }).complete(request);
  expect(completion.text).toBe("done");
  expect(server.requests).toHaveLength(2);
  expect(server.requests[1]!.at - server.requests[0]!.at).toBeGreaterThanOrEqual(950);
});

test("the 429 error itself is LLM_RATE_LIMITED, retryable, with retryAfterMs from Retry-After", async () => {
  const server = await serve(() => ({ status: 429, headers: { "retry-after": "7" }, json: openAiError("Slow down") }));
  const error = await failure(provider(server).complete(request));
  expect(error).toMatchObject({ code: "LLM_RATE_LIMITED", retryable: true, retryAfterMs: 7_000, status: 429 });
  expect(error.message).toBe("The OpenAI-compatible service is rate limiting requests (HTTP 429): Slow down");
});

test("503 with an HTTP-date Retry-After gives the time until that date", async () => {
  const server = await serve(() => ({ status: 503, headers: { "retry-after": new Date(Date.now() + 3_000).toUTCString() } }));
  const error = await failure(provider(server).complete(request));
  expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, status: 503 });
  // HTTP dates have whole seconds: between 2 and 3 seconds from now.
  expect(error.retryAfterMs).toBeGreaterThan(1_000);
  expect(error.retryAfterMs).toBeLessThanOrEqual(3_000);
});

test("500 twice then 200: succeeds on the third request", async () => {
  const server = await serve((_, index) =>
    index < 2 ? { status: 500, json: openAiError("The server had an error", "server_error") } : { json: openAiAnswer("third time") },
  );
  const completion = await withRetries(provider(server), { maxRetries: 3, baseDelayMs: 10 }).complete(request);
  expect(completion.text).toBe("third time");
  expect(server.requests).toHaveLength(3);
});

// The evidence is the code and message the timeout produces, three attempts, and the jest timeout: without the
// 200 ms limit the hanging calls would never end.
test("a server that never answers: LLM_TIMEOUT after timeoutMs, retried maxRetries times, then thrown", async () => {
  const server = await serve(() => "hang");
  const error = await failure(withRetries(provider(server, { timeoutMs: 200 }), { maxRetries: 2, baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_TIMEOUT", retryable: true });
  expect(error.message).toBe("The OpenAI-compatible service did not answer within 0.2 s.");
  expect(server.requests).toHaveLength(3);
}, 10_000);

test("401 is LLM_AUTH and not retried", async () => {
  const server = await serve(() => ({ status: 401, json: openAiError("Invalid authentication", "invalid_api_key") }));
  const error = await failure(withRetries(provider(server, { apiKey: "sk-wrong" }), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_AUTH", retryable: false, status: 401 });
  expect(server.requests).toHaveLength(1);
});

test("403 is LLM_AUTH too", async () => {
  const server = await serve(() => ({ status: 403, json: openAiError("Project does not have access to model") }));
  expect(await failure(provider(server).complete(request))).toMatchObject({ code: "LLM_AUTH", retryable: false, status: 403 });
});

test("400 is LLM_REJECTED, not retried, and tells the service's message", async () => {
  const server = await serve(() => ({ status: 400, json: openAiError("This model's maximum context length is 8192 tokens.") }));
  const error = await failure(withRetries(provider(server), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_REJECTED", retryable: false, status: 400 });
  expect(error.message).toBe("The OpenAI-compatible service rejected the request (HTTP 400): This model's maximum context length is 8192 tokens.");
  expect(server.requests).toHaveLength(1);
});

test("404 (Ollama's {error: string} for an unknown model) is LLM_REJECTED with that message", async () => {
  const server = await serve(() => ({ status: 404, json: { error: 'model "llama9" not found, try pulling it first' } }));
  const error = await failure(provider(server).complete(request));
  expect(error).toMatchObject({ code: "LLM_REJECTED", retryable: false, status: 404 });
  expect(error.message).toContain('model "llama9" not found');
});

test("a 200 whose body is not JSON is LLM_BAD_RESPONSE, not retried", async () => {
  const server = await serve(() => ({ raw: "<html>Welcome to nginx</html>", headers: { "content-type": "text/html" } }));
  const error = await failure(withRetries(provider(server), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false, status: 200 });
  expect(error.message).toBe("The OpenAI-compatible service answered with something other than JSON.");
  expect(server.requests).toHaveLength(1);
});

test("a JSON answer without choices[0].message.content is LLM_BAD_RESPONSE", async () => {
  const server = await serve((_, index) => ({ json: index === 0 ? { choices: [] } : { choices: [{ message: { content: null } }] } }));
  expect(await failure(provider(server).complete(request))).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
  expect(await failure(provider(server).complete(request))).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
});

test("the API key never appears in an error message, even when the service echoes it; long messages are cut", async () => {
  const apiKey = "sk-proj-SECRETSECRETSECRET1234567890";
  const messages = [
    `Incorrect API key provided: ${apiKey}. You can find your API key at https://platform.openai.com/account/api-keys.`,
    `${"x".repeat(190)} ${apiKey}`, // the key straddles the cut at 200 characters
    `Upstream failed for Authorization: Bearer ${apiKey}\n${"at frame (file.js:1:1)\n".repeat(50)}`,
  ];
  const statuses = [401, 400, 502];
  const server = await serve((_, index) => ({ status: statuses[index]!, json: openAiError(messages[index]!) }));
  for (let i = 0; i < messages.length; i++) {
    const error = await failure(provider(server, { apiKey }).complete(request));
    expect(error.message).not.toContain(apiKey);
    expect(error.message).not.toContain("SECRET");
    expect(error.message).not.toContain("\n");
    expect(error.message.length).toBeLessThanOrEqual(300);
    expect(String(error.stack)).not.toContain(apiKey);
  }
  expect(server.requests).toHaveLength(3);
});

test("aborting the caller's signal: LLM_CANCELLED at once, not retried", async () => {
  const server = await serve(() => "hang");
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  // The request's own timeout is 10 s: had the abort not ended it, this test would run into its 5 s timeout.
  const error = await failure(withRetries(provider(server, { timeoutMs: 10_000 }), { baseDelayMs: 1 }).complete({ ...request, signal: controller.signal }));
  expect(error).toMatchObject({ code: "LLM_CANCELLED", retryable: false });
  expect(server.requests).toHaveLength(1);
}, 5_000);

test("a signal aborted before the call: LLM_CANCELLED without a request", async () => {
  const server = await serve(() => ({ json: openAiAnswer("never") }));
  const error = await failure(provider(server).complete({ ...request, signal: AbortSignal.abort() }));
  expect(error.code).toBe("LLM_CANCELLED");
  expect(server.requests).toHaveLength(0);
});

test("a 302 redirect to another host is not followed: LLM_BAD_RESPONSE, not retried", async () => {
  const elsewhere = await serve(() => ({ json: openAiAnswer("should not be reached") }));
  const server = await serve(() => ({ status: 302, headers: { location: `${elsewhere.url}/v1/chat/completions` } }));
  const error = await failure(withRetries(provider(server, { apiKey: "sk-abc" }), { baseDelayMs: 1 }).complete(request));
  expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
  expect(error.message).toBe("The OpenAI-compatible service answered with a redirect, which is not followed: check its base URL.");
  expect(server.requests).toHaveLength(1);
  expect(elsewhere.requests).toHaveLength(0);
});

test("a refused connection is LLM_UNAVAILABLE and retryable", async () => {
  const port = await freePort();
  const error = await failure(createOpenAiProvider({ baseUrl: `http://127.0.0.1:${port}/v1`, model: "m" }).complete(request));
  expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, status: undefined });
  expect(error.message).toBe("The OpenAI-compatible service could not be reached (ECONNREFUSED).");
});

describe("answer sizes", () => {
  test("a 20 MB answer is LLM_BAD_RESPONSE, not retried, and read no further than the bound", async () => {
    const huge = "w".repeat(20 * 1024 * 1024);
    const server = await serve(() => ({ json: openAiAnswer(huge, { prompt_tokens: 1, completion_tokens: 5_000_000 }) }));
    const error = await failure(withRetries(provider(server), { maxRetries: 2, baseDelayMs: 1 }).complete(request));
    expect(error.code).toBe("LLM_BAD_RESPONSE");
    expect(error.retryable).toBe(false);
    expect(error.message).toMatch(/larger than \d+ bytes/);
    expect(server.requests).toHaveLength(1);
  });

  test("so is one that declares a Content-Length over the bound", async () => {
    const body = JSON.stringify(openAiAnswer("v".repeat(1024 * 1024), { prompt_tokens: 1, completion_tokens: 1 }));
    const server = await serve(() => ({ raw: body, headers: { "content-length": String(Buffer.byteLength(body)) } }));
    expect((await failure(provider(server).complete(request))).code).toBe("LLM_BAD_RESPONSE");
  });

  test("a completion longer than a summary may be stored (128 KiB) is LLM_BAD_RESPONSE; one just under is returned", async () => {
    const over = await serve(() => ({ json: openAiAnswer("o".repeat(128 * 1024 + 1), { prompt_tokens: 1, completion_tokens: 1 }) }));
    const error = await failure(provider(over).complete(request));
    expect(error.code).toBe("LLM_BAD_RESPONSE");
    expect(error.message).toMatch(/more than 131072 bytes of text/);
    const under = await serve(() => ({ json: openAiAnswer("u".repeat(128 * 1024), { prompt_tokens: 1, completion_tokens: 1 }) }));
    expect((await provider(under).complete(request)).text).toHaveLength(128 * 1024);
  });

  test("an error answer is read only far enough for its message", async () => {
    const server = await serve(() => ({ status: 400, json: { error: { message: `bad request ${"e".repeat(5 * 1024 * 1024)}` } } }));
    const error = await failure(provider(server).complete(request));
    expect(error.code).toBe("LLM_REJECTED");
    expect(error.message).toBe("The OpenAI-compatible service rejected the request (HTTP 400).");
  });
});
