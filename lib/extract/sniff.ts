// What a file is, decided from its bytes alone: a name or a declared content type never makes bytes acceptable.
// PDF by its `%PDF-` header, ZIP by its local-file (or empty-archive) signature (whether a ZIP is a DOCX is decided
// from its central directory, in docx.ts), known binary formats by their magic numbers, and anything else by
// whether it looks like text at all (few control bytes). Text is then decoded strictly as UTF-8 (text.ts).
export type Sniffed = { readonly kind: "pdf" } | { readonly kind: "zip" } | { readonly kind: "text" } | { readonly kind: "binary"; readonly what: string };

const startsWith = (bytes: Uint8Array, signature: readonly number[], at = 0) =>
  bytes.length >= at + signature.length && signature.every((b, i) => bytes[at + i] === b);
const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));

/** Binary formats recognised by their first bytes (only unambiguous signatures: none of these starts real text). */
const binarySignatures: ReadonlyArray<{ what: string; bytes: readonly number[]; at?: number }> = [
  { what: "PNG image", bytes: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] },
  { what: "JPEG image", bytes: [0xff, 0xd8, 0xff] },
  { what: "GIF image", bytes: ascii("GIF8") },
  { what: "TIFF image", bytes: [0x49, 0x49, 0x2a, 0x00] },
  { what: "TIFF image", bytes: [0x4d, 0x4d, 0x00, 0x2a] },
  { what: "RIFF media (WebP, WAV, AVI)", bytes: ascii("RIFF") },
  { what: "Ogg media", bytes: ascii("OggS") },
  { what: "FLAC audio", bytes: ascii("fLaC") },
  { what: "MP4/QuickTime media", bytes: ascii("ftyp"), at: 4 },
  { what: "ELF executable", bytes: [0x7f, 0x45, 0x4c, 0x46] },
  { what: "Mach-O executable", bytes: [0xfe, 0xed, 0xfa, 0xce] },
  { what: "Mach-O executable", bytes: [0xfe, 0xed, 0xfa, 0xcf] },
  { what: "Mach-O executable", bytes: [0xce, 0xfa, 0xed, 0xfe] },
  { what: "Mach-O executable", bytes: [0xcf, 0xfa, 0xed, 0xfe] },
  { what: "Java class or Mach-O universal binary", bytes: [0xca, 0xfe, 0xba, 0xbe] },
  { what: "WebAssembly module", bytes: [0x00, 0x61, 0x73, 0x6d] },
  { what: "gzip archive", bytes: [0x1f, 0x8b] },
  { what: "bzip2 archive", bytes: ascii("BZh") },
  { what: "xz archive", bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { what: "zstd archive", bytes: [0x28, 0xb5, 0x2f, 0xfd] },
  { what: "7-Zip archive", bytes: [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c] },
  { what: "RAR archive", bytes: ascii("Rar!\x1a\x07") },
  { what: "tar archive", bytes: ascii("ustar"), at: 257 },
  { what: "OLE compound file (legacy Office document, or an encrypted DOCX)", bytes: [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1] },
  { what: "SQLite database", bytes: ascii("SQLite format 3\x00") },
  { what: "UTF-16 text (only UTF-8 is accepted)", bytes: [0xfe, 0xff] },
  { what: "UTF-16 text (only UTF-8 is accepted)", bytes: [0xff, 0xfe] },
];

/** Bytes that plain text does not contain (C0 controls other than tab, line feed, vertical tab, form feed, CR, ESC). */
const isControlByte = (b: number) => b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0b && b !== 0x0c && b !== 0x0d && b !== 0x1b;

/** How much of a file's start the text heuristic looks at, and the share of control bytes that makes it binary. */
const sampleBytes = 8192;
const binaryShare = 0.05;

export function sniff(bytes: Uint8Array): Sniffed {
  if (startsWith(bytes, ascii("%PDF-"))) return { kind: "pdf" };
  if (startsWith(bytes, [0x50, 0x4b, 0x03, 0x04]) || startsWith(bytes, [0x50, 0x4b, 0x05, 0x06])) return { kind: "zip" };
  for (const { what, bytes: signature, at } of binarySignatures) {
    if (startsWith(bytes, signature, at)) return { kind: "binary", what };
  }
  // "MZ" alone could begin a sentence; a DOS/Windows executable's header is full of NUL bytes.
  if (startsWith(bytes, ascii("MZ")) && bytes.subarray(0, 64).includes(0)) return { kind: "binary", what: "Windows executable" };
  const sample = bytes.subarray(0, sampleBytes);
  let controls = 0;
  for (const b of sample) if (isControlByte(b)) controls++;
  // A stray NUL or two is still text (refused later as BAD_INPUT with a precise reason); a binary format is not.
  if (controls > Math.max(1, sample.length * binaryShare)) return { kind: "binary", what: "binary data" };
  return { kind: "text" };
}

export type TextKind = "plain" | "markdown" | "html";

const extensionOf = (filename: string | null | undefined) => /\.([A-Za-z0-9]{1,10})$/.exec(filename ?? "")?.[1]?.toLowerCase() ?? null;

/** An HTML document or fragment: its first tag (after a BOM, blank space and comments) is a typical HTML element. */
export function looksLikeHtml(text: string): boolean {
  const start = text
    .slice(0, 4096)
    .replace(/^\uFEFF/, "")
    .replace(/^(\s|<!--[\s\S]*?-->)+/, "");
  return /^<(!doctype\s+html|html|head|body|meta|title|p|div|span|h[1-6]|table|ul|ol|section|article|main|header|nav|pre|blockquote|br|a)[\s>/]/i.test(start);
}

/** Markdown: a heading, a fenced code block, a link or image, or a table, or at least two lighter signs (lists, emphasis, quotes). */
export function looksLikeMarkdown(text: string): boolean {
  const sample = text.slice(0, 65536);
  const strong = [
    /^#{1,6}[ \t]+\S/m, // ATX heading
    /^(```|~~~)/m, // fenced code
    /!?\[[^\]\n]+\]\([^)\s]+\)/, // [link](url) or ![image](url)
    /^\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*$/m, // table separator row
    /^\S.*\n(=+|-+)[ \t]*$/m, // setext heading
  ];
  if (strong.some((pattern) => pattern.test(sample))) return true;
  const light = [/^[ \t]{0,3}[-*+][ \t]+\S/m, /^[ \t]{0,3}\d+[.)][ \t]+\S/m, /(\*\*|__)\S[^\n]*?\S\1/, /^>[ \t]?\S/m, /`[^`\n]+`/];
  return light.filter((pattern) => pattern.test(sample)).length >= 2;
}

/**
 * Which text format valid UTF-8 text is. The name may only choose between text formats (`.md`/`.markdown` make it
 * Markdown, `.html`/`.htm` make it HTML); the content decides otherwise.
 */
export function textKind(text: string, filename?: string | null): TextKind {
  const extension = extensionOf(filename);
  if (extension === "html" || extension === "htm" || extension === "xhtml" || looksLikeHtml(text)) return "html";
  if (extension === "md" || extension === "markdown" || looksLikeMarkdown(text)) return "markdown";
  return "plain";
}
