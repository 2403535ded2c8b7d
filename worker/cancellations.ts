// Cancelling a job stops its LLM request. The database announces each job that becomes cancelled (cancelJob, its
// document deleted or trashed) on quire_job_cancelled; this worker's LISTEN connection hears it and aborts the signal
// of the run working on that job, which aborts the provider's HTTP request at once, so no one pays for text that
// would be dropped. A notification missed while the connection was down costs only that: the run finishes and its
// result is dropped, as before (the finish step writes only while the job is still running).
import type { NotificationListener } from "../lib/notifications.ts";

export const jobCancelledChannel = "quire_job_cancelled";

/** One run's view of its job's cancellation. */
export interface CancellationWatch {
  /** Aborts when the job is cancelled. */
  readonly signal: AbortSignal;
  /** True once the job was announced cancelled. */
  cancelled(): boolean;
  /** The run is over: stop watching. */
  release(): void;
}

export interface Cancellations {
  watch(jobId: string): CancellationWatch;
}

export function createCancellations(listener: NotificationListener): Cancellations {
  const watching = new Map<string, Set<AbortController>>();
  listener.on(jobCancelledChannel, (payload) => {
    for (const controller of watching.get(payload) ?? []) controller.abort();
  });
  return {
    watch(jobId) {
      const controller = new AbortController();
      let runs = watching.get(jobId);
      if (!runs) watching.set(jobId, (runs = new Set()));
      runs.add(controller);
      return {
        signal: controller.signal,
        cancelled: () => controller.signal.aborted,
        release() {
          runs.delete(controller);
          if (runs.size === 0 && watching.get(jobId) === runs) watching.delete(jobId);
        },
      };
    },
  };
}
