// DOCX: a ZIP whose central directory is checked with yauzl before anything else touches it, then read with
// mammoth's extractRawText (paragraphs separated by blank lines; images and external links are never read).
// Zip bombs are refused in three steps: the declared entry count and the declared total uncompressed size against
// the limits, each entry's declared compression ratio, and then every entry is actually inflated (and discarded)
// with yauzl checking that it yields exactly the declared size, so a directory that lies about sizes is refused
// before mammoth (whose own unzipper trusts it) sees the file.
import mammoth from "mammoth";
import yauzl from "yauzl";
import { ExtractError } from "./errors.ts";

export interface ZipLimits {
  readonly maxEntries: number;
  readonly maxUncompressedBytes: number;
}

/** A declared ratio above this, for an entry over 1 MiB, is no document: deflate's own ceiling is about 1032. */
const maxCompressionRatio = 250;
const ratioCheckedFrom = 1024 * 1024;

const corrupt = (cause?: unknown) => new ExtractError("BAD_INPUT", "The DOCX file is corrupt or malformed.", { cause });

export interface ZipSummary {
  readonly entries: number;
  readonly uncompressedBytes: number;
  /** Whether the archive holds `word/document.xml`, i.e. is a Word document rather than some other ZIP. */
  readonly isDocx: boolean;
}

/**
 * Checks a ZIP archive against `limits` from its central directory and, for a DOCX, by inflating every entry.
 * TOO_LARGE when it has too many entries or too many uncompressed bytes; BAD_INPUT when it is malformed, encrypted,
 * uses an unknown compression method, names an entry twice, or an entry's declared ratio or actual size gives it
 * away as a zip bomb.
 */
export async function inspectZip(bytes: Uint8Array, limits: ZipLimits): Promise<ZipSummary> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.fromBufferPromise(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
      lazyEntries: true,
      autoClose: false,
      validateEntrySizes: true,
      strictFileNames: false,
    });
  } catch (error) {
    throw corrupt(error);
  }
  try {
    if (zip.entryCount > limits.maxEntries) {
      throw new ExtractError("TOO_LARGE", `The archive has ${zip.entryCount} entries; at most ${limits.maxEntries} are accepted.`);
    }
    const entries: yauzl.Entry[] = [];
    const names = new Set<string>();
    let declared = 0;
    try {
      for await (const entry of zip.eachEntry()) entries.push(entry);
    } catch (error) {
      throw corrupt(error);
    }
    for (const entry of entries) {
      if (names.has(entry.fileName)) throw new ExtractError("BAD_INPUT", "The archive names an entry twice.");
      names.add(entry.fileName);
      if (entry.isEncrypted()) throw new ExtractError("BAD_INPUT", "The archive is encrypted; upload an unencrypted copy.");
      if (!entry.canDecodeFileData()) throw new ExtractError("BAD_INPUT", "The archive uses an unsupported compression method.");
      declared += entry.uncompressedSize;
      if (declared > limits.maxUncompressedBytes) {
        throw new ExtractError("TOO_LARGE", `The archive expands to more than ${limits.maxUncompressedBytes} bytes.`);
      }
      if (entry.uncompressedSize > ratioCheckedFrom && entry.uncompressedSize / Math.max(1, entry.compressedSize) > maxCompressionRatio) {
        throw new ExtractError("BAD_INPUT", "The archive's compression ratio is implausible (a zip bomb?).");
      }
    }
    const summary = { entries: entries.length, uncompressedBytes: declared, isDocx: names.has("word/document.xml") };
    if (!summary.isDocx) return summary; // refused by the caller: nothing of it is ever decompressed
    // The declared sizes passed: make sure they are true. yauzl fails a stream that yields more (or fewer) bytes
    // than declared, so at most `declared` bytes are ever inflated here.
    for (const entry of entries) {
      if (entry.fileName.endsWith("/")) continue;
      try {
        const stream = await zip.openReadStreamPromise(entry);
        for await (const _chunk of stream) {
          // Discarded: only the size check matters.
        }
      } catch (error) {
        throw corrupt(error);
      }
    }
    return summary;
  } finally {
    zip.close();
  }
}

/** The raw text of a DOCX already checked by {@link inspectZip}. */
export async function extractDocx(bytes: Uint8Array): Promise<string> {
  let result: { value: string };
  try {
    result = await mammoth.extractRawText({ buffer: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) });
  } catch (error) {
    throw corrupt(error);
  }
  return result.value.trimEnd();
}
