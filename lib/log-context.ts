// Who a log line is about: the request or job being handled, its organization and its user. Each is set once,
// where it becomes known (server/app.ts and server/context.ts for requests, worker/task-list.ts and
// worker/job-lifecycle.ts for jobs), and the logger (lib/logger.ts) adds it to every line written meanwhile, so no
// call site has to pass it along. AsyncLocalStorage carries it through the awaits of that request or job.
import { AsyncLocalStorage } from "node:async_hooks";

export interface LogContext {
  requestId?: string;
  /** Quire's job id (app_public.jobs), for a job run. */
  jobId?: string;
  orgId?: string;
  userId?: string;
}

const storage = new AsyncLocalStorage<LogContext>();

/** Runs `work` with `context` (added to the enclosing one, if any) on every log line it leads to. */
export function withLogContext<T>(context: LogContext, work: () => T): T {
  return storage.run({ ...storage.getStore(), ...context }, work);
}

/** Adds what has just become known (the organization and user, once verified) to the current context. */
export function addToLogContext(values: LogContext): void {
  const current = storage.getStore();
  if (current) Object.assign(current, values);
}

/** The current context, for the logger's mixin; empty outside any request or job. */
export function currentLogContext(): LogContext {
  return storage.getStore() ?? {};
}
