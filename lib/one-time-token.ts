// One-time tokens for emailed links (password resets, invitations): 256 random bits, base64url. Only their
// SHA-256 is stored; the token itself exists in the link and nowhere else.
import { createHash, randomBytes } from "node:crypto";

export const oneTimeToken = (): string => randomBytes(32).toString("base64url");

/** The SHA-256 the database keeps of a one-time token (what app_private functions compare). */
export const oneTimeTokenDigest = (token: string): Buffer => createHash("sha256").update(token).digest();
