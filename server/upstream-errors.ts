// What a GraphQL client is told when Notion or Confluence fails a request made for it: a stable code
// (RATE_LIMITED with retryAfterSeconds, or UPSTREAM_ERROR with the provider failure as `reason`) and the
// IntegrationError's message, which is written to be safe to show (never a token, header or body).
import { SafeError } from "postgraphile/grafast";
import type { IntegrationError } from "../lib/integrations/errors.ts";

export function upstreamError(error: IntegrationError): SafeError {
  if (error.code === "RATE_LIMITED") {
    const retryAfterSeconds = Math.max(1, Math.ceil((error.retryAfterMs ?? 1000) / 1000));
    return new SafeError(error.message, { code: "RATE_LIMITED", retryAfterSeconds });
  }
  return new SafeError(error.message, { code: "UPSTREAM_ERROR", reason: error.code });
}
