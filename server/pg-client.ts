// How an API operation gets its database connection: PostGraphile's own `withPgClient` (@dataplan/pg's pg adaptor)
// opens a transaction for an operation with settings in two round trips, `begin` and then a `select set_config(…)`.
// This one sends both in a single simple-protocol message, so a read is three round trips (begin and settings,
// the select, commit) instead of four. Everything inside the transaction is the adaptor's own client (queries,
// prepared statements, notices, and savepoints for the mutations' nested transactions).
//
// The settings' names and values come from the server (server/context.ts: verified claims, request id, limits),
// never from a client as SQL; they are quoted with the driver's escapeLiteral all the same.
import type { WithPgClient } from "postgraphile/@dataplan/pg";
import { makeWithPgClientViaPgClientAlreadyInTransaction, type NodePostgresPgClient } from "postgraphile/adaptors/pg";
import type pg from "pg";

/**
 * The adaptor's one-off setting for a connection new to PostGraphile: the JIT optimizer is off (PostGraphile's
 * queries are short; optimizing them costs more than it saves). Sent with the connection's first transaction.
 */
const connectionSetup = "set jit_optimize_above_cost = -1";
const setUp = new WeakSet<pg.PoolClient>();

/** `begin` and every setting, as one message: `begin; select set_config('k', 'v', true), …`. */
export function beginWith(client: pg.ClientBase, settings: ReadonlyArray<readonly [string, string]>): string {
  const configs = settings.map(([key, value]) => `set_config(${client.escapeLiteral(key)}, ${client.escapeLiteral(value)}, true)`);
  return `begin; select ${configs.join(", ")}`;
}

/** A `withPgClient` over `pool` that begins a transaction and applies its settings in one round trip. */
export function makeWithPgClient(pool: pg.Pool): WithPgClient<NodePostgresPgClient> {
  return async (pgSettings, callback) => {
    const client = await pool.connect();
    // A client whose transaction could not be ended is never handed out again.
    let broken = false;
    try {
      const settings = Object.entries(pgSettings ?? {}).filter((entry): entry is [string, string] => entry[1] != null);
      const setup = setUp.has(client) ? null : connectionSetup;
      setUp.add(client);
      if (settings.length === 0) {
        if (setup) await client.query(setup);
        return await makeWithPgClientViaPgClientAlreadyInTransaction(client, false)(null, callback);
      }
      try {
        await client.query(setup ? `${setup}; ${beginWith(client, settings)}` : beginWith(client, settings));
        // Already in the transaction: the adaptor's client turns nested transactions into savepoints.
        const result = await makeWithPgClientViaPgClientAlreadyInTransaction(client, true)(null, callback);
        await client.query("commit");
        return result;
      } catch (error) {
        await client.query("rollback").catch(() => {
          broken = true;
        });
        throw error;
      }
    } finally {
      client.release(broken);
    }
  };
}
