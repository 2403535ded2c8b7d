// Streaming completions (CompletionRequest.onDelta) against real HTTP servers on loopback sending Server-Sent Events:
// the pieces arrive in order and join into exactly the final text (whitespace at either end never delivered), the
// Completion is the same as without streaming, a stream that fails (error event, cut connection, timeout, cancel,
// too large) is an LlmError, retried only while no text was delivered, and cancelling closes the connection at once.
// Also the extractive provider's pieces, summarizeInStages streaming only its last call, and the wrappers passing
// onDelta through.
import { setTimeout as delay } from "node:timers/promises";
import { createAnthropicProvider, type AnthropicOptions } from "../../lib/llm/anthropic.ts";
import { createExtractiveProvider } from "../../lib/llm/extractive.ts";
import { createLlmProvider } from "../../lib/llm/index.ts";
import { summarizeInStages } from "../../lib/llm/map-reduce.ts";
import { createOpenAiProvider, type OpenAiOptions } from "../../lib/llm/openai.ts";
import { completionResponseMaxBytes, LlmError, summaryMaxBytes, type Completion, type CompletionRequest, type LlmProvider } from "../../lib/llm/provider.ts";
import { withRetries } from "../../lib/llm/retry.ts";
import { createMetrics } from "../../lib/metrics.ts";
import {
  anthropicStream,
  openAiAnswer,
  openAiStream,
  startFakeLlmServer,
  type FakeLlmServer,
  type RecordedRequest,
  type Reply,
} from "../support/fake-llm-server.ts";

const servers: FakeLlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serve(reply: (request: RecordedRequest, index: number) => Reply | Promise<Reply>) {
  const server = await startFakeLlmServer(reply);
  servers.push(server);
  return server;
}

const openAiKey = "sk-proj-STREAMSECRET0123456789";
const anthropicKey = "sk-ant-api03-STREAMSECRET";
const openAi = (server: FakeLlmServer, options: Partial<OpenAiOptions> = {}) =>
  createOpenAiProvider({ baseUrl: `${server.url}/v1`, apiKey: openAiKey, model: "gpt-test", timeoutMs: 5_000, ...options });
const anthropic = (server: FakeLlmServer, options: Partial<AnthropicOptions> = {}) =>
  createAnthropicProvider({ baseUrl: server.url, apiKey: anthropicKey, model: "claude-test", timeoutMs: 5_000, ...options });

const request = { prompt: "Summarize: The cat sat on the mat.", sourceText: "The cat sat on the mat.", maxOutputTokens: 64 };

/** A request that streams, and the pieces it was given. */
function streaming(extra: Partial<CompletionRequest> = {}) {
  const deltas: string[] = [];
  return { deltas, request: { ...request, ...extra, onDelta: (text: string) => void deltas.push(text) } };
}

async function failure(promise: Promise<unknown>): Promise<LlmError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(LlmError);
    return error as LlmError;
  }
  throw new Error("expected the call to fail");
}

/** Whether the server saw the client close the connection (before the answer was complete) within `ms`. */
async function disconnectedWithin(sent: RecordedRequest, ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([sent.disconnected.then(() => true), delay(ms, false, { signal: timer.signal })]);
  } finally {
    timer.abort();
  }
}

const openAiChunk = (delta: Record<string, unknown>) => JSON.stringify({ model: "gpt-test-2025", choices: [{ index: 0, delta, finish_reason: null }] });

describe("OpenAI-compatible", () => {
  test("the pieces arrive in order, whitespace at either end held back, and join into the Completion's text", async () => {
    const pieces = ["  ", "\nA cat", " sat", " ", " on the mat.", "  \n"];
    const server = await serve(() => ({ sse: openAiStream(pieces, { prompt_tokens: 17, completion_tokens: 6 }), delayMs: 5 }));
    const { deltas, request: streamed } = streaming();
    const completion = await openAi(server).complete(streamed);
    expect(deltas).toEqual(["A cat", " sat", "  on the mat."]);
    expect(completion).toEqual({
      text: "A cat sat  on the mat.",
      promptTokens: 17,
      completionTokens: 6,
      provider: "openai",
      model: "gpt-test-2025",
      latencyMs: expect.any(Number),
    });
    expect(deltas.join("")).toBe(completion.text);
    expect(completion.text).toBe(pieces.join("").trim());
  });

  test("the request asks for a stream with usage, and accepts text/event-stream; without onDelta nothing changes", async () => {
    const server = await serve((sent) => ((sent.body as { stream?: boolean }).stream ? { sse: openAiStream(["ok"]) } : { json: openAiAnswer("ok") }));
    await openAi(server).complete(streaming().request);
    await openAi(server).complete(request);
    const [streamed, plain] = server.requests;
    expect(streamed!.body).toEqual({
      model: "gpt-test",
      messages: [{ role: "user", content: request.prompt }],
      max_tokens: 64,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(streamed!.headers.accept).toBe("text/event-stream");
    expect(streamed!.headers.authorization).toBe(`Bearer ${openAiKey}`);
    expect(plain!.body).toEqual({ model: "gpt-test", messages: [{ role: "user", content: request.prompt }], max_tokens: 64 });
    expect(plain!.headers.accept).toBe("application/json");
  });

  test("without a usage chunk the tokens are estimated, and the configured model stands in for a missing one", async () => {
    const server = await serve(() => ({ sse: [openAiChunk({ content: "Eleven char" }).replace('"model":"gpt-test-2025",', ""), "[DONE]"] }));
    const completion = await openAi(server).complete({ ...streaming().request, prompt: "x".repeat(10) });
    expect(completion).toMatchObject({ text: "Eleven char", promptTokens: 3, completionTokens: 3, model: "gpt-test" });
  });

  test("an error chunk mid-stream is LLM_UNAVAILABLE with the service's message, key masked, not retried after text", async () => {
    const server = await serve(() => ({
      sse: [openAiChunk({ content: "Half an" }), JSON.stringify({ error: { message: `Internal error for key ${openAiKey}`, type: "server_error" } })],
      after: "hang",
    }));
    const { deltas, request: streamed } = streaming();
    const error = await failure(withRetries(openAi(server), { baseDelayMs: 1 }).complete(streamed));
    expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true });
    expect(error.message).toBe("The OpenAI-compatible service failed mid-answer: Internal error for key [redacted]");
    expect(error.message).not.toContain("STREAMSECRET");
    expect(deltas).toEqual(["Half an"]);
    expect(server.requests).toHaveLength(1);
    // The answer was left open: the client closed it.
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  });

  test("a refusal is LLM_REJECTED", async () => {
    const server = await serve(() => ({ sse: [openAiChunk({ content: null, refusal: "I can't help with that." }), "[DONE]"] }));
    const error = await failure(withRetries(openAi(server), { baseDelayMs: 1 }).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_REJECTED", retryable: false, message: "The model declined to answer." });
    expect(server.requests).toHaveLength(1);
  });

  test("a stream that ends without [DONE] is LLM_UNAVAILABLE; one complete without text LLM_BAD_RESPONSE", async () => {
    const server = await serve((_, index) => ({ sse: index === 0 ? openAiStream(["Never finished"]).slice(0, -1) : openAiStream(["  ", "\n"]) }));
    const cut = await failure(openAi(server).complete(streaming().request));
    expect(cut).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true });
    expect(cut.message).toBe("The OpenAI-compatible service's answer ended before it was complete.");
    const empty = await failure(openAi(server).complete(streaming().request));
    expect(empty).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false, message: "The OpenAI-compatible service answered without any text." });
  });

  test("an event that is not JSON is LLM_BAD_RESPONSE", async () => {
    const server = await serve(() => ({ sse: ["<html>oops</html>"] }));
    const error = await failure(openAi(server).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", message: "The OpenAI-compatible service sent an event that is not JSON." });
  });

  test("a connection cut after some text is LLM_UNAVAILABLE, retryable, but not retried by withRetries", async () => {
    // The delay lets the client read the events before the cut (a cut discards what the client has not read yet).
    const server = await serve(() => ({ sse: openAiStream(["First", " words"]).slice(0, 3), delayMs: 30, after: "cut" }));
    const { deltas, request: streamed } = streaming();
    const error = await failure(withRetries(openAi(server), { maxRetries: 3, baseDelayMs: 1 }).complete(streamed));
    expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true });
    expect(error.message).toMatch(/^The OpenAI-compatible service broke off its answer( \([A-Z_]+\))?\.$/);
    expect(deltas).toEqual(["First", " words"]);
    expect(server.requests).toHaveLength(1);
  });

  test("a failure before any text is retried as before, and the subscriber sees only the answer that succeeded", async () => {
    const server = await serve((_, index) => {
      if (index === 0) return { sse: openAiStream(["lost"]).slice(0, 1), after: "cut" }; // the role chunk only
      if (index === 1) return { status: 503, headers: { "retry-after": "0" } };
      return { sse: openAiStream(["Third", " time."], { prompt_tokens: 9, completion_tokens: 2 }) };
    });
    const { deltas, request: streamed } = streaming();
    const completion = await withRetries(openAi(server), { maxRetries: 3, baseDelayMs: 1 }).complete(streamed);
    expect(completion).toMatchObject({ text: "Third time.", promptTokens: 9, completionTokens: 2 });
    expect(deltas).toEqual(["Third", " time."]);
    expect(server.requests).toHaveLength(3);
  });

  test("a status other than 2xx is the same LlmError as without streaming", async () => {
    const server = await serve(() => ({ status: 429, headers: { "retry-after": "7" }, json: { error: { message: "Slow down" } } }));
    const error = await failure(openAi(server).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_RATE_LIMITED", retryable: true, retryAfterMs: 7_000, status: 429 });
    expect(error.message).toBe("The OpenAI-compatible service is rate limiting requests (HTTP 429): Slow down");
  });

  test("a server ignoring stream: true answers one JSON document: its text is one delta and the completion as without streaming", async () => {
    const server = await serve(() => ({ json: openAiAnswer("  The whole answer.  ", { prompt_tokens: 9, completion_tokens: 3 }) }));
    const { request, deltas } = streaming();
    const completion = await openAi(server).complete(request);
    expect(deltas).toEqual(["The whole answer."]);
    expect(completion).toMatchObject({ text: "The whole answer.", promptTokens: 9, completionTokens: 3, model: "gpt-test-2025" });
    expect(server.requests).toHaveLength(1);
  });

  test("a 2xx that is neither an event stream nor JSON is LLM_BAD_RESPONSE, not retried", async () => {
    const server = await serve(() => ({ raw: "<html>hello</html>", headers: { "content-type": "text/html" } }));
    const error = await failure(withRetries(openAi(server), { baseDelayMs: 1 }).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false, status: 200 });
    expect(error.message).toBe("The OpenAI-compatible service answered with something other than an event stream.");
    expect(server.requests).toHaveLength(1);
  });

  test("aborting mid-stream: LLM_CANCELLED at once, not retried, and the server sees the connection closed", async () => {
    const server = await serve(() => ({ sse: openAiStream(["Some", " text"]).slice(0, 3), after: "hang" }));
    const controller = new AbortController();
    const deltas: string[] = [];
    const onDelta = (text: string) => {
      deltas.push(text);
      if (deltas.length === 2) setTimeout(() => controller.abort(), 20);
    };
    const started = performance.now();
    // The request's own timeout is 10 s: had the abort not ended it, this test would run into its 5 s timeout.
    const error = await failure(
      withRetries(openAi(server, { timeoutMs: 10_000 }), { baseDelayMs: 1 }).complete({ ...request, signal: controller.signal, onDelta }),
    );
    expect(error).toMatchObject({ code: "LLM_CANCELLED", retryable: false });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(deltas).toEqual(["Some", " text"]);
    expect(server.requests).toHaveLength(1);
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  }, 5_000);

  test("the timeout covers the whole stream: LLM_TIMEOUT, and the connection is closed", async () => {
    const server = await serve(() => ({ sse: openAiStream(["Slow"]).slice(0, 2), after: "hang" }));
    const error = await failure(openAi(server, { timeoutMs: 300 }).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_TIMEOUT", retryable: true });
    expect(error.message).toBe("The OpenAI-compatible service did not finish its answer within 0.3 s.");
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  }, 5_000);

  test("text past a summary's 128 KiB is refused before the piece that crosses it is delivered", async () => {
    const piece = "y".repeat(1024);
    const server = await serve(() => ({ sse: openAiStream(Array.from({ length: 200 }, () => piece)), after: "hang" }));
    const { deltas, request: streamed } = streaming();
    const error = await failure(withRetries(openAi(server), { baseDelayMs: 1 }).complete(streamed));
    expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
    expect(error.message).toMatch(/more than 131072 bytes of text/);
    expect(deltas.join("")).toHaveLength(summaryMaxBytes);
    expect(server.requests).toHaveLength(1);
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  });

  test("a stream past the answer bound is refused as soon as it crosses it, even without text, and the connection closed", async () => {
    // Chunks without text, padded: nothing for the text bound, everything for the body bound.
    const padding = JSON.stringify({ model: "gpt-test-2025", choices: [], usage: null, padding: "p".repeat(16 * 1024) });
    const count = Math.ceil((2 * completionResponseMaxBytes) / padding.length);
    const server = await serve(() => ({ sse: Array.from({ length: count }, () => padding), after: "hang" }));
    const error = await failure(withRetries(openAi(server), { baseDelayMs: 1 }).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
    expect(error.message).toBe(`The language model's answer is larger than ${completionResponseMaxBytes} bytes, which is more than a summary may be.`);
    expect(server.requests).toHaveLength(1);
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  });

  test("what onDelta throws ends the request and is thrown as it is, without a retry", async () => {
    const server = await serve(() => ({ sse: openAiStream(["one", " two"]), delayMs: 5 }));
    const bug = new TypeError("subscriber failed");
    const onDelta = () => {
      throw bug;
    };
    await expect(withRetries(openAi(server), { baseDelayMs: 1 }).complete({ ...request, onDelta })).rejects.toBe(bug);
    expect(server.requests).toHaveLength(1);
  });
});

describe("Anthropic", () => {
  test("text deltas in order (other deltas ignored); model, input tokens with cache, output tokens from message_delta", async () => {
    const events = anthropicStream(
      ["It rained", " all day", ".\n"],
      { input_tokens: 10, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000, output_tokens: 7 },
      "claude-sonnet-4-5-20250929",
    );
    // A thinking block before the text is not the summary.
    const thinking = {
      event: "content_block_delta",
      data: JSON.stringify({ type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "Hmm." } }),
    };
    const server = await serve(() => ({ sse: [events[0]!, thinking, ...events.slice(1)], delayMs: 2 }));
    const { deltas, request: streamed } = streaming();
    const completion = await anthropic(server).complete(streamed);
    expect(deltas).toEqual(["It rained", " all day", "."]);
    expect(completion).toEqual({
      text: "It rained all day.",
      promptTokens: 1110,
      completionTokens: 7,
      provider: "anthropic",
      model: "claude-sonnet-4-5-20250929",
      latencyMs: expect.any(Number),
    });
  });

  test("the request carries stream: true besides the usual body and headers", async () => {
    const server = await serve(() => ({ sse: anthropicStream(["ok"]) }));
    await anthropic(server).complete(streaming().request);
    const [sent] = server.requests;
    expect(sent!.path).toBe("/v1/messages");
    expect(sent!.body).toEqual({ model: "claude-test", max_tokens: 64, messages: [{ role: "user", content: request.prompt }], stream: true });
    expect(sent!.headers["x-api-key"]).toBe(anthropicKey);
    expect(sent!.headers["anthropic-version"]).toBe("2023-06-01");
    expect(sent!.headers.accept).toBe("text/event-stream");
  });

  const errorEvent = (type: string, message: string) => ({ event: "error", data: JSON.stringify({ type: "error", error: { type, message } }) });

  test("an overloaded_error event before any text is LLM_UNAVAILABLE and retried; after text it is thrown", async () => {
    const events = anthropicStream(["Second", " try."]);
    const before = await serve((_, index) => ({ sse: index < 2 ? [events[0]!, errorEvent("overloaded_error", "Overloaded")] : events }));
    const first = await failure(anthropic(before).complete(streaming().request));
    expect(first).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, message: "The Anthropic API failed mid-answer: Overloaded" });
    const { deltas, request: streamed } = streaming();
    expect((await withRetries(anthropic(before), { baseDelayMs: 1 }).complete(streamed)).text).toBe("Second try.");
    expect(deltas).toEqual(["Second", " try."]);
    expect(before.requests).toHaveLength(3);

    const after = await serve(() => ({ sse: [...events.slice(0, 4), errorEvent("overloaded_error", "Overloaded")] }));
    const late = streaming();
    expect(await failure(withRetries(anthropic(after), { baseDelayMs: 1 }).complete(late.request))).toMatchObject({ code: "LLM_UNAVAILABLE" });
    expect(late.deltas).toEqual(["Second"]);
    expect(after.requests).toHaveLength(1);
  });

  test.each([
    ["invalid_request_error", "LLM_REJECTED", false],
    ["rate_limit_error", "LLM_RATE_LIMITED", true],
    ["authentication_error", "LLM_AUTH", false],
    ["api_error", "LLM_UNAVAILABLE", true],
    ["something_new_error", "LLM_UNAVAILABLE", true],
  ])("an error event of type %s is %s, and the key is masked when echoed", async (type, code, retryable) => {
    const server = await serve(() => ({ sse: [anthropicStream([])[0]!, errorEvent(type, `bad key ${anthropicKey}`)] }));
    const error = await failure(anthropic(server).complete(streaming().request));
    expect(error).toMatchObject({ code, retryable, message: "The Anthropic API failed mid-answer: bad key [redacted]" });
  });

  test("a stream cut before message_stop is LLM_UNAVAILABLE; one without text LLM_BAD_RESPONSE", async () => {
    const server = await serve((_, index) => (index === 0 ? { sse: anthropicStream(["Cut"]).slice(0, -1), after: "cut" } : { sse: anthropicStream([]) }));
    expect(await failure(anthropic(server).complete(streaming().request))).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true });
    expect(await failure(anthropic(server).complete(streaming().request))).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
  });

  test("a 529 before the stream is the same LlmError as without streaming", async () => {
    const server = await serve(() => ({ status: 529, json: { type: "error", error: { type: "overloaded_error", message: "Overloaded" } } }));
    const error = await failure(anthropic(server).complete(streaming().request));
    expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, status: 529, message: "The Anthropic API is unavailable (HTTP 529): Overloaded" });
  });

  test("aborting mid-stream: LLM_CANCELLED, and the server sees the connection closed", async () => {
    const server = await serve(() => ({ sse: anthropicStream(["Never", " ends"]).slice(0, 4), after: "hang" }));
    const controller = new AbortController();
    const onDelta = () => controller.abort();
    const error = await failure(anthropic(server, { timeoutMs: 10_000 }).complete({ ...request, signal: controller.signal, onDelta }));
    expect(error.code).toBe("LLM_CANCELLED");
    expect(await disconnectedWithin(server.requests[0]!, 2_000)).toBe(true);
  }, 5_000);
});

describe("extractive", () => {
  const report = [
    "The third quarter review covers revenue, costs, hiring and the product roadmap for the analytics platform.",
    "Revenue from the analytics platform grew by twenty percent compared with the second quarter.",
    "Hiring in engineering is behind plan, with four open positions still unfilled.",
    "Alice must renew the data center contract by March 1.",
    "Bob needs to send the updated revenue forecast to the board by Friday.",
    "Next quarter the analytics platform will add real-time dashboards for enterprise customers.",
  ].join(" ");
  const provider = createExtractiveProvider();

  test.each([
    ["a summary", `Summarize in three sentences.\n\n${report}`, report],
    ["bullet points", `List the key points as bullet points.\n\n${report}`, report],
    ["action items", `Extract every action item.\n\n${report}`, report],
    ["Chinese", "Summarize.\n\n今天开会。明天发布新版本！后天休息？", "今天开会。明天发布新版本！后天休息？"],
    ["an empty document", "Summarize.\n\n", ""],
  ])("%s: pieces of a few words that join into exactly the text; the Completion is as without onDelta", async (_, prompt, sourceText) => {
    const plain = await provider.complete({ prompt, sourceText, maxOutputTokens: 500 });
    const { deltas, request: streamed } = streaming({ prompt, sourceText, maxOutputTokens: 500 });
    const completion = await provider.complete(streamed);
    expect({ ...completion, latencyMs: 0 }).toEqual({ ...plain, latencyMs: 0 });
    expect(deltas.join("")).toBe(completion.text);
    expect(deltas.every((delta) => delta !== "" && delta.split(/\s+/).filter(Boolean).length <= 5)).toBe(true);
    expect(deltas[0]).not.toMatch(/^\s/);
    expect(deltas.at(-1)).not.toMatch(/\s$/);
  });

  test("a summary of several sentences comes in several pieces", async () => {
    const { deltas, request: streamed } = streaming({ prompt: `Summarize in three sentences.\n\n${report}`, sourceText: report, maxOutputTokens: 500 });
    await provider.complete(streamed);
    expect(deltas.length).toBeGreaterThan(3);
  });
});

/** A provider that answers "Answer N." and, asked to stream, hands it over in two pieces; it records the requests. */
function recordingProvider(contextTokens: number) {
  const requests: CompletionRequest[] = [];
  const provider: LlmProvider = {
    name: "openai",
    model: "fake",
    contextTokens,
    async complete(sent): Promise<Completion> {
      requests.push(sent);
      const text = `Answer ${requests.length}.`;
      sent.onDelta?.(text.slice(0, 6));
      sent.onDelta?.(text.slice(6));
      return { text, promptTokens: 10, completionTokens: 2, provider: "openai", model: "fake", latencyMs: 1 };
    },
  };
  return { provider, requests };
}

describe("summarizeInStages", () => {
  const render = (content: string) => `Summarize:\n\n${content}`;
  const longDocument = Array.from({ length: 20 }, (_, i) => `Paragraph ${i + 1} talks about topic ${i + 1} at some length. `.repeat(4).trim()).join("\n\n");

  test("only the last call, whose text is the result, streams; the map calls do not", async () => {
    const { provider, requests } = recordingProvider(300);
    const deltas: string[] = [];
    const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 50, onDelta: (text) => void deltas.push(text) });
    expect(requests.length).toBeGreaterThan(2);
    expect(requests.slice(0, -1).every((sent) => sent.onDelta === undefined)).toBe(true);
    expect(requests.at(-1)!.onDelta).toBeDefined();
    expect(deltas.join("")).toBe(result.text);
    expect(result.text).toBe(`Answer ${requests.length}.`);
  });

  test("one call when the document fits: that call streams", async () => {
    const { provider, requests } = recordingProvider(100_000);
    const deltas: string[] = [];
    const result = await summarizeInStages({ provider, content: "Short.", render, maxOutputTokens: 50, onDelta: (text) => void deltas.push(text) });
    expect(requests).toHaveLength(1);
    expect(deltas).toEqual(["Answer", " 1."]);
    expect(result.calls).toBe(1);
  });

  test("with the OpenAI client: only the last request asks for a stream", async () => {
    const server = await serve((sent, index) =>
      (sent.body as { stream?: boolean }).stream ? { sse: openAiStream(["Final", " summary."]) } : { json: openAiAnswer(`Point ${index + 1}.`) },
    );
    const deltas: string[] = [];
    const provider = createOpenAiProvider({ baseUrl: server.url, model: "gpt-test", contextTokens: 500 });
    const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 50, onDelta: (text) => void deltas.push(text) });
    expect(result.calls).toBeGreaterThan(2);
    expect(server.requests.map((sent) => (sent.body as { stream?: boolean }).stream === true)).toEqual([...Array<boolean>(result.calls - 1).fill(false), true]);
    expect(result.text).toBe("Final summary.");
    expect(deltas).toEqual(["Final", " summary."]);
  });
});

test("createLlmProvider's wrappers (retries, tracing, metrics) pass onDelta through", async () => {
  const provider = createLlmProvider(
    { provider: "extractive", baseUrl: null, apiKey: null, model: null, timeoutMs: 1_000, contextTokens: null, maxRetries: 1 },
    createMetrics(),
  );
  const { deltas, request: streamed } = streaming({
    prompt: "Summarize: The cat sat on the mat. It was warm.",
    sourceText: "The cat sat on the mat. It was warm.",
  });
  const completion = await provider.complete(streamed);
  expect(deltas.length).toBeGreaterThan(1);
  expect(deltas.join("")).toBe(completion.text);
});

test("NUL characters a model writes are dropped (PostgreSQL text cannot hold them), streamed or not", async () => {
  const streamed = await serve(() => ({ sse: openAiStream(["A\u0000 b", "\u0000c."]) }));
  const { request, deltas } = streaming();
  const completion = await openAi(streamed).complete(request);
  expect(completion.text).toBe("A bc.");
  expect(deltas.join("")).toBe("A bc.");
  const whole = await serve(() => ({ json: openAiAnswer("x\u0000y") }));
  expect((await openAi(whole).complete({ ...request, onDelta: undefined })).text).toBe("xy");
});
