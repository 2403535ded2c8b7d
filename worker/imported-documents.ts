// Pages become documents: imports and syncs write them in the job's RLS context (the database lets only import
// and sync jobs of the organization do so), matched by (source, external id) so importing a page again updates
// the same document and bumps its revision, and record each run's counts on integration_sync_runs.
import type { PoolClient } from "pg";
import type { IntegrationProvider, PageContent } from "../lib/integrations/connectors.ts";
import { lockRunningJob, succeedJob } from "./job-lifecycle.ts";

export type UpsertOutcome = "imported" | "updated" | "skipped";

export interface RunCounts {
  seen: number;
  imported: number;
  updated: number;
  skipped: number;
  failed: number;
  deletedAtSource: number;
}

export const emptyCounts = (): RunCounts => ({ seen: 0, imported: 0, updated: 0, skipped: 0, failed: 0, deletedAtSource: 0 });

/** Inserts or updates the page's document; `skipped` when its title and content are unchanged. */
export async function upsertPage(client: PoolClient, provider: IntegrationProvider, integrationId: string, page: PageContent): Promise<UpsertOutcome> {
  const title = (page.title.trim() || "Untitled").slice(0, 500);
  const url = /^https?:\/\//.test(page.url) ? page.url.slice(0, 2000) : null;
  const metadata = { integrationId, lastEditedAt: page.lastEditedAt?.toISOString() ?? null };
  // In the trash, a page's document stays untouched: the function sees the trash for the conflict alone.
  const { rows } = await client.query<{ inserted: boolean }>(
    "select inserted from app_hidden.upsert_imported_document($1, $2, $3::app_public.document_source, $4, $5, $6, $7)",
    [title, page.markdown, provider, page.externalId, url, JSON.stringify(metadata), integrationId],
  );
  const row = rows[0];
  return !row ? "skipped" : row.inserted ? "imported" : "updated";
}

/** Flags a document whose page is gone at the source (its content stays: it is the organization's copy). */
export async function markDeletedAtSource(client: PoolClient, documentId: string): Promise<void> {
  await client.query(`update app_public.documents set metadata = metadata || jsonb_build_object('deletedAtSource', now()) where id = $1`, [documentId]);
}

/** Records the run's counts and outcome, and the job's success, if the job is still running. */
export async function finishRun(client: PoolClient, counts: RunCounts, complete: boolean, errorCode: string | null): Promise<void> {
  if (!(await lockRunningJob(client))) return;
  const status = complete && counts.failed === 0 ? "finished" : "partial";
  await client.query(
    `update app_public.integration_sync_runs
        set status = $1, seen = $2, imported = $3, updated = $4, skipped = $5, failed = $6, deleted_at_source = $7,
            error_code = $8, finished_at = now()
      where job_id = app_public.current_job_id()`,
    [status, counts.seen, counts.imported, counts.updated, counts.skipped, counts.failed, counts.deletedAtSource, errorCode],
  );
  await client.query("select app_public.note_integration_sync($1, $2)", [status, errorCode]);
  await succeedJob(client);
}
