// Vectors for retrieval from any OpenAI-compatible /embeddings endpoint: OpenAI itself, or a local server (Ollama,
// vLLM, llama.cpp, LM Studio) that needs no API key. Texts go in batches, one request after the other, and every
// answer is checked before a vector is returned: the database stores what comes back, and a vector of the wrong size
// or with a missing entry would make every later similarity meaningless rather than fail.
import { answeredModel, postJson, tokenCount } from "./http.ts";
import { estimateTokens, LlmError } from "./provider.ts";

export interface EmbeddingsOptions {
  /** The API root, without /embeddings, e.g. "https://api.openai.com/v1". */
  readonly baseUrl: string;
  /** Sent as a bearer token when set; local servers need none. Default: none. */
  readonly apiKey?: string | null;
  readonly model: string;
  /** Sent as `dimensions` when set (models that can shorten their vectors), and then required of the answer. 1 to 4096. Default: none. */
  readonly dimensions?: number | null;
  /** How long one request (one batch) may take, body included. Default 30_000. */
  readonly timeoutMs?: number;
  /** Most texts sent in one request. 1 to 2048 (OpenAI's limit). Default 64. */
  readonly batchSize?: number;
  /** Injectable for tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

export interface Embeddings {
  /** One vector per text, in the order of the texts, all of the same dimension. */
  readonly vectors: number[][];
  /** Summed over the requests: as the service counted them, else estimated (estimateTokens). */
  readonly promptTokens: number;
  /** The model that answered, as the service names it in its first answer when it does, else the configured one. */
  readonly model: string;
  /** Summed over the requests. */
  readonly latencyMs: number;
}

export interface EmbeddingsClient {
  readonly model: string;
  /**
   * Embeds up to embedMaxTexts texts (more is a RangeError: the caller's mistake, not the service's); none gives no
   * vectors without a request. Throws LlmError as the providers do, and LLM_BAD_RESPONSE for an answer that does not
   * give exactly one well-formed vector per text.
   */
  embed(texts: readonly string[], signal?: AbortSignal): Promise<Embeddings>;
}

/** Most texts one embed() call takes. */
export const embedMaxTexts = 10_000;

/** Largest vector accepted (and largest `dimensions` asked for). */
export const embeddingMaxDimensions = 4096;

/**
 * Bytes an answer may spend on one number of a vector: a float's shortest JSON form is at most 24 characters, and
 * OpenAI pretty-prints its answers, one number a line with its comma and indentation.
 */
const bytesPerNumber = 40;

const service = "embeddings service";

export function createEmbeddingsClient(options: EmbeddingsOptions): EmbeddingsClient {
  const endpoint = `${options.baseUrl.replace(/\/+$/, "")}/embeddings`;
  const apiKey = options.apiKey || null;
  const { model } = options;
  const dimensions = options.dimensions ?? null;
  const batchSize = options.batchSize ?? 64;
  if (dimensions !== null && !inRange(dimensions, 1, embeddingMaxDimensions)) {
    throw new RangeError(`dimensions must be a whole number from 1 to ${embeddingMaxDimensions}`);
  }
  if (!inRange(batchSize, 1, 2048)) throw new RangeError("batchSize must be a whole number from 1 to 2048");

  const embedBatch = async (texts: readonly string[], expectedDimension: number | null, signal: AbortSignal | undefined) => {
    const { body, latencyMs } = await postJson({
      url: endpoint,
      headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
      body: { model, input: texts, encoding_format: "float", ...(dimensions === null ? {} : { dimensions }) },
      timeoutMs: options.timeoutMs ?? 30_000,
      signal,
      fetch: options.fetch ?? fetch,
      service,
      secrets: apiKey ? [apiKey] : [],
      maxResponseBytes: 64 * 1024 + texts.length * (256 + (dimensions ?? embeddingMaxDimensions) * bytesPerNumber),
    });
    const answer = body as { data?: unknown; model?: unknown; usage?: { prompt_tokens?: unknown } } | null;
    return {
      vectors: checkedVectors(answer?.data, texts.length, expectedDimension),
      promptTokens: tokenCount(answer?.usage?.prompt_tokens) ?? texts.reduce((sum, text) => sum + estimateTokens(text), 0),
      model: answeredModel(answer?.model),
      latencyMs,
    };
  };

  return {
    model,
    async embed(texts, signal) {
      if (texts.length > embedMaxTexts) throw new RangeError(`At most ${embedMaxTexts} texts are embedded in one call, not ${texts.length}.`);
      const vectors: number[][] = [];
      let promptTokens = 0;
      let answered: string | undefined;
      let latencyMs = 0;
      for (let start = 0; start < texts.length; start += batchSize) {
        // Later batches must match the first one's dimension, so that all vectors of a call can be compared.
        const batch = await embedBatch(texts.slice(start, start + batchSize), dimensions ?? vectors[0]?.length ?? null, signal);
        vectors.push(...batch.vectors);
        promptTokens += batch.promptTokens;
        answered ??= batch.model;
        latencyMs += batch.latencyMs;
      }
      return { vectors, promptTokens, model: answered ?? model, latencyMs };
    },
  };
}

const inRange = (value: number, least: number, most: number) => Number.isSafeInteger(value) && value >= least && value <= most;

const badResponse = (what: string) => new LlmError("LLM_BAD_RESPONSE", `The ${service} answered with ${what}.`);

/**
 * The answer's `data` as one vector per text, in the order of the texts (by each entry's `index`, whatever the order
 * of the entries): exactly one entry for each index from 0 to count - 1, each an array of finite numbers, all of one
 * dimension from 1 to embeddingMaxDimensions, and `expectedDimension` when it is given (asked for, or a previous
 * batch's).
 */
function checkedVectors(data: unknown, count: number, expectedDimension: number | null): number[][] {
  if (!Array.isArray(data)) throw badResponse("no list of embeddings");
  if (data.length !== count) throw badResponse(`${data.length} embeddings for ${count} texts`);
  const vectors = new Array<number[] | undefined>(count).fill(undefined);
  let dimension = expectedDimension;
  for (const entry of data as unknown[]) {
    const { index, embedding } = (entry ?? {}) as { index?: unknown; embedding?: unknown };
    if (typeof index !== "number" || !inRange(index, 0, count - 1)) throw badResponse("an embedding without the index of one of the texts");
    if (vectors[index]) throw badResponse(`two embeddings for text ${index}`);
    if (!Array.isArray(embedding) || !embedding.every((value) => typeof value === "number" && Number.isFinite(value))) {
      throw badResponse(`an embedding for text ${index} that is not a list of numbers`);
    }
    dimension ??= embedding.length;
    if (embedding.length !== dimension || !inRange(dimension, 1, embeddingMaxDimensions)) {
      throw badResponse(`an embedding of ${embedding.length} dimensions for text ${index}, where ${dimensionWanted(dimension)}`);
    }
    vectors[index] = embedding as number[];
  }
  // Every index was in range and none came twice, and there are `count` of them: every text has its vector.
  return vectors as number[][];
}

const dimensionWanted = (dimension: number) =>
  inRange(dimension, 1, embeddingMaxDimensions) ? `${dimension} were expected` : `from 1 to ${embeddingMaxDimensions} are accepted`;
