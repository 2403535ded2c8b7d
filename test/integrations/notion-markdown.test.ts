// Notion blocks ↔ Markdown without a server: every supported block type and annotation read, unknown blocks
// marked, unsafe links dropped; Markdown turned into blocks Notion accepts (code languages from its list, rich text
// split at 2000 characters and 100 items, huge code split), and round trips through the publish format.
import { markdownToNotionBlocks, notionBlocksToMarkdown } from "../../lib/integrations/formats/notion-blocks.ts";

type Json = Record<string, unknown>;

/** A rich text item as Notion answers it. */
const rt = (content: string, annotations: Record<string, boolean> = {}, href: string | null = null) => ({
  type: "text",
  text: { content, link: href ? { url: href } : null },
  annotations: { bold: false, italic: false, strikethrough: false, underline: false, code: false, color: "default", ...annotations },
  plain_text: content,
  href,
});

let nextId = 0;
/** A block as read: `children` attached (null: it has children that were not read). */
const block = (type: string, data: Json, children: Json[] | null = [], extra: Json = {}): Json => ({
  object: "block",
  id: `block-${nextId++}`,
  type,
  has_children: children === null || children.length > 0,
  [type]: data,
  children,
  ...extra,
});

test("Notion blocks → Markdown: headings, annotations, lists, to-dos, toggles, quotes, callouts, code, tables, markers", () => {
  const blocks = [
    block("heading_1", { rich_text: [rt("Release notes")] }),
    block("paragraph", {
      rich_text: [
        rt("Read "),
        rt("this", { bold: true }),
        rt(" and "),
        rt("that", { italic: true, code: true }),
        rt(" "),
        rt("link", {}, "https://example.com/a"),
        rt(" "),
        rt("evil", {}, "javascript:alert(1)"),
        rt(" "),
        { type: "equation", equation: { expression: "e=mc^2" }, annotations: {}, plain_text: "e=mc^2", href: null },
        rt(" "),
        rt("gone", { strikethrough: true }),
      ],
    }),
    block("bulleted_list_item", { rich_text: [rt("first")] }, [block("bulleted_list_item", { rich_text: [rt("nested")] })]),
    block("bulleted_list_item", { rich_text: [rt("second")] }),
    block("numbered_list_item", { rich_text: [rt("one")] }),
    block("numbered_list_item", { rich_text: [rt("two")] }),
    block("to_do", { rich_text: [rt("done")], checked: true }),
    block("to_do", { rich_text: [rt("open")], checked: false }),
    block("toggle", { rich_text: [rt("Details")] }, [block("paragraph", { rich_text: [rt("hidden text")] })]),
    block("heading_3", { rich_text: [rt("Other")] }),
    block("quote", { rich_text: [rt("quoted")] }, [block("paragraph", { rich_text: [rt("inside")] })]),
    block("callout", { rich_text: [rt("Heads up")], icon: { type: "emoji", emoji: "💡" } }),
    block("code", { rich_text: [rt("const a = 1;\nconst b = 2;")], language: "typescript" }),
    block("code", { rich_text: [rt("x++;")], language: "c++" }),
    block("code", { rich_text: [rt("plain")], language: "plain text" }),
    block("divider", {}),
    block("table", { table_width: 2, has_column_header: true }, [
      block("table_row", { cells: [[rt("Name")], [rt("Value")]] }),
      block("table_row", { cells: [[rt("a|b")], [rt("1", { bold: true })]] }),
    ]),
    block("image", { type: "external", external: { url: "https://example.com/i.png" } }),
    block("child_page", { title: "Sub page" }, [], { has_children: true }),
    block("column_list", {}, [block("column", {}, [block("paragraph", { rich_text: [rt("in a column")] })])]),
    block("toggle", { rich_text: [rt("too deep")] }, null),
  ];
  expect(notionBlocksToMarkdown(blocks)).toBe(
    [
      "# Release notes",
      "Read **this** and _`that`_ [link](https://example.com/a) evil `e=mc^2` ~~gone~~",
      "- first\n  - nested\n- second",
      "1. one\n2. two",
      "- [x] done\n- [ ] open\n- Details\n\n  hidden text",
      "### Other",
      "> quoted\n>\n> inside",
      "> 💡 Heads up",
      "```typescript\nconst a = 1;\nconst b = 2;\n```",
      "```cpp\nx++;\n```",
      "```\nplain\n```",
      "---",
      "| Name | Value |\n| --- | --- |\n| a\\|b | **1** |",
      '<!-- notion: unsupported block "image" skipped -->',
      '<!-- notion: child page "Sub page" not included -->',
      "in a column",
      "- too deep\n\n  <!-- notion: nested content below the depth limit not included -->",
    ].join("\n\n"),
  );
});

test("Markdown → Notion blocks: the shapes the API takes, languages mapped onto Notion's list, comments dropped", () => {
  const blocks = markdownToNotionBlocks(
    "## Title\n\n**Bold** [link](https://x.test/)\n\n- a\n  - b\n- [x] c\n\n```ts\nlet x\n```\n\n```brainfuck\n+\n```\n\n> quote\n\n##### small\n\n---\n\n| h |\n| - |\n| v |\n\n<!-- marker -->",
  );
  const text = (content: string, marks: Json = {}, url: string | null = null) => ({
    type: "text",
    text: { content, link: url ? { url } : null },
    annotations: { bold: false, italic: false, strikethrough: false, underline: false, code: false, color: "default", ...marks },
  });
  const b = (type: string, data: Json) => ({ object: "block", type, [type]: data });
  expect(blocks).toEqual([
    b("heading_2", { rich_text: [text("Title")] }),
    b("paragraph", { rich_text: [text("Bold", { bold: true }), text(" "), text("link", {}, "https://x.test/")] }),
    b("bulleted_list_item", { rich_text: [text("a")], children: [b("bulleted_list_item", { rich_text: [text("b")] })] }),
    b("to_do", { rich_text: [text("c")], checked: true }),
    b("code", { rich_text: [text("let x")], language: "typescript" }),
    b("code", { rich_text: [text("+")], language: "plain text" }),
    b("quote", { rich_text: [text("quote")] }),
    b("heading_3", { rich_text: [text("small")] }),
    b("divider", {}),
    b("table", {
      table_width: 1,
      has_column_header: true,
      has_row_header: false,
      children: [b("table_row", { cells: [[text("h")]] }), b("table_row", { cells: [[text("v")]] })],
    }),
  ]);
});

test("Notion's size limits: text items ≤ 2000 characters (surrogate pairs kept whole), ≤ 100 items per block, huge code split", () => {
  const long = `${"a".repeat(1999)}😀${"b".repeat(2500)}`;
  const [paragraph] = markdownToNotionBlocks(long);
  const items = (paragraph!.paragraph as { rich_text: Array<{ text: { content: string } }> }).rich_text;
  expect(items.map((item) => item.text.content.length)).toEqual([1999, 2000, 502]);
  expect(items.map((item) => item.text.content).join("")).toBe(long);

  const many = Array.from({ length: 250 }, (_, i) => (i % 2 ? `**b${i}**` : `p${i}`)).join(" ");
  const split = markdownToNotionBlocks(many);
  const runs = split.map((one) => (one.paragraph as { rich_text: Array<{ text: { content: string } }> }).rich_text);
  expect(runs.map((run) => run.length)).toEqual([100, 100, 50]);
  expect(
    runs
      .flat()
      .map((item) => item.text.content)
      .join(""),
  ).toBe(many.replace(/\*\*/g, ""));

  const code = markdownToNotionBlocks(`\`\`\`\n${"x".repeat(100_000)}\n\`\`\``);
  expect(code).toHaveLength(3);
  for (const one of code) {
    const parts = (one.code as { rich_text: Array<{ text: { content: string } }> }).rich_text;
    expect(parts.every((part) => part.text.content.length <= 2000)).toBe(true);
    expect(parts.reduce((sum, part) => sum + part.text.content.length, 0)).toBeLessThanOrEqual(40_000);
  }

  const [linked] = markdownToNotionBlocks(`[too long](https://x.test/${"p".repeat(2100)})`);
  expect((linked!.paragraph as { rich_text: Array<{ text: { link: unknown } }> }).rich_text[0]!.text.link).toBeNull();
});

test("round trips: Markdown → Notion blocks → Markdown keeps the supported subset", () => {
  const corpus = [
    "# H1\n\n## H2\n\n### H3",
    "Text with **bold**, _italic_, ~~strike~~, `code`, [links](https://example.com/p?q=1) and a\\\nline break.",
    "- one\n  - two\n    - three\n- four",
    "1. first\n2. second\n   1. sub",
    "- [x] done\n- [ ] todo",
    "> a quote\n>\n> - with a list",
    "```python\nprint('hi')\n```",
    "---",
    "| a | b |\n| --- | --- |\n| 1 | **2** |",
  ];
  for (const markdown of corpus) expect(notionBlocksToMarkdown(markdownToNotionBlocks(markdown))).toBe(markdown);
});
