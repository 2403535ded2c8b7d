// import_integration: the pages an importDocuments call named become documents (new or updated). A page that
// cannot be read (gone, forbidden, still failing after retries) is counted as failed and makes the run `partial`;
// the others are imported regardless.
import type { Task } from "graphile-worker";
import type { JobTicket } from "../job-context.ts";
import { emptyCounts, finishRun, upsertPage } from "../imported-documents.ts";
import { isPageFailure, makeIntegrationTask, type IntegrationTaskDependencies } from "../integration-task.ts";
import { IntegrationError } from "../../lib/integrations/errors.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      import_integration: JobTicket;
    }
  }
}

export function makeImportIntegration(deps: IntegrationTaskDependencies): Task<"import_integration"> {
  return makeIntegrationTask("import_integration", deps, async ({ helpers, job, provider, connector, session, inJob }) => {
    const ids = Array.isArray(job.params.externalIds) ? job.params.externalIds.filter((id): id is string => typeof id === "string") : [];
    const counts = emptyCounts();
    let lastError: string | null = null;
    for (const id of ids) {
      counts.seen++;
      try {
        const page = await session.use((token) => connector.fetchPage(token, session.externalId, id, helpers.abortSignal));
        counts[await inJob((client) => upsertPage(client, provider, job.integration_id, page))]++;
      } catch (error) {
        if (!isPageFailure(error)) throw error;
        counts.failed++;
        lastError = error instanceof IntegrationError ? error.code : "BAD_PAGE";
        helpers.logger.warn(`import_integration: page ${id} failed (${lastError})`);
      }
    }
    await inJob((client) => finishRun(client, counts, true, lastError));
  });
}
