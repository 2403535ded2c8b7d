// Quire's configuration: every setting comes from an environment variable (or `.env`), is validated once at
// start-up, and a bad value stops the process with one line per variable saying what is wrong.
// Each variable is documented in config-reference.ts, which generates docs/configuration.md and .env.example.
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { parseEnv } from "node:util";
import { z } from "zod";
import { parseCheckpointKey, type AuditCheckpointSettings } from "./audit-checkpoints.ts";
import { readDevSecrets } from "./dev-secrets.ts";
import { parseSealingKeys, type SealingKeys } from "./sealing.ts";
import { parseSigningKey, type SigningKey } from "./signing-key.ts";

/** A problem with the environment, phrased for an operator: `NAME: what is wrong`. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(problems.map((p) => `Invalid configuration: ${p}`).join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

const identifier = /^[a-z_][a-z0-9_]{0,62}$/;

const boolText = z
  .enum(["true", "false", "1", "0", "yes", "no"], { message: "must be true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");

const intText = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, { message: `must be a whole number from ${min} to ${max}` })
    .transform(Number)
    .refine((n) => n >= min && n <= max, { message: `must be a whole number from ${min} to ${max}` });

const postgresUrl = z.string().refine(
  (v) => {
    try {
      const u = new URL(v);
      return (u.protocol === "postgres:" || u.protocol === "postgresql:") && u.username !== "" && u.pathname.length > 1;
    } catch {
      return false;
    }
  },
  { message: "must be a postgres://user:password@host:port/database URL" },
);

const roleName = z.string().regex(identifier, { message: "must be a lowercase SQL identifier" });

/** The variables, their defaults and their shapes. Empty strings count as unset. */
const envSchema = z.object({
  NODE_ENV: z.enum(["development", "production", "test"], { message: "must be development, production or test" }).default("development"),
  HOST: z.string().min(1).default("127.0.0.1"),
  PORT: intText(1, 65535).default(5678),
  LOG_LEVEL: z
    .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"], {
      message: "must be one of fatal, error, warn, info, debug, trace, silent",
    })
    .default("info"),
  LOG_PRETTY: boolText.optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .optional(),
  OTEL_SERVICE_NAME: z.string().min(1).max(200).default("quire"),
  GRAPHIQL: boolText.optional(),
  GRAPHQL_INTROSPECTION: boolText.optional(),
  GRAPHQL_MAX_DEPTH: intText(1, 100).default(12),
  GRAPHQL_MAX_ALIASES: intText(0, 1000).default(30),
  GRAPHQL_MAX_FIELDS: intText(1, 100_000).default(500),
  GRAPHQL_MAX_PAGE_SIZE: intText(1, 100_000).default(100),
  GRAPHQL_TRUSTED_DOCUMENTS_FILE: z.string().min(1).optional(),
  GRAPHQL_MAX_DOCUMENT_BYTES: intText(1024, 1024 * 1024).default(64 * 1024),
  GRAPHQL_MAX_RESPONSE_BYTES: intText(1024 * 1024, 1024 * 1024 * 1024).optional(),
  DATA_DIR: z.string().min(1).default(".data"),
  DATABASE_URL: postgresUrl.optional(),
  OWNER_DATABASE_URL: postgresUrl.optional(),
  ROOT_DATABASE_URL: postgresUrl.optional(),
  DATABASE_AUTHENTICATED_ROLE: roleName.default("quire_authenticated"),
  DATABASE_ANONYMOUS_ROLE: roleName.default("quire_anonymous"),
  DATABASE_POOL_MAX: intText(2, 1000).default(10),
  DATABASE_POOL_WAIT_MS: intText(100, 600_000).default(5_000),
  DATABASE_STATEMENT_TIMEOUT_MS: intText(100, 3_600_000).default(15_000),
  DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS: intText(100, 3_600_000).default(60_000),
  EMBEDDED_POSTGRES_PORT: intText(1, 65535).default(54320),
  JWT_SECRET: z.string().min(32, { message: "must be at least 32 characters" }).optional(),
  JWT_PRIVATE_KEY: z.string().optional(),
  JWT_KEY_ID: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,128}$/, { message: "must be 1–128 characters of A-Z a-z 0-9 . _ -" })
    .optional(),
  JWT_ISSUER: z.string().min(1).max(200).default("quire"),
  JWT_AUDIENCE: z.string().min(1).max(200).default("quire"),
  ACCESS_TOKEN_TTL_SECONDS: intText(60, 86400).default(900),
  REFRESH_TOKEN_TTL_SECONDS: intText(300, 31_536_000).default(604_800),
  REFRESH_GRACE_SECONDS: intText(0, 60).default(10),
  SESSION_IDLE_SECONDS: intText(60, 31_536_000).default(259_200),
  SSO_ALLOW_HTTP: boolText.default(false),
  BCRYPT_COST: intText(10, 15).default(12),
  PASSWORD_HASH_CONCURRENCY: intText(1, 64).optional(),
  PASSWORD_HASH_MAX_WAIT_MS: intText(100, 60_000).default(5000),
  PASSWORD_HASH_DUTY_PERCENT: intText(5, 100).default(50),
  DOCUMENT_MAX_BYTES: intText(1024, 100 * 1024 * 1024).default(5 * 1024 * 1024),
  UPLOAD_MAX_BYTES: intText(1024, 100 * 1024 * 1024).default(10 * 1024 * 1024),
  UPLOAD_MAX_PDF_PAGES: intText(1, 100_000).default(500),
  UPLOAD_MAX_DOCX_UNCOMPRESSED_BYTES: intText(1024, 1024 * 1024 * 1024).default(50 * 1024 * 1024),
  UPLOAD_MAX_DOCX_ENTRIES: intText(10, 100_000).default(2000),
  UPLOAD_EXTRACT_TIMEOUT_SECONDS: intText(1, 600).default(30),
  STORAGE_BACKEND: z.enum(["local", "s3"]).default("local"),
  STORAGE_DIR: z.string().min(1).optional(),
  S3_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: "must be an S3 bucket name (3–63 lowercase letters, digits, dots, hyphens)" })
    .optional(),
  S3_REGION: z
    .string()
    .regex(/^[a-z0-9-]{1,50}$/, { message: "must be a region name such as eu-west-1" })
    .default("us-east-1"),
  S3_ENDPOINT: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+\/?$/.test(v), { message: "must be an http(s) origin such as https://s3.example.com" })
    .optional(),
  S3_FORCE_PATH_STYLE: boolText.default(false),
  S3_ACCESS_KEY_ID: z.string().min(1).max(200).optional(),
  S3_SECRET_ACCESS_KEY: z.string().min(1).max(500).optional(),
  FILE_URL_TTL_SECONDS: intText(10, 86400).default(300),
  APP_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .default("http://localhost:3000"),
  SMTP_URL: z
    .string()
    .refine((v) => /^smtps?:\/\/\S+$/.test(v), { message: "must be an smtp:// or smtps:// URL" })
    .optional(),
  MAIL_FROM: z.string().min(3).max(320).default("Quire <no-reply@localhost>"),
  WORKER_CONCURRENCY: intText(1, 100).default(4),
  WORKER_LOCAL_QUEUE_SIZE: intText(0, 1000).default(0),
  WORKER_COMPLETE_BATCH_DELAY_MS: intText(-1, 1000).default(-1),
  WORKER_HEARTBEAT_SECONDS: intText(1, 3600).default(5),
  AUDIT_SEAL_INTERVAL_MS: intText(50, 60_000).default(500),
  READY_WORKER_MAX_AGE_SECONDS: intText(2, 86400).default(30),
  WORKER_HEALTH_PORT: intText(1, 65535).optional(),
  SHUTDOWN_TIMEOUT_SECONDS: intText(1, 600).default(10),
  METRICS_PORT: intText(1, 65535).optional(),
  METRICS_TOKEN: z.string().min(16, { message: "must be at least 16 characters" }).max(500).optional(),
  TRUSTED_PROXIES: z
    .string()
    .refine((v) => v.split(",").every((p) => /^(loopback|linklocal|uniquelocal|[0-9a-fA-F.:]+(\/\d{1,3})?)$/.test(p.trim())), {
      message: "must be comma-separated addresses, CIDR ranges, or loopback/linklocal/uniquelocal",
    })
    .optional(),
  RATE_LIMITS: boolText.default(true),
  RATE_LIMIT_ANONYMOUS_PER_MINUTE: intText(1, 1_000_000).default(300),
  RATE_LIMIT_SYNC_MS: intText(10, 10_000).default(250),
  RATE_LIMIT_MAX_KEYS: intText(100, 10_000_000).default(100_000),
  LLM_PROVIDER: z.enum(["extractive", "openai", "anthropic"], { message: "must be extractive, openai or anthropic" }).default("extractive"),
  LLM_BASE_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .optional(),
  LLM_API_KEY: z.string().min(1).optional(),
  LLM_MODEL: z.string().min(1).max(200).optional(),
  LLM_TIMEOUT_SECONDS: intText(1, 3600).default(120),
  LLM_CONTEXT_TOKENS: intText(512, 10_000_000).optional(),
  LLM_MAX_OUTPUT_TOKENS: intText(16, 100_000).default(1024),
  LLM_MAX_RETRIES: intText(0, 10).default(3),
  LLM_RETRY_WINDOW_SECONDS: intText(0, 86400).default(900),
  LLM_RETRY_MAX_DELAY_SECONDS: intText(1, 3600).default(60),
  LLM_RETRY_AFTER_MAX_SECONDS: intText(1, 86400).default(600),
  LLM_ALLOWED_MODELS: z
    .string()
    .refine((v) => v.split(",").every((m) => /^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$/.test(m.trim())), {
      message: "must be a comma-separated list of model names",
    })
    .optional(),
  EMBEDDINGS_BASE_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .optional(),
  EMBEDDINGS_API_KEY: z.string().min(1).optional(),
  EMBEDDINGS_MODEL: z.string().min(1).max(200).default("text-embedding-3-small"),
  EMBEDDINGS_DIMENSIONS: intText(1, 4096).optional(),
  EMBEDDINGS_TIMEOUT_SECONDS: intText(1, 600).default(30),
  ANSWER_PASSAGES: intText(1, 50).default(8),
  PROGRESS_INTERVAL_MS: intText(10, 5000).default(75),
  JOB_MAX_ATTEMPTS: intText(1, 25).default(3),
  SEALING_KEYS: z.string().min(1).optional(),
  PUBLIC_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+\/?$/.test(v), { message: "must be an http(s) origin such as https://quire.example.com" })
    .optional(),
  FRONTEND_ORIGINS: z
    .string()
    .refine((v) => v.split(",").every((o) => /^https?:\/\/[^\s/,]+$/.test(o.trim())), {
      message: "must be comma-separated http(s) origins without paths",
    })
    .optional(),
  NOTION_CLIENT_ID: z.string().min(1).max(200).optional(),
  NOTION_CLIENT_SECRET: z.string().min(1).max(500).optional(),
  NOTION_API_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .default("https://api.notion.com"),
  ATLASSIAN_CLIENT_ID: z.string().min(1).max(200).optional(),
  ATLASSIAN_CLIENT_SECRET: z.string().min(1).max(500).optional(),
  ATLASSIAN_AUTH_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .default("https://auth.atlassian.com"),
  ATLASSIAN_API_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .default("https://api.atlassian.com"),
  INTEGRATION_TIMEOUT_SECONDS: intText(1, 600).default(30),
  INTEGRATION_MAX_RETRIES: intText(0, 10).default(4),
  LIVE_EVENT_RETENTION_HOURS: intText(1, 24 * 90).default(24),
  AUDIT_CHECKPOINT_KEY: z.string().min(1).optional(),
  AUDIT_CHECKPOINT_DIR: z.string().min(1).optional(),
  AUDIT_CHECKPOINT_URL: z
    .string()
    .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: "must be an http(s) URL" })
    .optional(),
  AUDIT_CHECKPOINT_TOKEN: z.string().min(16, { message: "must be at least 16 characters" }).max(2000).optional(),
  LIVE_RECONNECT_BASE_MS: intText(10, 60_000).default(250),
  LIVE_RECONNECT_MAX_MS: intText(10, 600_000).default(10_000),
  LIVE_OUTAGE_GRACE_SECONDS: intText(1, 3600).default(30),
  LIVE_CONNECTION_INIT_SECONDS: intText(1, 60).default(3),
  LIVE_NUMBER_INTERVAL_MS: intText(1, 60_000).default(10),
});

/** The name of a variable Quire reads. */
export type ConfigVariable = keyof typeof envSchema.shape;

/** Every variable Quire reads (`.env.example` must document each one). */
export const configVariables: readonly string[] = Object.keys(envSchema.shape);

/** A variable's default as the schema states it, or undefined when it has none (unset, or computed at start-up). */
export function configDefault(name: ConfigVariable): unknown {
  const parsed = envSchema.shape[name].safeParse(undefined);
  return parsed.success ? parsed.data : undefined;
}

export type RuntimeEnv = "development" | "production" | "test";

export interface DatabaseConfig {
  /** Set when Quire runs its own PostgreSQL (no `DATABASE_URL`): where and on which port. */
  readonly embedded: { readonly dataDir: string; readonly port: number; readonly superuserPassword: string } | null;
  /** The authenticator login the server and worker connect as. */
  readonly url: string;
  /** The owner login that runs migrations; null when only the runtime URL is known. */
  readonly ownerUrl: string | null;
  /** A superuser used only to create the roles and the database; null when they already exist. */
  readonly rootUrl: string | null;
  readonly name: string;
  readonly authenticatorRole: string;
  readonly authenticatedRole: string;
  readonly anonymousRole: string;
  readonly poolMax: number;
  /** DATABASE_POOL_WAIT_MS: longest an API request waits for a connection before it is answered 503 UNAVAILABLE. */
  readonly poolWaitMs: number;
  /** Longest one statement of an API request may run (57014, TIMEOUT). */
  readonly statementTimeoutMs: number;
  /** Longest an API request's transaction may sit idle before PostgreSQL ends its session. */
  readonly idleInTransactionTimeoutMs: number;
}

/** STORAGE_BACKEND=local (default): objects are files under `dir` (STORAGE_DIR, default `<DATA_DIR>/objects`). */
export interface LocalStorageConfig {
  readonly backend: "local";
  readonly dir: string;
  /** FILE_URL_TTL_SECONDS (default 300): how long a download URL works. */
  readonly urlTtlSeconds: number;
}

/** STORAGE_BACKEND=s3: AWS S3 or an S3-compatible server (MinIO, R2, Ceph) at S3_ENDPOINT. */
export interface S3StorageConfig {
  readonly backend: "s3";
  readonly bucket: string;
  readonly region: string;
  /** null: AWS itself. */
  readonly endpoint: string | null;
  /** S3_FORCE_PATH_STYLE (default false): `endpoint/bucket/key` URLs, which MinIO and Ceph usually need. */
  readonly forcePathStyle: boolean;
  /** null: the AWS SDK's default credential chain (environment, profile, instance role). */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | null;
  readonly urlTtlSeconds: number;
}

export type StorageConfig = LocalStorageConfig | S3StorageConfig;

export interface Config {
  readonly env: RuntimeEnv;
  readonly dataDir: string;
  readonly http: {
    readonly host: string;
    readonly port: number;
    readonly graphiql: boolean;
    /** Largest request body: room for the largest document, JSON-escaped (up to 2×), and the query. */
    readonly maxRequestBytes: number;
    /**
     * TRUSTED_PROXIES: the reverse proxies whose X-Forwarded-For is believed when deciding a client's address (for
     * rate limits and the audit log). Default: none, so the address is the connection's peer.
     */
    readonly trustedProxies: readonly string[];
  };
  readonly log: { readonly level: string; readonly pretty: boolean };
  /** OpenTelemetry tracing (lib/tracing.ts): HTTP requests, GraphQL operations, SQL, jobs and LLM calls as spans. */
  readonly tracing: {
    /** OTLP/HTTP base URL; spans are sent to `<endpoint>/v1/traces`. null: tracing is off and no SDK is loaded. */
    readonly endpoint: string | null;
    /** The `service.name` every span is reported under. */
    readonly serviceName: string;
  };
  /** What every GraphQL operation is checked against before it runs, over HTTP and WebSockets alike. */
  readonly graphql: {
    /** Whether `__schema` and `__type` may be queried (GraphiQL and code generators need them). */
    readonly introspection: boolean;
    /** Deepest nesting of fields, most aliases and most field selections in one operation (QUERY_TOO_COMPLEX). */
    readonly maxDepth: number;
    readonly maxAliases: number;
    readonly maxFields: number;
    /** Largest `first` or `last` argument; more is refused with BAD_INPUT. */
    readonly maxPageSize: number;
    /** A JSON file of sha256 hash → document; when set, only those documents run. */
    readonly trustedDocumentsFile: string | null;
    /**
     * GRAPHQL_MAX_DOCUMENT_BYTES (default 64 KiB): largest GraphQL document (the `query` text, UTF-8), checked before
     * it is parsed, over HTTP and graphql-ws; larger is refused with QUERY_TOO_LARGE. Values belong in variables.
     */
    readonly maxDocumentBytes: number;
    /**
     * GRAPHQL_MAX_RESPONSE_BYTES (default the larger of 8 MiB and DOCUMENT_MAX_BYTES + 1 MiB): largest answer an
     * operation may have, estimated before it runs from its heavy fields and page sizes, and measured (at twice
     * this) before it is serialized. Over: RESPONSE_TOO_LARGE.
     */
    readonly maxResponseBytes: number;
  };
  readonly database: DatabaseConfig;
  readonly jwt: {
    /** HS256 key (unless signingKey is set) and the root of the refresh-token MAC key. */
    readonly secret: string;
    /** When JWT_PRIVATE_KEY is set: access tokens are signed with it (RS256/ES256) and it is published as a JWK. */
    readonly signingKey: SigningKey | null;
    readonly issuer: string;
    readonly audience: string;
  };
  readonly auth: {
    readonly accessTokenTtlSeconds: number;
    readonly refreshTokenTtlSeconds: number;
    readonly refreshGraceSeconds: number;
    /** SESSION_IDLE_SECONDS (default 3 days): a session whose refresh token goes unused this long ends. */
    readonly sessionIdleSeconds: number;
    /** SSO_ALLOW_HTTP (default false; refused in production): identity providers may be reached over plain http and at private addresses (local testing). */
    readonly ssoAllowHttp: boolean;
    readonly bcryptCost: number;
    /** bcrypt hashes/verifications running at once; the rest wait, so reads keep a core. */
    readonly passwordHashConcurrency: number;
    /** PASSWORD_HASH_MAX_WAIT_MS (default 5000): a sign-in that would wait longer for a hashing slot gets RATE_LIMITED at once. */
    readonly passwordHashMaxWaitMs: number;
    /** PASSWORD_HASH_DUTY_PERCENT (default 50): the share of time a hashing slot may work; it rests the remainder. */
    readonly passwordHashDutyPercent: number;
  };
  readonly documents: {
    /** Largest document content, in bytes of UTF-8; bigger ones are refused with TOO_LARGE. */
    readonly maxBytes: number;
  };
  /** POST /api/v1/documents/upload: what an uploaded file may be, and how long extracting its text may take. */
  readonly uploads: {
    /** Largest file accepted, in bytes; more answers TOO_LARGE as soon as the limit is crossed. */
    readonly maxBytes: number;
    readonly maxPdfPages: number;
    /** Largest total uncompressed size of a DOCX's ZIP entries (zip bombs), and largest number of entries. */
    readonly maxDocxUncompressedBytes: number;
    readonly maxDocxEntries: number;
    readonly extractTimeoutMs: number;
  };
  /** Where originals and exports are stored (lib/storage/): the local filesystem or S3-compatible object storage. */
  readonly storage: StorageConfig;
  readonly mail: {
    /** The frontend's base URL, for links in emails (invitations, password resets). */
    readonly appUrl: string;
    /** SMTP server; null: emails are logged (outside production with their text) instead of sent. */
    readonly smtpUrl: string | null;
    readonly from: string;
  };
  readonly worker: {
    readonly concurrency: number;
    /**
     * WORKER_LOCAL_QUEUE_SIZE (default 0: off): jobs graphile-worker fetches and locks per query, served to the
     * process's slots without a round trip each. Off by default: locked jobs wait in one process while another may be
     * idle, and a newly queued job of a waiting organization is seen only when the batch is used up.
     */
    readonly localQueueSize: number;
    /** WORKER_COMPLETE_BATCH_DELAY_MS (default -1: one statement per completion): completions within this delay batched into one. */
    readonly completeBatchDelayMs: number;
    readonly heartbeatSeconds: number;
    /** AUDIT_SEAL_INTERVAL_MS (default 500): how often the worker chains committed audit events (worker/audit-sealer.ts). */
    readonly auditSealIntervalMs: number;
    readonly readyMaxAgeSeconds: number;
    /** WORKER_HEALTH_PORT: where `npm run worker` answers /health and /health/ready (on HOST); null: nowhere. */
    readonly healthPort: number | null;
  };
  readonly llm: {
    readonly provider: "extractive" | "openai" | "anthropic";
    /** The provider's API base URL; null: the provider's public endpoint. */
    readonly baseUrl: string | null;
    readonly apiKey: string | null;
    /** null: the provider's default model. */
    readonly model: string | null;
    readonly timeoutMs: number;
    /** The model's context window in tokens; null: the provider's default. Longer documents are summarized in stages. */
    readonly contextTokens: number | null;
    readonly maxOutputTokens: number;
    /**
     * LLM_ALLOWED_MODELS: the models organizations and templates may choose on the deployment's provider and endpoint,
     * whatever key is sent (their own key for another provider may use any); null: any.
     */
    readonly allowedModels: readonly string[] | null;
    /** Retries of one LLM call on timeouts, 429 and 5xx, with backoff (Retry-After honoured up to 30 s). */
    readonly maxRetries: number;
    /**
     * When those run out (or a Retry-After is longer), the job is put back in the queue due later, without using up
     * an attempt, until `windowMs` after its first transient failure (lib/llm/retry.ts).
     */
    readonly retry: {
      /** LLM_RETRY_WINDOW_SECONDS (default 900). */
      readonly windowMs: number;
      /** LLM_RETRY_MAX_DELAY_SECONDS (default 60): cap on the backoff between runs. */
      readonly maxDelayMs: number;
      /** LLM_RETRY_AFTER_MAX_SECONDS (default 600): cap on a Retry-After honoured. */
      readonly retryAfterMaxMs: number;
    };
  };
  /** EMBEDDINGS_*: an OpenAI-compatible /embeddings endpoint for hybrid retrieval; null (no EMBEDDINGS_BASE_URL): full-text only. */
  readonly embeddings: {
    readonly baseUrl: string;
    readonly apiKey: string | null;
    /** EMBEDDINGS_MODEL (default text-embedding-3-small). */
    readonly model: string;
    /** EMBEDDINGS_DIMENSIONS; null: the model's own. */
    readonly dimensions: number | null;
    readonly timeoutMs: number;
  } | null;
  readonly answers: {
    /** ANSWER_PASSAGES (default 8): passages retrieved and given to the model per question. */
    readonly passages: number;
    /** PROGRESS_INTERVAL_MS (default 75): how long streamed text is gathered before it is sent to subscribers. */
    readonly progressIntervalMs: number;
  };
  readonly jobs: {
    /** Runs of a job before it fails for good (a worker crash or an exhausted LLM retry each use one). */
    readonly maxAttempts: number;
    /** How long live events are kept for clients to replay with `since`. */
    readonly liveEventRetentionHours: number;
  };
  readonly integrations: {
    /** SEALING_KEYS (first seals, all open); null: integrations cannot be connected (no key to seal tokens with). */
    readonly sealingKeys: SealingKeys | null;
    /** This server's public origin: OAuth providers redirect the browser to `<publicUrl>/oauth/<provider>/callback`. */
    readonly publicUrl: string;
    /** Origins browsers may call the API from (CORS, WebSocket Origin) and `returnTo` may point at; default APP_URL's. */
    readonly frontendOrigins: readonly string[];
    /** null: not configured (startIntegration answers BAD_INPUT). */
    readonly notion: { readonly clientId: string; readonly clientSecret: string; readonly apiUrl: string } | null;
    readonly atlassian: { readonly clientId: string; readonly clientSecret: string; readonly authUrl: string; readonly apiUrl: string } | null;
    readonly timeoutMs: number;
    /** Retries of one provider call on 429 (Retry-After honoured), 5xx and timeouts, with backoff and jitter. */
    readonly maxRetries: number;
  };
  /**
   * Requests a minute, counted in each instance's memory and synced across instances through PostgreSQL: per address
   * for anonymous requests, per user and per organization (limits by tier, app_admin.set_tier_rate_limit) for
   * signed-in ones. Over: 429 RATE_LIMITED.
   */
  readonly rateLimits: {
    /** RATE_LIMITS (default true). */
    readonly enabled: boolean;
    /** RATE_LIMIT_ANONYMOUS_PER_MINUTE (default 300): per client address. */
    readonly anonymousPerMinute: number;
    /** RATE_LIMIT_SYNC_MS (default 250): how often counts are synced; the limits hold across instances within it. */
    readonly syncMs: number;
    /** RATE_LIMIT_MAX_KEYS (default 100000): keys tracked a minute per instance; further keys go unlimited that minute. */
    readonly maxKeys: number;
  };
  /** GET /metrics (Prometheus): off the public port unless a token is set; neither set: not served. */
  readonly metrics: {
    /** A port of its own (on HOST) serving /metrics without a token; null: none. */
    readonly port: number | null;
    /** With it, /metrics on the public port answers callers sending `Authorization: Bearer <token>`; null: 404 there. */
    readonly token: string | null;
  };
  /**
   * Signed checkpoints of the audit chains (lib/audit-checkpoints.ts), made every minute by the worker and written to
   * the log and these sinks. key: AUDIT_CHECKPOINT_KEY, generated in development; null (production without it): none.
   */
  readonly auditCheckpoints: AuditCheckpointSettings;
  readonly shutdownTimeoutMs: number;
  /** The server's LISTEN connection, which carries live events and session ends. */
  readonly live: {
    /** LIVE_RECONNECT_BASE_MS (default 250): the first reconnection delay, doubled per failed attempt. */
    readonly reconnectBaseMs: number;
    /** LIVE_RECONNECT_MAX_MS (default 10000): the longest reconnection delay (delays are jittered down to half). */
    readonly reconnectMaxMs: number;
    /** LIVE_OUTAGE_GRACE_SECONDS (default 30): how long subscriptions wait for it before ending with UNAVAILABLE. */
    readonly outageGraceMs: number;
    /** LIVE_CONNECTION_INIT_SECONDS (default 3): how long a new WebSocket may take to send connection_init (4408 after). */
    readonly connectionInitMs: number;
    /**
     * LIVE_NUMBER_INTERVAL_MS (default 10): how often the server numbers and announces committed live events
     * (server/live-numberer.ts); an event reaches subscribers about half of it after its change commits.
     */
    readonly numberIntervalMs: number;
  };
}

const urlParts = (url: string) => {
  const u = new URL(url);
  return { user: decodeURIComponent(u.username), database: decodeURIComponent(u.pathname.slice(1)) };
};

/** URL for `user` on the embedded server. */
const embeddedUrl = (port: number, user: string, password: string, database: string) =>
  `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;

/**
 * Validates `env` and derives the configuration. Outside production, missing secrets are generated once and kept
 * in `<DATA_DIR>/secrets.json`; in production they must be given. Throws {@link ConfigError}.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = envSchema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const name = String(issue.path[0]);
        const got = present[name];
        const shown = /_(SECRET|URL|KEY|TOKEN)$/.test(name) ? "" : ` (got ${JSON.stringify(got)})`;
        return `${name} ${issue.message}${got === undefined ? "" : shown}`;
      }),
    );
  }
  const e = parsed.data;
  const production = e.NODE_ENV === "production";
  const problems: string[] = [];
  if (production && !e.DATABASE_URL) {
    problems.push("DATABASE_URL is required when NODE_ENV=production (the embedded PostgreSQL is for development)");
  }
  if (production && !e.JWT_SECRET) problems.push("JWT_SECRET is required when NODE_ENV=production (at least 32 characters)");
  if (e.STORAGE_BACKEND === "s3" && !e.S3_BUCKET) problems.push("S3_BUCKET is required when STORAGE_BACKEND=s3");
  if (!e.S3_ACCESS_KEY_ID !== !e.S3_SECRET_ACCESS_KEY) problems.push("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY go together: set both or neither");
  if (e.STORAGE_BACKEND === "local" && e.S3_BUCKET) problems.push("S3_BUCKET only applies with STORAGE_BACKEND=s3");
  if (!e.DATABASE_URL) {
    for (const name of ["OWNER_DATABASE_URL", "ROOT_DATABASE_URL"] as const) {
      if (e[name]) problems.push(`${name} only applies with DATABASE_URL (without it Quire runs an embedded PostgreSQL)`);
    }
  } else if (e.OWNER_DATABASE_URL && urlParts(e.OWNER_DATABASE_URL).database !== urlParts(e.DATABASE_URL).database) {
    problems.push("OWNER_DATABASE_URL must name the same database as DATABASE_URL");
  }
  if (e.LLM_PROVIDER === "anthropic" && !e.LLM_API_KEY) problems.push("LLM_API_KEY is required when LLM_PROVIDER=anthropic");
  if (e.METRICS_PORT === e.PORT) problems.push("METRICS_PORT must differ from PORT");
  if (production && e.SSO_ALLOW_HTTP) problems.push("SSO_ALLOW_HTTP must not be set in production: identity providers are reached over https");
  if (e.SESSION_IDLE_SECONDS <= e.ACCESS_TOKEN_TTL_SECONDS) {
    problems.push("SESSION_IDLE_SECONDS must be longer than ACCESS_TOKEN_TTL_SECONDS (a session is used by refreshing its access token)");
  }
  if (e.WORKER_HEALTH_PORT !== undefined && e.WORKER_HEALTH_PORT === e.METRICS_PORT) problems.push("WORKER_HEALTH_PORT must differ from METRICS_PORT");
  if (e.GRAPHQL_MAX_RESPONSE_BYTES !== undefined && e.GRAPHQL_MAX_RESPONSE_BYTES < e.DOCUMENT_MAX_BYTES + 1024 * 1024) {
    problems.push("GRAPHQL_MAX_RESPONSE_BYTES must be at least DOCUMENT_MAX_BYTES + 1 MiB, so that one document's content can be read");
  }
  for (const [id, secret, name] of [
    [e.NOTION_CLIENT_ID, e.NOTION_CLIENT_SECRET, "NOTION"],
    [e.ATLASSIAN_CLIENT_ID, e.ATLASSIAN_CLIENT_SECRET, "ATLASSIAN"],
  ] as const) {
    if (Boolean(id) !== Boolean(secret)) problems.push(`${name}_CLIENT_ID and ${name}_CLIENT_SECRET go together`);
  }
  if (production && (e.NOTION_CLIENT_ID || e.ATLASSIAN_CLIENT_ID) && !e.SEALING_KEYS) {
    problems.push("SEALING_KEYS is required when NOTION_CLIENT_ID or ATLASSIAN_CLIENT_ID is set in production");
  }
  let sealingKeys: SealingKeys | null = null;
  if (e.SEALING_KEYS) {
    try {
      sealingKeys = parseSealingKeys(e.SEALING_KEYS);
    } catch (error) {
      problems.push(`SEALING_KEYS ${(error as Error).message}`);
    }
  }
  if (e.DATABASE_AUTHENTICATED_ROLE === e.DATABASE_ANONYMOUS_ROLE) {
    problems.push("DATABASE_ANONYMOUS_ROLE must differ from DATABASE_AUTHENTICATED_ROLE");
  }
  let checkpointKey: AuditCheckpointSettings["key"] = null;
  if (e.AUDIT_CHECKPOINT_KEY) {
    try {
      checkpointKey = parseCheckpointKey(e.AUDIT_CHECKPOINT_KEY);
    } catch (error) {
      problems.push(`AUDIT_CHECKPOINT_KEY ${(error as Error).message}`);
    }
  }
  if (e.AUDIT_CHECKPOINT_TOKEN && !e.AUDIT_CHECKPOINT_URL) problems.push("AUDIT_CHECKPOINT_TOKEN only applies with AUDIT_CHECKPOINT_URL");
  let signingKey: SigningKey | null = null;
  if (e.JWT_PRIVATE_KEY) {
    try {
      signingKey = parseSigningKey(e.JWT_PRIVATE_KEY, e.JWT_KEY_ID);
    } catch (error) {
      problems.push(`JWT_PRIVATE_KEY ${(error as Error).message}`);
    }
  } else if (e.JWT_KEY_ID) {
    problems.push("JWT_KEY_ID only applies with JWT_PRIVATE_KEY");
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const devSecrets = production || (e.DATABASE_URL && e.JWT_SECRET) ? null : readDevSecrets(e.DATA_DIR);
  const jwtSecret = e.JWT_SECRET ?? devSecrets?.jwtSecret;
  if (!jwtSecret) throw new ConfigError(["JWT_SECRET is missing"]);

  let database: DatabaseConfig;
  const roles = {
    authenticatedRole: e.DATABASE_AUTHENTICATED_ROLE,
    anonymousRole: e.DATABASE_ANONYMOUS_ROLE,
    poolMax: e.DATABASE_POOL_MAX,
    poolWaitMs: e.DATABASE_POOL_WAIT_MS,
    statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS,
    idleInTransactionTimeoutMs: e.DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  };
  if (e.DATABASE_URL) {
    const runtime = urlParts(e.DATABASE_URL);
    database = {
      embedded: null,
      url: e.DATABASE_URL,
      ownerUrl: e.OWNER_DATABASE_URL ?? null,
      rootUrl: e.ROOT_DATABASE_URL ?? null,
      name: runtime.database,
      authenticatorRole: runtime.user,
      ...roles,
    };
  } else {
    // devSecrets is non-null here: production without DATABASE_URL was refused above.
    const s = devSecrets!;
    const port = e.EMBEDDED_POSTGRES_PORT;
    database = {
      embedded: { dataDir: `${e.DATA_DIR}/postgres`, port, superuserPassword: s.postgresPassword },
      url: embeddedUrl(port, "quire_authenticator", s.authenticatorPassword, "quire"),
      ownerUrl: embeddedUrl(port, "quire_owner", s.ownerPassword, "quire"),
      rootUrl: embeddedUrl(port, "postgres", s.postgresPassword, "postgres"),
      name: "quire",
      authenticatorRole: "quire_authenticator",
      ...roles,
    };
  }
  if (!identifier.test(database.authenticatorRole)) {
    throw new ConfigError(["DATABASE_URL must name a user that is a lowercase SQL identifier"]);
  }

  return {
    env: e.NODE_ENV,
    dataDir: e.DATA_DIR,
    http: {
      host: e.HOST,
      port: e.PORT,
      graphiql: e.GRAPHIQL ?? !production,
      maxRequestBytes: e.DOCUMENT_MAX_BYTES * 2 + 64 * 1024,
      trustedProxies: e.TRUSTED_PROXIES ? e.TRUSTED_PROXIES.split(",").map((p) => p.trim()) : [],
    },
    log: { level: e.LOG_LEVEL, pretty: e.LOG_PRETTY ?? !production },
    tracing: { endpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT?.replace(/\/+$/, "") ?? null, serviceName: e.OTEL_SERVICE_NAME },
    graphql: {
      introspection: e.GRAPHQL_INTROSPECTION ?? !production,
      maxDepth: e.GRAPHQL_MAX_DEPTH,
      maxAliases: e.GRAPHQL_MAX_ALIASES,
      maxFields: e.GRAPHQL_MAX_FIELDS,
      maxPageSize: e.GRAPHQL_MAX_PAGE_SIZE,
      trustedDocumentsFile: e.GRAPHQL_TRUSTED_DOCUMENTS_FILE ?? null,
      maxDocumentBytes: e.GRAPHQL_MAX_DOCUMENT_BYTES,
      maxResponseBytes: e.GRAPHQL_MAX_RESPONSE_BYTES ?? Math.max(8 * 1024 * 1024, e.DOCUMENT_MAX_BYTES + 1024 * 1024),
    },
    database,
    jwt: { secret: jwtSecret, signingKey, issuer: e.JWT_ISSUER, audience: e.JWT_AUDIENCE },
    auth: {
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTokenTtlSeconds: e.REFRESH_TOKEN_TTL_SECONDS,
      refreshGraceSeconds: e.REFRESH_GRACE_SECONDS,
      sessionIdleSeconds: e.SESSION_IDLE_SECONDS,
      ssoAllowHttp: e.SSO_ALLOW_HTTP,
      bcryptCost: e.BCRYPT_COST,
      passwordHashConcurrency: e.PASSWORD_HASH_CONCURRENCY ?? Math.max(1, availableParallelism() - 1),
      passwordHashMaxWaitMs: e.PASSWORD_HASH_MAX_WAIT_MS,
      passwordHashDutyPercent: e.PASSWORD_HASH_DUTY_PERCENT,
    },
    documents: { maxBytes: e.DOCUMENT_MAX_BYTES },
    uploads: {
      maxBytes: e.UPLOAD_MAX_BYTES,
      maxPdfPages: e.UPLOAD_MAX_PDF_PAGES,
      maxDocxUncompressedBytes: e.UPLOAD_MAX_DOCX_UNCOMPRESSED_BYTES,
      maxDocxEntries: e.UPLOAD_MAX_DOCX_ENTRIES,
      extractTimeoutMs: e.UPLOAD_EXTRACT_TIMEOUT_SECONDS * 1000,
    },
    storage:
      e.STORAGE_BACKEND === "s3"
        ? {
            backend: "s3",
            bucket: e.S3_BUCKET ?? "",
            region: e.S3_REGION,
            endpoint: e.S3_ENDPOINT?.replace(/\/+$/, "") ?? null,
            forcePathStyle: e.S3_FORCE_PATH_STYLE,
            credentials: e.S3_ACCESS_KEY_ID && e.S3_SECRET_ACCESS_KEY ? { accessKeyId: e.S3_ACCESS_KEY_ID, secretAccessKey: e.S3_SECRET_ACCESS_KEY } : null,
            urlTtlSeconds: e.FILE_URL_TTL_SECONDS,
          }
        : { backend: "local", dir: e.STORAGE_DIR ?? `${e.DATA_DIR}/objects`, urlTtlSeconds: e.FILE_URL_TTL_SECONDS },
    mail: { appUrl: e.APP_URL.replace(/\/+$/, ""), smtpUrl: e.SMTP_URL ?? null, from: e.MAIL_FROM },
    worker: {
      concurrency: e.WORKER_CONCURRENCY,
      localQueueSize: e.WORKER_LOCAL_QUEUE_SIZE,
      completeBatchDelayMs: e.WORKER_COMPLETE_BATCH_DELAY_MS,
      heartbeatSeconds: e.WORKER_HEARTBEAT_SECONDS,
      auditSealIntervalMs: e.AUDIT_SEAL_INTERVAL_MS,
      readyMaxAgeSeconds: e.READY_WORKER_MAX_AGE_SECONDS,
      healthPort: e.WORKER_HEALTH_PORT ?? null,
    },
    llm: {
      provider: e.LLM_PROVIDER,
      baseUrl: e.LLM_BASE_URL?.replace(/\/+$/, "") ?? null,
      apiKey: e.LLM_API_KEY ?? null,
      model: e.LLM_MODEL ?? null,
      timeoutMs: e.LLM_TIMEOUT_SECONDS * 1000,
      contextTokens: e.LLM_CONTEXT_TOKENS ?? null,
      maxOutputTokens: e.LLM_MAX_OUTPUT_TOKENS,
      allowedModels: e.LLM_ALLOWED_MODELS ? e.LLM_ALLOWED_MODELS.split(",").map((m) => m.trim()) : null,
      maxRetries: e.LLM_MAX_RETRIES,
      retry: {
        windowMs: e.LLM_RETRY_WINDOW_SECONDS * 1000,
        maxDelayMs: e.LLM_RETRY_MAX_DELAY_SECONDS * 1000,
        retryAfterMaxMs: e.LLM_RETRY_AFTER_MAX_SECONDS * 1000,
      },
    },
    embeddings: e.EMBEDDINGS_BASE_URL
      ? {
          baseUrl: e.EMBEDDINGS_BASE_URL.replace(/\/+$/, ""),
          apiKey: e.EMBEDDINGS_API_KEY ?? null,
          model: e.EMBEDDINGS_MODEL,
          dimensions: e.EMBEDDINGS_DIMENSIONS ?? null,
          timeoutMs: e.EMBEDDINGS_TIMEOUT_SECONDS * 1000,
        }
      : null,
    answers: { passages: e.ANSWER_PASSAGES, progressIntervalMs: e.PROGRESS_INTERVAL_MS },
    jobs: { maxAttempts: e.JOB_MAX_ATTEMPTS, liveEventRetentionHours: e.LIVE_EVENT_RETENTION_HOURS },
    integrations: {
      sealingKeys: sealingKeys ?? (devSecrets ? parseSealingKeys(`dev:${devSecrets.sealingKey}`) : null),
      publicUrl: (e.PUBLIC_URL ?? `http://${e.HOST === "0.0.0.0" ? "localhost" : e.HOST}:${e.PORT}`).replace(/\/+$/, ""),
      frontendOrigins: e.FRONTEND_ORIGINS ? e.FRONTEND_ORIGINS.split(",").map((o) => o.trim()) : [new URL(e.APP_URL).origin],
      notion:
        e.NOTION_CLIENT_ID && e.NOTION_CLIENT_SECRET
          ? { clientId: e.NOTION_CLIENT_ID, clientSecret: e.NOTION_CLIENT_SECRET, apiUrl: e.NOTION_API_URL.replace(/\/+$/, "") }
          : null,
      atlassian:
        e.ATLASSIAN_CLIENT_ID && e.ATLASSIAN_CLIENT_SECRET
          ? {
              clientId: e.ATLASSIAN_CLIENT_ID,
              clientSecret: e.ATLASSIAN_CLIENT_SECRET,
              authUrl: e.ATLASSIAN_AUTH_URL.replace(/\/+$/, ""),
              apiUrl: e.ATLASSIAN_API_URL.replace(/\/+$/, ""),
            }
          : null,
      timeoutMs: e.INTEGRATION_TIMEOUT_SECONDS * 1000,
      maxRetries: e.INTEGRATION_MAX_RETRIES,
    },
    metrics: { port: e.METRICS_PORT ?? null, token: e.METRICS_TOKEN ?? null },
    rateLimits: {
      enabled: e.RATE_LIMITS,
      anonymousPerMinute: e.RATE_LIMIT_ANONYMOUS_PER_MINUTE,
      syncMs: e.RATE_LIMIT_SYNC_MS,
      maxKeys: e.RATE_LIMIT_MAX_KEYS,
    },
    auditCheckpoints: {
      key: checkpointKey ?? (devSecrets ? parseCheckpointKey(devSecrets.auditCheckpointKey) : null),
      dir: e.AUDIT_CHECKPOINT_DIR ?? null,
      url: e.AUDIT_CHECKPOINT_URL?.replace(/\/+$/, "") ?? null,
      token: e.AUDIT_CHECKPOINT_TOKEN ?? null,
    },
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_SECONDS * 1000,
    live: {
      reconnectBaseMs: e.LIVE_RECONNECT_BASE_MS,
      reconnectMaxMs: Math.max(e.LIVE_RECONNECT_MAX_MS, e.LIVE_RECONNECT_BASE_MS),
      outageGraceMs: e.LIVE_OUTAGE_GRACE_SECONDS * 1000,
      connectionInitMs: e.LIVE_CONNECTION_INIT_SECONDS * 1000,
      numberIntervalMs: e.LIVE_NUMBER_INTERVAL_MS,
    },
  };
}

/** Loads {@link loadConfig} from the process environment over `envFile`, when present (variables already set win). */
export function loadConfigFromProcess(envFile = ".env"): Config {
  let fromFile: NodeJS.ProcessEnv = {};
  try {
    fromFile = parseEnv(readFileSync(envFile, "utf8"));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  return loadConfig({ ...fromFile, ...process.env });
}
