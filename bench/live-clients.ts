// graphql-ws subscribers for the live benchmarks, run in a worker thread of the bench so that receiving and
// parsing events does not share an event loop with the load the bench generates (or with other subscribers'
// threads). Each client is its own WebSocket connection (graphql-ws over `ws`, authenticated with its
// connectionParams.authorization) holding one subscription. Every event is stamped on arrival with the clock all
// of the bench's threads share (support.ts `clock`) and posted to the parent in batches; a stamp is never
// delayed by the batching. Errors and unexpected completions are posted as problems: the bench counts them.
//
// Protocol: workerData is a LiveClientsSetup. The worker posts `{ type: "opened" }` once every client has been
// acknowledged by the server (connection_ack) or has failed, then `{ type: "events" }` batches as they come. The
// parent may send `{ cmd: "loop", reset }` (answered with this thread's event-loop delay) and `{ cmd: "close" }`
// (every client is disposed, then `{ type: "closed" }` is posted and the thread ends).
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parentPort, workerData } from "node:worker_threads";
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { clock } from "./support.ts";

export interface LiveClientsSetup {
  /** ws://127.0.0.1:<port>/graphql */
  readonly url: string;
  readonly query: string;
  /** One WebSocket connection and one subscription each; `id` names the client in every message. */
  readonly clients: ReadonlyArray<{ readonly id: number; readonly token: string; readonly variables: Readonly<Record<string, unknown>> }>;
  /** Connections being opened at once (each waits for its connection_ack before the next starts). */
  readonly maxConnecting: number;
}

/** One event as one client received it: `data` is the subscription field's value. */
export interface Delivery {
  readonly client: number;
  readonly at: number;
  readonly data: unknown;
}

export interface LoopStats {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export type ClientsMessage =
  | { readonly type: "opened"; readonly connected: number; readonly failed: number }
  | { readonly type: "events"; readonly deliveries: Delivery[] }
  | { readonly type: "problem"; readonly client: number; readonly message: string }
  | { readonly type: "loop"; readonly stats: LoopStats }
  | { readonly type: "closed" };

export type ClientsCommand = { readonly cmd: "loop"; readonly reset: boolean } | { readonly cmd: "close" };

/** The event-loop delay histogram's resolution; an idle loop reads about this much. */
const LOOP_RESOLUTION_MS = 10;

if (parentPort) {
  const parent = parentPort;
  const setup = workerData as LiveClientsSetup;
  const post = (message: ClientsMessage) => parent.postMessage(message);
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();

  let batch: Delivery[] = [];
  const flush = () => {
    const deliveries = batch;
    batch = [];
    post({ type: "events", deliveries });
  };

  const clients: Client[] = [];
  const unsubscribes: Array<() => void> = [];
  let closing = false;

  /** Opens one client and subscribes; resolves once the server acknowledged the connection, or it failed. */
  const open = (spec: LiveClientsSetup["clients"][number]) =>
    new Promise<boolean>((resolve) => {
      let settled = false;
      const settle = (ok: boolean) => {
        if (settled) return;
        settled = true;
        resolve(ok);
      };
      const problem = (message: string) => {
        if (!closing) post({ type: "problem", client: spec.id, message });
        settle(false);
      };
      const client = createClient({
        url: setup.url,
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${spec.token}` },
        lazy: true,
        retryAttempts: 0,
        on: {
          connected: () => settle(true),
          closed: (event) => {
            const { code, reason } = event as { code?: number; reason?: string };
            if (!closing) problem(`connection closed (${code ?? "?"} ${reason ?? ""})`);
          },
        },
      });
      clients.push(client);
      unsubscribes.push(
        client.subscribe<Record<string, unknown>>(
          { query: setup.query, variables: { ...spec.variables } },
          {
            next(result) {
              const at = clock();
              if (result.errors) problem(`subscription error: ${JSON.stringify(result.errors).slice(0, 300)}`);
              if (!result.data) return;
              for (const data of Object.values(result.data)) batch.push({ client: spec.id, at, data });
              if (batch.length === 1) setImmediate(flush);
            },
            error(error) {
              problem(`subscription failed: ${error instanceof Error ? error.message : JSON.stringify(error).slice(0, 300)}`);
            },
            complete() {
              if (!closing) problem("subscription completed by the server");
            },
          },
        ),
      );
    });

  const opened = async () => {
    let next = 0;
    let connected = 0;
    let failed = 0;
    const lane = async () => {
      while (next < setup.clients.length && !closing) {
        const spec = setup.clients[next++]!;
        if (await open(spec)) connected++;
        else failed++;
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, setup.maxConnecting) }, lane));
    post({ type: "opened", connected, failed });
  };
  void opened();

  parent.on("message", (command: ClientsCommand) => {
    if (command.cmd === "loop") {
      const stats = { p50: loop.percentile(50) / 1e6, p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 };
      if (command.reset) loop.reset();
      post({ type: "loop", stats });
    } else if (command.cmd === "close") {
      closing = true;
      for (const unsubscribe of unsubscribes) unsubscribe();
      void Promise.allSettled(clients.map((client) => client.dispose())).then(() => {
        if (batch.length > 0) flush();
        loop.disable();
        post({ type: "closed" });
        parent.close();
      });
    }
  });
}
