// The at-least-once contract every task with a `jobs` row keeps, written once: each task supplies only how it
// starts its job and its own work, and says what its own errors mean; this wrapper does the rest.
//
// - A payload that is not a job ticket is logged and dropped.
// - Each run (one delivery of the job) has its own id and claims the job first (worker/job-context.ts). Once another
//   run has taken it over (this worker presumed dead), this run's transactions throw RunSuperseded: it stops,
//   changing nothing, and rethrows so graphile-worker leaves the queue entry, now the other run's, alone.
// - A start that finds the job no longer queued or running (cancelled, finished, a duplicate delivery) does nothing.
// - The work's failures become the job's outcome (JobOutcome): failed now, retried with graphile-worker's backoff
//   (an attempt used), put back in the queue due later without using an attempt (an outage ridden out), or put back
//   due at once because the worker is stopping (SIGTERM aborts the run). A JobFailure fails the job with its code;
//   a JobCancelled (the job was cancelled meanwhile) ends the run with nothing left to do.
// - Anything else is unexpected: it is rethrown for graphile-worker's retry, and on the last attempt the job is
//   marked failed (INTERNAL) first (best effort: the database may be what failed), so it does not stay running.
import { randomUUID } from "node:crypto";
import type { JobHelpers, Task } from "graphile-worker";
import type { PoolClient } from "pg";
import type { JobErrorCode } from "../lib/errors.ts";
import { inJobContext, isJobTicket, RunSuperseded, type JobContextOptions, type JobTicket } from "./job-context.ts";
import { claimRun, failingForMs, failQuietly, isLastAttempt, retryLater, settleJob } from "./job-lifecycle.ts";

/** The tasks whose payload is a job ticket: those with a `jobs` row. */
export type JobTaskName = {
  [Name in keyof GraphileWorker.Tasks]: GraphileWorker.Tasks[Name] extends JobTicket ? Name : never;
}[keyof GraphileWorker.Tasks];

export interface JobTaskDependencies {
  /** DATABASE_AUTHENTICATED_ROLE: the role a run takes on in its job's RLS context. */
  readonly role: string;
  /** This process's heartbeat id, recorded on the job when a run claims it, so a dead process's jobs are released. */
  readonly runnerId: string;
}

/** One run of a job, as a task's steps see it. */
export interface JobRun {
  readonly helpers: JobHelpers;
  readonly ticket: JobTicket;
  /** This run's id (a random uuid per delivery). */
  readonly runId: string;
  /** One transaction in the job's RLS context (worker/job-context.ts); `before` runs first, as the authenticator. */
  inJob<T>(fn: (client: PoolClient) => Promise<T>, before?: (client: PoolClient) => Promise<void>): Promise<T>;
  /** The `before` step that claims the job for this run (worker/job-lifecycle.ts), for a start step using inJob. */
  readonly claim: (client: PoolClient) => Promise<void>;
}

/** A failure of the job as a whole, with the code and message stored on it. */
export class JobFailure extends Error {
  readonly code: JobErrorCode;
  constructor(code: JobErrorCode, message: string) {
    super(message);
    this.name = "JobFailure";
    this.code = code;
  }
}

/**
 * The job was cancelled while the run worked (its LLM request aborted): the job is cancelled already, so the run
 * stops changing nothing.
 */
export class JobCancelled extends Error {
  constructor(jobId: string) {
    super(`job ${jobId} was cancelled`);
    this.name = "JobCancelled";
  }
}

/** What a failure of the work means for the job; `code` and `message` are stored on it. */
export type JobOutcome =
  /** It will not change: the job fails now. */
  | { readonly kind: "fail"; readonly code: JobErrorCode; readonly message: string }
  /** A passing one: queued again for graphile-worker's backoff (an attempt used) while attempts remain, else failed. */
  | { readonly kind: "retry"; readonly code: JobErrorCode; readonly message: string }
  /**
   * A passing one, ridden out: queued again without using an attempt, due `delayMs(failingForMs)` later, where
   * failingForMs is how long the job's passing failures have lasted (by the database's clock); failed when that is
   * null (they lasted too long).
   */
  | { readonly kind: "later"; readonly code: JobErrorCode; readonly message: string; readonly delayMs: (failingForMs: number) => number | null }
  /** The worker is stopping: queued again due at once, this attempt not counted. */
  | { readonly kind: "stopping"; readonly code: JobErrorCode; readonly message: string };

export interface JobTaskSteps<Started> {
  /**
   * Claims the job for the run and marks it running, reading what the work needs; null when the job is no longer
   * queued or running. A JobFailure fails the job; anything else it throws fails it INTERNAL on the last attempt.
   */
  start(run: JobRun): Promise<Started | null>;
  /** The task's own work, ending with the job's success (or with a JobFailure thrown). */
  work(run: JobRun, started: Started): Promise<void>;
  /** What the work's error means for the job; null (default) when the task does not know it: unexpected. */
  outcome?(error: unknown, run: JobRun): JobOutcome | null;
  /** The message on a job that fails INTERNAL after an unexpected error in the work. */
  readonly internalMessage: string;
}

export function makeJobTask<Name extends JobTaskName, Started>(name: Name, deps: JobTaskDependencies, steps: JobTaskSteps<Started>): Task<Name> {
  return async (payload: unknown, helpers: JobHelpers) => {
    if (!isJobTicket(payload)) {
      helpers.logger.error(`${name}: malformed payload, dropped`);
      return;
    }
    try {
      await run(payload, helpers);
    } catch (error) {
      // Thrown, not returned: graphile-worker then leaves the queue entry, now the other run's, alone.
      if (error instanceof RunSuperseded) helpers.logger.warn(`${name}: job ${payload.jobId} was taken over by another run; this one stopped`);
      throw error;
    }
  };

  async function run(ticket: JobTicket, helpers: JobHelpers): Promise<void> {
    const runId = randomUUID();
    const options: JobContextOptions = { role: deps.role, runId };
    const job: JobRun = {
      helpers,
      ticket,
      runId,
      inJob: (fn, before) => inJobContext(helpers, ticket, before ? { ...options, before } : options, fn),
      claim: claimRun(helpers, ticket, runId, deps.runnerId),
    };
    const failLast = async (message: string) => {
      if (isLastAttempt(helpers)) await failQuietly(helpers, ticket, options, "INTERNAL", message);
    };

    // A JobFailure fails the job whichever step throws it; the task's outcome() reads only the work's errors.
    let step: "start" | "work" = "start";
    let outcome: JobOutcome;
    try {
      const started = await steps.start(job);
      if (started === null) {
        helpers.logger.info(`${name}: job ${ticket.jobId} is no longer queued or running; nothing to do`);
        return;
      }
      step = "work";
      await steps.work(job, started);
      return;
    } catch (error) {
      if (error instanceof RunSuperseded) throw error;
      if (error instanceof JobCancelled) {
        helpers.logger.info(`${name}: job ${ticket.jobId} was cancelled; its run stopped`);
        return;
      }
      const known =
        error instanceof JobFailure
          ? { kind: "fail" as const, code: error.code, message: error.message }
          : step === "work"
            ? (steps.outcome?.(error, job) ?? null)
            : null;
      if (!known) {
        await failLast(step === "start" ? "The job could not be started." : steps.internalMessage);
        throw error;
      }
      if (known.kind === "retry" && !isLastAttempt(helpers)) {
        await job.inJob((client) => settleJob(client, "queued", known.code, known.message));
        throw error;
      }
      outcome = known;
    }

    await job.inJob(async (client) => {
      if (outcome.kind === "stopping") {
        // Another worker takes the job at once, this attempt not counted.
        await retryLater(client, 0, outcome.code, outcome.message);
        helpers.logger.info(`${name}: job ${ticket.jobId} put back in the queue (worker stopping)`);
        return;
      }
      const delayMs = outcome.kind === "later" ? outcome.delayMs(await failingForMs(client)) : null;
      if (delayMs === null) {
        await settleJob(client, "failed", outcome.code, outcome.message);
        helpers.logger.warn(`${name}: job ${ticket.jobId} failed: ${outcome.code}`);
        return;
      }
      await retryLater(client, delayMs, outcome.code, outcome.message);
      helpers.logger.info(`${name}: job ${ticket.jobId} retries in ${Math.round(delayMs / 1000)} s (${outcome.code})`);
    });
  }
}
