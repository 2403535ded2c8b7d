// The Markdown both publishers read and both importers write, as one small model: blocks (headings, paragraphs,
// lists with task items, fenced code, quotes, dividers, GFM tables, comments) holding runs of text with marks
// (bold, italic, strikethrough, code, link). Notion's rich text is exactly such runs, and Confluence's storage
// format maps onto them too, so Notion → Markdown, storage → Markdown, Markdown → Notion blocks and Markdown →
// storage all go through this model. The parser follows CommonMark where the subset needs it (emphasis flanking
// rules, code spans, escapes, lazy continuation) and never fails: anything it does not recognise is text. Links
// keep only http, https and mailto targets, so a `javascript:` URL can never reach an output.

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

const namedEntities: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: "\u00a0",
  shy: "",
  hellip: "…",
  mdash: "—",
  ndash: "–",
  lsquo: "‘",
  rsquo: "’",
  ldquo: "“",
  rdquo: "”",
  laquo: "«",
  raquo: "»",
  bull: "•",
  middot: "·",
  copy: "©",
  reg: "®",
  trade: "™",
  euro: "€",
  pound: "£",
  yen: "¥",
  cent: "¢",
  deg: "°",
  plusmn: "±",
  times: "×",
  divide: "÷",
  para: "¶",
  sect: "§",
  larr: "←",
  rarr: "→",
  uarr: "↑",
  darr: "↓",
  harr: "↔",
  check: "✓",
};

/** HTML character references decoded: the named ones above and all numeric ones; unknown names stay as written. */
export function decodeEntities(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(/&(#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});/g, (whole, name: string) => {
    if (name[0] !== "#") return namedEntities[name] ?? whole;
    const code = name[1] === "x" || name[1] === "X" ? Number.parseInt(name.slice(2), 16) : Number.parseInt(name.slice(1), 10);
    const valid = code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
    return valid ? String.fromCodePoint(code) : "\uFFFD";
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Inline parsing

interface TextPiece {
  readonly kind: "text";
  readonly text: string;
  readonly code: boolean;
}
interface LinkPiece {
  readonly kind: "link";
  readonly spans: readonly Span[];
}
interface DelimiterPiece {
  readonly kind: "delimiter";
  readonly char: "*" | "_" | "~";
  readonly original: number;
  count: number;
  readonly canOpen: boolean;
  readonly canClose: boolean;
}
type Piece = TextPiece | LinkPiece | DelimiterPiece;

const asciiPunctuation = /[!-/:-@[-`{-~]/;
const isWhitespace = (c: string) => /\s/u.test(c);
const isPunctuation = (c: string) => /[\p{P}\p{S}]/u.test(c);
const maxDelimiters = 10_000;

/** The spans of one paragraph's (or heading's, or cell's) Markdown text. */
export function parseInline(text: string): Span[] {
  return normalizeSpans(inline(text, true));
}

function inline(source: string, allowLinks: boolean): Span[] {
  const pieces: Piece[] = [];
  const findRun = backtickFinder(source);
  const brackets = allowLinks ? matchBrackets(source, findRun) : new Map<number, number>();
  let buffer = "";
  let delimiters = 0;
  const flush = () => {
    if (buffer) pieces.push({ kind: "text", text: buffer, code: false });
    buffer = "";
  };
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    if (c === "\\") {
      const next = source[i + 1];
      if (next === "\n") {
        buffer += "\n";
        i += 2;
        while (source[i] === " ") i++;
      } else if (next !== undefined && asciiPunctuation.test(next)) {
        buffer += next;
        i += 2;
      } else {
        buffer += c;
        i++;
      }
    } else if (c === "`") {
      const run = runLength(source, i);
      const close = findRun(i + run, run);
      if (close < 0) {
        buffer += "`".repeat(run);
        i += run;
      } else {
        flush();
        let code = source.slice(i + run, close).replace(/\n/g, " ");
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
        pieces.push({ kind: "text", text: code, code: true });
        i = close + run;
      }
    } else if ((c === "*" || c === "_" || c === "~") && delimiters < maxDelimiters) {
      let run = 1;
      while (source[i + run] === c) run++;
      if (c === "~" && run !== 2) {
        buffer += c.repeat(run);
        i += run;
        continue;
      }
      const before = i > 0 ? source[i - 1]! : "\n";
      const after = source[i + run] ?? "\n";
      const leftFlanking = !isWhitespace(after) && (!isPunctuation(after) || isWhitespace(before) || isPunctuation(before));
      const rightFlanking = !isWhitespace(before) && (!isPunctuation(before) || isWhitespace(after) || isPunctuation(after));
      const canOpen = c === "_" ? leftFlanking && (!rightFlanking || isPunctuation(before)) : leftFlanking;
      const canClose = c === "_" ? rightFlanking && (!leftFlanking || isPunctuation(after)) : rightFlanking;
      flush();
      pieces.push({ kind: "delimiter", char: c, original: run, count: run, canOpen, canClose });
      delimiters++;
      i += run;
    } else if (c === "[" || (c === "!" && source[i + 1] === "[")) {
      const image = c === "!";
      const open = image ? i + 1 : i;
      const close = brackets.get(open);
      const link = close === undefined ? null : parseLink(source, open, close);
      if (!link) {
        buffer += c;
        i++;
        continue;
      }
      flush();
      const href = image ? null : safeHref(link.destination);
      pieces.push({ kind: "link", spans: inline(link.label, false).map((s) => ({ ...s, href })) });
      i = link.end;
    } else if (c === "<") {
      const auto = allowLinks ? /^<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>/.exec(source.slice(i)) : null;
      const href = auto ? safeHref(auto[1]!) : null;
      if (auto && href) {
        flush();
        pieces.push({ kind: "link", spans: [span(auto[1]!, { href })] });
        i += auto[0].length;
      } else {
        buffer += c;
        i++;
      }
    } else if (c === "\n") {
      const hard = / {2,}$/.test(buffer);
      buffer = buffer.replace(/ +$/, "") + (hard ? "\n" : " ");
      i++;
      while (source[i] === " ") i++;
    } else if (c === "&") {
      const entity = /^&(#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|[A-Za-z][A-Za-z0-9]{1,31});/.exec(source.slice(i));
      buffer += entity ? decodeEntities(entity[0]) : c;
      i += entity ? entity[0].length : 1;
    } else {
      const plainRun = /^[^\\`*_~[!<\n&]+/.exec(source.slice(i));
      const length = plainRun ? plainRun[0].length : 1;
      buffer += source.slice(i, i + length);
      i += length;
    }
  }
  flush();
  return resolveEmphasis(pieces);
}

const runLength = (source: string, at: number) => {
  let end = at;
  while (source[end] === source[at]) end++;
  return end - at;
};

/**
 * Finds the next run of exactly `length` backticks at or after a position (-1 if none), remembering failures: once
 * no run of some length follows a position, later searches from beyond it fail at once. That keeps a paragraph of
 * unmatched backticks linear instead of quadratic.
 */
function backtickFinder(source: string): (from: number, length: number) => number {
  const noneAfter = new Map<number, number>();
  return (from, length) => {
    const known = noneAfter.get(length);
    if (known !== undefined && from >= known) return -1;
    for (let i = source.indexOf("`", from); i >= 0; i = source.indexOf("`", i)) {
      const run = runLength(source, i);
      if (run === length) return i;
      i += run;
    }
    noneAfter.set(length, Math.min(from, known ?? from));
    return -1;
  };
}

/** Each `[`'s matching `]` (escapes and code spans skipped), found in one pass with a stack. */
function matchBrackets(source: string, findRun: (from: number, length: number) => number): Map<number, number> {
  const matches = new Map<number, number>();
  const open: number[] = [];
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\\") i++;
    else if (c === "`") {
      const run = runLength(source, i);
      const end = findRun(i + run, run);
      i = end < 0 ? i + run - 1 : end + run - 1;
    } else if (c === "[") open.push(i);
    else if (c === "]" && open.length) matches.set(open.pop()!, i);
  }
  return matches;
}

const maxDestination = 8192;

/** The index of `char` within `maxDestination` characters after `from`, or -1: a bounded scan. */
function indexWithin(source: string, char: string, from: number): number {
  const at = source.slice(from, from + maxDestination).indexOf(char);
  return at < 0 ? -1 : from + at;
}

/** `[label](destination "title")` with its `[` at `start` and `]` at `close`, or null if no destination follows. */
function parseLink(source: string, start: number, close: number): { label: string; destination: string; end: number } | null {
  if (source[close + 1] !== "(") return null;
  let i = close + 2;
  while (source[i] === " " || source[i] === "\n") i++;
  let destination = "";
  if (source[i] === "<") {
    const end = indexWithin(source, ">", i);
    if (end < 0 || source.slice(i, end).includes("\n")) return null;
    destination = source.slice(i + 1, end);
    i = end + 1;
  } else {
    let parens = 0;
    const from = i;
    for (; i < source.length && i - from < maxDestination; i++) {
      const c = source[i]!;
      if (c === "\\" && i + 1 < source.length) i++;
      else if (c === "(") {
        if (++parens > 32) return null;
      } else if (c === ")") {
        if (parens === 0) break;
        parens--;
      } else if (/\s/.test(c)) break;
    }
    destination = source.slice(from, i);
  }
  while (source[i] === " " || source[i] === "\n") i++;
  const quote = source[i];
  if (quote === '"' || quote === "'" || quote === "(") {
    const end = indexWithin(source, quote === "(" ? ")" : quote, i + 1);
    if (end < 0) return null;
    i = end + 1;
    while (source[i] === " " || source[i] === "\n") i++;
  }
  if (source[i] !== ")") return null;
  return { label: source.slice(start + 1, close), destination: decodeEntities(destination.replace(/\\([!-/:-@[-`{-~])/g, "$1")), end: i + 1 };
}

/**
 * CommonMark's "process emphasis" over the delimiter runs: each closer is matched with the nearest compatible
 * opener (the rule of three included), and the pieces between them get the mark. The result is flat spans, so a
 * match is recorded as an interval rather than by moving nodes into a tree.
 */
function resolveEmphasis(pieces: Piece[]): Span[] {
  const stack: number[] = [];
  pieces.forEach((piece, index) => {
    if (piece.kind === "delimiter") stack.push(index);
  });
  const intervals: Array<{ from: number; to: number; mark: Mark }> = [];
  const bottoms = new Map<string, number>();
  let ci = 0;
  while (ci < stack.length) {
    const closer = pieces[stack[ci]!] as DelimiterPiece;
    if (!closer.canClose || closer.count === 0) {
      ci++;
      continue;
    }
    const key = `${closer.char}${closer.canOpen ? 1 : 0}${closer.original % 3}`;
    const bottom = bottoms.get(key) ?? -1;
    let oi = ci - 1;
    for (; oi >= 0 && stack[oi]! > bottom; oi--) {
      const opener = pieces[stack[oi]!] as DelimiterPiece;
      if (opener.char !== closer.char || !opener.canOpen || opener.count === 0) continue;
      if (closer.char === "~") break;
      const oddMatch = (opener.canClose || closer.canOpen) && (opener.original + closer.original) % 3 === 0;
      if (oddMatch && !(opener.original % 3 === 0 && closer.original % 3 === 0)) continue;
      break;
    }
    if (oi < 0 || stack[oi]! <= bottom) {
      bottoms.set(key, ci > 0 ? stack[ci - 1]! : -1);
      if (closer.canOpen) ci++;
      else stack.splice(ci, 1);
      continue;
    }
    const opener = pieces[stack[oi]!] as DelimiterPiece;
    const use = closer.char === "~" ? 2 : opener.count >= 2 && closer.count >= 2 ? 2 : 1;
    intervals.push({ from: stack[oi]!, to: stack[ci]!, mark: closer.char === "~" ? "strike" : use === 2 ? "bold" : "italic" });
    opener.count -= use;
    closer.count -= use;
    stack.splice(oi + 1, ci - oi - 1);
    ci = oi + 1;
    if (opener.count === 0) {
      stack.splice(oi, 1);
      ci = oi;
    }
    if (closer.count === 0) stack.splice(ci, 1);
  }
  const depth: Record<Mark, number[]> = { bold: [], italic: [], strike: [] };
  for (const mark of ["bold", "italic", "strike"] as const) depth[mark] = new Array<number>(pieces.length + 1).fill(0);
  for (const { from, to, mark } of intervals) {
    depth[mark][from + 1]!++;
    depth[mark][to]!--;
  }
  const level: Record<Mark, number> = { bold: 0, italic: 0, strike: 0 };
  const out: Span[] = [];
  pieces.forEach((piece, index) => {
    for (const mark of ["bold", "italic", "strike"] as const) level[mark] += depth[mark][index]!;
    const marks = { bold: level.bold > 0, italic: level.italic > 0, strike: level.strike > 0 };
    if (piece.kind === "text") out.push(span(piece.text, { ...marks, code: piece.code }));
    else if (piece.kind === "delimiter") out.push(span(piece.char.repeat(piece.count), marks));
    else for (const s of piece.spans) out.push({ ...s, bold: s.bold || marks.bold, italic: s.italic || marks.italic, strike: s.strike || marks.strike });
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Block parsing

/** Nesting (lists in lists, quotes in quotes) deeper than this is read as plain paragraphs. */
const maxNesting = 16;

const headingPattern = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const thematicPattern = /^ {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const fencePattern = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const isBlank = (line: string) => !line.trim();
const indentOf = (line: string) => /^ */.exec(line)![0].length;

/** The blocks of a Markdown document. Never throws; unrecognised syntax is paragraph text. */
export function parseMarkdown(markdown: string): MdBlock[] {
  const lines = markdown
    .replace(/\r\n?/g, "\n")
    .replace(/\u0000/g, "\uFFFD")
    .split("\n")
    .map((line) => line.replace(/^[ \t]+/, (lead) => lead.replace(/\t/g, "    ")));
  return parseBlocks(lines, 0);
}

function openingFence(line: string): { indent: number; fence: string; info: string } | null {
  const m = fencePattern.exec(line);
  if (!m || (m[2]![0] === "`" && m[3]!.includes("`"))) return null;
  return { indent: m[1]!.length, fence: m[2]!, info: m[3]!.trim() };
}

interface Marker {
  readonly ordered: boolean;
  readonly delimiter: string;
  /** Where the item's content starts (the column continuation lines must reach). */
  readonly width: number;
  readonly rest: string;
}

function listMarker(line: string): Marker | null {
  const m = /^( {0,3})([-+*]|\d{1,9}[.)])(?= |$)/.exec(line);
  if (!m || thematicPattern.test(line)) return null;
  const after = line.slice(m[0].length);
  const spaces = indentOf(after);
  const ordered = /\d/.test(m[2]![0]!);
  const delimiter = ordered ? m[2]!.slice(-1) : m[2]!;
  if (!after.trim()) return { ordered, delimiter, width: m[0].length + 1, rest: "" };
  if (spaces > 4) return { ordered, delimiter, width: m[0].length + 1, rest: after.slice(1) };
  return { ordered, delimiter, width: m[0].length + spaces, rest: after.slice(spaces) };
}

/** Whether `line` starts a block that interrupts a paragraph. */
function interrupts(line: string): boolean {
  if (openingFence(line) || headingPattern.test(line) || thematicPattern.test(line)) return true;
  if (/^ {0,3}>/.test(line) || /^ {0,3}<!--/.test(line)) return true;
  const marker = listMarker(line);
  return marker !== null && marker.rest.trim() !== "" && (!marker.ordered || /^ {0,3}1[.)]/.test(line));
}

function splitRow(line: string): string[] {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells: string[] = [];
  let cell = "";
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      cell += "\\|";
      i++;
    } else if (row[i] === "|") {
      cells.push(cell);
      cell = "";
    } else cell += row[i];
  }
  cells.push(cell);
  return cells.map((c) => c.trim());
}

function tableAt(lines: readonly string[], i: number): { block: MdBlock; end: number } | null {
  const header = lines[i]!;
  const delimiterRow = lines[i + 1];
  if (!header.includes("|") || delimiterRow === undefined || !/^[\s|:-]+$/.test(delimiterRow) || !delimiterRow.includes("-")) return null;
  const aligns = splitRow(delimiterRow);
  const headers = splitRow(header);
  if (!aligns.every((cell) => /^:?-+:?$/.test(cell)) || headers.length !== aligns.length) return null;
  const rows = [headers];
  let j = i + 2;
  while (j < lines.length && !isBlank(lines[j]!) && lines[j]!.includes("|") && !interrupts(lines[j]!)) rows.push(splitRow(lines[j++]!));
  const width = headers.length;
  const cells = rows.map((row) => Array.from({ length: width }, (_, k) => parseInline(row[k] ?? "")));
  return { block: { type: "table", rows: cells }, end: j };
}

function parseBlocks(lines: readonly string[], depth: number): MdBlock[] {
  const blocks: MdBlock[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (isBlank(line)) {
      i++;
      continue;
    }
    const fence = openingFence(line);
    if (fence) {
      const body: string[] = [];
      for (i++; i < lines.length; i++) {
        const close = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(lines[i]!);
        if (close && close[1]![0] === fence.fence[0] && close[1]!.length >= fence.fence.length) {
          i++;
          break;
        }
        body.push(lines[i]!.replace(new RegExp(`^ {0,${fence.indent}}`), ""));
      }
      const language = decodeEntities((fence.info.split(/\s+/)[0] ?? "").replace(/\\([!-/:-@[-`{-~])/g, "$1"));
      blocks.push({ type: "code", language, text: body.join("\n") });
      continue;
    }
    const heading = headingPattern.exec(line);
    if (heading) {
      blocks.push({ type: "heading", level: heading[1]!.length as 1 | 2 | 3 | 4 | 5 | 6, spans: trimSpans(parseInline(heading[2] ?? "")) });
      i++;
      continue;
    }
    if (thematicPattern.test(line)) {
      blocks.push({ type: "divider" });
      i++;
      continue;
    }
    if (/^ {0,3}<!--/.test(line)) {
      const collected: string[] = [];
      while (i < lines.length) {
        collected.push(lines[i]!);
        if (lines[i++]!.includes("-->")) break;
      }
      const text = collected
        .join("\n")
        .trim()
        .replace(/^<!--/, "")
        .replace(/-->[\s\S]*$/, "")
        .trim();
      blocks.push({ type: "comment", text });
      continue;
    }
    if (/^ {0,3}>/.test(line)) {
      const inner: string[] = [];
      while (i < lines.length) {
        const current = lines[i]!;
        const quoted = /^ {0,3}> ?(.*)$/.exec(current);
        if (quoted) inner.push(quoted[1]!);
        else if (!isBlank(current) && !isBlank(inner.at(-1) ?? "") && !interrupts(current)) inner.push(current);
        else break;
        i++;
      }
      blocks.push({ type: "quote", blocks: depth < maxNesting ? parseBlocks(inner, depth + 1) : flat(inner) });
      continue;
    }
    const marker = listMarker(line);
    if (marker) {
      const items: ListItem[] = [];
      while (i < lines.length) {
        const current = listMarker(lines[i]!);
        if (!current || current.ordered !== marker.ordered || current.delimiter !== marker.delimiter) break;
        const content = [current.rest];
        for (i++; i < lines.length; i++) {
          const next = lines[i]!;
          if (isBlank(next)) content.push("");
          else if (indentOf(next) >= current.width) content.push(next.slice(current.width));
          else if (!isBlank(content.at(-1)!) && !interrupts(next) && !listMarker(next)) content.push(next.trim());
          else break;
        }
        items.push(listItem(content, depth));
      }
      blocks.push({ type: "list", ordered: marker.ordered, items });
      continue;
    }
    if (indentOf(line) >= 4) {
      const body: string[] = [];
      while (i < lines.length && (isBlank(lines[i]!) || indentOf(lines[i]!) >= 4)) body.push(lines[i++]!.slice(4));
      while (body.length && isBlank(body.at(-1)!)) body.pop();
      blocks.push({ type: "code", language: "", text: body.join("\n") });
      continue;
    }
    const table = tableAt(lines, i);
    if (table) {
      blocks.push(table.block);
      i = table.end;
      continue;
    }
    const paragraph: string[] = [line.replace(/^ +/, "")];
    let level: 1 | 2 | null = null;
    for (i++; i < lines.length; i++) {
      const next = lines[i]!;
      if (/^ {0,3}=+[ \t]*$/.test(next)) level = 1;
      else if (/^ {0,3}-+[ \t]*$/.test(next)) level = 2;
      if (level) {
        i++;
        break;
      }
      if (isBlank(next) || interrupts(next) || tableAt(lines, i)) break;
      paragraph.push(next.replace(/^ +/, ""));
    }
    const spans = trimSpans(parseInline(paragraph.join("\n")));
    if (level) blocks.push({ type: "heading", level, spans });
    else if (spans.length) blocks.push({ type: "paragraph", spans });
  }
  return blocks;
}

/** Content too deeply nested to parse further, kept as one paragraph of text. */
const flat = (lines: readonly string[]): MdBlock[] => {
  const spans = trimSpans([span(lines.join(" ").replace(/\s+/g, " "))]);
  return spans.length ? [{ type: "paragraph", spans }] : [];
};

function listItem(content: string[], depth: number): ListItem {
  let checked: boolean | null = null;
  const task = /^\[([ xX])\](?: +|$)/.exec(content[0]!);
  if (task) {
    checked = task[1] !== " ";
    content[0] = content[0]!.slice(task[0].length);
  }
  const blocks = depth < maxNesting ? parseBlocks(content, depth + 1) : flat(content);
  const [first, ...rest] = blocks;
  if (first?.type === "paragraph") return { spans: first.spans, checked, blocks: rest };
  return { spans: [], checked, blocks };
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

/** Spans as Markdown inline text. In a table cell, `|` is escaped and line breaks become spaces. */
export function renderInline(spans: readonly Span[], inCell = false): string {
  const pieces = normalizeSpans(spans);
  let out = "";
  for (let i = 0; i < pieces.length;) {
    const href = pieces[i]!.href;
    let j = i + 1;
    while (j < pieces.length && pieces[j]!.href === href) j++;
    const group = pieces.slice(i, j);
    out += href ? `[${renderMarked(group, inCell) || escapeText(href, inCell)}](${encodeHref(href)})` : renderMarked(group, inCell);
    i = j;
  }
  return out;
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
