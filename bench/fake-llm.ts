// A stand-in for an OpenAI-compatible LLM service, for bench/job-pipeline.ts and bench/fairness.ts: every
// POST …/chat/completions is answered with the same short summary and the same usage (FAKE_USAGE), at once (so the
// pipeline's own cost is all that is measured) or, with workerData `{ latencyMs }`, after that long, as a slow model
// would. Anything else gets 404. It runs in a worker thread of the bench
// (an event loop of its own, as a real service would have), listens on 127.0.0.1 on a free port, posts `{ port }`
// to the parent, and on "close" posts `{ requests }` (how many completions it answered) and closes.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parentPort, workerData } from "node:worker_threads";

/** What every answer reports; the bench checks each usage row against it. */
export const FAKE_USAGE = { prompt_tokens: 100, completion_tokens: 20 } as const;
export const FAKE_MODEL = "bench-zero-latency";

export type FakeLlmMessage = { readonly port: number } | { readonly requests: number };

if (parentPort) {
  const parent = parentPort;
  const body = JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion",
    model: FAKE_MODEL,
    choices: [{ index: 0, message: { role: "assistant", content: "A short summary of the document." }, finish_reason: "stop" }],
    usage: { ...FAKE_USAGE, total_tokens: FAKE_USAGE.prompt_tokens + FAKE_USAGE.completion_tokens },
  });
  const length = String(Buffer.byteLength(body));
  const latencyMs = Number((workerData as { latencyMs?: number } | null)?.latencyMs ?? 0);
  let requests = 0;

  const server = createServer((req, res) => {
    // The request body (the prompt) is read and dropped: the answer does not depend on it.
    req.resume();
    req.on("end", () => {
      if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"not found"}}');
        return;
      }
      requests++;
      const answer = () => {
        res.writeHead(200, { "content-type": "application/json", "content-length": length });
        res.end(body);
      };
      if (latencyMs > 0) setTimeout(answer, latencyMs);
      else answer();
    });
  });
  server.keepAliveTimeout = 60_000;

  server.listen(0, "127.0.0.1", () => {
    parent.postMessage({ port: (server.address() as AddressInfo).port } satisfies FakeLlmMessage);
  });

  parent.on("message", (message: unknown) => {
    if (message !== "close") return;
    parent.postMessage({ requests } satisfies FakeLlmMessage);
    server.close(() => parent.close());
    server.closeAllConnections();
  });
}
