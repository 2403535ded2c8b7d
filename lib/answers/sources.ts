// "Ask your documents": retrieval returns the best chunks of an organization's documents, and an answer is drawn
// from them, by a model or offline. This module holds what the prompt, the citations and the offline answer share:
// the chunk as a source, and how its text is read — its sentences, as verbatim spans (so that a quote is always the
// source's own text), and the words they are matched on (the extractive summarizer's tokenizer and stop-words, case
// and diacritics folded, with a light stem).
import { splitSentences, termsOf } from "../llm/extractive.ts";

/** A chunk retrieval found, as the answer sees it. Sources come in rank order, best first, numbered [1]..[n]. */
export interface SourceChunk {
  readonly chunkId: string;
  readonly documentId: string;
  /** The title of the chunk's document. */
  readonly title: string;
  /** The headings the chunk sits under (see DocumentChunk.heading); null before the first heading. */
  readonly heading: string | null;
  /** The chunk's text (at most chunkContentMaxChars, 8000 characters). */
  readonly content: string;
}

/** A sentence of a text: its verbatim text and where it starts (a UTF-16 offset). */
export interface SentenceSpan {
  readonly start: number;
  readonly text: string;
}

/** A line that starts a block of its own: a heading, a list item, a block quote or a table row. */
const blockStart = /^[ \t]*(?:#{1,6}[ \t]|>|[-*+][ \t]|\d{1,9}[.)][ \t]|\|)/;
const headingLine = /^[ \t]*#{1,6}[ \t]/;
/** The Markdown marker a block starts with, left out of its first sentence (which stays verbatim: what follows it). */
const blockMarker = /^(?:#{1,6}[ \t]+|(?:>[ \t]*)+|(?:[-*+]|\d{1,9}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?)/;

/**
 * The sentences of `text`, in order, each a trimmed slice of it: `text.slice(start, start + sentence.length)` is the
 * sentence. The text is first cut into blocks — a blank line ends one, and a heading, a list item, a quote or a
 * table row starts one, and a heading is a block of its own — so that lines without a full stop are not run
 * together; a block's leading Markdown marker is skipped; then each block is cut as the extractive summarizer cuts
 * a paragraph (splitSentences). Hard-wrapped lines stay in one sentence, with their line breaks.
 */
export function sentenceSpans(text: string): SentenceSpan[] {
  const spans: SentenceSpan[] = [];
  for (const block of blocksOf(text)) {
    const marker = blockMarker.exec(block.text)?.[0].length ?? 0;
    const body = block.text.slice(marker);
    let from = 0;
    for (const sentence of splitSentences(body)) {
      const at = body.indexOf(sentence, from);
      spans.push({ start: block.start + marker + at, text: sentence });
      from = at + sentence.length;
    }
  }
  return spans;
}

/** The blocks of `text` (see sentenceSpans), each from the start of its first line to the end of its last. */
function blocksOf(text: string): SentenceSpan[] {
  const blocks: SentenceSpan[] = [];
  // The block being read, as [start, end) of its lines so far; start -1 between blocks.
  let start = -1;
  let end = -1;
  let afterHeading = false;
  for (const { 0: line, index } of text.matchAll(/^[^\n]*/gm)) {
    const blank = line.trim() === "";
    if (start >= 0 && (blank || afterHeading || blockStart.test(line))) {
      blocks.push({ start, text: text.slice(start, end) });
      start = -1;
    }
    if (!blank) {
      if (start < 0) start = index;
      end = index + line.length;
    }
    afterHeading = headingLine.test(line);
  }
  if (start >= 0) blocks.push({ start, text: text.slice(start, end) });
  return blocks;
}

/** Combining diacritical marks, as NFD leaves them after a Latin, Greek or Cyrillic letter. */
const diacritics = /[\u0300-\u036f]/g;

/**
 * The terms a text is matched on: the extractive summarizer's (termsOf: lowercased words, stop-words and one-letter
 * words left out, Chinese and Japanese as character pairs), without diacritics ("résumé" matches "resume"), and with
 * a light stem: a final "s" dropped from words of four letters or more, but not from "ss" ("plans" matches "plan").
 */
export function matchTerms(text: string): Set<string> {
  return new Set(termsOf(text).map((term) => stem(term.normalize("NFD").replace(diacritics, "").normalize("NFC"))));
}

const stem = (term: string) => (term.length >= 4 && term.endsWith("s") && !term.endsWith("ss") ? term.slice(0, -1) : term);

/** `text` on one line: each run of whitespace a single space, none at either end. */
export const oneLine = (text: string) => text.replace(/\s+/g, " ").trim();

/** How many terms two sets share. */
export function sharedTerms(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  let shared = 0;
  for (const term of a) if (b.has(term)) shared++;
  return shared;
}
