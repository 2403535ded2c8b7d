// Tenant tables are keyed (org_id, id), so that a sharded PostgreSQL can distribute them by org_id
// (migrations/committed/000001-quire.sql, section Foundation). The API should not notice: each such table's comment
// declares `@primaryKey id`, which PgFakeConstraintsPlugin turns into a primary key on id alone, and the real
// (org_id, id) key is commented `@behavior -single -update -delete` so it adds no `…ByOrgIdAndRowId` fields.
// A table cannot have two primary keys, so this plugin, running after the fake constraints are added, demotes the
// real one of every table that also has a declared one to a unique constraint: node ids, `document(rowId:)` and
// `updateDocument(input: {rowId})` stay keyed by id, and row-level security keeps them inside the caller's
// organization.
const fakePrefix = "FAKE_";

export const TenantKeysPlugin: GraphileConfig.Plugin = {
  name: "QuireTenantKeysPlugin",
  version: "1.0.0",
  after: ["PgFakeConstraintsPlugin"],
  gather: {
    hooks: {
      pgIntrospection_introspection(_info, { introspection }) {
        const declared = new Set(introspection.constraints.filter((c) => c.contype === "p" && c.conname.startsWith(fakePrefix)).map((c) => c.conrelid));
        for (const constraint of introspection.constraints) {
          if (constraint.contype === "p" && !constraint.conname.startsWith(fakePrefix) && declared.has(constraint.conrelid)) {
            constraint.contype = "u";
          }
        }
      },
    },
  },
};
