// Plain text and Markdown: stored as they are, once they are known to be valid UTF-8 without NUL bytes (what a
// PostgreSQL `text` value can hold). A UTF-8 byte-order mark is dropped; nothing else is changed.
import { ExtractError } from "./errors.ts";

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** The text of UTF-8 `bytes`, without a leading BOM. BAD_INPUT when not valid UTF-8, with a NUL, or blank. */
export function decodeUtf8Text(bytes: Uint8Array): string {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch (error) {
    throw new ExtractError("BAD_INPUT", "The file is not valid UTF-8 text (only UTF-8 is accepted).", { cause: error });
  }
  if (text.includes("\u0000")) throw new ExtractError("BAD_INPUT", "The text contains a NUL byte.");
  if (text.trim() === "") throw new ExtractError("BAD_INPUT", "The file contains no text.");
  return text;
}
