// chunk_document: cuts a document into the passages retrieval searches (app_public.document_chunks), queued by the
// database after each insert or content change (debounced: one job per document, its run pushed back by each edit).
//
// It reads the current revision, splits it (lib/retrieval/chunks.ts), embeds the passages when an embedding
// provider is configured and the organization has tokens left this month, and replaces the document's chunks with
// them only if that revision is still current (an edit committed meanwhile has queued the next run, and this one's
// work is dropped), charging the embeddings in that same transaction: work dropped is never charged. The payload is the document's id only; the text never leaves the database except to the embedding
// provider.
import type { Task } from "graphile-worker";
import type { EmbeddingsClient } from "../../lib/llm/embeddings.ts";
import { chunkDocument, type DocumentChunk } from "../../lib/retrieval/chunks.ts";
import { pairSafeEnd } from "../../lib/unicode.ts";
import { isUuid } from "../../lib/uuid.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      chunk_document: { documentId: string };
    }
  }
}

export interface ChunkDocumentDependencies {
  /** The embedding provider (EMBEDDINGS_*); null: chunks get no embedding, retrieval is full-text only. */
  readonly embeddings: EmbeddingsClient | null;
}

/** Longest heading path stored (the column's bound). */
const headingMaxChars = 1000;

/** How embedding usage rows name the provider: EMBEDDINGS_* speaks OpenAI's /embeddings API. */
const embeddingProvider = "openai";

interface Document {
  readonly org_id: string | null;
  readonly revision: number | null;
  readonly format: "markdown" | "plain" | "html" | null;
  readonly content: string | null;
  readonly within_allowance: boolean | null;
}

/** What is embedded for a chunk: its heading path and text, so a passage is found by its section's name too. */
const embeddedText = (chunk: DocumentChunk) => (chunk.heading ? `${chunk.heading}\n\n${chunk.content}` : chunk.content);

export function makeChunkDocument({ embeddings }: ChunkDocumentDependencies): Task<"chunk_document"> {
  return async (payload, helpers) => {
    const documentId = (payload as { documentId?: unknown } | null)?.documentId;
    if (!isUuid(documentId)) {
      helpers.logger.error("chunk_document: malformed payload, dropped");
      return;
    }
    const { rows } = await helpers.query<Document>("select org_id, revision, format, content, within_allowance from app_private.document_to_chunk($1)", [
      documentId,
    ]);
    const document = rows[0];
    if (!document?.org_id || document.revision === null || document.content === null) return;
    const chunks = chunkDocument(document.content, { format: document.format ?? "markdown" }).map((chunk) => ({
      ...chunk,
      heading:
        chunk.heading && chunk.heading.length > headingMaxChars ? `${chunk.heading.slice(0, pairSafeEnd(chunk.heading, headingMaxChars - 1))}…` : chunk.heading,
    }));
    // Past the month's tokens, the chunks go without embeddings: retrieval is full-text for them until the next edit.
    const embedded =
      embeddings && chunks.length > 0 && document.within_allowance ? await embeddings.embed(chunks.map(embeddedText), helpers.abortSignal) : null;
    const written = await helpers.query<{ written: number | null }>("select app_private.replace_document_chunks($1, $2, $3, $4, $5, $6) as written", [
      documentId,
      document.revision,
      JSON.stringify(chunks.map((chunk, i) => ({ ...chunk, ...(embedded ? { embedding: embedded.vectors[i] } : {}) }))),
      embedded?.model ?? null,
      embeddingProvider,
      embedded?.promptTokens ?? 0,
    ]);
    const count = written.rows[0]?.written ?? null;
    // The document changed meanwhile: its chunks were not kept, but the provider was paid for their embeddings.
    if (count === null && embedded) {
      await helpers.query("select app_private.record_embedding_usage($1, $2, $3, $4)", [
        document.org_id,
        embeddingProvider,
        embedded.model,
        embedded.promptTokens,
      ]);
    }
    helpers.logger.debug(
      count === null
        ? `chunk_document: document ${documentId} changed meanwhile; its next run cuts it`
        : `chunk_document: document ${documentId} revision ${document.revision}: ${count} chunks`,
    );
  };
}
