// What the benchmarks share: their knobs from the environment, progress on stderr, and free loopback ports.
import { createServer, type AddressInfo } from "node:net";
import type { ChildProcess } from "node:child_process";

/** A whole-number setting from the environment; a bad value stops the bench with the variable's name. */
export function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    process.stderr.write(`${name} must be a whole number from ${min} to ${max} (got ${JSON.stringify(raw)})\n`);
    process.exit(2);
  }
  return value;
}

/** Progress goes to stderr, so stdout holds only the results. */
export const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);

function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(null));
    probe.listen(port, "127.0.0.1", () => {
      const bound = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(bound));
    });
  });
}

/** `preferred` if nothing listens on it on 127.0.0.1, else a port the OS reports free. */
export async function freePort(preferred: number, avoid: readonly number[]): Promise<number> {
  if (!avoid.includes(preferred) && (await listenOnce(preferred)) !== null) return preferred;
  for (let attempt = 0; attempt < 10; attempt++) {
    const port = await listenOnce(0);
    if (port !== null && !avoid.includes(port)) return port;
  }
  throw new Error("could not find a free port on 127.0.0.1");
}

export const running = (child: ChildProcess) => child.exitCode === null && child.signalCode === null;

export const whole = (n: number) => Math.round(n).toLocaleString("en-US");
