// GET /api/v1/files/download?token=…: the download URLs of the local storage backend, the counterpart of an S3
// presigned URL. The token alone grants the download (lib/storage/local-store.ts): it is checked, not the caller,
// so a link works in a browser tab or a mail client until it expires, and answers 403 FORBIDDEN after that, or
// when altered. The object must still be a live row's (app_private.stored_object_live: a file not in the trash,
// an unexpired export), so a trash, an erasure or an expiry ends its links at once (404). The object is sent as an attachment with its detected type, under a sandboxing CSP and nosniff,
// so an uploaded HTML page or SVG never runs as this origin. Only the local backend mounts this route.
import type { RequestHandler } from "express";
import type pg from "pg";
import { pipeline } from "node:stream/promises";
import { verifyDownload } from "../lib/storage/local-store.ts";
import { attachmentDisposition, StorageError, type ObjectStore } from "../lib/storage/object-store.ts";

export function fileDownloadRoute(store: ObjectStore, urlKey: Buffer, pool: pg.Pool): RequestHandler {
  return async (req, res) => {
    const token = typeof req.query.token === "string" ? req.query.token : "";
    const download = verifyDownload(urlKey, token);
    if (!download) {
      res.status(403).json({ error: { code: "FORBIDDEN", message: "This download link is invalid or has expired." } });
      return;
    }
    let body;
    try {
      const { rows } = await pool.query<{ live: boolean }>("select app_private.stored_object_live($1) as live", [download.key]);
      if (!rows[0]?.live) throw new StorageError("NOT_FOUND", "No such object.");
      body = await store.get(download.key);
    } catch (error) {
      if (error instanceof StorageError && (error.code === "NOT_FOUND" || error.code === "BAD_KEY")) {
        res.status(404).json({ error: { code: "NOT_FOUND", message: "The file no longer exists." } });
      } else {
        req.log?.error({ err: error }, "file download failed");
        res.status(503).json({ error: { code: "UNAVAILABLE", message: "File storage is unavailable; try again shortly." } });
      }
      return;
    }
    res.status(200);
    res.setHeader("content-type", download.contentType);
    res.setHeader("content-disposition", attachmentDisposition(download.filename));
    res.setHeader("x-content-type-options", "nosniff");
    res.setHeader("content-security-policy", "default-src 'none'; sandbox");
    res.setHeader("cache-control", "private, no-store");
    // A client that goes away mid-download ends the pipeline with an error: nothing to answer, the file is closed.
    await pipeline(body, res).catch(() => {
      body.destroy();
    });
  };
}
