// An answer cites its sources with markers, [n] for the n-th source of the prompt, in whichever form the model
// writes them. This turns them into citations a reader can check: the source's chunk and document, and the sentence
// of the chunk that best supports the claim the marker follows, quoted verbatim (never the model's paraphrase of it).
// A marker that names no source is removed from the answer, as is one past the 50th cited source: a marker the
// reader cannot follow is worse than none.
import { matchTerms, oneLine, sentenceSpans, sharedTerms, type SentenceSpan, type SourceChunk } from "./sources.ts";
import { pairSafeEnd } from "../unicode.ts";

export interface Citation {
  /** The source's number, n of [n]: it is sources[n - 1]. */
  readonly marker: number;
  readonly chunkId: string;
  readonly documentId: string;
  /** The sentence of the source that best matches the claim, verbatim (a substring of its content), at most quoteMaxChars. */
  readonly quote: string;
  /** Order of the marker's first appearance in the answer, from 0. */
  readonly ordinal: number;
}

export interface CitedAnswer {
  /** The answer with the markers that name no source removed; the others as they were written. */
  readonly text: string;
  /** One per source cited, in order of first appearance; at most maxCitations. */
  readonly citations: Citation[];
}

/** Most citations of one answer: the markers of further sources are removed. */
export const maxCitations = 50;
/** Longest quote, in UTF-16 units: a longer sentence is cut at a word's end. */
export const quoteMaxChars = 500;

/**
 * A citation marker, with the spaces and tabs after it: [1], [1, 3] (or [1;3]) and the footnote form [^1]. What
 * looks like one but names no source ([0], [2.5], [-1], [^note]) is matched too, to be removed; a Markdown link's
 * label ([1](url)) is not a marker. Groups: 1 what is inside the brackets, 2 the spaces after. (The spaces before
 * are not matched: a pattern starting with a run of spaces would take quadratic time on a long run of them.)
 */
export const citationMarker = /\[(\^[^\s[\]]{1,32}|[ \t]*-?\d+(?:\.\d+)?(?:[ \t]*[,;][ \t]*-?\d+(?:\.\d+)?)*[ \t]*)\](?!\()([ \t]*)/g;

/**
 * The citations of `answer`, whose markers number `sources` from 1 (the prompt's `included`). Each source cited is
 * quoted once, for its first marker: the sentence of its content with the most words in common with the claim
 * (matchTerms; relative to both sentences' words), ties going to a sentence the claim repeats word for word, then to
 * the earlier one. The claim is the answer's text from the start of the sentence the marker follows, or from the
 * previous marker if that is later, to the marker (the whole sentence when that stretch has no word to match).
 */
export function citationsOf(answer: string, sources: readonly SourceChunk[]): CitedAnswer {
  // `text` keeps the markers that name a source; `clean` has none, for reading the answer's sentences.
  let text = "";
  let clean = "";
  let from = 0;
  // Where each marker was, as offsets in `clean`.
  const boundaries: number[] = [];
  // Each source cited, by number, with where in `clean` it was first cited; in order of first appearance.
  const first = new Map<number, number>();
  for (const match of answer.matchAll(citationMarker)) {
    const [marker, inside, after] = [match[0], match[1]!, match[2]!];
    const start = spacesBefore(answer, from, match.index);
    const between = answer.slice(from, start);
    const before = answer.slice(start, match.index);
    text += between;
    clean += between;
    from = match.index + marker.length;
    const at = clean.length;
    boundaries.push(at);
    clean += spacesAfter(clean, after);
    const numbers = numbersIn(inside, sources.length);
    const kept: number[] = [];
    for (const n of numbers) if (n !== null && cite(first, n, at)) kept.push(n);
    if (kept.length === 0) text += spacesAfter(text, after);
    else text += before + (kept.length === numbers.length ? marker : `[${kept.join(", ")}]${after}`);
  }
  text += answer.slice(from);
  clean += answer.slice(from);

  const sentences = sentenceSpans(clean);
  const citations = [...first].map(([marker, at], ordinal): Citation => {
    const source = sources[marker - 1]!;
    const quote = quoteFrom(claimBefore(clean, sentences, boundaries, at), source.content);
    return { marker, chunkId: source.chunkId, documentId: source.documentId, quote, ordinal };
  });
  return { text, citations };
}

/** Where the spaces and tabs before `index` start, not before `from`. */
function spacesBefore(text: string, from: number, index: number): number {
  let start = index;
  while (start > from && (text[start - 1] === " " || text[start - 1] === "\t")) start--;
  return start;
}

/** The spaces after a removed marker, kept unless what comes before it is empty or ends in whitespace: "a [9] b" → "a b". */
const spacesAfter = (before: string, spaces: string) => (/^\s?$/.test(before.at(-1) ?? "") ? "" : spaces);

/** The numbers inside a marker's brackets, each null unless it is a whole number from 1 to `count`. */
function numbersIn(inside: string, count: number): (number | null)[] {
  const items = inside.startsWith("^") ? [inside.slice(1)] : inside.split(/[,;]/);
  return items.map((item) => {
    const n = /^\s*\d+\s*$/.test(item) ? Number(item) : 0;
    return n >= 1 && n <= count ? n : null;
  });
}

/** Whether source `n` may be cited: it already is, or it is now (first cited at `at`) if fewer than maxCitations are. */
function cite(first: Map<number, number>, n: number, at: number): boolean {
  if (first.has(n)) return true;
  if (first.size >= maxCitations) return false;
  first.set(n, at);
  return true;
}

/** The claim a marker at `at` (an offset in `clean`) follows: see citationsOf. */
function claimBefore(clean: string, sentences: readonly SentenceSpan[], boundaries: readonly number[], at: number): string {
  const sentence = sentences.findLast((span) => span.start < at) ?? sentences[0];
  if (!sentence) return "";
  const stretch = clean.slice(Math.max(sentence.start, boundaries.findLast((boundary) => boundary < at) ?? 0), at);
  return matchTerms(stretch).size > 0 ? stretch : sentence.text;
}

/** The sentence of a source that best matches `claim` (see citationsOf), cut to quoteMaxChars; "" when it has none. */
function bestQuote(claim: string, sentences: readonly SentenceSpan[]): string {
  const terms = matchTerms(claim);
  const claimLine = oneLine(claim);
  let best = { text: "", overlap: -1, repeated: false };
  for (const { text } of sentences) {
    const own = matchTerms(text);
    const shared = sharedTerms(terms, own);
    const overlap = shared / Math.max(1, terms.size + own.size - shared);
    const repeated = claimLine.includes(oneLine(text));
    if (overlap > best.overlap || (overlap === best.overlap && repeated && !best.repeated)) best = { text, overlap, repeated };
  }
  return clip(best.text, quoteMaxChars);
}

/** The quote for a passage: its best-matching sentence, or, when no sentence is found in it, its start (never empty). */
function quoteFrom(claim: string, content: string): string {
  return bestQuote(claim, sentenceSpans(content)) || clip(content.trim(), quoteMaxChars);
}

/**
 * The start of `text`, at most `max` UTF-16 units, still verbatim: cut at the last whitespace when that keeps more
 * than half, never between the two halves of a surrogate pair, trailing whitespace dropped.
 */
function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let cut = text.slice(0, pairSafeEnd(text, max));
  const space = cut.search(/\s\S*$/);
  if (!/\s/.test(text[cut.length]!) && space > max / 2) cut = cut.slice(0, space);
  return cut.trimEnd();
}
