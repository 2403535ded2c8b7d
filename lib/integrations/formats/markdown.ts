// The Markdown both publishers read and both importers write, as one small model: blocks (headings, paragraphs,
// lists with task items, fenced code, quotes, dividers, GFM tables, comments) holding runs of text with marks
// (bold, italic, strikethrough, code, link). Notion's rich text is exactly such runs, and Confluence's storage
// format maps onto them too, so Notion → Markdown, storage → Markdown, Markdown → Notion blocks and Markdown →
// storage all go through this model. markdown-it parses (CommonMark, GFM tables and strikethrough) and never
// fails: anything outside the model is text. The renderer is our own, written to CommonMark's rules so that what
// it writes parses back to the same model. Links keep only http, https and mailto targets, so a `javascript:` URL
// can never reach an output.
import MarkdownIt from "markdown-it";

/** A run of text and its marks. `href` is a checked http(s)/mailto URL, or null. */
export interface Span {
  readonly text: string;
  readonly bold: boolean;
  readonly italic: boolean;
  readonly strike: boolean;
  readonly code: boolean;
  readonly href: string | null;
}

export interface ListItem {
  /** The item's first paragraph. */
  readonly spans: readonly Span[];
  /** True/false for a task item (`- [x]` / `- [ ]`), null for a plain one. */
  readonly checked: boolean | null;
  /** What follows the first paragraph: nested lists, code, further paragraphs. */
  readonly blocks: readonly MdBlock[];
}

export type MdBlock =
  | { readonly type: "heading"; readonly level: 1 | 2 | 3 | 4 | 5 | 6; readonly spans: readonly Span[] }
  | { readonly type: "paragraph"; readonly spans: readonly Span[] }
  | { readonly type: "list"; readonly ordered: boolean; readonly items: readonly ListItem[] }
  | { readonly type: "code"; readonly language: string; readonly text: string }
  | { readonly type: "quote"; readonly blocks: readonly MdBlock[] }
  | { readonly type: "divider" }
  /** rows[0] is the header row; every row has the header's number of cells. */
  | { readonly type: "table"; readonly rows: readonly (readonly (readonly Span[])[])[] }
  /** An HTML comment: markers for content a conversion left out. Publishers skip them. */
  | { readonly type: "comment"; readonly text: string };

type Mark = "bold" | "italic" | "strike";

/** A span with the given text and marks (all off by default). */
export const span = (text: string, marks: Partial<Omit<Span, "text">> = {}): Span => ({
  text,
  bold: marks.bold ?? false,
  italic: marks.italic ?? false,
  strike: marks.strike ?? false,
  code: marks.code ?? false,
  href: marks.href ?? null,
});

const sameMarks = (a: Span, b: Span) => a.bold === b.bold && a.italic === b.italic && a.strike === b.strike && a.code === b.code && a.href === b.href;

/** Adjacent spans with the same marks merged, empty ones dropped. */
export function normalizeSpans(spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const s of spans) {
    if (!s.text) continue;
    const last = out.at(-1);
    if (last && sameMarks(last, s)) out[out.length - 1] = { ...last, text: last.text + s.text };
    else out.push(s);
  }
  return out;
}

/** Leading and trailing whitespace (line breaks included) removed from a run of spans. */
export function trimSpans(spans: readonly Span[]): Span[] {
  const out = normalizeSpans(spans);
  while (out.length && !out[0]!.text.trimStart()) out.shift();
  while (out.length && !out.at(-1)!.text.trimEnd()) out.pop();
  if (out.length) {
    out[0] = { ...out[0]!, text: out[0]!.text.trimStart() };
    out[out.length - 1] = { ...out.at(-1)!, text: out.at(-1)!.text.trimEnd() };
  }
  return out;
}

/** The text of spans without marks. */
export const plainText = (spans: readonly Span[]) => spans.map((s) => s.text).join("");

/**
 * `url` if it is an absolute http, https or mailto URL (normalised as the WHATWG URL parser does, which also strips
 * the tabs and newlines that could hide a scheme), else null: relative links, `javascript:`, `data:` and the like.
 */
export function safeHref(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url.trim());
  } catch {
    return null;
  }
  return parsed.protocol === "http:" || parsed.protocol === "https:" || parsed.protocol === "mailto:" ? parsed.href : null;
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing: markdown-it (CommonMark with GFM tables and strikethrough) reads the text; its tokens become the model

/** Nesting (lists in lists, quotes in quotes) deeper than this is read as plain paragraphs. */
const maxNesting = 16;

const parser = new MarkdownIt("default", {
  // HTML is recognised only so that comments become comment blocks; every other tag is kept as text.
  html: true,
  linkify: false,
  typographer: false,
  // markdown-it stops here (a list level costs two: the list and its item) and drops what is nested deeper; from
  // maxNesting on, the model keeps the text as flat paragraphs, so only text below ~32 list levels is lost.
  maxNesting: 64,
});
// Every link target is judged by safeHref instead: a refused one keeps its text and loses its target, rather than
// staying as literal `[text](javascript:…)` the way markdown-it's own check leaves it.
parser.validateLink = () => true;
parser.normalizeLink = (url) => url;

type Token = ReturnType<typeof parser.parse>[number];

/** The spans of one paragraph's (or heading's, or cell's) Markdown text. */
export function parseInline(text: string): Span[] {
  return normalizeSpans(spansOf(parser.parseInline(text, {})[0]?.children ?? []));
}

/** Inline tokens as spans: marks counted open and closed, links kept only when safeHref accepts them. */
function spansOf(tokens: readonly Token[]): Span[] {
  const out: Span[] = [];
  const level = { bold: 0, italic: 0, strike: 0 };
  const links: Array<string | null> = [];
  const push = (text: string, code = false) =>
    out.push(span(text, { bold: level.bold > 0, italic: level.italic > 0, strike: level.strike > 0, code, href: links.at(-1) ?? null }));
  for (const token of tokens) {
    switch (token.type) {
      case "text":
      case "html_inline":
        push(token.content);
        break;
      case "code_inline":
        push(token.content, true);
        break;
      case "softbreak":
        push(" ");
        break;
      case "hardbreak":
        push("\n");
        break;
      case "image":
        push(plainText(spansOf(token.children ?? [])));
        break;
      case "strong_open":
      case "strong_close":
        level.bold += token.nesting;
        break;
      case "em_open":
      case "em_close":
        level.italic += token.nesting;
        break;
      case "s_open":
      case "s_close":
        level.strike += token.nesting;
        break;
      case "link_open":
        links.push(links.at(-1) ?? safeHref(String(token.attrGet("href") ?? "")));
        break;
      case "link_close":
        links.pop();
        break;
      default:
        if (token.content) push(token.content);
    }
  }
  return out;
}

/** The blocks of a Markdown document. Never throws; unrecognised syntax is paragraph text. */
export function parseMarkdown(markdown: string): MdBlock[] {
  const tokens = parser.parse(markdown.replace(/\u0000/g, "\uFFFD"), {});
  return blocksOf(tokens, 0, tokens.length, 0);
}

/** The index just past the token that closes the one opened at `start`. */
function closing(tokens: readonly Token[], start: number): number {
  let depth = 0;
  for (let i = start; i < tokens.length; i++) {
    depth += tokens[i]!.nesting;
    if (depth === 0) return i + 1;
  }
  return tokens.length;
}

/** Content too deeply nested to keep its structure, as one paragraph of its text. */
function flat(tokens: readonly Token[], from: number, to: number): MdBlock[] {
  const words: string[] = [];
  for (let i = from; i < to; i++) {
    const token = tokens[i]!;
    if (token.type === "inline") words.push(plainText(spansOf(token.children ?? [])));
    else if (token.content) words.push(token.content);
  }
  const spans = trimSpans([span(words.join(" ").replace(/\s+/g, " "))]);
  return spans.length ? [{ type: "paragraph", spans }] : [];
}

const inlineAt = (tokens: readonly Token[], i: number) => trimSpans(spansOf(tokens[i]?.type === "inline" ? (tokens[i]!.children ?? []) : []));

function blocksOf(tokens: readonly Token[], from: number, to: number, depth: number): MdBlock[] {
  const blocks: MdBlock[] = [];
  for (let i = from; i < to;) {
    const token = tokens[i]!;
    const end = token.nesting === 1 ? closing(tokens, i) : i + 1;
    switch (token.type) {
      case "heading_open":
        blocks.push({ type: "heading", level: Number(token.tag.slice(1)) as 1 | 2 | 3 | 4 | 5 | 6, spans: inlineAt(tokens, i + 1) });
        break;
      case "paragraph_open": {
        const spans = inlineAt(tokens, i + 1);
        if (spans.length) blocks.push({ type: "paragraph", spans });
        break;
      }
      case "fence":
        blocks.push({ type: "code", language: token.info.trim().split(/\s+/)[0] ?? "", text: token.content.replace(/\n$/, "") });
        break;
      case "code_block":
        blocks.push({ type: "code", language: "", text: token.content.replace(/\n+$/, "") });
        break;
      case "hr":
        blocks.push({ type: "divider" });
        break;
      case "html_block": {
        const comment = /^\s*<!--([\s\S]*?)(?:-->[\s\S]*)?$/.exec(token.content);
        if (comment) blocks.push({ type: "comment", text: comment[1]!.trim() });
        else {
          const spans = trimSpans([span(token.content.replace(/\s+/g, " "))]);
          if (spans.length) blocks.push({ type: "paragraph", spans });
        }
        break;
      }
      case "blockquote_open":
        blocks.push({ type: "quote", blocks: depth < maxNesting ? blocksOf(tokens, i + 1, end - 1, depth + 1) : flat(tokens, i + 1, end - 1) });
        break;
      case "bullet_list_open":
      case "ordered_list_open":
        blocks.push({ type: "list", ordered: token.type === "ordered_list_open", items: itemsOf(tokens, i + 1, end - 1, depth) });
        break;
      case "table_open":
        blocks.push(tableOf(tokens, i + 1, end - 1));
        break;
    }
    i = end;
  }
  return blocks;
}

function itemsOf(tokens: readonly Token[], from: number, to: number, depth: number): ListItem[] {
  const items: ListItem[] = [];
  for (let i = from; i < to;) {
    const end = closing(tokens, i);
    if (tokens[i]!.type === "list_item_open") items.push(itemOf(tokens, i + 1, end - 1, depth));
    i = end;
  }
  return items;
}

function itemOf(tokens: readonly Token[], from: number, to: number, depth: number): ListItem {
  const blocks = depth < maxNesting ? blocksOf(tokens, from, to, depth + 1) : flat(tokens, from, to);
  const [first, ...rest] = blocks;
  if (first?.type !== "paragraph") return { spans: [], checked: null, blocks };
  // A task item: its first paragraph starts with "[ ] " or "[x] " (written as text, not as a link).
  const task = /^\[([ xX])\](?: +|$)/.exec(first.spans[0]?.text ?? "");
  if (!task || first.spans[0]!.code || first.spans[0]!.href) return { spans: first.spans, checked: null, blocks: rest };
  const spans = trimSpans([{ ...first.spans[0]!, text: first.spans[0]!.text.slice(task[0].length) }, ...first.spans.slice(1)]);
  return { spans, checked: task[1] !== " ", blocks: rest };
}

/** A GFM table: rows[0] the header; markdown-it already gives every row the header's number of cells. */
function tableOf(tokens: readonly Token[], from: number, to: number): MdBlock {
  const rows: Span[][][] = [];
  for (let i = from; i < to; i++) {
    const token = tokens[i]!;
    if (token.type === "tr_open") rows.push([]);
    else if (token.type === "th_open" || token.type === "td_open") rows.at(-1)?.push(inlineAt(tokens, i + 1));
  }
  return { type: "table", rows };
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

const markToken: Record<Mark, string> = { strike: "~~", bold: "**", italic: "_" };
const markOrder: readonly Mark[] = ["strike", "bold", "italic"];

function codeSpan(text: string): string {
  const body = text.replace(/\n/g, " ");
  const longest = Math.max(0, ...(body.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  const pad = body.startsWith("`") || body.endsWith("`") || (body.startsWith(" ") && body.endsWith(" ") && body.trim()) ? " " : "";
  return `${fence}${pad}${body}${pad}${fence}`;
}

const isAlphanumeric = (c: string | undefined) => c !== undefined && /[\p{L}\p{N}]/u.test(c);

function escapeText(text: string, inCell: boolean): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if ("\\`*[]<~".includes(c)) out += `\\${c}`;
    else if (c === "_") out += isAlphanumeric(text[i - 1]) && isAlphanumeric(text[i + 1]) ? c : "\\_";
    else if (c === "&" && /^&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);/.test(text.slice(i))) out += "\\&";
    else if (c === "|" && inCell) out += "\\|";
    else if (c === "\n") out += inCell ? " " : "\\\n";
    else out += c;
  }
  return out;
}

/**
 * A whitespace-only span keeps a mark only when both neighbours carry it too (then no delimiter touches it);
 * otherwise `** **` would be emitted, which Markdown does not read as emphasis.
 */
function settleWhitespace(spans: readonly Span[]): Span[] {
  return normalizeSpans(
    spans.map((s, k) => {
      if (s.code || s.text.trim()) return s;
      const [before, after] = [spans[k - 1], spans[k + 1]];
      const kept = (mark: Mark) => s[mark] && before?.[mark] === true && after?.[mark] === true;
      return { ...s, bold: kept("bold"), italic: kept("italic"), strike: kept("strike") };
    }),
  );
}

// Whitespace, including a rendered hard break (backslash, newline), next to where delimiters go.
const trailingSpace = /(?:[ \t]|\\\n)+$/;
const leadingSpace = /^(?:[ \t]|\\\n)+/;

/** The marks that close and open before a span (or after the last one). */
interface Boundary {
  readonly close: Mark[];
  readonly open: Mark[];
}

/**
 * Spans with their marks as delimiters, opened and closed as the marks change from span to span. Two CommonMark
 * rules shape it. A delimiter may not sit on the inner side of whitespace (`** a**` is not bold), so whitespace at
 * a boundary with delimiters moves outside them. And adjacent delimiter characters merge into one run (`*` + `**`
 * reads as `***`), so italic is written `_`, which never merges with bold's `**` or strikethrough's `~~`, except
 * inside a word, where only `*` works.
 */
function renderMarked(spans: readonly Span[], inCell: boolean): string {
  const list = settleWhitespace(spans);
  const boundaries: Boundary[] = [];
  const stack: Mark[] = [];
  for (const s of list) {
    const close: Mark[] = [];
    while (stack.some((mark) => !s[mark])) close.push(stack.pop()!);
    const open = markOrder.filter((mark) => s[mark] && !stack.includes(mark));
    stack.push(...open);
    boundaries.push({ close, open });
  }
  boundaries.push({ close: stack.reverse(), open: [] });
  const texts = list.map((s) => (s.code ? codeSpan(s.text) : escapeText(s.text, inCell)));
  // Whitespace moved out of the texts to the delimiters' outer side: [trailing of the text before, leading of the one after].
  const moved = boundaries.map(({ close, open }, k) => {
    const before = close.length && k > 0 && !list[k - 1]!.code ? (trailingSpace.exec(texts[k - 1]!)?.[0] ?? "") : "";
    const after = open.length && k < list.length && !list[k]!.code ? (leadingSpace.exec(texts[k]!)?.[0] ?? "") : "";
    return before + after;
  });
  const word = (c: string | undefined) => isAlphanumeric(c);
  // An italic run whose delimiter group touches a letter or digit on its outer side (no other delimiter or space in
  // between) is inside a word, where `_` cannot open or close: it needs `*`.
  const starItalic = new Set<number>();
  let openedAt = -1;
  boundaries.forEach(({ close, open }, k) => {
    if (close.includes("italic") && openedAt >= 0) {
      const outerAfter = !moved[k] && !open.length ? texts[k]?.[0] : undefined;
      const outerBefore = !boundaries[openedAt]!.close.length && !moved[openedAt] ? texts[openedAt - 1]?.at(-1) : undefined;
      if (word(outerAfter) || word(outerBefore)) starItalic.add(openedAt);
    }
    if (open.includes("italic")) openedAt = k;
  });
  let out = "";
  let italicToken = "_";
  boundaries.forEach(({ close, open }, k) => {
    const token = (mark: Mark) => (mark === "italic" ? italicToken : markToken[mark]);
    const closing = close.map(token).join("");
    if (open.includes("italic")) italicToken = starItalic.has(k) ? "*" : "_";
    const opening = open.map(token).join("");
    const text = texts[k] ?? "";
    const lead = opening && !list[k]?.code ? (leadingSpace.exec(text)?.[0] ?? "") : "";
    if (closing) out = out.slice(0, out.length - (moved[k]!.length - lead.length)) + closing + moved[k]!.slice(0, moved[k]!.length - lead.length);
    out += lead + opening + text.slice(lead.length);
  });
  return out;
}

const encodeHref = (href: string) => href.replace(/[ ()<>]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/** Spans (merged as normalizeSpans does) in consecutive runs that share one link target; `href` null: no link. */
export function linkRuns(spans: readonly Span[]): Array<{ readonly href: string | null; readonly spans: Span[] }> {
  const pieces = normalizeSpans(spans);
  const runs: Array<{ readonly href: string | null; readonly spans: Span[] }> = [];
  for (let i = 0; i < pieces.length;) {
    const href = pieces[i]!.href;
    let j = i + 1;
    while (j < pieces.length && pieces[j]!.href === href) j++;
    runs.push({ href, spans: pieces.slice(i, j) });
    i = j;
  }
  return runs;
}

/** Spans as Markdown inline text. In a table cell, `|` is escaped and line breaks become spaces. */
export function renderInline(spans: readonly Span[], inCell = false): string {
  return linkRuns(spans)
    .map(({ href, spans: run }) => (href ? `[${renderMarked(run, inCell) || escapeText(href, inCell)}](${encodeHref(href)})` : renderMarked(run, inCell)))
    .join("");
}

/** A first character that would make a line something other than paragraph text, escaped. */
function escapeLineStart(line: string): string {
  const ordered = /^(\d{1,9})([.)])/.exec(line);
  if (ordered) return `${ordered[1]}\\${ordered[2]}${line.slice(ordered[0].length)}`;
  return /^[#>+=|-]/.test(line) ? `\\${line}` : line;
}

const paragraphText = (spans: readonly Span[]) => renderInline(spans).split("\n").map(escapeLineStart).join("\n");

const indent = (text: string, by: number) =>
  text
    .split("\n")
    .map((line) => (line ? " ".repeat(by) + line : line))
    .join("\n");

function renderBlock(block: MdBlock): string {
  switch (block.type) {
    case "heading":
      return `${"#".repeat(block.level)} ${renderInline(block.spans, true).replace(/^#/, "\\#")}`.trimEnd();
    case "paragraph":
      return paragraphText(block.spans);
    case "code": {
      const longest = Math.max(2, ...(block.text.match(/`+/g) ?? []).map((run) => run.length));
      const fence = "`".repeat(longest + 1);
      return `${fence}${block.language.replace(/[^\w#+.-]/g, "")}\n${block.text}${block.text ? "\n" : ""}${fence}`;
    }
    case "quote":
      return renderMarkdown(block.blocks)
        .split("\n")
        .map((line) => (line ? `> ${line}` : ">"))
        .join("\n");
    case "divider":
      return "---";
    case "table": {
      const [header, ...rows] = block.rows;
      if (!header?.length) return "";
      const row = (cells: readonly (readonly Span[])[]) => `| ${cells.map((cell) => renderInline(cell, true)).join(" | ")} |`;
      return [row(header), `|${header.map(() => " --- ").join("|")}|`, ...rows.map(row)].join("\n");
    }
    case "comment":
      return `<!-- ${block.text.replace(/-{2,}/g, "-").replace(/[<>]/g, "")} -->`;
    case "list":
      return block.items
        .map((item, index) => {
          const marker = block.ordered ? `${index + 1}. ` : "- ";
          const task = item.checked === null ? "" : item.checked ? "[x] " : "[ ] ";
          let text = marker + task + indent(paragraphText(item.spans), marker.length).trimStart();
          for (const child of item.blocks) {
            const rendered = renderBlock(child);
            if (rendered) text += (child.type === "list" ? "\n" : "\n\n") + indent(rendered, marker.length);
          }
          return text.trimEnd();
        })
        .join("\n");
  }
}

/** Blocks as Markdown: one blank line between blocks, no trailing newline. */
export function renderMarkdown(blocks: readonly MdBlock[]): string {
  return blocks
    .map(renderBlock)
    .filter((text) => text.trim())
    .join("\n\n");
}
