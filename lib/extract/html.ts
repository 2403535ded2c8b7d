// HTML to plain text with html-to-text (htmlparser2 underneath). It is a pure string transformation: nothing is
// fetched or run. Scripts, styles, images, embedded objects, forms and the <head> are dropped; links keep their
// text but not their address; headings keep their case; tables become rows of cells. The result is stored as
// `plain`: html-to-text's output is readable text, not Markdown.
import { convert, type HtmlToTextOptions } from "html-to-text";

const skipped = ["head", "title", "script", "style", "noscript", "template", "img", "picture", "svg", "canvas", "iframe", "object", "embed", "audio", "video", "source", "track", "input", "button", "select", "textarea"];

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

/** The readable text of `html` and its <title>, if it has a non-blank one. */
export function htmlToText(html: string): { text: string; title: string | null } {
  const text = convert(html, textOptions(html.length)).trim();
  const title = convert(html, titleOptions(html.length)).replace(/\s+/g, " ").trim();
  return { text, title: title === "" ? null : title };
}
