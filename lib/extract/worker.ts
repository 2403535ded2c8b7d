// The worker thread extractTextIsolated (isolated.ts) starts for one file: extracts, posts the outcome, ends.
import { parentPort, workerData } from "node:worker_threads";
import { ExtractError } from "./errors.ts";
import { extractText, type ExtractOptions } from "./index.ts";

export type WorkerOutcome =
  | { readonly ok: true; readonly result: Awaited<ReturnType<typeof extractText>> }
  | { readonly ok: false; readonly code: ExtractError["code"]; readonly message: string }
  | { readonly ok: false; readonly code: null; readonly message: string };

const { bytes, options } = workerData as { bytes: Uint8Array; options: ExtractOptions };
let outcome: WorkerOutcome;
try {
  outcome = { ok: true, result: await extractText(bytes, options) };
} catch (error) {
  outcome =
    error instanceof ExtractError
      ? { ok: false, code: error.code, message: error.message }
      : // Not the client's fault as far as we know: the parent logs this and answers INTERNAL.
        { ok: false, code: null, message: error instanceof Error ? (error.stack ?? error.message) : String(error) };
}
parentPort!.postMessage(outcome);
