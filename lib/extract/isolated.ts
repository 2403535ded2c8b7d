// extractText in a worker thread of its own, so that a hostile or pathological file can neither block the server's
// event loop nor run unbounded:
// - time: the thread is stopped after `timeoutMs`;
// - memory: its JavaScript heap is capped by V8, and since decompressed data (a PDF's Flate streams, say) lives in
//   ArrayBuffers outside that heap, the thread's heap plus external memory is also polled and the thread stopped
//   when it passes the cap. Decompression bombs in any filter, nested or not, end there.
// Both answer TOO_LARGE: the file is too big or too complex to extract within the limits. At most one extraction
// per core runs at once; further ones wait their turn.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ExtractError, isExtractErrorCode } from "./errors.ts";
import type { Extracted, ExtractOptions } from "./index.ts";
import type { WorkerOutcome } from "./worker.ts";

export interface IsolationOptions {
  /** Longest the extraction may take, counted from the worker's start. */
  readonly timeoutMs: number;
  /** The worker's memory cap in MiB, for its heap and, separately, its heap plus ArrayBuffers (default 1024). */
  readonly maxMemoryMb?: number;
}

const workerUrl = new URL("./worker.ts", import.meta.url);
const memoryPollMs = 100;
const maxRunning = Math.max(1, availableParallelism());
let running = 0;
const waiting: Array<() => void> = [];

async function turn(): Promise<() => void> {
  if (running >= maxRunning) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  return () => {
    running--;
    waiting.shift()?.();
  };
}

export async function extractTextIsolated(bytes: Uint8Array, options: ExtractOptions & IsolationOptions): Promise<Extracted> {
  const release = await turn();
  try {
    return await runWorker(bytes, options);
  } finally {
    release();
  }
}

const tooMuchMemory = (cause?: unknown) => new ExtractError("TOO_LARGE", "Extracting the file's text needs too much memory.", { cause });

function runWorker(bytes: Uint8Array, { timeoutMs, maxMemoryMb = 1024, filename, limits }: ExtractOptions & IsolationOptions): Promise<Extracted> {
  return new Promise<Extracted>((resolve, reject) => {
    const worker = new Worker(workerUrl, {
      workerData: { bytes, options: { filename, limits } },
      resourceLimits: { maxOldGenerationSizeMb: maxMemoryMb, maxYoungGenerationSizeMb: 64 },
      // Libraries' console output is read and dropped: it stays out of the server's log stream.
      stdout: true,
      stderr: true,
    });
    worker.stdout.resume();
    worker.stderr.resume();
    let settled = false;
    const settle = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(memoryWatch);
      outcome();
      void worker.terminate();
    };
    const timer = setTimeout(() => {
      settle(() => reject(new ExtractError("TOO_LARGE", `Extracting the file's text took longer than ${timeoutMs / 1000} seconds.`)));
    }, timeoutMs);
    const memoryWatch = setInterval(() => {
      worker.getHeapStatistics().then(
        (heap) => {
          if (heap.used_heap_size + heap.external_memory > maxMemoryMb * 1024 * 1024) settle(() => reject(tooMuchMemory()));
        },
        () => {
          // The worker is gone already: its exit settles the promise.
        },
      );
    }, memoryPollMs);
    worker.on("message", (outcome: WorkerOutcome) => {
      settle(() => {
        if (outcome.ok) resolve(outcome.result);
        else if (isExtractErrorCode(outcome.code)) reject(new ExtractError(outcome.code, outcome.message));
        else reject(new Error(`text extraction failed: ${outcome.message}`));
      });
    });
    worker.on("error", (error: Error & { code?: string }) => {
      settle(() => reject(error.code === "ERR_WORKER_OUT_OF_MEMORY" ? tooMuchMemory(error) : error));
    });
    worker.on("exit", (code) => {
      settle(() => reject(new Error(`the text extraction worker exited (code ${code}) without an answer`)));
    });
  });
}
