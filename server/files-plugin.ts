// fileDownloadUrl: a short-lived URL that downloads the original of an uploaded file; organizationExportUrl, the same
// for an owner's export of the organization. The file is read as the
// caller (app_hidden.file_download: any role of the organization; another organization's id, a trashed file's or
// an unknown one answer NOT_FOUND alike), then the store signs a URL: an S3 presigned GET, or the local backend's
// signed /api/v1/files/download route. Either stops working after FILE_URL_TTL_SECONDS.
import type pg from "pg";
import { context, lambda, SafeError } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { asCaller } from "../db/as-caller.ts";
import { QuireError } from "../lib/quire-error.ts";
import { StorageError, type ObjectStore } from "../lib/storage/object-store.ts";
import { callerSettings } from "./request-origin.ts";

interface FileRow {
  readonly storage_key: string;
  readonly name: string | null;
  readonly content_type: string;
}

export function makeFilesPlugin(pool: pg.Pool, store: ObjectStore) {
  /** Reads the object as the caller with `sql` (NOT_FOUND when it is not theirs to download) and signs its URL. */
  const signed = async (ctx: Grafast.Context, sql: string, id: string) => {
    const [object] = await asCaller(pool, callerSettings(ctx), async (client) => (await client.query<FileRow>(sql, [id])).rows);
    if (!object) throw new QuireError("NTFND", "No such file.");
    try {
      const url = await store.signedUrl(object.storage_key, { filename: object.name, contentType: object.content_type });
      return { url: url.url, expiresAt: url.expiresAt.toISOString() };
    } catch (error) {
      if (error instanceof StorageError && error.code === "UNAVAILABLE") {
        throw new SafeError("File storage is unavailable; try again shortly.", { code: "UNAVAILABLE" });
      }
      if (error instanceof StorageError) throw new QuireError("NTFND", "No such file.");
      throw error;
    }
  };
  return extendSchema(
    () => ({
      typeDefs: gql`
        """
        A URL that downloads a file without any other credential, until it expires.
        """
        type FileDownload {
          url: String!
          expiresAt: Datetime!
        }
        extend type Query {
          """
          A short-lived URL (FILE_URL_TTL_SECONDS, default 5 minutes) that downloads the original of an uploaded file
          as an attachment. Anyone in the organization; NOT_FOUND for another organization's file or one in the trash.
          """
          fileDownloadUrl(fileId: UUID!): FileDownload
          """
          A short-lived URL (FILE_URL_TTL_SECONDS) that downloads an export of the organization (exportOrganization)
          as a tar archive. Owners only; NOT_FOUND once the export has expired.
          """
          organizationExportUrl(exportId: UUID!): FileDownload
        }
      `,
      objects: {
        Query: {
          plans: {
            fileDownloadUrl: (_$root, fieldArgs) =>
              lambda([fieldArgs.getRaw("fileId"), context()], ([fileId, ctx]) =>
                signed(ctx, "select storage_key, name, content_type from app_hidden.file_download($1)", String(fileId)),
              ),
            organizationExportUrl: (_$root, fieldArgs) =>
              lambda([fieldArgs.getRaw("exportId"), context()], ([exportId, ctx]) =>
                signed(ctx, "select storage_key, name, 'application/x-tar' as content_type from app_hidden.export_download($1)", String(exportId)),
              ),
          },
        },
      },
    }),
    "QuireFilesPlugin",
  );
}
