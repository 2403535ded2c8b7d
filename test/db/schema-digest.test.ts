// docs/schema.md is the schema's rules one read away: it must be what the migrated database holds.
import { readFileSync } from "node:fs";
import { createPool } from "../../db/pool.ts";
import { schemaDigest } from "../../db/schema-digest.ts";
import { createTestDatabase, query, roles, silentLogger, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const generated = async () => {
  const pool = createPool({ url: db.config.database.url, max: 1, applicationName: "quire-test-digest" }, silentLogger);
  try {
    return await schemaDigest(pool, roles);
  } finally {
    await pool.end();
  }
};
const committed = () => readFileSync(new URL("../../docs/schema.md", import.meta.url), "utf8");

test("docs/schema.md matches the digest of the migrated database (run `npm run schema` to update it)", async () => {
  expect(await generated()).toBe(committed());
});

test("the digest answers who may touch documents: its policies per command and role, grants and triggers", async () => {
  const digest = await generated();
  const section = digest.slice(digest.indexOf("### app_public.documents\n"), digest.indexOf("\n### ", digest.indexOf("### app_public.documents\n") + 1));
  expect(section).toContain("Row-level security: enabled, forced.");
  expect(section).toMatch(/\| `org_id` \| uuid \|/);
  expect(section).toMatch(/\| \w+ \| select \| authenticated \|/);
  expect(section).toMatch(/\| authenticated \| [a-z, ]*select/);
  expect(section).toMatch(/\| \w+ \| after each row \| insert, update, delete \| app_private\.\w*audit/);
  // No deployment-specific role name leaks into the page.
  expect(digest).not.toContain(roles.authenticated);
  expect(digest).not.toContain(roles.owner);
});

test("a new policy, grant or trigger makes the comparison fail", async () => {
  const before = await generated();
  await query(db.name, "create policy planted_policy on app_public.documents for delete to public using (false)");
  const withPolicy = await generated();
  expect(withPolicy).not.toBe(before);
  expect(withPolicy).toContain("| planted_policy | delete | public | `false` |");
  await query(db.name, "drop policy planted_policy on app_public.documents");
  expect(await generated()).toBe(before);

  await query(db.name, `grant truncate on app_public.documents to ${roles.anonymous}`);
  expect(await generated()).toContain("| anonymous | truncate |");
  await query(db.name, `revoke truncate on app_public.documents from ${roles.anonymous}`);

  await query(db.name, "create trigger _000_planted before insert on app_public.documents for each row execute function app_private.tg__timestamps()");
  const withTrigger = await generated();
  const section = withTrigger.slice(withTrigger.indexOf("### app_public.documents\n"));
  expect(section).toMatch(
    /\| trigger \| fires \| on \| function \| when \|\n\| --- \| --- \| --- \| --- \| --- \|\n\| _000_planted \| before each row \| insert \|/,
  );
  await query(db.name, "drop trigger _000_planted on app_public.documents");
  expect(await generated()).toBe(before);
});
