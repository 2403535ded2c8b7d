// The live part of the GraphQL API: jobUpdated, documentChanged and integrationChanged subscriptions over graphql-ws.
//
// Which organization a subscription hears is decided here from the verified token (the context's claims), never
// from an argument; the arguments only narrow it (one job, one document) and choose where to resume (`since`).
// Each event carries ids only; the job, document or summary it names is read again for the subscriber under their
// own RLS, so an event shows exactly what the subscriber could query. A subscription ends with its WebSocket when
// the token expires or the session ends (server/live-sockets.ts).
import { assertPgClassSingleStep, pgClassExpression, TYPES } from "postgraphile/@dataplan/pg";
import { context, inhibitOnNull, lambda, listen, object, type ObjectStep, type Step } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { QuireError } from "../lib/quire-error.ts";
import type { LiveEvent, LiveEvents, Outbox } from "./live-events.ts";

type Ctx = Grafast.Context;

/**
 * The payloads of the mutations that emit live events (their own, or their job's later on), which carry `liveSeq`:
 * subscribing with `since: liveSeq` delivers every one of them, however late the subscription starts.
 */
const payloadsWithLiveSeq = [
  "SummarizeDocumentPayload",
  "ImportDocumentsPayload",
  "SyncIntegrationPayload",
  "PublishSummaryPayload",
  "CancelJobPayload",
  "CreateDocumentPayload",
  "UpdateDocumentPayload",
  "DeleteDocumentPayload",
] as const;

/**
 * `liveSeq`: app_public.live_seq() selected in the mutation's own SQL statement (the function call, or the
 * insert/update/delete's RETURNING), so it is the organization's last seq from before the mutation's events.
 */
const liveSeqPlan = ($payload: ObjectStep<{ result: Step }>) => {
  const $result = $payload.getStepForKey("result");
  assertPgClassSingleStep($result);
  return pgClassExpression($result, TYPES.bigint, false)`app_public.live_seq()`;
};

/** Events read from the outbox per query while catching up. */
const replayPage = 500;

/** The field's arguments; an omitted one is undefined. */
interface LiveArgs {
  readonly id?: string | null;
  readonly since?: string | null;
}

function outboxOf(ctx: Ctx, orgId: string): Outbox {
  const read: Outbox["read"] = async (afterSeq, beforeSeq) =>
    ctx.withPgClient(ctx.pgSettings ?? null, async (client) => {
      const { rows } = await client.query<{ seq: string; entity: LiveEvent["entity"]; op: LiveEvent["op"]; entity_id: string; document_id: string | null }>({
        text: `select e.seq, e.entity, e.op, e.entity_id, e.document_id
                 from app_public.live_events e
                where e.seq > $1 and ($2::bigint is null or e.seq < $2)
                order by e.seq
                limit ${replayPage}`,
        values: [afterSeq, beforeSeq],
      });
      const oldest = await client.query<{ oldest: string | null }>({ text: "select min(seq) as oldest from app_public.live_events", values: [] });
      return {
        events: rows.map((r) => ({
          orgId,
          seq: Number(r.seq),
          entity: r.entity,
          op: r.op,
          entityId: r.entity_id,
          documentId: r.document_id,
          missedEarlier: false,
        })),
        oldestSeq: oldest.rows[0]?.oldest == null ? null : Number(oldest.rows[0].oldest),
        complete: rows.length < replayPage,
      };
    });
  const lastSeq = async () =>
    ctx.withPgClient(ctx.pgSettings ?? null, async (client) => {
      const { rows } = await client.query<{ seq: string | null }>({ text: "select app_public.live_seq() as seq", values: [] });
      return Number(rows[0]?.seq ?? 0);
    });
  return { read, lastSeq };
}

function sinceOf(since: string | null): number | null {
  if (since === null) return null;
  const n = Number(since);
  if (!Number.isSafeInteger(n) || n < 0) throw new QuireError("BADIN", "`since` must be a seq number received earlier (0 replays everything kept).");
  return n;
}

export function makeLivePlugin(live: LiveEvents) {
  return extendSchema((build) => {
    const { jobs, documents, summaries, integrations } = build.pgResources;
    if (!jobs || !documents || !summaries || !integrations) throw new Error("the jobs, documents, summaries and integrations tables are not exposed");

    /** A subscribe plan: the caller's organization's events, narrowed by `accept`. */
    const subscribePlan =
      (idArg: string, accept: (event: LiveEvent, id: string | null) => boolean) => (_$root: Step, fieldArgs: { getRaw(name: string): Step }) => {
        const $args = object({ id: fieldArgs.getRaw(idArg), since: fieldArgs.getRaw("since") }) as Step<LiveArgs>;
        const $subscriber = lambda([context(), $args], ([ctx, args]) => {
          const claims = ctx.quireAuth;
          if (!claims) throw new QuireError("LOGIN", "Sign in to subscribe.");
          const since = sinceOf(args.since ?? null);
          const id = args.id ?? null;
          return {
            subscribe: () => live.subscribe(claims.orgId, { since, accept: (event) => accept(event, id), outbox: outboxOf(ctx, claims.orgId) }),
          };
        });
        return listen($subscriber, "live");
      };

    /** The row an event names, when it names one of `entity`; re-read under the subscriber's RLS. */
    const idFor = ($event: Step<LiveEvent>, entity: LiveEvent["entity"]) => inhibitOnNull(lambda($event, (e) => (e.entity === entity ? e.entityId : null)));

    return {
      typeDefs: gql`
        enum LiveEntity {
          job
          document
          summary
          integration
        }
        enum LiveOperation {
          insert
          update
          delete
        }
        """
        A change in the organization. \`seq\` numbers the organization's events; pass the last one you received as
        \`since\` when subscribing again to replay what you missed. The row is read as you may see it (null once deleted).
        """
        type LiveEvent {
          seq: BigInt!
          entity: LiveEntity!
          op: LiveOperation!
          entityId: UUID!
          documentId: UUID
          "True when events before this one could no longer be replayed: refetch what you show."
          missedEarlier: Boolean!
          job: Job
          document: Document
          summary: Summary
          integration: Integration
        }
        ${payloadsWithLiveSeq
          .map(
            (name) => `
              extend type ${name} {
                """
                Subscribe with \`since\` set to this to receive every live event of this mutation and of the job it
                started, even those sent before the subscription began.
                """
                liveSeq: BigInt
              }`,
          )
          .join("\n")}
        extend type Subscription {
          "Every change of the organization's jobs, or of one job."
          jobUpdated(jobId: UUID, since: BigInt): LiveEvent
          "Every change of the organization's documents and summaries, or of one document's."
          documentChanged(documentId: UUID, since: BigInt): LiveEvent
          "Every change of the organization's integrations (connected, needs re-auth, sync finished, disconnected), or of one."
          integrationChanged(integrationId: UUID, since: BigInt): LiveEvent
        }
      `,
      objects: {
        Subscription: {
          plans: {
            jobUpdated: {
              subscribePlan: subscribePlan("jobId", (e, id) => e.entity === "job" && (id === null || e.entityId === id)),
              plan: ($event: Step) => $event,
            },
            documentChanged: {
              subscribePlan: subscribePlan(
                "documentId",
                (e, id) => (e.entity === "document" || e.entity === "summary") && (id === null || e.documentId === id),
              ),
              plan: ($event: Step) => $event,
            },
            integrationChanged: {
              subscribePlan: subscribePlan("integrationId", (e, id) => e.entity === "integration" && (id === null || e.entityId === id)),
              plan: ($event: Step) => $event,
            },
          },
        },
        ...Object.fromEntries(payloadsWithLiveSeq.map((name) => [name, { plans: { liveSeq: liveSeqPlan } }])),
        LiveEvent: {
          plans: {
            seq: ($e: Step<LiveEvent>) => lambda($e, (e) => String(e.seq)),
            job: ($e: Step<LiveEvent>) => jobs.get({ id: idFor($e, "job") }),
            document: ($e: Step<LiveEvent>) => documents.get({ id: idFor($e, "document") }),
            summary: ($e: Step<LiveEvent>) => summaries.get({ id: idFor($e, "summary") }),
            integration: ($e: Step<LiveEvent>) => integrations.get({ id: idFor($e, "integration") }),
          },
        },
      },
    };
  }, "QuireLivePlugin");
}
