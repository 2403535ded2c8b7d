// Configuration: defaults, one clear line per bad variable, production's stricter rules, and its documentation
// (.env.example, docs/configuration.md) generated from lib/config-reference.ts and kept in step with what the code reads.
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configurationMarkdown, envExample } from "../../lib/config-reference.ts";
import { ConfigError, configVariables, loadConfig, loadConfigFromProcess } from "../../lib/config.ts";

const dataDir = () => mkdtempSync(join(tmpdir(), "quire-config-"));
const external = {
  DATABASE_URL: "postgres://quire_authenticator:pw@db.example:5432/quire",
  OWNER_DATABASE_URL: "postgres://quire_owner:pw@db.example:5432/quire",
};
const secret = "a-production-secret-of-at-least-32-chars";

const problemsOf = (env: NodeJS.ProcessEnv): readonly string[] => {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error("expected a ConfigError");
};

describe("loadConfig", () => {
  test("with no environment: development, embedded PostgreSQL, generated secrets kept under DATA_DIR", () => {
    const dir = dataDir();
    const config = loadConfig({ DATA_DIR: dir });
    expect(config.env).toBe("development");
    expect(config.http).toEqual({ host: "127.0.0.1", port: 5678, graphiql: true, maxRequestBytes: 10 * 1024 * 1024 + 64 * 1024, trustedProxies: [] });
    expect(config.database.embedded).toMatchObject({ dataDir: `${dir}/postgres`, port: 54320 });
    expect(config.database.url).toMatch(/^postgres:\/\/quire_authenticator:[^@]+@127\.0\.0\.1:54320\/quire$/);
    expect(config.jwt.secret.length).toBeGreaterThanOrEqual(32);
    expect(statSync(join(dir, "secrets.json")).mode & 0o777).toBe(0o600);
    // A second start reuses the same secrets, so the same database and tokens keep working.
    expect(loadConfig({ DATA_DIR: dir }).jwt.secret).toBe(config.jwt.secret);
    expect(loadConfig({ DATA_DIR: dir }).database.url).toBe(config.database.url);
  });

  test("with DATABASE_URL: the roles and database are read from the URLs", () => {
    const config = loadConfig({ ...external, JWT_SECRET: secret, ROOT_DATABASE_URL: "postgres://postgres@db.example/postgres" });
    expect(config.database).toMatchObject({
      embedded: null,
      name: "quire",
      authenticatorRole: "quire_authenticator",
      authenticatedRole: "quire_authenticated",
      anonymousRole: "quire_anonymous",
      ownerUrl: external.OWNER_DATABASE_URL,
    });
  });

  test("each bad value is named with what is wrong, and a secret's value is never echoed", () => {
    const problems = problemsOf({ ...external, PORT: "http", LOG_LEVEL: "loud", WORKER_CONCURRENCY: "0", JWT_SECRET: "short" });
    expect(problems).toEqual([
      'PORT must be a whole number from 1 to 65535 (got "http")',
      'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "loud")',
      "JWT_SECRET must be at least 32 characters",
      'WORKER_CONCURRENCY must be a whole number from 1 to 100 (got "0")',
    ]);
    expect(new ConfigError(problems).message.split("\n")).toHaveLength(4);
  });

  test("a malformed database URL is refused without printing it (it may hold a password)", () => {
    expect(problemsOf({ DATABASE_URL: "mysql://root:hunter2@db/quire" })).toEqual(["DATABASE_URL must be a postgres://user:password@host:port/database URL"]);
  });

  test("production requires DATABASE_URL and JWT_SECRET", () => {
    expect(problemsOf({ NODE_ENV: "production", DATA_DIR: dataDir() })).toEqual([
      "DATABASE_URL is required when NODE_ENV=production (the embedded PostgreSQL is for development)",
      "JWT_SECRET is required when NODE_ENV=production (at least 32 characters)",
    ]);
    const config = loadConfig({ NODE_ENV: "production", ...external, JWT_SECRET: secret });
    expect(config.http.graphiql).toBe(false);
    expect(config.log.pretty).toBe(false);
  });

  test("production never writes development secrets", () => {
    const dir = dataDir();
    loadConfig({ NODE_ENV: "production", ...external, JWT_SECRET: secret, DATA_DIR: dir });
    expect(() => statSync(join(dir, "secrets.json"))).toThrow();
  });

  test("contradictory settings are refused", () => {
    expect(problemsOf({ OWNER_DATABASE_URL: external.OWNER_DATABASE_URL, DATA_DIR: dataDir() })).toEqual([
      "OWNER_DATABASE_URL only applies with DATABASE_URL (without it Quire runs an embedded PostgreSQL)",
    ]);
    expect(problemsOf({ ...external, OWNER_DATABASE_URL: "postgres://quire_owner:pw@db.example/other", JWT_SECRET: secret })).toEqual([
      "OWNER_DATABASE_URL must name the same database as DATABASE_URL",
    ]);
    expect(problemsOf({ ...external, JWT_SECRET: secret, DATABASE_ANONYMOUS_ROLE: "quire_authenticated" })).toEqual([
      "DATABASE_ANONYMOUS_ROLE must differ from DATABASE_AUTHENTICATED_ROLE",
    ]);
    expect(problemsOf({ ...external, JWT_SECRET: secret, ACCESS_TOKEN_TTL_SECONDS: "3600", SESSION_IDLE_SECONDS: "3600" })).toEqual([
      "SESSION_IDLE_SECONDS must be longer than ACCESS_TOKEN_TTL_SECONDS (a session is used by refreshing its access token)",
    ]);
  });

  test("empty variables count as unset", () => {
    expect(loadConfig({ ...external, JWT_SECRET: secret, PORT: "" }).http.port).toBe(5678);
  });
});

describe("loadConfigFromProcess", () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of ["PORT", "LOG_LEVEL", "DATA_DIR"]) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  test("reads .env, with variables already in the environment taking precedence", () => {
    const dir = dataDir();
    const file = join(dir, ".env");
    writeFileSync(file, `PORT=6001\nLOG_LEVEL=debug\nDATA_DIR=${dir}\n`);
    delete process.env.PORT;
    process.env.LOG_LEVEL = "warn";
    const config = loadConfigFromProcess(file);
    expect(config.http.port).toBe(6001);
    expect(config.log.level).toBe("warn");
  });

  test("a missing .env is fine", () => {
    process.env.DATA_DIR = dataDir();
    expect(loadConfigFromProcess(join(dataDir(), "absent.env")).http.port).toBe(Number(process.env.PORT ?? 5678));
  });
});

describe(".env.example", () => {
  const documented = readFileSync(new URL("../../.env.example", import.meta.url), "utf8")
    .split("\n")
    .map((line) => /^#?\s*([A-Z][A-Z0-9_]*)=/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);

  test("documents every variable the code reads, and nothing else", () => {
    expect([...documented].sort()).toEqual([...configVariables].sort());
  });
});

describe("generated documentation (run `npm run config-docs` to update it)", () => {
  test(".env.example is what lib/config-reference.ts generates", () => {
    expect(readFileSync(new URL("../../.env.example", import.meta.url), "utf8")).toBe(envExample());
  });

  test("docs/configuration.md is what lib/config-reference.ts generates", () => {
    expect(readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8")).toBe(configurationMarkdown());
  });

  test("defaults come from the schema: the one the code applies is the one documented", () => {
    const rows = new Map([...configurationMarkdown().matchAll(/^\| `([A-Z0-9_]+)` \| ([^|]*) \|/gm)].map((m) => [m[1]!, m[2]!.trim()] as const));
    expect(rows.size).toBe(configVariables.length);
    const config = loadConfig({ DATA_DIR: dataDir() });
    expect(rows.get("PORT")).toBe(`\`${config.http.port}\``);
    expect(rows.get("DATABASE_POOL_MAX")).toBe(`\`${config.database.poolMax}\``);
    expect(rows.get("LLM_PROVIDER")).toBe(`\`${config.llm.provider}\``);
    expect(rows.get("SMTP_URL")).toBe("unset");
  });
});
