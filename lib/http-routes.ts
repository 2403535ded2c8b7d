// The routes Quire serves over HTTP, as the patterns metrics and traces name them: one table, so a request's
// `route` label (server/metrics-route.ts) and its span name (lib/start-tracing.ts) always agree. Anything else is
// `other`: an unbounded path is never a label.
const exact = new Set(["/graphql", "/graphiql", "/health", "/health/ready", "/metrics", "/.well-known/jwks.json", "/api/v1/documents/upload"]);
const oauthCallback = /^\/oauth\/[^/]+\/callback$/;

/** The route pattern of `path` (without its query string), or `other`. */
export function routeOf(path: string): string {
  if (exact.has(path)) return path;
  return oauthCallback.test(path) ? "/oauth/:provider/callback" : "other";
}
