// Prometheus metrics for operators: what the API, the worker, the database pools and the LLM are doing, scraped at
// GET /metrics (server/metrics-route.ts). Each entry point makes one Metrics and shares it between the server and
// the worker it runs, so a process exposes one set of series. Node's default process metrics (CPU, memory, event
// loop lag, GC) keep their standard names so stock dashboards work; Quire's own are prefixed `quire_`.
// Every label has a small, fixed set of values: route patterns, not URLs; operation names capped in number.
import { createServer } from "node:http";
import type { Job, WorkerEvents } from "graphile-worker";
import type pg from "pg";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { LlmError, type Completion, type LlmProvider } from "./llm/provider.ts";
import { listenInternal, type InternalServer } from "./internal-server.ts";
import type { Logger } from "./logger.ts";
import { timedQuery } from "./timed-query.ts";

export interface MetricsOptions {
  /** Distinct GraphQL operation names, and distinct LLM model names, kept as labels; later new names count as `other`. Default 200. */
  readonly maxOperationNames?: number;
}

/** What server/shared-reads.ts counts. */
const sharedReadKinds = ["callers", "transactions", "shared", "fallbacks"] as const;
export type SharedReadKind = (typeof sharedReadKinds)[number];

export interface Metrics {
  /** The Content-Type of {@link Metrics.render}'s text. */
  readonly contentType: string;
  /** Every series in the Prometheus text format, collecting the on-scrape gauges first. */
  render(): Promise<string>;
  /** One HTTP response: `route` is a pattern (server/metrics-route.ts), `status` the status code or `aborted`. */
  recordHttpRequest(route: string, status: string, seconds: number): void;
  /** One executed GraphQL operation; `name` null is an unnamed one. */
  recordGraphqlOperation(name: string | null, type: string, seconds: number): void;
  /** One error in a GraphQL response, by its `extensions.code`. */
  recordGraphqlError(name: string | null, type: string, code: string): void;
  /** One sign-in: `success`, `invalid_credentials`, `rate_limited`, or another error code in lower case. */
  recordSignIn(outcome: string): void;
  /** One run of the retention task (`succeeded` or `failed`), and what it removed of each kind. */
  recordRetention(outcome: "succeeded" | "failed", removed: Readonly<Record<string, number>>): void;
  /** Reports the pool's connections on each scrape, labelled `pool="<name>"` (a later pool of that name replaces it). */
  observePool(name: string, pool: pg.Pool): void;
  /** Reports `count()` as the number of open GraphQL subscriptions on each scrape. */
  observeSubscriptions(count: () => number): void;
  /**
   * Reports, on each scrape, what the subscriptions' shared re-reads did since the process started
   * (server/shared-reads.ts): callers, transactions, shared transactions and callers that fell back to their own.
   */
  observeSharedReads(counts: () => Readonly<Record<SharedReadKind, number>>): void;
  /** Counts and times every job run `events` (a graphile-worker runner's) reports. */
  observeJobs(events: WorkerEvents): void;
  /**
   * Reports, on each scrape, how long the oldest job of each task has been due (0 for `tasks` with none), read with
   * `pool` (the authenticator can read graphile_worker). A failed read is logged and leaves the gauge empty.
   */
  observeJobQueue(pool: pg.Pool, tasks: readonly string[], logger: Logger): void;
  /** `provider` with every call measured: outcome, latency and tokens, by provider and configured model. */
  measureLlm(provider: LlmProvider): LlmProvider;
}

/** Node's default metrics, registered once per process (their collectors are process-wide). */
let processRegistry: Registry | null = null;
function defaultMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

const fastBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const slowBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/**
 * The oldest due job per task. The private table rather than the graphile_worker.jobs view: its `is_available`
 * column has the partial index the worker itself polls with, so this stays an index scan however long the queue.
 */
const oldestJobsSql = `
  select t.identifier as task, extract(epoch from now() - min(j.run_at))::float8 as age
    from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
   where j.is_available and j.run_at <= now()
   group by t.identifier`;

/**
 * A label for names that come from outside: each of the first `max` distinct names is its own label; later new names,
 * and names longer than `maxLength`, are `other`.
 */
function boundedLabels(max: number, maxLength = Infinity): (name: string) => string {
  const seen = new Set<string>();
  return (name) => {
    if (seen.has(name)) return name;
    if (seen.size >= max || name.length > maxLength) return "other";
    seen.add(name);
    return name;
  };
}

export function createMetrics({ maxOperationNames = 200 }: MetricsOptions = {}): Metrics {
  // Registered now rather than on the first scrape: the CPU counters count from their registration.
  const processMetrics = defaultMetrics();
  const registry = new Registry();
  const registers = [registry];

  const httpRequests = new Counter({
    name: "quire_http_requests_total",
    help: "HTTP requests answered, by route pattern and status code.",
    labelNames: ["route", "status"] as const,
    registers,
  });
  const httpDuration = new Histogram({
    name: "quire_http_request_duration_seconds",
    help: "Time from receiving an HTTP request to finishing its response.",
    labelNames: ["route", "status"] as const,
    buckets: fastBuckets,
    registers,
  });

  const operations = new Counter({
    name: "quire_graphql_operations_total",
    help: "GraphQL operations executed (HTTP and WebSocket), by operation name and type.",
    labelNames: ["operation", "type"] as const,
    registers,
  });
  const operationDuration = new Histogram({
    name: "quire_graphql_operation_duration_seconds",
    help: "Time to execute a GraphQL query or mutation, or to start a subscription.",
    labelNames: ["operation", "type"] as const,
    buckets: fastBuckets,
    registers,
  });
  const graphqlErrors = new Counter({
    name: "quire_graphql_errors_total",
    help: "Errors in GraphQL responses, by extensions.code.",
    labelNames: ["operation", "type", "code"] as const,
    registers,
  });

  const jobs = new Counter({
    name: "quire_jobs_total",
    help: "Job runs (attempts) finished, by task and outcome.",
    labelNames: ["task", "outcome"] as const,
    registers,
  });
  const jobDuration = new Histogram({
    name: "quire_job_duration_seconds",
    help: "Time one run of a job took, by task and outcome.",
    labelNames: ["task", "outcome"] as const,
    buckets: slowBuckets,
    registers,
  });
  const jobsFailed = new Counter({
    name: "quire_jobs_failed_permanently_total",
    help: "Jobs that failed their last attempt and will not be retried.",
    labelNames: ["task"] as const,
    registers,
  });

  const llmCalls = new Counter({
    name: "quire_llm_calls_total",
    help: "Requests to the LLM (each retry counts), by provider, configured model and outcome (ok or the error code).",
    labelNames: ["provider", "model", "outcome"] as const,
    registers,
  });
  const llmDuration = new Histogram({
    name: "quire_llm_call_duration_seconds",
    help: "Time one request to the LLM took.",
    labelNames: ["provider", "model", "outcome"] as const,
    buckets: slowBuckets,
    registers,
  });
  const llmTokens = new Counter({
    name: "quire_llm_tokens_total",
    help: "Tokens of successful LLM requests, by kind (prompt or completion).",
    labelNames: ["provider", "model", "kind"] as const,
    registers,
  });

  const signIns = new Counter({
    name: "quire_sign_ins_total",
    help: "Sign-in attempts (login), by outcome.",
    labelNames: ["outcome"] as const,
    registers,
  });

  const retentionRuns = new Counter({
    name: "quire_retention_runs_total",
    help: "Runs of the retention task (apply_retention), by outcome.",
    labelNames: ["outcome"] as const,
    registers,
  });
  const retentionRemoved = new Counter({
    name: "quire_retention_removed_total",
    help: "Rows the retention task removed, by kind (jobs, usage_records, sync_runs, audit_events, sessions, …).",
    labelNames: ["kind"] as const,
    registers,
  });

  const pools = new Map<string, pg.Pool>();
  const poolGauge = (name: string, help: string, read: (pool: pg.Pool) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["pool"] as const,
      registers,
      collect() {
        for (const [label, pool] of pools) this.set({ pool: label }, read(pool));
      },
    });
  poolGauge("quire_db_pool_connections", "Connections the pool holds open (idle or checked out).", (pool) => pool.totalCount);
  poolGauge("quire_db_pool_idle_connections", "Open connections waiting to be checked out.", (pool) => pool.idleCount);
  poolGauge("quire_db_pool_waiting_clients", "Queries waiting for a connection because the pool is at its maximum.", (pool) => pool.waitingCount);
  poolGauge("quire_db_pool_max_connections", "Most connections the pool may open.", (pool) => pool.options.max);

  let subscriptions: (() => number) | null = null;
  new Gauge({
    name: "quire_live_subscriptions",
    help: "GraphQL subscriptions open on this server: live events (jobUpdated, documentChanged, integrationChanged) and jobProgress.",
    registers,
    collect() {
      if (subscriptions) this.set(subscriptions());
    },
  });

  let sharedReads: (() => Readonly<Record<SharedReadKind, number>>) | null = null;
  const sharedReported: Record<SharedReadKind, number> = { callers: 0, transactions: 0, shared: 0, fallbacks: 0 };
  new Counter({
    name: "quire_live_shared_reads_total",
    help: "Subscription re-reads by kind: callers, transactions run for them, transactions shared by several, callers that fell back to their own.",
    labelNames: ["kind"] as const,
    registers,
    collect() {
      if (!sharedReads) return;
      const now = sharedReads();
      for (const kind of sharedReadKinds) {
        this.inc({ kind }, Math.max(0, now[kind] - sharedReported[kind]));
        sharedReported[kind] = now[kind];
      }
    },
  });

  let jobQueue: { pool: pg.Pool; tasks: readonly string[]; logger: Logger } | null = null;
  new Gauge({
    name: "quire_job_queue_oldest_age_seconds",
    help: "How long the oldest job of each task has been due without a worker taking it.",
    labelNames: ["task"] as const,
    registers,
    async collect() {
      if (!jobQueue) return;
      this.reset();
      try {
        const { rows } = await jobQueue.pool.query<{ task: string; age: number }>(timedQuery(oldestJobsSql, [], 2_000));
        const ages = new Map<string, number>(jobQueue.tasks.map((task) => [task, 0]));
        for (const row of rows) ages.set(row.task, Math.max(0, row.age));
        for (const [task, age] of ages) this.set({ task }, age);
      } catch (error) {
        jobQueue.logger.warn({ err: error }, "metrics: could not read the job queue");
      }
    },
  });

  // Operation names come from clients: the first `maxOperationNames` distinct ones are kept, later ones are `other`.
  const operationName = boundedLabels(maxOperationNames, 100);
  const operationLabel = (name: string | null) => (name === null ? "anonymous" : operationName(name));

  // Model names come from organizations' settings and templates too: bounded the same way, so no organization can
  // grow the registry without bound.
  const modelLabel = boundedLabels(maxOperationNames);
  const recordLlmCall = (provider: LlmProvider, outcome: string, seconds: number, completion: Completion | null) => {
    const labels = { provider: provider.name, model: modelLabel(provider.model) };
    llmCalls.inc({ ...labels, outcome });
    llmDuration.observe({ ...labels, outcome }, seconds);
    if (completion) {
      llmTokens.inc({ ...labels, kind: "prompt" }, completion.promptTokens);
      llmTokens.inc({ ...labels, kind: "completion" }, completion.completionTokens);
    }
  };

  return {
    contentType: registry.contentType,
    async render() {
      return (await processMetrics.metrics()) + (await registry.metrics());
    },
    recordHttpRequest(route, status, seconds) {
      httpRequests.inc({ route, status });
      httpDuration.observe({ route, status }, seconds);
    },
    recordGraphqlOperation(name, type, seconds) {
      const labels = { operation: operationLabel(name), type };
      operations.inc(labels);
      operationDuration.observe(labels, seconds);
    },
    recordGraphqlError(name, type, code) {
      graphqlErrors.inc({ operation: operationLabel(name), type, code });
    },
    observeJobs(events) {
      // When each running job started, by id (a job runs on one worker at a time).
      const started = new Map<string, number>();
      const finished = (job: Job, outcome: "success" | "failure") => {
        const start = started.get(job.id);
        started.delete(job.id);
        jobs.inc({ task: job.task_identifier, outcome });
        if (start !== undefined) jobDuration.observe({ task: job.task_identifier, outcome }, (performance.now() - start) / 1000);
      };
      events.on("job:start", ({ job }) => started.set(job.id, performance.now()));
      events.on("job:success", ({ job }) => finished(job, "success"));
      events.on("job:error", ({ job }) => finished(job, "failure"));
      events.on("job:failed", ({ job }) => jobsFailed.inc({ task: job.task_identifier }));
    },
    recordSignIn(outcome) {
      signIns.inc({ outcome });
    },
    recordRetention(outcome, removed) {
      retentionRuns.inc({ outcome });
      for (const [kind, count] of Object.entries(removed)) retentionRemoved.inc({ kind }, count);
    },
    observePool(name, pool) {
      pools.set(name, pool);
    },
    observeSubscriptions(count) {
      subscriptions = count;
    },
    observeSharedReads(counts) {
      sharedReads = counts;
    },
    observeJobQueue(pool, tasks, logger) {
      jobQueue = { pool, tasks, logger };
      // Exported at 0 from the start, so the first permanent failure is an increase that alerts can see.
      for (const task of tasks) jobsFailed.inc({ task }, 0);
    },
    measureLlm(provider) {
      return {
        name: provider.name,
        model: provider.model,
        contextTokens: provider.contextTokens,
        async complete(request) {
          const started = performance.now();
          const seconds = () => (performance.now() - started) / 1000;
          try {
            const completion = await provider.complete(request);
            recordLlmCall(provider, "ok", seconds(), completion);
            return completion;
          } catch (error) {
            recordLlmCall(provider, error instanceof LlmError ? error.code : "error", seconds(), null);
            throw error;
          }
        },
      };
    },
  };
}

export type MetricsServer = InternalServer;

export interface MetricsServerOptions {
  readonly metrics: Metrics;
  readonly host: string;
  /** METRICS_PORT (0 picks a free one). */
  readonly port: number;
  readonly logger: Logger;
}

/**
 * A bare HTTP server answering GET /metrics and nothing else, without a token: its port is meant to be reachable by
 * the scraper alone (server/metrics-route.ts serves the public port's /metrics, behind METRICS_TOKEN).
 */
export async function startMetricsServer({ metrics, host, port, logger }: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("Not found: metrics are at GET /metrics.\n");
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { "content-type": metrics.contentType, "cache-control": "no-store" }).end(text),
      (error: unknown) => {
        logger.error({ err: error }, "metrics: collecting failed");
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("Metrics could not be collected.\n");
      },
    );
  });
  const listening = await listenInternal(server, host, port, "metrics", logger);
  logger.info({ metrics: `http://${listening.address.address}:${listening.address.port}/metrics` }, "metrics listening");
  return listening;
}
