// Bare PostGraphile for bench/documents-list.ts: the same schema (Quire's migrations, its smart tags and
// inflection presets) served by PostGraphile V5 on Express with none of Quire's plugins, middleware or context
// beyond what the database needs: per request the bearer token is verified (lib/tokens.ts) and the settings of
// server/context.ts's pgSettingsFor are handed to PostGraphile's own withPgClient. No request logging, security
// headers, rate limits, body checks, query limits, error masking, audit of failures or metrics. The ratio of Quire
// to this says how much of Quire's cost per request is its own and how much PostGraphile's.
//
// Forked by bench/documents-list.ts with Quire's environment (same database, JWT secret, issuer, audience, pool
// size), and speaks the baseline's IPC (BaselineMessage): { type: "ready", port } once listening on 127.0.0.1.
import "../lib/graphile-env.ts"; // before anything from PostGraphile
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import pg from "pg";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/express/v4";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PgSimplifyInflectionPreset } from "@graphile/simplify-inflection";
import { loadConfig } from "../lib/config.ts";
import { createTokenService, type AccessClaims } from "../lib/tokens.ts";
import { pgSettingsFor } from "../server/context.ts";
import type { BaselineMessage } from "./documents-list-baseline.ts";

if (typeof process.send !== "function") {
  process.stderr.write("bench/documents-list-bare.ts is forked by bench/documents-list.ts (it needs an IPC channel)\n");
  process.exit(2);
}
const send = (message: BaselineMessage) => {
  if (process.connected) process.send!(message);
};

const config = loadConfig(process.env);
const tokens = createTokenService(config);
const pool = new pg.Pool({ connectionString: config.database.url, max: config.database.poolMax, application_name: "bench-bare-postgraphile" });
pool.on("error", () => undefined); // an idle connection lost while stopping

/** The verified claims of a bearer token, or null (answered as anonymous, whom RLS shows nothing). */
function claimsOf(header: string | undefined): AccessClaims | null {
  const token = /^Bearer (\S+)$/.exec(header ?? "")?.[1];
  if (!token) return null;
  try {
    return tokens.verifyAccessToken(token);
  } catch {
    return null;
  }
}

const pgl = postgraphile({
  extends: [PostGraphileAmberPreset, PgSimplifyInflectionPreset],
  pgServices: [makePgService({ pool, schemas: ["app_public"], pubsub: false })],
  grafast: {
    context(requestContext) {
      const req = requestContext.node?.req;
      const claims = claimsOf(req?.headers.authorization);
      return { pgSettings: pgSettingsFor(config, claims, "bench", req?.socket.remoteAddress ?? null) };
    },
  },
  grafserv: { graphqlPath: "/graphql", graphiql: false },
});

try {
  const app = express();
  app.disable("x-powered-by");
  const server = createServer(app);
  await pgl.createServ(grafserv).addTo(app, server, false);
  server.listen(0, "127.0.0.1", () => send({ type: "ready", port: (server.address() as AddressInfo).port }));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await pgl.release();
    await pool.end();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
  process.on("disconnect", () => void stop());
} catch (error) {
  send({ type: "failed", message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}
