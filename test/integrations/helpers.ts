// What the integration tests share: awaiting the IntegrationError a call must fail with, and a clock that moves
// only when slept on, so pacing and backoff run instantly while every wait they ask for is recorded.
import { IntegrationError } from "../../lib/integrations/errors.ts";

/** What a test checks of an IntegrationError, as a plain object (toMatchObject does not see Error's message). */
export interface Failed {
  readonly code: IntegrationError["code"];
  readonly message: string;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;
}

/** The IntegrationError `promise` rejects with (the test fails if it resolves or rejects with something else). */
export async function failure(promise: Promise<unknown>): Promise<Failed> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(IntegrationError);
    const { code, message, retryable, retryAfterMs, status } = error as IntegrationError;
    return { code, message, retryable, retryAfterMs, status };
  }
  throw new Error("expected the call to fail");
}

/** `now` and `sleep` over a virtual clock: sleeping advances it and records the wait. */
export function fakeClock() {
  const state = { time: 1_000, waits: [] as number[] };
  return {
    state,
    now: () => state.time,
    sleep: async (ms: number) => {
      state.waits.push(ms);
      state.time += ms;
    },
  };
}

/** The global fetch, with the virtual time of each call recorded (what a pacing test measures). */
export function timedFetch(now: () => number) {
  const times: number[] = [];
  const wrapped: typeof fetch = (input, init) => {
    times.push(now());
    return fetch(input, init);
  };
  return { times, fetch: wrapped };
}
