// A transaction that runs as a request's caller outside GraphQL (uploads, OAuth, browsing an integration): the
// same PostgreSQL settings a GraphQL request gets (server/context.ts pgSettingsFor), applied with set_config(…,
// true), so row-level security, triggers and the session check are the database's, exactly as for GraphQL.
import type pg from "pg";

/** Runs `fn` in one transaction on a pool connection with `settings`; commits if it resolves, rolls back if not. */
export async function asCaller<T>(pool: pg.Pool, settings: Readonly<Record<string, string>>, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("begin");
    try {
      await client.query("select set_config(key, value, true) from json_each_text($1::json)", [JSON.stringify(settings)]);
      const result = await fn(client);
      await client.query("commit");
      return result;
    } catch (error) {
      await client.query("rollback").catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw error;
    }
  } finally {
    // A connection whose rollback failed is in an unknown state: it is closed rather than reused.
    client.release(broken);
  }
}
