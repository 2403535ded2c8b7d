// Cutting text without splitting a surrogate pair (lib/unicode.ts), the one rule every bounded cut uses.
import { inUtf16Pieces, pairSafeEnd } from "../../lib/unicode.ts";

test("a cut that would fall between the halves of a pair moves one unit earlier; any other stays", () => {
  const text = "ab🙂cd"; // 🙂 is units 2 and 3
  expect([0, 1, 2, 3, 4, 5, 6].map((end) => pairSafeEnd(text, end))).toEqual([0, 1, 2, 2, 4, 5, 6]);
  // At the very end there is nothing to split.
  expect(pairSafeEnd("a\ud83d", 2)).toBe(2);
});

test("pieces are at most the size, join into the text, and never hold a lone half", () => {
  const text = "x🙂".repeat(50);
  const pieces = inUtf16Pieces(text, 4);
  expect(pieces.join("")).toBe(text);
  for (const piece of pieces) {
    expect(piece.length).toBeLessThanOrEqual(4);
    expect(piece.isWellFormed()).toBe(true);
  }
  expect(inUtf16Pieces("", 4)).toEqual([]);
});
