// send_email: delivers one email queued by app_private.queue_mail. The job carries only the id of its
// app_private.mail_outbox row (no address, no link): each attempt makes a new one-time token, stores its digest
// through app_private.prepare_email (the previous attempt's token stops working), writes the email and sends it.
// Delivery failures throw, so graphile-worker retries with backoff (5 attempts, set when queued); a malformed
// payload, or an email with nothing left to send (account deactivated, invitation accepted or expired, address
// verified meanwhile), is dropped. Kinds: password_reset, invitation, verify_email (the link registration sends) and
// registration_attempt (someone tried to register with an address that has an account: no token, a sign-in link).
import type { Task } from "graphile-worker";
import type { Email, Mailer } from "../../lib/mailer.ts";
import { oneTimeToken, oneTimeTokenDigest } from "../../lib/one-time-token.ts";

/** The payload of a send_email job: a reference to what to send, never its content. */
export interface MailReference {
  readonly outboxId: string;
}

declare global {
  namespace GraphileWorker {
    interface Tasks {
      send_email: MailReference;
    }
  }
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const isMailReference = (payload: unknown): payload is MailReference =>
  typeof (payload as Partial<MailReference> | null)?.outboxId === "string" && uuidPattern.test((payload as MailReference).outboxId);

type MailKind = "password_reset" | "invitation" | "verify_email" | "registration_attempt" | "export_ready" | "organization_deletion";

/** The email of a kind, with its link. */
function compose(kind: MailKind, to: string, link: string, validFor: string): Email {
  if (kind === "password_reset") {
    return {
      to,
      subject: "Reset your Quire password",
      text: `Someone (hopefully you) asked to reset the password of your Quire account.\n\nChoose a new password within ${validFor}: ${link}\n\nIf this was not you, ignore this email: your password stays as it is.\n`,
    };
  }
  if (kind === "verify_email") {
    return {
      to,
      subject: "Verify your email address for Quire",
      text: `Welcome to Quire. Confirm that this is your address within ${validFor}: ${link}\n\nIf you did not sign up, ignore this email.\n`,
    };
  }
  if (kind === "registration_attempt") {
    return {
      to,
      subject: "Someone tried to register with your address",
      text: `Someone tried to create a Quire account with this address, which already has one. Nothing was changed.\n\nIf it was you, sign in instead: ${link}\nIf you forgot your password, reset it from there.\n`,
    };
  }
  if (kind === "export_ready") {
    return {
      to,
      subject: "Your Quire export is ready",
      text: `The export of your organization's data you asked for is ready. Sign in to download it within ${validFor}: ${link}\n\nThe archive holds your organization's documents, files and records; keep it safe.\n`,
    };
  }
  if (kind === "organization_deletion") {
    return {
      to,
      subject: "Your Quire organization is scheduled for deletion",
      text: `An owner scheduled the deletion of an organization you own on Quire. All its data will be erased at the time shown in its settings.\n\nIf this is a mistake, an owner can cancel it until then: ${link}\n`,
    };
  }
  return { to, subject: "You are invited to Quire", text: `You are invited to join an organization on Quire.\n\nAccept within ${validFor}: ${link}\n` };
}

/** "an hour", "7 days", "3 hours": how long a link stays valid, from seconds (rounded: 7 days less a second is 7 days). */
function validity(seconds: number): string {
  if (seconds >= 86_400 - 60 && seconds < 2 * 86_400 - 60) return "24 hours";
  if (seconds >= 2 * 86_400 - 60) return `${Math.round(seconds / 86_400)} days`;
  if (seconds >= 2 * 3_600 - 60) return `${Math.round(seconds / 3_600)} hours`;
  return "an hour";
}

const paths: Record<MailKind, string> = {
  password_reset: "reset-password",
  invitation: "accept-invitation",
  verify_email: "verify-email",
  registration_attempt: "sign-in",
  export_ready: "settings/exports",
  organization_deletion: "settings/organization",
};

/** Kinds whose link carries no token: the page asks the person to sign in. */
const tokenless: ReadonlySet<MailKind> = new Set(["registration_attempt", "export_ready", "organization_deletion"]);

export function makeSendEmail(mailer: Mailer): Task<"send_email"> {
  return async (payload, helpers) => {
    if (!isMailReference(payload)) {
      helpers.logger.error("send_email: malformed payload, dropped");
      return;
    }
    const token = oneTimeToken();
    const prepared = await helpers.withPgClient((client) =>
      client.query<{ kind: MailKind; recipient: string; valid_seconds: number }>(
        "select kind, recipient, extract(epoch from valid_for)::int as valid_seconds from app_private.prepare_email($1, $2)",
        [payload.outboxId, oneTimeTokenDigest(token)],
      ),
    );
    const mail = prepared.rows[0];
    if (!mail) {
      helpers.logger.info(`send_email: nothing left to send for outbox ${payload.outboxId}, dropped`);
      return;
    }
    // A registration notice carries no token: its link is the sign-in page.
    const link = tokenless.has(mail.kind) ? `${mailer.appUrl}/${paths[mail.kind]}` : `${mailer.appUrl}/${paths[mail.kind]}?token=${token}`;
    await mailer.send(compose(mail.kind, mail.recipient, link, validity(mail.valid_seconds)));
    await helpers.withPgClient((client) => client.query("select app_private.email_sent($1)", [payload.outboxId]));
    helpers.logger.info(`send_email: ${mail.kind} email sent (outbox ${payload.outboxId})`);
  };
}
