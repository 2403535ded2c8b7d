// The documented error table (README.md or docs/*.md, wherever it lives) is the client's documentation of lib/errors.ts: it must list exactly the same codes.
// The jobs' list must hold every code that can land in app_public.jobs.error_code, the database's own included.
import { readdirSync, readFileSync } from "node:fs";
import { customSqlStates, jobErrorCodes, standardSqlStates } from "../../lib/errors.ts";
import { integrationErrorCodes } from "../../lib/integrations/errors.ts";
import { llmErrorCodes } from "../../lib/llm/provider.ts";

const root = new URL("../../", import.meta.url);
const pages = ["README.md", ...readdirSync(new URL("docs/", root)).map((f) => `docs/${f}`)].map((f) => readFileSync(new URL(f, root), "utf8"));
const withTable = pages.filter((text) => text.includes("| SQLSTATE |"));
const table = withTable[0]!.slice(withTable[0]!.indexOf("| SQLSTATE |"));
const rows = table
  .split("\n")
  .slice(2)
  .filter((line) => line.startsWith("| `"))
  .map((line) => {
    const [states, code] = line.split("|").slice(1, 3);
    return { states: [...states!.matchAll(/`([0-9A-Z]{5})`/g)].map((m) => m[1]!), code: /`([A-Z_]+)`/.exec(code!)![1]! };
  });

test("exactly one page holds the errors table", () => {
  expect(withTable).toHaveLength(1);
});

test("the errors table lists every SQLSTATE lib/errors.ts passes to clients, with the same code", () => {
  const documented = Object.fromEntries(rows.flatMap(({ states, code }) => states.map((s) => [s, code])));
  const expected = {
    ...customSqlStates,
    ...Object.fromEntries(Object.entries(standardSqlStates).map(([state, { code }]) => [state, code])),
  };
  expect(documented).toEqual(expected);
});

test("the jobs' error codes include every code the migrations write into app_public.jobs.error_code", () => {
  const folder = new URL("../../migrations/committed/", import.meta.url);
  const written = new Set<string>();
  for (const file of readdirSync(folder)) {
    for (const match of readFileSync(new URL(file, folder), "utf8").matchAll(/\berror_code = '([A-Z_]+)'/g)) written.add(match[1]!);
  }
  expect(written).toContain("WORKER_LOST"); // the pattern still finds what the migrations write
  expect([...written].filter((code) => !(jobErrorCodes as readonly string[]).includes(code))).toEqual([]);
});

test("the jobs' error codes include every LLM code and every integration code the worker passes on", () => {
  for (const code of llmErrorCodes) expect(jobErrorCodes).toContain(code);
  // INVALID_GRANT is never passed on: the job fails INTEGRATION_NEEDS_REAUTH (worker/integration-task.ts).
  for (const code of integrationErrorCodes.filter((c) => c !== "INVALID_GRANT")) expect(jobErrorCodes).toContain(`INTEGRATION_${code}`);
  expect(new Set(jobErrorCodes).size).toBe(jobErrorCodes.length);
});
