// answer_question: answers a question asked with askQuestion (a `jobs` row of kind answer).
//
// (1) app_private.start_answer_job claims the run, marks the job running and reads the question and the model to
// use; (2) retrieval, in the job's RLS context (the asker's organization, nothing else): the question is embedded
// when an embedding provider is configured, and app_hidden.retrieve_chunks returns the best passages; (3) the model
// is asked to answer only from them, quoted between fences it cannot forge, and its text streams to jobProgress;
// the offline default (extractive) quotes the best-matching sentences instead; (4) citations are read from the
// answer's [n] markers, each pointing at a passage that was given (any other marker is dropped), and
// app_private.finish_answer_job writes the answer, its citations, its usage and the job's success together (it
// checks once more that every citation names a passage given). The model's answer is stored and shown as text: it
// can call nothing, fetch nothing, and read nothing beyond the passages retrieval gave it, so instructions planted
// in a document cannot reach beyond that answer.
import type { Task } from "graphile-worker";
import { answerExtractively } from "../../lib/answers/extractive.ts";
import { citationsOf } from "../../lib/answers/citations.ts";
import { buildAnswerPrompt } from "../../lib/answers/prompt.ts";
import type { SourceChunk } from "../../lib/answers/sources.ts";
import type { EmbeddingsClient } from "../../lib/llm/embeddings.ts";
import { inPieces } from "../../lib/llm/extractive.ts";
import { estimateTokens, type Completion, type LlmProvider } from "../../lib/llm/provider.ts";
import type { RescheduleOptions } from "../../lib/llm/retry.ts";
import { addToLogContext } from "../../lib/log-context.ts";
import { RunSuperseded, type JobTicket } from "../job-context.ts";
import { makeJobTask, type JobTaskDependencies } from "../job-task.ts";
import { llmOutcome, withLlmRun, type LlmCall, type LlmRunDependencies } from "../llm-run.ts";
import type { OrganizationLlm, OrganizationLlmRow } from "../organization-llm.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      answer_question: JobTicket;
    }
  }
}

export interface AnswerQuestionDependencies extends JobTaskDependencies, LlmRunDependencies {
  readonly organizationLlm: OrganizationLlm;
  /** The embedding provider (EMBEDDINGS_*); null: retrieval is full-text only. */
  readonly embeddings: EmbeddingsClient | null;
  /** LLM_MAX_OUTPUT_TOKENS. */
  readonly maxOutputTokens: number;
  readonly llmRetry: RescheduleOptions;
  /** Passages given to the model. Default 8. */
  readonly passages?: number;
}

/** What app_private.start_answer_job answers. */
interface Started extends OrganizationLlmRow {
  readonly outcome: "started" | "gone";
  readonly org_id: string | null;
  readonly requested_by: string | null;
  readonly question: string | null;
  readonly document_ids: string[] | null;
}

interface Work {
  readonly orgId: string;
  readonly question: string;
  readonly documentIds: string[] | null;
  readonly llm: OrganizationLlmRow;
}

/** A passage as app_hidden.retrieve_chunks returns it. */
interface Retrieved {
  readonly chunk_id: string;
  readonly document_id: string;
  readonly document_revision: number;
  readonly title: string;
  readonly heading: string | null;
  readonly content: string;
}

export function makeAnswerQuestion(deps: AnswerQuestionDependencies): Task<"answer_question"> {
  const { organizationLlm, embeddings, runnerId, maxOutputTokens, llmRetry, passages = 8 } = deps;

  /** The answer's text and usage: the extractive provider quotes, the others write. */
  const answer = async (
    provider: LlmProvider,
    question: string,
    sources: SourceChunk[],
    call: LlmCall,
  ): Promise<{ completion: Completion; given: SourceChunk[] }> => {
    if (provider.name === "extractive") {
      const started = performance.now();
      const text = answerExtractively(question, sources);
      // Handed over a few words at a time, as the extractive provider streams its summaries.
      for (const piece of inPieces(text)) call.onDelta(piece);
      const prompt = buildAnswerPrompt(question, sources).prompt;
      const completion: Completion = {
        text,
        promptTokens: estimateTokens(prompt),
        completionTokens: estimateTokens(text),
        provider: "extractive",
        model: provider.model,
        latencyMs: Math.round(performance.now() - started),
      };
      return { completion, given: sources };
    }
    const { prompt, included } = buildAnswerPrompt(question, sources);
    const completion = await provider.complete({ prompt, sourceText: "", maxOutputTokens, signal: call.signal, onDelta: call.onDelta });
    return { completion, given: included };
  };

  return makeJobTask("answer_question", deps, {
    async start({ helpers, ticket, runId }): Promise<Work | null> {
      const { rows } = await helpers.withPgClient((client) =>
        client.query<Started>(
          `select outcome, org_id, requested_by, question, document_ids, llm_provider, llm_model, llm_key_id, llm_nonce, llm_ciphertext
             from app_private.start_answer_job($1, $2, $3, $4, $5)`,
          [ticket.jobId, ticket.token, runId, runnerId, helpers.job.locked_by ?? null],
        ),
      );
      const started = rows[0]!;
      if (started.outcome === "gone") return null;
      addToLogContext({ orgId: started.org_id!, ...(started.requested_by ? { userId: started.requested_by } : {}) });
      return { orgId: started.org_id!, question: started.question!, documentIds: started.document_ids, llm: started };
    },

    async work(run, work) {
      const { helpers, ticket, runId } = run;
      const provider = await organizationLlm(work.orgId, work.llm);
      // What the model is given, for the charge of a cancelled run (the question and the passages, roughly).
      let promptText = work.question;
      const charge = { kind: "answer" as const, provider: provider.name, model: provider.model, prompt: () => promptText };
      const result = await withLlmRun(run, work.orgId, deps, charge, async (call) => {
        // Retrieval reads as the job: RLS keeps it inside the organization (and out of the trash).
        const queryEmbedding = embeddings ? (await embeddings.embed([work.question], call.signal)).vectors[0]! : null;
        const { rows } = await run.inJob((client) =>
          client.query<Retrieved>(
            "select chunk_id, document_id, document_revision, title, heading, content from app_hidden.retrieve_chunks($1, $2::real[], $3::uuid[], $4)",
            [work.question, queryEmbedding, work.documentIds, passages],
          ),
        );
        const sources: SourceChunk[] = rows.map((r) => ({
          chunkId: r.chunk_id,
          documentId: r.document_id,
          title: r.title,
          heading: r.heading,
          content: r.content,
        }));
        const revisions = new Map(rows.map((r) => [r.chunk_id, r.document_revision]));
        promptText = [work.question, ...sources.map((source) => source.content)].join("\n\n");
        return { ...(await answer(provider, work.question, sources, call)), revisions };
      });
      const { completion, given, revisions } = result;
      const { text, citations } = citationsOf(completion.text, given);
      const sources = given.map((s) => ({ chunkId: s.chunkId, documentId: s.documentId, documentRevision: revisions.get(s.chunkId)! }));
      const cited = citations.map((c) => ({ ...c, documentRevision: revisions.get(c.chunkId)! }));
      const { rows } = await helpers.withPgClient((client) =>
        client.query<{ outcome: "succeeded" | "superseded" | "gone" }>(
          "select app_private.finish_answer_job($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) as outcome",
          [
            ticket.jobId,
            ticket.token,
            runId,
            text.trim() || completion.text,
            completion.provider,
            completion.model,
            completion.promptTokens,
            completion.completionTokens,
            Math.round(completion.latencyMs),
            JSON.stringify(sources),
            JSON.stringify(cited),
          ],
        ),
      );
      const outcome = rows[0]!.outcome;
      if (outcome === "superseded") throw new RunSuperseded(ticket.jobId);
      helpers.logger.info(
        outcome === "succeeded"
          ? `answer_question: job ${ticket.jobId} succeeded (${given.length} passages, ${citations.length} citations)`
          : `answer_question: job ${ticket.jobId} was cancelled; answer dropped`,
      );
    },

    outcome: (error, { helpers }) => llmOutcome(error, helpers, llmRetry),

    internalMessage: "The question could not be answered.",
  });
}
