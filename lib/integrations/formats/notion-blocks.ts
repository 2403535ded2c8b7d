// Notion blocks to Markdown and back, within Notion's request limits (≤ 100 children per request, two levels of
// nesting, rich text items ≤ 2000 characters); only safe links are kept.
import { normalizeSpans, parseMarkdown, plainText, renderMarkdown, safeHref, span, trimSpans, type ListItem, type MdBlock, type Span } from "./markdown.ts";
import { array, record, text, type JsonRecord } from "../types.ts";
import { inUtf16Pieces } from "../../unicode.ts";

/** Blocks that are pages of their own: not read as content, never deleted when a page is rewritten. */
export const separatePages: ReadonlySet<string> = new Set(["child_page", "child_database"]);

// ---------------------------------------------------------------------------------------------------------------
// Notion blocks → Markdown

/** Rich text items as spans: plain_text (or text.content) with their annotations; only safe links are kept. */
export function richTextSpans(value: unknown): Span[] {
  return normalizeSpans(
    array(value).map((raw) => {
      const item = record(raw);
      const annotations = record(item.annotations);
      const content = text(item.plain_text) ?? text(record(item.text).content) ?? "";
      const link = text(item.href) ?? text(record(record(item.text).link).url);
      return span(content, {
        bold: annotations.bold === true,
        italic: annotations.italic === true,
        strike: annotations.strikethrough === true,
        code: annotations.code === true || item.type === "equation",
        href: link ? safeHref(link) : null,
      });
    }),
  );
}

/** A block's children: read ones (`children`, null when not read) or, for blocks built to be sent, `<type>.children`. */
function childrenOf(block: JsonRecord, data: JsonRecord): readonly JsonRecord[] | null {
  if (block.children === null) return null;
  return array(Array.isArray(block.children) ? block.children : data.children).map(record);
}

const fromNotionLanguage: Readonly<Record<string, string>> = {
  "plain text": "",
  "c++": "cpp",
  "c#": "csharp",
  "f#": "fsharp",
  "objective-c": "objectivec",
  "vb.net": "vbnet",
  "visual basic": "vb",
  "java/c/c++/c#": "",
  "ascii art": "",
  "notion formula": "",
  "llvm ir": "llvm",
};

const listKinds: Readonly<Record<string, "bulleted" | "numbered">> = {
  bulleted_list_item: "bulleted",
  to_do: "bulleted",
  toggle: "bulleted",
  numbered_list_item: "numbered",
};

/** Notion blocks (as read, children attached, or as built for sending) as Markdown. Unknown types leave a marker. */
export function notionBlocksToMarkdown(blocks: readonly JsonRecord[]): string {
  return renderMarkdown(notionBlocksToMdBlocks(blocks));
}

export function notionBlocksToMdBlocks(blocks: readonly JsonRecord[], depth = 0): MdBlock[] {
  const out: MdBlock[] = [];
  const nested = (children: readonly JsonRecord[] | null) => (children && depth < 32 ? notionBlocksToMdBlocks(children, depth + 1) : []);
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i]!;
    const type = text(block.type) ?? "";
    const data = record(block[type]);
    const children = childrenOf(block, data);
    const spans = trimSpans(richTextSpans(data.rich_text));
    const kind = listKinds[type];
    if (kind) {
      const items: ListItem[] = [];
      for (; i < blocks.length && listKinds[text(blocks[i]!.type) ?? ""] === kind; i++) {
        const item = blocks[i]!;
        const itemType = text(item.type) ?? "";
        const itemData = record(item[itemType]);
        const itemChildren = childrenOf(item, itemData);
        items.push({
          spans: trimSpans(richTextSpans(itemData.rich_text)),
          checked: itemType === "to_do" ? itemData.checked === true : null,
          blocks: [...nested(itemChildren), ...unreadMarker(item, itemChildren)],
        });
      }
      i--;
      out.push({ type: "list", ordered: kind === "numbered", items });
      continue;
    }
    switch (type) {
      case "paragraph":
        if (spans.length) out.push({ type: "paragraph", spans });
        out.push(...nested(children));
        break;
      case "heading_1":
      case "heading_2":
      case "heading_3":
        out.push({ type: "heading", level: Number(type.slice(-1)) as 1 | 2 | 3, spans }, ...nested(children));
        break;
      case "quote":
        out.push({ type: "quote", blocks: [...(spans.length ? [{ type: "paragraph", spans } as const] : []), ...nested(children)] });
        break;
      case "callout": {
        const icon = record(data.icon);
        const emoji = icon.type === "emoji" ? text(icon.emoji) : undefined;
        const lead = emoji ? [span(`${emoji} `), ...spans] : spans;
        out.push({ type: "quote", blocks: [...(lead.length ? [{ type: "paragraph", spans: lead } as const] : []), ...nested(children)] });
        break;
      }
      case "code": {
        const language = (text(data.language) ?? "").toLowerCase();
        out.push({ type: "code", language: fromNotionLanguage[language] ?? language.replace(/\s+/g, "-"), text: plainText(richTextSpans(data.rich_text)) });
        break;
      }
      case "divider":
        out.push({ type: "divider" });
        break;
      case "table": {
        const rows = (children ?? [])
          .filter((row) => row.type === "table_row")
          .map((row) => array(record(row.table_row).cells).map((cell) => trimSpans(richTextSpans(cell))));
        const width = Math.max(0, ...rows.map((row) => row.length));
        if (width) out.push({ type: "table", rows: rows.map((row) => Array.from({ length: width }, (_, k) => row[k] ?? [])) });
        break;
      }
      case "column_list":
      case "column":
      case "synced_block":
        out.push(...nested(children));
        break;
      case "child_page":
        out.push({ type: "comment", text: `notion: child page "${text(data.title) ?? ""}" not included` });
        break;
      default:
        out.push({ type: "comment", text: `notion: unsupported block "${type.replace(/[^\w-]/g, "")}" skipped` });
    }
    out.push(...unreadMarker(block, children));
  }
  return out;
}

/** A marker for children that exist but were not read (deeper than maxDepth). */
const unreadMarker = (block: JsonRecord, children: readonly JsonRecord[] | null): MdBlock[] =>
  children === null && block.has_children === true && !separatePages.has(text(block.type) ?? "")
    ? [{ type: "comment", text: "notion: nested content below the depth limit not included" }]
    : [];

// ---------------------------------------------------------------------------------------------------------------
// Markdown → Notion blocks

const notionLanguages: ReadonlySet<string> = new Set([
  "abap",
  "arduino",
  "bash",
  "basic",
  "c",
  "clojure",
  "coffeescript",
  "c++",
  "c#",
  "css",
  "dart",
  "diff",
  "docker",
  "elixir",
  "elm",
  "erlang",
  "flow",
  "fortran",
  "f#",
  "gherkin",
  "glsl",
  "go",
  "graphql",
  "groovy",
  "haskell",
  "html",
  "java",
  "javascript",
  "json",
  "julia",
  "kotlin",
  "latex",
  "less",
  "lisp",
  "livescript",
  "lua",
  "makefile",
  "markdown",
  "markup",
  "matlab",
  "mermaid",
  "nix",
  "objective-c",
  "ocaml",
  "pascal",
  "perl",
  "php",
  "plain text",
  "powershell",
  "prolog",
  "protobuf",
  "python",
  "r",
  "reason",
  "ruby",
  "rust",
  "sass",
  "scala",
  "scheme",
  "scss",
  "shell",
  "sql",
  "swift",
  "typescript",
  "vb.net",
  "verilog",
  "vhdl",
  "visual basic",
  "webassembly",
  "xml",
  "yaml",
  "java/c/c++/c#",
]);

const languageAliases: Readonly<Record<string, string>> = {
  js: "javascript",
  jsx: "javascript",
  mjs: "javascript",
  cjs: "javascript",
  ts: "typescript",
  tsx: "typescript",
  py: "python",
  rb: "ruby",
  sh: "shell",
  zsh: "shell",
  console: "shell",
  yml: "yaml",
  md: "markdown",
  cpp: "c++",
  cxx: "c++",
  cc: "c++",
  hpp: "c++",
  h: "c",
  cs: "c#",
  csharp: "c#",
  fs: "f#",
  fsharp: "f#",
  objc: "objective-c",
  objectivec: "objective-c",
  vbnet: "vb.net",
  vb: "visual basic",
  dockerfile: "docker",
  golang: "go",
  rs: "rust",
  kt: "kotlin",
  ps1: "powershell",
  pwsh: "powershell",
  ex: "elixir",
  exs: "elixir",
  erl: "erlang",
  hs: "haskell",
  ml: "ocaml",
  pl: "perl",
  proto: "protobuf",
  scm: "scheme",
  tex: "latex",
  wasm: "webassembly",
  gql: "graphql",
  make: "makefile",
  patch: "diff",
  jsonc: "json",
  htm: "html",
  svg: "xml",
  llvm: "plain text",
  text: "plain text",
  txt: "plain text",
  plaintext: "plain text",
};

/** A Markdown info string as one of Notion's code languages ("plain text" when it has no equivalent). */
const toNotionLanguage = (language: string) => {
  const lower = language.toLowerCase();
  const name = languageAliases[lower] ?? lower;
  return notionLanguages.has(name) ? name : "plain text";
};

/** A block to send, with the children that must or may go with it. */
export interface BlockNode {
  readonly type: string;
  readonly data: JsonRecord;
  readonly children: readonly BlockNode[];
  /** Tables: Notion requires their rows in the request that creates them. */
  readonly childrenRequired: boolean;
}

const node = (type: string, data: JsonRecord, children: readonly BlockNode[] = [], childrenRequired = false): BlockNode => ({
  type,
  data,
  children,
  childrenRequired,
});

type RichText = JsonRecord;
const maxTextChars = 2000;
const maxRichTextItems = 100;
/** Characters per block, so a block of multi-byte text stays far below Notion's 500 KB payload limit. */
const maxBlockChars = 40_000;

export function richTextOf(spans: readonly Span[]): RichText[] {
  const out: RichText[] = [];
  for (const s of normalizeSpans(spans)) {
    const href = s.href && s.href.length <= maxTextChars ? s.href : null;
    for (const content of inUtf16Pieces(s.text, maxTextChars)) {
      out.push({
        type: "text",
        text: { content, link: href ? { url: href } : null },
        annotations: { bold: s.bold, italic: s.italic, strikethrough: s.strike, underline: false, code: s.code, color: "default" },
      });
    }
  }
  return out;
}

/** Rich text split so no block carries more than 100 items or `maxBlockChars` characters. */
function richTextGroups(items: readonly RichText[]): RichText[][] {
  const groups: RichText[][] = [];
  let current: RichText[] = [];
  let chars = 0;
  for (const item of items) {
    const length = (text(record(item.text).content) ?? "").length;
    if (current.length && (current.length >= maxRichTextItems || chars + length > maxBlockChars)) {
      groups.push(current);
      current = [];
      chars = 0;
    }
    current.push(item);
    chars += length;
  }
  if (current.length || !groups.length) groups.push(current);
  return groups;
}

/** One block of `type` per group of its text; `children` go under the last. */
const textBlocks = (type: string, spans: readonly Span[], extra: JsonRecord = {}, children: readonly BlockNode[] = []) => {
  const groups = richTextGroups(richTextOf(spans));
  return groups.map((rich_text, index) => node(type, { rich_text, ...extra }, index === groups.length - 1 ? children : []));
};

function mdBlocksToNodes(blocks: readonly MdBlock[]): BlockNode[] {
  return blocks.flatMap((block): BlockNode[] => {
    switch (block.type) {
      case "heading":
        return textBlocks(`heading_${Math.min(block.level, 3)}`, block.spans);
      case "paragraph":
        return textBlocks("paragraph", block.spans);
      case "list":
        return block.items.flatMap((item) => {
          const type = item.checked !== null ? "to_do" : block.ordered ? "numbered_list_item" : "bulleted_list_item";
          return textBlocks(type, item.spans, item.checked !== null ? { checked: item.checked } : {}, mdBlocksToNodes(item.blocks));
        });
      case "code": {
        const language = toNotionLanguage(block.language);
        return inUtf16Pieces(block.text, maxBlockChars).map((part) => node("code", { rich_text: richTextOf([span(part)]), language }));
      }
      case "quote": {
        const [first, ...rest] = block.blocks;
        return first?.type === "paragraph"
          ? textBlocks("quote", first.spans, {}, mdBlocksToNodes(rest))
          : [node("quote", { rich_text: [] }, mdBlocksToNodes(block.blocks))];
      }
      case "divider":
        return [node("divider", {})];
      case "table": {
        const width = Math.min(100, block.rows[0]?.length ?? 0);
        if (!width) return [];
        const rows = block.rows.map((row) => node("table_row", { cells: row.slice(0, width).map((cell) => richTextOf(cell).slice(0, maxRichTextItems)) }));
        return [node("table", { table_width: width, has_column_header: true, has_row_header: false }, rows, true)];
      }
      case "comment":
        return [];
    }
  });
}

export const markdownToNodes = (markdown: string) => mdBlocksToNodes(parseMarkdown(markdown));

/** A node as Notion block JSON, with `children` (already in JSON) when given. */
const blockJson = (n: BlockNode, children?: readonly JsonRecord[]): JsonRecord => ({
  object: "block",
  type: n.type,
  [n.type]: children?.length ? { ...n.data, children } : n.data,
});

/** Markdown as the Notion blocks it publishes to, children nested in full (requests split them further). */
export function markdownToNotionBlocks(markdown: string): JsonRecord[] {
  const full = (n: BlockNode): JsonRecord => blockJson(n, n.children.map(full));
  return markdownToNodes(markdown).map(full);
}

/**
 * A node as it goes into one request: with its children when they are leaves (two levels of nesting is Notion's
 * limit per request), a table with its first 100 rows; the rest is deferred to requests under the created block.
 */
function requestOf(n: BlockNode): { json: JsonRecord; blocks: number; deferred: readonly BlockNode[] } {
  if (!n.children.length) return { json: blockJson(n), blocks: 1, deferred: [] };
  if (n.childrenRequired) {
    const sent = n.children.slice(0, 100);
    return {
      json: blockJson(
        n,
        sent.map((c) => blockJson(c)),
      ),
      blocks: 1 + sent.length,
      deferred: n.children.slice(100),
    };
  }
  if (n.children.length <= 100 && n.children.every((c) => !c.children.length)) {
    return {
      json: blockJson(
        n,
        n.children.map((c) => blockJson(c)),
      ),
      blocks: 1 + n.children.length,
      deferred: [],
    };
  }
  return { json: blockJson(n), blocks: 1, deferred: n.children };
}

const maxBatchBlocks = 100;
const maxPayloadBlocks = 1000;
const maxPayloadBytes = 400_000;

/**
 * The next request's worth of nodes from `start`: at most 100 top-level blocks, 1000 blocks in all and ~400 KB.
 * With `leavesOnly` (the page-creation request, whose answer does not list the created blocks) it stops before the
 * first node that needs follow-up requests.
 */
export function takeBatch(nodes: readonly BlockNode[], start: number, leavesOnly: boolean) {
  const payload: JsonRecord[] = [];
  const deferred: Array<{ index: number; children: readonly BlockNode[] }> = [];
  let blocks = 0;
  let bytes = 0;
  let count = 0;
  for (let i = start; i < nodes.length && payload.length < maxBatchBlocks; i++) {
    const request = requestOf(nodes[i]!);
    if (leavesOnly && request.deferred.length) break;
    const size = Buffer.byteLength(JSON.stringify(request.json));
    if (payload.length && (blocks + request.blocks > maxPayloadBlocks || bytes + size > maxPayloadBytes)) break;
    if (request.deferred.length) deferred.push({ index: payload.length, children: request.deferred });
    payload.push(request.json);
    blocks += request.blocks;
    bytes += size;
    count++;
  }
  return { payload, deferred, count };
}
