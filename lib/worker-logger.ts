// graphile-worker's log lines through Quire's pino logger: its levels mapped, its own job id renamed graphileJobId
// (the jobId of lib/log-context.ts is Quire's app_public.jobs id), and never a job's payload (a job's token, an
// email's reference). Used by the worker and by the migrations that run graphile-worker's own.
import { Logger as WorkerLogger } from "graphile-worker";
import type { Logger } from "./logger.ts";

/** A job as a log line may show it: its ids and attempts, never its payload (a job's token, an email's reference). */
const jobForLog = (job: unknown) => {
  if (job === null || typeof job !== "object") return job;
  const { id, task_identifier, attempts, max_attempts } = job as Record<string, unknown>;
  return { id, task: task_identifier, attempts, maxAttempts: max_attempts };
};

/**
 * graphile-worker's log metadata without any job payload: it passes whole jobs (payload included) with the lines
 * of started, completed and failed jobs (`job`, `jobs`, and the failure `specs` of batched completion). Each job is
 * reduced to jobForLog, and any other `payload`, at the top or one level down, is dropped.
 */
function withoutPayloads(meta: Record<string, unknown> | undefined): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(meta ?? {})) {
    if (key === "payload") continue;
    if (key === "job") kept.job = jobForLog(value);
    else if (key === "jobs" && Array.isArray(value)) kept.jobs = value.map(jobForLog);
    else if (key === "specs" && Array.isArray(value)) kept.specs = value.map((spec: { job?: unknown } | null) => jobForLog(spec?.job));
    else if (value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Error) && "payload" in value) {
      const { payload: _dropped, ...rest } = value as Record<string, unknown>;
      kept[key] = rest;
    } else kept[key] = value;
  }
  return kept;
}

/** graphile-worker logs through pino too, never with a job's payload (withoutPayloads). */
export function workerLogger(logger: Logger): WorkerLogger {
  return new WorkerLogger((scope) => (level, message, meta) => {
    const method = level === "error" ? "error" : level === "warning" ? "warn" : level === "info" ? "info" : "debug";
    // graphile-worker's own job id is not Quire's (app_public.jobs, the jobId of lib/log-context.ts): renamed.
    const { jobId: graphileJobId, ...rest } = scope;
    logger[method]({ ...withoutPayloads(rest), ...(graphileJobId === undefined ? {} : { graphileJobId }), ...withoutPayloads(meta) }, message);
  });
}
