// Text from an uploaded file. The type is decided from the bytes (sniff.ts); the file name only chooses between
// text formats. What comes out is what a document stores: `plain` or `markdown` text, never HTML.
//
//   detected  | from                                       | stored as
//   text      | UTF-8 text (BOM dropped)                   | plain
//   markdown  | UTF-8 text that looks like Markdown or .md | markdown
//   html      | UTF-8 text that looks like HTML or .html   | plain (html-to-text; scripts, styles, images dropped)
//   pdf       | %PDF- header                               | plain (pdf.js text, pages separated by blank lines)
//   docx      | ZIP with word/document.xml                 | plain (mammoth raw text)
//
// Everything else is UNSUPPORTED_TYPE. Failures are ExtractErrors (errors.ts) with a client-facing code and status.
// This runs in the calling thread; extractTextIsolated (isolated.ts) runs it in a worker thread with time and memory
// bounds.
import { extractDocx, inspectZip } from "./docx.ts";
import { ExtractError } from "./errors.ts";
import { htmlToText } from "./html.ts";
import { sniff, textKind } from "./sniff.ts";
import { decodeUtf8Text } from "./text.ts";

export { ExtractError } from "./errors.ts";

export type DetectedType = "text" | "markdown" | "html" | "pdf" | "docx";

export interface ExtractLimits {
  readonly maxPdfPages: number;
  readonly maxDocxUncompressedBytes: number;
  readonly maxDocxEntries: number;
}

export interface ExtractOptions {
  /** The name the client gave the file; it never makes binary data acceptable. */
  readonly filename?: string | null;
  readonly limits: ExtractLimits;
}

export interface Extracted {
  readonly format: "plain" | "markdown";
  readonly text: string;
  /** The PDF's or HTML page's own title, when it has one. */
  readonly title?: string;
  readonly detectedType: DetectedType;
  readonly pages?: number;
}

/** NUL cannot be stored in PostgreSQL text; extractors sometimes produce it for glyphs they cannot map. */
const withoutNul = (text: string) => text.replaceAll("\u0000", "");

const cleanTitle = (title: string | null | undefined): string | undefined => {
  const cleaned = (title ?? "")
    .replace(/[\u0000-\u001f\u007f]+/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  return cleaned === "" ? undefined : [...cleaned].slice(0, 500).join("");
};

const nonEmpty = (text: string, what: string): string => {
  if (text.trim() === "") throw new ExtractError("BAD_INPUT", `No text could be extracted from the ${what}.`);
  return text;
};

/**
 * A JavaScript stack overflow: the parsers and converters (html-to-text, mammoth's XML reader, pdf.js) walk nested
 * structures recursively, so a file nested thousands of levels deep (`<div>` in `<div>`…) overflows the stack.
 * Read by shape: the error may come from another realm.
 */
const isStackOverflow = (error: unknown) =>
  (error as { name?: unknown } | null)?.name === "RangeError" && /call stack/i.test(String((error as { message?: unknown }).message));

/** The text of an uploaded file; an ExtractError (with the client's code) for everything the file itself causes. */
export async function extractText(bytes: Uint8Array, options: ExtractOptions): Promise<Extracted> {
  try {
    return await extractFrom(bytes, options);
  } catch (error) {
    if (isStackOverflow(error)) {
      throw new ExtractError("BAD_INPUT", "The file is nested too deeply to read (elements inside elements, thousands of levels).", {
        cause: error,
      });
    }
    throw error;
  }
}

async function extractFrom(bytes: Uint8Array, { filename, limits }: ExtractOptions): Promise<Extracted> {
  if (bytes.length === 0) throw new ExtractError("BAD_INPUT", "The file is empty.");
  const sniffed = sniff(bytes);
  switch (sniffed.kind) {
    case "pdf": {
      // pdf.js is large: load it only for PDFs.
      const { extractPdf } = await import("./pdf.ts");
      const pdf = await extractPdf(bytes, { maxPages: limits.maxPdfPages });
      const text = nonEmpty(withoutNul(pdf.text), "PDF (is it a scan without a text layer?)");
      return { format: "plain", text, title: cleanTitle(pdf.title), detectedType: "pdf", pages: pdf.pages };
    }
    case "zip": {
      const zip = await inspectZip(bytes, { maxEntries: limits.maxDocxEntries, maxUncompressedBytes: limits.maxDocxUncompressedBytes });
      if (!zip.isDocx) throw new ExtractError("UNSUPPORTED_TYPE", "The file is a ZIP archive but not a Word (DOCX) document.");
      const text = nonEmpty(withoutNul(await extractDocx(bytes)), "DOCX document");
      return { format: "plain", text, detectedType: "docx" };
    }
    case "binary":
      throw new ExtractError("UNSUPPORTED_TYPE", `Unsupported file type (${sniffed.what}). Upload UTF-8 text, Markdown, HTML, PDF or DOCX.`);
    case "text": {
      const text = decodeUtf8Text(bytes);
      const kind = textKind(text, filename);
      if (kind === "html") {
        const html = htmlToText(text);
        return { format: "plain", text: nonEmpty(html.text, "HTML page"), title: cleanTitle(html.title), detectedType: "html" };
      }
      return kind === "markdown" ? { format: "markdown", text, detectedType: "markdown" } : { format: "plain", text, detectedType: "text" };
    }
  }
}
