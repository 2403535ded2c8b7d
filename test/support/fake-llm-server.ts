// A real HTTP server on loopback standing in for an LLM service (OpenAI chat completions or Anthropic Messages), so
// the provider tests run the real client code: each request is recorded, and a test-supplied function decides the
// answer (status, headers, JSON or raw body), or to never answer at all.
import { createServer, type IncomingHttpHeaders } from "node:http";

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined if it was not JSON). */
  readonly body: unknown;
  /** performance.now() when the request arrived. */
  readonly at: number;
}

export type Reply =
  { readonly status?: number; readonly headers?: Record<string, string>; readonly json?: unknown; readonly raw?: string; readonly delayMs?: number } | "hang";

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
      const request = { method: req.method ?? "", path: req.url ?? "", headers: req.headers, body, at: performance.now() };
      requests.push(request);
      const send = (answer: Reply) => {
        if (answer === "hang") return;
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
