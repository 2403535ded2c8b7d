// The tasks this worker runs, one module per task under worker/tasks/, and their schedules. Each task declares its
// payload type in the GraphileWorker.Tasks interface so `add_job` callers and the task agree on it. Every run of a
// task is a tracing span (lib/tracing.ts), so its SQL and LLM calls nest under it.
import { SpanKind } from "@opentelemetry/api";
import { parseCronItems, type ParsedCronItem, type Task, type TaskList } from "graphile-worker";
import type { AuditCheckpointSettings } from "../lib/audit-checkpoints.ts";
import type { Connectors } from "../lib/integrations/connectors.ts";
import type { EmbeddingsClient } from "../lib/llm/embeddings.ts";
import type { RescheduleOptions } from "../lib/llm/retry.ts";
import type { SealingKeys } from "../lib/sealing.ts";
import type { Mailer } from "../lib/mailer.ts";
import type { Metrics } from "../lib/metrics.ts";
import { withLogContext } from "../lib/log-context.ts";
import { withSpan } from "../lib/tracing.ts";
import { isJobTicket } from "./job-context.ts";
import type { ObjectStore } from "../lib/storage/object-store.ts";
import { makeCheckpointAudit } from "./tasks/checkpoint_audit.ts";
import { makeApplyRetention } from "./tasks/apply_retention.ts";
import { makeDeleteStoredObjects } from "./tasks/delete_stored_objects.ts";
import { makeEraseOrganizations } from "./tasks/erase_organizations.ts";
import { makeExportOrganization } from "./tasks/export_organization.ts";
import { makePurgeTrash } from "./tasks/purge_trash.ts";
import { makeSweepUploads } from "./tasks/sweep_uploads.ts";
import { makeImportIntegration } from "./tasks/import_integration.ts";
import { makePruneLiveEvents } from "./tasks/prune_live_events.ts";
import { makePublishIntegration } from "./tasks/publish_integration.ts";
import { makeResealSecrets } from "./tasks/reseal_secrets.ts";
import { makeSendEmail } from "./tasks/send_email.ts";
import { makeSummarize } from "./tasks/summarize.ts";
import { makeAnswerQuestion } from "./tasks/answer_question.ts";
import { makeChunkDocument } from "./tasks/chunk_document.ts";
import type { Cancellations } from "./cancellations.ts";
import type { OrganizationLlm } from "./organization-llm.ts";
import { makeSyncIntegration } from "./tasks/sync_integration.ts";

export interface TaskDependencies {
  readonly mailer: Mailer;
  /** The model each LLM job uses: its organization's, its template's, or the deployment's (LLM_*). */
  readonly organizationLlm: OrganizationLlm;
  /** Where a running job hears it was cancelled (its LLM request is aborted). */
  readonly cancellations: Cancellations;
  /** PROGRESS_INTERVAL_MS: how long streamed LLM text is gathered before it is sent to jobProgress subscribers. */
  readonly progressIntervalMs: number;
  /** EMBEDDINGS_*: the embedding provider; null: retrieval is full-text only. */
  readonly embeddings: EmbeddingsClient | null;
  /** ANSWER_PASSAGES: passages given to the model per question. */
  readonly answerPassages: number;
  /** DATABASE_AUTHENTICATED_ROLE: the role tasks take on in a job's RLS context. */
  readonly role: string;
  /** This process's heartbeat id. */
  readonly runnerId: string;
  readonly maxOutputTokens: number;
  /** LLM_RETRY_*: rescheduling after transient LLM failures (lib/llm/retry.ts). */
  readonly llmRetry: RescheduleOptions;
  readonly liveEventRetentionHours: number;
  /** The Notion and Confluence clients configured. */
  readonly connectors: Connectors;
  /** SEALING_KEYS (null: integrations cannot be used). */
  readonly keys: SealingKeys | null;
  /** config.auditCheckpoints: the key that signs audit checkpoints and where they go; unset: none are made. */
  readonly auditCheckpoints?: AuditCheckpointSettings;
  /** Where file originals and exports are stored. */
  readonly store: ObjectStore;
  /** Where the retention task counts its runs (none in tests that do not look). */
  readonly metrics?: Metrics;
}

/**
 * `task`, each run in its own log context and in a span `job <task>`: the task, graphile-worker's job id and
 * attempt, and Quire's job id when the payload is a job ticket (never the ticket's token or anything else of the
 * payload).
 */
function traced(identifier: string, task: Task): Task {
  return (payload, helpers) => {
    const jobId = isJobTicket(payload) ? payload.jobId : null;
    return withSpan(
      `job ${identifier}`,
      {
        "quire.job.task": identifier,
        "quire.job.graphile_worker_id": helpers.job.id,
        "quire.job.attempt": helpers.job.attempts,
        "quire.job.max_attempts": helpers.job.max_attempts,
        ...(jobId ? { "quire.job.id": jobId } : {}),
      },
      // Its log lines name Quire's job (and, once it starts, its organization and requester: worker/job-lifecycle.ts).
      () => withLogContext(jobId ? { jobId } : {}, () => task(payload, helpers)),
      SpanKind.CONSUMER,
    );
  };
}

export function makeTaskList(deps: TaskDependencies): TaskList {
  const tasks: TaskList = {
    send_email: makeSendEmail(deps.mailer) as TaskList[string],
    summarize: makeSummarize(deps) as TaskList[string],
    answer_question: makeAnswerQuestion({ ...deps, passages: deps.answerPassages }) as TaskList[string],
    chunk_document: makeChunkDocument(deps) as TaskList[string],
    prune_live_events: makePruneLiveEvents(deps.liveEventRetentionHours) as TaskList[string],
    import_integration: makeImportIntegration(deps),
    sync_integration: makeSyncIntegration(deps),
    publish_integration: makePublishIntegration(deps),
    reseal_secrets: makeResealSecrets(deps.keys) as TaskList[string],
    checkpoint_audit: makeCheckpointAudit(deps.auditCheckpoints) as TaskList[string],
    delete_stored_objects: makeDeleteStoredObjects(deps.store) as TaskList[string],
    purge_trash: makePurgeTrash() as TaskList[string],
    sweep_uploads: makeSweepUploads() as TaskList[string],
    export_organization: makeExportOrganization(deps),
    erase_organizations: makeEraseOrganizations(deps.connectors, deps.keys) as TaskList[string],
    apply_retention: makeApplyRetention(deps.metrics) as TaskList[string],
  };
  return Object.fromEntries(Object.entries(tasks).map(([identifier, task]) => [identifier, traced(identifier, task as Task)]));
}

/** Recurring jobs (UTC), safe with many workers: graphile-worker schedules each once. */
export const schedules: ParsedCronItem[] = parseCronItems([
  { task: "prune_live_events", match: "17 * * * *", identifier: "prune_live_events" },
  { task: "checkpoint_audit", match: "* * * * *", identifier: "checkpoint_audit", options: { jobKey: "checkpoint_audit", maxAttempts: 1 } },
  { task: "purge_trash", match: "23 * * * *", identifier: "purge_trash", options: { jobKey: "purge_trash", maxAttempts: 3 } },
  { task: "sweep_uploads", match: "41 * * * *", identifier: "sweep_uploads", options: { jobKey: "sweep_uploads", maxAttempts: 3 } },
  { task: "erase_organizations", match: "7 * * * *", identifier: "erase_organizations", options: { jobKey: "erase_organizations", maxAttempts: 3 } },
  { task: "apply_retention", match: "13 3 * * *", identifier: "apply_retention", options: { jobKey: "apply_retention", maxAttempts: 3 } },
]);
