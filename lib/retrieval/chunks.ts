// A document cut into the pieces retrieval embeds and searches: small enough that one piece is about one thing, and
// labelled with the headings it sits under, so that a match can say where in the document it was found. The pieces
// follow the document's own structure (sections, then paragraphs, then sentences), and each piece repeats the last
// sentences of the one before it in its section, so that a passage cut in two is still found whole in one of them.
import { splitText } from "../llm/map-reduce.ts";
import { estimateTokens } from "../llm/provider.ts";

export interface DocumentChunk {
  /** Position in the document, from 0, without gaps. */
  readonly ordinal: number;
  /** The headings the chunk sits under, outermost first, joined with " › "; null before the first heading. */
  readonly heading: string | null;
  /** The text, trimmed, never empty; the section's heading line is not repeated in it. */
  readonly content: string;
}

export interface ChunkOptions {
  /** How the text is written: only markdown has headings; plain and html (stored as converted text) have none. Default "markdown". */
  readonly format?: "markdown" | "plain" | "html";
  /** Most estimated tokens (estimateTokens) of a chunk's own text, the overlap not counted. At least 2. Default 350. */
  readonly maxTokens?: number;
  /** Most estimated tokens of the previous chunk's last sentences a chunk starts with. At least 0. Default 50. */
  readonly overlapTokens?: number;
  /** Most chunks of one document: the rest of a longer document is dropped, not chunked. At least 1. Default 2000. */
  readonly maxChunks?: number;
}

/**
 * Longest chunk content in characters, as the database checks it (`char_length(content) <= 8000`). A character
 * counts at least a quarter token, so a chunk of n tokens has at most 4n characters: chunkDocument refuses options
 * whose maxTokens + overlapTokens could exceed this (more than 2000 tokens together).
 */
export const chunkContentMaxChars = 8000;

/** The options with their defaults, checked. */
type Limits = Required<Omit<ChunkOptions, "format">>;

/** A stretch of a section's text, by UTF-16 offsets: [from, to). */
interface Span {
  readonly from: number;
  readonly to: number;
}

interface Section {
  readonly heading: string | null;
  readonly body: string;
}

/**
 * Splits `content` into chunks (see ChunkOptions and the rules at each step below). Every chunk's content has at
 * most maxTokens + overlapTokens estimated tokens, hence at most chunkContentMaxChars characters; NUL characters,
 * which PostgreSQL text cannot hold, are removed, and line ends become "\n". The same input always gives the same
 * chunks. Throws RangeError for options out of range.
 */
export function chunkDocument(content: string, options: ChunkOptions = {}): DocumentChunk[] {
  const limits = checkedLimits(options);
  const text = content.replaceAll("\u0000", "").replace(/\r\n?/g, "\n");
  const sections = options.format === "plain" || options.format === "html" ? [{ heading: null, body: text.trim() }] : markdownSections(text);
  const chunks: DocumentChunk[] = [];
  for (const { heading, body } of sections) {
    for (const piece of sectionChunks(body, limits)) {
      if (chunks.length === limits.maxChunks) return chunks;
      chunks.push({ ordinal: chunks.length, heading, content: piece });
    }
  }
  return chunks;
}

function checkedLimits(options: ChunkOptions): Limits {
  const limits = { maxTokens: options.maxTokens ?? 350, overlapTokens: options.overlapTokens ?? 50, maxChunks: options.maxChunks ?? 2000 };
  const wholeAtLeast = (value: number, least: number) => Number.isSafeInteger(value) && value >= least;
  if (!wholeAtLeast(limits.maxTokens, 2)) throw new RangeError("maxTokens must be a whole number of at least 2");
  if (!wholeAtLeast(limits.overlapTokens, 0)) throw new RangeError("overlapTokens must be a whole number of at least 0");
  if (!wholeAtLeast(limits.maxChunks, 1)) throw new RangeError("maxChunks must be a whole number of at least 1");
  if (4 * (limits.maxTokens + limits.overlapTokens) > chunkContentMaxChars) {
    throw new RangeError(`maxTokens + overlapTokens must be at most ${chunkContentMaxChars / 4}, for chunks of at most ${chunkContentMaxChars} characters`);
  }
  return limits;
}

// Markdown structure, as far as sections need it: ATX headings ("## Title", closing #s dropped), setext headings
// (a one-line paragraph underlined with === or ---), and fenced code blocks, inside which nothing is a heading.
const atxHeading = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const setextUnderline = /^ {0,3}(=+|-+)[ \t]*$/;
const fenceOpening = /^ {0,3}(`{3,}|~{3,})/;
// Lines that may not become a setext heading's text: list items, block quotes, indented code, tables.
const notParagraphText = /^(?: {4}|\t| {0,3}(?:[-+*>|]|\d{1,9}[.)])(?:[ \t]|$))/;

/** The document's sections: the text before the first heading, then one per heading, each body trimmed. */
function markdownSections(text: string): Section[] {
  const sections: Section[] = [];
  const path: string[] = [];
  let heading: string | null = null;
  let lines: string[] = [];
  let fence: string | null = null;
  // Non-blank lines since the last blank line or heading: a setext underline needs exactly one above it.
  let paragraphLines = 0;
  const startSection = (level: number, title: string) => {
    sections.push({ heading, body: lines.join("\n").trim() });
    path.length = level - 1;
    path[level - 1] = title;
    heading = path.filter(Boolean).join(" › ") || null;
    lines = [];
    paragraphLines = 0;
  };
  for (const line of text.split("\n")) {
    if (fence !== null) {
      if (closesFence(line, fence)) fence = null;
      lines.push(line);
      continue;
    }
    const atx = atxHeading.exec(line);
    const underline = setextUnderline.exec(line);
    const above = lines.at(-1) ?? "";
    if (atx) {
      startSection(atx[1]!.length, (atx[2] ?? "").trim());
    } else if (underline && paragraphLines === 1 && !notParagraphText.test(above)) {
      lines.pop();
      startSection(underline[1]!.startsWith("=") ? 1 : 2, above.trim());
    } else {
      fence = fenceOpening.exec(line)?.[1] ?? null;
      paragraphLines = line.trim() === "" || fence !== null ? 0 : paragraphLines + 1;
      lines.push(line);
    }
  }
  sections.push({ heading, body: lines.join("\n").trim() });
  return sections;
}

/** A closing fence: the opening's character, at least as many, and nothing else on the line. */
const closesFence = (line: string, opening: string) => {
  const trimmed = line.trim();
  return line.search(/\S/) <= 3 && trimmed.length >= opening.length && trimmed === opening[0]!.repeat(trimmed.length);
};

/**
 * A section's chunks. Whole paragraphs are packed while the chunk stays within maxTokens; a longer paragraph is cut
 * by splitText (sentence ends, then whitespace) into pieces that fit, which are packed the same way. Each chunk but
 * the first starts with the last whole sentences of the previous chunk's own text that fit in overlapTokens.
 */
function sectionChunks(body: string, limits: Limits): string[] {
  const chunks: string[] = [];
  let previous: Span | null = null;
  for (const span of packedSpans(body, limits.maxTokens)) {
    if (body.slice(span.from, span.to).trim() === "") continue;
    const from = previous ? overlapStart(body, previous, span.from, limits.overlapTokens) : span.from;
    chunks.push(body.slice(from, span.to).trim());
    previous = span;
  }
  return chunks;
}

/** The section cut into consecutive spans of at most `maxTokens` (trailing whitespace not counted), together all of it. */
function packedSpans(body: string, maxTokens: number): Span[] {
  const spans: Span[] = [];
  let current: Span | null = null;
  for (const unit of units(body, maxTokens)) {
    if (current && estimateTokens(body.slice(current.from, unit.to).trimEnd()) <= maxTokens) current = { from: current.from, to: unit.to };
    else {
      if (current) spans.push(current);
      current = unit;
    }
  }
  if (current) spans.push(current);
  return spans;
}

/** What is packed: paragraphs (each with the blank lines after it), a paragraph over `maxTokens` cut into pieces. */
function units(body: string, maxTokens: number): Span[] {
  const spans: Span[] = [];
  let from = 0;
  const add = (to: number) => {
    const paragraph = body.slice(from, to);
    const pieces = estimateTokens(paragraph.trimEnd()) <= maxTokens ? [paragraph] : fittingPieces(paragraph, maxTokens);
    for (const piece of pieces) {
      spans.push({ from, to: from + piece.length });
      from += piece.length;
    }
  };
  for (const blankLines of body.matchAll(/\n[ \t]*\n\s*/g)) add(blankLines.index + blankLines[0].length);
  if (from < body.length) add(body.length);
  return spans;
}

/**
 * splitText's pieces of `text`, each of at most `maxTokens` (trailing whitespace not counted). The piece size starts
 * at 4 characters a token and shrinks in proportion until the worst piece fits; at one character a token (the floor)
 * every piece fits, as no character counts more than one token.
 */
function fittingPieces(text: string, maxTokens: number): string[] {
  let maxChars = 4 * maxTokens;
  for (;;) {
    const pieces = splitText(text, maxChars);
    const worst = pieces.reduce((most, piece) => Math.max(most, estimateTokens(piece.trimEnd())), 0);
    if (worst <= maxTokens) return pieces;
    maxChars = Math.max(maxTokens, Math.min(maxChars - 1, Math.floor((maxChars * maxTokens) / worst)));
  }
}

const sentences = new Intl.Segmenter("und", { granularity: "sentence" });

/**
 * Where a chunk starting at `start` begins with its overlap: the earliest sentence start in the previous chunk's own
 * text from which the text up to `start` has at most `overlapTokens`; `start` itself when not even the last sentence
 * fits.
 */
function overlapStart(body: string, previous: Span, start: number, overlapTokens: number): number {
  let from = start;
  const segments = [...sentences.segment(body.slice(previous.from, previous.to))].reverse();
  for (const { index, segment } of segments) {
    if (segment.trim() === "") continue;
    if (estimateTokens(body.slice(previous.from + index, start)) > overlapTokens) break;
    from = previous.from + index;
  }
  return from;
}
