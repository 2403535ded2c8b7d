// Many organizations' requests interleaved on one pool: pooled connections carry transaction-local settings only,
// so every response must hold its own organization's rows and nothing else — over HTTP and over graphql-ws.
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { useQuireServer } from "../support/server.ts";
import { createTenant, type Tenant } from "../support/tenants.ts";

let tenants: Tenant[];
const fx = useQuireServer(); // a pool of 4 connections for 100 concurrent requests
beforeAll(async () => {
  tenants = [];
  for (let i = 0; i < 10; i++) tenants.push(await createTenant(fx.db, `Tenant ${i}`));
}, 60_000);

const everything = "{ currentOrganization { rowId slug } users { nodes { email } } memberships { nodes { orgId user { email } } } }";
interface Everything {
  currentOrganization: { rowId: string; slug: string };
  users: { nodes: Array<{ email: string }> };
  memberships: { nodes: Array<{ orgId: string; user: { email: string } }> };
}

const ownOnly = (tenant: Tenant, data: Everything) => {
  expect(data.currentOrganization).toEqual({ rowId: tenant.orgId, slug: tenant.slug });
  expect(data.users.nodes.map((u) => u.email).sort()).toEqual(
    Object.values(tenant.members)
      .map((m) => m.email)
      .sort(),
  );
  expect(new Set(data.memberships.nodes.map((m) => m.orgId))).toEqual(new Set([tenant.orgId]));
};

test("100 parallel requests from 10 organizations each see only their own organization", async () => {
  const roles = ["owner", "admin", "member", "viewer"] as const;
  const requests = Array.from({ length: 100 }, (_, i) => {
    const tenant = tenants[i % 10]!;
    const token = tenant.members[roles[i % 4]!].accessToken;
    return fetch(`${fx.app.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: everything }),
    }).then(async (r) => ({ tenant, status: r.status, body: (await r.json()) as { data: Everything; errors?: unknown } }));
  });
  const responses = await Promise.all(requests);
  expect(responses).toHaveLength(100);
  for (const { tenant, status, body } of responses) {
    expect(status).toBe(200);
    expect(body.errors).toBeUndefined();
    ownOnly(tenant, body.data);
  }
});

describe("graphql-ws", () => {
  const run = (token: string | null, queryText: string) => {
    const client = createClient({
      url: fx.app.url.replace("http", "ws") + "/graphql",
      webSocketImpl: WebSocket,
      connectionParams: token ? { authorization: `Bearer ${token}` } : {},
      retryAttempts: 0,
    });
    return new Promise<{ data?: unknown; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> }>((resolve, reject) => {
      let result: unknown;
      client.subscribe(
        { query: queryText },
        {
          next: (value) => (result = value),
          error: (error) => {
            void client.dispose();
            if (Array.isArray(error)) resolve({ errors: error });
            else reject(error);
          },
          complete: () => {
            void client.dispose();
            resolve(result as { data?: unknown });
          },
        },
      );
    });
  };

  test("authenticates with connectionParams.authorization and sees only its organization", async () => {
    const results = await Promise.all(tenants.slice(0, 5).map((t) => run(t.members.viewer.accessToken, everything)));
    results.forEach((result, i) => ownOnly(tenants[i]!, result.data as Everything));
  });

  test("without a token the connection is anonymous", async () => {
    expect(await run(null, "{ currentUser { email } }")).toEqual({ data: { currentUser: null } });
  });

  test("a bad token is refused with UNAUTHENTICATED", async () => {
    const result = await run(`${tenants[0]!.members.owner.accessToken}x`, "{ currentUser { email } }");
    expect(result.data ?? null).toBeNull();
    expect(result.errors?.[0]?.extensions?.code).toBe("UNAUTHENTICATED");
  });
});
