// Cutting text by UTF-16 length without splitting a character: a surrogate pair (an emoji, a rare CJK character)
// cut in two leaves a lone half, which PostgreSQL's text and JSON refuse and a reader shows as garbage.

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

/** `end`, or one unit earlier when `text` would be cut there between the two halves of a surrogate pair. */
export function pairSafeEnd(text: string, end: number): number {
  return end > 0 && end < text.length && isHighSurrogate(text.charCodeAt(end - 1)) ? end - 1 : end;
}

/** `text` in pieces of at most `size` (≥ 2) UTF-16 units, never splitting a surrogate pair; they join into `text`. */
export function inUtf16Pieces(text: string, size: number): string[] {
  const pieces: string[] = [];
  for (let start = 0; start < text.length;) {
    const end = pairSafeEnd(text, Math.min(text.length, start + size));
    pieces.push(text.slice(start, end));
    start = end;
  }
  return pieces;
}
