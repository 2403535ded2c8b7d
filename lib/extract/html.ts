// HTML to plain text with html-to-text (htmlparser2 underneath). It is a pure string transformation: nothing is
// fetched or run. Scripts, styles, images, embedded objects, forms and the <head> are dropped; links keep their
// text but not their address; headings keep their case; tables become rows of cells. The result is stored as
// `plain`: html-to-text's output is readable text, not Markdown.
import { convert, type HtmlToTextOptions } from "html-to-text";
import { ExtractError } from "./errors.ts";

const skipped = [
  "head",
  "title",
  "script",
  "style",
  "noscript",
  "template",
  "img",
  "picture",
  "svg",
  "canvas",
  "iframe",
  "object",
  "embed",
  "audio",
  "video",
  "source",
  "track",
  "input",
  "button",
  "select",
  "textarea",
];

const heading = (selector: string) => ({ selector, options: { uppercase: false } });

const textOptions = (inputLength: number): HtmlToTextOptions => ({
  wordwrap: false,
  // The upload's own size limit applies: never silently truncate (html-to-text's default cuts at 16 MiB).
  limits: { maxInputLength: inputLength + 1 },
  selectors: [
    ...skipped.map((selector) => ({ selector, format: "skip" })),
    { selector: "a", options: { ignoreHref: true } },
    { selector: "table", format: "dataTable", options: { uppercaseHeaderCells: false } },
    ...["h1", "h2", "h3", "h4", "h5", "h6"].map(heading),
  ],
});

const titleOptions = (inputLength: number): HtmlToTextOptions => ({
  wordwrap: false,
  limits: { maxInputLength: inputLength + 1 },
  baseElements: { selectors: ["title"], returnDomByDefault: false },
});

/** Deeper nesting than this is no document anyone wrote by hand; html-to-text, which recurses, is not asked to walk it. */
export const maxHtmlDepth = 1000;

/** Elements that never hold others, or whose end tag is optional (a parser closes them itself): they are not counted. */
const uncounted = new Set(
  "area base br col embed hr img input link meta source track wbr li p dt dd td th tr thead tbody tfoot option optgroup rb rt rtc rp caption colgroup".split(
    " ",
  ),
);
/** Elements whose content is raw text: a `<div>` inside a script is not an element. */
const rawText = new Set(["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext"]);

/**
 * How deeply the elements of `html` nest, at least: a scan of its tags with a stack of open elements, closed as an
 * HTML parser closes them (an end tag closes up to its element; one with nothing to close is ignored), stopping as
 * soon as `limit` is passed. Elements with optional end tags are left out, so the count never exceeds the real depth.
 * Linear and iterative, so a hostile page costs one pass.
 */
export function htmlDepthExceeds(html: string, limit: number): boolean {
  const stack: string[] = [];
  const tag = /<!--|<(\/?)([a-zA-Z][a-zA-Z0-9:-]*)[^>]*?(\/?)>/g;
  for (let match = tag.exec(html); match !== null; match = tag.exec(html)) {
    if (match[0] === "<!--") {
      const end = html.indexOf("-->", tag.lastIndex);
      if (end < 0) break;
      tag.lastIndex = end + 3;
      continue;
    }
    const name = match[2]!.toLowerCase();
    if (match[1] === "/") {
      const open = stack.lastIndexOf(name);
      if (open >= 0) stack.length = open;
      continue;
    }
    if (rawText.has(name)) {
      const close = new RegExp(`</${name}`, "gi");
      close.lastIndex = tag.lastIndex;
      const end = close.exec(html);
      if (end === null) break;
      tag.lastIndex = end.index;
      continue;
    }
    if (match[3] === "/" || uncounted.has(name)) continue;
    stack.push(name);
    if (stack.length > limit) return true;
  }
  return false;
}

/** The readable text of `html` and its <title>, if it has a non-blank one. */
export function htmlToText(html: string): { text: string; title: string | null } {
  if (htmlDepthExceeds(html, maxHtmlDepth)) {
    throw new ExtractError("BAD_INPUT", `The file is nested too deeply to read (elements more than ${maxHtmlDepth} levels deep).`);
  }
  const text = convert(html, textOptions(html.length)).trim();
  const title = convert(html, titleOptions(html.length)).replace(/\s+/g, " ").trim();
  return { text, title: title === "" ? null : title };
}
