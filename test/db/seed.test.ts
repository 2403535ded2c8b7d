// `npm run seed`: three demo organizations with one person of each role, idempotent, refused in production.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import bcrypt from "bcrypt";
import { createTestDatabase, query, roles, urlFor, type TestDatabase } from "../support/database.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const seed = (env: Record<string, string>, database: TestDatabase = db) =>
  spawnSync(process.execPath, ["bin/seed.ts"], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    encoding: "utf8",
    timeout: 120_000,
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: urlFor(roles.authenticator, database.name),
      OWNER_DATABASE_URL: urlFor(roles.owner, database.name),
      DATABASE_AUTHENTICATED_ROLE: roles.authenticated,
      DATABASE_ANONYMOUS_ROLE: roles.anonymous,
      JWT_SECRET: "test-secret-that-is-at-least-32-characters-long",
      LOG_LEVEL: "warn",
      LOG_PRETTY: "false",
      ...env,
    },
  });

test("creates the demo organizations and prints working credentials, and a second run changes nothing", async () => {
  const first = seed({});
  expect(first.status).toBe(0);
  expect(first.stdout).toContain('password for every account: "quire demo passphrase"');
  expect(first.stdout).toContain(
    'Acme Corporation (organizationSlug "acme"): owner@acme.example, admin@acme.example, member@acme.example, viewer@acme.example',
  );
  const count = async () =>
    (
      await query<{ orgs: number; members: number }>(
        db.name,
        "select count(distinct org_id)::int as orgs, count(*)::int as members from app_public.memberships",
        [],
        "root",
      )
    )[0];
  expect(await count()).toEqual({ orgs: 3, members: 12 });
  const [hash] = await query<{ password_hash: string }>(
    db.name,
    "select s.password_hash from app_private.user_secrets s join app_public.users u on u.id = s.user_id where u.email = 'viewer@globex.example'",
    [],
    "root",
  );
  expect(await bcrypt.compare("quire demo passphrase", hash!.password_hash)).toBe(true);
  expect(seed({}).status).toBe(0);
  expect(await count()).toEqual({ orgs: 3, members: 12 });
}, 180_000);

test("refuses to run in production", () => {
  const result = seed({ NODE_ENV: "production" });
  expect(result.status).toBe(1);
  expect(result.stderr).toContain("NODE_ENV=production: `npm run seed` creates demo accounts and only runs in development");
});

test("after the README's register example took the slug `acme`, the demo Acme gets `acme-demo` and Ann's organization is left alone", async () => {
  const other = await createTestDatabase();
  try {
    // What `register(organizationName: "Acme", email: "ann@acme.example", …)` leaves behind.
    await query(other.name, "select app_admin.create_organization('Acme', 'ann@acme.example', 'Ann Smith', 'a long passphrase')");
    const result = seed({}, other);
    expect(result.status).toBe(0);
    expect(result.stdout).toContain(
      'Acme Corporation (organizationSlug "acme-demo"): owner@acme.example, admin@acme.example, member@acme.example, viewer@acme.example',
    );
    const members = await query<{ slug: string; email: string; role: string }>(
      other.name,
      "select o.slug, u.email, m.role from app_public.memberships m join app_public.organizations o on o.id = m.org_id join app_public.users u on u.id = m.user_id where o.slug in ('acme', 'acme-demo') order by o.slug, u.email",
      [],
      "root",
    );
    expect(members).toEqual([
      { slug: "acme", email: "ann@acme.example", role: "owner" },
      { slug: "acme-demo", email: "admin@acme.example", role: "admin" },
      { slug: "acme-demo", email: "member@acme.example", role: "member" },
      { slug: "acme-demo", email: "owner@acme.example", role: "owner" },
      { slug: "acme-demo", email: "viewer@acme.example", role: "viewer" },
    ]);
    // Run again: the same, nothing added.
    expect(seed({}, other).stdout).toContain('(organizationSlug "acme-demo")');
    const [count] = await query<{ n: number }>(other.name, "select count(*)::int as n from app_public.memberships", [], "root");
    expect(count!.n).toBe(13);
  } finally {
    await other.drop();
  }
}, 180_000);
