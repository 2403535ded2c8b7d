// The offline extractive provider: deterministic, sentences taken verbatim from the document, and the prompt's
// requests honoured (Quire's three global templates among them: five sentences, bullet points, action items),
// Markdown and Chinese/Japanese text read, empty and short texts handled, output within maxOutputTokens.
import { createExtractiveProvider, emptySummary, noActionItems } from "../../lib/llm/extractive.ts";
import type { CompletionRequest } from "../../lib/llm/provider.ts";

const report = [
  "The third quarter review covers revenue, costs, hiring and the product roadmap for the analytics platform.",
  "Revenue from the analytics platform grew by twenty percent compared with the second quarter.",
  "Most of the revenue growth came from enterprise customers who adopted the analytics platform this year.",
  "Operating costs rose slightly because cloud hosting for the analytics platform became more expensive.",
  "The office coffee machine was replaced in August.",
  "Hiring in engineering is behind plan, with four open positions still unfilled.",
  "Customer churn fell to its lowest level in two years thanks to better onboarding.",
  "The data center contract expires in March and has to be renegotiated.",
  "Alice must renew the data center contract by March 1.",
  "Bob needs to send the updated revenue forecast to the board by Friday.",
  "The team celebrated the launch with a dinner in September.",
  "Next quarter the analytics platform will add real-time dashboards for enterprise customers.",
];
const plain = report.join(" ");

// Quire's global templates (the seed data of migrations/committed/000001-quire.sql), rendered.
const title = "Q3 review";
const executiveSummary = (content: string) =>
  `Write an executive summary of the document "${title}" for the leadership of Acme. In at most five sentences, state the purpose, the main findings and what is decided or asked. Date: 2025-10-01.\n\n${content}`;
const keyPoints = (content: string) =>
  `List the key points of "${title}" as short bullet points, most important first, without repeating yourself.\n\n${content}`;
const actionItems = (content: string) =>
  `Extract every action item from "${title}": who does what, by when (if stated). Answer "No action items." if there are none.\n\n${content}`;

const provider = createExtractiveProvider();
const summarize = async (render: (content: string) => string, sourceText: string, maxOutputTokens = 1000) =>
  (await provider.complete({ prompt: render(sourceText), sourceText, maxOutputTokens })).text;

const sentencesOf = (text: string) => text.split(/(?<=[.!?])\s+/).filter(Boolean);

/** Every sentence is one of the document's, verbatim, and they come in the document's order. */
function expectVerbatimInOrder(sentences: readonly string[], source: string) {
  let from = -1;
  for (const sentence of sentences) {
    const at = source.indexOf(sentence, from + 1);
    expect(at).toBeGreaterThan(from);
    from = at;
  }
}

test("deterministic: the same request gives the same summary, from any instance; tokens are a quarter of the characters", async () => {
  const request: CompletionRequest = { prompt: executiveSummary(plain), sourceText: plain, maxOutputTokens: 500 };
  const first = await provider.complete(request);
  const second = await createExtractiveProvider().complete(request);
  expect(second.text).toBe(first.text);
  expect(first).toMatchObject({
    provider: "extractive",
    model: "extractive-v1",
    promptTokens: Math.ceil(request.prompt.length / 4),
    completionTokens: Math.ceil(first.text.length / 4),
  });
  expect(provider).toMatchObject({ name: "extractive", model: "extractive-v1", contextTokens: 1_000_000 });
  expect(createExtractiveProvider({ contextTokens: 5000 }).contextTokens).toBe(5000);
});

test("'in at most five sentences' (the executive summary template) gives five sentences of the document, in order", async () => {
  const sentences = sentencesOf(await summarize(executiveSummary, plain));
  expect(sentences).toHaveLength(5);
  expectVerbatimInOrder(sentences, plain);
  // Off-topic sentences (no term the document repeats) are not picked.
  expect(sentences).not.toContain("The office coffee machine was replaced in August.");
  expect(sentences).not.toContain("The team celebrated the launch with a dinner in September.");
});

test.each([
  ["Summarize in one sentence:", 1],
  ["Summarize this in two sentences.", 2],
  ["Give a 3-sentence summary.", 3],
  ["Use no more than 4 short sentences.", 4],
  ["Summarize in at most ten sentences.", 10],
])("%s → %d sentences", async (instruction, count) => {
  const sentences = sentencesOf(await summarize((content) => `${instruction}\n\n${content}`, plain));
  expect(sentences).toHaveLength(count);
  expectVerbatimInOrder(sentences, plain);
});

test("without a requested length: 20% of the sentences, at most five", async () => {
  expect(sentencesOf(await summarize((content) => `Summarize:\n\n${content}`, plain))).toHaveLength(2);
  const longer = [...report, ...report.map((s) => s.replace("The ", "Again, the ")), ...report.map((s) => `Also: ${s}`)].join(" ");
  expect(sentencesOf(await summarize((content) => `Summarize:\n\n${content}`, longer)).length).toBeLessThanOrEqual(5);
});

test("bullet points (the key points template): '- ' lines, each a sentence of the document", async () => {
  const lines = (await summarize(keyPoints, plain)).split("\n");
  expect(lines.length).toBeGreaterThanOrEqual(2);
  for (const line of lines) expect(line).toMatch(/^- \S/);
  expectVerbatimInOrder(
    lines.map((line) => line.slice(2)),
    plain,
  );
  const three = (await summarize((content) => `Summarize as three bullet points:\n\n${content}`, plain)).split("\n");
  expect(three).toHaveLength(3);
});

test("action items (the action items template): the sentences that ask for something, as bullets", async () => {
  const lines = (await summarize(actionItems, plain)).split("\n");
  expect(lines).toContain("- Alice must renew the data center contract by March 1.");
  expect(lines).toContain("- Bob needs to send the updated revenue forecast to the board by Friday.");
  expect(lines).not.toContain("- The office coffee machine was replaced in August.");
  expect(lines).not.toContain(`- ${report[1]}`);
  for (const line of lines) expect(line).toMatch(/^- /);
  expectVerbatimInOrder(
    lines.map((line) => line.slice(2)),
    plain,
  );
});

test("action items: 'No action items.' when nothing asks for anything", async () => {
  const facts = "The river is long. It flows through three countries. Many birds live along its banks. Fishing was common there in the past.";
  expect(await summarize(actionItems, facts)).toBe(noActionItems);
});

test("Markdown: headings, list markers, emphasis, links and code are gone from the summary; the prose is kept", async () => {
  const markdown = [
    "# Release notes",
    "",
    "The **new** release improves the [search engine](https://example.com/search) considerably.",
    "Search results now load twice as fast as before.",
    "",
    "## Changes",
    "",
    "- The search index is rebuilt every night.",
    "- Search filters remember their last `value` between sessions.",
    "* Old exports were removed.",
    "",
    "```sh",
    "npm run search -- --rebuild # search search search",
    "```",
    "",
    "> The search team thanks everyone who reported bugs.",
    "",
    "| Search | Speed |",
    "|---|---|",
  ].join("\n");
  const summary = await summarize((content) => `Summarize in five sentences.\n\n${content}`, markdown);
  expect(summary).not.toMatch(/[#*`>|[\]]|^- |\]\(|npm run/m);
  expect(summary).toContain("The new release improves the search engine considerably.");
  expect(sentencesOf(summary).length).toBeLessThanOrEqual(5);
  for (const sentence of sentencesOf(summary)) {
    expect([
      "The new release improves the search engine considerably.",
      "Search results now load twice as fast as before.",
      "The search index is rebuilt every night.",
      "Search filters remember their last value between sessions.",
      "Old exports were removed.",
      "The search team thanks everyone who reported bugs.",
    ]).toContain(sentence);
  }
});

test("sentences are not cut after abbreviations, initials or decimal points", async () => {
  const sentences = ["Dr. Smith and J. R. Jones measured 3.5 liters, e.g. in the lab.", "The lab is small.", "It is old.", "The lab needs repairs."];
  const text = sentences.join(" ");
  expect(await summarize((content) => `Summarize in four sentences.\n\n${content}`, text)).toBe(text);
  expect(sentences).toContain(await summarize((content) => `Summarize in one sentence.\n\n${content}`, text));
});

test("Chinese without spaces: sentences end at 。！？ and are joined without spaces", async () => {
  const chinese =
    "今天我们召开了项目会议。会议讨论了新产品的发布计划！新产品将在下个月发布。市场部需要准备新产品的宣传材料。开发团队必须在周五之前完成测试？最后，大家对新产品的发布计划达成了一致。";
  const summary = await summarize((content) => `Summarize in two sentences.\n\n${content}`, chinese);
  const sentences = summary.split(/(?<=[。！？])/);
  expect(sentences).toHaveLength(2);
  expect(summary).not.toContain(" ");
  expectVerbatimInOrder(sentences, chinese);
  expect(sentences.join("")).toBe(summary);
});

test("Japanese: sentences end at 。 and come from the document", async () => {
  const japanese =
    "本日はプロジェクト会議を開催しました。新製品の発売計画について議論しました。新製品は来月発売されます。マーケティング部は新製品の宣伝資料を準備します。";
  const summary = await summarize((content) => `Summarize in one sentence.\n\n${content}`, japanese);
  expect(summary).toMatch(/^[^。]+。$/);
  expect(japanese).toContain(summary);
});

test("empty text: a message saying there is nothing to summarize", async () => {
  for (const empty of ["", "   \n\n\t", "```\nconst onlyCode = true;\n```"]) {
    expect(await summarize((content) => `Summarize:\n\n${content}`, empty)).toBe(emptySummary);
  }
});

test("a short text is returned as it is", async () => {
  for (const short of ["Just one short line", "Two sentences. Exactly so.", "The plan is ready. Review it today. Then ship it!"]) {
    expect(await summarize(executiveSummary, short)).toBe(short);
  }
});

test("a requested word count is a limit", async () => {
  const summary = await summarize((content) => `Summarize in under 30 words.\n\n${content}`, plain);
  expect(summary.split(/\s+/).length).toBeLessThanOrEqual(30);
  expect(summary.length).toBeGreaterThan(0);
});

test("the output never exceeds maxOutputTokens (estimated), nor maxOutputTokens × 4 characters", async () => {
  for (const maxOutputTokens of [1, 2, 3, 5, 10, 25, 40, 100]) {
    for (const render of [executiveSummary, keyPoints, actionItems, (content: string) => content]) {
      for (const source of [plain, "", report.slice(0, 2).join(" "), "今天我们召开了项目会议。".repeat(20)]) {
        const { text, completionTokens } = await provider.complete({ prompt: render(source), sourceText: source, maxOutputTokens });
        expect(text.length).toBeLessThanOrEqual(maxOutputTokens * 4);
        expect(text.length).toBeGreaterThan(0);
        expect(completionTokens).toBeLessThanOrEqual(maxOutputTokens);
      }
    }
  }
});

test("requests in the document itself are not mistaken for the prompt's", async () => {
  const document = `${plain} Please list three bullet points of action items in one sentence.`;
  const summary = await summarize((content) => `Summarize:\n\n${content}`, document);
  expect(summary).not.toMatch(/^- /m);
  expect(sentencesOf(summary)).toHaveLength(3);
});

test("an aborted signal is LLM_CANCELLED", async () => {
  await expect(provider.complete({ prompt: "p", sourceText: plain, maxOutputTokens: 10, signal: AbortSignal.abort() })).rejects.toMatchObject({
    code: "LLM_CANCELLED",
  });
});
