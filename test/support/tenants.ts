// Organizations, people and sessions made directly in a test database (as the superuser, past RLS), with access
// tokens signed the way the server signs them. Faster than going through register/login for every fixture.
import { randomUUID } from "node:crypto";
import { createTokenService, type MemberRole } from "../../lib/tokens.ts";
import pg from "pg";
import { query, roles as dbRoles, urlFor, type TestDatabase } from "./database.ts";

/** bcrypt (cost 10) of "correct horse battery staple", the password every fixture person has. */
export const fixturePassword = "correct horse battery staple";
const fixtureHash = "$2b$10$c9p7ft1J0cmO9ErSRIonF.s1B.hqSVaYST5nnU.C6kdSjJ0siS6eO";

export interface Member {
  readonly userId: string;
  readonly email: string;
  readonly role: MemberRole;
  readonly sessionId: string;
  readonly accessToken: string;
}

export interface Tenant {
  readonly orgId: string;
  readonly slug: string;
  readonly members: Readonly<Record<MemberRole, Member>>;
}

const roles: readonly MemberRole[] = ["owner", "admin", "member", "viewer"];

/** An organization with one live, signed-in person of each role. */
export async function createTenant(db: TestDatabase, name: string): Promise<Tenant> {
  const slug = `${name.toLowerCase().replace(/[^a-z0-9]+/g, "-")}-${randomUUID().slice(0, 8)}`;
  const [org] = await query<{ id: string }>(db.name, "insert into app_public.organizations (name, slug) values ($1, $2) returning id", [name, slug], "root");
  const tokens = createTokenService(db.config);
  const members = {} as Record<MemberRole, Member>;
  for (const role of roles) {
    const email = `${role}@${slug}.example`;
    const [user] = await query<{ id: string }>(
      db.name,
      "insert into app_public.users (email, full_name) values ($1, $2) returning id",
      [email, `${name} ${role}`],
      "root",
    );
    await query(db.name, "insert into app_private.user_secrets (user_id, password_hash) values ($1, $2)", [user!.id, fixtureHash], "root");
    await query(db.name, "insert into app_public.memberships (org_id, user_id, role) values ($1, $2, $3)", [org!.id, user!.id, role], "root");
    const sessionId = randomUUID();
    await query(
      db.name,
      "insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at) values ($1, $2, $3, sha256($4::bytea), now() + interval '1 day')",
      [sessionId, user!.id, org!.id, Buffer.from(sessionId)],
      "root",
    );
    const { token } = tokens.signAccessToken({ sessionId, userId: user!.id, orgId: org!.id, role });
    members[role] = { userId: user!.id, email, role, sessionId, accessToken: token };
  }
  // A revoked API key row, so the isolation suites have one to aim at. It points at the admin and their session
  // instead of a service account of its own (createApiKey makes one), so that member counts stay four; revoked, it
  // grants nothing.
  await query(
    db.name,
    `insert into app_public.api_keys (org_id, name, role, user_id, session_id, secret_hash, created_by, revoked_at)
     values ($1, 'Fixture key', 'viewer', $2, $3, sha256($4::bytea), $2, now())`,
    [org!.id, members.admin.userId, members.admin.sessionId, Buffer.from(org!.id)],
    "root",
  );
  // An identity provider (without a client secret: single sign-on cannot start with it) and the member's identity
  // there, for the isolation suites.
  await query(
    db.name,
    `with p as (insert into app_public.sso_providers (org_id, issuer, client_id, allowed_domains, created_by)
                values ($1, $2, 'fixture-client', array[$3], $4) returning issuer)
     insert into app_public.sso_identities (org_id, user_id, issuer, subject) select $1, $5, p.issuer, 'fixture-subject' from p`,
    [org!.id, `https://idp.${slug}.example`, `${slug}.example`, members.admin.userId, members.member.userId],
    "root",
  );
  // A pending invitation, so every tenant table has rows for the isolation suites to aim at.
  const [invitation] = await query<{ id: string }>(
    db.name,
    "insert into app_public.invitations (org_id, email, role, invited_by, expires_at) values ($1, $2, 'member', $3, now() + interval '7 days') returning id",
    [org!.id, `invitee@${slug}.example`, members.owner.userId],
    "root",
  );
  await query(
    db.name,
    "insert into app_private.invitation_tokens (org_id, invitation_id, token_hash) values ($1, $2, sha256($3::bytea))",
    [org!.id, invitation!.id, Buffer.from(invitation!.id)],
    "root",
  );
  const [document] = await query<{ id: string }>(
    db.name,
    "insert into app_public.documents (org_id, title, content, author_id) values ($1, $2, $3, $4) returning id",
    [org!.id, `${name} handbook`, `How ${name} works.`, members.member.userId],
    "root",
  );
  // The document's original upload and an earlier revision (rows only: no object is stored for the fixture).
  await query(
    db.name,
    `with f as (insert into app_public.files (org_id, document_id, name, content_type, bytes, sha256, storage_key, created_by)
                values ($1::uuid, $2::uuid, 'handbook.md', 'text/markdown', 20, encode(sha256('fixture'), 'hex'),
                        'orgs/' || $1::uuid || '/files/' || gen_random_uuid(), $3::uuid) returning id)
     insert into app_public.document_revisions (org_id, document_id, revision, title, content, format, content_hash, created_at, replaced_by)
     select $1::uuid, $2::uuid, 1, $4, 'An earlier draft.', 'markdown', encode(sha256('An earlier draft.'), 'hex'), now(), $3 from f`,
    [org!.id, document!.id, members.member.userId, `${name} handbook`],
    "root",
  );
  // A finished export with its archive's row (no object is stored for the fixture).
  await query(
    db.name,
    `with j as (insert into app_public.jobs (org_id, kind, status, requested_by, attempts, finished_at)
                values ($1::uuid, 'export', 'succeeded', $2::uuid, 1, now()) returning id)
     insert into app_public.organization_exports (org_id, job_id, storage_key, bytes, sha256, created_by, expires_at)
     select $1::uuid, j.id, 'orgs/' || $1::uuid || '/exports/' || j.id, 10240, encode(sha256('export'), 'hex'), $2::uuid, now() + interval '7 days' from j`,
    [org!.id, members.owner.userId],
    "root",
  );
  // A finished summary job with its summary and usage (the document's insert already wrote live events).
  await query(
    db.name,
    `with v as (select id from app_public.global_template_versions order by created_at limit 1),
          j as (insert into app_public.jobs (org_id, kind, status, document_id, global_template_version_id, requested_by, attempts, finished_at)
                select $1, 'summarize', 'succeeded', $2, v.id, $3, 1, now() from v returning id, global_template_version_id),
          s as (insert into app_public.summaries (org_id, document_id, job_id, global_template_version_id, content, provider, model,
                                                  prompt_tokens, completion_tokens, latency_ms, document_revision)
                select $1, $2, j.id, j.global_template_version_id, $4, 'extractive', 'extractive-v1', 10, 5, 1, 1 from j returning id, job_id)
     insert into app_public.usage_records (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens)
     select $1, s.job_id, s.id, 'extractive', 'extractive-v1', 10, 5 from s`,
    [org!.id, document!.id, members.member.userId, `${name} works.`],
    "root",
  );
  // A connected Notion workspace with one finished import run and the summary published there (no secrets: the
  // isolation suites only need rows).
  await query(
    db.name,
    `with i as (insert into app_public.integrations (org_id, provider, external_id, external_name, connected_by)
                values ($1, 'notion', $2, $3, $4) returning id),
          j as (insert into app_public.jobs (org_id, kind, status, integration_id, requested_by, attempts, finished_at)
                select $1, 'import', 'succeeded', i.id, $4, 1, now() from i returning id, integration_id),
          r as (insert into app_public.integration_sync_runs (org_id, integration_id, job_id, kind, status, seen, imported, finished_at)
                select $1, j.integration_id, j.id, 'import', 'finished', 1, 1, now() from j returning integration_id)
     insert into app_public.summary_publications (org_id, summary_id, integration_id, target_key, external_id, url)
     select $1, s.id, r.integration_id, 'notion:parent', 'page-' || s.id, 'https://www.notion.so/page'
       from r, app_public.summaries s where s.org_id = $1`,
    [org!.id, `workspace-${slug}`, `${name} workspace`, members.admin.userId],
    "root",
  );
  // The document's one chunk, the owner's question answered from it with a citation, and its usage (an answer's and
  // an embedding's); the organization's model settings, which leave the deployment's model in use, with a key
  // sealing that is not in use (has_api_key false; bytes only: nothing opens it).
  await query(
    db.name,
    `with c as (insert into app_public.document_chunks (org_id, document_id, document_revision, ordinal, heading, content)
                values ($1::uuid, $2::uuid, 1, 0, null, $4) returning id),
          j as (insert into app_public.jobs (org_id, kind, status, requested_by, attempts, finished_at)
                values ($1::uuid, 'answer', 'succeeded', $3::uuid, 1, now()) returning id),
          q as (insert into app_public.questions (org_id, asked_by, job_id, question)
                select $1::uuid, $3::uuid, j.id, 'How does it work?' from j returning id, job_id),
          a as (insert into app_public.answers (org_id, question_id, job_id, asked_by, content, provider, model, prompt_tokens,
                                                completion_tokens, latency_ms, sources)
                select $1::uuid, q.id, q.job_id, $3::uuid, $4 || ' [1]', 'extractive', 'extractive-v1', 12, 6, 1,
                       jsonb_build_array(jsonb_build_object('chunkId', c.id, 'documentId', $2::uuid, 'documentRevision', 1))
                  from q, c returning id, job_id),
          t as (insert into app_public.answer_citations (org_id, answer_id, asked_by, ordinal, marker, document_id, document_revision, chunk_id, quote)
                select $1::uuid, a.id, $3::uuid, 0, 1, $2::uuid, 1, c.id, $4 from a, c)
     insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
     select $1::uuid, a.job_id, 'answer', 'extractive', 'extractive-v1', 12, 6 from a
     union all select $1::uuid, null, 'embedding', 'openai', 'text-embedding-3-small', 8, 0`,
    [org!.id, document!.id, members.owner.userId, `How ${name} works.`],
    "root",
  );
  await query(
    db.name,
    `with s as (insert into app_public.llm_settings (org_id, provider, model, has_api_key, updated_by)
                values ($1, null, null, false, $2) returning org_id, id)
     insert into app_private.llm_secrets (org_id, settings_id, key_id, secret_nonce, secret_ciphertext)
     select s.org_id, s.id, 'fixture', '\\x00'::bytea, '\\x00'::bytea from s`,
    [org!.id, members.admin.userId],
    "root",
  );
  await query(
    db.name,
    "insert into app_public.templates (org_id, name, body, created_by) values ($1, $2, $3, $4)",
    [org!.id, `${name} digest`, "Summarize {{document.title}} for {{organization.name}}:\n{{document.content}}", members.admin.userId],
    "root",
  );
  return { orgId: org!.id, slug, members };
}

/** The id of the membership of `t`'s person of `role`. */
export async function membershipIdOf(db: TestDatabase, t: Tenant, role: MemberRole): Promise<string> {
  const [row] = await query<{ id: string }>(
    db.name,
    "select id from app_public.memberships where org_id = $1 and user_id = $2",
    [t.orgId, t.members[role].userId],
    "root",
  );
  return row!.id;
}

/**
 * A connection as the API would hold it for `member` of `orgId` (authenticator login, authenticated role, session
 * claims), inside a transaction already begun: the caller commits or rolls back, then ends it.
 */
export async function beginAs(database: string, member: Member, orgId: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: urlFor(dbRoles.authenticator, database) });
  await client.connect();
  try {
    await client.query("begin");
    await client.query(
      "select set_config('role', $1, true), set_config('jwt.claims.session_id', $2, true), set_config('jwt.claims.org_id', $3, true), set_config('jwt.claims.user_id', $4, true)",
      [dbRoles.authenticated, member.sessionId, orgId, member.userId],
    );
    return client;
  } catch (error) {
    await client.end();
    throw error;
  }
}
