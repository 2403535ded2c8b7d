// Outgoing mail. With SMTP_URL, nodemailer delivers through that server; without it nothing is sent, and outside
// production the message is logged whole (so links work in development), in production only its recipient: a
// production log line never holds a body (emails carry one-time links).
import nodemailer from "nodemailer";
import type { Config } from "./config.ts";
import type { Logger } from "./logger.ts";

export interface Email {
  readonly to: string;
  readonly subject: string;
  readonly text: string;
}

export interface Mailer {
  /** True when mail actually leaves (SMTP is configured). */
  readonly sends: boolean;
  /** APP_URL, without a trailing slash: where the links in emails point. */
  readonly appUrl: string;
  send(email: Email): Promise<void>;
}

export function createMailer(config: Pick<Config, "env" | "mail">, logger: Logger): Mailer {
  const { smtpUrl, from, appUrl } = config.mail;
  if (!smtpUrl) {
    return {
      sends: false,
      appUrl,
      async send(email) {
        if (config.env === "production") logger.warn({ to: email.to }, "SMTP_URL is not set: email not sent");
        else logger.info({ email }, "SMTP_URL is not set: email logged instead of sent");
      },
    };
  }
  const transport = nodemailer.createTransport(smtpUrl);
  return {
    sends: true,
    appUrl,
    async send(email) {
      await transport.sendMail({ from, to: email.to, subject: email.subject, text: email.text });
    },
  };
}
