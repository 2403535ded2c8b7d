// Tenant isolation through GraphQL, generated from the schema: for every type with a `rowId` lookup, its Relay
// node id, and its update/delete mutations, each role of organization A (and anonymous) is pointed at
// organization B's rows. The answers must equal the answers for a nonexistent id, and B's data must not change.
// New tables appear in the schema and are covered without editing this file.
import { randomUUID } from "node:crypto";
import { getNamedType, isInputObjectType, isNonNullType, isObjectType, isScalarType, type GraphQLObjectType, type GraphQLSchema } from "postgraphile/graphql";
import { useQuireServer, type GraphQLBody } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";
import type { MemberRole } from "../../lib/tokens.ts";

let schema: GraphQLSchema;
let a: Tenant;
let b: Tenant;

interface Lookup {
  readonly type: string;
  readonly field: string; // Query field taking rowId: UUID!
  readonly list: string; // Query connection field listing the type
  readonly update: { field: string; patchArg: string; patchField: string } | null;
  readonly deleteField: string | null;
}
let lookups: Lookup[];

type Actor = MemberRole | "anonymous";
/** Types every organization reads by design (global templates); the rules for them are in the SQL suite. */
const sharedTypes = ["GlobalTemplate", "GlobalTemplateVersion"];
const actors: readonly Actor[] = ["owner", "admin", "member", "viewer", "anonymous"];

async function gql(actor: Actor | "b-owner", text: string, variables: Record<string, unknown> = {}): Promise<GraphQLBody> {
  const token = actor === "anonymous" ? null : actor === "b-owner" ? b.members.owner.accessToken : a.members[actor].accessToken;
  return (await fx.app.graphql(text, variables, token)).body;
}

/** The mutation fields of a type, found by their inputs: `{rowId, patch}` for update, `{rowId}` for delete. */
function mutationsFor(type: GraphQLObjectType): Pick<Lookup, "update" | "deleteField"> {
  let update: Lookup["update"] = null;
  let deleteField: string | null = null;
  for (const [name, field] of Object.entries(schema.getMutationType()!.getFields())) {
    if (getNamedType(field.type).name !== `${name[0]!.toUpperCase()}${name.slice(1)}Payload`) continue;
    const payloadType = getNamedType(field.type) as GraphQLObjectType;
    const returnsType = Object.values(payloadType.getFields()).some((f) => getNamedType(f.type).name === type.name);
    const input = field.args.find((arg) => arg.name === "input");
    if (!returnsType || !input || !isInputObjectType(getNamedType(input.type))) continue;
    const inputFields = (getNamedType(input.type) as import("postgraphile/graphql").GraphQLInputObjectType).getFields();
    if (!("rowId" in inputFields)) continue;
    if (name === `update${type.name}` && "patch" in inputFields) {
      const patchType = getNamedType(inputFields.patch!.type) as import("postgraphile/graphql").GraphQLInputObjectType;
      const text = Object.values(patchType.getFields()).find((f) => isScalarType(getNamedType(f.type)) && getNamedType(f.type).name === "String");
      if (text) update = { field: name, patchArg: "patch", patchField: text.name };
    }
    if (name === `delete${type.name}`) deleteField = name;
  }
  return { update, deleteField };
}

// B's owner reads every list again and again: the rate limits are not what this file is about.
const fx = useQuireServer({ env: { RATE_LIMITS: "false" } });
beforeAll(async () => {
  a = await createTenant(fx.db, "Graph Alpha");
  b = await createTenant(fx.db, "Graph Bravo");
  schema = await fx.app.server.pgl.getSchema();
  const queryFields = schema.getQueryType()!.getFields();
  lookups = [];
  for (const [name, field] of Object.entries(queryFields)) {
    const [arg] = field.args;
    if (field.args.length !== 1 || arg!.name !== "rowId" || !isNonNullType(arg!.type)) continue;
    const type = getNamedType(field.type);
    if (!isObjectType(type) || sharedTypes.includes(type.name)) continue;
    // The table's own list, not a function's over part of it (trashedDocuments lists only what is in the trash).
    const lists = Object.entries(queryFields).filter(([, f]) => getNamedType(f.type).name === `${type.name}Connection`);
    const list = (lists.find(([listName]) => !listName.startsWith("trashed")) ?? lists[0])?.[0];
    if (!list) throw new Error(`no connection field lists ${type.name}`);
    lookups.push({ type: type.name, field: name, list, ...mutationsFor(type) });
  }
}, 60_000);

/** Everything organization B's owner can see of a type: its rows' ids and global ids, and a digest of them. */
async function bRows(lookup: Lookup) {
  const body = await gql("b-owner", `{ ${lookup.list} { nodes { id rowId } } }`);
  const nodes = (body.data![lookup.list] as { nodes: Array<{ id: string; rowId: string }> }).nodes;
  return { nodes, snapshot: JSON.stringify(await gql("b-owner", `{ ${lookup.list} { nodes { id rowId ${lookup.update?.patchField ?? ""} } } }`)) };
}

test("the schema exposes the tables, and organization B has rows of each", async () => {
  expect(lookups.map((l) => l.type).sort()).toEqual(expect.arrayContaining(["Membership", "Organization", "User"]));
  for (const lookup of lookups) expect((await bRows(lookup)).nodes.length).toBeGreaterThan(0);
});

describe.each(actors)("as A's %s", (actor) => {
  test("looking up B's rows by rowId and by node id answers as for a nonexistent row", async () => {
    for (const lookup of lookups) {
      const { nodes } = await bRows(lookup);
      for (const node of nodes) {
        // The same kind of node id, naming a row that does not exist.
        const missingNodeId = Buffer.from(Buffer.from(node.id, "base64").toString("utf8").replace(node.rowId, randomUUID())).toString("base64");
        expect(missingNodeId).not.toBe(node.id);
        const byRowId = `query ($id: UUID!) { ${lookup.field}(rowId: $id) { rowId } }`;
        expect({ lookup: lookup.field, answer: await gql(actor, byRowId, { id: node.rowId }) }).toEqual({
          lookup: lookup.field,
          answer: await gql(actor, byRowId, { id: randomUUID() }),
        });
        const byNode = `query ($id: ID!) { node(id: $id) { id } }`;
        const answer = await gql(actor, byNode, { id: node.id });
        expect(answer.data?.node ?? null).toBeNull();
        expect(answer.errors?.map((e) => e.extensions?.code)).toEqual((await gql(actor, byNode, { id: missingNodeId })).errors?.map((e) => e.extensions?.code));
      }
    }
  });

  test("updating or deleting B's rows changes nothing and answers as for a nonexistent row", async () => {
    for (const lookup of lookups) {
      const before = await bRows(lookup);
      for (const node of before.nodes) {
        const attempts: Array<[string, Record<string, unknown>]> = [];
        if (lookup.update) {
          attempts.push([
            `mutation ($id: UUID!) { ${lookup.update.field}(input: { rowId: $id, patch: { ${lookup.update.patchField}: "Taken over" } }) { clientMutationId } }`,
            {},
          ]);
        }
        if (lookup.deleteField) attempts.push([`mutation ($id: UUID!) { ${lookup.deleteField}(input: { rowId: $id }) { clientMutationId } }`, {}]);
        for (const [mutation] of attempts) {
          expect({ mutation, answer: await gql(actor, mutation, { id: node.rowId }) }).toEqual({
            mutation,
            answer: await gql(actor, mutation, { id: randomUUID() }),
          });
        }
      }
      expect((await bRows(lookup)).snapshot).toBe(before.snapshot);
    }
  });

  test("lists hold only A's rows", async () => {
    for (const lookup of lookups) {
      const bIds = new Set((await bRows(lookup)).nodes.map((n) => n.rowId));
      const body = await gql(actor, `{ ${lookup.list} { nodes { rowId } } }`);
      const seen = ((body.data?.[lookup.list] as { nodes: Array<{ rowId: string }> } | null)?.nodes ?? []).map((n) => n.rowId);
      expect({ list: lookup.list, leaked: seen.filter((id) => bIds.has(id)) }).toEqual({ list: lookup.list, leaked: [] });
    }
  });
});
