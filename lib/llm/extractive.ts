// The offline default provider: an extractive summarizer, deterministic, with no network and no key, so Quire works
// (and its tests run) without a model. It picks the document's most representative sentences: each word scores
// its frequency in the document (stop-words of English, French, German and Spanish ignored; Chinese and Japanese
// counted as character pairs), a sentence the mean score of its words with a bonus for coming early, and the best
// sentences are given in their original order. It reads the prompt, minus the document, for what it can honour:
// a number of sentences or words, bullet points, or action items. Asked to stream (onDelta), it hands its summary
// over a few words at a time, as a model would, so streaming works (and is tested) offline too.
import { cancelledError, estimateTokens, type LlmProvider } from "./provider.ts";

export interface ExtractiveOptions {
  /** Reported as the context window; large, so documents are not split for this provider. Default 1_000_000. */
  readonly contextTokens?: number;
}

export const extractiveModel = "extractive-v1";
export const emptySummary = "The document has no text to summarize.";
export const noActionItems = "No action items.";

export function createExtractiveProvider(options: ExtractiveOptions = {}): LlmProvider {
  return {
    name: "extractive",
    model: extractiveModel,
    contextTokens: options.contextTokens ?? 1_000_000,
    async complete({ prompt, sourceText, maxOutputTokens, signal, onDelta }) {
      if (signal?.aborted) throw cancelledError();
      const started = performance.now();
      const instructions = sourceText.trim() ? prompt.split(sourceText).join(" ") : prompt;
      const text = summarize(sourceText, readHints(instructions), Math.max(1, Math.floor(maxOutputTokens)));
      if (onDelta) for (const piece of inPieces(text)) onDelta(piece);
      return {
        text,
        promptTokens: estimateTokens(prompt),
        completionTokens: estimateTokens(text),
        provider: "extractive",
        model: extractiveModel,
        latencyMs: Math.round(performance.now() - started),
      };
    },
  };
}

/**
 * `text` in pieces of up to five words, each with the whitespace after it, so that they join into exactly `text` (a
 * summary, which never starts or ends with whitespace).
 */
export const inPieces = (text: string): string[] => text.match(/(?:\S+\s*){1,5}/g) ?? [];

// ---- What the prompt asks for -------------------------------------------------------------------------------------

interface Hints {
  /** Exactly this many sentences (or bullets), when the prompt names a number. */
  readonly sentences: number | null;
  /** At most this many words, when the prompt names a number of words. */
  readonly words: number | null;
  readonly bullets: boolean;
  readonly actionItems: boolean;
}

const numberWords: Readonly<Record<string, number>> = {
  one: 1,
  two: 2,
  three: 3,
  four: 4,
  five: 5,
  six: 6,
  seven: 7,
  eight: 8,
  nine: 9,
  ten: 10,
  single: 1,
};
const quantity = String.raw`(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten|single)`;
const sentenceCount = new RegExp(
  String.raw`\b${quantity}[\s-]+(?:(?:short|brief|concise|key|clear|main)\s+)?(?:sentences?|bullet[\s-]?points?|bullets?|points|items|lines)\b`,
  "i",
);
const wordCount = new RegExp(String.raw`\b(\d{1,4})\s+words?\b`, "i");

function readHints(instructions: string): Hints {
  const sentences = sentenceCount.exec(instructions)?.[1]?.toLowerCase();
  const words = wordCount.exec(instructions)?.[1];
  const actionItems = /\baction[\s-]items?\b|\bto-?dos?\b|\bnext steps\b/i.test(instructions);
  return {
    sentences: sentences === undefined ? null : Math.min(50, Math.max(1, numberWords[sentences] ?? Number(sentences))),
    words: words === undefined ? null : Math.max(1, Number(words)),
    bullets: actionItems || /\bbullet|\bkey points\b|\blist\b|\bdot points\b/i.test(instructions),
    actionItems,
  };
}

// ---- The document's sentences ---------------------------------------------------------------------------------

interface Sentence {
  /** As shown in the summary: Markdown markers removed, whitespace collapsed. */
  readonly text: string;
  /** Order in the document. */
  readonly index: number;
  /** First sentence of its paragraph or list item. */
  readonly leads: boolean;
  readonly terms: readonly string[];
}

/**
 * The readable sentences of a text. Markdown is reduced to its prose: fenced code and tables are dropped, headings
 * only lend their words to the term counts, list and quote markers go, and inline emphasis, code spans and links
 * keep their text. Hard-wrapped lines are joined; a blank line, a heading or a list item ends a paragraph.
 */
function readSentences(source: string): { sentences: Sentence[]; headingTerms: string[] } {
  const paragraphs: string[] = [];
  const headingTerms: string[] = [];
  let current: string[] = [];
  let fence: string | null = null;
  const flush = () => {
    if (current.length) paragraphs.push(current.join(" "));
    current = [];
  };
  for (const raw of source.replace(/\r\n?/g, "\n").split("\n")) {
    const line = raw.trim();
    const fenceMatch = /^(`{3,}|~{3,})/.exec(line);
    if (fence !== null) {
      if (fenceMatch && fenceMatch[1]![0] === fence[0] && fenceMatch[1]!.length >= fence.length) fence = null;
      continue;
    }
    if (fenceMatch) {
      flush();
      fence = fenceMatch[1]!;
      continue;
    }
    if (!line || /^(?:[-*_]\s*){3,}$/.test(line) || /^\|.*\|$/.test(line) || /^[=-]+$/.test(line)) {
      flush();
      continue;
    }
    const heading = /^#{1,6}\s+(.*?)\s*#*$/.exec(line);
    if (heading) {
      flush();
      headingTerms.push(...termsOf(inline(heading[1]!)));
      continue;
    }
    const item = /^(?:>\s*)*(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?(.*)$/.exec(line);
    if (item) {
      flush();
      current.push(item[1]!);
      continue;
    }
    current.push(line.replace(/^(?:>\s*)+/, ""));
  }
  flush();

  const sentences: Sentence[] = [];
  for (const paragraph of paragraphs) {
    splitSentences(inline(paragraph)).forEach((text, position) => {
      sentences.push({ text, index: sentences.length, leads: position === 0, terms: termsOf(text) });
    });
  }
  return { sentences, headingTerms };
}

/** Inline Markdown reduced to its text: images dropped, links to their label, emphasis and code marks removed. */
function inline(text: string): string {
  return text
    .replace(/!\[[^\]]*\]\([^)]*\)/g, "")
    .replace(/\[([^\]]+)\]\([^)]*\)/g, "$1")
    .replace(/`([^`]+)`/g, "$1")
    .replace(/(\*\*|__)(?=\S)(.+?)(?<=\S)\1/g, "$2")
    .replace(/(?<![\p{L}\p{N}*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\p{L}\p{N}*])/gu, "$2")
    .replace(/\s+/g, " ")
    .trim();
}

// Words after which a full stop does not end a sentence.
const abbreviations = new Set(
  "mr mrs ms dr prof sr jr st vs etc e.g i.e cf fig approx dept inc ltd co corp jan feb mar apr jun jul aug sep sept oct nov dec z.b usw bzw mme mlle sra sres p.ej".split(
    " ",
  ),
);

/** Sentences of a paragraph: after . ! ? … followed by a space and not a lowercase letter, or after 。！？. */
export function splitSentences(paragraph: string): string[] {
  const sentences: string[] = [];
  let start = 0;
  for (const match of paragraph.matchAll(/([.!?…]+)["'”’)\]]*(?=\s+(\S))|[。！？]+[」』）”’"]*/gu)) {
    const end = match.index + match[0].length;
    if (match[1] !== undefined) {
      const next = match[2]!;
      const word = /([\p{L}.]+)$/u.exec(paragraph.slice(Math.max(start, match.index - 20), match.index))?.[1]?.toLowerCase() ?? "";
      const initial = /^\p{Lu}$/u.test(paragraph.slice(match.index - 1, match.index)) && word.length === 1;
      const dots = /^\.+$/.test(match[1]);
      if (dots && (/^\p{Ll}/u.test(next) || (match[1] === "." && (abbreviations.has(word) || initial)))) continue;
    }
    const sentence = paragraph.slice(start, end).trim();
    if (sentence) sentences.push(sentence);
    start = end;
  }
  const rest = paragraph.slice(start).trim();
  if (rest) sentences.push(rest);
  return sentences;
}

// ---- Scoring ----------------------------------------------------------------------------------------------------

const stopWords = new Set(
  [
    // English
    "a about above after again against all also am an and any are as at be because been before being below between both but by can could did do does doing down during each few for from further had has have having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other our ours ourselves out over own same she should so some such than that the their theirs them themselves then there these they this those through to too under until up very was we were what when where which while who whom why will with would you your yours yourself yourselves may might must shall us",
    // French
    "au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais me même mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une vos votre vous est sont été être avoir ont fait plus comme cette cet",
    // German
    "aber als am an auch auf aus bei bin bis bist da damit dann der den des dem die das dass du er es ein eine einem einen einer eines für hat hatte ich ihr im in ist ja kann mit nach nicht noch nur oder sein sich sie sind so um und uns von vor war was wie wir wird zu zum zur über",
    // Spanish
    "al algo como con de del desde donde el ella ellos en entre era es esa ese eso esta este esto fue ha hay la las le les lo los más me mi muy no nos o para pero por que se si sin sobre son su sus también te tu un una uno y ya",
  ]
    .join(" ")
    .split(" "),
);

// Scripts written without spaces: their text is counted as overlapping character pairs instead of words.
const unspaced = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]+/gu;
const kanaOnly = /^[\p{Script=Hiragana}ー]+$/u;

/** The content terms of a text: lowercased words without stop-words and one-letter words, and CJK character pairs. */
export function termsOf(text: string): string[] {
  const terms: string[] = [];
  for (const [word] of text.toLowerCase().matchAll(/[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu)) {
    let spaced = word;
    for (const [run] of word.matchAll(unspaced)) {
      const chars = [...run];
      if (chars.length === 1) terms.push(run);
      // Pairs of hiragana are mostly grammar (particles, endings), like stop-words.
      for (let i = 0; i + 1 < chars.length; i++) if (!kanaOnly.test(chars[i]! + chars[i + 1]!)) terms.push(chars[i]! + chars[i + 1]!);
      spaced = spaced.replace(run, " ");
    }
    for (const part of spaced.split(" ")) if ([...part].length > 1 && !stopWords.has(part)) terms.push(part);
  }
  return terms;
}

interface Scored extends Sentence {
  readonly score: number;
}

function score(sentences: readonly Sentence[], headingTerms: readonly string[]): Scored[] {
  const frequency = new Map<string, number>();
  const add = (term: string) => frequency.set(term, (frequency.get(term) ?? 0) + 1);
  for (const sentence of sentences) sentence.terms.forEach(add);
  headingTerms.forEach(add);
  let top = 1;
  for (const count of frequency.values()) top = Math.max(top, count);
  return sentences.map((sentence) => {
    const { terms } = sentence;
    const weight = terms.reduce((sum, term) => sum + (frequency.get(term) ?? 0) / top, 0);
    // The mean over at least 4 terms, so a two-word fragment does not outrank a sentence.
    const density = weight / Math.max(4, terms.length);
    const position = 1 + 0.3 / (1 + sentence.index) + (sentence.leads ? 0.1 : 0);
    return { ...sentence, score: density * position };
  });
}

// Words that make a sentence an action item. "Will", "should" and "shall" also describe plans and facts, so a
// sentence with only those ranks below one with a firm cue (a duty, an owner, a deadline).
const firmActionCue =
  /\b(?:must|need(?:s|ed)? to|have to|has to|required to|to-?do|action items?|follow[\s-]up|make sure|ensure|please|assigned to|deadline|due(?!\s+to\b)|by (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight|today|next|the end|end of|eod|eow|\d))\b/i;
const softActionCue = /\b(?:will|should|shall)\b/i;

// ---- The summary --------------------------------------------------------------------------------------------------

function summarize(source: string, hints: Hints, maxTokens: number): string {
  const { sentences, headingTerms } = readSentences(source);
  if (!sentences.length) return fit(emptySummary, maxTokens);
  const scored = score(sentences, headingTerms);

  let candidates: Scored[] = scored;
  let count: number;
  if (hints.actionItems) {
    candidates = scored.flatMap((sentence) => {
      if (firmActionCue.test(sentence.text)) return [{ ...sentence, score: sentence.score * 2 }];
      return softActionCue.test(sentence.text) ? [sentence] : [];
    });
    if (!candidates.length) return fit(noActionItems, maxTokens);
    count = hints.sentences ?? Math.min(candidates.length, 10);
  } else if (hints.sentences !== null) {
    count = hints.sentences;
  } else if (sentences.length <= 3) {
    count = sentences.length; // short: all of it
  } else {
    count = Math.min(5, Math.max(1, Math.round(sentences.length * 0.2)));
  }

  const chosen = pick(candidates, count);
  const render = (picked: readonly Scored[]) => format(picked, hints.bullets);
  // Least important first, drop sentences until the summary is within the word and size limits.
  const byRank = [...chosen].sort(byScore);
  const within = (picked: readonly Scored[]) => estimateTokens(render(picked)) <= maxTokens && (hints.words === null || wordsIn(render(picked)) <= hints.words);
  while (byRank.length > 1 && !within(byRank)) byRank.pop();
  const result = render(byRank.sort((a, b) => a.index - b.index));
  return fit(hints.words === null ? result : cutWords(result, hints.words), maxTokens);
}

const byScore = (a: Scored, b: Scored) => b.score - a.score || a.index - b.index;

/** The `count` best sentences, skipping near-repeats of one already picked, in document order. */
function pick(candidates: readonly Scored[], count: number): Scored[] {
  const picked: Scored[] = [];
  for (const candidate of [...candidates].sort(byScore)) {
    if (picked.length >= count) break;
    if (picked.some((other) => similar(other, candidate))) continue;
    picked.push(candidate);
  }
  return picked.sort((a, b) => a.index - b.index);
}

function similar(a: Sentence, b: Sentence): boolean {
  if (a.text === b.text) return true;
  const left = new Set(a.terms);
  const right = new Set(b.terms);
  if (!left.size || !right.size) return false;
  const shared = [...left].filter((term) => right.has(term)).length;
  return shared / (left.size + right.size - shared) > 0.7;
}

function format(sentences: readonly Scored[], bullets: boolean): string {
  if (bullets) return sentences.map((s) => `- ${s.text}`).join("\n");
  // Sentences ending in CJK punctuation are written without a space after them.
  return sentences.reduce((text, s) => (text === "" ? s.text : /[。！？」』）]$/u.test(text) ? text + s.text : `${text} ${s.text}`), "");
}

const wordsIn = (text: string) => text.split(/\s+/).filter((word) => /[\p{L}\p{N}]/u.test(word)).length;

/** `text` cut after its `words`th word, with an ellipsis when something was cut. */
function cutWords(text: string, words: number): string {
  let seen = 0;
  for (const match of text.matchAll(/\S+/g)) {
    if (/[\p{L}\p{N}]/u.test(match[0]) && ++seen > words) return `${text.slice(0, match.index).trimEnd()}…`;
  }
  return text;
}

/** `text` within `maxTokens` (estimated): cut at the last space that fits, or the last whole code point, with "…". */
function fit(text: string, maxTokens: number): string {
  if (estimateTokens(text) <= maxTokens) return text;
  // The longest prefix that fits with the ellipsis; estimated tokens only grow with length, so a binary search.
  let low = 0;
  let high = text.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (estimateTokens(`${text.slice(0, middle)}…`) <= maxTokens) low = middle;
    else high = middle - 1;
  }
  let cut = text.slice(0, low).replace(/[\uD800-\uDBFF]$/, "");
  const space = cut.lastIndexOf(" ");
  if (space > cut.length / 2) cut = cut.slice(0, space);
  return `${cut.trimEnd()}…`;
}
