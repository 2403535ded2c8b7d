// The tasks this worker runs, one module per task under worker/tasks/, and their schedules. Each task declares its
// payload type in the GraphileWorker.Tasks interface so `add_job` callers and the task agree on it.
import { parseCronItems, type ParsedCronItem, type TaskList } from "graphile-worker";
import type { LlmProvider } from "../lib/llm/provider.ts";
import type { Mailer } from "../lib/mailer.ts";
import { makePruneLiveEvents } from "./tasks/prune_live_events.ts";
import { makeSendEmail } from "./tasks/send_email.ts";
import { makeSummarize } from "./tasks/summarize.ts";

export interface TaskDependencies {
  readonly mailer: Mailer;
  readonly llm: LlmProvider;
  /** DATABASE_AUTHENTICATED_ROLE: the role tasks take on in a job's RLS context. */
  readonly role: string;
  /** This process's heartbeat id. */
  readonly runnerId: string;
  readonly maxOutputTokens: number;
  readonly liveEventRetentionHours: number;
}

export function makeTaskList(deps: TaskDependencies): TaskList {
  return {
    send_email: makeSendEmail(deps.mailer) as TaskList[string],
    summarize: makeSummarize(deps) as TaskList[string],
    prune_live_events: makePruneLiveEvents(deps.liveEventRetentionHours) as TaskList[string],
  };
}

/** Recurring jobs (UTC), safe with many workers: graphile-worker schedules each once. */
export const schedules: ParsedCronItem[] = parseCronItems([
  { task: "prune_live_events", match: "17 * * * *", identifier: "prune_live_events" },
]);
