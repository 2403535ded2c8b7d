// A real graphql-ws client for subscription tests: it collects every event of one subscription and lets a test
// wait for the event it expects.
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";

export interface Subscription<T> {
  readonly events: T[];
  readonly errors: unknown[];
  /** Resolves with the first event (already received or to come) that matches, or rejects after `ms`. */
  waitFor(match: (event: T) => boolean, ms?: number): Promise<T>;
  close(): Promise<void>;
}

/** Subscribes to `query` on `baseUrl` (http://…) with `token`; each event is `data[field]`. */
export function subscribe<T>(baseUrl: string, token: string | null, query: string, variables: Record<string, unknown> = {}): Subscription<T> {
  const client: Client = createClient({
    url: `${baseUrl.replace(/^http/, "ws")}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: true,
  });
  const events: T[] = [];
  const errors: unknown[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of [...waiters]) waiter();
  };
  const unsubscribe = client.subscribe<Record<string, T>>(
    { query, variables },
    {
      next(result) {
        if (result.errors) errors.push(...result.errors);
        const data = result.data;
        if (data) for (const value of Object.values(data)) events.push(value);
        notify();
      },
      error(error) {
        errors.push(error);
        notify();
      },
      complete() {
        notify();
      },
    },
  );
  return {
    events,
    errors,
    waitFor(match, ms = 15_000) {
      return new Promise<T>((resolve, reject) => {
        const check = () => {
          const found = events.find(match);
          if (found !== undefined) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching event within ${ms} ms; got ${JSON.stringify(events)} and errors ${JSON.stringify(errors)}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    async close() {
      unsubscribe();
      await client.dispose();
    },
  };
}
