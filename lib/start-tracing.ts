// Imported first by each entry point (bin/start.ts, bin/server.ts, bin/worker.ts), for its side effect: with
// OTEL_EXPORTER_OTLP_ENDPOINT set (in the environment or .env), tracing starts here, synchronously, before the entry
// point's other modules run and before runService makes the logger (which then adds trace ids to its lines).
// Unset, nothing is loaded. A configuration that does not load starts nothing: runService reports it next.
import { routeOf } from "./http-routes.ts";
import { loadConfigFromProcess, type Config } from "./config.ts";
import { startTracing } from "./tracing.ts";

let tracing: Config["tracing"] | null = null;
try {
  tracing = loadConfigFromProcess().tracing;
} catch {
  // Reported, one line per variable, by lib/process.ts.
}
if (tracing) {
  startTracing({
    ...tracing,
    // The same route patterns as the HTTP metrics; `other` (an unknown path) names no route.
    routeOf: (path) => {
      const route = routeOf(path);
      return route === "other" ? null : route;
    },
  });
}
