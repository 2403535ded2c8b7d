// export_organization: one archive of an organization's data, for exportOrganization. A tar file (POSIX ustar) of
//   manifest.json                    format, organization, time, row count per table, files, files missing
//   tables/<table>.jsonl             one JSON object per row, in id order: the organization, its members' user rows,
//                                    and every table of the organization (app_hidden.export_tables(): trashed
//                                    documents, revisions, summaries, templates, jobs, usage, the audit log, …)
//                                    without password hashes or any secret, which live in app_private
//   files/<file id>/<name>           the original of every uploaded file whose bytes match its recorded SHA-256
//                                    (the others are listed in the manifest as missing or damaged)
// The rows are read in the job's RLS context through app_hidden.export_page, in one transaction, in pages bounded in
// rows and bytes; the archive is written to a temporary file (its size is bounded by the organization's rows and its
// storage allowance) that is removed however the run ends, stored under orgs/<org>/exports/<job id> (a retry
// overwrites the same object), and recorded with the job's success in one transaction (app_hidden.finish_export),
// which also emails the owner who asked. When that last step is refused (the job was cancelled, the organization
// erased meanwhile), the stored archive is deleted at once.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { PoolClient } from "pg";
import tar from "tar-stream";
import { StorageError, type ObjectStore } from "../../lib/storage/object-store.ts";
import type { JobTicket } from "../job-context.ts";
import { startJob } from "../job-lifecycle.ts";
import { makeJobTask, type JobTaskDependencies } from "../job-task.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      export_organization: JobTicket;
    }
  }
}

export interface ExportDependencies extends JobTaskDependencies {
  readonly store: ObjectStore;
}

/** Rows per page read from the database. */
const pageSize = 1000;

/** A file name safe in a tar entry: no path, no control characters, at most 100 bytes of UTF-8. */
function entryName(name: string | null): string {
  const cleaned = (name ?? "original").replace(/[\u0000-\u001f\u007f/\\]+/g, "_").replace(/^\.+/, "_");
  let out = "";
  for (const char of cleaned) {
    if (Buffer.byteLength(out + char) > 100) break;
    out += char;
  }
  return out || "original";
}

/** Writes every page of `table` as JSON lines to `path` (an empty page is the end); returns how many rows. */
async function writeTable(client: PoolClient, table: string, path: string): Promise<number> {
  const out = createWriteStream(path, { mode: 0o600 });
  let rows = 0;
  let after: string | null = null;
  try {
    for (;;) {
      const page: { rows: Array<{ row: { id: string } }> } = await client.query<{ row: { id: string } }>("select app_hidden.export_page($1, $2, $3) as row", [
        table,
        after,
        pageSize,
      ]);
      if (page.rows.length === 0) break;
      const text = page.rows.map((r) => JSON.stringify(r.row)).join("\n") + "\n";
      if (!out.write(text)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
      rows += page.rows.length;
      after = page.rows.at(-1)!.row.id;
      if (table === "organizations") break;
    }
  } finally {
    await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
  }
  return rows;
}

/** Adds one entry of `size` bytes from `body` to the archive, after the previous one. */
async function addEntry(pack: tar.Pack, name: string, size: number, body: Readable): Promise<void> {
  const entry = pack.entry({ name, size, mode: 0o644, mtime: new Date() });
  await pipeline(body, entry as unknown as NodeJS.WritableStream);
}

/**
 * A stored original, read whole (an original is at most UPLOAD_MAX_BYTES): null when it is longer or shorter than
 * recorded or its SHA-256 differs, so a damaged object never breaks the archive's framing.
 */
async function readOriginal(body: Readable, bytes: number, sha256: string): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > bytes) {
      body.destroy();
      return null;
    }
    chunks.push(chunk);
  }
  const data = Buffer.concat(chunks, size);
  return size === bytes && createHash("sha256").update(data).digest("hex") === sha256 ? data : null;
}

export function makeExportOrganization(deps: ExportDependencies) {
  return makeJobTask("export_organization", deps, {
    start: ({ inJob, claim }) => inJob((client) => startJob(client), claim),
    async work({ inJob, ticket, helpers }, job) {
      const key = `orgs/${job.org_id}/exports/${ticket.jobId}`;
      const dir = await mkdtemp(join(tmpdir(), "quire-export-"));
      try {
        // Every table, read in one transaction of the job's context.
        const tables = await inJob(async (client) => {
          const names = (await client.query<{ table_name: string }>("select table_name from app_hidden.export_tables()")).rows.map((r) => r.table_name);
          const counts: Record<string, number> = {};
          for (const table of ["organizations", "users", ...names]) counts[table] = await writeTable(client, table, join(dir, `${table}.jsonl`));
          return counts;
        });
        const archivePath = join(dir, "export.tar");
        const pack = tar.pack();
        const hash = createHash("sha256");
        let bytes = 0;
        const counter = new PassThrough();
        counter.on("data", (chunk: Buffer) => {
          hash.update(chunk);
          bytes += chunk.length;
        });
        const written = pipeline(pack as unknown as NodeJS.ReadableStream, counter, createWriteStream(archivePath, { mode: 0o600 }));
        // Awaited below; until then a failure is kept for that await rather than reported as unhandled.
        written.catch(() => undefined);
        const files: Array<{ id: string; name: string | null; bytes: number }> = [];
        const missing: string[] = [];
        const damaged: string[] = [];
        try {
          for (const table of Object.keys(tables)) {
            const path = join(dir, `${table}.jsonl`);
            await addEntry(pack, `tables/${table}.jsonl`, (await stat(path)).size, createReadStream(path));
          }
          let after: string | null = null;
          for (;;) {
            const page: { rows: Array<{ id: string; storage_key: string; name: string | null; bytes: string; sha256: string }> } = await inJob((client) =>
              client.query<{ id: string; storage_key: string; name: string | null; bytes: string; sha256: string }>(
                "select id, storage_key, name, bytes, sha256 from app_hidden.export_files($1, $2)",
                [after, pageSize],
              ),
            );
            for (const file of page.rows) {
              let body: Readable;
              try {
                body = await deps.store.get(file.storage_key);
              } catch (error) {
                if (error instanceof StorageError && error.code === "NOT_FOUND") {
                  missing.push(file.id);
                  continue;
                }
                throw error;
              }
              const data = await readOriginal(body, Number(file.bytes), file.sha256);
              if (!data) {
                damaged.push(file.id);
                continue;
              }
              pack.entry({ name: `files/${file.id}/${entryName(file.name)}`, size: data.length, mode: 0o644 }, data);
              files.push({ id: file.id, name: file.name, bytes: data.length });
            }
            if (page.rows.length < pageSize) break;
            after = page.rows.at(-1)!.id;
          }
          const manifest = Buffer.from(
            JSON.stringify(
              {
                format: "quire-export",
                version: 1,
                organizationId: job.org_id,
                createdAt: new Date().toISOString(),
                tables,
                files,
                missingFiles: missing,
                damagedFiles: damaged,
              },
              null,
              2,
            ) + "\n",
          );
          pack.entry({ name: "manifest.json", size: manifest.length, mode: 0o644 }, manifest);
          pack.finalize();
        } catch (error) {
          // The archive's file is closed (not left open, holding its disk space, until the process ends).
          pack.destroy(error as Error);
          await written.catch(() => undefined);
          throw error;
        }
        await written;
        const sha256 = hash.digest("hex");
        await deps.store.put(key, createReadStream(archivePath), { contentType: "application/x-tar", sha256, bytes });
        try {
          await inJob((client) =>
            client.query("select app_hidden.finish_export($1, $2, $3, $4, $5)", [key, bytes, sha256, JSON.stringify(tables), files.length]),
          );
        } catch (error) {
          // Refused (the job was cancelled, or its organization erased, meanwhile): the archive must not outlive that.
          await deps.store.delete([key]).catch(() => undefined);
          throw error;
        }
        helpers.logger.info(
          `export_organization: job ${ticket.jobId} archived ${Object.values(tables).reduce((a, b) => a + b, 0)} rows and ${files.length} files`,
        );
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    outcome: (error) =>
      error instanceof StorageError ? { kind: "retry", code: "STORAGE_UNAVAILABLE", message: "File storage was unavailable; the export is retried." } : null,
    internalMessage: "The export failed.",
  });
}
