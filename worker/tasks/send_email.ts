// send_email: delivers one email queued by app_private.enqueue_email. Delivery failures throw, so graphile-worker
// retries with backoff (5 attempts, set when queued); a malformed payload can never succeed and is dropped.
import type { Task } from "graphile-worker";
import type { Email, Mailer } from "../../lib/mailer.ts";

declare global {
  namespace GraphileWorker {
    interface Tasks {
      send_email: Email;
    }
  }
}

const isEmail = (payload: unknown): payload is Email => {
  const p = payload as Partial<Email> | null;
  return typeof p?.to === "string" && typeof p.subject === "string" && typeof p.text === "string";
};

export function makeSendEmail(mailer: Mailer): Task<"send_email"> {
  return async (payload, helpers) => {
    if (!isEmail(payload)) {
      helpers.logger.error("send_email: malformed payload, dropped");
      return;
    }
    await mailer.send(payload);
    helpers.logger.info(`send_email: sent to ${payload.to}`);
  };
}
