// Documents longer than a model's context window: the content is split into pieces that fit (at paragraph, then
// sentence, then whitespace boundaries), each piece is summarized with the same template (map), and the joined
// partial summaries are summarized again (reduce), in as many rounds as it takes to fit.
import { estimateTokens, LlmError, type Completion, type LlmProvider } from "./provider.ts";
import { pairSafeEnd } from "../unicode.ts";

/** Where a piece may end, best first: after a blank line, after a sentence's end, after any whitespace. */
const boundaries: readonly RegExp[] = [/\n[ \t]*\n\s*/g, /[.!?…]+["'”’)\]]*\s+|[。！？]+[」』）”’"]*\s*/gu, /\s+/g];

/**
 * Splits `text` into pieces of at most `maxChars` UTF-16 units. Nothing is dropped or moved: `pieces.join("")` is
 * exactly `text`, and no piece is empty. A piece ends (separator included) at the last paragraph boundary that keeps
 * it within `maxChars`, else the last sentence end, else the last whitespace; text with none of these (one giant
 * word) is cut at `maxChars`, or one unit earlier rather than between the two halves of a surrogate pair.
 */
export function splitText(text: string, maxChars: number): string[] {
  if (!Number.isInteger(maxChars) || maxChars < 2) throw new RangeError("maxChars must be a whole number of at least 2");
  const pieces: string[] = [];
  let rest = text;
  while (rest.length > maxChars) {
    const cut = cutPoint(rest, maxChars);
    pieces.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest) pieces.push(rest);
  return pieces;
}

function cutPoint(text: string, maxChars: number): number {
  const window = text.slice(0, maxChars);
  for (const boundary of boundaries) {
    let end = 0;
    for (const match of window.matchAll(boundary)) end = match.index + match[0].length;
    if (end > 0) return end;
  }
  return pairSafeEnd(text, maxChars);
}

export interface StagedSummaryOptions {
  readonly provider: LlmProvider;
  /** The whole text to summarize. */
  readonly content: string;
  /** The prompt for a text: the template rendered around it. Used for the pieces and the partial summaries too. */
  render(content: string): string;
  readonly maxOutputTokens: number;
  readonly signal?: AbortSignal;
  /**
   * The final summary's text as the model writes it (see CompletionRequest.onDelta): given to the last call only,
   * whose answer is the result, never to the calls for pieces or partial summaries. Default: none.
   */
  readonly onDelta?: (text: string) => void;
}

/** The final completion, with tokens and latency summed over all calls. */
export type StagedCompletion = Completion & { readonly calls: number };

/** A reduce round must bring the text down to this share of its length, or the rest is cut (see below). */
const minimumShrink = 0.9;
const cutMarker = "\n\n[…the remaining partial summaries were cut to fit the model's context window.]";

/**
 * Summarizes `content` in one call when its prompt fits the provider's context window (estimated tokens of the
 * prompt plus `maxOutputTokens`), else map-reduce: the pieces one after the other (never in parallel, to spare the
 * service's rate limit), then their joined summaries, again split if they still do not fit. A round that does not
 * shrink the text to 90% of its length would loop (a model that echoes its input), so its joined summaries are
 * cut, with a marker saying so, to what fits, and summarized once more.
 */
export async function summarizeInStages(options: StagedSummaryOptions): Promise<StagedCompletion> {
  const { provider, render, maxOutputTokens, signal, onDelta } = options;
  const budget = provider.contextTokens - maxOutputTokens;
  const fits = (text: string) => estimateTokens(render(text)) <= budget;

  // The largest pieces of `text` whose prompts (each with `suffix` appended) fit. A character is at least a quarter
  // token, so 4 × the tokens left beside the template bound the piece size; each try shrinks it in proportion.
  const piecesThatFit = (text: string, suffix = ""): string[] => {
    let maxChars = (budget - estimateTokens(render(suffix))) * 4;
    for (;;) {
      if (maxChars < 2) {
        throw new LlmError("LLM_REJECTED", "The template and the requested summary length leave no room for the document in the model's context window.");
      }
      const pieces = splitText(text, maxChars);
      const worst = pieces.reduce((most, piece) => Math.max(most, estimateTokens(render(piece + suffix))), 0);
      if (worst <= budget) return pieces;
      maxChars = Math.min(maxChars - 1, Math.floor((maxChars * budget) / worst));
    }
  };

  const completions: Completion[] = [];
  const summarize = async (text: string, last = false) => {
    const request = { prompt: render(text), sourceText: text, maxOutputTokens, signal };
    const completion = await provider.complete(last && onDelta ? { ...request, onDelta } : request);
    completions.push(completion);
    return completion;
  };

  let content = options.content;
  while (!fits(content)) {
    const partials: string[] = [];
    for (const piece of piecesThatFit(content)) if (piece.trim()) partials.push((await summarize(piece)).text);
    const joined = partials.join("\n\n");
    content = joined.length <= content.length * minimumShrink ? joined : `${piecesThatFit(joined, cutMarker)[0] ?? ""}${cutMarker}`;
  }
  const last = await summarize(content, true);
  return {
    ...last,
    promptTokens: completions.reduce((sum, c) => sum + c.promptTokens, 0),
    completionTokens: completions.reduce((sum, c) => sum + c.completionTokens, 0),
    latencyMs: completions.reduce((sum, c) => sum + c.latencyMs, 0),
    calls: completions.length,
  };
}
