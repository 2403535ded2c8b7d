// Confluence storage format ↔ Markdown without a server: the XHTML elements and ac: macros pages use, unknown
// macros marked, well-formed escaped output, round trips, and hostile input — scripts, javascript: links in every
// disguise, malformed markup, absurd nesting and floods — neutralised in bounded time.
import { markdownToStorage, storageToMarkdown } from "../../lib/integrations/formats/confluence-storage.ts";

test("storage → Markdown: headings, inline marks, links, breaks, lists, code macro, quote, rule, table, tasks", () => {
  const storage = [
    "<h1>Title &amp; more</h1>",
    '<p>Hello <strong>bold <em>both</em></strong> and <code>x &lt; y</code> and <a href="https://example.com/a?b=1&amp;c=2">link</a>.<br/>Next&nbsp;line</p>',
    "<ul><li>one<ul><li>nested <s>old</s></li></ul></li><li><p>two</p></li></ul>",
    "<ol><li>first</li><li>second</li></ol>",
    '<ac:structured-macro ac:name="code" ac:schema-version="1"><ac:parameter ac:name="language">sql</ac:parameter>',
    "<ac:plain-text-body><![CDATA[select * from t where a < 3 && b > 2;]]></ac:plain-text-body></ac:structured-macro>",
    "<blockquote><p>quoted</p></blockquote><hr/>",
    "<table><tbody><tr><th>A</th><th>B</th></tr><tr><td>1 | 2</td><td><p>x</p><p>y</p></td></tr></tbody></table>",
    "<ac:task-list><ac:task><ac:task-id>1</ac:task-id><ac:task-status>complete</ac:task-status><ac:task-body>done it</ac:task-body></ac:task>",
    "<ac:task><ac:task-status>incomplete</ac:task-status><ac:task-body>not yet</ac:task-body></ac:task></ac:task-list>",
  ].join("\n");
  expect(storageToMarkdown(storage)).toBe(
    [
      "# Title & more",
      "Hello **bold _both_** and `x < y` and [link](https://example.com/a?b=1&c=2).\\\nNext line",
      "- one\n  - nested ~~old~~\n- two",
      "1. first\n2. second",
      "```sql\nselect * from t where a < 3 && b > 2;\n```",
      "> quoted",
      "---",
      "| A | B |\n| --- | --- |\n| 1 \\| 2 | x y |",
      "- [x] done it\n- [ ] not yet",
    ].join("\n\n"),
  );
});

test("storage → Markdown: layouts, panels, inline macros, page links, emoticons, images, unknown macros leave a marker", () => {
  const storage = [
    '<ac:layout><ac:layout-section ac:type="two_equal"><ac:layout-cell><p>left</p></ac:layout-cell><ac:layout-cell><p>right</p></ac:layout-cell></ac:layout-section></ac:layout>',
    '<ac:structured-macro ac:name="info"><ac:parameter ac:name="title">Careful</ac:parameter><ac:rich-text-body><p>Mind the <em>gap</em>.</p></ac:rich-text-body></ac:structured-macro>',
    '<p>Status: <ac:structured-macro ac:name="status"><ac:parameter ac:name="title">DONE</ac:parameter></ac:structured-macro> see <ac:link><ri:page ri:content-title="Other page" /></ac:link>',
    ' and <ac:link><ri:page ri:content-title="X" /><ac:plain-text-link-body><![CDATA[custom label]]></ac:plain-text-link-body></ac:link> <ac:emoticon ac:name="smile" ac:emoji-fallback="🙂" /></p>',
    '<ac:structured-macro ac:name="toc" />',
    '<ac:structured-macro ac:name="mystery--><script>"><ac:rich-text-body><p>kept body</p></ac:rich-text-body></ac:structured-macro>',
    '<p><ac:image ac:alt="diagram"><ri:attachment ri:filename="d.png" /></ac:image></p>',
    "<pre>  indented\n  pre</pre>",
    '<p><span style="text-decoration: line-through;">struck</span> <span style="font-weight: bold">heavy</span> <u>under</u> x<sup>2</sup></p>',
  ].join("");
  expect(storageToMarkdown(storage)).toBe(
    [
      "left",
      "right",
      "> **Careful**\n>\n> Mind the _gap_.",
      "Status: **DONE** see Other page and custom label 🙂",
      '<!-- confluence: macro "toc" not converted -->',
      '<!-- confluence: macro "mystery-script" not converted -->',
      "kept body",
      "diagram",
      "```\n  indented\n  pre\n```",
      "~~struck~~ **heavy** under x2",
    ].join("\n\n"),
  );
});

test("Markdown → storage: well-formed XHTML with every text and attribute escaped; CDATA split; tasks; code macro", () => {
  expect(
    markdownToStorage(
      '# T\n\nA & B <script>x</script> "q" [l](https://x.test/?a=1&b="2") [bad](javascript:x)\u0001\n\n- [ ] a\n- [x] b\n\nthen\n\n- mixed\n- [x] task\n\n```javascript\nif (a ]]> b) {}\n```\n\n> q\n\n| h | i |\n| --- | --- |\n| 1 | ~~2~~ |',
    ),
  ).toBe(
    [
      "<h1>T</h1>",
      '<p>A &amp; B &lt;script&gt;x&lt;/script&gt; &quot;q&quot; <a href="https://x.test/?a=1&amp;b=%222%22">l</a> bad</p>',
      "<ac:task-list><ac:task><ac:task-status>incomplete</ac:task-status><ac:task-body>a</ac:task-body></ac:task>",
      "<ac:task><ac:task-status>complete</ac:task-status><ac:task-body>b</ac:task-body></ac:task></ac:task-list>",
      "<p>then</p>",
      "<ul><li>mixed</li><li>[x] task</li></ul>",
      '<ac:structured-macro ac:name="code" ac:schema-version="1"><ac:parameter ac:name="language">js</ac:parameter>',
      "<ac:plain-text-body><![CDATA[if (a ]]]]><![CDATA[> b) {}]]></ac:plain-text-body></ac:structured-macro>",
      "<blockquote><p>q</p></blockquote>",
      '<table><tbody><tr><th>h</th><th>i</th></tr><tr><td>1</td><td><span style="text-decoration: line-through;">2</span></td></tr></tbody></table>',
    ].join(""),
  );
});

test("round trips: Markdown → storage → Markdown keeps the supported subset", () => {
  const corpus = [
    "# H1\n\n## H2\n\n###### H6",
    "Text with **bold**, _italic_, ~~strike~~, `code`, [links](https://example.com/p?q=1) and a\\\nline break.",
    "- one\n  - two\n    - three\n- four",
    "1. first\n2. second\n   1. sub",
    "- [x] done\n- [ ] todo",
    "> a quote\n>\n> - with a list",
    "```sql\nselect 1 where a < b;\n```",
    "---",
    "| a | b |\n| --- | --- |\n| 1 | **2** |",
    "Escapes stay text: \\*not bold\\*, \\<b>, a_b, \\[x\\]",
  ];
  for (const markdown of corpus) expect(storageToMarkdown(markdownToStorage(markdown))).toBe(markdown);
});

test("hostile storage: scripts and styles dropped, javascript: links in any disguise neutralised, nothing executable kept", () => {
  const storage = [
    "<p>before<script>alert(1)</script><SCRIPT type='x'>alert(2)</SCRIPT><style>p{}</style>after</p>",
    '<p><a href="javascript:alert(3)">a</a> <a href="JaVaScRiPt:alert(4)">b</a> <a href="java&#x09;script:alert(5)">c</a>',
    ' <a href="&#106;avascript:alert(6)">d</a> <a href=" javascript:alert(7)">e</a> <a href="data:text/html,x">f</a> <a href="vbscript:x">g</a></p>',
    '<p><img src="x" onerror="alert(8)"/><iframe src="https://evil.test"></iframe><svg onload="alert(9)"><script>alert(10)</script></svg>',
    '&lt;script&gt;alert(11)&lt;/script&gt; <b onclick="alert(12)">bold</b></p>',
  ].join("");
  const markdown = storageToMarkdown(storage);
  expect(markdown).toBe("beforeafter\n\na b c d e f g\n\n\\<script>alert(11)\\</script> **bold**");
  expect(markdown).not.toMatch(/javascript|vbscript|data:|onerror|onclick|iframe|alert\([0-9]\)/i);
});

test("malformed storage is read tolerantly and never throws", () => {
  const cases: Array<[string, string]> = [
    ["<p>unclosed <b>bold", "unclosed **bold**"],
    // A lone "<" is text; "<d" opens a tag (named "d<", as a browser reads it), which swallows the rest of the line.
    ["<p>a < b and c<d</p>", "a \\< b and c"],
    ["</p></div>stray closers<p>x", "stray closers\n\nx"],
    ["<!-- never closed <p>hidden</p>", ""],
    ["<p>cdata <![CDATA[a < b", "cdata a \\< b"],
    // An unterminated attribute value runs to the end of the page, as in a browser: nothing of it is text.
    ['<p a="unterminated>text</p>', ""],
    // An <li> closes the open one, as in HTML: siblings, not a nested list.
    ["<ul><li>one<li>two</ul>", "- one\n- two"],
    ["<p>&bogus; &#0; &#xD800; &#x1F600;</p>", "\\&bogus; \uFFFD \uFFFD 😀"],
  ];
  for (const [storage, markdown] of cases) expect(storageToMarkdown(storage)).toBe(markdown);
});

test("absurd nesting is bounded and floods of markup stay linear", () => {
  const lists = `${"<ul><li>".repeat(10_000)}deep${"</li></ul>".repeat(10_000)}`;
  const markdown = storageToMarkdown(lists);
  expect(markdown).toContain("deep");
  expect(markdown.split("\n").length).toBeLessThan(40);
  expect(storageToMarkdown(`${"<div>".repeat(100_000)}x`)).toBe("x");
  // Each takes milliseconds when the tokenizer is linear and minutes when it is quadratic; the bound leaves room for a busy machine.
  for (const flood of ['<a b="'.repeat(50_000), "<".repeat(200_000), "</a".repeat(100_000), "<script>".repeat(50_000), "<b>".repeat(100_000)]) {
    const started = performance.now();
    expect(typeof storageToMarkdown(flood)).toBe("string");
    expect(performance.now() - started).toBeLessThan(10_000);
  }
});
