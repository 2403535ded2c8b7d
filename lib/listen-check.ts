// Port problems found before anything else starts: `npm start` checks PORT and METRICS_PORT before it starts the
// embedded database and migrates, so a taken port fails in a moment with one line naming the variable and the
// address, not seven seconds in with a stack (and with no database left to stop). The check binds and releases;
// whatever takes the port in between is still caught when the server really listens (listenProblem).
import { createServer } from "node:net";
import { OperatorError } from "./operator-error.ts";

/** A port Quire will listen on, with the variable that sets it. */
export interface PortUse {
  readonly variable: string;
  readonly host: string;
  readonly port: number;
}

const reasons: Readonly<Record<string, string>> = {
  EADDRINUSE: "is already in use (another Quire, or another program, listens there)",
  EACCES: "may not be bound by this user (ports below 1024 need privileges)",
  EADDRNOTAVAIL: "names an address this machine does not have (check HOST)",
};

/** The OperatorError for a failed listen on `use`, or null when `error` is not one an operator can fix. */
export function listenProblem(use: PortUse, error: unknown): OperatorError | null {
  const code = (error as { code?: unknown } | null)?.code;
  const reason = typeof code === "string" ? reasons[code] : undefined;
  if (!reason) return null;
  const where = use.host.includes(":") ? `[${use.host}]:${use.port}` : `${use.host}:${use.port}`;
  return new OperatorError(`${use.variable}=${use.port}: ${where} ${reason}; free it or set ${use.variable} to another port`, { cause: error });
}

/** Binds each port and releases it at once; the first that cannot be bound throws its OperatorError. */
export async function checkPortsFree(uses: readonly PortUse[]): Promise<void> {
  for (const use of uses) {
    await new Promise<void>((resolve, reject) => {
      const probe = createServer();
      probe.once("error", (error) => reject(listenProblem(use, error) ?? error));
      probe.listen({ port: use.port, host: use.host, exclusive: true }, () => probe.close(() => resolve()));
    });
  }
}
