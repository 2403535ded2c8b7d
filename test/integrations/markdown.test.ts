// The Markdown model both publishers and importers share: inline marks (CommonMark emphasis rules for the subset),
// blocks, rendering with the escapes that keep text text, stable round trips, unsafe links dropped, and hostile
// input (deep nesting, delimiter floods) handled in bounded time.
import {
  normalizeSpans,
  parseInline,
  parseMarkdown,
  renderInline,
  renderMarkdown,
  safeHref,
  span,
  type MdBlock,
  type Span,
} from "../../lib/integrations/formats/markdown.ts";

const roundTrip = (markdown: string) => renderMarkdown(parseMarkdown(markdown));

test("inline marks: bold, italic, strikethrough, code, links, and their nesting", () => {
  expect(parseInline("**b** *i* _u_ ~~s~~ `c` [l](https://x.test/a)")).toEqual([
    span("b", { bold: true }),
    span(" "),
    span("i", { italic: true }),
    span(" "),
    span("u", { italic: true }),
    span(" "),
    span("s", { strike: true }),
    span(" "),
    span("c", { code: true }),
    span(" "),
    span("l", { href: "https://x.test/a" }),
  ]);
  expect(parseInline("***both*** **a*b*** [**x** y](https://x.test)")).toEqual([
    span("both", { bold: true, italic: true }),
    span(" "),
    span("a", { bold: true }),
    span("b", { bold: true, italic: true }),
    span(" "),
    span("x", { bold: true, href: "https://x.test/" }),
    span(" y", { href: "https://x.test/" }),
  ]);
});

test("CommonMark details: intraword underscores, lone asterisks, escapes, entities, code spans with backticks", () => {
  expect(parseInline("snake_case_name and 2 * 3 * 4")).toEqual([span("snake_case_name and 2 * 3 * 4")]);
  expect(parseInline("\\*not\\* &amp; &lt;b&gt; &#x41;&#66;")).toEqual([span("*not* & <b> AB")]);
  expect(parseInline("`` a ` b `` and `unclosed")).toEqual([span("a ` b", { code: true }), span(" and `unclosed")]);
  expect(parseInline("*a **b** c*")).toEqual([span("a ", { italic: true }), span("b", { bold: true, italic: true }), span(" c", { italic: true })]);
});

test("line breaks: a backslash or two trailing spaces break the line, a plain newline is a space", () => {
  expect(parseInline("one\\\ntwo  \nthree\nfour")).toEqual([span("one\ntwo\nthree four")]);
});

test("links: only http, https and mailto targets survive; images keep their alt text", () => {
  expect(parseInline("[a](javascript:alert(1)) [b](JaVaScRiPt:x) [c](data:text/html,x) [d](/relative) [e](mailto:x@y.test)")).toEqual([
    span("a b c d "),
    span("e", { href: "mailto:x@y.test" }),
  ]);
  expect(parseInline("![diagram](https://x.test/d.png) <https://auto.test/p>")).toEqual([
    span("diagram "),
    span("https://auto.test/p", { href: "https://auto.test/p" }),
  ]);
  expect(safeHref(" https://x.test/a b ")).toBe("https://x.test/a%20b");
  expect(safeHref("java\tscript:alert(1)")).toBeNull();
  expect(safeHref("vbscript:x")).toBeNull();
});

test("blocks: headings (ATX and setext), paragraphs, lists with tasks and nesting, code, quotes, divider, table, comment", () => {
  const markdown = [
    "# One",
    "Two",
    "---",
    "text *here*",
    "- a",
    "  1. nested",
    "- [x] done",
    "- [ ] todo",
    "",
    "```python",
    "print(1)",
    "```",
    "",
    "    indented code",
    "",
    "> quote",
    "> > inner",
    "",
    "***",
    "",
    "| h1 | h2 |",
    "|:---|---:|",
    "| a \\| b | `c` |",
    "",
    "<!-- note -->",
  ].join("\n");
  const blocks: MdBlock[] = [
    { type: "heading", level: 1, spans: [span("One")] },
    { type: "heading", level: 2, spans: [span("Two")] },
    { type: "paragraph", spans: [span("text "), span("here", { italic: true })] },
    {
      type: "list",
      ordered: false,
      items: [
        { spans: [span("a")], checked: null, blocks: [{ type: "list", ordered: true, items: [{ spans: [span("nested")], checked: null, blocks: [] }] }] },
        { spans: [span("done")], checked: true, blocks: [] },
        { spans: [span("todo")], checked: false, blocks: [] },
      ],
    },
    { type: "code", language: "python", text: "print(1)" },
    { type: "code", language: "", text: "indented code" },
    {
      type: "quote",
      blocks: [
        { type: "paragraph", spans: [span("quote")] },
        { type: "quote", blocks: [{ type: "paragraph", spans: [span("inner")] }] },
      ],
    },
    { type: "divider" },
    {
      type: "table",
      rows: [
        [[span("h1")], [span("h2")]],
        [[span("a | b")], [span("c", { code: true })]],
      ],
    },
    { type: "comment", text: "note" },
  ];
  expect(parseMarkdown(markdown)).toEqual(blocks);
});

test("rendering escapes what would otherwise be syntax, so text stays text", () => {
  const text = "# not a heading *not emphasis* <script>x</script> [not](a link) 1. not a list a_b _c_ ~~x~~ &amp; |";
  const rendered = renderMarkdown([{ type: "paragraph", spans: [span(text)] }]);
  expect(rendered).toBe("\\# not a heading \\*not emphasis\\* \\<script>x\\</script> \\[not\\](a link) 1. not a list a_b \\_c\\_ \\~\\~x\\~\\~ \\&amp; |");
  expect(parseMarkdown(rendered)).toEqual([{ type: "paragraph", spans: [span(text)] }]);
  expect(renderMarkdown([{ type: "paragraph", spans: [span("- item-like\n1) numbered-like")] }])).toBe("\\- item-like\\\n1\\) numbered-like");
  expect(renderInline([span("a `tick` here", { code: true })])).toBe("``a `tick` here``");
  expect(renderInline([span("bold ", { bold: true }), span("text")])).toBe("**bold** text");
  expect(renderInline([span("x", { href: "https://x.test/a (b)" })])).toBe("[x](https://x.test/a%20%28b%29)");
});

test("round trips: rendered Markdown parses back to the same blocks, and rendering is stable", () => {
  const corpus = [
    "# Title\n\nSome **bold**, _italic_, ~~struck~~, `code` and [a link](https://example.com/x?a=1&b=2).",
    "- one\n- two\n  - nested **b**\n    - deeper\n- [x] done\n- [ ] open",
    "1. first\n2. second\n   ```sh\n   make\n   ```\n3. third",
    "> quoted *text*\\\n> next line\n>\n> - list in quote",
    "```\ncode with ``` inside\n```",
    "| a | b |\n| --- | --- |\n| 1 \\| 2 | **x** |",
    "***both*** then **a*b*** then *c **d***",
    "Line one\\\nline two with \\*stars\\* and \\_underscores\\_ and a_b",
    "---",
  ];
  for (const markdown of corpus) {
    const once = roundTrip(markdown);
    expect(parseMarkdown(once)).toEqual(parseMarkdown(markdown));
    expect(roundTrip(once)).toBe(once);
  }
  expect(roundTrip(corpus[0]!)).toBe(corpus[0]);
  expect(roundTrip(corpus[1]!)).toBe(corpus[1]);
});

test("property: any spans whose mark boundaries touch whitespace render to Markdown that parses back to them", () => {
  // Deterministic pseudo-random cases: words full of Markdown's special characters, every mark combination, code
  // spans and links, separated by spaces or line breaks that carry marks of their own. (Where a boundary falls
  // between punctuation and a letter, CommonMark cannot express emphasis at all, so such cases are not generated.)
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
  const words = ["a", "word", "é", "x-y", "*", "_", "`", "[x]", "~~", "#", "1.", "\\", "<b>", "a_b", "(c)", "it's", "50%"];
  // Per character: its marks; emphasis on whitespace is invisible, and spaces starting a line are not Markdown text.
  const characters = (spans: readonly Span[]) => {
    let lineStart = false;
    return spans.flatMap((s) =>
      [...s.text].flatMap((c) => {
        const dropped = lineStart && c === " ";
        lineStart = c === "\n" || (lineStart && c === " ");
        if (dropped) return [];
        return [!s.code && !c.trim() ? `${c}:${s.href}` : `${c}:${s.bold}${s.italic}${s.strike}${s.code}${s.href}`];
      }),
    );
  };
  for (let n = 0; n < 3_000; n++) {
    const spans: Span[] = [];
    const count = 1 + Math.floor(random() * 6);
    for (let k = 0; k < count; k++) {
      const marks = {
        bold: random() < 0.4,
        italic: random() < 0.4,
        strike: random() < 0.25,
        code: random() < 0.15,
        href: random() < 0.15 ? "https://x.test/" : null,
      };
      spans.push(span(!marks.code && random() < 0.3 ? `${pick(words)} ${pick(words)}` : pick(words), marks));
      if (k < count - 1)
        spans.push(span(random() < 0.1 ? "\n" : " ", { bold: random() < 0.3, italic: random() < 0.3, href: random() < 0.1 ? "https://x.test/" : null }));
    }
    const markdown = renderInline(spans);
    expect({ markdown, spans: characters(parseInline(markdown)) }).toEqual({ markdown, spans: characters(normalizeSpans(spans)) });
  }
});

test("hostile input: nesting is bounded and delimiter floods stay linear", () => {
  const deep = Array.from({ length: 2_000 }, (_, i) => `${"  ".repeat(i)}- level ${i}`).join("\n");
  const quotes = `${">".repeat(5_000)} deep`;
  const depth = (blocks: readonly MdBlock[]): number =>
    Math.max(
      0,
      ...blocks.map((b) => (b.type === "list" ? 1 + Math.max(0, ...b.items.map((i) => depth(i.blocks))) : b.type === "quote" ? 1 + depth(b.blocks) : 0)),
    );
  expect(depth(parseMarkdown(deep))).toBeLessThanOrEqual(18);
  expect(depth(parseMarkdown(quotes))).toBeLessThanOrEqual(18);
  // Each takes milliseconds when parsing is linear and minutes when it is quadratic; the bound leaves room for a busy machine.
  for (const flood of ["[".repeat(200_000), "[a](".repeat(100_000), "*a ".repeat(100_000), "`a ``b ".repeat(40_000), "<a ".repeat(100_000)]) {
    const started = performance.now();
    expect(typeof roundTrip(flood)).toBe("string");
    expect(performance.now() - started).toBeLessThan(10_000);
  }
});
