// `npm run seed` (development only): three demo organizations, each with one person of every role, created
// through the operator functions of app_admin, then their credentials printed. Safe to run again: existing
// organizations and people are left as they are. A slug already taken by an organization that is not the demo's
// (the README's `register` example creates "Acme", slug `acme`) is never joined: the demo one gets `<slug>-demo`.
import pg from "pg";
import { ConfigError } from "../lib/config.ts";
import { OperatorError } from "../lib/operator-error.ts";
import { runOnce } from "../lib/process.ts";
import { databaseOnPort, useEmbeddedPostgres } from "../db/embedded.ts";
import { prepareDatabase } from "../db/migrate.ts";
import { checkFirstLogin } from "../db/preflight.ts";

/** Every demo account's password. Development data only: `npm run seed` refuses to run in production. */
const demoPassword = "quire demo passphrase";
const organizations = ["Acme Corporation", "Globex", "Initech"];
const roles = ["owner", "admin", "member", "viewer"] as const;

await runOnce("seed", async (config, logger) => {
  if (config.env === "production") throw new ConfigError(["NODE_ENV=production: `npm run seed` creates demo accounts and only runs in development"]);
  if (!config.database.ownerUrl) throw new ConfigError(["OWNER_DATABASE_URL is required for `npm run seed`"]);
  // With `npm start` running, its database is used (and left running); else one is started for the seed alone.
  const embedded = config.database.embedded ? await useEmbeddedPostgres(config.database.embedded, logger, { command: "npm run seed" }) : null;
  try {
    const database = embedded ? databaseOnPort(config.database, embedded.port) : config.database;
    await checkFirstLogin(database, config.dataDir);
    await prepareDatabase(database, logger);
    const owner = new pg.Client({ connectionString: database.ownerUrl! });
    await owner.connect();
    const lines: string[] = [];
    try {
      for (const name of organizations) {
        const base = name.toLowerCase().split(" ")[0]!;
        const domain = `${base}.example`;
        // The first candidate slug that is free or already the demo organization (same name).
        const candidates = [base, `${base}-demo`];
        const { rows: taken } = await owner.query<{ slug: string; name: string }>(
          "select slug, name from app_admin.list_organizations() where slug = any($1)",
          [candidates],
        );
        const slug = candidates.find((c) => taken.every((t) => t.slug !== c || t.name === name));
        if (!slug) throw new OperatorError(`the slugs ${candidates.join(" and ")} are taken by other organizations than the demo "${name}"`);
        if (!taken.some((t) => t.slug === slug)) {
          await owner.query("select app_admin.create_organization($1, $2, $3, $4, $5)", [name, `owner@${domain}`, `${name} Owner`, demoPassword, slug]);
        }
        for (const role of roles.slice(1)) {
          await owner.query("select app_admin.add_user($1, $2, $3, $4, $5)", [slug, `${role}@${domain}`, `${name} ${role}`, role, demoPassword]);
        }
        lines.push(`  ${name} (organizationSlug "${slug}"): ${roles.map((r) => `${r}@${domain}`).join(", ")}`);
      }
    } finally {
      await owner.end();
    }
    process.stdout.write(`Demo organizations and people (password for every account: "${demoPassword}"):\n${lines.join("\n")}\n`);
  } finally {
    await embedded?.stop();
  }
});
