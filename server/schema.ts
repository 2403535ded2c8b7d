// The printed GraphQL schema, for schema.graphql and the test that keeps it current.
import type pg from "pg";
import { printSchema } from "postgraphile/graphql";
import { postgraphile } from "postgraphile";
import type { Config } from "../lib/config.ts";
import type { Logger } from "../lib/logger.ts";
import { makePreset } from "./preset.ts";

export async function buildSchema(options: { config: Config; logger: Logger; pool: pg.Pool }): Promise<string> {
  const pgl = postgraphile(makePreset(options));
  try {
    return printSchema(await pgl.getSchema()) + "\n";
  } finally {
    await pgl.release();
  }
}
