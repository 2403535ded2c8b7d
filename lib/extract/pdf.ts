// PDF text with Mozilla's pdf.js (pdfjs-dist, legacy build for Node), set up to read, never to run or fetch: no
// eval (pdf.js 6 has no eval or `new Function` path left, which is why its old `isEvalSupported` switch is gone),
// no font or CMap loading (no standard-font or CMap URLs, no system fonts, no font faces), no WebAssembly, no XFA,
// no worker fetches. pdf.js's own worker code runs in this thread (a "fake worker"), so time and memory bounds are
// the caller's: extractTextIsolated (isolated.ts) runs this in a worker thread it stops when either is exceeded.
// A PDF with more pages than allowed is refused before any page is read, and so is an encrypted one (whether or not
// it needs a password to open: its author chose to protect it).
import { getDocument, InvalidPDFException, PasswordException, VerbosityLevel, type PDFDocumentProxy } from "pdfjs-dist/legacy/build/pdf.mjs";
import { ExtractError } from "./errors.ts";

/** pdf.js looks for its worker's message handler here before trying to load the worker script itself. */
const pdfjsGlobal = globalThis as { pdfjsWorker?: unknown };
const workerModule = "pdfjs-dist/legacy/build/pdf.worker.mjs";

async function loadWorkerInThisThread(): Promise<void> {
  pdfjsGlobal.pdfjsWorker ??= await import(workerModule);
}

export interface PdfText {
  readonly text: string;
  readonly title: string | null;
  readonly pages: number;
}

interface TextItem {
  readonly str?: string;
  readonly hasEOL?: boolean;
}

/** The text of each page, pages separated by a blank line. TOO_LARGE over `maxPages`; BAD_INPUT when unreadable. */
export async function extractPdf(bytes: Uint8Array, { maxPages }: { maxPages: number }): Promise<PdfText> {
  await loadWorkerInThisThread();
  const task = getDocument({
    // pdf.js takes ownership of (and may detach) the buffer it is given: hand it a copy.
    data: new Uint8Array(bytes),
    disableFontFace: true,
    useSystemFonts: false,
    useWorkerFetch: false,
    useWasm: false,
    isOffscreenCanvasSupported: false,
    isImageDecoderSupported: false,
    enableXfa: false,
    disableAutoFetch: true,
    disableStream: true,
    disableRange: true,
    stopAtErrors: false,
    verbosity: VerbosityLevel.ERRORS,
  });
  try {
    let document: PDFDocumentProxy;
    try {
      document = await task.promise;
    } catch (error) {
      if (error instanceof PasswordException)
        throw new ExtractError("BAD_INPUT", "The PDF is password-protected; upload an unprotected copy.", { cause: error });
      const message = error instanceof InvalidPDFException ? "The PDF is corrupt or malformed." : "The PDF could not be read.";
      throw new ExtractError("BAD_INPUT", message, { cause: error });
    }
    const pages = document.numPages;
    if (pages > maxPages) throw new ExtractError("TOO_LARGE", `The PDF has ${pages} pages; at most ${maxPages} are accepted.`);
    let info: Record<string, unknown> = {};
    try {
      info = ((await document.getMetadata()).info ?? {}) as Record<string, unknown>;
    } catch {
      // Metadata is optional: a PDF whose Info dictionary is broken is still read for its text.
    }
    if (info["EncryptFilterName"] != null) throw new ExtractError("BAD_INPUT", "The PDF is encrypted; upload an unencrypted copy.");
    const texts: string[] = [];
    try {
      for (let number = 1; number <= pages; number++) {
        const page = await document.getPage(number);
        const content = await page.getTextContent();
        texts.push((content.items as TextItem[]).map((item) => (item.str ?? "") + (item.hasEOL ? "\n" : "")).join(""));
        page.cleanup();
      }
    } catch (error) {
      throw new ExtractError("BAD_INPUT", "The PDF is corrupt or malformed.", { cause: error });
    }
    const title = typeof info["Title"] === "string" ? info["Title"] : null;
    return {
      text: texts
        .map((t) => t.trim())
        .filter((t) => t !== "")
        .join("\n\n"),
      title,
      pages,
    };
  } finally {
    await task.destroy();
  }
}
