// The README's GraphQL examples are part of the documentation users copy: each one must parse and validate against
// the committed schema.graphql (which another test keeps equal to the generated schema). "…" stands for an id.
// The docs link only inside the repository, and the example document gives a real summary.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { buildSchema, Kind, parse, validate, visit } from "postgraphile/graphql";
import { createExtractiveProvider, emptySummary } from "../../lib/llm/extractive.ts";

const schema = buildSchema(readFileSync("schema.graphql", "utf8"));
// The README and every docs/*.md: all their GraphQL examples validate and all their links resolve.
const docs = ["README.md", "deploy/README.md", ...readdirSync("docs").map((f) => `docs/${f}`)].filter((f) => f.endsWith(".md"));
const blocks = docs.flatMap((file) => [...readFileSync(file, "utf8").matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!));

test("the README has GraphQL examples (so the check below is not vacuous)", () => {
  expect(blocks.length).toBeGreaterThanOrEqual(5);
});

test.each(blocks.flatMap((block) => splitOperations(block)).map((op) => [op.split("\n")[0]!.slice(0, 80), op]))("%s", (_name, operation) => {
  const document = parse(operation.replaceAll('"…"', '"00000000-0000-0000-0000-000000000000"'));
  expect(validate(schema, document).map((e) => e.message)).toEqual([]);
});

/** A block holds several operations, each starting at a line that begins with `{`, query, mutation or subscription. */
function splitOperations(block: string): string[] {
  const operations: string[] = [];
  for (const line of block.split("\n")) {
    if (/^(\{|query\b|mutation\b|subscription\b)/.test(line)) operations.push(line);
    else if (operations.length > 0) operations[operations.length - 1] += `\n${line}`;
  }
  return operations.map((op) => op.replace(/\s{2,}#.*$/gm, "").trim()).filter(Boolean);
}

// The repository stands alone: its docs link only to files inside it, never to a design document next to it.
test.each(docs)("%s links only to files and #anchors inside the repository", (file) => {
  const text = readFileSync(file, "utf8");
  expect(text).not.toMatch(/\.\.\/shared|DESIGN\.md/);
  // Code (fenced blocks and `spans`) is not Markdown: a regular expression like `[a-z](?:…)` there is no link.
  const prose = text.replace(/```[\s\S]*?```/g, "").replace(/`[^`\n]*`/g, "");
  const targets = [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^(https?:|mailto:)/.test(t));
  for (const target of targets) {
    const [pathPart, anchor] = target.split("#");
    const path = pathPart ? resolve(dirname(file), pathPart) : resolve(file);
    expect([target, path.startsWith(resolve("."))]).toEqual([target, true]);
    expect([target, existsSync(path)]).toEqual([target, true]);
    if (anchor !== undefined && path.endsWith(".md")) expect([target, anchorsOf(readFileSync(path, "utf8")).has(anchor)]).toEqual([target, true]);
  }
});

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (fenced code skipped). */
function anchorsOf(markdown: string): Set<string> {
  const prose = markdown.replace(/```[\s\S]*?```/g, "");
  return new Set(
    [...prose.matchAll(/^#+ (.+)$/gm)].map((m) =>
      m[1]!
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\- _]/gu, "")
        .replaceAll(" ", "-"),
    ),
  );
}

test("the createDocument example's content summarizes to sentences with the offline default provider", async () => {
  const create = blocks.flatMap((block) => splitOperations(block)).find((op) => op.includes("createDocument("));
  let content: string | null = null;
  visit(parse(create!), {
    ObjectField(node) {
      if (node.name.value === "content" && node.value.kind === Kind.STRING) content = node.value.value;
    },
  });
  expect(content).not.toBeNull();
  const { text } = await createExtractiveProvider().complete({ prompt: `Summarize: ${content!}`, sourceText: content!, maxOutputTokens: 256 });
  expect(text).not.toBe(emptySummary);
  expect(text.length).toBeGreaterThan(20);
});
