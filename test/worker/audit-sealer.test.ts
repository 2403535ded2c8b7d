// The worker's audit sealer: changes append their audit events unsealed, and the sealer loop chains them within a
// few intervals; several sealers at once (one per worker process) never fork a chain, and stopping waits for the
// run in progress.
import type pg from "pg";
import { createPool } from "../../db/pool.ts";
import { startAuditSealer } from "../../worker/audit-sealer.ts";
import { createTestDatabase, query, roles, silentLogger, urlFor, type TestDatabase } from "../support/database.ts";
import { createTenant } from "../support/tenants.ts";

let db: TestDatabase;
const pools: pg.Pool[] = [];
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  for (const pool of pools) await pool.end();
  await db?.drop();
});

const authenticatorPool = () => {
  const pool = createPool({ url: urlFor(roles.authenticator, db.name), max: 2, applicationName: "quire-test-sealer" }, silentLogger);
  pools.push(pool);
  return pool;
};
const unsealed = async () =>
  Number((await query<{ n: string }>(db.name, "select count(*) as n from app_public.audit_events where seq is null", [], "root"))[0]!.n);
/** Waits (polling, at most `ms`) until nothing is left unsealed; the count left. */
async function drained(ms: number): Promise<number> {
  const until = Date.now() + ms;
  let left = await unsealed();
  while (left > 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    left = await unsealed();
  }
  return left;
}

test("several sealers at once chain every committed event of concurrent writers, without a fork", async () => {
  const sealers = [
    startAuditSealer(authenticatorPool(), 20, silentLogger),
    startAuditSealer(authenticatorPool(), 20, silentLogger),
    startAuditSealer(authenticatorPool(), 20, silentLogger),
  ];
  try {
    const tenants = await Promise.all(["Sealed A", "Sealed B", "Sealed C"].map((name) => createTenant(db, name)));
    await Promise.all(
      tenants.flatMap((t) =>
        Array.from({ length: 4 }, (_, w) =>
          query(
            db.name,
            "insert into app_public.documents (org_id, title, content) select $1, 'w' || $2 || '-' || i, 'x' from generate_series(1, 25) i",
            [t.orgId, w],
            "root",
          ),
        ),
      ),
    );
    expect(await drained(10_000)).toBe(0);
    for (const t of tenants) {
      const [verdict] = await query<{ valid: boolean; events: string; pending: string }>(
        db.name,
        "select valid, events, pending from app_admin.verify_audit_chain($1)",
        [t.orgId],
      );
      const total = (await query<{ n: string }>(db.name, "select count(*) as n from app_public.audit_events where org_id = $1", [t.orgId], "root"))[0]!.n;
      expect(verdict).toEqual({ valid: true, events: total, pending: "0" });
      expect(Number(total)).toBeGreaterThanOrEqual(100);
    }
  } finally {
    for (const sealer of sealers) await sealer.stop();
  }
});

test("once stopped, a sealer seals nothing more", async () => {
  const sealer = startAuditSealer(authenticatorPool(), 20, silentLogger);
  await sealer.stop();
  const t = await createTenant(db, "Unattended");
  await new Promise((resolve) => setTimeout(resolve, 200));
  const [{ pending }] = (await query<{ pending: string }>(db.name, "select pending from app_admin.verify_audit_chain($1)", [t.orgId])) as [{ pending: string }];
  expect(Number(pending)).toBeGreaterThan(0);
});
