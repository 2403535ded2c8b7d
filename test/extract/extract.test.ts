// extractText per type: what comes out, and the precise refusal for each kind of bad file.
import { ExtractError, extractText, type ExtractLimits } from "../../lib/extract/index.ts";
import { htmlDepthExceeds } from "../../lib/extract/html.ts";
import { docxEntries, makeDocx, makeEncryptedPdf, makeExe, makeOwnerProtectedPdf, makePdf, makeZip, png } from "./fixtures.ts";

const limits: ExtractLimits = { maxPdfPages: 5, maxDocxUncompressedBytes: 1024 * 1024, maxDocxEntries: 20 };
const extract = (bytes: Uint8Array, filename: string | null = null, l: ExtractLimits = limits) => extractText(bytes, { filename, limits: l });

/** The code and status extractText refuses `bytes` with. */
async function refusal(bytes: Uint8Array, filename: string | null = null, l: ExtractLimits = limits) {
  try {
    await extract(bytes, filename, l);
  } catch (error) {
    if (error instanceof ExtractError) return { code: error.code, status: error.status, message: error.message };
    throw error;
  }
  throw new Error("expected an ExtractError");
}

describe("text and Markdown", () => {
  test("UTF-8 text is kept exactly, without its BOM", async () => {
    const text = "Ünïcødé 😀 — line one\r\nline two\n";
    expect(await extract(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]), "notes.txt")).toEqual({
      format: "plain",
      text,
      detectedType: "text",
    });
  });

  test("Markdown by content or by a .md name", async () => {
    expect(await extract(Buffer.from("# Title\n\nBody"), "notes.txt")).toMatchObject({ format: "markdown", detectedType: "markdown" });
    expect(await extract(Buffer.from("no marks at all"), "notes.md")).toMatchObject({ format: "markdown", detectedType: "markdown" });
  });

  test("invalid UTF-8, a NUL byte, blank or empty files are BAD_INPUT", async () => {
    expect(await refusal(Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0x6e, 0x6f, 0x69, 0x72]))).toMatchObject({
      code: "BAD_INPUT",
      status: 400,
      message: expect.stringMatching(/UTF-8/),
    });
    expect(await refusal(Buffer.from([0xc3, 0x28]))).toMatchObject({ code: "BAD_INPUT" });
    expect(await refusal(Buffer.from("a\u0000b and more ordinary text"))).toMatchObject({ code: "BAD_INPUT", message: expect.stringMatching(/NUL/) });
    expect(await refusal(Buffer.from(" \n\t "))).toMatchObject({ code: "BAD_INPUT", message: expect.stringMatching(/no text/) });
    expect(await refusal(Buffer.alloc(0))).toMatchObject({ code: "BAD_INPUT", message: "The file is empty." });
    expect(await refusal(Buffer.from([0xef, 0xbb, 0xbf]))).toMatchObject({ code: "BAD_INPUT" });
  });
});

describe("HTML", () => {
  test("becomes plain text with its title; scripts, styles and images are dropped", async () => {
    const html = `<!doctype html><html><head><title>Release &amp; notes</title><style>p { color: red }</style>
      <script>document.write("injected")</script></head>
      <body><h1>Version 2</h1><p>Faster <b>uploads</b>, see <a href="https://example.com/x">the guide</a>.</p>
      <script>alert("x")</script><img src="https://example.com/i.png" alt="diagram">
      <ul><li>one</li><li>two</li></ul></body></html>`;
    const result = await extract(Buffer.from(html), "page.bin");
    expect(result).toMatchObject({ format: "plain", detectedType: "html", title: "Release & notes" });
    expect(result.text).toBe("Version 2\n\nFaster uploads, see the guide.\n\n * one\n * two");
    expect(result.text).not.toMatch(/injected|alert|color|example\.com|diagram/);
  });

  test("a page with no text is BAD_INPUT", async () => {
    expect(await refusal(Buffer.from("<html><body><script>x()</script><img src=a.png></body></html>"))).toMatchObject({ code: "BAD_INPUT" });
  });
});

describe("PDF", () => {
  test("text of every page, the document title and the page count", async () => {
    const pdf = makePdf({ title: "Quarterly (Q3) report", pages: [["Revenue grew", "Costs fell"], ["Outlook: stable"]] });
    expect(await extract(pdf, "report.pdf")).toEqual({
      format: "plain",
      text: "Revenue grew\nCosts fell\n\nOutlook: stable",
      title: "Quarterly (Q3) report",
      detectedType: "pdf",
      pages: 2,
    });
  });

  test("a real PDF named .txt is still extracted as a PDF", async () => {
    expect(await extract(makePdf(), "notes.txt")).toMatchObject({ detectedType: "pdf", text: "Hello from a PDF" });
  });

  test("more pages than allowed is TOO_LARGE", async () => {
    const pdf = makePdf({ pages: Array.from({ length: 6 }, (_, i) => [`page ${i + 1}`]) });
    expect(await refusal(pdf)).toEqual({ code: "TOO_LARGE", status: 413, message: "The PDF has 6 pages; at most 5 are accepted." });
    expect(await extract(pdf, null, { ...limits, maxPdfPages: 6 })).toMatchObject({ pages: 6 });
  });

  test("an encrypted PDF is BAD_INPUT, whether it needs a password or only restricts copying", async () => {
    expect(await refusal(makeEncryptedPdf())).toMatchObject({ code: "BAD_INPUT", status: 400, message: expect.stringMatching(/password/) });
    // This one opens (and pdf.js decrypts it) without a password; it is refused all the same.
    expect(await refusal(makeOwnerProtectedPdf())).toEqual({ code: "BAD_INPUT", status: 400, message: "The PDF is encrypted; upload an unencrypted copy." });
  });

  test("a corrupt or truncated PDF is BAD_INPUT", async () => {
    expect(await refusal(Buffer.from("%PDF-1.7\nthis is not a PDF at all\n"))).toMatchObject({
      code: "BAD_INPUT",
      message: "The PDF is corrupt or malformed.",
    });
    const pdf = makePdf();
    expect(await refusal(pdf.subarray(0, 40))).toMatchObject({ code: "BAD_INPUT" });
  });

  test("a PDF without text (a scan) is BAD_INPUT", async () => {
    expect(await refusal(makePdf({ pages: [[]] }))).toMatchObject({ code: "BAD_INPUT", message: expect.stringMatching(/No text/) });
  });
});

describe("DOCX", () => {
  test("raw text, paragraphs separated by blank lines", async () => {
    expect(await extract(makeDocx(["Meeting notes", "Ship it & celebrate <soon>"]), "notes.docx")).toEqual({
      format: "plain",
      text: "Meeting notes\n\nShip it & celebrate <soon>",
      detectedType: "docx",
    });
  });

  test("a ZIP that is not a Word document, or no ZIP at all, is UNSUPPORTED_TYPE whatever its name", async () => {
    expect(await refusal(makeZip([{ name: "readme.txt", data: "hello" }]), "report.docx")).toMatchObject({ code: "UNSUPPORTED_TYPE", status: 415 });
    expect(await refusal(makeExe(), "report.docx")).toMatchObject({ code: "UNSUPPORTED_TYPE" });
  });

  test("zip bomb: too many entries is TOO_LARGE, before any is read", async () => {
    const many = [...docxEntries(["x"]), ...Array.from({ length: 30 }, (_, i) => ({ name: `word/media/${i}.xml`, data: "<x/>" }))];
    expect(await refusal(makeZip(many))).toEqual({ code: "TOO_LARGE", status: 413, message: "The archive has 33 entries; at most 20 are accepted." });
  });

  test("zip bomb: a huge total uncompressed size is TOO_LARGE", async () => {
    // 2 MiB of spaces deflate to about 2 KiB: a small file that expands past the 1 MiB limit.
    const entries = [...docxEntries(["x"]), { name: "word/filler.xml", data: Buffer.alloc(2 * 1024 * 1024, 0x20) }];
    const zip = makeZip(entries);
    expect(zip.length).toBeLessThan(10_000);
    expect(await refusal(zip)).toMatchObject({ code: "TOO_LARGE", status: 413, message: expect.stringMatching(/expands to more than 1048576 bytes/) });
  });

  test("zip bomb: an absurd compression ratio is BAD_INPUT even under the size limit", async () => {
    const entries = [...docxEntries(["x"]), { name: "word/filler.xml", data: Buffer.alloc(3 * 1024 * 1024, 0x20) }];
    const roomy = { ...limits, maxDocxUncompressedBytes: 10 * 1024 * 1024 };
    expect(await refusal(makeZip(entries), null, roomy)).toMatchObject({ code: "BAD_INPUT", message: expect.stringMatching(/compression ratio/) });
  });

  test("zip bomb: an entry that inflates past its declared size is refused before mammoth reads it", async () => {
    const entries = docxEntries(["x"]);
    const lying = entries.map((e) => (e.name === "word/document.xml" ? { ...e, declaredSize: 10 } : e));
    expect(await refusal(makeZip(lying))).toMatchObject({ code: "BAD_INPUT", message: "The DOCX file is corrupt or malformed." });
  });

  test("a truncated archive, or one whose document is not XML, is BAD_INPUT", async () => {
    const docx = makeDocx(["hello"]);
    expect(await refusal(docx.subarray(0, docx.length - 30))).toMatchObject({ code: "BAD_INPUT" });
    const broken = makeZip([...docxEntries([]).filter((e) => e.name !== "word/document.xml"), { name: "word/document.xml", data: "<w:document" }]);
    expect(await refusal(broken)).toMatchObject({ code: "BAD_INPUT" });
  });

  test("a document with no text is BAD_INPUT", async () => {
    expect(await refusal(makeDocx([]))).toMatchObject({ code: "BAD_INPUT", message: expect.stringMatching(/No text/) });
  });
});

test("disguised binaries are UNSUPPORTED_TYPE whatever their name", async () => {
  expect(await refusal(makeExe(), "invoice.pdf")).toMatchObject({
    code: "UNSUPPORTED_TYPE",
    status: 415,
    message: expect.stringMatching(/Windows executable/),
  });
  expect(await refusal(png, "notes.txt")).toMatchObject({ code: "UNSUPPORTED_TYPE", message: expect.stringMatching(/PNG/) });
  expect(await refusal(png, "notes.md")).toMatchObject({ code: "UNSUPPORTED_TYPE" });
});

describe("deeply nested input", () => {
  // html-to-text walks the DOM recursively: ten thousand levels overflow its stack, which is the file's doing.
  test.each([
    ["divs", "<div>", "</div>"],
    ["lists", "<ul><li>", "</li></ul>"],
    ["tables", "<table><tr><td>", "</td></tr></table>"],
  ])("HTML nested 10,000 levels deep (%s) is BAD_INPUT, not an internal error", async (_name, open, close) => {
    const html = `<!doctype html><title>Deep</title>${open.repeat(10_000)}deep${close.repeat(10_000)}`;
    await expect(extract(Buffer.from(html), "deep.html")).rejects.toMatchObject({
      name: "ExtractError",
      code: "BAD_INPUT",
      message: expect.stringMatching(/nested too deeply/),
    });
  });

  test("while nesting a hundred levels deep is read", async () => {
    const html = `<!doctype html><title>Nested</title>${"<div>".repeat(100)}inside${"</div>".repeat(100)}`;
    expect(await extract(Buffer.from(html), "nested.html")).toMatchObject({ text: "inside", detectedType: "html" });
  });

  test("Markdown is stored as written, so its nesting is never walked", async () => {
    const markdown = `${"> ".repeat(10_000)}quoted`;
    expect(await extract(Buffer.from(markdown), "deep.md")).toMatchObject({ format: "markdown", text: markdown });
  });
});

describe("htmlDepthExceeds", () => {
  test.each([
    ["closed divs", `${"<div>".repeat(50)}${"</div>".repeat(50)}`, 50, false],
    ["one more than the limit", `${"<div>".repeat(51)}`, 50, true],
    ["siblings, each closed", "<div><span>x</div>".repeat(500), 50, false],
    ["list items without end tags", `<ul>${"<li>x".repeat(500)}</ul>`, 50, false],
    ["void elements", "<br><img src=x><hr/>".repeat(500), 50, false],
    ["tags inside a script or a comment", `<script>${"'<div>'".repeat(500)}</script><!-- ${"<div>".repeat(500)} -->`, 50, false],
    ["nested lists", `${"<ul><li>".repeat(51)}`, 50, true],
  ])("%s", (_name, html, limit, expected) => {
    expect(htmlDepthExceeds(html, limit)).toBe(expected);
  });
});
