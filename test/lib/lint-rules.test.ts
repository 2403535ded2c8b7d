// The plan's rules (.oxlintrc.json) hold only while they fire: each is shown a planted violation in a scratch tree
// linted with the project's own configuration, and the repository itself must lint clean.
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = fileURLToPath(new URL("../..", import.meta.url));
const oxlint = path.join(root, "node_modules", ".bin", "oxlint");
const run = promisify(execFile);

interface Diagnostic {
  readonly code: string;
  readonly filename: string;
}

/** Lints `cwd` with oxlint (JSON output); resolves with its diagnostics and exit code, failing or not. */
async function lint(cwd: string): Promise<{ diagnostics: Diagnostic[]; exitCode: number }> {
  const outcome = await run(oxlint, ["--deny-warnings", "-f", "json", "."], { cwd, maxBuffer: 16 * 1024 * 1024 }).then(
    ({ stdout }) => ({ stdout, exitCode: 0 }),
    (error: { stdout?: string; code?: number }) => ({ stdout: error.stdout ?? "", exitCode: error.code ?? -1 }),
  );
  const { diagnostics } = JSON.parse(outcome.stdout) as { diagnostics: Diagnostic[] };
  return { diagnostics, exitCode: outcome.exitCode };
}

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), "quire-lint-"));
  await copyFile(path.join(root, ".oxlintrc.json"), path.join(scratch, ".oxlintrc.json"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** Writes `files` (path -> source) into a fresh folder of the scratch tree and lints it. */
async function plant(name: string, files: Record<string, string>) {
  const dir = path.join(scratch, name);
  for (const [file, source] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), source);
  }
  await copyFile(path.join(root, ".oxlintrc.json"), path.join(dir, ".oxlintrc.json"));
  return lint(dir);
}

const codes = (diagnostics: Diagnostic[]) => diagnostics.map((d) => `${d.code} ${d.filename}`).sort();

test("the repository lints clean", async () => {
  const { diagnostics, exitCode } = await lint(root);
  expect(codes(diagnostics)).toEqual([]);
  expect(exitCode).toBe(0);
});

test("an import cycle is refused", async () => {
  const { diagnostics, exitCode } = await plant("cycle", {
    "lib/a.ts": 'import { b } from "./b.ts";\nexport const a = () => b;\n',
    "lib/b.ts": 'import { a } from "./a.ts";\nexport const b = () => a;\n',
  });
  expect(codes(diagnostics)).toEqual(["import(no-cycle) lib/a.ts", "import(no-cycle) lib/b.ts"]);
  expect(exitCode).toBe(1);
});

test.each([
  ["lib", "server"],
  ["lib", "worker"],
  ["lib", "db"],
  ["db", "server"],
  ["db", "worker"],
  ["server", "worker"],
  ["worker", "server"],
])("%s/ may not import %s/", async (from, to) => {
  const { diagnostics, exitCode } = await plant(`${from}-${to}`, {
    [`${from}/nested/x.ts`]: `import { y } from "../../${to}/y.ts";\nexport const x = y;\n`,
    [`${to}/y.ts`]: "export const y = 1;\n",
  });
  expect(codes(diagnostics)).toEqual([`eslint(no-restricted-imports) ${from}/nested/x.ts`]);
  expect(exitCode).toBe(1);
});

test.each([
  ["server", "lib"],
  ["server", "db"],
  ["worker", "lib"],
  ["db", "lib"],
])("%s/ may import %s/", async (from, to) => {
  const { diagnostics, exitCode } = await plant(`${from}-uses-${to}`, {
    [`${from}/x.ts`]: `import { y } from "../${to}/y.ts";\nexport const x = y;\n`,
    [`${to}/y.ts`]: "export const y = 1;\n",
  });
  expect(codes(diagnostics)).toEqual([]);
  expect(exitCode).toBe(0);
});

test("an explicit any is refused", async () => {
  const { diagnostics } = await plant("any", { "server/x.ts": "export const x = (v: any) => v;\n" });
  expect(codes(diagnostics)).toEqual(["typescript(no-explicit-any) server/x.ts"]);
});
