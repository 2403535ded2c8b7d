// sync_integration: every document imported from the integration is read again from the source: a changed page
// updates its document (a new revision), an unchanged one is skipped, and one the source no longer has (NOT_FOUND)
// is flagged deletedAtSource. A page that could not be read makes the run `partial`: never silently finished.
import type { Task } from "graphile-worker";
import { IntegrationError } from "../../lib/integrations/errors.ts";
import type { JobTicket } from "../job-context.ts";
import { emptyCounts, finishRun, markDeletedAtSource, upsertPage } from "../imported-documents.ts";
import { isPageFailure, makeIntegrationTask, type IntegrationTaskDependencies } from "../integration-task.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      sync_integration: JobTicket;
    }
  }
}

export function makeSyncIntegration(deps: IntegrationTaskDependencies): Task<"sync_integration"> {
  return makeIntegrationTask("sync_integration", deps, async ({ helpers, job, provider, connector, session, inJob }) => {
    const documents = await inJob(
      async (client) =>
        (
          await client.query<{ id: string; external_id: string }>(
            `select id, external_id from app_public.documents
            where integration_id = $1 and external_id is not null and not metadata ? 'deletedAtSource'
            order by created_at`,
            [job.integration_id],
          )
        ).rows,
    );
    const counts = emptyCounts();
    let lastError: string | null = null;
    for (const document of documents) {
      counts.seen++;
      try {
        const page = await session.use((token) => connector.fetchPage(token, session.externalId, document.external_id, helpers.abortSignal));
        counts[await inJob((client) => upsertPage(client, provider, job.integration_id, page))]++;
      } catch (error) {
        if (error instanceof IntegrationError && error.code === "NOT_FOUND") {
          await inJob((client) => markDeletedAtSource(client, document.id));
          counts.deletedAtSource++;
          continue;
        }
        if (!isPageFailure(error)) throw error;
        counts.failed++;
        lastError = error instanceof IntegrationError ? error.code : "BAD_PAGE";
        helpers.logger.warn(`sync_integration: page ${document.external_id} failed (${lastError})`);
      }
    }
    await inJob((client) => finishRun(client, counts, true, lastError));
  });
}
