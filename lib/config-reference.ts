// Every configuration variable's documentation, in one place beside the schema that validates it (config.ts):
// docs/configuration.md and .env.example are generated from it by `npm run config-docs`, and
// test/lib/config.test.ts fails when either is stale. Defaults come from the schema itself; `default` here is only
// for what the schema cannot state (computed, generated, or depending on another variable).
import { configDefault, type ConfigVariable } from "./config.ts";

/** The sections of the reference, in the order they are shown. */
const sections = [
  "Server",
  "Logs, metrics and tracing",
  "GraphQL",
  "Database",
  "Sign-in",
  "Rate limits",
  "Documents and uploads",
  "File storage",
  "Mail",
  "Worker and jobs",
  "LLM",
  "Live updates",
  "Integrations",
  "Audit checkpoints",
] as const;

export interface VariableReference {
  readonly section: (typeof sections)[number];
  /** What the variable does, in Markdown. */
  readonly meaning: string;
  /** The default in words (Markdown) when the schema has none to show, e.g. "generated outside production". */
  readonly default?: string;
  /** A value for `.env.example` when the default is not one (a URL, a key's shape). */
  readonly example?: string;
}

/** Every variable Quire reads, documented; the type makes a missing or unknown one a compile error. */
export const configReference: Readonly<Record<ConfigVariable, VariableReference>> = {
  NODE_ENV: {
    section: "Server",
    meaning:
      "`development`, `production` or `test`. Production requires `DATABASE_URL` and `JWT_SECRET`, and turns GraphiQL, introspection and pretty logs off.",
  },
  HOST: { section: "Server", meaning: "Interface the HTTP server listens on (`0.0.0.0` in the Docker image)." },
  PORT: { section: "Server", meaning: "HTTP port." },
  PUBLIC_URL: {
    section: "Server",
    default: "`http://HOST:PORT`",
    meaning: "This server's public origin; OAuth providers redirect to `PUBLIC_URL/oauth/<provider>/callback`.",
    example: "https://quire.example.com",
  },
  FRONTEND_ORIGINS: {
    section: "Server",
    default: "`APP_URL`'s origin",
    meaning:
      "Comma-separated origins of the frontends: browsers may call the API from them (CORS) and open WebSockets from them, and `returnTo` may point at them after connecting (relative paths always may). In development every loopback origin (`http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`) may too. An origin refused is logged once, as a warning naming `FRONTEND_ORIGINS`.",
    example: "https://app.example.com,https://admin.example.com",
  },
  TRUSTED_PROXIES: {
    section: "Server",
    meaning:
      "Reverse proxies whose `X-Forwarded-For` is believed for the client's address (rate limits, sign-in throttling, audit log): addresses, CIDR ranges, or `loopback`/`linklocal`/`uniquelocal`, comma-separated. Unset: the connection's peer address, and the header is ignored.",
    example: "loopback,10.0.0.0/8",
  },
  SHUTDOWN_TIMEOUT_SECONDS: {
    section: "Server",
    meaning:
      "How long SIGTERM/SIGINT waits for in-flight requests and running jobs; a job still running then is aborted and due again at once on another worker, its attempt not counted.",
  },
  LOG_LEVEL: { section: "Logs, metrics and tracing", meaning: "`fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`." },
  LOG_PRETTY: {
    section: "Logs, metrics and tracing",
    default: "`true` except in production",
    meaning: "Human-readable logs instead of pino JSON lines.",
    example: "true",
  },
  OTEL_EXPORTER_OTLP_ENDPOINT: {
    section: "Logs, metrics and tracing",
    meaning:
      "OpenTelemetry tracing: send spans as OTLP/HTTP JSON to `<endpoint>/v1/traces` (a collector, Jaeger, Tempo…), and add `traceId`/`spanId` to log lines written inside a span. Unset: tracing is off and no tracing SDK is loaded. See [Tracing](operations.md#logs-and-tracing). Spans carry no document text, prompts, SQL parameters or credentials. The exporter also honours the standard `OTEL_EXPORTER_OTLP_HEADERS` (e.g. a hosted backend's API key), read from the real environment only.",
    example: "http://localhost:4318",
  },
  OTEL_SERVICE_NAME: { section: "Logs, metrics and tracing", meaning: "The `service.name` spans are reported under." },
  METRICS_PORT: {
    section: "Logs, metrics and tracing",
    meaning:
      "Serve Prometheus metrics at `GET /metrics` on this port of their own (on `HOST`, no token); `npm run worker` serves its own there. See [Metrics](operations.md#metrics). Keep it reachable by the scraper only.",
    example: "9464",
  },
  METRICS_TOKEN: {
    section: "Logs, metrics and tracing",
    meaning:
      "Serve `GET /metrics` on the public port to `Authorization: Bearer <token>` (16+ characters; 401 otherwise). With neither this nor `METRICS_PORT`, `/metrics` is a 404.",
  },
  GRAPHIQL: { section: "GraphQL", default: "`true` except in production", meaning: "Serve GraphiQL (Ruru) at `/graphiql`.", example: "true" },
  GRAPHQL_INTROSPECTION: {
    section: "GraphQL",
    default: "`true` except in production",
    meaning: "Answer introspection (`__schema`, `__type`); off, they are refused with 400 `BAD_REQUEST` (`__typename` still works). GraphiQL needs it.",
    example: "true",
  },
  GRAPHQL_MAX_DEPTH: {
    section: "GraphQL",
    meaning: "Deepest nesting of fields in one operation; deeper answers 400 `QUERY_TOO_COMPLEX`. See [Browsers and limits](graphql.md#browsers-and-limits).",
  },
  GRAPHQL_MAX_ALIASES: { section: "GraphQL", meaning: "Most aliases in one operation (400 `QUERY_TOO_COMPLEX`)." },
  GRAPHQL_MAX_FIELDS: {
    section: "GraphQL",
    meaning: "Most field selections in one operation, a fragment counted each time it is spread (400 `QUERY_TOO_COMPLEX`).",
  },
  GRAPHQL_MAX_PAGE_SIZE: {
    section: "GraphQL",
    meaning: "Largest `first` or `last`, as a literal, a variable or a variable's default; larger answers 400 `BAD_INPUT`.",
  },
  GRAPHQL_MAX_DOCUMENT_BYTES: {
    section: "GraphQL",
    meaning:
      "Largest GraphQL document (the `query` text, UTF-8 bytes), checked before it is parsed, over HTTP and WebSockets; larger answers 413 `QUERY_TOO_LARGE`. Large values go in `variables`. See [Browsers and limits](graphql.md#browsers-and-limits).",
  },
  GRAPHQL_MAX_RESPONSE_BYTES: {
    section: "GraphQL",
    default: "the larger of 8 MiB and `DOCUMENT_MAX_BYTES` + 1 MiB",
    meaning:
      "Largest answer one operation may have: estimated before it runs (400 `RESPONSE_TOO_LARGE`), and measured before it is sent (hard cap: twice this). At least `DOCUMENT_MAX_BYTES` + 1 MiB.",
    example: "8388608",
  },
  GRAPHQL_TRUSTED_DOCUMENTS_FILE: {
    section: "GraphQL",
    meaning:
      'A JSON file of `{"<sha256 hex>": "<document>"}`: only those documents run, named by `extensions.persistedQuery.sha256Hash` or `documentId`; anything else answers 400 `UNTRUSTED_DOCUMENT`.',
    example: "/etc/quire/trusted-documents.json",
  },
  DATA_DIR: { section: "Database", meaning: "Embedded PostgreSQL data (`DATA_DIR/postgres`) and generated development secrets. Unused in production." },
  DATABASE_URL: {
    section: "Database",
    default: "unset: embedded PostgreSQL",
    meaning: "Runtime connection, as the authenticator role.",
    example: "postgres://quire_authenticator:change-me@localhost:5432/quire",
  },
  OWNER_DATABASE_URL: {
    section: "Database",
    meaning: "Owner role, which owns the schema and runs migrations. With it, `npm start` also migrates.",
    example: "postgres://quire_owner:change-me@localhost:5432/quire",
  },
  ROOT_DATABASE_URL: {
    section: "Database",
    meaning: "Superuser, used only to create the roles and the database with the passwords of the two URLs above.",
    example: "postgres://postgres:change-me@localhost:5432/postgres",
  },
  DATABASE_AUTHENTICATED_ROLE: { section: "Database", meaning: "Role for signed-in requests." },
  DATABASE_ANONYMOUS_ROLE: { section: "Database", meaning: "Role for everyone else." },
  DATABASE_POOL_MAX: { section: "Database", meaning: "Connections in the server's pool (the worker's is `WORKER_CONCURRENCY + 2`)." },
  DATABASE_POOL_WAIT_MS: {
    section: "Database",
    meaning: "Longest a request waits for a connection (pool exhausted, or PostgreSQL down) before it is answered `503 UNAVAILABLE` with `Retry-After`.",
  },
  DATABASE_STATEMENT_TIMEOUT_MS: {
    section: "Database",
    meaning: "Longest one statement of an API request may run; longer answers `TIMEOUT`. Set per transaction, so jobs and migrations are not bound by it.",
  },
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: { section: "Database", meaning: "Longest an API request's transaction may sit idle before PostgreSQL ends it." },
  EMBEDDED_POSTGRES_PORT: { section: "Database", meaning: "Port of the embedded PostgreSQL." },
  JWT_SECRET: {
    section: "Sign-in",
    default: "generated outside production",
    meaning:
      "Access-token signing key (HS256), at least 32 characters; refresh tokens are MACed with a key derived from it. Required in production; outside production a random one is generated once and kept in `DATA_DIR/secrets.json`.",
  },
  JWT_PRIVATE_KEY: {
    section: "Sign-in",
    meaning:
      "PEM private key for asymmetric access tokens: RSA ≥ 2048 bits → RS256, P-256 → ES256. Its public key is served at `/.well-known/jwks.json`. Unset: HS256. On one line, `\\n` escapes stand for newlines.",
  },
  JWT_KEY_ID: { section: "Sign-in", default: "the key's RFC 7638 thumbprint", meaning: "`kid` of the key above, in token headers and the JWKS." },
  JWT_ISSUER: { section: "Sign-in", meaning: "The `iss` claim of access tokens, checked on every request." },
  JWT_AUDIENCE: { section: "Sign-in", meaning: "The `aud` claim of access tokens, checked on every request." },
  ACCESS_TOKEN_TTL_SECONDS: { section: "Sign-in", meaning: "Access-token lifetime (15 minutes)." },
  REFRESH_TOKEN_TTL_SECONDS: {
    section: "Sign-in",
    meaning: "A session's absolute lifetime: how long a sign-in lasts at most, however it is used (7 days). Never extended by refreshing.",
  },
  SESSION_IDLE_SECONDS: {
    section: "Sign-in",
    meaning:
      "A session whose refresh token goes unused this long ends at its next refresh (3 days). Must be longer than `ACCESS_TOKEN_TTL_SECONDS`: a session is used by refreshing its access token.",
  },
  SSO_ALLOW_HTTP: {
    section: "Sign-in",
    meaning:
      "Let organizations connect identity providers at plain `http://` issuer URLs and at loopback or private addresses (a local Keycloak while trying single sign-on out). Refused in production, where issuers must be `https://` on public addresses.",
    example: "true",
  },
  REFRESH_GRACE_SECONDS: {
    section: "Sign-in",
    meaning: "How long a just-replaced refresh token still returns the same new pair (concurrent refreshes) before reuse ends the session.",
  },
  BCRYPT_COST: { section: "Sign-in", meaning: "bcrypt cost of new password hashes (10–15)." },
  PASSWORD_HASH_CONCURRENCY: {
    section: "Sign-in",
    default: "cores − 1 (at least 1)",
    meaning: "bcrypt hashes/verifications at once; the rest queue, so reads keep a core during a login storm.",
    example: "1",
  },
  PASSWORD_HASH_MAX_WAIT_MS: {
    section: "Sign-in",
    meaning:
      "A sign-in that would wait longer than this for a hashing slot (by the queue ahead and the recent time per hash) is refused at once with `RATE_LIMITED` and `retryAfterSeconds`, instead of queueing.",
  },
  PASSWORD_HASH_DUTY_PERCENT: {
    section: "Sign-in",
    meaning: "Share of the time each hashing slot works; after a hash it rests the remainder, leaving CPU to reads during a login storm. `100`: no rest.",
  },
  RATE_LIMITS: {
    section: "Rate limits",
    meaning:
      "Count API requests (in memory, synced across instances through PostgreSQL) and refuse those over the limits (`429 RATE_LIMITED`); see [Browsers and limits](graphql.md#browsers-and-limits). `false` turns them off (benchmarks).",
  },
  RATE_LIMIT_ANONYMOUS_PER_MINUTE: {
    section: "Rate limits",
    meaning: "Requests a minute one client address may send without signing in. Signed-in limits are per tier, in the database.",
  },
  RATE_LIMIT_SYNC_MS: { section: "Rate limits", meaning: "How often each instance syncs its counts: the limits hold across instances within this interval." },
  RATE_LIMIT_MAX_KEYS: { section: "Rate limits", meaning: "Addresses, users and organizations one instance tracks a minute; bounds its memory." },
  DOCUMENT_MAX_BYTES: {
    section: "Documents and uploads",
    meaning: "Largest document content (UTF-8 bytes); larger answers `TOO_LARGE`. GraphQL request bodies may be up to twice this plus 64 KiB.",
  },
  UPLOAD_MAX_BYTES: {
    section: "Documents and uploads",
    meaning:
      "Largest file `POST /api/v1/documents/upload` accepts (10 MiB); more answers 413 `TOO_LARGE` as soon as the limit is crossed. Files are held in memory, never written to disk.",
  },
  UPLOAD_MAX_PDF_PAGES: { section: "Documents and uploads", meaning: "Most pages an uploaded PDF may have (413 `TOO_LARGE`)." },
  UPLOAD_MAX_DOCX_UNCOMPRESSED_BYTES: {
    section: "Documents and uploads",
    meaning: "Largest total uncompressed size of an uploaded DOCX's ZIP entries (50 MiB), checked before anything is decompressed (zip bombs).",
  },
  UPLOAD_MAX_DOCX_ENTRIES: { section: "Documents and uploads", meaning: "Most ZIP entries an uploaded DOCX may hold." },
  UPLOAD_EXTRACT_TIMEOUT_SECONDS: {
    section: "Documents and uploads",
    meaning: "Longest the text extraction of one upload may take; it runs in a worker thread that is stopped then (413 `TOO_LARGE`).",
  },
  STORAGE_BACKEND: {
    section: "File storage",
    meaning:
      "Where uploaded originals and organization exports are kept: `local` (files under `STORAGE_DIR`, for one machine or a shared volume) or `s3` (AWS S3 or an S3-compatible server: MinIO, Cloudflare R2, Ceph). Objects live under `orgs/<organization id>/`.",
  },
  STORAGE_DIR: {
    section: "File storage",
    default: "`DATA_DIR/objects`",
    meaning: "The directory of the `local` backend. Several servers and workers must share it (a volume) to share files.",
  },
  S3_BUCKET: { section: "File storage", meaning: "The bucket of the `s3` backend (required with it).", example: "quire-files" },
  S3_REGION: { section: "File storage", meaning: "The bucket's region (any value a non-AWS server accepts, often `us-east-1`)." },
  S3_ENDPOINT: {
    section: "File storage",
    default: "AWS S3",
    meaning: "Origin of an S3-compatible server (MinIO, R2, Ceph) instead of AWS.",
    example: "https://minio.internal:9000",
  },
  S3_FORCE_PATH_STYLE: {
    section: "File storage",
    meaning: "Address the bucket in the path (`endpoint/bucket/key`) rather than the host name; MinIO and Ceph usually need it.",
  },
  S3_ACCESS_KEY_ID: {
    section: "File storage",
    default: "the AWS SDK's default credentials (environment, profile, instance role)",
    meaning: "Access key of the `s3` backend; set together with `S3_SECRET_ACCESS_KEY`.",
  },
  S3_SECRET_ACCESS_KEY: { section: "File storage", meaning: "Secret of `S3_ACCESS_KEY_ID`. Never logged." },
  FILE_URL_TTL_SECONDS: {
    section: "File storage",
    meaning:
      "How long a download URL (`fileDownloadUrl`, export links) works: an S3 presigned URL, or a signed `/api/v1/files/…` URL of the local backend, refused with 403 once expired.",
  },
  APP_URL: {
    section: "Mail",
    meaning: "The frontend's base URL; emailed links point to `APP_URL/accept-invitation?token=…` and `APP_URL/reset-password?token=…`.",
  },
  SMTP_URL: {
    section: "Mail",
    meaning:
      "`smtp://user:password@host:587` (or `smtps://`): the worker sends mail through it. Unset: nothing is sent; outside production emails are logged, and `inviteMember` returns the link to the inviting admin.",
    example: "smtp://user:password@smtp.example.com:587",
  },
  MAIL_FROM: { section: "Mail", meaning: "Sender of outgoing mail.", example: "Quire <no-reply@example.com>" },
  WORKER_CONCURRENCY: { section: "Worker and jobs", meaning: "Jobs one worker process runs at once." },
  WORKER_LOCAL_QUEUE_SIZE: {
    section: "Worker and jobs",
    meaning:
      "Jobs graphile-worker fetches (and locks) per query for this process; 0 or 1: one at a time. Larger saves round trips at high throughput but holds jobs in one process and sees a newly queued organization's job only when the batch is used up.",
  },
  WORKER_COMPLETE_BATCH_DELAY_MS: {
    section: "Worker and jobs",
    meaning: "Finished jobs completed together in one graphile-worker statement within this delay (ms); `-1`: one statement each.",
  },
  WORKER_HEARTBEAT_SECONDS: { section: "Worker and jobs", meaning: "How often a worker reports in." },
  READY_WORKER_MAX_AGE_SECONDS: {
    section: "Worker and jobs",
    meaning:
      "Oldest worker report that counts as a live worker (`/health/workers`, `workers` in `/health/ready`); a worker silent for longer is taken for dead and its jobs are released.",
  },
  WORKER_HEALTH_PORT: {
    section: "Worker and jobs",
    meaning:
      "`npm run worker` answers `GET /health` and `GET /health/ready` on this port (on `HOST`) for its container's healthcheck (compose sets 9465). Never publish it.",
    example: "9465",
  },
  JOB_MAX_ATTEMPTS: {
    section: "Worker and jobs",
    meaning:
      "Runs of a job before it fails for good: a worker that died, or an LLM still failing after its retries, uses one (graphile-worker backs off between runs).",
  },
  AUDIT_SEAL_INTERVAL_MS: {
    section: "Worker and jobs",
    meaning:
      "How often a worker chains committed audit events into their organization's hash chain (an event is unsealed, and counted as `pending` by the verifier, until then).",
  },
  LLM_PROVIDER: {
    section: "LLM",
    meaning:
      "Who writes summaries: `extractive` (offline, deterministic, no key, no network), `openai` (any OpenAI-compatible chat-completions API: OpenAI, Ollama, vLLM, llama.cpp, LM Studio) or `anthropic` (Messages API).",
  },
  LLM_BASE_URL: {
    section: "LLM",
    default: "the provider's",
    meaning:
      "API root, e.g. `http://localhost:11434/v1` for Ollama; default `https://api.openai.com/v1` or `https://api.anthropic.com`. Redirects are never followed.",
    example: "https://api.openai.com/v1",
  },
  LLM_API_KEY: {
    section: "LLM",
    meaning: "The provider's key (required for `anthropic`; local OpenAI-compatible servers need none). Never logged or shown in job errors.",
    example: "sk-...",
  },
  LLM_MODEL: { section: "LLM", default: "`gpt-4o-mini` / `claude-sonnet-4-5`", meaning: "The model to ask.", example: "gpt-4o-mini" },
  LLM_TIMEOUT_SECONDS: { section: "LLM", meaning: "Longest one LLM call may take (`LLM_TIMEOUT`)." },
  LLM_MAX_RETRIES: {
    section: "LLM",
    meaning: "Quick retries of one call within a run on timeouts, 429 (honouring a `Retry-After` up to 30 s) and 5xx, with exponential backoff and jitter.",
  },
  LLM_RETRY_WINDOW_SECONDS: {
    section: "LLM",
    meaning:
      "After those, how long from a job's first such failure it keeps being put back in the queue (its attempts untouched) before it fails with the error's code; `0`: fail at once.",
  },
  LLM_RETRY_MAX_DELAY_SECONDS: { section: "LLM", meaning: "Cap on the wait between those runs (it doubles with the time the job has been failing)." },
  LLM_RETRY_AFTER_MAX_SECONDS: {
    section: "LLM",
    meaning: "Cap on a service's `Retry-After` honoured between runs (a longer one is waited in the queue, not in a worker slot, above 30 s).",
  },
  LLM_CONTEXT_TOKENS: {
    section: "LLM",
    default: "the model's",
    meaning: "Context window; a longer document is split and summarized in stages (map, then reduce).",
    example: "128000",
  },
  LLM_MAX_OUTPUT_TOKENS: { section: "LLM", meaning: "Longest answer asked for." },
  LLM_ALLOWED_MODELS: {
    section: "LLM",
    meaning:
      "Comma-separated models an organization's settings or a template may choose on the deployment's provider and endpoint (whatever key is sent; an organization's own key for another provider may use any). Unset: any model — set it when the deployment pays.",
  },
  EMBEDDINGS_BASE_URL: {
    section: "LLM",
    meaning:
      "An OpenAI-compatible embeddings API root (OpenAI, Ollama, vLLM…), without `/embeddings`. Set: document chunks are embedded and retrieval for questions fuses full-text rank with vector similarity. Unset: full-text only.",
  },
  EMBEDDINGS_API_KEY: { section: "LLM", meaning: "Bearer key for the embeddings API, when it needs one." },
  EMBEDDINGS_MODEL: { section: "LLM", meaning: "The embedding model." },
  EMBEDDINGS_DIMENSIONS: { section: "LLM", meaning: "Dimensions asked of the model (models that can shorten their vectors); unset: the model's own." },
  EMBEDDINGS_TIMEOUT_SECONDS: { section: "LLM", meaning: "How long one embeddings request may take." },
  ANSWER_PASSAGES: { section: "LLM", meaning: "Passages retrieved and given to the model for each question (at most 50)." },
  PROGRESS_INTERVAL_MS: {
    section: "Live updates",
    meaning: "How long the worker gathers streamed LLM text before sending it to `jobProgress` subscribers in one notification.",
  },
  LIVE_EVENT_RETENTION_HOURS: { section: "Live updates", meaning: "How long live events stay replayable with `since`." },
  LIVE_RECONNECT_BASE_MS: {
    section: "Live updates",
    meaning: "First delay before the server's LISTEN connection reconnects; doubled per failed attempt, jittered, reset once it listens again.",
  },
  LIVE_RECONNECT_MAX_MS: { section: "Live updates", meaning: "The longest such delay." },
  LIVE_CONNECTION_INIT_SECONDS: {
    section: "Live updates",
    meaning: "How long a new WebSocket may take to send graphql-ws's `connection_init` before it is closed with 4408.",
  },
  LIVE_OUTAGE_GRACE_SECONDS: {
    section: "Live updates",
    meaning: "How long subscriptions wait for a lost LISTEN connection (then catch up from the outbox) before ending with `UNAVAILABLE`.",
  },
  LIVE_NUMBER_INTERVAL_MS: {
    section: "Live updates",
    meaning:
      "How often an API server numbers the live events committed since (in each organization's order) and announces them to subscribers; changes themselves take no lock for it.",
  },
  SEALING_KEYS: {
    section: "Integrations",
    default: "generated (development)",
    meaning:
      "`keyId:base64key,…` (32-byte keys): the first seals integration tokens, 2FA secrets and identity-provider client secrets, the others only open them (rotation). Required in production when an integration is configured, and for two-factor authentication and single sign-on. Make a key with `node -e \"console.log(require('crypto').randomBytes(32).toString('base64'))\"`; to rotate, put the new key first, restart, then `select app_admin.reseal_integration_secrets()`. Outside production a development key is generated into `DATA_DIR/secrets.json`.",
    example: "k2026:base64key,k2025:oldbase64key",
  },
  NOTION_CLIENT_ID: {
    section: "Integrations",
    meaning: "A Notion public integration's OAuth client id; with `NOTION_CLIENT_SECRET` unset too, Notion is not offered.",
  },
  NOTION_CLIENT_SECRET: { section: "Integrations", meaning: "That integration's OAuth client secret." },
  NOTION_API_URL: { section: "Integrations", meaning: "Notion's API root (tests point it at a local server)." },
  ATLASSIAN_CLIENT_ID: { section: "Integrations", meaning: "An Atlassian OAuth 2.0 (3LO) app's client id; unset: Confluence is not offered." },
  ATLASSIAN_CLIENT_SECRET: { section: "Integrations", meaning: "That app's client secret." },
  ATLASSIAN_AUTH_URL: { section: "Integrations", meaning: "Atlassian's authorization server." },
  ATLASSIAN_API_URL: { section: "Integrations", meaning: "Atlassian's API gateway (Confluence REST v2 under `/ex/confluence/<cloudId>`)." },
  INTEGRATION_TIMEOUT_SECONDS: { section: "Integrations", meaning: "Longest one Notion or Confluence call may take." },
  INTEGRATION_MAX_RETRIES: {
    section: "Integrations",
    meaning: "Retries of one provider call on 429 (honouring `Retry-After`), 5xx and timeouts, with backoff and jitter.",
  },
  AUDIT_CHECKPOINT_KEY: {
    section: "Audit checkpoints",
    default: "generated (development)",
    meaning:
      "Ed25519 private key seed (32 bytes, base64url) the worker signs audit checkpoints with (see [Audit log](graphql.md#audit-log)). Unset in production: no checkpoints are made, and the worker logs an error each minute. Make one with `node -e \"console.log(require('crypto').randomBytes(32).toString('base64url'))\"`; verifying needs only its public half (`npm run audit:verify -- --print-public-key`). Outside production a development key is generated into `DATA_DIR/secrets.json`.",
  },
  AUDIT_CHECKPOINT_DIR: {
    section: "Audit checkpoints",
    meaning: "Directory each organization's signed checkpoints are appended to (`<org id>.jsonl`). Use a mount the database's owner cannot write.",
    example: "/var/lib/quire/audit-checkpoints",
  },
  AUDIT_CHECKPOINT_URL: {
    section: "Audit checkpoints",
    meaning:
      "Base URL each signed checkpoint is `PUT` to, as `<org id>/<seq>-<kind>-<hash prefix>.json` (a new object each time). An object store or WORM bucket behind a proxy that accepts a bearer token; S3 request signing is not built in.",
    example: "https://checkpoints.example.com/quire",
  },
  AUDIT_CHECKPOINT_TOKEN: { section: "Audit checkpoints", meaning: "Sent as `Authorization: Bearer <token>` with those PUTs (16+ characters)." },
};

/** The schema's default as written in a `.env` file, or undefined when there is none. */
const literalDefault = (name: ConfigVariable): string | undefined => {
  const value = configDefault(name);
  return value === undefined ? undefined : String(value);
};

const defaultInWords = (name: ConfigVariable, reference: VariableReference) => {
  if (reference.default !== undefined) return reference.default;
  const value = literalDefault(name);
  return value === undefined ? "unset" : `\`${value}\``;
};

const variablesOf = (section: VariableReference["section"]) =>
  (Object.entries(configReference) as [ConfigVariable, VariableReference][]).filter(([, reference]) => reference.section === section);

/** docs/configuration.md: one table per section. */
export function configurationMarkdown(): string {
  const lines = [
    "# Configuration",
    "",
    "Every setting Quire reads from the environment. Back to the [README](../README.md).",
    "",
    "Everything is configured by environment variables, or a `.env` file in the working directory (real environment",
    "variables win). Values are validated at start-up: a bad one stops the process with one line per problem, e.g.",
    '`Invalid configuration: PORT must be a whole number from 1 to 65535 (got "http")`.',
    "",
    "This page and `.env.example` are generated from `lib/config-reference.ts` by `npm run config-docs`; edit that",
    "file, not these.",
  ];
  for (const section of sections) {
    lines.push("", `## ${section}`, "", "| Variable | Default | Meaning |", "| --- | --- | --- |");
    for (const [name, reference] of variablesOf(section)) {
      lines.push(`| \`${name}\` | ${defaultInWords(name, reference)} | ${reference.meaning.replace(/\|/g, "\\|")} |`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Markdown as plain text for a comment: links become their text, code spans lose their backticks. */
const plain = (markdown: string) => markdown.replace(/\[([^\]]*)\]\([^)]*\)/g, "$1").replace(/`([^`]*)`/g, "$1");

/** Words wrapped into `# ` comment lines of at most `width` characters. */
const comment = (text: string, width = 118) => {
  const lines: string[] = [];
  let line = "#";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line.length + 1 + word.length > width && line !== "#") {
      lines.push(line);
      line = "#";
    }
    line += ` ${word}`;
  }
  return [...lines, line];
};

/** .env.example: every variable commented out at its default (or an example), under its meaning. */
export function envExample(): string {
  const lines = [
    "# Quire configuration. Copy to .env (real environment variables win over it) and uncomment what you change.",
    "# Every value is validated at start-up; a bad one stops the process with a line naming the variable.",
    "# With nothing set, `npm start` runs in development on an embedded PostgreSQL under DATA_DIR.",
    "# Generated from lib/config-reference.ts by `npm run config-docs`; docs/configuration.md says the same as a table.",
  ];
  for (const section of sections) {
    lines.push("", `# --- ${section} ---`);
    for (const [name, reference] of variablesOf(section)) {
      const words = reference.default === undefined ? reference.meaning : `${reference.meaning} Default: ${reference.default}.`;
      lines.push("", ...comment(plain(words)), `# ${name}=${reference.example ?? literalDefault(name) ?? ""}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
