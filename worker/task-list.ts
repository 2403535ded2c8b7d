// The tasks this worker runs, one module per task under worker/tasks/, and their schedules. Each task declares its
// payload type in the GraphileWorker.Tasks interface so `add_job` callers and the task agree on it.
import { parseCronItems, type ParsedCronItem, type TaskList } from "graphile-worker";
import type { Connectors } from "../lib/connectors.ts";
import type { LlmProvider } from "../lib/llm/provider.ts";
import type { SealingKeys } from "../lib/sealing.ts";
import type { Mailer } from "../lib/mailer.ts";
import { makeImportIntegration } from "./tasks/import_integration.ts";
import { makePruneLiveEvents } from "./tasks/prune_live_events.ts";
import { makePublishIntegration } from "./tasks/publish_integration.ts";
import { makeResealSecrets } from "./tasks/reseal_secrets.ts";
import { makeSendEmail } from "./tasks/send_email.ts";
import { makeSummarize } from "./tasks/summarize.ts";
import { makeSyncIntegration } from "./tasks/sync_integration.ts";

export interface TaskDependencies {
  readonly mailer: Mailer;
  readonly llm: LlmProvider;
  /** DATABASE_AUTHENTICATED_ROLE: the role tasks take on in a job's RLS context. */
  readonly role: string;
  /** This process's heartbeat id. */
  readonly runnerId: string;
  readonly maxOutputTokens: number;
  readonly liveEventRetentionHours: number;
  /** The Notion and Confluence clients configured. */
  readonly connectors: Connectors;
  /** SEALING_KEYS (null: integrations cannot be used). */
  readonly keys: SealingKeys | null;
}

export function makeTaskList(deps: TaskDependencies): TaskList {
  return {
    send_email: makeSendEmail(deps.mailer) as TaskList[string],
    summarize: makeSummarize(deps) as TaskList[string],
    prune_live_events: makePruneLiveEvents(deps.liveEventRetentionHours) as TaskList[string],
    import_integration: makeImportIntegration(deps),
    sync_integration: makeSyncIntegration(deps),
    publish_integration: makePublishIntegration(deps),
    reseal_secrets: makeResealSecrets(deps.keys) as TaskList[string],
  };
}

/** Recurring jobs (UTC), safe with many workers: graphile-worker schedules each once. */
export const schedules: ParsedCronItem[] = parseCronItems([
  { task: "prune_live_events", match: "17 * * * *", identifier: "prune_live_events" },
]);
