// Streamed LLM text on its way to subscribers, without a row per token: a run's first delta is sent at once, and
// what follows is gathered and sent at most every `intervalMs` (default 75) as one NOTIFY on quire_job_progress, which every server hears and hands to the job's
// jobProgress subscribers (server/job-progress.ts). Each notification (lib/progress-notification.ts) says where its
// text starts (offset, in characters of the text so far) and which run wrote it, so a server can tell a restart (a
// new run starts at 0) from a gap. Progress is best effort: a failed NOTIFY is logged and the next one goes on; the
// stored result, written once at the end, is what counts.
import { context } from "@opentelemetry/api";
import type { PoolClient } from "pg";
import { jobProgressChannel, progressPieceMaxChars, type ProgressNotification } from "../lib/progress-notification.ts";
import { inUtf16Pieces } from "../lib/unicode.ts";

export interface ProgressStreamOptions {
  readonly jobId: string;
  readonly orgId: string;
  readonly runId: string;
  /** Runs `sql` with `values` on a connection (the task's helpers.withPgClient). */
  readonly withPgClient: <T>(fn: (client: PoolClient) => Promise<T>) => Promise<T>;
  /** How long deltas are gathered before they are sent. Default 75 ms. */
  readonly intervalMs?: number;
  /** Told of a failed send (never the text). */
  readonly onError?: (error: unknown) => void;
}

export interface ProgressStream {
  /** Hands a delta over (the provider's onDelta). */
  readonly onDelta: (text: string) => void;
  /** Sends what is gathered, then stops; resolves once every notification was sent (or failed). */
  close(): Promise<void>;
}

export function streamProgress(options: ProgressStreamOptions): ProgressStream {
  const { jobId, orgId, runId, withPgClient, intervalMs = 75, onError } = options;
  let pending = "";
  let offset = 0;
  let timer: NodeJS.Timeout | null = null;
  let lastSentAt = -Infinity;
  const runContext = context.active();
  let sending: Promise<void> = Promise.resolve();

  const flush = () => {
    timer = null;
    if (!pending) return;
    const text = pending;
    pending = "";
    const messages = inUtf16Pieces(text, progressPieceMaxChars).map((piece) => {
      const message: ProgressNotification = { jobId, orgId, runId, offset, text: piece };
      offset += piece.length;
      return JSON.stringify(message);
    });
    // Sent in the run's trace context, not the LLM call's whose delta triggered it: the call's span holds its request.
    sending = sending.then(() =>
      context
        .with(runContext, () =>
          withPgClient(async (client) => {
            for (const message of messages) await client.query("select pg_notify($1, $2)", [jobProgressChannel, message]);
          }),
        )
        .catch((error: unknown) => onError?.(error)),
    );
  };

  return {
    onDelta(text) {
      if (!text) return;
      pending += text;
      if (timer) return;
      // Leading edge: after a quiet interval (the first delta included) the text goes at once; then at most one
      // notification per interval, gathering what came meanwhile.
      const wait = lastSentAt + intervalMs - performance.now();
      if (wait <= 0) {
        lastSentAt = performance.now();
        flush();
      } else {
        timer = setTimeout(() => {
          lastSentAt = performance.now();
          flush();
        }, wait);
      }
    },
    async close() {
      if (timer) clearTimeout(timer);
      flush();
      await sending;
    },
  };
}
