// POST /api/v1/documents/upload: a file in, a document out.
//
// multipart/form-data with one file in the field `file` and an optional `title` field, authenticated with the same
// bearer token as GraphQL, verified once by authenticateHttp before the rate limiter. The file is streamed into memory with a hard cap (UPLOAD_MAX_BYTES: the request is
// refused with 413 the moment it is crossed, and nothing more is buffered), never written to a temporary file. Its type is
// decided from its bytes (lib/extract/sniff.ts), its text extracted in a worker thread with time and memory
// bounds (lib/extract/isolated.ts). Then the original is kept: the database reserves room in the organization's
// storage allowance and hands out its key (app_hidden.reserve_upload; QUOTA_EXCEEDED when full), the object store
// takes the bytes under that key, and the document is inserted and the file attached as the caller, in one
// transaction that applies exactly the PostgreSQL settings a GraphQL request would get (pgSettingsFor): RLS decides
// who may insert, the size trigger how large the content may be, and session_context() whether the session is
// still live. Nothing is left behind on any failure: no row (the transaction rolls back or never starts) and no
// object (deleted at once, and queued for the worker in case storage is down; a server that dies between the two
// steps leaves a reservation the worker sweeps with its object).
//
// 201 {"document": {"id", "title", "format", "bytes"}, "file": {"id", "bytes", "sha256", "contentType"}}: `bytes`
// of the document is the size of the stored text in UTF-8; the file's is the original's. Errors are {"error": {"code", "message"}}:
//   400 BAD_INPUT         not multipart; no file, or a second one; corrupt or encrypted file; text not UTF-8 or with
//                         NUL; nothing to extract; a title over 500 characters; a file nested too deeply to read
//   401 UNAUTHENTICATED   no token, a bad one, or a session that has ended
//   403 FORBIDDEN         the caller's role may not write documents (a viewer)
//   413 TOO_LARGE         file over UPLOAD_MAX_BYTES; too many PDF pages; DOCX over its entry or size limits;
//                         extraction over its time or memory bound; text over DOCUMENT_MAX_BYTES
//   415 UNSUPPORTED_TYPE  the bytes are not UTF-8 text, Markdown, HTML, PDF or DOCX (whatever the name says)
//   422 QUOTA_EXCEEDED    the organization's storage allowance has no room for the file
//   500 INTERNAL          anything else; logged, never described
//   503 UNAVAILABLE       the object store (or the database) cannot be reached; nothing was kept
// HTML is stored as `plain`: the stored text is html-to-text's rendering, not Markdown.
import { createHash, randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import busboy from "busboy";
import type { Request, RequestHandler, Response } from "express";
import type pg from "pg";
import { asCaller } from "../db/as-caller.ts";
import type { Config } from "../lib/config.ts";
import { publicDatabaseError, type DatabaseErrorDetail, type ErrorCode } from "../lib/errors.ts";
import { ExtractError } from "../lib/extract/errors.ts";
import { extractTextIsolated } from "../lib/extract/isolated.ts";
import type { DetectedType, Extracted } from "../lib/extract/index.ts";
import { StorageError, type ObjectStore } from "../lib/storage/object-store.ts";
import { requestIdOf } from "./access-log.ts";
import { authOf, unauthenticatedMessage } from "./bearer-auth.ts";
import { pgSettingsFor } from "./context.ts";
import type { ClientAddress } from "./client-address.ts";

export const uploadPath = "/api/v1/documents/upload";

export interface UploadRouteOptions {
  readonly config: Config;
  readonly pool: pg.Pool;
  /** The client's address, through TRUSTED_PROXIES (server/client-address.ts). */
  readonly addressOf: ClientAddress;
  /** Where originals are kept. */
  readonly store: ObjectStore;
}

/** The HTTP status of each error code this route can answer with; codes not listed answer 400. */
const statusByCode: Partial<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400,
  BAD_INPUT: 400,
  BAD_TEMPLATE: 400,
  UNAUTHENTICATED: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  MFA_ENROLLMENT_REQUIRED: 403,
  SSO_REQUIRED: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  TRY_AGAIN: 409,
  TOO_LARGE: 413,
  UNSUPPORTED_TYPE: 415,
  QUOTA_EXCEEDED: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  TIMEOUT: 503,
  UNAVAILABLE: 503,
};

/** An error this route answers with as it is. */
class UploadError extends Error {
  readonly code: ErrorCode;
  /** Set when the request body was not read to its end: the connection is closed after the answer. */
  closeConnection = false;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "UploadError";
    this.code = code;
  }
}

/** The client went away mid-request: there is nobody to answer. */
class ClientGone extends Error {}

const maxTitleLength = 500;
/** Room for the multipart framing and the title around the file, when judging a request by its Content-Length. */
const multipartOverhead = 64 * 1024;

interface Upload {
  readonly bytes: Buffer;
  readonly filename: string | null;
  readonly title: string | null;
}

/** Reads the multipart body: the file (at most `maxBytes`, else TOO_LARGE at once) and the title field. */
function readUpload(req: IncomingMessage, maxBytes: number): Promise<Upload> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      parser = busboy({
        headers: req.headers,
        defParamCharset: "utf8",
        limits: { files: 1, fields: 8, parts: 10, fieldNameSize: 100, fieldSize: 8 * 1024, headerPairs: 20, fileSize: maxBytes + 1 },
      });
    } catch (error) {
      reject(new UploadError("BAD_INPUT", "Send the file as multipart/form-data, in a field named `file`.", { cause: error }));
      return;
    }
    let done = false;
    let file: { chunks: Buffer[]; size: number; filename: string | null } | null = null;
    let title: string | null = null;
    const tooLarge = () => new UploadError("TOO_LARGE", `The file is larger than the limit of ${maxBytes} bytes.`);
    // After a refusal the rest of the body is read and dropped, never buffered. A body over the limit is answered at
    // once and its connection closed; any other is answered once it has been read (so the client is not cut off
    // mid-send), unless it too runs past the limit.
    const fail = (error: Error) => {
      if (done) return;
      done = true;
      req.unpipe(parser);
      parser.on("error", () => undefined); // late complaints about the abandoned body
      const cutOff = () => {
        if (error instanceof UploadError) error.closeConnection = true;
        reject(error);
      };
      if (error instanceof ClientGone || req.complete) {
        req.resume();
        reject(error);
      } else if (error instanceof UploadError && error.code === "TOO_LARGE") {
        req.resume();
        cutOff();
      } else {
        let drained = 0;
        const onData = (chunk: Buffer) => {
          drained += chunk.length;
          if (drained > maxBytes + multipartOverhead) {
            req.off("data", onData);
            req.off("end", onEnd);
            cutOff();
          }
        };
        const onEnd = () => reject(error);
        req.on("data", onData);
        req.once("end", onEnd);
        req.resume(); // unpipe() paused the request
      }
    };
    parser.on("file", (name, stream, info) => {
      stream.on("error", (error: Error) => fail(new UploadError("BAD_INPUT", "The multipart body is malformed.", { cause: error })));
      if (done || name !== "file") {
        stream.resume();
        if (!done) fail(new UploadError("BAD_INPUT", `Unexpected file field "${name.slice(0, 100)}": send the file in a field named \`file\`.`));
        return;
      }
      const current = { chunks: [] as Buffer[], size: 0, filename: info.filename ?? null };
      file = current;
      stream.on("data", (chunk: Buffer) => {
        if (done) return;
        current.size += chunk.length;
        if (current.size > maxBytes) fail(tooLarge());
        else current.chunks.push(chunk);
      });
      stream.on("limit", () => fail(tooLarge()));
    });
    parser.on("field", (name, value, info) => {
      if (name !== "title" || done) return;
      if (info.valueTruncated) fail(new UploadError("BAD_INPUT", `The title must be at most ${maxTitleLength} characters.`));
      else title = value;
    });
    parser.on("filesLimit", () => fail(new UploadError("BAD_INPUT", "Send one file per upload.")));
    parser.on("fieldsLimit", () => fail(new UploadError("BAD_INPUT", "The form has too many fields.")));
    parser.on("partsLimit", () => fail(new UploadError("BAD_INPUT", "The form has too many parts.")));
    parser.on("error", (error: Error) => fail(new UploadError("BAD_INPUT", "The multipart body is malformed.", { cause: error })));
    parser.on("close", () => {
      if (done) return;
      done = true;
      const got = file;
      if (!got) reject(new UploadError("BAD_INPUT", "No file was sent: put it in a field named `file`."));
      else resolve({ bytes: Buffer.concat(got.chunks, got.size), filename: got.filename, title });
    });
    req.on("close", () => {
      if (!req.complete) fail(new ClientGone("the client went away mid-upload"));
    });
    req.on("error", (error) => fail(new ClientGone(error.message)));
    req.pipe(parser);
  });
}

/** C0 control characters and DEL. */
const controls = /[\u0000-\u001f\u007f]+/g;

/** The file's own name, without any path, control characters or surrounding blanks; null when there is none. */
function cleanFilename(filename: string | null): string | null {
  const base = (filename ?? "").split(/[/\\]/).pop() ?? "";
  const cleaned = base.normalize("NFC").replace(controls, " ").replace(/\s+/g, " ").trim();
  return cleaned === "" ? null : [...cleaned].slice(0, 255).join("");
}

/** The `title` field, trimmed; null when absent or blank; BAD_INPUT when longer than a document title may be. */
function givenTitle(field: string | null): string | null {
  const title = (field ?? "").trim();
  if (title === "") return null;
  if ([...title].length > maxTitleLength) throw new UploadError("BAD_INPUT", `The title must be at most ${maxTitleLength} characters.`);
  return title;
}

/** The title given, else the file's own (PDF, HTML), else its name without extension, else "Untitled upload". */
function chooseTitle(given: string | null, extracted: Extracted, filename: string | null): string {
  if (given !== null) return given;
  if (extracted.title) return extracted.title;
  const stem = (filename ?? "").replace(/\.[A-Za-z0-9]{1,10}$/, "").trim();
  if (stem !== "") return [...stem].slice(0, maxTitleLength).join("");
  return "Untitled upload";
}

const sqlStateOf = (error: unknown): string | null => {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : null;
};

interface Inserted {
  readonly id: string;
  readonly title: string;
  readonly format: string;
  readonly bytes: number;
}

/** The media type recorded for each detected type (never the one the client claimed). */
const mediaTypes: Readonly<Record<DetectedType, string>> = {
  text: "text/plain",
  markdown: "text/markdown",
  html: "text/html",
  pdf: "application/pdf",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
};

interface Original {
  readonly key: string;
  readonly name: string | null;
  readonly contentType: string;
  readonly bytes: number;
  readonly sha256: string;
}

/** Reserves room and a key for the original (QUOTA when there is no room), as the caller. */
async function reserveUpload(pool: pg.Pool, settings: Record<string, string>, bytes: number): Promise<string> {
  return asCaller(pool, settings, async (client) => {
    const { rows } = await client.query<{ key: string }>("select app_hidden.reserve_upload($1) as key", [bytes]);
    return rows[0]!.key;
  });
}

/**
 * Inserts the document and attaches its original as the caller: one transaction with the request's settings, so
 * RLS and triggers apply, and the document never exists without its file.
 */
function insertDocument(
  pool: pg.Pool,
  settings: Record<string, string>,
  values: { title: string; extracted: Extracted; metadata: object; original: Original },
): Promise<{ document: Inserted; fileId: string }> {
  return asCaller(pool, settings, async (client) => {
    const { rows } = await client.query<Inserted>(
      `insert into app_public.documents (title, content, format, source, metadata)
       values ($1, $2, $3, 'upload', $4)
       returning id, title, format::text as format, octet_length(content) as bytes`,
      [values.title, values.extracted.text, values.extracted.format, JSON.stringify(values.metadata)],
    );
    const document = rows[0]!;
    const { original } = values;
    const attached = await client.query<{ id: string }>("select app_hidden.attach_file($1, $2, $3, $4, $5, $6) as id", [
      document.id,
      original.key,
      original.name,
      original.contentType,
      original.bytes,
      original.sha256,
    ]);
    return { document, fileId: attached.rows[0]!.id };
  });
}

export function uploadRoute({ config, pool, addressOf, store }: UploadRouteOptions): RequestHandler {
  const limits = {
    maxPdfPages: config.uploads.maxPdfPages,
    maxDocxUncompressedBytes: config.uploads.maxDocxUncompressedBytes,
    maxDocxEntries: config.uploads.maxDocxEntries,
  };
  const maxBytes = config.uploads.maxBytes;

  const answerError = (req: Request, res: Response, error: unknown) => {
    if (error instanceof ClientGone || res.headersSent || res.destroyed) return;
    let code: ErrorCode;
    let message: string;
    const sqlState = sqlStateOf(error);
    const known = sqlState ? publicDatabaseError(sqlState, (error as Error).message, error as DatabaseErrorDetail) : null;
    if (error instanceof UploadError || error instanceof ExtractError) {
      ({ code, message } = error);
    } else if (error instanceof StorageError) {
      req.log?.warn({ err: error }, "file storage failed during an upload");
      code = "UNAVAILABLE";
      message = "File storage is unavailable; try again shortly.";
    } else if (known) {
      ({ code, message } = known);
    } else {
      const errorId = randomUUID();
      req.log?.error({ err: error, errorId }, "document upload failed");
      res.status(500).json({ error: { code: "INTERNAL", message: "An internal error occurred.", errorId } });
      return;
    }
    const status = statusByCode[code] ?? 400;
    if (error instanceof UploadError && error.closeConnection) res.setHeader("connection", "close");
    res.status(status).json({ error: { code, message } });
  };

  /**
   * After a failed upload: the reservation is released, its object queued for the worker, and the object deleted at
   * once — but only when the reservation was still there. None means the document's transaction committed after all
   * (its COMMIT's answer was lost) and the object is the file's now; a release that fails leaves the object to the
   * worker's sweep, which deletes it only if its reservation outlived the hour.
   */
  const abandonOriginal = async (key: string, settings: Record<string, string>, req: Request) => {
    let released: boolean;
    try {
      released = await asCaller(
        pool,
        settings,
        async (client) => (await client.query<{ released: boolean }>("select app_hidden.release_upload($1) as released", [key])).rows[0]!.released,
      );
    } catch (error) {
      req.log?.warn({ err: error }, "releasing an upload's reservation failed; the worker sweeps it");
      return;
    }
    if (released)
      await store.delete([key]).catch((error: unknown) => req.log?.warn({ err: error }, "deleting a failed upload's object failed; the worker retries"));
  };

  return async (req, res) => {
    try {
      const claims = authOf(req);
      if (!claims) throw new UploadError("UNAUTHENTICATED", unauthenticatedMessage);
      if (!/^multipart\/form-data\s*;/i.test(req.headers["content-type"] ?? "")) {
        throw new UploadError("BAD_INPUT", "Send the file as multipart/form-data, in a field named `file`.");
      }
      const declaredLength = Number(req.headers["content-length"] ?? NaN);
      if (declaredLength > maxBytes + multipartOverhead) {
        const error = new UploadError("TOO_LARGE", `The file is larger than the limit of ${maxBytes} bytes.`);
        error.closeConnection = true;
        throw error;
      }

      const upload = await readUpload(req, maxBytes);
      const filename = cleanFilename(upload.filename);
      const given = givenTitle(upload.title);
      const extracted = await extractTextIsolated(upload.bytes, { filename, limits, timeoutMs: config.uploads.extractTimeoutMs });
      // A client that hung up during extraction gets no document it would never hear about.
      if (req.socket.destroyed) return;
      const title = chooseTitle(given, extracted, filename);
      const metadata = {
        upload: {
          filename,
          detectedType: extracted.detectedType,
          bytes: upload.bytes.length,
          ...(extracted.pages === undefined ? {} : { pages: extracted.pages }),
        },
      };
      const settings = pgSettingsFor(config, claims, requestIdOf(req), addressOf(req));
      const original: Original = {
        key: await reserveUpload(pool, settings, upload.bytes.length),
        name: filename,
        contentType: mediaTypes[extracted.detectedType],
        bytes: upload.bytes.length,
        sha256: createHash("sha256").update(upload.bytes).digest("hex"),
      };
      let inserted: { document: Inserted; fileId: string };
      try {
        await store.put(original.key, upload.bytes, { contentType: original.contentType, sha256: original.sha256 });
        inserted = await insertDocument(pool, settings, { title, extracted, metadata, original });
      } catch (error) {
        await abandonOriginal(original.key, settings, req);
        throw error;
      }
      const { document, fileId } = inserted;
      res.status(201).json({
        document: { id: document.id, title: document.title, format: document.format, bytes: Number(document.bytes) },
        file: { id: fileId, bytes: original.bytes, sha256: original.sha256, contentType: original.contentType },
      });
    } catch (error) {
      answerError(req, res, error);
    }
  };
}
