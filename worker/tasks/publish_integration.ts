// publish_integration: a summary becomes a Notion page (under a parent page) or a Confluence page (in a space,
// optionally under a parent). The target is recorded with the page it made, so publishing the same summary to the
// same target again replaces that page's content instead of making a second page; if that page was deleted at
// the source, a new one is made. The page's URL is stored on the publication and on the summary.
//
// Not exactly-once: a worker that dies after the provider created the page but before the publication row
// commits leaves a page the retry does not know about, so the retry makes another one.
import type { Task } from "graphile-worker";
import { IntegrationError } from "../../lib/integrations/errors.ts";
import type { JobTicket } from "../job-context.ts";
import { lockRunningJob, succeedJob } from "../job-lifecycle.ts";
import { makeIntegrationTask, type IntegrationTaskDependencies } from "../integration-task.ts";
import { JobFailure } from "../job-task.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      publish_integration: JobTicket;
    }
  }
}

interface Source {
  content: string;
  title: string;
  existing: string | null;
}

const text = (value: unknown) => (typeof value === "string" && value !== "" ? value : null);

export function makePublishIntegration(deps: IntegrationTaskDependencies): Task<"publish_integration"> {
  return makeIntegrationTask("publish_integration", deps, async ({ job, connector, session, inJob }) => {
    const target = { parentPageId: text(job.params.parentPageId), spaceId: text(job.params.spaceId) };
    const targetKey = text(job.params.targetKey);
    if (!targetKey) throw new JobFailure("BAD_INPUT", "The job has no publishing target.");
    const source = await inJob(async (client) => {
      const { rows } = await client.query<Source>(
        `select s.content, d.title,
                (select p.external_id from app_public.summary_publications p
                  where p.summary_id = s.id and p.integration_id = $2 and p.target_key = $3) as existing
           from app_public.summaries s join app_public.documents d on d.id = s.document_id
          where s.id = $1`,
        [job.summary_id, job.integration_id, targetKey],
      );
      return rows[0] ?? null;
    });
    if (!source) throw new JobFailure("SUMMARY_DELETED", "The summary was deleted before it could be published.");
    const page = { title: `Summary: ${source.title}`.slice(0, 250), markdown: source.content };
    const publish = (existing: string | null) => session.use((token) => connector.publish(token, session.externalId, target, page, existing));
    let published;
    try {
      published = await publish(source.existing);
    } catch (error) {
      if (!(error instanceof IntegrationError && error.code === "NOT_FOUND" && source.existing)) throw error;
      published = await publish(null);
    }
    await inJob(async (client) => {
      if (!(await lockRunningJob(client))) return;
      await client.query(
        `insert into app_public.summary_publications (org_id, summary_id, integration_id, target_key, external_id, url)
         values (app_public.current_org_id(), $1, $2, $3, $4, $5)
         on conflict (org_id, summary_id, integration_id, target_key) do update
            set external_id = excluded.external_id, url = excluded.url, published_at = now()`,
        [job.summary_id, job.integration_id, targetKey, published.externalId, published.url],
      );
      await client.query("update app_public.summaries set published_url = $2 where id = $1", [job.summary_id, published.url]);
      await succeedJob(client);
    });
  });
}
