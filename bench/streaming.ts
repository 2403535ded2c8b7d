// `node bench/streaming.ts`: one answer streamed to many subscribers. Quire runs as `node bin/start.ts` on its
// embedded PostgreSQL with an OpenAI-compatible model served here (a local HTTP server that streams its answer as
// Server-Sent Events: BENCH_PIECES pieces, one every BENCH_PIECE_MS). One member asks a question; BENCH_SUBSCRIBERS
// graphql-ws clients (each its own WebSocket, with that member's token) subscribe to jobProgress for the job; the
// model's answer is held until every subscription has its first event, then streamed. Measured:
//
// - first-delta latency: from the moment the model sends its first piece to the moment each subscriber receives the
//   first event with text (p50/p99 over subscribers);
// - deltas per second delivered: events with text received by all subscribers over the stream's duration, and the
//   pieces the model sent beside the events each subscriber got (the worker's coalescing: PROGRESS_INTERVAL_MS);
// - correctness: every subscriber's text, put together by offset, is the model's whole answer, and its last event
//   (done) carries the stored answer.
//
// Exits 1 on a correctness failure; timings are reported, never asserted. Results go to stdout and, on a clean run,
// to bench/results/streaming-latest.md.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { createTenants, graphql } from "./live-support.ts";
import { startQuire } from "./quire-child.ts";
import { clock, envInt, finishRun, fmtMs, log, machineFacts, summarise, watchInterrupts, whole } from "./support.ts";

const subscriberCount = envInt("BENCH_SUBSCRIBERS", 100, 1, 2000);
const pieceCount = envInt("BENCH_PIECES", 400, 1, 20_000);
const pieceMs = envInt("BENCH_PIECE_MS", 5, 0, 1000);
const intervalMs = envInt("BENCH_PROGRESS_INTERVAL_MS", 75, 10, 5000);

const pieces = Array.from({ length: pieceCount }, (_, i) => `word${i} `);
const whole_answer = pieces.join("").trim();

/** The model: holds its answer until `release`, then streams the pieces; records when the first one went out. */
function startModel() {
  let release: () => void = () => undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const timing = { firstPieceAt: 0, lastPieceAt: 0, requests: 0 };
  const chunk = (delta: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", model: "bench-stream", choices: [{ index: 0, delta, finish_reason: null }], ...extra })}\n\n`;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on("end", () => {
      timing.requests++;
      void (async () => {
        await released;
        res.writeHead(200, { "content-type": "text/event-stream" });
        for (const [i, piece] of pieces.entries()) {
          res.write(chunk({ content: piece }));
          if (i === 0) timing.firstPieceAt = clock();
          if (pieceMs > 0) await sleep(pieceMs);
        }
        timing.lastPieceAt = clock();
        res.write(`data: ${JSON.stringify({ id: "chatcmpl-bench", choices: [], usage: { prompt_tokens: 100, completion_tokens: pieceCount } })}\n\n`);
        res.end("data: [DONE]\n\n");
      })();
    });
  });
  return new Promise<{ url: string; release: () => void; timing: typeof timing; close: () => Promise<void> }>((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}/v1`,
        release,
        timing,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    }),
  );
}

interface Event {
  offset: number;
  text: string;
  restarted: boolean;
  done: boolean;
  job: { status: string; question: { answer: { content: string } | null } | null } | null;
}

const SUBSCRIPTION = `subscription ($id: UUID!) { jobProgress(jobId: $id) { offset text restarted done job { status question { answer { content } } } } }`;
const ASK = `mutation ($q: String!) { askQuestion(input: { question: $q }) { job { rowId } } }`;

async function main() {
  const interrupts = watchInterrupts();
  const failures: string[] = [];
  const model = await startModel();
  const quire = await startQuire(
    {
      label: "streaming",
      preferredPort: 5400,
      preferredPostgresPort: 5401,
      inspect: false,
      env: {
        BCRYPT_COST: "10",
        RATE_LIMITS: "false",
        LLM_PROVIDER: "openai",
        LLM_BASE_URL: model.url,
        LLM_TIMEOUT_SECONDS: "600",
        PROGRESS_INTERVAL_MS: String(intervalMs),
      },
    },
    () => interrupts.stopped,
  );
  const clients: Client[] = [];
  try {
    const [tenant] = await createTenants(quire.base, quire.ownerUrl, 1, 1, "Streaming bench. Words to find.");
    const asked = await graphql<{ askQuestion: { job: { rowId: string } } }>(quire.base, ASK, { q: "What are the words?" }, tenant!.memberToken);
    const jobId = asked.askQuestion.job.rowId;
    log(`job ${jobId}: subscribing ${subscriberCount} clients`);
    const received = Array.from({ length: subscriberCount }, () => ({ events: [] as Event[], firstTextAt: 0, errors: [] as string[], done: false }));
    let settle: () => void = () => undefined;
    const allDone = new Promise<void>((resolve) => (settle = resolve));
    let finished = 0;
    let subscribed = 0;
    let ready: () => void = () => undefined;
    const allSubscribed = new Promise<void>((resolve) => (ready = resolve));
    for (let i = 0; i < subscriberCount; i++) {
      const client = createClient({
        url: `${quire.base.replace(/^http/, "ws")}/graphql`,
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${tenant!.memberToken}` },
        retryAttempts: 0,
      });
      clients.push(client);
      const mine = received[i]!;
      client.subscribe<{ jobProgress: Event }>(
        { query: SUBSCRIPTION, variables: { id: jobId } },
        {
          next(result) {
            const event = result.data?.jobProgress;
            if (result.errors) mine.errors.push(...result.errors.map((e) => e.message));
            if (!event) return;
            if (mine.events.length === 0 && ++subscribed === subscriberCount) ready();
            if (event.text && mine.firstTextAt === 0) mine.firstTextAt = clock();
            mine.events.push(event);
            if (event.done && !mine.done) {
              mine.done = true;
              if (++finished === subscriberCount) settle();
            }
          },
          error(error) {
            mine.errors.push(error instanceof Error ? error.message : JSON.stringify(error));
          },
          complete() {},
        },
      );
    }
    await Promise.race([allSubscribed, sleep(60_000).then(() => failures.push("not every subscription got its first event within 60 s"))]);
    log(`all subscribed; streaming ${pieceCount} pieces, one every ${pieceMs} ms`);
    model.release();
    await Promise.race([allDone, sleep(120_000).then(() => failures.push("not every subscriber got the last event within 120 s"))]);

    const firstDelta = summarise(received.filter((r) => r.firstTextAt > 0).map((r) => r.firstTextAt - model.timing.firstPieceAt));
    const textEvents = received.reduce((n, r) => n + r.events.filter((e) => e.text).length, 0);
    const streamSeconds = (Math.max(...received.map((r) => r.events.length)) > 0 ? model.timing.lastPieceAt - model.timing.firstPieceAt : 0) / 1000;
    for (const [i, r] of received.entries()) {
      if (r.errors.length > 0) failures.push(`subscriber ${i}: ${r.errors[0]}`);
      const text = r.events.reduce((t, e) => (e.restarted ? "" : t.slice(0, e.offset) + e.text), "");
      if (text.trim() !== whole_answer) failures.push(`subscriber ${i} put together ${text.length} characters, not the answer`);
      const last = r.events.at(-1);
      if (!last?.done || last.job?.question?.answer?.content !== whole_answer) failures.push(`subscriber ${i}'s last event does not carry the stored answer`);
    }
    const perSubscriber = textEvents / subscriberCount;
    const rows: Array<[string, string]> = [
      ["subscribers of one job", whole(subscriberCount)],
      ["pieces the model streamed", `${whole(pieceCount)} (one every ${pieceMs} ms, ${streamSeconds.toFixed(2)} s)`],
      ["text events per subscriber", `${perSubscriber.toFixed(1)} (PROGRESS_INTERVAL_MS ${intervalMs})`],
      ["first-delta latency p50 / p99 / max", `${fmtMs(firstDelta.p50)} / ${fmtMs(firstDelta.p99)} / ${fmtMs(firstDelta.max)}`],
      ["deltas delivered per second (all subscribers)", whole(streamSeconds > 0 ? textEvents / streamSeconds : 0)],
      ["model requests", whole(model.timing.requests)],
    ];
    const table = ["| measure | value |", "|---|---|", ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join("\n");
    process.stdout.write(`${table}\n`);
    await finishRun("streaming-latest.md", failures, () => `# Streaming: one answer to ${subscriberCount} subscribers\n\n${machineFacts()}\n\n${table}\n`);
  } finally {
    await Promise.all(clients.map((c) => c.dispose()));
    const status = await quire.stop();
    if (status.code !== 0) log(`Quire exited with ${status.code ?? status.signal}`);
    await model.close();
  }
}

await main();
