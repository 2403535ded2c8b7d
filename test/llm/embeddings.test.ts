// The OpenAI-compatible embeddings client against a real HTTP server on loopback: what it sends and in how many
// batches, how it puts the vectors back in the order of the texts, and how it refuses an answer that does not give
// exactly one well-formed vector per text; failures are LlmErrors whose message never carries the API key.
import { createEmbeddingsClient, embedMaxTexts, type EmbeddingsOptions } from "../../lib/llm/embeddings.ts";
import { LlmError } from "../../lib/llm/provider.ts";
import { openAiError, startFakeLlmServer, type FakeLlmServer, type RecordedRequest, type Reply } from "../support/fake-llm-server.ts";

const servers: FakeLlmServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serve(reply: (request: RecordedRequest, index: number) => Reply) {
  const server = await startFakeLlmServer(reply);
  servers.push(server);
  return server;
}

const client = (server: FakeLlmServer, options: Partial<EmbeddingsOptions> = {}) =>
  createEmbeddingsClient({ baseUrl: `${server.url}/v1`, model: "embed-test", timeoutMs: 5_000, ...options });

/** A recognizable vector for a text: its length and its first character's code. */
const vectorOf = (text: string) => [text.length, text.codePointAt(0) ?? 0, 0.5];

/** An OpenAI embeddings answer for the texts of a request, entries in the given order of indexes. */
function embeddingsAnswer(request: RecordedRequest, options: { order?: "reversed"; usage?: number; model?: string } = {}) {
  const input = (request.body as { input: string[] }).input;
  const data = input.map((text, index) => ({ object: "embedding", index, embedding: vectorOf(text) }));
  return {
    object: "list",
    data: options.order === "reversed" ? data.reverse() : data,
    model: options.model ?? "embed-test-v2",
    ...(options.usage === undefined ? {} : { usage: { prompt_tokens: options.usage, total_tokens: options.usage } }),
  };
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

test("the request is a POST to <baseUrl>/embeddings with the model, the texts and encoding_format float", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request, { usage: 9 }) }));
  const result = await createEmbeddingsClient({ baseUrl: `${server.url}/v1/`, model: "embed-test" }).embed(["a cat", "a mat"]);
  expect(result).toEqual({ vectors: [vectorOf("a cat"), vectorOf("a mat")], promptTokens: 9, model: "embed-test-v2", latencyMs: expect.any(Number) });
  expect(server.requests).toHaveLength(1);
  const [sent] = server.requests;
  expect(sent!.method).toBe("POST");
  expect(sent!.path).toBe("/v1/embeddings");
  expect(sent!.headers["content-type"]).toBe("application/json");
  expect(sent!.body).toEqual({ model: "embed-test", input: ["a cat", "a mat"], encoding_format: "float" });
});

test("dimensions is sent when set, and then required of the answer", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  expect((await client(server, { dimensions: 3 }).embed(["x"])).vectors).toEqual([vectorOf("x")]);
  expect(server.requests[0]!.body).toEqual({ model: "embed-test", input: ["x"], encoding_format: "float", dimensions: 3 });
  const error = await failure(client(server, { dimensions: 256 }).embed(["x"]));
  expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
  expect(error.message).toBe("The embeddings service answered with an embedding of 3 dimensions for text 0, where 256 were expected.");
});

test("texts go in batches of batchSize, one after the other; vectors come back in the order of the texts", async () => {
  // The server lists each batch's entries last index first: the client goes by index, not by position.
  const server = await serve((request) => ({ json: embeddingsAnswer(request, { order: "reversed", usage: 10 }) }));
  const texts = ["one", "two", "three", "four", "five"];
  const result = await client(server, { batchSize: 2 }).embed(texts);
  expect(server.requests.map((request) => (request.body as { input: string[] }).input)).toEqual([["one", "two"], ["three", "four"], ["five"]]);
  expect(result.vectors).toEqual(texts.map(vectorOf));
  expect(result.promptTokens).toBe(30);
});

test("64 texts a request by default", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  const texts = Array.from({ length: 130 }, (_, index) => `text ${index}`);
  expect((await client(server).embed(texts)).vectors).toEqual(texts.map(vectorOf));
  expect(server.requests.map((request) => (request.body as { input: string[] }).input.length)).toEqual([64, 64, 2]);
});

test("no texts: no vectors and no request", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  expect(await client(server).embed([])).toEqual({ vectors: [], promptTokens: 0, model: "embed-test", latencyMs: 0 });
  expect(server.requests).toHaveLength(0);
});

test(`more than ${embedMaxTexts} texts in one call is a RangeError, before any request`, async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  await expect(client(server).embed(Array.from({ length: embedMaxTexts + 1 }, () => "t"))).rejects.toThrow(RangeError);
  expect(server.requests).toHaveLength(0);
});

test("options out of range are a RangeError", () => {
  for (const options of [{ batchSize: 0 }, { batchSize: 2049 }, { batchSize: 1.5 }, { dimensions: 0 }, { dimensions: 4097 }]) {
    expect(() => createEmbeddingsClient({ baseUrl: "http://127.0.0.1:1/v1", model: "m", ...options })).toThrow(RangeError);
  }
});

test("without usage, tokens are estimated per text and summed; the configured model stands when the answer names none", async () => {
  const server = await serve((request) => ({ json: { data: embeddingsAnswer(request).data } }));
  // ceil(10 / 4) + ceil(1 / 4), and 漢字 counts one token a character.
  const result = await client(server, { batchSize: 2 }).embed(["x".repeat(10), "y", "漢字"]);
  expect(result.promptTokens).toBe(3 + 1 + 2);
  expect(result.model).toBe("embed-test");
});

test("a batch with usage counts the service's tokens, one without counts estimated ones", async () => {
  const server = await serve((request, index) => ({ json: index === 0 ? embeddingsAnswer(request, { usage: 7 }) : { data: embeddingsAnswer(request).data } }));
  const result = await client(server, { batchSize: 2 }).embed(["x".repeat(10), "y", "漢字"]);
  expect(result.promptTokens).toBe(7 + 2);
  expect(result.model).toBe("embed-test-v2");
});

test("Authorization: Bearer is sent only when an API key is set", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  await client(server).embed(["a"]);
  await client(server, { apiKey: null }).embed(["a"]);
  await client(server, { apiKey: "" }).embed(["a"]);
  await client(server, { apiKey: "sk-local-key" }).embed(["a"]);
  expect(server.requests.map((r) => r.headers.authorization)).toEqual([undefined, undefined, undefined, "Bearer sk-local-key"]);
});

test("401 is LLM_AUTH, not retryable, and the message does not carry the key even when the service echoes it", async () => {
  const apiKey = "sk-proj-SECRETSECRETSECRET1234567890";
  const server = await serve(() => ({ status: 401, json: openAiError(`Incorrect API key provided: ${apiKey}.`, "invalid_api_key") }));
  const error = await failure(client(server, { apiKey }).embed(["a"]));
  expect(error).toMatchObject({ code: "LLM_AUTH", retryable: false, status: 401 });
  expect(error.message).toBe("The embeddings service refused the API key (HTTP 401).");
  expect(error.message).not.toContain(apiKey);
  expect(error.message).not.toContain("SECRET");
});

test("a failing batch fails the call, and no later batch is sent", async () => {
  const server = await serve((request, index) => (index === 0 ? { json: embeddingsAnswer(request) } : { status: 500, json: openAiError("boom") }));
  const error = await failure(client(server, { batchSize: 1 }).embed(["a", "b", "c"]));
  expect(error).toMatchObject({ code: "LLM_UNAVAILABLE", retryable: true, status: 500 });
  expect(server.requests).toHaveLength(2);
});

describe("malformed answers are LLM_BAD_RESPONSE, not retryable", () => {
  const entry = (index: unknown, embedding: unknown) => ({ object: "embedding", index, embedding });
  const cases: Array<[string, unknown, string]> = [
    ["no data", { object: "list" }, "no list of embeddings"],
    ["data not a list", { data: { 0: [1] } }, "no list of embeddings"],
    ["fewer entries than texts", { data: [entry(0, [1, 2])] }, "1 embeddings for 2 texts"],
    ["more entries than texts", { data: [entry(0, [1]), entry(1, [1]), entry(2, [1])] }, "3 embeddings for 2 texts"],
    ["an entry without index", { data: [entry(0, [1, 2]), { embedding: [1, 2] }] }, "an embedding without the index of one of the texts"],
    ["an index out of range", { data: [entry(0, [1, 2]), entry(2, [1, 2])] }, "an embedding without the index of one of the texts"],
    ["an index as a string", { data: [entry(0, [1, 2]), entry("1", [1, 2])] }, "an embedding without the index of one of the texts"],
    ["a fractional index", { data: [entry(0, [1, 2]), entry(0.5, [1, 2])] }, "an embedding without the index of one of the texts"],
    ["a null entry", { data: [entry(0, [1, 2]), null] }, "an embedding without the index of one of the texts"],
    ["a duplicate index", { data: [entry(1, [1, 2]), entry(1, [3, 4])] }, "two embeddings for text 1"],
    ["strings in a vector", { data: [entry(0, [1, 2]), entry(1, ["1", "2"])] }, "an embedding for text 1 that is not a list of numbers"],
    ["a null in a vector", { data: [entry(0, [1, null]), entry(1, [1, 2])] }, "an embedding for text 0 that is not a list of numbers"],
    ["a base64 vector", { data: [entry(0, "AAAAAA=="), entry(1, [1, 2])] }, "an embedding for text 0 that is not a list of numbers"],
    ["a missing vector", { data: [entry(0, [1, 2]), entry(1, undefined)] }, "an embedding for text 1 that is not a list of numbers"],
    ["vectors of different dimensions", { data: [entry(0, [1, 2]), entry(1, [1, 2, 3])] }, "an embedding of 3 dimensions for text 1, where 2 were expected"],
    ["empty vectors", { data: [entry(0, []), entry(1, [])] }, "an embedding of 0 dimensions for text 0, where from 1 to 4096 are accepted"],
    [
      "too long vectors",
      { data: [entry(0, new Array(4097).fill(0)), entry(1, [1])] },
      "an embedding of 4097 dimensions for text 0, where from 1 to 4096 are accepted",
    ],
  ];

  test.each(cases)("%s", async (_, json, what) => {
    const server = await serve(() => ({ json }));
    const error = await failure(client(server).embed(["a", "b"]));
    expect(error).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
    expect(error.message).toBe(`The embeddings service answered with ${what}.`);
  });

  test("NaN (not JSON, as a lenient server writes it) makes the body not JSON; 1e400 parses to Infinity, not a finite number", async () => {
    const server = await serve((_, index) => ({
      raw: index === 0 ? '{"data":[{"index":0,"embedding":[NaN,1]}]}' : '{"data":[{"index":0,"embedding":[1e400,1]}]}',
    }));
    const notJson = await failure(client(server).embed(["a"]));
    expect(notJson).toMatchObject({ code: "LLM_BAD_RESPONSE", retryable: false });
    expect(notJson.message).toBe("The embeddings service answered with something other than JSON.");
    const infinite = await failure(client(server).embed(["a"]));
    expect(infinite.message).toBe("The embeddings service answered with an embedding for text 0 that is not a list of numbers.");
  });

  test("a later batch whose vectors differ in dimension from the first batch's", async () => {
    const server = await serve((request, index) => ({
      json: index === 0 ? embeddingsAnswer(request) : { data: [entry(0, [1, 2])] },
    }));
    const error = await failure(client(server, { batchSize: 1 }).embed(["a", "b"]));
    expect(error.message).toBe("The embeddings service answered with an embedding of 2 dimensions for text 0, where 3 were expected.");
  });

  test("an answer larger than batch × 4096 dimensions could be is refused while it is read", async () => {
    const server = await serve(() => ({ json: { data: [entry(0, new Array(300_000).fill(-0.012345678901234567))] } }));
    const error = await failure(client(server, { batchSize: 1 }).embed(["a"]));
    expect(error.code).toBe("LLM_BAD_RESPONSE");
    expect(error.message).toMatch(/larger than \d+ bytes/);
  });
});

test("aborting the caller's signal: LLM_CANCELLED at once, and no later batch is sent", async () => {
  const server = await serve((request, index) => (index === 0 ? { json: embeddingsAnswer(request) } : "hang"));
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 100);
  // The request's own timeout is 10 s: had the abort not ended it, this test would run into its 5 s timeout.
  const error = await failure(client(server, { batchSize: 1, timeoutMs: 10_000 }).embed(["a", "b", "c"], controller.signal));
  expect(error).toMatchObject({ code: "LLM_CANCELLED", retryable: false });
  expect(server.requests).toHaveLength(2);
}, 5_000);

test("a signal aborted before the call: LLM_CANCELLED without a request", async () => {
  const server = await serve((request) => ({ json: embeddingsAnswer(request) }));
  const error = await failure(client(server).embed(["a"], AbortSignal.abort()));
  expect(error.code).toBe("LLM_CANCELLED");
  expect(server.requests).toHaveLength(0);
});
