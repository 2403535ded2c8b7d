// A real S3-compatible server on loopback for the S3 backend's tests: s3rver, which speaks the S3 REST API
// (PutObject, GetObject, DeleteObjects, presigned URLs) over files in a temporary directory. Each call starts
// its own server with one bucket; stop() shuts it down and removes its files.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import S3rver from "s3rver";

export interface S3TestServer {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** The environment that points Quire at it (through `endpoint`, e.g. a proxy's, when given). */
  env(endpoint?: string): NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

export async function startS3Server(bucket = "quire-test-files"): Promise<S3TestServer> {
  const directory = await mkdtemp(join(tmpdir(), "quire-s3rver-"));
  const server = new S3rver({ address: "127.0.0.1", port: 0, silent: true, directory, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    bucket,
    env: (through = endpoint) => ({
      STORAGE_BACKEND: "s3",
      S3_BUCKET: bucket,
      S3_ENDPOINT: through,
      S3_FORCE_PATH_STYLE: "true",
      S3_ACCESS_KEY_ID: "S3RVER",
      S3_SECRET_ACCESS_KEY: "S3RVER",
    }),
    async stop() {
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
