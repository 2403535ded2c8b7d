// The baseline of bench/documents-list.ts: the same database work as Quire's
// `{ documents(first: 20, orderBy: CREATED_AT_DESC) { nodes { rowId title createdAt summaries(first: 1, …) } } }`,
// done by hand in a plain Express 5 route, so the bench can tell what Quire's layers (pino-http, grafserv, Grafast,
// PostGraphile's SQL) cost on top of the work that cannot be avoided. bench/documents-list.ts forks this file
// (its own process, as Quire has) with Quire's environment, so loadConfig gives the same database, JWT secret,
// issuer, audience, roles and pool size; it is not a way to serve anything.
//
// Per request, as Quire does it: the bearer token is verified with jsonwebtoken (HS256 pinned, issuer and
// audience checked); a connection is taken from a pg pool of DATABASE_POOL_MAX (default 10) logged in as the
// authenticator; `begin` and the settings of server/context.ts's pgSettingsFor (set_config(…, true) for the role,
// jwt.claims.* and quire.*) in one message, as server/pg-client.ts sends them; one select, as a named prepared
// statement like PostGraphile's (first 20 documents by created_at desc, id desc, each with its latest summary
// through a lateral join; RLS scopes both tables to the session's organization); `commit`; the rows as the same
// JSON Quire answers with.
//
// IPC, child → parent: { type: "ready", port } once listening on 127.0.0.1 (a free port), or { type: "failed",
// message } before exiting 1. SIGTERM (or the parent going away) closes the server and the pool, then exits 0.
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import express, { type Request, type Response } from "express";
import jwt from "jsonwebtoken";
import pg from "pg";
import { loadConfig } from "../lib/config.ts";

export type BaselineMessage = { readonly type: "ready"; readonly port: number } | { readonly type: "failed"; readonly message: string };

/** What the route selects: PostGraphile's columns and order (bench/results/rls.md shows the SQL PostGraphile runs). */
const baselineSql = `
select d.id, d.title, to_char(d.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.USTZH:TZM'::text) as created_at, s.content as summary
  from app_public.documents d
  left join lateral (
    select s.content
      from app_public.summaries s
     where s.org_id = d.org_id and s.document_id = d.id
     order by s.created_at desc, s.id desc
     limit 1
  ) s on true
 order by d.created_at desc, d.id desc
 limit 20`;

interface Row {
  readonly id: string;
  readonly title: string;
  readonly created_at: string;
  readonly summary: string | null;
}

if (typeof process.send !== "function") {
  process.stderr.write("bench/documents-list-baseline.ts is forked by bench/documents-list.ts (it needs an IPC channel)\n");
  process.exit(2);
}
const send = (message: BaselineMessage) => {
  if (process.connected) process.send!(message);
};

const config = loadConfig(process.env);
const { secret, issuer, audience } = config.jwt;
if (config.jwt.signingKey) {
  send({ type: "failed", message: "the baseline verifies HS256 tokens only (JWT_PRIVATE_KEY is set)" });
  process.exit(1);
}

const pool = new pg.Pool({
  connectionString: config.database.url,
  max: config.database.poolMax,
  application_name: "bench-baseline",
  connectionTimeoutMillis: 5_000,
  idleTimeoutMillis: 30_000,
});
// @dataplan/pg does this once on every new connection; the baseline follows so both plan alike.
pool.on("connect", (client) => {
  client.query("set jit_optimize_above_cost = -1").catch(() => undefined);
});
pool.on("error", () => undefined); // an idle connection lost while stopping

const bearer = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)$/;
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const roles = ["viewer", "member", "admin", "owner"];
const unauthenticated = { errors: [{ message: "The access token is missing, malformed, expired or invalid.", extensions: { code: "UNAUTHENTICATED" } }] };

/** The settings Quire's pgSettingsFor gives an authenticated request, in the same order; null for a bad token. */
function settingsFor(req: Request): Array<[string, string]> | null {
  const match = bearer.exec(req.headers.authorization ?? "");
  if (!match) return null;
  let payload: jwt.JwtPayload | string;
  try {
    payload = jwt.verify(match[1]!, secret, { algorithms: ["HS256"], issuer, audience });
  } catch {
    return null;
  }
  if (typeof payload === "string") return null;
  // The claim checks of lib/tokens.ts.
  const { sub, org_id: orgId, sid, role } = payload as jwt.JwtPayload & Record<string, unknown>;
  if (typeof sub !== "string" || !uuid.test(sub) || typeof orgId !== "string" || !uuid.test(orgId)) return null;
  if (typeof sid !== "string" || !uuid.test(sid) || typeof role !== "string" || !roles.includes(role)) return null;
  return [
    ["role", config.database.authenticatedRole],
    ["jwt.claims.user_id", sub],
    ["jwt.claims.org_id", orgId],
    ["jwt.claims.session_id", sid],
    ["jwt.claims.role", role],
    ["quire.request_id", randomUUID()],
    ["quire.client_ip", req.socket.remoteAddress ?? ""],
    ["quire.max_document_bytes", String(config.documents.maxBytes)],
    ["quire.job_max_attempts", String(config.jobs.maxAttempts)],
  ];
}

async function listDocuments(req: Request, res: Response): Promise<void> {
  const settings = settingsFor(req);
  if (!settings) {
    res.status(401).json(unauthenticated);
    return;
  }
  const client = await pool.connect();
  let rows: Row[];
  try {
    try {
      const configs = settings.map(([key, value]) => `set_config(${client.escapeLiteral(key)}, ${client.escapeLiteral(value)}, true)`);
      await client.query(`begin; select ${configs.join(", ")}`);
      rows = (await client.query<Row>({ name: "bench-documents-list", text: baselineSql })).rows;
      await client.query("commit");
    } catch (error) {
      await client.query("rollback");
      throw error;
    }
  } finally {
    client.release();
  }
  res.json({
    data: {
      documents: {
        nodes: rows.map((row) => ({
          rowId: row.id,
          title: row.title,
          createdAt: row.created_at,
          summaries: { nodes: row.summary === null ? [] : [{ content: row.summary }] },
        })),
      },
    },
  });
}

const app = express();
app.disable("x-powered-by");
app.disable("etag"); // grafserv sends none either
app.post("/graphql", express.json(), (req, res) => {
  listDocuments(req, res).catch((error: unknown) => {
    process.stderr.write(`baseline request failed: ${String(error)}\n`);
    if (!res.headersSent) res.status(500).json({ errors: [{ message: "An internal error occurred.", extensions: { code: "INTERNAL" } }] });
  });
});

const server = app.listen(0, "127.0.0.1", (error?: Error) => {
  if (error) {
    send({ type: "failed", message: error.message });
    process.exit(1);
  }
  send({ type: "ready", port: (server.address() as AddressInfo).port });
});

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await pool.end();
  process.exit(0);
}
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
process.on("disconnect", () => void stop());
