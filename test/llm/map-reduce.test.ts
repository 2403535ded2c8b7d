// Long documents: splitText's invariant (the pieces, concatenated, are exactly the input; each within maxChars, none
// empty, no surrogate pair cut) and its preference for paragraph, then sentence, then word boundaries; and
// summarizeInStages' calls: one when the prompt fits, else a map call per piece and reduce calls, tokens summed.
import { splitText, summarizeInStages } from "../../lib/llm/map-reduce.ts";
import { createExtractiveProvider } from "../../lib/llm/extractive.ts";
import { createOpenAiProvider } from "../../lib/llm/openai.ts";
import { estimateTokens, type Completion, type CompletionRequest, type LlmProvider } from "../../lib/llm/provider.ts";
import { openAiAnswer, startFakeLlmServer } from "../support/fake-llm-server.ts";

/** The invariant splitText promises, checked on one input. */
function expectValidSplit(text: string, maxChars: number): string[] {
  const pieces = splitText(text, maxChars);
  expect(pieces.join("")).toBe(text);
  for (const piece of pieces) {
    expect(piece.length).toBeGreaterThan(0);
    expect(piece.length).toBeLessThanOrEqual(maxChars);
    expect(piece).not.toMatch(/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/);
  }
  return pieces;
}

// A small deterministic generator (mulberry32), so the generated texts are the same on every run.
function random(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("splitText", () => {
  test("never loses, adds or reorders text, and keeps every piece within maxChars (300 generated texts)", () => {
    const next = random(42);
    const parts = ["word", "Satz", "句子", "😀", "a", " ", "  ", "\n", "\n\n", ". ", "! ", "。", "\t", "é", "x".repeat(40)];
    for (let run = 0; run < 300; run++) {
      let text = "";
      const length = Math.floor(next() * 400);
      while (text.length < length) text += parts[Math.floor(next() * parts.length)]!;
      expectValidSplit(text, 2 + Math.floor(next() * 60));
    }
  });

  test("pieces end at paragraph boundaries when paragraphs fit", () => {
    const paragraphs = ["First paragraph. It has two sentences.", "Second one, a bit longer than the first one is.", "Third."];
    const text = paragraphs.join("\n\n");
    expect(expectValidSplit(text, 50)).toEqual([`${paragraphs[0]}\n\n`, `${paragraphs[1]}\n\n`, paragraphs[2]]);
    // Two paragraphs fit together: they stay together.
    expect(expectValidSplit(text, 90)).toEqual([`${paragraphs[0]}\n\n${paragraphs[1]}\n\n`, paragraphs[2]]);
  });

  test("a paragraph longer than maxChars is split after a sentence, then at a space", () => {
    const text = "One sentence here. Another sentence there. And a third one.";
    expect(expectValidSplit(text, 45)).toEqual(["One sentence here. Another sentence there. ", "And a third one."]);
    expect(expectValidSplit("alpha beta gamma delta", 12)).toEqual(["alpha beta ", "gamma delta"]);
  });

  test("Chinese sentences end at 。！？ without spaces", () => {
    expect(expectValidSplit("今天开会。明天发布！后天休息？", 11)).toEqual(["今天开会。明天发布！", "后天休息？"]);
  });

  test("one giant word is cut at maxChars", () => {
    expect(expectValidSplit("x".repeat(1000), 300).map((piece) => piece.length)).toEqual([300, 300, 300, 100]);
  });

  test("a giant word of emoji is never cut inside a surrogate pair", () => {
    const pieces = expectValidSplit("😀".repeat(100), 7);
    expect(pieces.every((piece) => piece.length === 6 || piece === pieces.at(-1))).toBe(true);
  });

  test("empty text gives no pieces; a text within maxChars is one piece", () => {
    expect(splitText("", 10)).toEqual([]);
    expect(splitText("short", 10)).toEqual(["short"]);
  });

  test("maxChars must be a whole number of at least 2", () => {
    expect(() => splitText("abc", 1)).toThrow(RangeError);
    expect(() => splitText("abc", 2.5)).toThrow(RangeError);
  });
});

/** A provider that answers "summary N of <first words>" and reports fixed token counts; it records the requests. */
function fakeProvider(contextTokens: number, answer = (request: CompletionRequest, n: number) => `summary ${n} of ${request.sourceText.slice(0, 10)}`) {
  const requests: CompletionRequest[] = [];
  const provider: LlmProvider = {
    name: "openai",
    model: "fake",
    contextTokens,
    async complete(request): Promise<Completion> {
      requests.push(request);
      return { text: answer(request, requests.length), promptTokens: 100, completionTokens: 10, provider: "openai", model: "fake", latencyMs: 5 };
    },
  };
  return { provider, requests };
}

const render = (content: string) => `Summarize:\n\n${content}`;
const paragraph = (n: number) => `Paragraph ${n} talks about topic ${n} at some length. `.repeat(4).trim();
const longDocument = Array.from({ length: 20 }, (_, i) => paragraph(i + 1)).join("\n\n");

describe("summarizeInStages", () => {
  test("a prompt that fits (with room for the output) is one call", async () => {
    const { provider, requests } = fakeProvider(estimateTokens(render(longDocument)) + 200);
    const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 200 });
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ prompt: render(longDocument), sourceText: longDocument, maxOutputTokens: 200 });
    expect(result).toEqual({
      text: `summary 1 of ${longDocument.slice(0, 10)}`,
      promptTokens: 100,
      completionTokens: 10,
      provider: "openai",
      model: "fake",
      latencyMs: 5,
      calls: 1,
    });
  });

  test("one token short of fitting: map over pieces that fit, then one reduce call; tokens and latency summed", async () => {
    const context = estimateTokens(render(longDocument)) + 200 - 1;
    const { provider, requests } = fakeProvider(context, (_, n) => `Partial ${n}.`);
    const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 200 });
    const maps = requests.slice(0, -1);
    expect(maps.length).toBeGreaterThan(1);
    // Every prompt fits, the pieces are the document in order, and the reduce call gets the partial summaries.
    for (const r of requests) expect(estimateTokens(r.prompt) + 200).toBeLessThanOrEqual(provider.contextTokens);
    expect(maps.map((r) => r.sourceText).join("")).toBe(longDocument);
    expect(maps.every((r) => r.prompt === render(r.sourceText))).toBe(true);
    const partials = maps.map((_, i) => `Partial ${i + 1}.`).join("\n\n");
    expect(requests.at(-1)).toMatchObject({ sourceText: partials, prompt: render(partials) });
    expect(result).toMatchObject({
      text: `Partial ${requests.length}.`,
      calls: maps.length + 1,
      promptTokens: 100 * (maps.length + 1),
      completionTokens: 10 * (maps.length + 1),
      latencyMs: 5 * (maps.length + 1),
    });
  });

  test("partial summaries that still do not fit are reduced again, in as many rounds as needed", async () => {
    // Each answer is a third of its source's length: three rounds of maps before the text fits.
    const { provider, requests } = fakeProvider(300, (request) => request.sourceText.slice(0, Math.ceil(request.sourceText.length / 3)));
    const content = "word ".repeat(2000);
    const result = await summarizeInStages({ provider, content, render, maxOutputTokens: 100 });
    for (const r of requests) expect(estimateTokens(r.prompt) + 100).toBeLessThanOrEqual(300);
    // The first round's pieces are the content; more than one call follows them (a second round, then the last).
    let firstRound = 0;
    for (let covered = ""; covered.length < content.length; firstRound++) covered += requests[firstRound]!.sourceText;
    expect(
      requests
        .slice(0, firstRound)
        .map((r) => r.sourceText)
        .join(""),
    ).toBe(content);
    expect(firstRound).toBeGreaterThan(5);
    expect(result.calls).toBe(requests.length);
    expect(result.calls).toBeGreaterThan(firstRound + 1);
    expect(result.promptTokens).toBe(100 * requests.length);
  });

  test("a model that does not shrink the text: its partial summaries are cut, with a marker, instead of looping", async () => {
    const { provider, requests } = fakeProvider(300, (request) => request.sourceText);
    const content = "echo ".repeat(600);
    const result = await summarizeInStages({ provider, content, render, maxOutputTokens: 100 });
    const last = requests.at(-1)!;
    expect(last.sourceText).toMatch(/\[…the remaining partial summaries were cut to fit the model's context window\.\]$/);
    expect(estimateTokens(last.prompt) + 100).toBeLessThanOrEqual(300);
    expect(result.text).toBe(last.sourceText);
    expect(result.calls).toBe(requests.length);
  });

  test("a template that leaves no room for any text is LLM_REJECTED, without calls", async () => {
    const { provider, requests } = fakeProvider(100);
    const bigTemplate = (content: string) => `${"instructions ".repeat(40)}${content}`;
    await expect(summarizeInStages({ provider, content: "x".repeat(1000), render: bigTemplate, maxOutputTokens: 10 })).rejects.toMatchObject({
      code: "LLM_REJECTED",
      retryable: false,
    });
    expect(requests).toHaveLength(0);
  });

  test("with the extractive provider and a small context window: a real map-reduce ends in verbatim sentences", async () => {
    const provider = createExtractiveProvider({ contextTokens: 400 });
    const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 100 });
    expect(result.calls).toBeGreaterThan(2);
    expect(result.provider).toBe("extractive");
    for (const sentence of result.text.split(/(?<=\.) /)) expect(longDocument).toContain(sentence);
  });

  test("with the OpenAI client and a local server: one request per call, prompts within the context", async () => {
    const server = await startFakeLlmServer((request, index) => ({
      json: openAiAnswer(`Point ${index + 1}.`, {
        prompt_tokens: estimateTokens(String((request.body as { messages: Array<{ content: string }> }).messages[0]!.content)),
        completion_tokens: 2,
      }),
    }));
    try {
      const provider = createOpenAiProvider({ baseUrl: server.url, model: "gpt-test", contextTokens: 500 });
      const result = await summarizeInStages({ provider, content: longDocument, render, maxOutputTokens: 50 });
      expect(server.requests).toHaveLength(result.calls);
      expect(result.calls).toBeGreaterThan(2);
      const prompts = server.requests.map((r) => (r.body as { messages: Array<{ content: string }> }).messages[0]!.content);
      for (const prompt of prompts) expect(estimateTokens(prompt) + 50).toBeLessThanOrEqual(500);
      expect(result.promptTokens).toBe(prompts.reduce((sum, prompt) => sum + estimateTokens(prompt), 0));
      expect(result.completionTokens).toBe(2 * result.calls);
      expect(result.text).toBe(`Point ${result.calls}.`);
    } finally {
      await server.close();
    }
  });
});
