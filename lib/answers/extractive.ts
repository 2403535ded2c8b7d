// The offline default for answering a question from the sources: no model, no key, deterministic, so that "ask your
// documents" works (and is tested) without a model, as the extractive provider does for summaries. It answers with
// the sources' sentences that share the most words with the question, each followed by the marker of its source,
// written so that citationsOf reads them back as citations quoting exactly those sentences.
import { citationMarker } from "./citations.ts";
import { noAnswer } from "./prompt.ts";
import { matchTerms, oneLine, sentenceSpans, sharedTerms, type SourceChunk } from "./sources.ts";

export interface ExtractiveAnswerOptions {
  /** Most sentences in the answer. A whole number of at least 1. Default 3. */
  readonly maxSentences?: number;
}

interface Candidate {
  /** The sentence on one line. */
  readonly text: string;
  /** Its source's number, from 1. */
  readonly marker: number;
  /** How many of the question's terms (matchTerms) it has. */
  readonly score: number;
}

/**
 * The answer to `question` from `sources` (in rank order, numbered from 1): the sentences with the most of the
 * question's terms, at least one, best first (ties to the earlier source, then the earlier sentence), a sentence
 * already picked (the same words, ignoring case, as chunks overlap) skipped. Each is written on one line, followed
 * by " [n]", and they are joined with spaces; brackets in a sentence that would read as a marker become parentheses.
 * noAnswer when no sentence has a term of the question. Throws RangeError when maxSentences is out of range.
 */
export function answerExtractively(question: string, sources: readonly SourceChunk[], options: ExtractiveAnswerOptions = {}): string {
  const maxSentences = options.maxSentences ?? 3;
  if (!Number.isSafeInteger(maxSentences) || maxSentences < 1) throw new RangeError("maxSentences must be a whole number of at least 1");
  const picked: Candidate[] = [];
  const seen = new Set<string>();
  // The sort is stable: equal scores keep the sources' order, then the sentences'.
  for (const candidate of candidatesFor(matchTerms(question), sources).sort((a, b) => b.score - a.score)) {
    if (picked.length === maxSentences || candidate.score === 0) break;
    const key = candidate.text.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    picked.push(candidate);
  }
  if (picked.length === 0) return noAnswer;
  return picked.map(({ text, marker }) => `${withoutMarkers(text)} [${marker}]`).join(" ");
}

function candidatesFor(terms: ReadonlySet<string>, sources: readonly SourceChunk[]): Candidate[] {
  return sources.flatMap((source, index) =>
    sentenceSpans(source.content).map(({ text }) => ({ text: oneLine(text), marker: index + 1, score: sharedTerms(terms, matchTerms(text)) })),
  );
}

/** `text` with what citationsOf would read as a marker ("see [2]") in parentheses instead ("see (2)"). */
const withoutMarkers = (text: string) => text.replace(citationMarker, (_marker, inside: string, after: string) => `(${inside})${after}`);
