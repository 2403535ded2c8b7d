// jobProgress: the text of a summary or answer as the model writes it (server/job-progress.ts). The organization
// comes from the verified token, and the job is read under the subscriber's RLS before anything is sent: a job of
// another organization, or one the subscriber cannot see (an answer is its asker's alone: their question must be
// readable too), is NOT_FOUND like a job that does not exist. The last
// event (done) carries the job, read again under the subscriber's RLS, with what it made (job.summary,
// job.question.answer).
import { context, inhibitOnNull, lambda, listen, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { QuireError } from "../lib/quire-error.ts";
import { isUuid } from "../lib/uuid.ts";
import type { JobProgress, JobStatus, ProgressEvent } from "./job-progress.ts";

type Ctx = Grafast.Context;

/** The job's status under the subscriber's RLS (null: they cannot see it). */
const statusOf =
  (ctx: Ctx, jobId: string): JobStatus =>
  () =>
    ctx.withPgClient(ctx.pgSettings ?? null, async (client) => {
      // An answer is its asker's: its job is followed only by whoever can read its question (the per-person policy,
      // read apart so the job's own read stays shareable between subscribers).
      const { rows } = await client.query<{ status: Awaited<ReturnType<JobStatus>>; kind: string }>({
        text: "select status, kind from app_public.jobs where id = $1",
        values: [jobId],
      });
      if (rows[0]?.kind === "answer") {
        const asked = await client.query({ text: "select 1 from app_public.questions where job_id = $1", values: [jobId] });
        if (asked.rows.length === 0) return null;
      }
      return rows[0]?.status ?? null;
    });

export function makeJobProgressPlugin(progress: JobProgress) {
  return extendSchema((build) => {
    const { jobs } = build.pgResources;
    if (!jobs) throw new Error("the jobs table is not exposed");
    return {
      typeDefs: gql`
        """
        The text a job's model is writing (summaries and answers), in pieces. The first event holds the text so far;
        append each event's \`text\` at its \`offset\`. The last one has \`done\` and the job, whose result is stored
        (job.summary, job.question.answer): show that once it comes.
        """
        type JobProgress {
          jobId: UUID!
          "Numbers this subscription's events from 0."
          sequence: Int!
          "Where \`text\` goes in the text written so far (UTF-16 code units); the first event's is 0 unless this server missed the beginning."
          offset: Int!
          text: String!
          "The job started over (a retry): replace what you have."
          restarted: Boolean!
          "The job has finished (succeeded, failed or cancelled); nothing follows."
          done: Boolean!
          "On the last event: the job as you may read it."
          job: Job
        }
        extend type Subscription {
          "The text a running summary or answer job is writing, as it is written, then the job once it has finished."
          jobProgress(jobId: UUID!): JobProgress
        }
      `,
      objects: {
        Subscription: {
          plans: {
            jobProgress: {
              subscribePlan(_$root: Step, fieldArgs: { getRaw(name: string): Step }) {
                const $subscriber = lambda([context(), fieldArgs.getRaw("jobId")], ([ctx, jobId]) => {
                  const claims = ctx.quireAuth;
                  if (!claims) throw new QuireError("LOGIN", "Sign in to subscribe.");
                  if (!isUuid(jobId)) throw new QuireError("NTFND", "No such job.");
                  return { subscribe: () => progress.subscribe(claims.orgId, jobId, statusOf(ctx, jobId)) };
                });
                return listen($subscriber, "progress");
              },
              plan: ($event: Step) => $event,
            },
          },
        },
        JobProgress: {
          plans: {
            job: ($e: Step<ProgressEvent>) => jobs.get({ id: inhibitOnNull(lambda($e, (e) => (e.done ? e.jobId : null))) }),
          },
        },
      },
    };
  }, "QuireJobProgressPlugin");
}
