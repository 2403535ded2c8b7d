// A real HTTP server on loopback standing in for an LLM service (OpenAI chat completions or Anthropic Messages), so
// the provider tests run the real client code: each request is recorded, and a test-supplied function decides the
// answer (status, headers, JSON or raw body, or a stream of Server-Sent Events that may stop, hang or break off
// mid-way), or to never answer at all.
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import { setTimeout as delay } from "node:timers/promises";

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined if it was not JSON). */
  readonly body: unknown;
  /** performance.now() when the request arrived. */
  readonly at: number;
  /** Resolves when the client closes the connection before the answer is complete (never, if it is not). */
  readonly disconnected: Promise<void>;
}

/** One Server-Sent Event: a string is the data of an event without a name. */
export type SseEvent = string | { readonly event?: string; readonly data: string };

export interface SseReply {
  /** Sent as text/event-stream, one event at a time. */
  readonly sse: readonly SseEvent[];
  readonly status?: number;
  readonly headers?: Record<string, string>;
  /** Wait before each event and before what comes `after` (the headers go at once). Default 0. */
  readonly delayMs?: number;
  /** After the events: end the answer, keep it open without sending more, or break the connection. Default "end". */
  readonly after?: "end" | "hang" | "cut";
}

export type Reply =
  | { readonly status?: number; readonly headers?: Record<string, string>; readonly json?: unknown; readonly raw?: string; readonly delayMs?: number }
  | SseReply
  | "hang";

export interface FakeLlmServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * Starts a server on a free port; `reply` is given each request and how many came before it, and may answer later
 * (a promise), e.g. to hold requests until others have arrived.
 */
export async function startFakeLlmServer(reply: (request: RecordedRequest, index: number) => Reply | Promise<Reply>): Promise<FakeLlmServer> {
  const requests: RecordedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      const disconnected = new Promise<void>((resolve) =>
        res.on("close", () => {
          if (!res.writableFinished) resolve();
        }),
      );
      const request = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body, at: performance.now(), disconnected };
      requests.push(request);
      const send = (answer: Reply) => {
        if (answer === "hang") return;
        if ("sse" in answer) {
          void stream(res, answer);
          return;
        }
        const payload = answer.raw ?? (answer.json === undefined ? "" : JSON.stringify(answer.json));
        setTimeout(() => {
          res.writeHead(answer.status ?? 200, { "content-type": "application/json", ...answer.headers });
          res.end(payload);
        }, answer.delayMs ?? 0);
      };
      const answer = reply(request, requests.length - 1);
      if (answer instanceof Promise) void answer.then(send);
      else send(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function stream(res: ServerResponse, answer: SseReply) {
  res.writeHead(answer.status ?? 200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...answer.headers });
  res.flushHeaders();
  for (const event of answer.sse) {
    if (answer.delayMs) await delay(answer.delayMs);
    if (res.destroyed) return;
    const { event: name, data } = typeof event === "string" ? { event: undefined, data: event } : event;
    res.write(
      `${name === undefined ? "" : `event: ${name}\n`}${data
        .split("\n")
        .map((line) => `data: ${line}\n`)
        .join("")}\n`,
    );
  }
  if (answer.delayMs) await delay(answer.delayMs);
  if (answer.after === "cut") res.destroy();
  else if (answer.after !== "hang") res.end();
}

/** An OpenAI chat-completions answer. */
export const openAiAnswer = (text: string, usage?: { prompt_tokens: number; completion_tokens: number }, model = "gpt-test-2025") => ({
  id: "chatcmpl-1",
  object: "chat.completion",
  model,
  choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
  ...(usage ? { usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } } : {}),
});

/** An OpenAI-style error body, as OpenAI, vLLM and LM Studio send it. */
export const openAiError = (message: string, type = "invalid_request_error") => ({ error: { message, type, code: null } });

/** An Anthropic Messages answer. */
export const anthropicAnswer = (content: Array<Record<string, unknown>>, usage = { input_tokens: 12, output_tokens: 5 }, model = "claude-test") => ({
  id: "msg_1",
  type: "message",
  role: "assistant",
  model,
  content,
  stop_reason: "end_turn",
  usage,
});

export const anthropicError = (type: string, message: string) => ({ type: "error", error: { type, message } });

/**
 * The events of a streamed OpenAI chat completion of `pieces`, as OpenAI sends them with include_usage: a first chunk
 * with the role (and `refusal: null`), one chunk per piece, one with the finish reason, one with the usage and no
 * choices, then [DONE].
 */
export function openAiStream(pieces: readonly string[], usage?: { prompt_tokens: number; completion_tokens: number }, model = "gpt-test-2025"): SseEvent[] {
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created: 1_760_000_000, model, choices, usage: null, ...extra });
  return [
    chunk([{ index: 0, delta: { role: "assistant", content: "", refusal: null }, finish_reason: null }]),
    ...pieces.map((content) => chunk([{ index: 0, delta: { content }, finish_reason: null }])),
    chunk([{ index: 0, delta: {}, finish_reason: "stop" }]),
    ...(usage ? [chunk([], { usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } })] : []),
    "[DONE]",
  ];
}

/**
 * The events of a streamed Anthropic message of `pieces`, as the Messages API sends them: message_start (the model
 * and the input tokens), a text block with one text_delta per piece (and a ping), message_delta with the output
 * tokens, message_stop.
 */
export function anthropicStream(
  pieces: readonly string[],
  usage: { input_tokens: number; output_tokens: number; cache_creation_input_tokens?: number; cache_read_input_tokens?: number } = {
    input_tokens: 12,
    output_tokens: 5,
  },
  model = "claude-test",
): SseEvent[] {
  const event = (type: string, body: Record<string, unknown>) => ({ event: type, data: JSON.stringify({ type, ...body }) });
  const { output_tokens, ...input } = usage;
  return [
    event("message_start", {
      message: { id: "msg_1", type: "message", role: "assistant", model, content: [], stop_reason: null, usage: { ...input, output_tokens: 1 } },
    }),
    event("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
    event("ping", {}),
    ...pieces.map((text) => event("content_block_delta", { index: 0, delta: { type: "text_delta", text } })),
    event("content_block_stop", { index: 0 }),
    event("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens } }),
    event("message_stop", {}),
  ];
}
