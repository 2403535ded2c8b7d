// schema.graphql is the committed contract with the frontend: it must be what the migrated database generates.
import { readFileSync } from "node:fs";
import { createPool } from "../../db/pool.ts";
import { buildSchema } from "../../server/schema.ts";
import { createTestDatabase, query, roles, silentLogger, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const generated = async () => {
  const pool = createPool({ url: db.config.database.url, max: 2, applicationName: "quire-test-schema" }, silentLogger);
  try {
    return await buildSchema({ config: db.config, logger: silentLogger, pool });
  } finally {
    await pool.end();
  }
};

test("schema.graphql matches the schema generated from the migrations (run `npm run schema` to update it)", async () => {
  const committed = readFileSync(new URL("../../schema.graphql", import.meta.url), "utf8");
  expect(await generated()).toBe(committed);
});

test("a change to the exposed schema makes the comparison fail", async () => {
  const committed = readFileSync(new URL("../../schema.graphql", import.meta.url), "utf8");
  await query(db.name, "create function app_public.planted_field() returns int language sql stable as 'select 1'");
  await query(db.name, `grant execute on function app_public.planted_field() to ${roles.anonymous}`);
  const changed = await generated();
  expect(changed).not.toBe(committed);
  expect(changed).toContain("plantedField: Int");
});
