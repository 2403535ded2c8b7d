// Waiting for what a worker does in the background: read until a condition holds, bounded in time.

/** Reads with `read` every 50 ms until `done` holds of the value (returned), failing after `ms` (default 20 s). */
export async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
