// A failure an operator can fix from its message alone: the port is taken, the database is unreachable or refuses
// the password, another Quire process owns the data directory. The entry points print it as one line on stderr and
// exit 1, without a stack (lib/process.ts prints ConfigErrors that way, and this is one: a problem with the
// environment, only not with a variable's shape, so it keeps its own wording instead of "Invalid configuration").
import { ConfigError } from "./config.ts";

export class OperatorError extends ConfigError {
  constructor(message: string, options?: { cause?: unknown }) {
    super([message]);
    this.name = "OperatorError";
    this.message = message;
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}
