// The README's error table is the client's documentation of lib/errors.ts: it must list exactly the same codes.
import { readFileSync } from "node:fs";
import { customSqlStates, standardSqlStates } from "../../lib/errors.ts";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const table = readme.slice(readme.indexOf("| SQLSTATE |"));
const rows = table
  .split("\n")
  .slice(2)
  .filter((line) => line.startsWith("| `"))
  .map((line) => {
    const [states, code] = line.split("|").slice(1, 3);
    return { states: [...states!.matchAll(/`([0-9A-Z]{5})`/g)].map((m) => m[1]!), code: /`([A-Z_]+)`/.exec(code!)![1]! };
  });

test("the README lists every SQLSTATE lib/errors.ts passes to clients, with the same code", () => {
  const documented = Object.fromEntries(rows.flatMap(({ states, code }) => states.map((s) => [s, code])));
  const expected = {
    ...customSqlStates,
    ...Object.fromEntries(Object.entries(standardSqlStates).map(([state, { code }]) => [state, code])),
  };
  expect(documented).toEqual(expected);
});
