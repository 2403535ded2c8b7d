// STORAGE_BACKEND=s3: AWS S3 or any S3-compatible server (MinIO, Cloudflare R2, Ceph) through the AWS SDK v3. A
// PutObject is atomic on every S3 implementation (the object appears whole or not at all) and carries the body's
// SHA-256, so the server refuses a body that arrived damaged. Download URLs are presigned GETs that name the file
// and its type in the response headers. Every call is bounded in time (connect 5 s, request 60 s) and retried by
// the SDK on throttling and network errors (3 attempts); a failure surfaces as StorageError UNAVAILABLE, whose
// message names neither the key nor the bucket.
import { DeleteObjectsCommand, GetObjectCommand, NoSuchKey, PutObjectCommand, S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import type { Readable } from "node:stream";
import type { S3StorageConfig } from "../config.ts";
import { attachmentDisposition, checkKey, StorageError, type DownloadOptions, type ObjectStore, type PutOptions, type SignedUrl } from "./object-store.ts";

/** S3 deletes at most this many keys per DeleteObjects call. */
const deleteBatch = 1000;

export function createS3Store(config: S3StorageConfig): ObjectStore {
  const client = new S3Client({
    region: config.region,
    ...(config.endpoint ? { endpoint: config.endpoint } : {}),
    forcePathStyle: config.forcePathStyle,
    ...(config.credentials ? { credentials: config.credentials } : {}),
    maxAttempts: 3,
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000 },
  });
  const unavailable = (what: string, error: unknown) =>
    new StorageError("UNAVAILABLE", `File storage is unavailable (${what}); try again shortly.`, { cause: error });

  return {
    backend: "s3",
    async put(key: string, body: Buffer | Readable, options: PutOptions): Promise<void> {
      checkKey(key);
      try {
        await client.send(
          new PutObjectCommand({
            Bucket: config.bucket,
            Key: key,
            Body: body,
            ContentType: options.contentType,
            ...(options.bytes === undefined ? {} : { ContentLength: options.bytes }),
            ChecksumSHA256: Buffer.from(options.sha256, "hex").toString("base64"),
          }),
        );
      } catch (error) {
        throw unavailable("store", error);
      }
    },
    async get(key: string): Promise<Readable> {
      checkKey(key);
      try {
        const { Body } = await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: key }));
        if (!Body) throw new StorageError("NOT_FOUND", "No such object.");
        return Body as Readable;
      } catch (error) {
        if (error instanceof StorageError) throw error;
        if (error instanceof NoSuchKey || (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 404)) {
          throw new StorageError("NOT_FOUND", "No such object.");
        }
        throw unavailable("read", error);
      }
    },
    async delete(keys: readonly string[]): Promise<void> {
      keys.forEach(checkKey);
      for (let i = 0; i < keys.length; i += deleteBatch) {
        const batch = keys.slice(i, i + deleteBatch);
        let failed: number;
        try {
          const result = await client.send(
            new DeleteObjectsCommand({ Bucket: config.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
          );
          failed = (result.Errors ?? []).filter((e) => e.Code !== "NoSuchKey").length;
        } catch (error) {
          throw unavailable("delete", error);
        }
        if (failed > 0) throw new StorageError("UNAVAILABLE", `File storage refused to delete ${failed} of ${batch.length} objects.`);
      }
    },
    async signedUrl(key: string, download: DownloadOptions): Promise<SignedUrl> {
      checkKey(key);
      const expiresAt = new Date(Date.now() + config.urlTtlSeconds * 1000);
      try {
        const url = await getSignedUrl(
          client,
          new GetObjectCommand({
            Bucket: config.bucket,
            Key: key,
            ResponseContentDisposition: attachmentDisposition(download.filename),
            ResponseContentType: download.contentType,
          }),
          { expiresIn: config.urlTtlSeconds },
        );
        return { url, expiresAt };
      } catch (error) {
        // No credentials to sign with (the default chain found none), for one.
        throw unavailable("sign", error);
      }
    },
    close() {
      client.destroy();
    },
  };
}
