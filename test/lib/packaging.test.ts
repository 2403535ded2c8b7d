// Docker is not available where the tests run, so the packaging files are checked for what can drift silently:
// the compose services run entry points that exist, pass only variables Quire reads, and give every service what
// production requires; the image copies every folder the entry points import from.
import { existsSync, readFileSync } from "node:fs";
import { parse } from "yaml";
import { configVariables } from "../../lib/config.ts";

const root = new URL("../../", import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), "utf8");

interface Service {
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  volumes?: string[];
}
const compose = parse(read("docker-compose.yml"), { merge: true }) as { services: Record<string, Service> };
const quireServices = ["migrate", "server", "worker"] as const;

test("compose runs PostgreSQL 16, a one-shot migration, the server, a worker and scheduled backups (Prometheus and Grafana under a profile)", () => {
  expect(Object.keys(compose.services).sort()).toEqual(["backup", "grafana", "migrate", "postgres", "prometheus", "server", "worker"]);
  expect(compose.services.migrate!.command).toEqual(["node", "bin/migrate.ts"]);
  expect(compose.services.server!.command).toEqual(["node", "bin/server.ts"]);
  expect(compose.services.worker!.command).toEqual(["node", "bin/worker.ts"]);
  expect(compose.services.server!.depends_on).toEqual({ migrate: { condition: "service_completed_successfully" } });
  expect(compose.services.worker!.depends_on).toEqual({ migrate: { condition: "service_completed_successfully" } });
});

test.each(quireServices)("the %s service runs an entry point that exists and passes only known variables", (name) => {
  const service = compose.services[name]!;
  expect(existsSync(new URL(service.command![1]!, root))).toBe(true);
  for (const variable of Object.keys(service.environment ?? {})) expect(configVariables).toContain(variable);
  expect(service.environment).toMatchObject({ NODE_ENV: "production" });
  expect(Object.keys(service.environment!)).toEqual(expect.arrayContaining(["DATABASE_URL", "JWT_SECRET"]));
});

test("the server and the worker share the local object store's volume, which the image makes writable for its user", () => {
  for (const name of ["server", "worker"]) {
    expect(compose.services[name]!.volumes).toEqual(["quire-objects:/var/lib/quire/objects"]);
    expect(compose.services[name]!.environment).toMatchObject({ STORAGE_DIR: "/var/lib/quire/objects" });
  }
  expect(read("Dockerfile")).toContain("chown node:node /var/lib/quire/objects");
});

test("the migration gets the owner and superuser URLs; the long-running services do not", () => {
  expect(Object.keys(compose.services.migrate!.environment!)).toEqual(expect.arrayContaining(["OWNER_DATABASE_URL", "ROOT_DATABASE_URL"]));
  for (const name of ["server", "worker"]) {
    expect(Object.keys(compose.services[name]!.environment!)).not.toContain("OWNER_DATABASE_URL");
    expect(Object.keys(compose.services[name]!.environment!)).not.toContain("ROOT_DATABASE_URL");
  }
});

test("the image copies every source folder, runs as a non-root user and installs production dependencies only", () => {
  const dockerfile = read("Dockerfile");
  for (const folder of ["bin", "lib", "db", "migrations", "server", "worker"]) expect(dockerfile).toContain(`COPY ${folder} ./${folder}`);
  expect(dockerfile).toMatch(/^FROM node:24-slim/m);
  expect(dockerfile).toContain("npm install --omit=dev");
  expect(dockerfile).toMatch(/^USER node$/m);
});
