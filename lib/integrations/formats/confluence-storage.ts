// Confluence storage format (XHTML with ac: and ri: elements) to Markdown and back. Reading: htmlparser2 builds a
// small element tree within fixed bounds; nothing in a page is ever executed, scripts and embedded documents are
// dropped unread, links keep only http(s)/mailto targets. Writing: well-formed XHTML, every text and attribute
// escaped, code in CDATA inside the code macro.
import { Parser } from "htmlparser2";
import { linkRuns, normalizeSpans, parseMarkdown, renderMarkdown, safeHref, span, trimSpans, type ListItem, type MdBlock, type Span } from "./markdown.ts";

// ---------------------------------------------------------------------------------------------------------------
// Storage format: read by htmlparser2 (tolerant, linear, entities decoded, CDATA kept) into a small element tree

interface XElement {
  readonly kind: "element";
  readonly name: string;
  readonly attributes: ReadonlyMap<string, string>;
  readonly children: XNode[];
}
interface XText {
  readonly kind: "text";
  readonly text: string;
}
type XNode = XElement | XText;

/** Elements whose content is dropped unread (code, styles, embedded documents). */
const droppedElements: ReadonlySet<string> = new Set(["script", "style", "textarea", "title", "iframe", "noscript", "template", "object", "svg", "math"]);

/** Elements nest no deeper than this; deeper tags are ignored and their text joins the deepest element kept. */
const maxElementDepth = 64;
/** At most this many elements are built from one page; later tags are ignored (their text is kept). */
const maxElements = 200_000;
const maxAttributes = 64;

/** Storage beyond this many characters is not read (a page body is rarely a tenth of it). */
const maxStorageChars = 10_000_000;

/**
 * The element tree of a storage-format page. htmlparser2 reads it as HTML that also accepts `<x/>` self-closing
 * tags and CDATA sections (code macros keep their text in CDATA), so a page that is not well-formed XML still
 * reads, and void elements such as an unclosed `<br>` never swallow what follows.
 */
function parseStorage(storage: string): XElement {
  const root: XElement = { kind: "element", name: "#root", attributes: new Map(), children: [] };
  const stack: XElement[] = [root];
  // What each open tag did, so its close undoes exactly that: "kept" pushed an element, "skipped" did not.
  const opened: Array<"kept" | "skipped" | "dropped"> = [];
  let dropping = 0;
  let elements = 0;
  const parser = new Parser(
    {
      onopentag(name, attribs) {
        if (dropping > 0 || droppedElements.has(name)) {
          dropping++;
          opened.push("dropped");
          return;
        }
        if (stack.length > maxElementDepth || elements >= maxElements) {
          opened.push("skipped");
          return;
        }
        elements++;
        const attributes = new Map(Object.entries(attribs).slice(0, maxAttributes));
        const element: XElement = { kind: "element", name, attributes, children: [] };
        stack.at(-1)!.children.push(element);
        stack.push(element);
        opened.push("kept");
      },
      onclosetag() {
        const what = opened.pop();
        if (what === "dropped") dropping--;
        else if (what === "kept") stack.pop();
      },
      ontext(text) {
        if (dropping === 0 && text) stack.at(-1)!.children.push({ kind: "text", text });
      },
    },
    { recognizeSelfClosing: true, recognizeCDATA: true, lowerCaseTags: true, lowerCaseAttributeNames: true, decodeEntities: true },
  );
  parser.end(storage.length > maxStorageChars ? storage.slice(0, maxStorageChars) : storage);
  return root;
}

// ---------------------------------------------------------------------------------------------------------------
// Storage format → Markdown

interface Marks {
  readonly bold: boolean;
  readonly italic: boolean;
  readonly strike: boolean;
  readonly code: boolean;
  readonly href: string | null;
}
const noMarks: Marks = { bold: false, italic: false, strike: false, code: false, href: null };

const blockElements: ReadonlySet<string> = new Set([
  "p",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "ul",
  "ol",
  "li",
  "pre",
  "blockquote",
  "table",
  "thead",
  "tbody",
  "tfoot",
  "tr",
  "td",
  "th",
  "hr",
  "div",
  "section",
  "article",
  "header",
  "footer",
  "aside",
  "nav",
  "main",
  "figure",
  "center",
  "dl",
  "dt",
  "dd",
  "ac:task-list",
  "ac:layout",
  "ac:layout-section",
  "ac:layout-cell",
  "ac:rich-text-body",
]);
/** Macros that sit inside a line of text. */
const inlineMacros: ReadonlySet<string> = new Set(["status", "anchor"]);
/** Macros whose body is shown as a quote (panels) or as is (layout helpers). */
const panelMacros: ReadonlySet<string> = new Set(["info", "note", "warning", "tip", "panel", "expand", "success", "error"]);
const transparentMacros: ReadonlySet<string> = new Set(["section", "column", "details", "excerpt", "div"]);
/** Nesting of lists and quotes kept in the Markdown; deeper content becomes paragraphs. */
const maxBlockNesting = 16;

const macroName = (element: XElement) => (element.attributes.get("ac:name") ?? "").toLowerCase();

function isBlock(node: XNode): boolean {
  if (node.kind === "text") return false;
  if (node.name === "ac:structured-macro" || node.name === "ac:macro") return !inlineMacros.has(macroName(node));
  if (node.name === "ac:image") return false;
  if (blockElements.has(node.name)) return true;
  return node.children.some(isBlock);
}

/** The text inside an element, markup removed, whitespace as written (for code). */
function textContent(node: XNode): string {
  if (node.kind === "text") return node.text;
  if (node.name === "br") return "\n";
  return node.children.map(textContent).join("");
}

const childElements = (element: XElement, name: string) =>
  element.children.filter((child): child is XElement => child.kind === "element" && child.name === name);

function macroParameter(element: XElement, name: string): string | undefined {
  const parameter = childElements(element, "ac:parameter").find((p) => p.attributes.get("ac:name") === name);
  return parameter ? textContent(parameter).trim() : undefined;
}

/** Whitespace collapsed as a browser would, across span boundaries; spaces around line breaks dropped. */
function finishSpans(spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  let previous = "\n";
  for (const s of normalizeSpans(spans)) {
    let value = s.text.replace(/[ \t\r\n\f\u00a0]+/g, " ").replace(/ ?\u2028 ?/g, "\n");
    if (previous === " " || previous === "\n") value = value.replace(/^ /, "");
    if (value) {
      out.push({ ...s, text: value });
      previous = value.at(-1)!;
    }
  }
  return trimSpans(out.map((s) => ({ ...s, text: s.text.replace(/ +\n/g, "\n") })));
}

/** Inline content as spans. Line breaks are carried as U+2028 until finishSpans turns them into "\n". */
function inlineSpans(nodes: readonly XNode[], marks: Marks, out: Span[]): Span[] {
  for (const node of nodes) {
    if (node.kind === "text") {
      out.push(span(node.text, marks));
      continue;
    }
    const style = node.attributes.get("style") ?? "";
    switch (node.name) {
      case "br":
        out.push(span("\u2028", marks));
        break;
      case "strong":
      case "b":
        inlineSpans(node.children, { ...marks, bold: true }, out);
        break;
      case "em":
      case "i":
      case "cite":
      case "dfn":
        inlineSpans(node.children, { ...marks, italic: true }, out);
        break;
      case "code":
      case "tt":
      case "kbd":
      case "samp":
        inlineSpans(node.children, { ...marks, code: true }, out);
        break;
      case "s":
      case "del":
      case "strike":
        inlineSpans(node.children, { ...marks, strike: true }, out);
        break;
      case "a": {
        const href = safeHref(node.attributes.get("href") ?? "");
        inlineSpans(node.children, { ...marks, href }, out);
        break;
      }
      case "ac:link": {
        const body = childElements(node, "ac:plain-text-link-body")[0] ?? childElements(node, "ac:link-body")[0];
        const resource = node.children.find((child): child is XElement => child.kind === "element" && child.name.startsWith("ri:"));
        const label = body ? textContent(body) : (resource?.attributes.get("ri:content-title") ?? resource?.attributes.get("ri:filename") ?? "");
        const url = resource?.name === "ri:url" ? safeHref(resource.attributes.get("ri:value") ?? "") : null;
        out.push(span(label, { ...marks, href: url ?? marks.href }));
        break;
      }
      case "ac:emoticon":
        out.push(span(node.attributes.get("ac:emoji-fallback") ?? "", marks));
        break;
      case "ac:structured-macro":
      case "ac:macro":
        if (macroName(node) === "status") out.push(span(macroParameter(node, "title") ?? "", { ...marks, bold: true }));
        break;
      case "ac:image":
      case "img":
        out.push(span(node.attributes.get("ac:alt") ?? node.attributes.get("alt") ?? "", marks));
        break;
      case "ac:parameter":
      case "ac:task-id":
      case "ac:placeholder":
        break;
      default: {
        if (node.name.startsWith("ri:")) break;
        const styled = {
          ...marks,
          strike: marks.strike || /line-through/i.test(style),
          bold: marks.bold || /font-weight:\s*(bold|[6-9]00)/i.test(style),
          italic: marks.italic || /font-style:\s*italic/i.test(style),
        };
        const block = blockElements.has(node.name);
        if (block) out.push(span(" ", marks));
        inlineSpans(node.children, styled, out);
        if (block) out.push(span(" ", marks));
      }
    }
  }
  return out;
}

const inlineOf = (nodes: readonly XNode[]) => finishSpans(inlineSpans(nodes, noMarks, []));

function listItemOf(nodes: readonly XNode[], checked: boolean | null, depth: number): ListItem {
  const blocks = storageBlocks(nodes, depth + 1);
  const [first, ...rest] = blocks;
  return first?.type === "paragraph" ? { spans: first.spans, checked, blocks: rest } : { spans: [], checked, blocks };
}

function tableRows(table: XElement): Span[][][] {
  const rows: Span[][][] = [];
  const visit = (element: XElement) => {
    for (const child of element.children) {
      if (child.kind !== "element") continue;
      if (child.name === "tr") {
        rows.push(
          child.children
            .filter((cell): cell is XElement => cell.kind === "element" && (cell.name === "td" || cell.name === "th"))
            .map((cell) => inlineOf(cell.children)),
        );
      } else if (child.name === "thead" || child.name === "tbody" || child.name === "tfoot") visit(child);
    }
  };
  visit(table);
  const width = Math.max(0, ...rows.map((row) => row.length));
  return width ? rows.map((row) => Array.from({ length: width }, (_, k) => row[k] ?? [])) : [];
}

function macroBlocks(element: XElement, depth: number): MdBlock[] {
  const name = macroName(element);
  const body = childElements(element, "ac:rich-text-body")[0];
  const inner = body ? storageBlocks(body.children, depth + 1) : [];
  if (name === "code" || name === "noformat") {
    const plain = childElements(element, "ac:plain-text-body")[0];
    return [
      { type: "code", language: (macroParameter(element, "language") ?? "").toLowerCase().replace(/[^\w#+.-]/g, ""), text: plain ? textContent(plain) : "" },
    ];
  }
  if (panelMacros.has(name)) {
    const title = macroParameter(element, "title");
    return [{ type: "quote", blocks: [...(title ? [{ type: "paragraph", spans: [span(title, { bold: true })] } as const] : []), ...inner] }];
  }
  if (transparentMacros.has(name)) return inner;
  return [{ type: "comment", text: `confluence: macro "${name.replace(/[^\w-]/g, "")}" not converted` }, ...inner];
}

function blockOf(element: XElement, depth: number): MdBlock[] {
  if (depth > maxBlockNesting) {
    const spans = finishSpans([span(textContent(element))]);
    return spans.length ? [{ type: "paragraph", spans }] : [];
  }
  switch (element.name) {
    case "h1":
    case "h2":
    case "h3":
    case "h4":
    case "h5":
    case "h6": {
      const spans = inlineOf(element.children);
      return spans.length ? [{ type: "heading", level: Number(element.name[1]) as 1 | 2 | 3 | 4 | 5 | 6, spans }] : [];
    }
    case "ul":
    case "ol": {
      const items = childElements(element, "li").map((li) => listItemOf(li.children, null, depth));
      return items.length ? [{ type: "list", ordered: element.name === "ol", items }] : [];
    }
    case "li":
      return [{ type: "list", ordered: false, items: [listItemOf(element.children, null, depth)] }];
    case "ac:task-list": {
      const items = childElements(element, "ac:task").map((task) => {
        const status = childElements(task, "ac:task-status")[0];
        const body = childElements(task, "ac:task-body")[0];
        return listItemOf(body?.children ?? [], status ? textContent(status).trim() === "complete" : false, depth);
      });
      return items.length ? [{ type: "list", ordered: false, items }] : [];
    }
    case "pre":
      return [{ type: "code", language: "", text: textContent(element).replace(/^\n/, "").replace(/\n$/, "") }];
    case "blockquote":
      return [{ type: "quote", blocks: storageBlocks(element.children, depth + 1) }];
    case "table": {
      const rows = tableRows(element);
      return rows.length ? [{ type: "table", rows }] : [];
    }
    case "hr":
      return [{ type: "divider" }];
    case "ac:structured-macro":
    case "ac:macro":
      return macroBlocks(element, depth);
    default:
      return storageBlocks(element.children, depth);
  }
}

function storageBlocks(nodes: readonly XNode[], depth: number): MdBlock[] {
  const out: MdBlock[] = [];
  let line: XNode[] = [];
  const flush = () => {
    const spans = inlineOf(line);
    if (spans.length) out.push({ type: "paragraph", spans });
    line = [];
  };
  for (const node of nodes) {
    if (node.kind === "element" && isBlock(node)) {
      flush();
      out.push(...blockOf(node, depth));
    } else line.push(node);
  }
  flush();
  return out;
}

/** Confluence storage format (XHTML with ac:/ri: elements) as Markdown. Never throws, never keeps markup. */
export function storageToMarkdown(storage: string): string {
  return renderMarkdown(storageBlocks(parseStorage(storage).children, 0));
}

// ---------------------------------------------------------------------------------------------------------------
// Markdown → storage format

/** Characters XML 1.0 forbids (most C0 controls, U+FFFE/FFFF, unpaired surrogates), which Confluence would refuse. */
const invalidXml = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

const escapeXml = (value: string) => value.replace(invalidXml, "").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const cdata = (value: string) => `<![CDATA[${value.replace(invalidXml, "").replace(/]]>/g, "]]]]><![CDATA[>")}]]>`;

const storageMarks: ReadonlyArray<{ readonly mark: "strike" | "bold" | "italic"; readonly open: string; readonly close: string }> = [
  { mark: "strike", open: '<span style="text-decoration: line-through;">', close: "</span>" },
  { mark: "bold", open: "<strong>", close: "</strong>" },
  { mark: "italic", open: "<em>", close: "</em>" },
];

function markedStorage(spans: readonly Span[]): string {
  let out = "";
  const open: Array<(typeof storageMarks)[number]> = [];
  for (const s of spans) {
    while (open.some((tag) => !s[tag.mark])) out += open.pop()!.close;
    for (const tag of storageMarks) {
      if (s[tag.mark] && !open.includes(tag)) {
        out += tag.open;
        open.push(tag);
      }
    }
    const value = escapeXml(s.text).replace(/\n/g, "<br />");
    out += s.code ? `<code>${value}</code>` : value;
  }
  while (open.length) out += open.pop()!.close;
  return out;
}

function inlineStorage(spans: readonly Span[]): string {
  return linkRuns(spans)
    .map(({ href, spans: run }) => (href ? `<a href="${escapeXml(href)}">${markedStorage(run)}</a>` : markedStorage(run)))
    .join("");
}

const confluenceLanguages: Readonly<Record<string, string>> = {
  javascript: "js",
  node: "js",
  python: "py",
  sh: "bash",
  shell: "bash",
  zsh: "bash",
  yaml: "yml",
  "c#": "csharp",
  cs: "csharp",
  "c++": "cpp",
  plaintext: "text",
  txt: "text",
  ts: "typescript",
};

function storageOf(blocks: readonly MdBlock[]): string {
  return blocks
    .map((block): string => {
      switch (block.type) {
        case "heading":
          return `<h${block.level}>${inlineStorage(block.spans)}</h${block.level}>`;
        case "paragraph":
          return `<p>${inlineStorage(block.spans)}</p>`;
        case "list": {
          if (block.items.length && block.items.every((item) => item.checked !== null)) {
            const tasks = block.items.map(
              (item) =>
                `<ac:task><ac:task-status>${item.checked ? "complete" : "incomplete"}</ac:task-status><ac:task-body>${inlineStorage(item.spans)}${storageOf(item.blocks)}</ac:task-body></ac:task>`,
            );
            return `<ac:task-list>${tasks.join("")}</ac:task-list>`;
          }
          const tag = block.ordered ? "ol" : "ul";
          const items = block.items.map((item) => {
            const box = item.checked === null ? [] : [span(item.checked ? "[x] " : "[ ] ")];
            return `<li>${inlineStorage([...box, ...item.spans])}${storageOf(item.blocks)}</li>`;
          });
          return `<${tag}>${items.join("")}</${tag}>`;
        }
        case "code": {
          const name = block.language.toLowerCase().replace(/[^\w#+.-]/g, "");
          const language = confluenceLanguages[name] ?? name;
          const parameter = language ? `<ac:parameter ac:name="language">${escapeXml(language)}</ac:parameter>` : "";
          return `<ac:structured-macro ac:name="code" ac:schema-version="1">${parameter}<ac:plain-text-body>${cdata(block.text)}</ac:plain-text-body></ac:structured-macro>`;
        }
        case "quote":
          return `<blockquote>${storageOf(block.blocks)}</blockquote>`;
        case "divider":
          return "<hr />";
        case "table": {
          const rows = block.rows.map((row, index) => {
            const cell = index === 0 ? "th" : "td";
            return `<tr>${row.map((spans) => `<${cell}>${inlineStorage(spans)}</${cell}>`).join("")}</tr>`;
          });
          return rows.length ? `<table><tbody>${rows.join("")}</tbody></table>` : "";
        }
        case "comment":
          return "";
      }
    })
    .join("");
}

/** Markdown as Confluence storage format: well-formed XHTML, every text and attribute escaped. */
export function markdownToStorage(markdown: string): string {
  return storageOf(parseMarkdown(markdown));
}
