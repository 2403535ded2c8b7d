// The text an LLM job is writing, for its jobProgress subscribers: the worker sends it in pieces on
// quire_job_progress (worker/job-progress.ts), every server hears them on its LISTEN connection and keeps each job's
// text so far in memory, so a subscriber that joins late gets that first, then the rest as it comes. Nothing is
// written to the database per delta; the result is stored once, when the job finishes.
//
// Who may follow a job is decided before anything is sent: the job is read under the subscriber's RLS (the
// caller, server/live-plugin.ts, passes `status`), and a piece reaches only the subscribers of its job whose
// organization is the piece's. The job's end comes from the live events (quire_live names the job): each subscriber
// reads its job's status again, under its own RLS, and a finished job ends the subscription with a last event.
//
// Bounds: `maxJobs` jobs' text kept (the least recently written dropped first), `maxTextChars` per job (beyond, the
// pieces still reach subscribers but are not kept for late joiners), jobs silent for `idleMs` forgotten, and a slow
// subscriber's queued pieces merged into one.
import { isUuid } from "../lib/uuid.ts";
import type { Logger } from "../lib/logger.ts";
import type { NotificationListener } from "../lib/notifications.ts";
import { jobProgressChannel, progressPieceMaxChars, type ProgressNotification } from "../lib/progress-notification.ts";
import { QuireError } from "../lib/quire-error.ts";

/** One event of a jobProgress subscription. */
export interface ProgressEvent {
  readonly jobId: string;
  /** Numbers this subscription's events from 0. */
  readonly sequence: number;
  /** Where `text` starts in the text written so far (UTF-16 units). The first event's is 0 unless the beginning was missed. */
  readonly offset: number;
  readonly text: string;
  /** The job started over (a new run): drop what you have; `text` starts at `offset` of the new text. */
  readonly restarted: boolean;
  /** The job has finished (succeeded, failed or cancelled): the last event, with no text, at the end of the text sent. */
  readonly done: boolean;
}

export interface JobProgressOptions {
  /** Jobs whose text is kept. Default 500. */
  readonly maxJobs?: number;
  /** Characters kept per job (a summary or answer is at most 128 KiB). Default 131_072. */
  readonly maxTextChars?: number;
  /** Characters kept for all jobs together; beyond, the least recently written jobs without subscribers go. Default 16 Mi. */
  readonly maxTotalChars?: number;
  /** A job's text is forgotten this long after its last piece. Default 10 minutes. */
  readonly idleMs?: number;
}

/** The job's status as the subscriber may read it: null when they cannot see it. */
export type JobStatus = () => Promise<"queued" | "running" | "succeeded" | "failed" | "cancelled" | null>;

export interface JobProgress {
  /** The job's text so far, then its pieces, then a last `done` event. `status` reads the job under the subscriber's RLS. */
  subscribe(orgId: string, jobId: string, status: JobStatus): Promise<AsyncIterableIterator<ProgressEvent>>;
  /** Open subscriptions (for metrics and tests). */
  readonly size: number;
  close(): void;
}

const finished = new Set(["succeeded", "failed", "cancelled"]);

/** A notification payload, or null when it is not one of ours (trusted for nothing beyond its shape). */
function parsePiece(payload: string): ProgressNotification | null {
  try {
    const p = JSON.parse(payload) as Record<string, unknown>;
    if (!isUuid(p.jobId) || !isUuid(p.orgId) || !isUuid(p.runId)) return null;
    if (typeof p.offset !== "number" || !Number.isSafeInteger(p.offset) || p.offset < 0) return null;
    if (typeof p.text !== "string" || p.text.length > progressPieceMaxChars) return null;
    return { jobId: p.jobId, orgId: p.orgId, runId: p.runId, offset: p.offset, text: p.text };
  } catch {
    return null;
  }
}

interface Subscriber {
  push(event: Omit<ProgressEvent, "sequence" | "jobId">): void;
  check(): void;
}

interface Job {
  runId: string;
  /** Where `text` starts: 0 unless this server missed the beginning. */
  base: number;
  text: string;
  /** Written past maxTextChars: late joiners get the start only. */
  truncated: boolean;
  updatedAt: number;
  readonly subscribers: Set<Subscriber>;
}

export function createJobProgress(listener: NotificationListener, logger: Logger, options: JobProgressOptions = {}): JobProgress {
  const { maxJobs = 500, maxTextChars = 131_072, maxTotalChars = 16 * 1024 * 1024, idleMs = 600_000 } = options;
  // Keyed by organization and job: a piece names both, and a subscriber finds only its own organization's entry, so
  // a piece claiming another organization's job id reaches no one of that organization.
  const jobs = new Map<string, Job>();
  const keyOf = (orgId: string, jobId: string) => `${orgId}:${jobId}`;
  let totalChars = 0;
  let size = 0;

  const setText = (job: Job, text: string) => {
    totalChars += text.length - job.text.length;
    job.text = text;
  };
  const forget = (key: string, job: Job) => {
    totalChars -= job.text.length;
    jobs.delete(key);
  };
  const jobOf = (orgId: string, jobId: string, runId: string): Job => {
    const key = keyOf(orgId, jobId);
    let job = jobs.get(key);
    if (job) {
      // Most recently written last: the first is the one to drop.
      jobs.delete(key);
    } else {
      job = { runId, base: 0, text: "", truncated: false, updatedAt: Date.now(), subscribers: new Set() };
    }
    jobs.set(key, job);
    for (const [id, old] of jobs) {
      if (jobs.size <= maxJobs && totalChars <= maxTotalChars) break;
      if (old.subscribers.size === 0 && old !== job) forget(id, old);
    }
    return job;
  };

  const receive = (piece: ProgressNotification) => {
    const job = jobOf(piece.orgId, piece.jobId, piece.runId);
    job.updatedAt = Date.now();
    if (job.runId !== piece.runId) {
      // A new run writes the text anew (the first run known is no restart).
      const restart = job.runId !== "";
      job.runId = piece.runId;
      job.base = piece.offset;
      setText(job, "");
      job.truncated = false;
      if (restart) for (const s of job.subscribers) s.push({ offset: piece.offset, text: "", restarted: true, done: false });
    }
    const end = job.base + job.text.length;
    if (piece.offset + piece.text.length <= end) return;
    let text = piece.text;
    let offset = piece.offset;
    if (offset < end) {
      text = text.slice(end - offset);
      offset = end;
    } else if (offset > end && !job.truncated) {
      // Pieces were missed (this server started listening mid-way): keep from here on.
      job.base = offset;
      setText(job, "");
      job.truncated = false;
    }
    if (!job.truncated) {
      if (job.text.length + text.length <= maxTextChars) setText(job, job.text + text);
      else job.truncated = true;
    }
    for (const s of job.subscribers) s.push({ offset, text, restarted: false, done: false });
  };

  listener.on(jobProgressChannel, (payload) => {
    const piece = parsePiece(payload);
    if (piece) receive(piece);
  });
  // A job's live event may be its end.
  listener.on("quire_live", (payload) => {
    try {
      const e = JSON.parse(payload) as { orgId?: unknown; entity?: unknown; entityId?: unknown };
      if (e.entity !== "job" || typeof e.entityId !== "string" || typeof e.orgId !== "string") return;
      for (const s of jobs.get(keyOf(e.orgId, e.entityId))?.subscribers ?? []) s.check();
    } catch {
      // Not one of ours.
    }
  });
  // Ends missed while the connection was down are found by reading every followed job again.
  listener.onRestored(() => {
    for (const job of jobs.values()) for (const s of job.subscribers) s.check();
  });
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [id, job] of jobs) if (job.subscribers.size === 0 && now - job.updatedAt > idleMs) forget(id, job);
  }, 60_000);
  sweep.unref();

  const openSubscriptions = new Set<() => void>();

  return {
    async subscribe(orgId, jobId, status) {
      const first = await status();
      if (first === null) throw new QuireError("NTFND", "No such job.");
      const queue: ProgressEvent[] = [];
      let sequence = 0;
      let ended = false;
      let wake: (() => void) | null = null;
      let checking = false;
      const key = keyOf(orgId, jobId);
      const job = jobs.get(key);
      // Where the text this subscriber has received ends: the last event's offset.
      let end = 0;
      const emit = (given: Omit<ProgressEvent, "sequence" | "jobId">) => {
        if (ended) return;
        const event = given.done ? { ...given, offset: end } : given;
        end = event.restarted ? event.offset : event.offset + event.text.length;
        const last = queue.at(-1);
        // A slow reader's pieces are merged: the queue never holds more than a few events.
        if (last && !last.done && !event.done && !event.restarted && last.offset + last.text.length === event.offset) {
          queue[queue.length - 1] = { ...last, text: last.text + event.text };
        } else {
          queue.push({ ...event, jobId, sequence: sequence++ });
        }
        if (event.done) finish();
        wake?.();
      };
      let entry: Job | null = null;
      const subscriber: Subscriber = {
        push: emit,
        check() {
          if (checking || ended) return;
          checking = true;
          status()
            .then((now) => {
              checking = false;
              if (now !== null && !finished.has(now)) return;
              emit({ offset: 0, text: "", restarted: false, done: true });
              // A finished job's text is stored: it is kept here no longer than its last subscriber.
              const kept = jobs.get(key);
              if (kept && kept.subscribers.size === 0) forget(key, kept);
            })
            .catch((error: unknown) => {
              checking = false;
              logger.warn({ err: error, jobId }, "jobProgress: the job's status could not be read");
            });
        },
      };
      const finish = () => {
        if (ended) return;
        ended = true;
        entry?.subscribers.delete(subscriber);
        size--;
        openSubscriptions.delete(stop);
      };
      const stop = () => {
        if (ended) return;
        finish();
        wake?.();
      };
      size++;
      openSubscriptions.add(stop);
      // The text so far, then the rest; a job finished already has its text stored: only the last event.
      const done = finished.has(first);
      emit({ offset: done ? 0 : (job?.base ?? 0), text: done ? "" : (job?.text ?? ""), restarted: false, done });
      if (!ended) {
        entry = job ?? jobOf(orgId, jobId, "");
        entry.subscribers.add(subscriber);
        // It may have finished between the read and now.
        subscriber.check();
      }
      const iterator: AsyncIterableIterator<ProgressEvent> = {
        async next() {
          for (;;) {
            const event = queue.shift();
            if (event) return { value: event, done: false };
            if (ended) return { value: undefined, done: true };
            await new Promise<void>((resolve) => (wake = resolve));
            wake = null;
          }
        },
        async return() {
          stop();
          queue.length = 0;
          return { value: undefined, done: true };
        },
        [Symbol.asyncIterator]() {
          return iterator;
        },
      };
      return iterator;
    },
    get size() {
      return size;
    },
    close() {
      clearInterval(sweep);
      for (const end of [...openSubscriptions]) end();
    },
  };
}
