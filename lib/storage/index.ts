// The object store the configuration names (STORAGE_BACKEND), for the server and the worker alike.
import type { Config } from "../config.ts";
import { createLocalStore, downloadUrlKey } from "./local-store.ts";
import type { ObjectStore } from "./object-store.ts";
import { createS3Store } from "./s3-store.ts";

export function createObjectStore(config: Config): ObjectStore {
  return config.storage.backend === "s3"
    ? createS3Store(config.storage)
    : createLocalStore(config.storage, { publicUrl: config.integrations.publicUrl, urlKey: downloadUrlKey(config.jwt.secret) });
}
