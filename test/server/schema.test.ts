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

// Tenant tables are keyed (org_id, id) for sharding (server/tenant-keys-plugin.ts): the API still takes one id.
test("tenant tables keyed (org_id, id) are looked up, updated and deleted by rowId alone, with no …ByOrgIdAndRowId fields", async () => {
  const schema = await generated();
  expect(schema).not.toMatch(/ByOrgIdAndRowId/);
  expect(schema).toContain("document(rowId: UUID!): Document");
  expect(schema).toContain("job(rowId: UUID!): Job");
  expect(schema).toMatch(/input UpdateDocumentInput \{[^}]*rowId: UUID!/);
  expect(schema).toMatch(/input DeleteTemplateInput \{[^}]*rowId: UUID!/);
  const [key] = await query<{ columns: string }>(
    db.name,
    `select string_agg(a.attname, ', ' order by k.ord) as columns
       from pg_constraint c, unnest(c.conkey) with ordinality k(attnum, ord)
       join pg_attribute a on a.attrelid = 'app_public.documents'::regclass and a.attnum = k.attnum
      where c.conname = 'documents_pkey'`,
  );
  expect(key!.columns).toBe("org_id, id");
});
