// The monitoring files under deploy/ name metrics and labels in PromQL strings that nothing else checks: a renamed
// metric or label in lib/metrics.ts would leave an empty dashboard panel or an alert that can never fire. This test
// holds them to what createMetrics() really exposes, and the compose wiring (METRICS_PORT, mounts, scrape targets)
// to the files it points at. Docker is not available here, so the files are read, not run.
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import type { Job, WorkerEvents } from "graphile-worker";
import type pg from "pg";
import { parse } from "yaml";
import type { LlmProvider } from "../../lib/llm/provider.ts";
import { createMetrics } from "../../lib/metrics.ts";
import { silentLogger } from "../support/database.ts";

const root = new URL("../../", import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), "utf8");

interface Family {
  readonly type: string;
  readonly labels: ReadonlySet<string>;
}

/** Labels Prometheus adds to every scraped series: always usable in a query. */
const targetLabels = new Set(["job", "instance"]);

/**
 * Every metric family a Quire process exposes, with the label names its series carry. Each recording method is
 * called once first: a labelled family has no series (so shows no labels) until something is recorded in it.
 */
async function exposedFamilies(): Promise<Map<string, Family>> {
  const metrics = createMetrics();
  metrics.recordHttpRequest("/health", "200", 0.01);
  metrics.recordGraphqlOperation("Probe", "query", 0.01);
  metrics.recordGraphqlError("Probe", "query", "INTERNAL");
  metrics.recordSignIn("success");
  metrics.recordRetention("succeeded", { jobs: 1 });
  // Only what the gauges read of a pg.Pool.
  const pool = {
    totalCount: 1,
    idleCount: 1,
    waitingCount: 0,
    options: { max: 4 },
    query: async () => ({ rows: [{ task: "probe", age: 1 }] }),
  } as unknown as pg.Pool;
  metrics.observePool("server", pool);
  metrics.observeJobQueue(pool, ["probe"], silentLogger);
  metrics.observeSubscriptions(() => 0);
  metrics.observeSharedReads(() => ({ callers: 1, transactions: 1, shared: 0, fallbacks: 0 }));
  const events = new EventEmitter();
  metrics.observeJobs(events as WorkerEvents);
  // Only the fields the job listeners read.
  const job = { id: "1", task_identifier: "probe" } as Job;
  for (const event of ["job:start", "job:success", "job:failed"]) events.emit(event, { job });
  const provider: LlmProvider = {
    name: "openai",
    model: "probe-model",
    contextTokens: 1000,
    complete: async () => ({ text: "ok", promptTokens: 1, completionTokens: 1, provider: "openai", model: "probe-model", latencyMs: 1 }),
  };
  await metrics.measureLlm(provider).complete({ prompt: "p", sourceText: "s", maxOutputTokens: 10 });

  const types = new Map<string, string>();
  const labels = new Map<string, Set<string>>();
  const text = await metrics.render();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    types.set(name!, type!);
    labels.set(name!, new Set());
  }
  for (const [, sample, labelText] of text.matchAll(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/gm)) {
    const family = types.has(sample!) ? sample! : sample!.replace(/_(bucket|sum|count)$/, "");
    for (const [, label] of (labelText ?? "").matchAll(/(\w+)="/g)) labels.get(family)?.add(label!);
  }
  const families = new Map([...types].map(([name, type]) => [name, { type, labels: labels.get(name)! }]));
  // Prometheus's own series for each target.
  families.set("up", { type: "gauge", labels: new Set() });
  return families;
}

/** One PromQL expression and where it is, with the labels its legend or annotations print. */
interface Query {
  readonly where: string;
  readonly expr: string;
  readonly printed: readonly string[];
}

/**
 * What is wrong with `query` against `families`: metrics that do not exist (a histogram must be read through its
 * _bucket, _sum or _count series), labels in a selector its metric lacks, and labels grouped on (by, without, on,
 * ignoring) or printed that some metric of the expression lacks.
 */
function problemsOf(query: Query, families: ReadonlyMap<string, Family>): string[] {
  const problems: string[] = [];
  // Label values ("quire-.*", "5..") are not names.
  const expr = query.expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  const familyOf = (name: string): Family | null => {
    const direct = families.get(name);
    if (direct && direct.type !== "histogram") return direct;
    const histogram = families.get(name.replace(/_(bucket|sum|count)$/, ""));
    if (histogram?.type === "histogram" && name !== name.replace(/_(bucket|sum|count)$/, "")) return histogram;
    problems.push(`${query.where}: ${name} is not a series lib/metrics.ts exposes`);
    return null;
  };
  const used = [...expr.matchAll(/\b(?:(?:quire|process|nodejs)_\w+|up)\b/g)].map(([name]) => familyOf(name)).filter((f) => f !== null);
  const has = (family: Family, label: string) => family.labels.has(label) || targetLabels.has(label);

  for (const [, name, matchers] of expr.matchAll(/\b((?:quire|process|nodejs)_\w+|up)\s*\{([^}]*)\}/g)) {
    const family = families.get(name!) ?? families.get(name!.replace(/_(bucket|sum|count)$/, ""));
    for (const [, label] of matchers!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
      if (family && !has(family, label!)) problems.push(`${query.where}: ${name} has no label ${label}`);
    }
  }
  const grouped = [...expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap(([, list]) =>
    list!
      .split(",")
      .map((l) => l.trim())
      .filter(Boolean),
  );
  for (const label of [...grouped, ...query.printed]) {
    if (!used.every((family) => has(family, label))) problems.push(`${query.where}: not every metric in it has the label ${label}`);
  }
  if (/_bucket\b/.test(expr) && !/histogram_quantile\(/.test(expr)) problems.push(`${query.where}: a _bucket series outside histogram_quantile`);
  if (/histogram_quantile\(/.test(expr) && !grouped.includes("le")) problems.push(`${query.where}: histogram_quantile without grouping by le`);
  return problems;
}

/** The quire_ families an expression reads. */
const quireFamilies = (expr: string) => new Set([...expr.matchAll(/\bquire_\w+/g)].map(([name]) => name.replace(/_(bucket|sum|count)$/, "")));

let families: Map<string, Family>;
beforeAll(async () => {
  families = await exposedFamilies();
});

test("the family list the checks below rely on: Quire's metrics with their labels, and Node's default ones", () => {
  expect(families.get("quire_http_requests_total")).toEqual({ type: "counter", labels: new Set(["route", "status"]) });
  expect(families.get("quire_job_duration_seconds")).toEqual({ type: "histogram", labels: new Set(["task", "outcome", "le"]) });
  expect(families.get("quire_db_pool_waiting_clients")?.labels).toEqual(new Set(["pool"]));
  expect(families.get("process_cpu_seconds_total")?.type).toBe("counter");
  expect(families.get("nodejs_eventloop_lag_p99_seconds")?.type).toBe("gauge");
  // Every labelled Quire family got a series above, so its labels are known.
  const unlabelled = [...families].filter(([name, family]) => name.startsWith("quire_") && family.labels.size === 0).map(([name]) => name);
  expect(unlabelled).toEqual(["quire_live_subscriptions"]);
});

describe("the Grafana dashboard", () => {
  interface Target {
    readonly expr?: string;
    readonly legendFormat?: string;
    readonly refId?: string;
    readonly datasource?: { uid?: string };
  }
  interface Panel {
    readonly id: number;
    readonly type: string;
    readonly title: string;
    readonly datasource?: { type?: string; uid?: string };
    readonly gridPos?: { h: number; w: number; x: number; y: number };
    readonly targets?: Target[];
    readonly panels?: Panel[];
  }
  interface Variable {
    readonly name: string;
    readonly type: string;
    readonly query?: string | { query: string };
  }
  const dashboard = JSON.parse(read("deploy/grafana/quire-dashboard.json")) as {
    schemaVersion: number;
    uid: string;
    panels: Panel[];
    templating: { list: Variable[] };
  };
  const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
  const graphs = panels.filter((panel) => panel.type !== "row");
  const queries: Query[] = [
    ...graphs.flatMap((panel) =>
      (panel.targets ?? []).map((target) => ({
        where: `panel "${panel.title}" ${target.refId}`,
        expr: target.expr ?? "",
        printed: [...(target.legendFormat ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map(([, label]) => label!),
      })),
    ),
    ...dashboard.templating.list
      .filter((variable) => variable.type === "query")
      .map((variable) => ({
        where: `variable $${variable.name}`,
        expr: typeof variable.query === "string" ? variable.query : (variable.query?.query ?? ""),
        printed: [],
      })),
  ];

  test("is a current dashboard whose panels all read the Prometheus picked in its datasource variable", () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(dashboard.uid).toMatch(/^[\w-]{1,40}$/);
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: "datasource", type: "datasource", query: "prometheus" }));
    expect(new Set(panels.map((panel) => panel.id)).size).toBe(panels.length);
    for (const panel of graphs) {
      expect([panel.title, panel.datasource]).toEqual([panel.title, { type: "prometheus", uid: "${datasource}" }]);
      expect([panel.title, panel.targets?.length ?? 0]).not.toEqual([panel.title, 0]);
      for (const target of panel.targets ?? []) expect([panel.title, target.datasource?.uid]).toEqual([panel.title, "${datasource}"]);
      expect(panel.gridPos!.x + panel.gridPos!.w).toBeLessThanOrEqual(24);
    }
  });

  test("every metric and label it queries is one lib/metrics.ts exposes", () => {
    expect(queries.length).toBeGreaterThan(20);
    expect(queries.flatMap((query) => problemsOf(query, families))).toEqual([]);
  });

  test("every Quire metric has a panel", () => {
    const shown = new Set(queries.flatMap((query) => [...quireFamilies(query.expr)]));
    expect([...families.keys()].filter((name) => name.startsWith("quire_") && !shown.has(name))).toEqual([]);
  });
});

describe("the Prometheus alerts", () => {
  interface Rule {
    readonly alert?: string;
    readonly expr?: string;
    readonly for?: string;
    readonly labels?: { severity?: string };
    readonly annotations?: { summary?: string; description?: string };
  }
  const { groups } = parse(read("deploy/prometheus/alerts.yml")) as { groups: Array<{ name: string; rules: Rule[] }> };
  const rules = groups.flatMap((group) => group.rules);
  const printedIn = (text = "") => [...text.matchAll(/\$labels\.(\w+)/g)].map(([, label]) => label!);

  test("each alert has a unique name, an expression, a duration, a severity, a summary and a description", () => {
    expect(rules.length).toBeGreaterThanOrEqual(8);
    expect(new Set(rules.map((rule) => rule.alert)).size).toBe(rules.length);
    for (const rule of rules) {
      expect(rule).toEqual({
        alert: expect.stringMatching(/^Quire[A-Za-z]+$/),
        expr: expect.stringMatching(/\S/),
        for: expect.stringMatching(/^\d+[smh]$/),
        labels: { severity: expect.stringMatching(/^(critical|warning)$/) },
        annotations: { summary: expect.stringMatching(/\S/), description: expect.stringMatching(/\S/) },
      });
    }
  });

  test("every metric and label the alerts query or print is one lib/metrics.ts exposes", () => {
    const queries = rules.map((rule) => ({
      where: `alert ${rule.alert}`,
      expr: rule.expr!,
      printed: [...printedIn(rule.annotations?.summary), ...printedIn(rule.annotations?.description)],
    }));
    expect(queries.flatMap((query) => problemsOf(query, families))).toEqual([]);
  });

  test("cover instances down, 5xx, GraphQL errors, latency, the queue, failed jobs, the LLM and the pools", () => {
    const covered = new Set(rules.flatMap((rule) => [...quireFamilies(rule.expr!)]));
    for (const name of [
      "quire_http_requests_total",
      "quire_graphql_errors_total",
      "quire_http_request_duration_seconds",
      "quire_job_queue_oldest_age_seconds",
      "quire_jobs_failed_permanently_total",
      "quire_llm_calls_total",
      "quire_db_pool_waiting_clients",
    ]) {
      expect(covered).toContain(name);
    }
    expect(rules.map((rule) => rule.expr)).toContainEqual(expect.stringMatching(/^up\{[^}]*\} == 0$/));
    expect(rules.find((rule) => rule.expr!.includes("quire_graphql_errors_total"))!.expr).toMatch(/INTERNAL\|UNAVAILABLE\|TIMEOUT/);
  });

  test("deploy/README.md has a runbook entry for each", () => {
    const readme = read("deploy/README.md");
    for (const rule of rules) expect([rule.alert, readme.includes(rule.alert!)]).toEqual([rule.alert, true]);
  });
});

describe("compose and Prometheus", () => {
  interface Service {
    image?: string;
    profiles?: string[];
    environment?: Record<string, string>;
    ports?: string[];
    volumes?: string[];
  }
  const compose = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, Service> };
  const { server, worker, prometheus, grafana } = compose.services;
  const prometheusConfig = parse(read("deploy/prometheus/prometheus.yml")) as {
    rule_files: string[];
    scrape_configs: Array<{ job_name: string; dns_sd_configs?: Array<{ names: string[]; port: number }> }>;
  };
  /** Where a container path of `service` comes from in the repository, through its bind mounts. */
  const sourceOf = (service: Service, path: string) => {
    for (const volume of service.volumes ?? []) {
      const [source, target] = volume.split(":");
      if (source!.startsWith("./") && (path === target || path.startsWith(`${target}/`))) return source + path.slice(target!.length);
    }
    return null;
  };

  test("the server and the worker serve metrics on METRICS_PORT, which is not published on the host", () => {
    const port = server!.environment!.METRICS_PORT;
    expect(port).toMatch(/^\d+$/);
    expect(worker!.environment!.METRICS_PORT).toBe(port);
    expect(port).not.toBe(server!.environment!.PORT ?? "5678");
    for (const service of [server!, worker!]) for (const published of service.ports ?? []) expect(published).not.toMatch(new RegExp(`(^|:)${port}$`));
  });

  test("each has a healthcheck on its own /health/ready: the server's on PORT, the worker's on WORKER_HEALTH_PORT, unpublished", () => {
    const healthOf = (service: Service) => (service as Service & { healthcheck?: { test: string[] } }).healthcheck?.test.join(" ") ?? "";
    expect(healthOf(server!)).toContain(`http://127.0.0.1:${server!.environment!.PORT ?? "5678"}/health/ready`);
    const port = worker!.environment!.WORKER_HEALTH_PORT;
    expect(port).toMatch(/^\d+$/);
    expect(port).not.toBe(worker!.environment!.METRICS_PORT);
    expect(healthOf(worker!)).toContain(`http://127.0.0.1:${port}/health/ready`);
    for (const published of worker!.ports ?? []) expect(published).not.toMatch(new RegExp(`(^|:)${port}$`));
  });

  test("Prometheus scrapes both on that port and loads the alerts; both UIs are in the monitoring profile, on loopback", () => {
    const port = Number(server!.environment!.METRICS_PORT);
    expect(prometheusConfig.scrape_configs.map((job) => [job.job_name, job.dns_sd_configs])).toEqual([
      ["quire-server", [expect.objectContaining({ names: ["server"], port })]],
      ["quire-worker", [expect.objectContaining({ names: ["worker"], port })]],
    ]);
    expect(prometheusConfig.rule_files).toEqual(["/etc/prometheus/alerts.yml"]);
    expect(sourceOf(prometheus!, prometheusConfig.rule_files[0]!)).toBe("./deploy/prometheus/alerts.yml");
    for (const service of [prometheus!, grafana!]) {
      expect(service.profiles).toEqual(["monitoring"]);
      for (const published of service.ports ?? []) expect(published).toMatch(/^127\.0\.0\.1:/);
      for (const volume of service.volumes ?? [])
        if (volume.startsWith("./")) expect([volume, existsSync(new URL(volume.split(":")[0]!, root))]).toEqual([volume, true]);
    }
  });

  test("Grafana is provisioned with that Prometheus and the dashboard file", () => {
    const datasources = parse(read("deploy/grafana/provisioning/datasources/prometheus.yml")) as { datasources: Array<{ type: string; url: string }> };
    expect(datasources.datasources).toEqual([expect.objectContaining({ type: "prometheus", url: "http://prometheus:9090" })]);
    const providers = parse(read("deploy/grafana/provisioning/dashboards/quire.yml")) as { providers: Array<{ options: { path: string } }> };
    expect(sourceOf(grafana!, "/etc/grafana/provisioning/dashboards/quire.yml")).toBe("./deploy/grafana/provisioning/dashboards/quire.yml");
    expect(sourceOf(grafana!, `${providers.providers[0]!.options.path}/quire-dashboard.json`)).toBe("./deploy/grafana/quire-dashboard.json");
  });
});
