// The README's GraphQL examples are part of the documentation users copy: each one must parse and validate against
// the committed schema.graphql (which another test keeps equal to the generated schema). "…" stands for an id.
import { readFileSync } from "node:fs";
import { buildSchema, parse, validate } from "postgraphile/graphql";

const schema = buildSchema(readFileSync("schema.graphql", "utf8"));
const readme = readFileSync("README.md", "utf8");
const blocks = [...readme.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);

test("the README has GraphQL examples (so the check below is not vacuous)", () => {
  expect(blocks.length).toBeGreaterThanOrEqual(5);
});

test.each(blocks.flatMap((block) => splitOperations(block)).map((op) => [op.split("\n")[0]!.slice(0, 80), op]))("%s", (_name, operation) => {
  const document = parse(operation.replaceAll('"…"', '"00000000-0000-0000-0000-000000000000"'));
  expect(validate(schema, document).map((e) => e.message)).toEqual([]);
});

/** A block holds several operations, each starting at a line that begins with `{`, query, mutation or subscription. */
function splitOperations(block: string): string[] {
  const operations: string[] = [];
  for (const line of block.split("\n")) {
    if (/^(\{|query\b|mutation\b|subscription\b)/.test(line)) operations.push(line);
    else if (operations.length > 0) operations[operations.length - 1] += `\n${line}`;
  }
  return operations.map((op) => op.replace(/\s{2,}#.*$/gm, "").trim()).filter(Boolean);
}
