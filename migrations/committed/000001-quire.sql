--! Previous: -
--! Hash: sha1:e9d88ff00e1d9bc0cda76b5aeb24ae59bdd58673
--! Message: quire

-- Quire's schema, one section per table or tight group: each holds its tables' columns, keys, indexes, row-level
-- security, grants and triggers (audit and live events included), and the functions that belong to it. Shared
-- helpers come first. docs/schema.md is the generated digest of what this builds (npm run schema).
--
-- Squashed from the migrations written before the first release, and checked to build the same schema (pg_dump of
-- both identical). So columns added after a table was first created stay `alter table … add column` statements after
-- it, keeping every table's column order (and with it the GraphQL schema's field order) as it was.

-- Function bodies are checked when they run, not when they are created, so a helper may name a table defined in a
-- later section (pg_dump restores the same way).
set local check_function_bodies = off;

-- ==================================================================================================================
-- 1. Foundation
--
-- Nothing is usable by default; the four schemas; the request context every policy reads (who is asking, in which
-- organization, with which role), checked once per transaction; the role check functions call; and the trigger
-- functions every tenant table shares (timestamps, audit, live events). Function bodies are checked when they run, not
-- here (check_function_bodies is off for this file), so a helper may name a table defined in a later section.
-- ==================================================================================================================

-- Nothing is usable by default. Functions are EXECUTE-able by PUBLIC unless revoked, so revoke that for every
-- function the owner creates from now on and grant per function instead (tenancy invariant 5); nobody but the
-- owner may create objects in the public schema.
alter default privileges revoke all on functions from public;

revoke all on schema public from public;

-- The four schemas of DESIGN.md. app_public is what GraphQL exposes; app_hidden is readable by the API roles under
-- RLS but not exposed; app_private holds secrets and is reached only through security definer functions;
-- app_admin holds the functions an operator calls from psql.
drop schema if exists app_public cascade;

drop schema if exists app_hidden cascade;

drop schema if exists app_private cascade;

drop schema if exists app_admin cascade;

create schema app_public;

create schema app_hidden;

create schema app_private;

create schema app_admin;

comment on schema app_public is 'Everything the GraphQL API exposes. Every table has row-level security enabled and forced.';

comment on schema app_hidden is 'Readable by the API roles under row-level security, but not exposed in GraphQL.';

comment on schema app_private is 'Secrets and internals. No grants to API roles; reached only through security definer functions.';

comment on schema app_admin is 'Functions an operator calls from psql to administer tenants. Not exposed to API roles.';

grant usage on schema app_public, app_hidden to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- The authenticator itself (never an API role: it is NOINHERIT and every request switches away from it) may call
-- the few app_private functions granted to it below, for health checks and worker heartbeats.
grant usage on schema app_private to :DATABASE_AUTHENTICATOR;

-- The helpers the policies read: the cache when it answers for this transaction's inputs, the check otherwise.
create function app_public.current_org_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_org_id', true), '')::uuid
      else (app_hidden.enter_context()).org_id end
  $$;
grant execute on function app_public.current_org_id() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;
comment on function app_public.current_org_id() is
  E'@behavior -*\nThe organization of this request''s live session, or NULL when there is none.';

create function app_public.current_user_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_user_id', true), '')::uuid
      else (app_hidden.enter_context()).user_id end
  $$;
grant execute on function app_public.current_user_id() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;
comment on function app_public.current_user_id() is
  E'@behavior -*\nThe user of this request''s live session, or NULL when there is none.';

-- The clock of time windows that tests must cross (the refresh-token grace window): app_private.clock_now() is
-- now() plus an offset that tests move forward instead of sleeping. The offset is a row that the API roles cannot
-- change (only the owner, which operators and definer functions act as, and a superuser), never a setting: any role
-- can change a setting, and a holder of the authenticator's credential could reopen a window with it. It is zero
-- outside tests; moving it back after moving it forward leaves times written meanwhile in the future.
create table app_private.clock (
  single boolean primary key default true check (single),
  offset_by interval not null default '0' check (offset_by >= interval '0')
);

comment on table app_private.clock is 'How far the database''s window clock (app_private.clock_now()) runs ahead of now(): zero outside tests.';

insert into app_private.clock default values;

alter table app_private.clock enable row level security;

alter table app_private.clock force row level security;

create policy as_definer on app_private.clock to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create function app_private.clock_now() returns timestamptz
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select now() + coalesce((select c.offset_by from app_private.clock c), interval '0')
  $$;
comment on function app_private.clock_now() is
  'now() moved by app_private.clock''s offset: the time that windows tests must cross are measured against.';

-- created_at/updated_at are facts the database keeps, not values a client sends: this trigger overwrites both.
-- updated_at always moves forward, even when two updates land within the clock's resolution, so it can serve as
-- an optimistic-concurrency token.
create function app_private.tg__timestamps() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
  new.updated_at := case
    when tg_op = 'UPDATE' and old.updated_at >= now() then old.updated_at + interval '1 millisecond'
    else now()
  end;
  return new;
end;
$$;
comment on function app_private.tg__timestamps() is
  'Trigger (before insert or update): sets created_at on insert and moves updated_at forward on every write.';

-- Roles within an organization, weakest first, so `role >= 'admin'` reads as "admin or above".
create type app_public.membership_role as enum ('viewer', 'member', 'admin', 'owner');

comment on type app_public.membership_role is
  'viewer reads; member also writes content; admin also manages members below owner, templates and integrations; owner also manages the organization and its owners.';

-- A helper for settings that hold uuids: the server sets them from a verified token, but a pooled connection reads
-- '' once they are unset, and nothing here may raise on a malformed value.
create function app_private.uuid_setting(name text) returns uuid
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select case when s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then s::uuid end
    from (select current_setting(name, true) as s) as setting
  $$;
comment on function app_private.uuid_setting(text) is 'The uuid in setting `name`, or NULL when it is unset, empty or malformed.';

-- The definer functions that ask for the whole context read the same cache.
create function app_private.session_context(out org_id uuid, out user_id uuid, out role app_public.membership_role)
  language sql stable
  as $$ select app_public.current_org_id(), app_public.current_user_id(), app_public.current_member_role() $$;
comment on function app_private.session_context() is
  'The organization, user and role of this transaction''s verified context (app_hidden.enter_context, cached); NULLs without a session; raises LOGIN when the session is not live.';

create function app_public.current_member_role() returns app_public.membership_role
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_role', true), '')::app_public.membership_role
      else (app_hidden.enter_context()).role end
  $$;
comment on function app_public.current_member_role() is
  E'@behavior -*\nThe caller''s role in the current organization, read through the live session (never from the token).';
grant execute on function app_public.current_member_role() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- Operators, from psql as the owner (RLS is forced on the owner: these functions are the way in). Passwords set
-- here are hashed with pgcrypto's bcrypt, which the server verifies like its own hashes.
create extension if not exists pgcrypto with schema public;

-- GIN indexes cannot lead with a uuid column on their own; btree_gin lets the full-text index lead with org_id
-- (tenancy invariant 4), so one organization's search never scans another's postings.
create extension if not exists btree_gin with schema public;

-- Background work an organization asked for. A job row is the user-facing record (status, error, result); the
-- graphile-worker job that runs it is keyed by the same id and is never visible to the API.
create type app_public.job_kind as enum ('summarize', 'import', 'sync', 'publish');

create function app_private.job_context(out org_id uuid, out user_id uuid, out job_id uuid)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select j.org_id, j.requested_by, j.id
      from app_private.job_tokens t
      join app_public.jobs j on j.org_id = t.org_id and j.id = t.job_id and j.status in ('queued', 'running')
     where t.job_id = app_private.uuid_setting('quire.job_id')
       and t.token_hash = sha256(convert_to(coalesce(nullif(current_setting('quire.job_token', true), ''), '-'), 'UTF8'))
       and (t.run_id is null or t.run_id = app_private.uuid_setting('quire.job_run'))
  $$;
comment on function app_private.job_context() is
  'The job named by quire.job_id, its organization and requester, when quire.job_token is its token, quire.job_run the run that claimed it last (if any), and it is still queued or running; NULLs otherwise.';

create function app_public.current_job_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_job_id', true), '')::uuid
      else (app_hidden.enter_context()).job_id end
  $$;
comment on function app_public.current_job_id() is
  E'@behavior -*\nThe job the worker is running in this transaction (quire.job_id with a valid quire.job_token), or NULL.';
grant execute on function app_public.current_job_id() to :DATABASE_AUTHENTICATED;

-- The change's event, unnumbered and unannounced: no counter, no lock, no NOTIFY.
create function app_private.tg__live_event() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_row jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
  v_org_id uuid := (v_row ->> 'org_id')::uuid;
  v_id uuid := (v_row ->> 'id')::uuid;
begin
  -- A document deleted together with its organization has no outbox left to write to.
  if tg_op = 'DELETE' and not exists (select 1 from app_public.organizations o where o.id = v_org_id) then
    return null;
  end if;
  insert into app_public.live_events (org_id, seq, entity, op, entity_id, document_id)
    values (v_org_id, null, tg_argv[0], lower(tg_op), v_id,
            case tg_argv[0] when 'document' then v_id else (v_row ->> 'document_id')::uuid end);
  return null;
end;
$$;
comment on function app_private.tg__live_event() is 'Trigger: appends an unnumbered live event (ids only) to the organization''s outbox; app_private.number_live_events numbers and announces it after commit.';

-- The worker writes imported documents, runs and publications in a job's context, and only for jobs of the
-- matching kind: current_job_kind() is NULL outside a job.
create function app_public.current_job_kind() returns app_public.job_kind
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select j.kind from app_public.jobs j where j.id = app_public.current_job_id() $$;
comment on function app_public.current_job_kind() is E'@behavior -*\nThe kind of the job the worker is running in this transaction, or NULL.';
grant execute on function app_public.current_job_kind() to :DATABASE_AUTHENTICATED;

-- Row changes, as before, inserting the unsealed event directly (app_private.append_audit_event stays for the
-- security events, which are one per transaction at most).
create function app_private.tg__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  v_row jsonb := coalesce(v_new, v_old);
  v_org uuid := case when tg_table_name = 'organizations' then (v_row->>'id')::uuid else (v_row->>'org_id')::uuid end;
  v_changed text[];
  v_action text := lower(tg_op);
  v_actor record;
begin
  if tg_table_name <> 'organizations' and not exists (select 1 from app_public.organizations o where o.id = v_org) then
    return null;
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(array_agg(n.key order by n.key), '{}') into v_changed
      from jsonb_each(v_new) n where n.key <> 'updated_at' and n.value is distinct from v_old->n.key;
    if cardinality(v_changed) = 0 then
      return null;
    end if;
    select jsonb_object_agg(o.key, o.value) into v_old from jsonb_each(v_old) o where o.key = any(v_changed);
    select jsonb_object_agg(n.key, n.value) into v_new from jsonb_each(v_new) n where n.key = any(v_changed);
    if tg_table_name = 'memberships' and 'role' = any(v_changed) then
      v_action := 'role_change';
    elsif tg_table_name = 'integrations' and 'status' = any(v_changed) then
      v_action := case v_new->>'status' when 'connected' then 'integration_connect' when 'disconnected' then 'integration_disconnect' else v_action end;
    end if;
  else
    select coalesce(array_agg(r.key order by r.key), '{}') into v_changed from jsonb_each(v_row) r where r.value <> 'null'::jsonb;
    if tg_table_name = 'integrations' then
      v_action := case tg_op when 'INSERT' then 'integration_connect' else 'integration_disconnect' end;
    end if;
  end if;
  if tg_nargs > 0 then
    v_old := v_old - tg_argv;
    v_new := v_new - tg_argv;
  end if;
  v_actor := app_private.audit_actor();
  insert into app_public.audit_events (
    org_id, occurred_at, actor_user_id, actor_session_id, actor_job_id, db_role, action, table_name, record_id,
    changed_columns, old_values, new_values, details, request_id, client_ip
  ) values (
    v_org, now(), v_actor.user_id, v_actor.session_id, v_actor.job_id, session_user, v_action, tg_table_name,
    (v_row->>'id')::uuid, v_changed, v_old, v_new, '{}', v_actor.request_id, v_actor.client_ip
  );
  return null;
end;
$$;
comment on function app_private.tg__audit() is 'Records a row change as an unsealed audit event; the trigger arguments name columns whose values are left out.';

-- Role checks that hold until commit. A function that read the caller's role and only then locked what it changes
-- could act on a role that a concurrent change had already taken away (an admin demoted while changing a role
-- stayed admin). This reads the role from the caller's membership row locked FOR SHARE: a concurrent role change
-- or removal either waits for the caller's transaction, or commits first and is what the caller sees. Functions
-- call it before taking any other lock (memberships are always locked first, so the order cannot deadlock).
create function app_private.lock_member_role() returns app_public.membership_role
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select m.role from app_public.memberships m
     where m.org_id = app_public.current_org_id() and m.user_id = app_public.current_user_id()
       for share
  $$;
comment on function app_private.lock_member_role() is
  'The caller''s role, read from their membership row locked FOR SHARE until the transaction ends; NULL without one.';

-- The request context, checked once per transaction. Verifying it joins sessions, memberships, users and
-- organizations (or job_tokens and jobs for the worker); done in each policy it would cost that once per statement,
-- or several times where a policy reads more than one helper. So the check runs once per transaction: the first helper
-- that finds no verified context for the transaction's input settings calls app_hidden.enter_context(), which
-- verifies them exactly as before and caches what it found in transaction-local settings; every later call reads
-- the cache. The helpers are plain `language sql stable` expressions with no SET clause, so the planner inlines
-- them and `org_id = app_public.current_org_id()` in a policy becomes an expression over current_setting(),
-- evaluated once as an index condition.
--
-- The cache is keyed on its inputs: quire.ctx holds the input settings it was computed for (session and
-- organization claims, or the job id, token and run), so a transaction that presents other inputs (a test that
-- changes caller, a worker that takes on a job after doing its own work) is checked afresh, never served the
-- previous answer. Every value is set with is_local, so nothing outlives the transaction: a pooled connection
-- starts each request with an empty cache, and a revoked session, removed member or changed role takes effect on
-- the next request.
--
-- What stops a forged context. The API never runs SQL a caller wrote: every statement is PostGraphile's or
-- Quire's, with the settings taken from a verified token. Someone who connects with the authenticator's own
-- credential (a server secret) and types SQL could set quire.ctx and the cached values by hand and act as any
-- member of any organization; without the cache they would need only a session id, which every access token of
-- that session carries, so the credential is equivalent to every tenant's API access either way. What still holds
-- against them: they get only the API roles' grants (no app_private tables, no secrets: sealed credentials need
-- a key the database never sees), and everything they write is in the audit log. docs/architecture.md says so.

-- The input settings the cache answers for, as one string. Stable and SQL so it inlines into the helpers.
create function app_hidden.context_key() returns text
  language sql stable parallel safe
  as $$
    select concat_ws('/', current_setting('jwt.claims.session_id', true), current_setting('jwt.claims.org_id', true),
      current_setting('quire.job_id', true), current_setting('quire.job_token', true), current_setting('quire.job_run', true))
  $$;
comment on function app_hidden.context_key() is
  'The input settings of this transaction''s context (session and organization claims, job id, token and run) as one string: the key of the cached verified context.';
grant execute on function app_hidden.context_key() to :DATABASE_AUTHENTICATOR, :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- The one check per transaction. Declared stable (it only reads, and the settings it writes are a cache of what
-- it read) so that the helpers calling it stay inlinable.
create function app_hidden.enter_context(out org_id uuid, out user_id uuid, out role app_public.membership_role, out job_id uuid)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key text := app_hidden.context_key();
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
begin
  if v_session_id is not null then
    select s.org_id, s.user_id, m.role into org_id, user_id, role
      from app_private.sessions s
      join app_public.memberships m on m.org_id = s.org_id and m.user_id = s.user_id
      join app_public.users u on u.id = s.user_id and u.is_active
      join app_public.organizations o on o.id = s.org_id and o.is_active
     where s.id = v_session_id
       and s.org_id = app_private.uuid_setting('jwt.claims.org_id')
       and s.revoked_at is null
       and s.expires_at > now();
    if not found then
      raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
    end if;
  elsif nullif(current_setting('quire.job_id', true), '') is not null then
    select c.org_id, c.user_id, c.job_id into org_id, user_id, job_id from app_private.job_context() c;
  end if;
  perform set_config('quire.ctx_org_id', coalesce(org_id::text, ''), true),
          set_config('quire.ctx_user_id', coalesce(user_id::text, ''), true),
          set_config('quire.ctx_role', coalesce(role::text, ''), true),
          set_config('quire.ctx_job_id', coalesce(job_id::text, ''), true),
          set_config('quire.ctx', v_key, true);
end;
$$;
comment on function app_hidden.enter_context() is
  'Verifies this transaction''s input settings once (the live session named by jwt.claims.session_id, or the job named by quire.job_id with its token and run) and caches the organization, user, role and job in transaction-local settings. Raises LOGIN when the session is not live; NULLs without a session or job.';
grant execute on function app_hidden.enter_context() to :DATABASE_AUTHENTICATOR, :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- Roles: one check for "the caller is a member with at least this role".
--
-- Eight security definer functions opened with the same lines: read the caller's role (locked, so a concurrent demotion waits or has
-- happened), raise LOGIN without a membership and DNIED below the role the action needs. check_role is that test once;
-- require_role reads the role under lock and checks it, for functions whose first step it is. Functions that must
-- find their target first (so that a missing one is NTFND, as before) or that read the role under a stronger lock
-- (membership changes) call check_role on the role they hold. Each keeps its own messages; codes are unchanged.
-- (audit_log runs as the caller, who may not call app_private functions, so it keeps its own one-line check.)
create function app_private.check_role(
  role app_public.membership_role, min app_public.membership_role, denied text, signed_out text default 'Sign in first.'
) returns app_public.membership_role
  language plpgsql immutable
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if check_role.role is null and check_role.signed_out is not null then
    raise exception '%', check_role.signed_out using errcode = 'LOGIN';
  end if;
  if check_role.role is null or check_role.role < check_role.min then
    raise exception '%', check_role.denied using errcode = 'DNIED';
  end if;
  return check_role.role;
end;
$$;
comment on function app_private.check_role(app_public.membership_role, app_public.membership_role, text, text) is
  'Returns `role` when it is at least `min`. Raises LOGIN (`signed_out`) when `role` is NULL, or DNIED (`denied`) when it is lower, or NULL with `signed_out` NULL.';

create function app_private.require_role(min app_public.membership_role, denied text, signed_out text default 'Sign in first.')
  returns app_public.membership_role
  language sql volatile
  set search_path = pg_catalog, pg_temp
  as $$
    select app_private.check_role(app_private.lock_member_role(), require_role.min, require_role.denied, require_role.signed_out)
  $$;
comment on function app_private.require_role(app_public.membership_role, text, text) is
  'The caller''s role in the current organization, its membership row locked FOR SHARE until the transaction ends; LOGIN (`signed_out`) without one, DNIED (`denied`) below `min`.';

-- Keys of a tenant table lead with org_id: primary keys are (org_id, id), and every unique constraint and foreign
-- key between tenant tables includes org_id, the column a sharded PostgreSQL (Citus) distributes rows by. Ids are
-- still looked up alone (a function given an id, the worker given a job), so each such table keeps a plain index
-- on id, and its comment says `@primaryKey id` so the API goes on taking one id (`document(rowId:)`).
--
-- Some references outlive the row they point at (a job keeps its record when its document is deleted). A sharded
-- PostgreSQL refuses `on delete set null (column)` on a key that includes org_id, so such keys are plain (checked
-- at the end of the statement) and the referenced table's before-delete trigger clears them (`_800_clear_…`, after
-- the triggers that still read the references, such as a document's job cancelling): this function, with
-- the referencing table and column as arguments, sets the column to NULL in that organization's rows pointing at
-- the row being deleted. It runs as the owner, like the cascade it replaces: a member deleting a document clears
-- its jobs' reference though they cannot update jobs themselves.
create function app_private.tg__clear_references() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- Deleted with its organization: the referencing rows go too, in the same cascade.
  if exists (select 1 from app_public.organizations o where o.id = old.org_id) then
    execute format('update %s set %I = null where org_id = $1 and %I = $2', tg_argv[0]::regclass, tg_argv[1], tg_argv[1])
      using old.org_id, old.id;
  end if;
  return old;
end;
$$;
comment on function app_private.tg__clear_references() is
  'Before delete: sets column tg_argv[1] of table tg_argv[0] to NULL where it points at the deleted row (same organization).';

-- ==================================================================================================================
-- 2. Organizations
--
-- The tenant. Every tenant row carries org_id, and every policy compares it with the request's organization.
-- ==================================================================================================================

create type app_public.subscription_tier as enum ('free', 'basic', 'premium');

-- Organizations are the tenants. Rows are created by register and by operators; members read their own
-- organization, admins and owners edit its name and settings, only operators change the tier or deactivate it.
create table app_public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(name) between 1 and 200 and name = btrim(name)),
  slug text not null unique check (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$'),
  tier app_public.subscription_tier not null default 'free',
  settings jsonb not null default '{}'::jsonb,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on column app_public.organizations.slug is 'URL-safe unique name: lowercase letters, digits and inner hyphens, at most 63 characters.';
comment on column app_public.organizations.tier is 'Subscription tier; set by operators (app_admin.set_tier).';
comment on column app_public.organizations.settings is 'Organization preferences; only the keys checked by app_private.valid_org_settings are allowed.';
comment on column app_public.organizations.is_active is 'False once an operator deactivated the organization: its sessions stop working.';

create trigger _100_timestamps before insert or update on app_public.organizations
  for each row execute procedure app_private.tg__timestamps();

-- Settings are a small, known set of keys, so a typo or a client stuffing data in fails loudly.
create function app_private.valid_org_settings(settings jsonb) returns boolean
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select jsonb_typeof(settings) = 'object'
      and not exists (
        select 1 from jsonb_each(settings) as s(key, value)
        where not (
          (s.key in ('timezone', 'locale', 'summaryLanguage') and jsonb_typeof(s.value) = 'string'
            and char_length(s.value #>> '{}') between 1 and 64)
          or (s.key = 'defaultTemplateId' and jsonb_typeof(s.value) in ('string', 'null'))
        )
      )
  $$;
comment on function app_private.valid_org_settings(jsonb) is
  'Organization settings: an object with optional string keys timezone, locale, summaryLanguage (1–64 characters) and defaultTemplateId.';
-- A check constraint calls its function with the privileges of whoever writes the row.
grant execute on function app_private.valid_org_settings(jsonb) to :DATABASE_AUTHENTICATED;

alter table app_public.organizations add constraint organizations_settings_valid check (app_private.valid_org_settings(settings));

-- Row-level security, forced: the owner is held to it too, so an operator's stray `delete` in psql touches nothing.
-- Security definer functions run as the owner and must act across organizations (register creates one); they
-- declare `set quire.definer = 'on'`, and the owner's policy admits exactly that. They check the caller themselves.
-- Every other policy names the API role it is for: a policy for PUBLIC would also apply to the owner inside those
-- functions, and its call back into the session lookup would recurse. Policies call the helpers directly, never
-- in a sub-select (a sharded PostgreSQL refuses those): the helpers inline to expressions over settings, which the
-- planner evaluates once as an index condition.
alter table app_public.organizations enable row level security;

alter table app_public.organizations force row level security;

create policy as_definer on app_public.organizations to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own on app_public.organizations for select to :DATABASE_AUTHENTICATED using (id = app_public.current_org_id());

create policy update_as_admin on app_public.organizations for update to :DATABASE_AUTHENTICATED
  using (id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

grant select on app_public.organizations to :DATABASE_AUTHENTICATED;
grant update (name, settings) on app_public.organizations to :DATABASE_AUTHENTICATED;

comment on table app_public.organizations is E'@behavior -insert -delete\nA tenant: everything else belongs to exactly one organization.';

-- Slugs: generated from the organization's name when not given, made unique with a numeric suffix.
create function app_private.slugify(value text) returns text
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select coalesce(nullif(left(btrim(regexp_replace(lower(value), '[^a-z0-9]+', '-', 'g'), '-'), 50), ''), 'org')
  $$;
comment on function app_private.slugify(text) is 'A URL-safe slug for `value` (lowercase ASCII letters, digits, hyphens; at most 50 characters).';

create function app_private.unused_slug(base text) returns text
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  candidate text := base;
  n int := 1;
begin
  while exists (select 1 from app_public.organizations where slug = candidate) loop
    n := n + 1;
    candidate := rtrim(left(base, 50), '-') || '-' || n;
  end loop;
  return candidate;
end;
$$;
comment on function app_private.unused_slug(text) is 'The first of `base`, `base-2`, `base-3`, … that no organization uses yet.';

create function app_admin.create_organization(
  name text, owner_email text, owner_full_name text, owner_password text, slug text default null
) returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  insert into app_public.organizations (name, slug)
    values (btrim(create_organization.name),
            coalesce(create_organization.slug, app_private.unused_slug(app_private.slugify(create_organization.name))))
    returning * into v_org;
  perform app_admin.add_user(v_org.slug, owner_email, owner_full_name, 'owner', owner_password);
  return v_org;
end;
$$;
comment on function app_admin.create_organization(text, text, text, text, text) is
  E'Creates an organization with its first owner (an existing account, or a new one with the given password).\nExample: select * from app_admin.create_organization(''Acme'', ''ann@acme.example'', ''Ann Smith'', ''a long passphrase'');';

create function app_admin.set_tier(organization_slug text, tier app_public.subscription_tier) returns app_public.organizations
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_public.organizations set tier = set_tier.tier where slug = set_tier.organization_slug returning *
  $$;
comment on function app_admin.set_tier(text, app_public.subscription_tier) is
  E'Sets an organization''s subscription tier (free, basic, premium).\nExample: select * from app_admin.set_tier(''acme'', ''premium'');';

create function app_admin.set_organization_active(organization_slug text, active boolean) returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  update app_public.organizations set is_active = set_organization_active.active
   where slug = set_organization_active.organization_slug returning * into v_org;
  if not found then
    raise exception 'No organization with slug %.', set_organization_active.organization_slug using errcode = 'NTFND';
  end if;
  if not active then
    update app_private.sessions set revoked_at = now(), revoked_reason = 'organization deactivated'
     where org_id = v_org.id and revoked_at is null;
  end if;
  return v_org;
end;
$$;
comment on function app_admin.set_organization_active(text, boolean) is
  E'Deactivates (revoking its sessions) or reactivates an organization.\nExample: select * from app_admin.set_organization_active(''acme'', false);';

create function app_admin.list_organizations()
  returns table (slug text, name text, tier app_public.subscription_tier, is_active boolean, members bigint, owners bigint, created_at timestamptz)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.slug, o.name, o.tier, o.is_active,
           count(m.id), count(m.id) filter (where m.role = 'owner'), o.created_at
      from app_public.organizations o left join app_public.memberships m on m.org_id = o.id
     group by o.id order by o.created_at
  $$;
comment on function app_admin.list_organizations() is
  E'Every organization with its member and owner counts.\nExample: select * from app_admin.list_organizations();';

-- Every tenant table is audited (the catalog test checks it), except the live-events outbox, which only repeats
-- what the audited changes already say, and the log itself.
create trigger _900_audit after insert or update or delete on app_public.organizations for each row execute procedure app_private.tg__audit();

-- ==================================================================================================================
-- 3. Users
--
-- People, across organizations. Their password hashes live apart, in app_private, never readable by the API.
-- ==================================================================================================================

-- A person. Emails are stored trimmed and lowercased so uniqueness is case-insensitive; secrets live apart in
-- app_private.user_secrets.
create table app_public.users (
  id uuid primary key default gen_random_uuid(),
  email text not null unique check (
    email = lower(btrim(email)) and char_length(email) <= 320 and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'
  ),
  full_name text not null check (char_length(full_name) between 1 and 200 and full_name = btrim(full_name)),
  is_active boolean not null default true,
  last_login_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on column app_public.users.email is 'Trimmed and lowercased: unique regardless of case.';
comment on column app_public.users.is_active is 'False once an operator deactivated the user: their sessions stop working.';

create trigger _100_timestamps before insert or update on app_public.users
  for each row execute procedure app_private.tg__timestamps();

create table app_private.user_secrets (
  user_id uuid primary key references app_public.users on delete cascade,
  password_hash text not null check (password_hash ~ '^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$'),
  password_changed_at timestamptz not null default now()
);

comment on table app_private.user_secrets is 'bcrypt password hashes ($2a$/$2b$), readable only by the owner.';

alter table app_public.users enable row level security;

alter table app_public.users force row level security;

create policy as_definer on app_public.users to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy update_self on app_public.users for update to :DATABASE_AUTHENTICATED using (id = app_public.current_user_id());

grant select on app_public.users to :DATABASE_AUTHENTICATED;
grant update (full_name) on app_public.users to :DATABASE_AUTHENTICATED;

comment on table app_public.users is E'@behavior -insert -delete\nA person. One account per email address; memberships join people to organizations.';

-- ==================================================================================================================
-- 4. Memberships
--
-- A person's role in an organization. Role changes lock the organization's memberships, so two admins acting on each
-- other serialize; an organization always keeps an owner.
-- ==================================================================================================================

-- A person's role in an organization (tenancy invariants: org_id first, composite keys, org-leading indexes).
create table app_public.memberships (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  user_id uuid not null references app_public.users on delete cascade,
  role app_public.membership_role not null default 'member',
  last_used_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, user_id)
);

create index memberships_id_idx on app_public.memberships (id);
comment on constraint memberships_pkey on app_public.memberships is '@behavior -single -update -delete';

comment on column app_public.memberships.last_used_at is 'When the member last signed in to or switched to this organization.';

-- Sign-in looks memberships up by person; the one index on a tenant table that does not lead with org_id.
create index memberships_user_id_idx on app_public.memberships (user_id);

create trigger _100_timestamps before insert or update on app_public.memberships
  for each row execute procedure app_private.tg__timestamps();

-- A person sees themself and the members of their current organization. The membership test is a function, not a
-- sub-select in the policy (a distributed PostgreSQL refuses policies with sub-selects): one probe of the unique
-- (org_id, user_id) index per row the query reaches.
create function app_private.is_colleague(user_id uuid) returns boolean
  language sql stable
  as $$
    select exists (select 1 from app_public.memberships m
                    where m.org_id = app_public.current_org_id() and m.user_id = is_colleague.user_id)
  $$;
comment on function app_private.is_colleague(uuid) is
  'Whether the person is a member of the caller''s current organization (read under the caller''s own policies).';
grant execute on function app_private.is_colleague(uuid) to :DATABASE_AUTHENTICATED;

create policy select_self_and_colleagues on app_public.users for select to :DATABASE_AUTHENTICATED
  using (id = app_public.current_user_id() or app_private.is_colleague(id));

alter table app_public.memberships enable row level security;

alter table app_public.memberships force row level security;

create policy as_definer on app_public.memberships to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.memberships for select to :DATABASE_AUTHENTICATED using (org_id = app_public.current_org_id());

grant select on app_public.memberships to :DATABASE_AUTHENTICATED;

comment on table app_public.memberships is E'@primaryKey id\n@behavior -insert -update -delete\nA person''s role in an organization. Every organization keeps at least one owner.';

-- Managing members through the API. Writes to memberships go only through these functions, which enforce what RLS
-- alone cannot express: admins manage members below owner, only owners touch owners, and every organization keeps
-- at least one owner. Role changes and removals apply on the member's next request (sessions read the membership).
create function app_private.assert_keeps_an_owner(org_id uuid, losing_membership_id uuid) returns void
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  -- Lock the organization's owner rows so two concurrent demotions cannot both pass this check.
  perform 1 from app_public.memberships m where m.org_id = assert_keeps_an_owner.org_id and m.role = 'owner' for update;
  if not exists (
    select 1 from app_public.memberships m
     where m.org_id = assert_keeps_an_owner.org_id and m.role = 'owner' and m.id <> assert_keeps_an_owner.losing_membership_id
  ) then
    raise exception 'An organization must keep at least one owner.' using errcode = 'DNIED';
  end if;
end;
$$;
comment on function app_private.assert_keeps_an_owner(uuid, uuid) is
  'Raises DNIED when the organization would have no owner left without the given membership.';

create function app_public.change_member_role(membership_id uuid, role app_public.membership_role)
  returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_caller app_public.membership_role;
  v_target app_public.memberships;
begin
  v_caller := app_private.lock_org_memberships();
  select * into v_target from app_public.memberships m where m.id = change_member_role.membership_id and m.org_id = v_org_id;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  perform app_private.check_role(v_caller, 'admin', 'Only admins and owners manage members.');
  if v_caller < 'owner' and (v_target.role = 'owner' or change_member_role.role = 'owner') then
    raise exception 'Only owners can change an owner''s role or make someone an owner.' using errcode = 'DNIED';
  end if;
  if v_target.role = 'owner' and change_member_role.role <> 'owner' then
    perform app_private.assert_keeps_an_owner(v_target.org_id, v_target.id);
  end if;
  update app_public.memberships m set role = change_member_role.role where m.id = v_target.id returning * into v_target;
  return v_target;
end;
$$;
comment on function app_public.change_member_role(uuid, app_public.membership_role) is
  'Changes a member''s role. Admins manage members below owner; only owners change owners or make owners; the last owner cannot be demoted.';
grant execute on function app_public.change_member_role(uuid, app_public.membership_role) to :DATABASE_AUTHENTICATED;

create function app_public.remove_member(membership_id uuid) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_caller app_public.membership_role;
  v_target app_public.memberships;
begin
  v_caller := app_private.lock_org_memberships();
  select * into v_target from app_public.memberships m where m.id = remove_member.membership_id and m.org_id = v_org_id;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  -- Anyone may leave; removing someone else takes an admin, and removing an owner takes an owner.
  if v_target.user_id <> app_public.current_user_id() then
    perform app_private.check_role(v_caller, 'admin', 'Only admins and owners remove members.');
    if v_target.role = 'owner' and v_caller < 'owner' then
      raise exception 'Only owners can remove an owner.' using errcode = 'DNIED';
    end if;
  end if;
  if v_target.role = 'owner' then
    perform app_private.assert_keeps_an_owner(v_target.org_id, v_target.id);
  end if;
  delete from app_public.memberships m where m.id = v_target.id;
  update app_private.sessions s set revoked_at = now(), revoked_reason = 'removed from organization'
   where s.user_id = v_target.user_id and s.org_id = v_target.org_id and s.revoked_at is null;
  return v_target;
end;
$$;
comment on function app_public.remove_member(uuid) is
  'Removes a member (or lets a member leave) and ends their sessions in this organization; never the last owner.';
grant execute on function app_public.remove_member(uuid) to :DATABASE_AUTHENTICATED;

create function app_admin.add_user(
  organization_slug text, email text, full_name text, role app_public.membership_role default 'member', password text default null
) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_user_id uuid;
  v_membership app_public.memberships;
begin
  select id into v_org_id from app_public.organizations where slug = add_user.organization_slug;
  if not found then
    raise exception 'No organization with slug %.', add_user.organization_slug using errcode = 'NTFND';
  end if;
  select id into v_user_id from app_public.users where users.email = lower(btrim(add_user.email));
  if not found then
    if add_user.password is null or length(add_user.password) < 8 then
      raise exception 'A new account needs a password of at least 8 characters.' using errcode = 'BADIN';
    end if;
    insert into app_public.users (email, full_name) values (lower(btrim(add_user.email)), btrim(add_user.full_name))
      returning id into v_user_id;
    insert into app_private.user_secrets (user_id, password_hash) values (v_user_id, public.crypt(add_user.password, public.gen_salt('bf', 12)));
  end if;
  insert into app_public.memberships (org_id, user_id, role) values (v_org_id, v_user_id, add_user.role)
    on conflict (org_id, user_id) do update set role = excluded.role
    returning * into v_membership;
  return v_membership;
end;
$$;
comment on function app_admin.add_user(text, text, text, app_public.membership_role, text) is
  E'Adds a person to an organization with a role (creating the account, with a bcrypt-hashed password, if new); an existing member gets the role.\nExample: select * from app_admin.add_user(''acme'', ''bob@acme.example'', ''Bob'', ''admin'', ''another passphrase'');';

create trigger _900_audit after insert or update or delete on app_public.memberships for each row execute procedure app_private.tg__audit();

-- Membership changes lock every membership of the organization, in id order, before reading any role: two
-- concurrent changes (an owner demoting an admin who is changing a role) serialize, the second sees the first's
-- outcome, and two admins acting on each other cannot deadlock.
create function app_private.lock_org_memberships() returns app_public.membership_role
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_role app_public.membership_role;
begin
  if v_org_id is not null then
    perform 1 from app_public.memberships m where m.org_id = v_org_id order by m.id for update;
    select m.role into v_role from app_public.memberships m where m.org_id = v_org_id and m.user_id = app_public.current_user_id();
  end if;
  if v_role is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  return v_role;
end;
$$;
comment on function app_private.lock_org_memberships() is
  'Locks the caller''s organization''s memberships (id order) and returns the caller''s role as it is once they are locked; LOGIN without one.';

-- ==================================================================================================================
-- 5. Sessions and sign-in
--
-- Sign-in: sessions with rotating refresh tokens, login attempts and the throttle that slows guessing. A session ended
-- here ends the member's live subscriptions too.
-- ==================================================================================================================

-- One row per sign-in. The refresh token is never stored: only the SHA-256 of the current one and of the one it
-- replaced (for the grace window), and the generation it has reached.
create table app_private.sessions (
  id uuid not null default gen_random_uuid(),
  user_id uuid not null references app_public.users on delete cascade,
  org_id uuid not null references app_public.organizations on delete cascade,
  refresh_generation int not null default 1,
  refresh_token_hash bytea not null check (length(refresh_token_hash) = 32),
  previous_token_hash bytea check (length(previous_token_hash) = 32),
  rotated_at timestamptz,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  revoked_reason text,
  primary key (org_id, id)
);

-- A token names its session by id; sign-in code looks it up by that alone.
create index sessions_id_idx on app_private.sessions (id);

comment on table app_private.sessions is 'One per sign-in: the refresh-token family, its organization, and whether it is still live.';

create index sessions_user_id_idx on app_private.sessions (user_id) where revoked_at is null;

-- Sign-in attempts, for throttling brute force across every server instance.
create table app_private.login_attempts (
  id bigint generated always as identity primary key,
  email text not null,
  ip inet,
  succeeded boolean not null,
  attempted_at timestamptz not null default now()
);

create index login_attempts_email_idx on app_private.login_attempts (email, attempted_at);
create index login_attempts_ip_idx on app_private.login_attempts (ip, attempted_at) where ip is not null;

comment on table app_private.login_attempts is 'Every sign-in attempt (email as typed, normalized), for throttling. Old rows may be deleted.';

create function app_private.record_login_failure(email text, ip inet) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_private.login_attempts (email, ip, succeeded) values (lower(btrim(record_login_failure.email)), record_login_failure.ip, false);
    select coalesce(max(ceil(extract(epoch from t.window_start + interval '15 minutes' - now()))), 0)::int
      from app_private.login_throttle t
     where t.key = any (app_private.login_throttle_keys(record_login_failure.email, record_login_failure.ip))
       and t.attempts >= app_private.login_throttle_limit(t.key);
  $$;
grant execute on function app_private.record_login_failure(text, inet) to :DATABASE_AUTHENTICATOR;
comment on function app_private.record_login_failure(text, inet) is
  'Records a failed sign-in (its slot was taken by begin_login); returns the seconds the client must now wait (0 if none).';

-- What opening a session yields: the server signs the access token from it.
create type app_private.session_grant as (session_id uuid, user_id uuid, org_id uuid, role app_public.membership_role);

-- A new session for `user_id` in the organization `organization_slug` names, or, without one, the organization
-- they used most recently. The server chose the session id (its refresh token is derived from it).
create function app_private.open_session(
  user_id uuid, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_membership app_public.memberships;
begin
  select m.* into v_membership
    from app_public.memberships m
    join app_public.organizations o on o.id = m.org_id and o.is_active
   where m.user_id = open_session.user_id
     and (open_session.organization_slug is null or o.slug = open_session.organization_slug)
   order by m.last_used_at desc nulls last, m.created_at desc
   limit 1;
  if not found then
    raise exception 'You are not a member of that organization.' using errcode = 'NTFND';
  end if;
  update app_public.memberships set last_used_at = now() where id = v_membership.id;
  insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at)
    values (open_session.session_id, open_session.user_id, v_membership.org_id, open_session.refresh_token_hash, open_session.expires_at);
  return (open_session.session_id, open_session.user_id, v_membership.org_id, v_membership.role)::app_private.session_grant;
end;
$$;
comment on function app_private.open_session(uuid, text, uuid, bytea, timestamptz) is
  'Starts a session for a member in the named (or most recently used) active organization; NTFND if there is none.';

create function app_private.complete_login(
  user_id uuid, email text, ip inet, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_keys text[] := app_private.login_throttle_keys(complete_login.email, complete_login.ip);
begin
  insert into app_private.login_attempts (email, ip, succeeded) values (lower(btrim(complete_login.email)), complete_login.ip, true);
  -- The account's budgets start afresh; the address gets this attempt's slot back.
  update app_private.login_throttle t
     set attempts = case when t.key = v_keys[2] then greatest(t.attempts - 1, 0) else 0 end
   where t.key = any (v_keys);
  update app_public.users set last_login_at = now() where id = complete_login.user_id;
  return app_private.open_session(
    complete_login.user_id, complete_login.organization_slug, complete_login.session_id,
    complete_login.refresh_token_hash, complete_login.expires_at);
end;
$$;
comment on function app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz) is
  'Sign-in step 2, once the server verified the password: records the success and opens a session.';
grant execute on function app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- Registration: a new organization, its owner and a first session, in one transaction.
create function app_private.register(
  organization_name text, email text, full_name text, password_hash text,
  session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_email text := lower(btrim(register.email));
  v_user_id uuid;
  v_org_id uuid;
begin
  if exists (select 1 from app_public.users u where u.email = v_email) then
    raise exception 'An account with this email address already exists; sign in instead.' using errcode = 'TAKEN';
  end if;
  insert into app_public.organizations (name, slug)
    values (btrim(organization_name), app_private.unused_slug(app_private.slugify(organization_name)))
    returning id into v_org_id;
  insert into app_public.users (email, full_name, last_login_at) values (v_email, btrim(register.full_name), now())
    returning id into v_user_id;
  insert into app_private.user_secrets (user_id, password_hash) values (v_user_id, register.password_hash);
  insert into app_public.memberships (org_id, user_id, role, last_used_at) values (v_org_id, v_user_id, 'owner', now());
  insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at)
    values (register.session_id, v_user_id, v_org_id, register.refresh_token_hash, register.expires_at);
  return (register.session_id, v_user_id, v_org_id, 'owner')::app_private.session_grant;
end;
$$;
comment on function app_private.register(text, text, text, text, uuid, bytea, timestamptz) is
  'Creates an organization, its owner (with a bcrypt hash computed by the server) and a first session. TAKEN if the email is in use.';
grant execute on function app_private.register(text, text, text, text, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- Refresh-token rotation with reuse detection. Presenting the current token moves the session to the next
-- generation. Presenting the one just replaced, within the grace window, is a concurrent refresh and gets the
-- current generation back (the same new token). Presenting any older one means a token was stolen: the whole
-- session is revoked. Its times are on the window clock (app_private.clock_now()), so tests cross the grace window
-- without waiting for it.
create function app_private.refresh_session(
  session_id uuid, presented_generation int, presented_hash bytea, next_hash bytea, grace_seconds int
) returns table (outcome text, user_id uuid, org_id uuid, role app_public.membership_role, generation int, expires_at timestamptz)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  s app_private.sessions;
  v_role app_public.membership_role;
begin
  select * into s from app_private.sessions where id = refresh_session.session_id for update;
  if not found or s.revoked_at is not null or s.expires_at <= app_private.clock_now() then
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  select m.role into v_role
    from app_public.memberships m
    join app_public.users u on u.id = m.user_id and u.is_active
    join app_public.organizations o on o.id = m.org_id and o.is_active
   where m.org_id = s.org_id and m.user_id = s.user_id;
  if v_role is null then
    update app_private.sessions set revoked_at = app_private.clock_now(), revoked_reason = 'membership ended' where id = s.id;
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  if refresh_session.presented_generation = s.refresh_generation and refresh_session.presented_hash = s.refresh_token_hash then
    update app_private.sessions
       set refresh_generation = s.refresh_generation + 1, previous_token_hash = s.refresh_token_hash,
           refresh_token_hash = refresh_session.next_hash, rotated_at = app_private.clock_now()
     where id = s.id;
    return query select 'rotated', s.user_id, s.org_id, v_role, s.refresh_generation + 1, s.expires_at;
  elsif refresh_session.presented_generation = s.refresh_generation - 1 and refresh_session.presented_hash = s.previous_token_hash
        and s.rotated_at > app_private.clock_now() - make_interval(secs => refresh_session.grace_seconds) then
    return query select 'grace', s.user_id, s.org_id, v_role, s.refresh_generation, s.expires_at;
  elsif refresh_session.presented_generation < s.refresh_generation then
    update app_private.sessions set revoked_at = app_private.clock_now(), revoked_reason = 'refresh token reuse' where id = s.id;
    return query select 'reused', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  else
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  end if;
end;
$$;
comment on function app_private.refresh_session(uuid, int, bytea, bytea, int) is
  'Rotates a refresh token: rotated | grace (concurrent refresh: same new generation) | reused (session revoked) | invalid.';
grant execute on function app_private.refresh_session(uuid, int, bytea, bytea, int) to :DATABASE_AUTHENTICATOR;

create function app_private.revoke_session(session_id uuid, reason text) returns boolean
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with revoked as (
      update app_private.sessions set revoked_at = now(), revoked_reason = revoke_session.reason
       where id = revoke_session.session_id and revoked_at is null returning 1
    ) select exists (select 1 from revoked)
  $$;
comment on function app_private.revoke_session(uuid, text) is 'Ends one session (logout); true if it was live.';
grant execute on function app_private.revoke_session(uuid, text) to :DATABASE_AUTHENTICATOR;

create function app_private.revoke_user_sessions(user_id uuid, reason text, except_session_id uuid default null) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with revoked as (
      update app_private.sessions set revoked_at = now(), revoked_reason = revoke_user_sessions.reason
       where sessions.user_id = revoke_user_sessions.user_id and revoked_at is null
         and id is distinct from revoke_user_sessions.except_session_id
      returning 1
    ) select count(*)::int from revoked
  $$;
comment on function app_private.revoke_user_sessions(uuid, text, uuid) is
  'Ends every live session of a user (logout everywhere), optionally sparing one; returns how many ended.';
grant execute on function app_private.revoke_user_sessions(uuid, text, uuid) to :DATABASE_AUTHENTICATOR;

-- Switching organization: a new session in another organization the caller belongs to, opened only from a live
-- session of the same user. The current session stays live (another tab may still use it).
create function app_private.switch_organization(
  current_session_id uuid, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select s.user_id into v_user_id
    from app_private.sessions s join app_public.users u on u.id = s.user_id and u.is_active
   where s.id = switch_organization.current_session_id and s.revoked_at is null and s.expires_at > now()
     for share of s, u;
  if not found then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  return app_private.open_session(
    v_user_id, switch_organization.organization_slug, switch_organization.session_id,
    switch_organization.refresh_token_hash, switch_organization.expires_at);
end;
$$;
comment on function app_private.switch_organization(uuid, text, uuid, bytea, timestamptz) is
  'Opens a session in another organization of the same user, from a live session; LOGIN if it is not live, NTFND if not a member.';
grant execute on function app_private.switch_organization(uuid, text, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

create function app_admin.revoke_user_sessions(email text) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select app_private.revoke_user_sessions(
      (select id from app_public.users where users.email = lower(btrim(revoke_user_sessions.email))), 'revoked by operator')
  $$;
comment on function app_admin.revoke_user_sessions(text) is
  E'Ends every session of a person (e.g. a lost laptop); returns how many ended.\nExample: select app_admin.revoke_user_sessions(''bob@acme.example'');';

-- Session functions: the session is locked FOR SHARE while it is used, so a concurrent logout, password reset or
-- removal either waits or has ended it (then LOGIN), never races past the check.
create function app_private.change_password(session_id uuid, password_hash text) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_user_id uuid;
begin
  select x.user_id into v_user_id from app_private.sessions x
   where x.id = change_password.session_id and x.revoked_at is null and x.expires_at > now()
     for share;
  if v_user_id is null then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  update app_private.user_secrets s set password_hash = change_password.password_hash, password_changed_at = now()
   where s.user_id = v_user_id;
  return app_private.revoke_user_sessions(v_user_id, 'password changed', change_password.session_id);
end;
$$;
comment on function app_private.change_password(uuid, text) is
  'Sets a new bcrypt hash for the person of a live session and ends their other sessions; returns how many ended.';
grant execute on function app_private.change_password(uuid, text) to :DATABASE_AUTHENTICATOR;

-- Logout must also close the session's open WebSocket connections, on whichever server instance holds them:
-- every instance LISTENs on quire_session_ended. The payload is the session id only (anyone may LISTEN).
create function app_private.tg_sessions__notify_ended() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('quire_session_ended', old.id::text);
  elsif old.revoked_at is null and new.revoked_at is not null then
    perform pg_notify('quire_session_ended', new.id::text);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_sessions__notify_ended() is
  'Trigger: NOTIFY quire_session_ended with the session id when a session is revoked or deleted.';

create trigger _900_notify_ended after update of revoked_at or delete on app_private.sessions
  for each row execute procedure app_private.tg_sessions__notify_ended();

-- Session events: opening a session is a sign-in (password, registration, invitation or organization switch);
-- its end says why. Written with the session's own user, whatever the request settings say.
create function app_private.tg_sessions__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_action text;
begin
  if tg_op = 'INSERT' then
    v_action := 'sign_in';
  elsif old.revoked_at is null and new.revoked_at is not null then
    v_action := case
      when new.revoked_reason in ('logout', 'logout everywhere') then 'logout'
      when new.revoked_reason = 'refresh token reuse' then 'refresh_reuse'
      else 'session_revoked' end;
  else
    return null;
  end if;
  perform app_private.append_audit_event(
    new.org_id, v_action, null, null, '{}', null, null,
    case when tg_op = 'UPDATE' then jsonb_build_object('reason', new.revoked_reason) else '{}' end,
    new.user_id, new.id, null, v_actor.request_id, v_actor.client_ip);
  return null;
end;
$$;
comment on function app_private.tg_sessions__audit() is 'Records sign-ins (new sessions) and session ends (logout, refresh-token reuse, revocation) as audit events.';

create trigger _900_audit after insert or update of revoked_at on app_private.sessions
  for each row execute procedure app_private.tg_sessions__audit();

-- Failed sign-ins: recorded in every organization of the account the address names (its admins see attempts on
-- their members), or in the nil chain when no account has that address. login_attempts rows are committed on
-- their own, so the failure is recorded although the sign-in itself fails.
create function app_private.tg_login_attempts__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_request_id text := (app_private.audit_actor()).request_id;
  v_user_id uuid;
  v_org_id uuid;
  v_recorded boolean := false;
begin
  select u.id into v_user_id from app_public.users u where u.email = new.email;
  for v_org_id in select m.org_id from app_public.memberships m where m.user_id = v_user_id order by m.org_id loop
    perform app_private.append_audit_event(
      v_org_id, 'sign_in_failed', null, null, '{}', null, null, jsonb_build_object('user_id', v_user_id),
      null, null, null, v_request_id, new.ip);
    v_recorded := true;
  end loop;
  if not v_recorded then
    perform app_private.append_audit_event(
      '00000000-0000-0000-0000-000000000000', 'sign_in_failed', null, null, '{}', null, null,
      jsonb_build_object('email', new.email), null, null, null, v_request_id, new.ip);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_login_attempts__audit() is 'Records a failed sign-in in the organizations of the account it targeted (or the nil chain).';

create trigger _900_audit after insert on app_private.login_attempts
  for each row when (not new.succeeded) execute procedure app_private.tg_login_attempts__audit();

-- Live updates survive a lost LISTEN connection. Notifications sent while a server's connection is down are gone, so
-- on reconnection the server reads what the database kept instead: live events from the outbox (already there), and
-- which of the sessions its WebSockets belong to have ended meanwhile (below), so a logout in the gap still closes
-- them. The sessions table is that outbox: revoked_at, deletion, expiry and membership say whether one is live.
create function app_private.ended_sessions(session_ids uuid[]) returns setof uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select id
      from unnest(ended_sessions.session_ids) as given(id)
     where not exists (
       select 1
         from app_private.sessions s
         join app_public.memberships m on m.org_id = s.org_id and m.user_id = s.user_id
         join app_public.users u on u.id = s.user_id and u.is_active
         join app_public.organizations o on o.id = s.org_id and o.is_active
        where s.id = given.id
          and s.revoked_at is null
          and s.expires_at > now())
  $$;
comment on function app_private.ended_sessions(uuid[]) is
  'Of the given session ids, those no longer live (revoked, deleted, expired, or their membership, user or organization gone); the same test as session_context. For servers re-checking their WebSockets after missing quire_session_ended notifications.';
grant execute on function app_private.ended_sessions(uuid[]) to :DATABASE_AUTHENTICATOR;

-- Sign-in throttling, counted before the password is verified. Each attempt takes a slot, atomically (the counter
-- rows are locked in key order), from three budgets per 15-minute window: 5 per account from one address, 20 per
-- account from anywhere, and 100 per address whatever the account. An attempt over any budget is refused without a
-- verification, so no parallelism buys more than 5 (one address) or 20 (many) guesses at one account. A success
-- frees the account's budgets and gives the address its slot back: people who sign in correctly behind one shared
-- address (an office, a NAT) never use up its budget; only failures do, and one address then needs 100 failures
-- to shut out the others. The window starts at its first attempt.
create table app_private.login_throttle (
  key text primary key,
  window_start timestamptz not null,
  attempts int not null
);

comment on table app_private.login_throttle is
  'Sign-in attempts counted in the current 15-minute window, per account from an address (pair:…), account (account:…) and address (address:…).';

alter table app_private.login_throttle enable row level security;

alter table app_private.login_throttle force row level security;

create policy as_definer on app_private.login_throttle to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create function app_private.login_throttle_keys(email text, ip inet) returns text[]
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select array[
      'account:' || lower(btrim(email)),
      'address:' || coalesce(host(ip), '-'),
      'pair:' || coalesce(host(ip), '-') || ':' || lower(btrim(email))
    ]
  $$;
comment on function app_private.login_throttle_keys(text, inet) is 'The throttle keys a sign-in attempt counts against.';

create function app_private.login_throttle_limit(key text) returns int
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select case split_part(key, ':', 1) when 'pair' then 5 when 'account' then 20 else 100 end $$;
comment on function app_private.login_throttle_limit(text) is 'Attempts a throttle key allows per window: 5 per account and address, 20 per account, 100 per address.';

-- Sign-in step 1: takes a slot, or answers how long to wait. With a slot, the active user with `email` (if any)
-- and the hash to verify; the server verifies it off the database connection.
create function app_private.begin_login(email text, ip inet)
  returns table (user_id uuid, password_hash text, retry_after_seconds int)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_keys text[] := app_private.login_throttle_keys(begin_login.email, begin_login.ip);
  v_wait int;
begin
  insert into app_private.login_throttle (key, window_start, attempts)
    select k, now(), 0 from unnest(v_keys) k
    on conflict on constraint login_throttle_pkey do nothing;
  perform 1 from app_private.login_throttle t where t.key = any (v_keys) order by t.key for update;
  update app_private.login_throttle t set window_start = now(), attempts = 0
   where t.key = any (v_keys) and t.window_start <= now() - interval '15 minutes';
  select max(ceil(extract(epoch from t.window_start + interval '15 minutes' - now())))::int into v_wait
    from app_private.login_throttle t
   where t.key = any (v_keys) and t.attempts >= app_private.login_throttle_limit(t.key);
  if v_wait is not null then
    return query select null::uuid, null::text, greatest(v_wait, 1);
    return;
  end if;
  update app_private.login_throttle t set attempts = t.attempts + 1 where t.key = any (v_keys);
  if random() < 0.001 then
    delete from app_private.login_throttle t where t.window_start < now() - interval '1 hour';
  end if;
  return query
    select u.id, s.password_hash, 0
      from (select 1) as one
      left join app_public.users u on u.email = lower(btrim(begin_login.email)) and u.is_active
      left join app_private.user_secrets s on s.user_id = u.id;
end;
$$;
comment on function app_private.begin_login(text, inet) is
  'Sign-in step 1: counts the attempt (before any verification) and answers the seconds to wait (0 to proceed) and, when allowed, the active user with `email` and their password hash.';
grant execute on function app_private.begin_login(text, inet) to :DATABASE_AUTHENTICATOR;

-- Every other place a password is verified counts against the same budgets first: changing the password from a
-- session (a stolen access token must not buy unlimited guesses at the password behind it) and joining an
-- organization with an existing account through an invitation link (which calls begin_login itself).
create function app_private.begin_password_check(session_id uuid, ip inet)
  returns table (email text, password_hash text, retry_after_seconds int)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_email text;
begin
  select u.email into v_email from app_private.sessions x join app_public.users u on u.id = x.user_id
   where x.id = begin_password_check.session_id and x.revoked_at is null and x.expires_at > now();
  if v_email is null then
    return;
  end if;
  return query select v_email, b.password_hash, b.retry_after_seconds from app_private.begin_login(v_email, begin_password_check.ip) b;
end;
$$;
comment on function app_private.begin_password_check(uuid, inet) is
  'changePassword, step 1: counts the check against the sign-in budgets of the session''s person and answers their email, hash and the seconds to wait (0 to proceed); no row when the session is not live.';
grant execute on function app_private.begin_password_check(uuid, inet) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- 6. Invitations, password resets and their mail
--
-- Invitations and password resets: single-use tokens, stored as digests only, and the outbox the worker sends their
-- mail from (a message holds references, never a token: the link is minted when it is sent).
-- ==================================================================================================================

-- Password resets: a one-time token (stored as its SHA-256) valid for an hour. Asking never reveals whether the
-- email has an account, and asking often does not flood an inbox (at most 3 live tokens per person).
create table app_private.password_reset_tokens (
  token_hash bytea primary key check (length(token_hash) = 32),
  user_id uuid not null references app_public.users on delete cascade,
  expires_at timestamptz not null,
  used_at timestamptz,
  created_at timestamptz not null default now()
);

create index password_reset_tokens_user_id_idx on app_private.password_reset_tokens (user_id);

comment on table app_private.password_reset_tokens is 'One-time password-reset tokens (SHA-256 digests), valid for an hour.';

create function app_private.reset_password(token_hash bytea, password_hash text) returns uuid
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  update app_private.password_reset_tokens t set used_at = now()
   where t.token_hash = reset_password.token_hash and t.used_at is null and t.expires_at > now()
  returning t.user_id into v_user_id;
  if v_user_id is null then
    raise exception 'This password reset link is invalid or has expired.' using errcode = 'NTFND';
  end if;
  update app_private.user_secrets s set password_hash = reset_password.password_hash, password_changed_at = now()
   where s.user_id = v_user_id;
  -- Every other token of the person dies with this one, and so does every session.
  update app_private.password_reset_tokens t set used_at = now() where t.user_id = v_user_id and t.used_at is null;
  perform app_private.revoke_user_sessions(v_user_id, 'password reset');
  return v_user_id;
end;
$$;
comment on function app_private.reset_password(bytea, text) is
  'Spends a reset token: sets the new bcrypt hash and ends every session of the person. NTFND for an unknown, used or expired token.';
grant execute on function app_private.reset_password(bytea, text) to :DATABASE_AUTHENTICATOR;

-- Invitations: an admin invites an email with a role; the invitee accepts with a one-time token, creating an
-- account or joining with an existing one. The token's digest lives apart, in app_private.
create table app_public.invitations (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  email text not null check (
    email = lower(btrim(email)) and char_length(email) <= 320 and email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'
  ),
  role app_public.membership_role not null default 'member',
  invited_by uuid references app_public.users on delete set null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id)
);

create index invitations_id_idx on app_public.invitations (id);
comment on constraint invitations_pkey on app_public.invitations is '@behavior -single -update -delete';

create unique index invitations_pending_email_idx on app_public.invitations (org_id, email) where accepted_at is null;

create trigger _100_timestamps before insert or update on app_public.invitations
  for each row execute procedure app_private.tg__timestamps();

comment on table app_public.invitations is
  E'@primaryKey id\n@behavior -insert -update\nAn invitation to join the organization with a role; admins and owners see and delete them.';

create table app_private.invitation_tokens (
  org_id uuid not null,
  invitation_id uuid not null,
  token_hash bytea not null check (length(token_hash) = 32),
  primary key (org_id, invitation_id),
  foreign key (org_id, invitation_id) references app_public.invitations (org_id, id) on delete cascade
);

-- The invitee is not signed in: the token alone finds the invitation. A SHA-256 of 32 random bytes does not
-- collide, so the index need not be unique (a unique index without org_id would not shard).
create index invitation_tokens_token_hash_idx on app_private.invitation_tokens (token_hash);

comment on table app_private.invitation_tokens is 'SHA-256 digests of invitation tokens.';

alter table app_public.invitations enable row level security;

alter table app_public.invitations force row level security;

create policy as_definer on app_public.invitations to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_as_admin on app_public.invitations for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

create policy delete_as_admin on app_public.invitations for delete to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin'
         and (role < 'owner' or app_public.current_member_role() = 'owner'));

grant select, delete on app_public.invitations to :DATABASE_AUTHENTICATED;

-- Accepting runs before the invitee is signed in: the authenticator looks the invitation up, the server checks the
-- password (of the existing account, or a new one), then the acceptance creates what is missing and a session.
create function app_private.invitation_by_token(token_hash bytea)
  returns table (invitation_id uuid, email text, user_id uuid, password_hash text)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select i.id, i.email, u.id, s.password_hash
      from app_private.invitation_tokens t
      join app_public.invitations i on i.org_id = t.org_id and i.id = t.invitation_id and i.accepted_at is null and i.expires_at > now()
      join app_public.organizations o on o.id = i.org_id and o.is_active
      left join app_public.users u on u.email = i.email and u.is_active
      left join app_private.user_secrets s on s.user_id = u.id
     where t.token_hash = invitation_by_token.token_hash
  $$;
comment on function app_private.invitation_by_token(bytea) is
  'The pending, unexpired invitation a token names, with the existing active account of its email (if any).';
grant execute on function app_private.invitation_by_token(bytea) to :DATABASE_AUTHENTICATOR;

-- Accepting: the invitation's organization must still be active (invitation_by_token checked it, outside this
-- transaction).
create function app_private.accept_invitation(
  token_hash bytea, full_name text, password_hash text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_invitation app_public.invitations;
  v_user_id uuid;
  v_slug text;
begin
  select i.* into v_invitation
    from app_private.invitation_tokens t
    join app_public.invitations i on i.org_id = t.org_id and i.id = t.invitation_id
    join app_public.organizations o on o.id = i.org_id and o.is_active
   where t.token_hash = accept_invitation.token_hash and i.accepted_at is null and i.expires_at > now()
   for update of i;
  if not found then
    raise exception 'This invitation is invalid or has expired.' using errcode = 'NTFND';
  end if;
  select u.id into v_user_id from app_public.users u where u.email = v_invitation.email;
  if v_user_id is null then
    if accept_invitation.password_hash is null then
      raise exception 'Choose a password to create your account.' using errcode = 'BADIN';
    end if;
    insert into app_public.users (email, full_name) values (v_invitation.email, btrim(accept_invitation.full_name))
      returning id into v_user_id;
    insert into app_private.user_secrets (user_id, password_hash) values (v_user_id, accept_invitation.password_hash);
  end if;
  -- Joining never lowers a role the person already has.
  insert into app_public.memberships (org_id, user_id, role) values (v_invitation.org_id, v_user_id, v_invitation.role)
    on conflict (org_id, user_id) do update set role = greatest(memberships.role, excluded.role);
  update app_public.invitations set accepted_at = now() where id = v_invitation.id;
  delete from app_private.invitation_tokens where org_id = v_invitation.org_id and invitation_id = v_invitation.id;
  update app_public.users set last_login_at = now() where id = v_user_id;
  select slug into v_slug from app_public.organizations where id = v_invitation.org_id;
  return app_private.open_session(v_user_id, v_slug, accept_invitation.session_id, accept_invitation.refresh_token_hash, accept_invitation.expires_at);
end;
$$;
comment on function app_private.accept_invitation(bytea, text, text, uuid, bytea, timestamptz) is
  'Accepts an invitation (creating the account when the email has none) and opens a session in its organization.';
grant execute on function app_private.accept_invitation(bytea, text, text, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- Operators get a reset link for a person without mail (e.g. in development), the way an admin gets an
-- invitation link.
create function app_admin.password_reset_link(email text, app_url text default 'http://localhost:3000') returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
  v_token text := encode(public.gen_random_bytes(32), 'hex');
begin
  select id into v_user_id from app_public.users where users.email = lower(btrim(password_reset_link.email));
  if v_user_id is null then
    raise exception 'No account with that email.' using errcode = 'NTFND';
  end if;
  insert into app_private.password_reset_tokens (token_hash, user_id, expires_at)
    values (sha256(convert_to(v_token, 'UTF8')), v_user_id, now() + interval '1 hour');
  return rtrim(app_url, '/') || '/reset-password?token=' || v_token;
end;
$$;
comment on function app_admin.password_reset_link(text, text) is
  E'A one-hour password-reset link for a person, to hand over by other means.\nExample: select app_admin.password_reset_link(''bob@acme.example'', ''https://app.example.com'');';

create trigger _900_audit after insert or update or delete on app_public.invitations for each row execute procedure app_private.tg__audit();

-- Mail without secrets in the queue. A graphile-worker job is kept after a last failed attempt and written to the
-- logs with the job, so it must never hold a message's text or one-time link. The job carries only the id of a row here, which says what to send and to whom (by reference: no address, no token);
-- send_email mints the link's token when it sends, through app_private.prepare_email. Each attempt mints a new
-- token and replaces the one the previous attempt made, so only the newest link works. The outbox is global, not a
-- tenant table (a password reset belongs to no organization), so it holds no key into one: the message of an
-- invitation deleted meanwhile finds nothing in prepare_email and is dropped.
create table app_private.mail_outbox (
  id uuid primary key default gen_random_uuid(),
  kind text not null check (kind in ('password_reset', 'invitation')),
  user_id uuid references app_public.users on delete cascade,
  invitation_id uuid,
  created_at timestamptz not null default now(),
  check ((kind = 'password_reset') = (user_id is not null) and (kind = 'invitation') = (invitation_id is not null))
);

create index mail_outbox_user_id_idx on app_private.mail_outbox (user_id);
create index mail_outbox_invitation_id_idx on app_private.mail_outbox (invitation_id);

comment on table app_private.mail_outbox is
  'Emails queued and not yet sent: what to send (kind) and to whom (a user or an invitation). Never a token or a body.';

alter table app_private.mail_outbox enable row level security;

alter table app_private.mail_outbox force row level security;

create policy as_definer on app_private.mail_outbox to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- The token an attempt minted for a reset email, so the next attempt can replace it.
alter table app_private.password_reset_tokens add column outbox_id uuid references app_private.mail_outbox on delete set null;

create unique index password_reset_tokens_outbox_id_idx on app_private.password_reset_tokens (outbox_id);

comment on column app_private.password_reset_tokens.outbox_id is 'The queued email this token was minted for (a retry replaces it); NULL once sent.';

create function app_private.queue_mail(kind text, user_id uuid, invitation_id uuid) returns uuid
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_id uuid;
begin
  insert into app_private.mail_outbox (kind, user_id, invitation_id)
    values (queue_mail.kind, queue_mail.user_id, queue_mail.invitation_id) returning id into v_id;
  -- Ahead of every organization's jobs (priority -1, see app_private.enqueue_job): someone is waiting for the mail.
  perform graphile_worker.add_job('send_email', json_build_object('outboxId', v_id), max_attempts => 5, priority => -1);
  return v_id;
end;
$$;
comment on function app_private.queue_mail(text, uuid, uuid) is 'Queues an email for the send_email task (5 attempts, ahead of organizations'' jobs); the job carries only the outbox row''s id.';

-- What send_email calls for each attempt: the token's SHA-256 (the task made the token) is stored for the email's
-- user or invitation, replacing the one the previous attempt stored, and the kind and recipient come back. No row
-- when there is nothing to send any more (the account was deactivated, the invitation accepted, deleted or
-- expired): the task then drops the job.
create function app_private.prepare_email(outbox_id uuid, token_hash bytea)
  returns table (kind text, recipient text, valid_for interval)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_mail app_private.mail_outbox;
  v_email text;
  v_org_id uuid;
  v_expires_at timestamptz;
begin
  select * into v_mail from app_private.mail_outbox o where o.id = prepare_email.outbox_id for update;
  if not found then
    return;
  end if;
  if v_mail.kind = 'password_reset' then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active;
    delete from app_private.password_reset_tokens t where t.outbox_id = v_mail.id;
    if v_email is not null then
      insert into app_private.password_reset_tokens (token_hash, user_id, expires_at, outbox_id)
        values (prepare_email.token_hash, v_mail.user_id, now() + interval '1 hour', v_mail.id);
      return query select v_mail.kind, v_email, interval '1 hour';
      return;
    end if;
  else
    select i.email, i.org_id, i.expires_at into v_email, v_org_id, v_expires_at
      from app_public.invitations i join app_public.organizations o on o.id = i.org_id and o.is_active
     where i.id = v_mail.invitation_id and i.accepted_at is null and i.expires_at > now()
       for update of i;
    if v_email is not null then
      insert into app_private.invitation_tokens as t (org_id, invitation_id, token_hash)
        values (v_org_id, v_mail.invitation_id, prepare_email.token_hash)
        on conflict on constraint invitation_tokens_pkey do update set token_hash = excluded.token_hash;
      return query select v_mail.kind, v_email, v_expires_at - now();
      return;
    end if;
  end if;
  delete from app_private.mail_outbox o where o.id = v_mail.id;
end;
$$;
comment on function app_private.prepare_email(uuid, bytea) is
  'send_email, before each attempt: stores the new token''s digest (the previous attempt''s token stops working) and returns kind, recipient and validity; no row when nothing is left to send.';
grant execute on function app_private.prepare_email(uuid, bytea) to :DATABASE_AUTHENTICATOR;

create function app_private.email_sent(outbox_id uuid) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.password_reset_tokens t set outbox_id = null where t.outbox_id = email_sent.outbox_id;
    delete from app_private.mail_outbox o where o.id = email_sent.outbox_id;
  $$;
comment on function app_private.email_sent(uuid) is 'send_email, once delivered: forgets the outbox row (its token stays valid).';
grant execute on function app_private.email_sent(uuid) to :DATABASE_AUTHENTICATOR;

create function app_private.request_password_reset(email text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select u.id into v_user_id from app_public.users u where u.email = lower(btrim(request_password_reset.email)) and u.is_active
    for update of u;
  if v_user_id is null or (
    select count(*) from app_private.password_reset_tokens t
     where t.user_id = v_user_id and t.used_at is null and t.expires_at > now() and t.outbox_id is null
  ) + (
    select count(*) from app_private.mail_outbox o
     where o.user_id = v_user_id and o.kind = 'password_reset' and o.created_at > now() - interval '1 hour'
  ) >= 3 then
    return false;
  end if;
  perform app_private.queue_mail('password_reset', v_user_id, null);
  return true;
end;
$$;
comment on function app_private.request_password_reset(text) is
  'Queues a reset email for an active account with this email (at most 3 live links); false (and nothing queued) otherwise. Callers must not reveal which.';
grant execute on function app_private.request_password_reset(text) to :DATABASE_AUTHENTICATOR;

create function app_hidden.create_invitation(email text, role app_public.membership_role, token_hash bytea, valid_for interval)
  returns app_public.invitations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_private.require_role('admin', 'Only admins and owners invite members.');
  v_org_id uuid := app_public.current_org_id();
  v_email text := lower(btrim(create_invitation.email));
  v_invitation app_public.invitations;
begin
  if create_invitation.role = 'owner' and v_caller < 'owner' then
    raise exception 'Only owners can invite owners.' using errcode = 'DNIED';
  end if;
  if v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' or char_length(v_email) > 320 then
    raise exception 'Enter a valid email address.' using errcode = 'BADIN';
  end if;
  if exists (select 1 from app_public.memberships m join app_public.users u on u.id = m.user_id
              where m.org_id = v_org_id and u.email = v_email) then
    raise exception 'This person is already a member.' using errcode = 'TAKEN';
  end if;
  delete from app_public.invitations i where i.org_id = v_org_id and i.email = v_email and i.accepted_at is null;
  insert into app_public.invitations (org_id, email, role, invited_by, expires_at)
    values (v_org_id, v_email, create_invitation.role, app_public.current_user_id(), now() + create_invitation.valid_for)
    returning * into v_invitation;
  if create_invitation.token_hash is null then
    perform app_private.queue_mail('invitation', null, v_invitation.id);
  else
    insert into app_private.invitation_tokens (org_id, invitation_id, token_hash)
      values (v_invitation.org_id, v_invitation.id, create_invitation.token_hash);
  end if;
  return v_invitation;
end;
$$;
comment on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval) is
  'Invites an email to the caller''s organization (admins; owners for the owner role), replacing a pending invitation. With a token digest, stores it (the caller hands the link over); without, queues the invitation email.';
grant execute on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- 7. Documents
--
-- The organization's knowledge base. Members write, everyone in the organization reads; the database keeps the revision
-- and the content hash, and changing a document cancels its running jobs and marks its summaries stale.
-- ==================================================================================================================

create type app_public.document_format as enum ('markdown', 'plain', 'html');

create type app_public.document_source as enum ('manual', 'upload', 'notion', 'confluence');

-- An organization's knowledge base. Text is PostgreSQL `text` in a UTF8 database: any Unicode round-trips byte
-- for byte, and a NUL byte or invalid UTF-8 is refused by PostgreSQL itself (22021, BAD_INPUT).
create table app_public.documents (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  title text not null check (char_length(title) between 1 and 500),
  content text not null default '',
  format app_public.document_format not null default 'markdown',
  source app_public.document_source not null default 'manual',
  external_id text check (char_length(external_id) between 1 and 500),
  external_url text check (char_length(external_url) <= 2000 and external_url ~ '^https?://'),
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  author_id uuid default app_public.current_user_id() references app_public.users on delete set null,
  revision int not null default 1,
  content_hash text not null default '',
  search tsvector generated always as (
    setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', content), 'B')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, source, external_id)
);

create index documents_id_idx on app_public.documents (id);
comment on constraint documents_pkey on app_public.documents is '@behavior -single -update -delete';

comment on table app_public.documents is E'@primaryKey id\nA document of the organization''s knowledge base. Members write; everyone in the organization reads.';

comment on column app_public.documents.external_id is 'The page id at the source (Notion, Confluence); re-imports match on it.';
comment on column app_public.documents.revision is 'Starts at 1 and grows by one each time the content changes.';
comment on column app_public.documents.content_hash is 'SHA-256 (hex) of the content, maintained by the database.';
comment on column app_public.documents.search is E'@behavior -*\nFull-text vector over title (weight A) and content (B).';

create index documents_org_id_created_at_idx on app_public.documents (org_id, created_at desc, id);
create index documents_org_id_search_idx on app_public.documents using gin (org_id, search);
create index documents_org_id_author_id_idx on app_public.documents (org_id, author_id);

create trigger _100_timestamps before insert or update on app_public.documents
  for each row execute procedure app_private.tg__timestamps();

-- Revision and hash are facts the database keeps: the hash follows the content, the revision counts content
-- changes, and neither can be set by a client. The size limit is the server's DOCUMENT_MAX_BYTES, passed in each
-- request's settings (5 MB when unset).
create function app_private.tg_documents__revision() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_limit bigint := coalesce(nullif(current_setting('quire.max_document_bytes', true), '')::bigint, 5242880);
begin
  if octet_length(new.content) > v_limit then
    raise exception 'The document is larger than the limit of % bytes.', v_limit using errcode = 'TOOLG';
  end if;
  new.content_hash := encode(sha256(convert_to(new.content, 'UTF8')), 'hex');
  if tg_op = 'INSERT' then
    new.revision := 1;
  else
    new.revision := case when new.content is distinct from old.content then old.revision + 1 else old.revision end;
    new.author_id := old.author_id;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_documents__revision() is
  'Trigger: enforces the size limit, sets content_hash, and counts content changes in revision.';

create trigger _200_revision before insert or update on app_public.documents
  for each row execute procedure app_private.tg_documents__revision();

alter table app_public.documents enable row level security;

alter table app_public.documents force row level security;

create policy as_definer on app_public.documents to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.documents for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy insert_as_member on app_public.documents for insert to :DATABASE_AUTHENTICATED
  with check (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'member');

create policy update_as_member on app_public.documents for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'member')
  with check (org_id = app_public.current_org_id());

create policy delete_as_member on app_public.documents for delete to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'member');

grant select, delete on app_public.documents to :DATABASE_AUTHENTICATED;
grant insert (title, content, format, source, external_id, external_url, metadata) on app_public.documents to :DATABASE_AUTHENTICATED;
grant update (title, content, format, external_url, metadata) on app_public.documents to :DATABASE_AUTHENTICATED;

-- Listing with filters and full-text search: one function, so the frontend has one query to build on. With
-- `search`, results are ranked (title matches above content matches); without it, newest first. RLS applies
-- (security invoker), so only the caller's organization is ever searched.
create function app_public.find_documents(
  search text default null,
  title_contains text default null,
  format app_public.document_format default null,
  source app_public.document_source default null,
  created_after timestamptz default null,
  created_before timestamptz default null
) returns setof app_public.documents
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select d.*
      from app_public.documents d,
           (select case when nullif(btrim(find_documents.search), '') is null then null
                        else websearch_to_tsquery('simple', find_documents.search) end as q) as query
     where (query.q is null or d.search @@ query.q)
       and (find_documents.title_contains is null or strpos(lower(d.title), lower(find_documents.title_contains)) > 0)
       and (find_documents.format is null or d.format = find_documents.format)
       and (find_documents.source is null or d.source = find_documents.source)
       and (find_documents.created_after is null or d.created_at >= find_documents.created_after)
       and (find_documents.created_before is null or d.created_at < find_documents.created_before)
     order by case when query.q is null then 0 else ts_rank(d.search, query.q) end desc, d.created_at desc, d.id
  $$;
comment on function app_public.find_documents(text, text, app_public.document_format, app_public.document_source, timestamptz, timestamptz) is
  E'The organization''s documents, filtered (title substring, format, source, creation range) and, with `search`, full-text matched (web-search syntax: words, "phrases", -exclusions) and ranked.';
grant execute on function app_public.find_documents(text, text, app_public.document_format, app_public.document_source, timestamptz, timestamptz)
  to :DATABASE_AUTHENTICATED;

-- A deleted document takes its summaries with it (cascade) and cancels its unfinished jobs, so no worker spends
-- LLM calls on it; an edited one marks its summaries stale.
create function app_private.tg_documents__cancel_jobs() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid;
begin
  for v_job_id in
    update app_public.jobs j
       set status = 'cancelled', finished_at = now(), error_code = 'DOCUMENT_DELETED', error_message = 'The document was deleted.'
     where j.org_id = old.org_id and j.document_id = old.id and j.status in ('queued', 'running')
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
  return old;
end;
$$;
comment on function app_private.tg_documents__cancel_jobs() is 'Trigger: cancels the unfinished jobs of a document being deleted.';

create trigger _500_cancel_jobs before delete on app_public.documents
  for each row execute procedure app_private.tg_documents__cancel_jobs();

create function app_private.tg_documents__stale_summaries() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_public.summaries s set stale = true
   where s.org_id = new.org_id and s.document_id = new.id and not s.stale and s.document_revision < new.revision;
  return null;
end;
$$;
comment on function app_private.tg_documents__stale_summaries() is 'Trigger: marks a document''s summaries stale once its content changed.';

create trigger _500_stale_summaries after update of content on app_public.documents
  for each row when (new.revision > old.revision) execute procedure app_private.tg_documents__stale_summaries();

create trigger _900_live_event after insert or update or delete on app_public.documents
  for each row execute procedure app_private.tg__live_event('document');

-- Imported documents remember the integration they came from (a sync compares them with the source).
alter table app_public.documents add column integration_id uuid;

create index documents_org_id_integration_id_idx on app_public.documents (org_id, integration_id);

create policy insert_as_importer on app_public.documents for insert to :DATABASE_AUTHENTICATED
  with check (org_id = app_public.current_org_id() and app_public.current_job_kind() in ('import', 'sync'));

create policy update_as_importer on app_public.documents for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_job_kind() in ('import', 'sync'))
  with check (org_id = app_public.current_org_id());

grant insert (integration_id) on app_public.documents to :DATABASE_AUTHENTICATED;

create trigger _900_audit after insert or update or delete on app_public.documents for each row execute procedure app_private.tg__audit('content', 'search');

-- Bounds on what the API stores and answers, so that one request cannot hold megabytes the server then multiplies.
-- Some were added to existing tables `not valid` (rows written before them are not re-checked, every new write is);
-- they stay so here, so the schema is the one every deployment has.

-- A document's metadata is a small object (the upload's facts, an integration's page facts), never a second content:
-- without a bound, a list of documents with their metadata could answer gigabytes. Named as PostgreSQL names column
-- checks, so a refusal names the field (`metadata is not allowed …`).
alter table app_public.documents add constraint documents_metadata_check1
  check (octet_length(metadata::text) <= 65536) not valid;

-- Lists of documents need no content: its size and its beginning are enough to show a list, and cost a page of
-- rows only kilobytes (GraphQL refuses lists whose content could be too large: RESPONSE_TOO_LARGE).
create function app_public.documents_content_length(d app_public.documents) returns int
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select octet_length(d.content) $$;
comment on function app_public.documents_content_length(app_public.documents) is
  'Size of the content in UTF-8 bytes (what DOCUMENT_MAX_BYTES limits).';
grant execute on function app_public.documents_content_length(app_public.documents) to :DATABASE_AUTHENTICATED;

create function app_public.documents_excerpt(d app_public.documents, max_chars int default 280) returns text
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select left(d.content, least(greatest(coalesce(max_chars, 280), 0), 2000)) $$;
comment on function app_public.documents_excerpt(app_public.documents, int) is
  'The first `maxChars` characters of the content (default 280, at most 2000): for lists, which cannot ask for whole contents.';
grant execute on function app_public.documents_excerpt(app_public.documents, int) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- 8. Templates
--
-- Prompt templates: the organization's own and the global ones, each edit kept as an immutable version so a summary
-- always says exactly which prompt wrote it.
-- ==================================================================================================================

-- Templates: {{document.content}} at most once, and at most 20 placeholders in all, so that what a template renders
-- is the document plus a bounded amount, never a multiple of it (a preview of a hundred copies of a document, or a
-- summary job whose prompt uses up the organization's monthly allowance). Refused when saved (BADTM).
create function app_private.template_problem(body text) returns text
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select coalesce(
      (select 'Unknown placeholder ' || m[1] || '; use {{document.title}}, {{document.content}}, {{organization.name}} or {{date}}.'
         from regexp_matches(body, '(\{\{\s*[^{}]*?\s*\}\})', 'g') as m
        where regexp_replace(m[1], '\s', '', 'g') not in ('{{document.title}}', '{{document.content}}', '{{organization.name}}', '{{date}}')
        limit 1),
      case when regexp_replace(body, '\{\{\s*[^{}]*?\s*\}\}', '', 'g') ~ '\{\{|\}\}'
           then 'Unbalanced {{ or }}: placeholders are written {{name}}.' end,
      case when (select count(*) from regexp_matches(body, '\{\{\s*document\.content\s*\}\}', 'g')) > 1
           then '{{document.content}} may appear only once in a template: the document''s text is sent to the model once.' end,
      case when (select count(*) from regexp_matches(body, '\{\{\s*[^{}]*?\s*\}\}', 'g')) > 20
           then 'A template may use at most 20 placeholders.' end
    )
  $$;
comment on function app_private.template_problem(text) is
  'What is wrong with a template body (an unknown placeholder, stray braces, {{document.content}} more than once, more than 20 placeholders), or NULL when it is valid.';

-- Security definer: it runs for API roles, which have no USAGE on app_private where the check lives.
create function app_private.tg_templates__check_body() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_problem text := app_private.template_problem(new.body);
begin
  if v_problem is not null then
    raise exception '%', v_problem using errcode = 'BADTM';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_templates__check_body() is 'Trigger: refuses a template body with unknown placeholders or stray braces (BADTM).';

-- Global templates belong to no organization: operators create them (app_admin), every organization reads them.
-- They live apart from organization templates so that every tenant table keeps `org_id not null`.
create table app_public.global_templates (
  id uuid primary key default gen_random_uuid(),
  name text not null unique check (char_length(name) between 1 and 200),
  description text not null default '' check (char_length(description) <= 2000),
  body text not null check (char_length(body) between 1 and 20000),
  version int not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table app_public.global_templates is E'@behavior -insert -update -delete\nA summary template every organization can use; maintained by operators.';

create trigger _100_timestamps before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg__timestamps();

create trigger _200_check_body before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__check_body();

create table app_public.templates (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  name text not null check (char_length(name) between 1 and 200),
  description text not null default '' check (char_length(description) <= 2000),
  body text not null check (char_length(body) between 1 and 20000),
  version int not null default 1,
  created_by uuid default app_public.current_user_id() references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, name)
);

create index templates_id_idx on app_public.templates (id);
comment on constraint templates_pkey on app_public.templates is '@behavior -single -update -delete';

comment on table app_public.templates is E'@primaryKey id\nAn organization''s own summary template. Admins and owners write; everyone in the organization reads.';

comment on column app_public.templates.version is 'Grows by one with each edit of name, description or body; every version is kept in template_versions.';

create index templates_org_id_created_by_idx on app_public.templates (org_id, created_by);

create trigger _100_timestamps before insert or update on app_public.templates
  for each row execute procedure app_private.tg__timestamps();

create trigger _200_check_body before insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__check_body();

-- Every version is kept, immutable, so a summary can point at exactly the text it used: editing or deleting the
-- template never changes or breaks it (the version outlives its template; template_id then becomes NULL).
create table app_public.template_versions (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  template_id uuid,
  version int not null,
  name text not null,
  body text not null,
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, template_id, version),
  foreign key (org_id, template_id) references app_public.templates (org_id, id)
);

create trigger _800_clear_template_versions_template_id before delete on app_public.templates
  for each row execute procedure app_private.tg__clear_references('app_public.template_versions', 'template_id');

create index template_versions_id_idx on app_public.template_versions (id);
comment on constraint template_versions_pkey on app_public.template_versions is '@behavior -single -update -delete';

comment on table app_public.template_versions is E'@primaryKey id\n@behavior -insert -update -delete\nAn immutable version of an organization template, kept after the template is edited or deleted.';

create table app_public.global_template_versions (
  id uuid primary key default gen_random_uuid(),
  global_template_id uuid references app_public.global_templates on delete set null,
  version int not null,
  name text not null,
  body text not null,
  created_at timestamptz not null default now(),
  unique (global_template_id, version)
);

comment on table app_public.global_template_versions is E'@behavior -insert -update -delete\nAn immutable version of a global template.';

-- Versions are written by the database, in the same statement as the template: the number before the row is
-- written, the kept copy after (it references the row).
create function app_private.tg_templates__number_version() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if tg_op = 'INSERT' then
    new.version := 1;
  elsif (new.name, new.description, new.body) is distinct from (old.name, old.description, old.body) then
    new.version := old.version + 1;
  else
    new.version := old.version;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_templates__number_version() is 'Trigger: numbers each change of a template''s name, description or body.';

create function app_private.tg_templates__keep_version() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'UPDATE' and new.version = old.version then
    return null;
  end if;
  if tg_table_name = 'templates' then
    insert into app_public.template_versions (org_id, template_id, version, name, body)
      values (new.org_id, new.id, new.version, new.name, new.body);
  else
    insert into app_public.global_template_versions (global_template_id, version, name, body)
      values (new.id, new.version, new.name, new.body);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_templates__keep_version() is 'Trigger: keeps an immutable copy of each new template version.';

create trigger _300_number_version before insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__number_version();

create trigger _300_number_version before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__number_version();

create trigger _900_keep_version after insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__keep_version();

create trigger _900_keep_version after insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__keep_version();

-- Row-level security.
alter table app_public.global_templates enable row level security;

alter table app_public.global_templates force row level security;

create policy as_definer on app_public.global_templates to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_all on app_public.global_templates for select to :DATABASE_AUTHENTICATED using (true);

grant select on app_public.global_templates to :DATABASE_AUTHENTICATED;

alter table app_public.global_template_versions enable row level security;

alter table app_public.global_template_versions force row level security;

create policy as_definer on app_public.global_template_versions to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_all on app_public.global_template_versions for select to :DATABASE_AUTHENTICATED using (true);

grant select on app_public.global_template_versions to :DATABASE_AUTHENTICATED;

alter table app_public.templates enable row level security;

alter table app_public.templates force row level security;

create policy as_definer on app_public.templates to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.templates for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy insert_as_admin on app_public.templates for insert to :DATABASE_AUTHENTICATED
  with check (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

create policy update_as_admin on app_public.templates for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin')
  with check (org_id = app_public.current_org_id());

create policy delete_as_admin on app_public.templates for delete to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

grant select, delete on app_public.templates to :DATABASE_AUTHENTICATED;
grant insert (name, description, body), update (name, description, body) on app_public.templates to :DATABASE_AUTHENTICATED;

alter table app_public.template_versions enable row level security;

alter table app_public.template_versions force row level security;

create policy as_definer on app_public.template_versions to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.template_versions for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

grant select on app_public.template_versions to :DATABASE_AUTHENTICATED;

-- The rendered prompt for a document, without calling the LLM: plain text replacement of the four placeholders.
-- The template is the organization's or a global one; both it and the document are read under RLS.
create function app_public.preview_template(template_id uuid, document_id uuid) returns text
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_body text;
  v_title text;
  v_content text;
begin
  select t.body into v_body from app_public.templates t where t.id = preview_template.template_id;
  if v_body is null then
    select g.body into v_body from app_public.global_templates g where g.id = preview_template.template_id;
  end if;
  select d.title, d.content into v_title, v_content from app_public.documents d where d.id = preview_template.document_id;
  if v_body is null or v_title is null then
    raise exception 'No such template or document.' using errcode = 'NTFND';
  end if;
  return app_public.render_template(v_body, v_title, v_content,
    (select o.name from app_public.organizations o where o.id = app_public.current_org_id()));
end;
$$;
comment on function app_public.preview_template(uuid, uuid) is
  'The prompt a template produces for a document (placeholders replaced as plain text), without calling the LLM.';
grant execute on function app_public.preview_template(uuid, uuid) to :DATABASE_AUTHENTICATED;

-- The rendered text is bounded too, for templates saved before the rule above: at most the document's content plus
-- 1 MiB (a valid template renders far less). Over: TOOLG (TOO_LARGE), for a preview and a summary job alike.
create function app_public.render_template(body text, title text, content text, organization_name text) returns text
  language plpgsql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_limit bigint := coalesce(octet_length(content), 0) + 1048576;
  v_rendered text;
begin
  -- One pass per placeholder; a value that itself contains "{{…}}" is inserted as text and never expanded. The size
  -- is added up before the pieces are joined, so an oversized result is never built.
  if (select coalesce(sum(case regexp_replace(piece, '\s', '', 'g')
                            when '{{document.title}}' then coalesce(octet_length(title), 0)
                            when '{{document.content}}' then coalesce(octet_length(content), 0)
                            when '{{organization.name}}' then coalesce(octet_length(organization_name), 0)
                            else octet_length(piece)
                          end), 0)
        from regexp_split_to_table(
               regexp_replace(body, '\{\{\s*(document\.title|document\.content|organization\.name|date)\s*\}\}', E'\x01{{\\1}}\x01', 'g'),
               E'\x01') as parts (piece)) > v_limit then
    raise exception 'The template renders more than % bytes for this document: use {{document.content}} only once.', v_limit
      using errcode = 'TOOLG';
  end if;
  select string_agg(
           case piece
             when '{{document.title}}' then coalesce(title, '')
             when '{{document.content}}' then coalesce(content, '')
             when '{{organization.name}}' then coalesce(organization_name, '')
             when '{{date}}' then to_char(now() at time zone 'UTC', 'YYYY-MM-DD')
             else piece
           end, '' order by ordinality)
    into v_rendered
    from regexp_split_to_table(
           regexp_replace(body, '\{\{\s*(document\.title|document\.content|organization\.name|date)\s*\}\}', E'\x01{{\\1}}\x01', 'g'),
           E'\x01') with ordinality as parts (piece, ordinality);
  return v_rendered;
end;
$$;
grant execute on function app_public.render_template(text, text, text, text) to :DATABASE_AUTHENTICATED;
comment on function app_public.render_template(text, text, text, text) is
  E'@behavior -*\nReplaces the four placeholders of a template body with the given values, as plain text; refuses (TOOLG) a result over the content plus 1 MiB.';

-- Operators maintain the global templates.
create function app_admin.upsert_global_template(name text, body text, description text default '') returns app_public.global_templates
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.global_templates (name, description, body)
      values (upsert_global_template.name, upsert_global_template.description, upsert_global_template.body)
    on conflict (name) do update set description = excluded.description, body = excluded.body
    returning *
  $$;
comment on function app_admin.upsert_global_template(text, text, text) is
  E'Creates or edits (as a new version) a global template.\nExample: select * from app_admin.upsert_global_template(''Risks'', ''List the risks in {{document.title}}:\\n{{document.content}}'');';

-- Asking for a summary: checks the caller, resolves the template to its current version (pinned, so later edits
-- do not change what this job makes), checks the month's allowance, and queues the job and its graphile-worker job
-- in the caller's transaction. The allowance check is serialized per organization so concurrent requests cannot
-- all slip under it. Without a template: the organization's defaultTemplateId setting, else "Executive summary".
create function app_private.template_version_for(org_id uuid, template_id uuid, out template_version_id uuid, out global_template_version_id uuid)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select (select tv.id from app_public.templates t
              join app_public.template_versions tv on tv.org_id = t.org_id and tv.template_id = t.id and tv.version = t.version
             where t.id = template_version_for.template_id and t.org_id = template_version_for.org_id),
           (select gv.id from app_public.global_templates g
              join app_public.global_template_versions gv on gv.global_template_id = g.id and gv.version = g.version
             where g.id = template_version_for.template_id)
  $$;
comment on function app_private.template_version_for(uuid, uuid) is 'The current version of an organization''s template, or of a global template, with this id.';

create function app_private.default_template_id(org_id uuid) returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce(
      (select (o.settings ->> 'defaultTemplateId')::uuid from app_public.organizations o
        where o.id = default_template_id.org_id
          and o.settings ->> 'defaultTemplateId' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'),
      (select g.id from app_public.global_templates g where g.name = 'Executive summary'))
  $$;
comment on function app_private.default_template_id(uuid) is 'The template used when none is named: the organization''s defaultTemplateId, else the global "Executive summary".';

-- Foreign keys that include org_id (so a row can only point inside its own organization) would otherwise be named
-- after both columns in GraphQL (orgDocument, summariesByOrgIdAndDocumentId); these smart tags give the names a
-- client expects.
comment on constraint template_versions_org_id_template_id_fkey on app_public.template_versions is
  E'@fieldName template\n@foreignFieldName versions';

create trigger _900_audit after insert or update or delete on app_public.templates for each row execute procedure app_private.tg__audit('body');

create trigger _900_audit after insert or update or delete on app_public.template_versions for each row execute procedure app_private.tg__audit('body');

-- ==================================================================================================================
-- 9. Jobs
--
-- Jobs the worker runs (summaries, imports, publishing): a row per job in the tenant's view, a graphile-worker job behind
-- it, a token binding the worker's transaction to that one job, and fair-share priority between organizations.
-- ==================================================================================================================

create type app_public.job_status as enum ('queued', 'running', 'succeeded', 'failed', 'cancelled');

create table app_public.jobs (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  kind app_public.job_kind not null,
  status app_public.job_status not null default 'queued',
  document_id uuid,
  template_version_id uuid,
  global_template_version_id uuid references app_public.global_template_versions on delete set null,
  summary_id uuid,
  requested_by uuid references app_public.users on delete set null,
  attempts int not null default 0 check (attempts >= 0),
  max_attempts int not null default coalesce(nullif(current_setting('quire.job_max_attempts', true), '')::int, 3)
    check (max_attempts between 1 and 25),
  error_code text check (error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  error_message text check (char_length(error_message) <= 1000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  primary key (org_id, id),
  foreign key (org_id, document_id) references app_public.documents (org_id, id),
  foreign key (org_id, template_version_id) references app_public.template_versions (org_id, id),
  check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
);

-- A job's record outlives its document and template version.
create trigger _800_clear_jobs_document_id before delete on app_public.documents
  for each row execute procedure app_private.tg__clear_references('app_public.jobs', 'document_id');
create trigger _800_clear_jobs_template_version_id before delete on app_public.template_versions
  for each row execute procedure app_private.tg__clear_references('app_public.jobs', 'template_version_id');

create index jobs_id_idx on app_public.jobs (id);
comment on constraint jobs_pkey on app_public.jobs is '@behavior -single -update -delete';

comment on table app_public.jobs is
  E'@primaryKey id\n@behavior -insert -update -delete\nBackground work of the organization: summaries, imports and syncs from Notion and Confluence, publishing. Created by mutations such as summarizeDocument, run by the worker, visible to everyone in the organization.';

comment on column app_public.jobs.status is E'@behavior +attribute:filterBy\nqueued, running, succeeded, failed or cancelled; clients filter by it.';
comment on column app_public.jobs.kind is E'@behavior +attribute:filterBy\nWhat the job does.';
comment on column app_public.jobs.max_attempts is 'Runs allowed; defaults to the server''s JOB_MAX_ATTEMPTS (setting quire.job_max_attempts), else 3.';
comment on column app_public.jobs.attempts is 'Runs started so far (a run interrupted by a dead worker counts).';
comment on column app_public.jobs.error_code is 'For failed jobs: a stable code such as LLM_TIMEOUT, LLM_RATE_LIMITED, LLM_UNAVAILABLE, LLM_REJECTED, LLM_AUTH, LLM_BAD_RESPONSE, DOCUMENT_DELETED or INTERNAL. While a retry is pending, the last attempt''s error.';
comment on column app_public.jobs.error_message is 'A message safe to show: never a secret or a stack.';
comment on column app_public.jobs.document_id is 'The document the job is about; NULL once that document is deleted.';

create index jobs_org_id_created_at_idx on app_public.jobs (org_id, created_at desc, id);
create index jobs_org_id_status_idx on app_public.jobs (org_id, status) where status in ('queued', 'running');
create index jobs_org_id_document_id_idx on app_public.jobs (org_id, document_id);
create index jobs_org_id_template_version_id_idx on app_public.jobs (org_id, template_version_id);
create index jobs_org_id_global_template_version_id_idx on app_public.jobs (org_id, global_template_version_id);
create index jobs_org_id_requested_by_idx on app_public.jobs (org_id, requested_by);

create trigger _100_timestamps before insert or update on app_public.jobs
  for each row execute procedure app_private.tg__timestamps();

create index jobs_org_id_summary_id_idx on app_public.jobs (org_id, summary_id);

-- The worker runs a job inside the job's organization's RLS context, without a user session: the graphile-worker
-- payload carries the job id and a random token whose SHA-256 is kept here. While the job is queued or running,
-- the pair (settings quire.job_id and quire.job_token) stands in for a session: current_org_id() is the job's
-- organization and current_job_id() the job, so the worker reads and writes under the same policies as users.
create table app_private.job_tokens (
  org_id uuid not null,
  job_id uuid not null,
  token_hash bytea not null check (length(token_hash) = 32),
  runner_id text,
  lock_id text,
  primary key (org_id, job_id),
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade
);

-- The worker knows a job by its id (the graphile-worker payload), not its organization.
create index job_tokens_job_id_idx on app_private.job_tokens (job_id);

comment on table app_private.job_tokens is 'Per-job secret (SHA-256) for the worker''s RLS context, and which worker process holds the job.';

alter table app_private.job_tokens enable row level security;

alter table app_private.job_tokens force row level security;

create policy as_definer on app_private.job_tokens to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- Row-level security. Everyone in the organization reads jobs, summaries and usage; only the worker, in the job's
-- context, writes them (and only for its own job); users change jobs through summarizeDocument and cancelJob.
alter table app_public.jobs enable row level security;

alter table app_public.jobs force row level security;

create policy as_definer on app_public.jobs to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.jobs for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy update_as_runner on app_public.jobs for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and id = app_public.current_job_id()) with check (org_id = app_public.current_org_id());

grant select on app_public.jobs to :DATABASE_AUTHENTICATED;
grant update (status, attempts, error_code, error_message, summary_id, started_at, finished_at) on app_public.jobs to :DATABASE_AUTHENTICATED;

-- A job moves forward only: queued → running → one of succeeded, failed, cancelled (running → queued when a retry
-- is pending). A finished job never changes again, so a late worker cannot overwrite a cancellation.
create function app_private.tg_jobs__transition() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if old.status in ('succeeded', 'failed', 'cancelled') and new.status is distinct from old.status then
    raise exception 'The job has already finished.' using errcode = 'BADIN';
  end if;
  if new.status = 'queued' and old.status not in ('queued', 'running') then
    raise exception 'A job cannot go back to the queue.' using errcode = 'BADIN';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_jobs__transition() is 'Trigger: refuses status changes of finished jobs.';

create trigger _200_transition before update on app_public.jobs
  for each row execute procedure app_private.tg_jobs__transition();

-- Every kind of organization job (summaries, imports, syncs, publishing) is queued here, so all of them share the
-- organization's turn.
create function app_private.enqueue_job(job app_public.jobs, task text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_token text := encode(public.gen_random_bytes(32), 'hex');
begin
  insert into app_private.job_tokens (org_id, job_id, token_hash) values ((job).org_id, (job).id, sha256(convert_to(v_token, 'UTF8')));
  perform graphile_worker.add_job(task, json_build_object('jobId', (job).id, 'token', v_token),
    job_key => (job).id::text, max_attempts => (job).max_attempts,
    priority => app_private.fair_share_priority((job).org_id, (job).id));
end;
$$;
comment on function app_private.enqueue_job(app_public.jobs, text) is
  'Gives a new job its worker token and queues it for `task`, at its organization''s fair-share priority (app_private.fair_share_priority).';

-- Cancelling: a queued job is removed from the queue; a running one is marked cancelled, and the worker, which
-- writes its result only while the job is still running, discards what it was making. The requester or an admin.
create function app_public.cancel_job(job_id uuid) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.lock_member_role();
  v_job app_public.jobs;
begin
  select * into v_job from app_public.jobs j
   where j.id = cancel_job.job_id and j.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such job.' using errcode = 'NTFND';
  end if;
  -- The member who asked may cancel their own job; anyone else's takes an admin.
  perform app_private.check_role(v_role, case when v_job.requested_by = app_public.current_user_id() then 'member' else 'admin' end::app_public.membership_role,
                                 'Only the member who asked for a job, or an admin, can cancel it.', signed_out => null);
  if v_job.status = 'cancelled' then
    return v_job;
  end if;
  if v_job.status <> all (array['queued', 'running']::app_public.job_status[]) then
    raise exception 'The job has already finished (%).', v_job.status using errcode = 'BADIN';
  end if;
  perform graphile_worker.remove_job(v_job.id::text);
  update app_public.jobs j set status = 'cancelled', finished_at = now() where j.id = v_job.id returning * into v_job;
  return v_job;
end;
$$;
comment on function app_public.cancel_job(uuid) is
  E'@resultFieldName job\nCancels a queued or running job (the member who asked for it, or an admin); cancelling a cancelled job changes nothing.';
grant execute on function app_public.cancel_job(uuid) to :DATABASE_AUTHENTICATED;

create trigger _900_live_event after insert or update or delete on app_public.jobs
  for each row execute procedure app_private.tg__live_event('job');

comment on constraint jobs_org_id_document_id_fkey on app_public.jobs is E'@fieldName document\n@foreignFieldName jobs';

comment on constraint jobs_org_id_template_version_id_fkey on app_public.jobs is E'@fieldName templateVersion\n@foreignFieldName jobs';

comment on constraint jobs_requested_by_fkey on app_public.jobs is E'@fieldName requester\n@foreignFieldName requestedJobs';

-- Jobs remember the integration they work with and their parameters (page ids, publishing target).
alter table app_public.jobs add column integration_id uuid;

alter table app_public.jobs add column params jsonb not null default '{}'::jsonb check (jsonb_typeof(params) = 'object');

comment on column app_public.jobs.params is 'What the job was asked to do: the page ids of an import, the target of a publication.';

create index jobs_org_id_integration_id_idx on app_public.jobs (org_id, integration_id);

create trigger _900_audit after insert or update or delete on app_public.jobs for each row execute procedure app_private.tg__audit();

-- Fair share of the worker between organizations. graphile-worker takes the available job with the lowest
-- `priority`, then the earliest `run_at`; at one priority the queue is one FIFO, and an organization that queued
-- 2,000 summaries would make every other organization wait for all of them. So an organization's job is queued at the number of that organization's jobs already queued or running: its n-th
-- outstanding job (counting from 0) ranks with every other organization's n-th, and run_at (FIFO) breaks the ties.
-- The worker so serves organizations round-robin: a lone organization still has the whole worker (priorities never
-- hold a job back, they only order the ready ones), and one with nothing outstanding is served next whatever the
-- others have queued.
--
-- Trade-offs, chosen deliberately:
-- - The priority is fixed when the job is queued (graphile-worker never re-ranks), so it counts what was outstanding
--   then. After an organization's backlog has partly drained, its next job can rank ahead of its own older ones:
--   order within one organization is not FIFO (it never was with WORKER_CONCURRENCY > 1). A retried job keeps its
--   priority, so a retry does not lose its place to jobs queued while it was failing.
-- - The count stops at 1000: an organization's jobs beyond its first thousand outstanding all
--   rank 1000, in FIFO order with other organizations' jobs beyond theirs. That bounds the count to 1000 index entries
--   (the partial index jobs_org_id_status_idx) whatever the backlog, and at the LLM's pace the thousandth round is
--   hours away, where finer order no longer matters.
-- - No lock is added. summarizeDocument already serializes an organization's requests (the allowance lock), so its
--   counts are exact; two integration jobs of one organization queued at the same instant may both get the same
--   count, a tie that run_at breaks. An exact O(1) counter row per organization would be one more per-organization
--   lock taken by every job transition, in a different order from the live-event counter's, which risks deadlocks.
-- - Not per-organization queues (graphile-worker's queue_name): a named queue runs one job at a time, which would cap
--   a lone organization at one concurrent job instead of WORKER_CONCURRENCY, and a concurrency cap per tier would
--   likewise idle the worker while one organization alone has work. Ordering alone is fair without losing throughput.
create function app_private.fair_share_priority(org_id uuid, job_id uuid) returns int
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select count(*)::int
      from (select 1 from app_public.jobs j
             where j.org_id = fair_share_priority.org_id and j.status in ('queued', 'running') and j.id <> fair_share_priority.job_id
             limit 1000) outstanding
  $$;
comment on function app_private.fair_share_priority(uuid, uuid) is
  'The graphile-worker priority of a new job: how many other jobs of its organization are queued or running (at most 1000).';

-- Jobs survive restarts, rolling deploys and outages (issue 11).

-- Fencing. A run of a job claims it (run_id) in its first transaction; from then on only that run opens the job's
-- RLS context (setting quire.job_run), so a stale run (an earlier attempt whose worker was presumed dead, or that is
-- still finishing after another worker took the job over) can never change the job, its summary or its usage.
-- failing_since is when the job's transient failures (LLM outages, rate limits) began, bounding how long it retries.
alter table app_private.job_tokens add column run_id uuid, add column failing_since timestamptz;

comment on column app_private.job_tokens.run_id is 'The run (one delivery to a worker) that owns the job now; only it opens the job''s context.';

create index job_tokens_lock_id_idx on app_private.job_tokens (lock_id) where lock_id is not null;

comment on column app_private.job_tokens.failing_since is 'When the job''s current streak of transient failures began (bounds LLM_RETRY_WINDOW_SECONDS).';

create function app_private.claim_job_run(job_id uuid, run_id uuid, runner_id text, lock_id text) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.job_tokens t
       set run_id = claim_job_run.run_id, runner_id = claim_job_run.runner_id, lock_id = claim_job_run.lock_id
     where t.job_id = claim_job_run.job_id
  $$;
comment on function app_private.claim_job_run(uuid, uuid, text, text) is
  'Makes `run_id` the only run that opens the job''s context, and records the worker process (heartbeat id) and graphile-worker lock id running it.';
grant execute on function app_private.claim_job_run(uuid, uuid, text, text) to :DATABASE_AUTHENTICATOR;

create function app_private.hold_job_run(job_id uuid, run_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- The share lock makes a concurrent claim wait until this transaction ends.
  perform 1 from app_private.job_tokens t where t.job_id = hold_job_run.job_id for share;
  return not exists (
    select 1 from app_private.job_tokens t
     where t.job_id = hold_job_run.job_id and t.run_id is not null and t.run_id <> hold_job_run.run_id);
end;
$$;
comment on function app_private.hold_job_run(uuid, uuid) is
  'False when another run has claimed the job since `run_id` did; otherwise keeps new claims out until the transaction ends.';
grant execute on function app_private.hold_job_run(uuid, uuid) to :DATABASE_AUTHENTICATOR;

-- Waiting without holding a worker slot and without using up the job's attempts: the job goes back to `queued`
-- and its graphile-worker job is added again under the same key, due after `delay` (add_job leaves the running entry
-- to be completed by the run, which then returns normally). Used for transient failures (a rate limit's
-- Retry-After, an LLM outage) and for runs cut short by a worker's shutdown. The queue, priority and flags of the
-- entry are kept. False (and nothing changed) when the caller's run no longer owns the job. In app_hidden: the
-- worker calls it as the authenticated role, inside the job's context.
create function app_hidden.retry_job_later(delay interval, error_code text, error_message text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid := app_public.current_job_id();
  v_entry record;
begin
  if v_job_id is null then
    return false;
  end if;
  select t.identifier, gj.payload, q.queue_name, gj.priority, gj.max_attempts,
         array(select jsonb_object_keys(coalesce(gj.flags, '{}'::jsonb))) as flags
    into v_entry
    from graphile_worker._private_jobs gj
    join graphile_worker._private_tasks t on t.id = gj.task_id
    left join graphile_worker._private_job_queues q on q.id = gj.job_queue_id
   where gj.key = v_job_id::text;
  if not found then
    return false;
  end if;
  update app_public.jobs j
     set status = 'queued', error_code = retry_job_later.error_code, error_message = left(retry_job_later.error_message, 1000), finished_at = null
   where j.id = v_job_id and j.status in ('queued', 'running');
  if not found then
    return false;
  end if;
  perform graphile_worker.add_job(v_entry.identifier, v_entry.payload, queue_name => v_entry.queue_name,
    run_at => now() + greatest(retry_job_later.delay, interval '0'), max_attempts => v_entry.max_attempts, job_key => v_job_id::text,
    priority => v_entry.priority, flags => nullif(v_entry.flags, '{}'::text[]));
  return true;
end;
$$;
comment on function app_hidden.retry_job_later(interval, text, text) is
  'In a job''s context: puts the job back in the queue due after `delay`, its attempts untouched; false when the run no longer owns it.';
grant execute on function app_hidden.retry_job_later(interval, text, text) to :DATABASE_AUTHENTICATED;

create function app_hidden.job_failing_since() returns timestamptz
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.job_tokens t set failing_since = coalesce(t.failing_since, now())
     where t.job_id = app_public.current_job_id()
    returning t.failing_since
  $$;
comment on function app_hidden.job_failing_since() is
  'In a job''s context: when its transient failures began (now, on the first); NULL when the run no longer owns the job.';
grant execute on function app_hidden.job_failing_since() to :DATABASE_AUTHENTICATED;

-- A worker frees the queue entries it holds but no longer runs: on every heartbeat (an entry whose completion or
-- failure could not be recorded, e.g. during a database outage; locked at least `min_locked_seconds` ago, as one
-- just taken may not be known as running yet) and when it stops (with `running` empty and no minimum).
create function app_private.unlock_worker_jobs(lock_id text, running bigint[], min_locked_seconds int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_count int;
begin
  update graphile_worker._private_jobs gj set locked_at = null, locked_by = null
   where gj.locked_by = unlock_worker_jobs.lock_id and gj.id <> all (coalesce(unlock_worker_jobs.running, '{}'))
     and gj.locked_at <= now() - make_interval(secs => unlock_worker_jobs.min_locked_seconds);
  get diagnostics v_count = row_count;
  update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
   where q.locked_by = unlock_worker_jobs.lock_id
     and not exists (
       select 1 from graphile_worker._private_jobs gj
        where gj.job_queue_id = q.id and gj.locked_by = unlock_worker_jobs.lock_id);
  return v_count;
end;
$$;
comment on function app_private.unlock_worker_jobs(text, bigint[], int) is
  'Unlocks the graphile-worker jobs (and queues) locked by `lock_id` at least `min_locked_seconds` ago, except those `running`; returns how many jobs.';
grant execute on function app_private.unlock_worker_jobs(text, bigint[], int) to :DATABASE_AUTHENTICATOR;

-- A summary job in two database calls: starting (claim, hold, settings, mark running, read) and finishing (hold,
-- settings, lock, summary, usage, success) are each one security definer function, called as one statement (one
-- round trip, one commit). Both take on the job's context first (its id, token and run as transaction-local settings),
-- so app_public.current_job_id() verifies the token once through app_hidden.enter_context and every trigger (audit
-- log, live events) sees the job's organization and requester as before. Both work only on that job, by its id,
-- after that check; the fencing is the same: a run claims the job when it starts, and its finish changes nothing
-- once another run has claimed it.

-- The job's input settings for the rest of the transaction; the job's id when they open its context, else NULL.
create function app_private.enter_job_run(job_id uuid, token text, run_id uuid) returns uuid
  language sql volatile
  set search_path = pg_catalog, pg_temp
  as $$
    select case when set_config('quire.job_id', enter_job_run.job_id::text, true) is not null
                 and set_config('quire.job_token', enter_job_run.token, true) is not null
                 and set_config('quire.job_run', enter_job_run.run_id::text, true) is not null
           then app_public.current_job_id() end
  $$;
comment on function app_private.enter_job_run(uuid, text, uuid) is
  'Sets a run''s job settings (quire.job_id, quire.job_token, quire.job_run) for this transaction; the job id when they open its context, else NULL.';

create table app_private.jobs_in_flight (
  org_id uuid primary key references app_public.organizations on delete cascade,
  jobs int not null default 0 check (jobs >= 0)
);

comment on table app_private.jobs_in_flight is 'Per organization: its jobs queued or running, kept by a trigger on jobs.';

alter table app_private.jobs_in_flight enable row level security;

alter table app_private.jobs_in_flight force row level security;

create policy as_definer on app_private.jobs_in_flight to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create function app_private.tg_jobs__in_flight() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_delta int := (case when tg_op <> 'DELETE' and new.status in ('queued', 'running') then 1 else 0 end)
               - (case when tg_op <> 'INSERT' and old.status in ('queued', 'running') then 1 else 0 end);
begin
  if v_delta > 0 then
    insert into app_private.jobs_in_flight as f (org_id, jobs) values (new.org_id, v_delta)
    on conflict (org_id) do update set jobs = f.jobs + excluded.jobs;
  elsif v_delta < 0 then
    update app_private.jobs_in_flight f set jobs = greatest(f.jobs + v_delta, 0) where f.org_id = old.org_id;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_jobs__in_flight() is 'Trigger (after insert, status update or delete on jobs): keeps jobs_in_flight.';

create trigger _500_in_flight after insert or update of status or delete on app_public.jobs
  for each row execute function app_private.tg_jobs__in_flight();

-- ==================================================================================================================
-- 10. Summaries
--
-- What the LLM wrote, bound to the document revision and template version it came from.
-- ==================================================================================================================

-- A summary is immutable output of exactly one job, made from one template version (an organization's or a
-- global one) and one revision of its document. It goes with its document; `stale` tells it is out of date.
create table app_public.summaries (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  document_id uuid not null,
  job_id uuid not null,
  template_version_id uuid,
  global_template_version_id uuid references app_public.global_template_versions on delete restrict,
  content text not null,
  provider text not null check (char_length(provider) between 1 and 50),
  model text not null check (char_length(model) between 1 and 200),
  prompt_tokens int not null check (prompt_tokens >= 0),
  completion_tokens int not null check (completion_tokens >= 0),
  latency_ms int not null check (latency_ms >= 0),
  document_revision int not null,
  stale boolean not null default false,
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete cascade,
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade,
  foreign key (org_id, template_version_id) references app_public.template_versions (org_id, id) on delete restrict,
  check (num_nonnulls(template_version_id, global_template_version_id) = 1)
);

create index summaries_id_idx on app_public.summaries (id);
comment on constraint summaries_pkey on app_public.summaries is '@behavior -single -update -delete';

comment on table app_public.summaries is
  E'@primaryKey id\n@behavior -insert -update -delete\nAn LLM summary of a document, written by the worker. Everyone in the organization reads it.';

comment on column app_public.summaries.document_revision is 'The document revision the summary was made from.';
comment on column app_public.summaries.stale is 'True once the document''s content changed after the summary was made.';

create index summaries_org_id_document_id_idx on app_public.summaries (org_id, document_id, created_at desc);
create index summaries_org_id_template_version_id_idx on app_public.summaries (org_id, template_version_id);
create index summaries_org_id_global_template_version_id_idx on app_public.summaries (org_id, global_template_version_id);

alter table app_public.jobs add foreign key (org_id, summary_id) references app_public.summaries (org_id, id);

create trigger _800_clear_jobs_summary_id before delete on app_public.summaries
  for each row execute procedure app_private.tg__clear_references('app_public.jobs', 'summary_id');

alter table app_public.summaries enable row level security;

alter table app_public.summaries force row level security;

create policy as_definer on app_public.summaries to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.summaries for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy insert_as_runner on app_public.summaries for insert to :DATABASE_AUTHENTICATED
  with check (job_id = app_public.current_job_id() and org_id = app_public.current_org_id());

grant select on app_public.summaries to :DATABASE_AUTHENTICATED;

grant insert (org_id, document_id, job_id, template_version_id, global_template_version_id, content, provider, model,
  prompt_tokens, completion_tokens, latency_ms, document_revision) on app_public.summaries to :DATABASE_AUTHENTICATED;

create function app_public.summarize_document(document_id uuid, template_id uuid default null) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_version record;
  v_job app_public.jobs;
begin
  perform app_private.require_role('member', 'Viewers cannot request summaries.', 'Sign in to request summaries.');
  if not exists (select 1 from app_public.documents d where d.id = summarize_document.document_id and d.org_id = v_org_id) then
    raise exception 'No such document.' using errcode = 'NTFND';
  end if;
  select * into v_version
    from app_private.template_version_for(v_org_id, coalesce(summarize_document.template_id, app_private.default_template_id(v_org_id)));
  if v_version.template_version_id is null and v_version.global_template_version_id is null then
    raise exception 'No such template.' using errcode = 'NTFND';
  end if;
  perform app_private.check_allowance(v_org_id);
  insert into app_public.jobs (org_id, kind, document_id, template_version_id, global_template_version_id, requested_by)
    values (v_org_id, 'summarize', summarize_document.document_id, v_version.template_version_id, v_version.global_template_version_id,
            app_public.current_user_id())
    returning * into v_job;
  perform app_private.enqueue_job(v_job, 'summarize');
  return v_job;
end;
$$;
comment on function app_public.summarize_document(uuid, uuid) is
  E'@resultFieldName job\nQueues an LLM summary of a document with a template (default: the organization''s defaultTemplateId, else the global "Executive summary") and returns the job at once; follow it with the jobUpdated subscription. Members and above. QUOTA_EXCEEDED once the month''s allowance is used up.';
grant execute on function app_public.summarize_document(uuid, uuid) to :DATABASE_AUTHENTICATED;

create trigger _900_live_event after insert or update or delete on app_public.summaries
  for each row execute procedure app_private.tg__live_event('summary');

comment on constraint jobs_org_id_summary_id_fkey on app_public.jobs is E'@fieldName summary\n@foreignFieldName jobsBySummary';

comment on constraint summaries_org_id_document_id_fkey on app_public.summaries is E'@fieldName document\n@foreignFieldName summaries';

comment on constraint summaries_org_id_job_id_fkey on app_public.summaries is E'@fieldName job\n@foreignFieldName producedSummary';

comment on constraint summaries_org_id_template_version_id_fkey on app_public.summaries is E'@fieldName templateVersion\n@foreignFieldName summaries';

alter table app_public.summaries add column published_url text check (char_length(published_url) <= 2000 and published_url ~ '^https?://');

comment on column app_public.summaries.published_url is 'Where the summary was last published (all targets are in publications).';

create policy update_as_publisher on app_public.summaries for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_job_kind() = 'publish')
  with check (org_id = app_public.current_org_id());

grant update (published_url) on app_public.summaries to :DATABASE_AUTHENTICATED;

create trigger _900_audit after insert or update or delete on app_public.summaries for each row execute procedure app_private.tg__audit('content');

-- A summary made while its document was being edited describes an older revision: it is stale from the start.
-- Set by a trigger so every writer gets it; the document row is share-locked so an edit committing at the same time
-- either is seen here or, waiting for this transaction, marks the new summary stale itself.
create function app_private.tg_summaries__stale_on_insert() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_revision int;
begin
  select d.revision into v_revision from app_public.documents d
   where d.org_id = new.org_id and d.id = new.document_id
     for share;
  new.stale := new.stale or coalesce(v_revision > new.document_revision, false);
  return new;
end;
$$;
comment on function app_private.tg_summaries__stale_on_insert() is 'Trigger: a new summary of an older revision than its document''s is stale.';

create trigger _200_stale_on_insert before insert on app_public.summaries
  for each row execute procedure app_private.tg_summaries__stale_on_insert();

-- A summary is an LLM's answer: at most 128 KiB (about 32,000 tokens). The providers refuse longer completions
-- (LLM_BAD_RESPONSE) before this check would.
alter table app_public.summaries add constraint summaries_content_check
  check (octet_length(content) <= 131072) not valid;

-- Start: claim the run (only with the job's token), mark the job running, and read the document and the rendered
-- prompt (with `marker` where the content goes). outcome: started; gone (the token opens nothing: the job was
-- cancelled, finished, or is not this token's); document-gone (the document or template no longer exists).
create function app_private.start_summary_job(job_id uuid, token text, run_id uuid, runner_id text, lock_id text, marker text,
  out outcome text, out org_id uuid, out requested_by uuid, out document_id uuid, out template_version_id uuid,
  out global_template_version_id uuid, out revision int, out content text, out prompt text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- The claim waits for any other run's open transaction on the job (its row lock), then keeps the job this run's.
  update app_private.job_tokens t
     set run_id = start_summary_job.run_id, runner_id = start_summary_job.runner_id, lock_id = start_summary_job.lock_id
   where t.job_id = start_summary_job.job_id
     and t.token_hash = sha256(convert_to(coalesce(start_summary_job.token, ''), 'UTF8'));
  if app_private.enter_job_run(start_summary_job.job_id, start_summary_job.token, start_summary_job.run_id) is null then
    outcome := 'gone';
    return;
  end if;
  update app_public.jobs j
     set status = 'running', attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
   where j.id = start_summary_job.job_id and j.status in ('queued', 'running')
  returning j.org_id, j.requested_by, j.document_id, j.template_version_id, j.global_template_version_id
    into org_id, requested_by, document_id, template_version_id, global_template_version_id;
  if not found then
    outcome := 'gone';
    return;
  end if;
  select d.revision, d.content, app_public.render_template(coalesce(tv.body, gv.body), d.title, start_summary_job.marker, o.name)
    into revision, content, prompt
    from app_public.documents d
    join app_public.organizations o on o.id = d.org_id
    left join app_public.template_versions tv on tv.org_id = d.org_id and tv.id = start_summary_job.template_version_id
    left join app_public.global_template_versions gv on gv.id = start_summary_job.global_template_version_id
   where d.org_id = start_summary_job.org_id and d.id = start_summary_job.document_id and (tv.id is not null or gv.id is not null);
  outcome := case when found then 'started' else 'document-gone' end;
end;
$$;
comment on function app_private.start_summary_job(uuid, text, uuid, text, text, text) is
  'A summary run''s first call: claims the job for `run_id` (with its token), marks it running and returns its document and rendered prompt; outcome started, gone or document-gone.';
grant execute on function app_private.start_summary_job(uuid, text, uuid, text, text, text) to :DATABASE_AUTHENTICATOR;

-- Finish: write the summary, its usage row and the job's success together, only while this run owns the job and
-- it is still running. At-least-once delivery meets the unique job_id of summaries and usage_records, so there is
-- never a second summary or charge. outcome: succeeded; superseded (another run claimed the job: nothing
-- changed); gone (cancelled or finished meanwhile: the result is dropped).
create function app_private.finish_summary_job(job_id uuid, token text, run_id uuid, content text, provider text, model text,
  prompt_tokens int, completion_tokens int, latency_ms int, document_revision int) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job app_public.jobs;
  v_summary_id uuid;
begin
  -- The share lock keeps a new claim out until this transaction ends.
  perform 1 from app_private.job_tokens t where t.job_id = finish_summary_job.job_id for share;
  if exists (select 1 from app_private.job_tokens t
              where t.job_id = finish_summary_job.job_id and t.run_id is not null and t.run_id <> finish_summary_job.run_id) then
    return 'superseded';
  end if;
  if app_private.enter_job_run(finish_summary_job.job_id, finish_summary_job.token, finish_summary_job.run_id) is null then
    return 'gone';
  end if;
  select j.* into v_job from app_public.jobs j where j.id = finish_summary_job.job_id and j.status = 'running' for update;
  if not found then
    return 'gone';
  end if;
  insert into app_public.summaries (org_id, document_id, job_id, template_version_id, global_template_version_id, content,
                                    provider, model, prompt_tokens, completion_tokens, latency_ms, document_revision)
  values (v_job.org_id, v_job.document_id, v_job.id, v_job.template_version_id, v_job.global_template_version_id,
          finish_summary_job.content, finish_summary_job.provider, finish_summary_job.model, finish_summary_job.prompt_tokens,
          finish_summary_job.completion_tokens, finish_summary_job.latency_ms, finish_summary_job.document_revision)
  on conflict on constraint summaries_org_id_job_id_key do nothing
  returning id into v_summary_id;
  if v_summary_id is not null then
    insert into app_public.usage_records (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens)
    values (v_job.org_id, v_job.id, v_summary_id, finish_summary_job.provider, finish_summary_job.model,
            finish_summary_job.prompt_tokens, finish_summary_job.completion_tokens)
    on conflict on constraint usage_records_org_id_job_id_key do nothing;
  end if;
  update app_public.jobs j
     set status = 'succeeded', finished_at = now(), error_code = null, error_message = null, summary_id = coalesce(v_summary_id, j.summary_id)
   where j.id = v_job.id;
  return 'succeeded';
end;
$$;
comment on function app_private.finish_summary_job(uuid, text, uuid, text, text, text, int, int, int, int) is
  'A summary run''s last call: writes the summary, its usage and the job''s success while the run owns the running job; succeeded, superseded or gone.';
grant execute on function app_private.finish_summary_job(uuid, text, uuid, text, text, text, int, int, int, int) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- 11. Usage and allowances
--
-- Token usage per job and the tier allowances it is counted against, with running counters so a check is one row.
-- ==================================================================================================================

-- Usage is what the organization is charged for: one row per successful job, written in the transaction that
-- writes its summary ((org_id, job_id) is unique, so a job delivered twice is never charged twice). It outlives the summary.
create table app_public.usage_records (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  job_id uuid not null,
  summary_id uuid,
  provider text not null,
  model text not null,
  prompt_tokens int not null check (prompt_tokens >= 0),
  completion_tokens int not null check (completion_tokens >= 0),
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade,
  foreign key (org_id, summary_id) references app_public.summaries (org_id, id)
);

-- Usage is charged for good: the record outlives its summary.
create trigger _800_clear_usage_records_summary_id before delete on app_public.summaries
  for each row execute procedure app_private.tg__clear_references('app_public.usage_records', 'summary_id');

create index usage_records_id_idx on app_public.usage_records (id);
comment on constraint usage_records_pkey on app_public.usage_records is '@behavior -single -update -delete';

comment on table app_public.usage_records is
  E'@primaryKey id\n@behavior -insert -update -delete\nLLM usage charged to the organization, one row per summary made.';

create index usage_records_org_id_created_at_idx on app_public.usage_records (org_id, created_at);
create index usage_records_org_id_summary_id_idx on app_public.usage_records (org_id, summary_id);

alter table app_public.usage_records enable row level security;

alter table app_public.usage_records force row level security;

create policy as_definer on app_public.usage_records to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.usage_records for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy insert_as_runner on app_public.usage_records for insert to :DATABASE_AUTHENTICATED
  with check (job_id = app_public.current_job_id() and org_id = app_public.current_org_id());

grant select on app_public.usage_records to :DATABASE_AUTHENTICATED;
grant insert (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens) on app_public.usage_records to :DATABASE_AUTHENTICATED;

-- Monthly allowances per tier. Operators change them with app_admin.set_tier_allowance; summarizeDocument refuses
-- (QUOTA, QUOTA_EXCEEDED) once the month's summaries (made or in flight) or tokens reach the allowance.
create table app_private.tier_allowances (
  tier app_public.subscription_tier primary key,
  monthly_summaries int not null check (monthly_summaries >= 0),
  monthly_tokens bigint not null check (monthly_tokens >= 0)
);

comment on table app_private.tier_allowances is 'Monthly summary and token allowance of each subscription tier.';

alter table app_private.tier_allowances enable row level security;

alter table app_private.tier_allowances force row level security;

create policy as_definer on app_private.tier_allowances to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create function app_admin.set_tier_allowance(tier app_public.subscription_tier, monthly_summaries int, monthly_tokens bigint)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_allowances a
       set monthly_summaries = set_tier_allowance.monthly_summaries, monthly_tokens = set_tier_allowance.monthly_tokens
     where a.tier = set_tier_allowance.tier
  $$;
comment on function app_admin.set_tier_allowance(app_public.subscription_tier, int, bigint) is
  E'Sets a tier''s monthly allowance of summaries and LLM tokens.\nExample: select app_admin.set_tier_allowance(''free'', 200, 1000000);';

-- The current calendar month (UTC) of an organization's usage.
create type app_public.organization_usage as (
  period_start timestamptz,
  period_end timestamptz,
  tier app_public.subscription_tier,
  summaries int,
  jobs_in_flight int,
  prompt_tokens bigint,
  completion_tokens bigint,
  summary_allowance int,
  token_allowance bigint
);

comment on type app_public.organization_usage is 'Usage of the current month (UTC) against the tier''s allowance.';

create function app_private.usage_of(org_id uuid) returns app_public.organization_usage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select p.start, p.start + interval '1 month', o.tier,
           coalesce(c.summaries, 0), coalesce(f.jobs, 0), coalesce(c.prompt_tokens, 0), coalesce(c.completion_tokens, 0),
           a.monthly_summaries, a.monthly_tokens
      from app_public.organizations o
      join app_private.tier_allowances a on a.tier = o.tier
     cross join (select app_private.month_start(now()) as start) p
      left join app_private.usage_counters c on c.org_id = o.id and c.month_start = p.start
      left join app_private.jobs_in_flight f on f.org_id = o.id
     where o.id = usage_of.org_id
  $$;
comment on function app_private.usage_of(uuid) is 'An organization''s usage this month and its allowance, from its running counters.';

create function app_public.organization_usage() returns app_public.organization_usage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select * from app_private.usage_of(app_public.current_org_id()) where app_public.current_org_id() is not null $$;
comment on function app_public.organization_usage() is
  'The current organization''s usage this month (UTC): summaries made, jobs in flight, tokens, and the tier''s allowance.';
grant execute on function app_public.organization_usage() to :DATABASE_AUTHENTICATED;

create function app_private.check_allowance(org_id uuid) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_usage app_public.organization_usage;
begin
  perform pg_advisory_xact_lock(hashtextextended('quire.allowance:' || check_allowance.org_id::text, 0));
  v_usage := app_private.usage_of(check_allowance.org_id);
  if v_usage.summaries + v_usage.jobs_in_flight >= v_usage.summary_allowance then
    raise exception 'This month''s allowance of % summaries is used up.', v_usage.summary_allowance using errcode = 'QUOTA';
  end if;
  if v_usage.prompt_tokens + v_usage.completion_tokens >= v_usage.token_allowance then
    raise exception 'This month''s allowance of % tokens is used up.', v_usage.token_allowance using errcode = 'QUOTA';
  end if;
end;
$$;
comment on function app_private.check_allowance(uuid) is 'Raises QUOTA (QUOTA_EXCEEDED) when the organization''s monthly allowance is used up; holds a per-organization lock until commit.';

comment on constraint usage_records_org_id_job_id_fkey on app_public.usage_records is E'@fieldName job\n@foreignFieldName usageRecord';

comment on constraint usage_records_org_id_summary_id_fkey on app_public.usage_records is E'@fieldName summary\n@foreignFieldName usageRecords';

create trigger _900_audit after insert or update or delete on app_public.usage_records for each row execute procedure app_private.tg__audit();

-- The allowance check in O(1). Rather than count the month's usage rows and the organization's in-flight jobs on
-- every request (aggregates that grow with the month), two running counters hold the same numbers, kept by triggers in the transactions that change them, so they are exactly as current as
-- the rows: the check (still serialized per organization by check_allowance's lock) reads one row of each.
create table app_private.usage_counters (
  org_id uuid not null references app_public.organizations on delete cascade,
  month_start timestamptz not null,
  summaries int not null default 0 check (summaries >= 0),
  prompt_tokens bigint not null default 0 check (prompt_tokens >= 0),
  completion_tokens bigint not null default 0 check (completion_tokens >= 0),
  primary key (org_id, month_start)
);

comment on table app_private.usage_counters is 'Per organization and calendar month (UTC): the usage rows made and their tokens, kept by a trigger on usage_records.';

alter table app_private.usage_counters enable row level security;

alter table app_private.usage_counters force row level security;

create policy as_definer on app_private.usage_counters to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- The calendar month (UTC) a moment falls in, as the allowance counts it.
create function app_private.month_start(at timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select date_trunc('month', month_start.at at time zone 'UTC') at time zone 'UTC' $$;
comment on function app_private.month_start(timestamptz) is 'The start of the calendar month (UTC) of `at`.';

-- Removals only update (never insert): when an organization is deleted its counters go with it, and a cascading
-- delete of its rows must not bring a counter back.
create function app_private.tg_usage_records__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.usage_counters as c (org_id, month_start, summaries, prompt_tokens, completion_tokens)
    values (new.org_id, app_private.month_start(new.created_at), 1, new.prompt_tokens, new.completion_tokens)
    on conflict (org_id, month_start) do update
      set summaries = c.summaries + 1, prompt_tokens = c.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = c.completion_tokens + excluded.completion_tokens;
  else
    update app_private.usage_counters c
       set summaries = greatest(c.summaries - 1, 0), prompt_tokens = greatest(c.prompt_tokens - old.prompt_tokens, 0),
           completion_tokens = greatest(c.completion_tokens - old.completion_tokens, 0)
     where c.org_id = old.org_id and c.month_start = app_private.month_start(old.created_at);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_usage_records__count() is 'Trigger (after insert or delete on usage_records): keeps usage_counters.';

create trigger _500_count after insert or delete on app_public.usage_records
  for each row execute function app_private.tg_usage_records__count();

-- ==================================================================================================================
-- 12. Live events
--
-- Live events: every change a subscriber may see, numbered per organization after commit, kept for catch-up.
-- ==================================================================================================================

-- Live updates. Every change of a job, document or summary appends an event to the organization's outbox, numbered
-- by a per-organization sequence, and NOTIFYs the channel `quire_live` with ids only. Each server holds one LISTEN
-- connection and hands an event to the subscribers of that organization alone (the organization comes from their
-- verified token, never from an argument); subscribers re-read the rows under their own RLS, and a reconnecting
-- client replays what it missed from the outbox with `since`. The counter row serializes an organization's writers, so sequence order is commit order.
create table app_private.live_event_counters (
  org_id uuid primary key references app_public.organizations on delete cascade,
  last_seq bigint not null
);

comment on table app_private.live_event_counters is 'The last live-event sequence number of each organization.';

alter table app_private.live_event_counters enable row level security;

alter table app_private.live_event_counters force row level security;

create policy as_definer on app_private.live_event_counters to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create table app_public.live_events (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  seq bigint not null,
  entity text not null check (entity in ('job', 'document', 'summary', 'integration')),
  op text not null check (op in ('insert', 'update', 'delete')),
  entity_id uuid not null,
  document_id uuid,
  created_at timestamptz not null default now(),
  unique (org_id, seq),
  primary key (org_id, id)
);

create index live_events_id_idx on app_public.live_events (id);
comment on constraint live_events_pkey on app_public.live_events is '@behavior -single -update -delete';

comment on table app_public.live_events is
  E'@primaryKey id\n@behavior -*\nThe organization''s recent changes (the outbox the subscriptions replay from with `since`); kept for LIVE_EVENT_RETENTION.';

create index live_events_org_id_created_at_idx on app_public.live_events (org_id, created_at);

alter table app_public.live_events enable row level security;

alter table app_public.live_events force row level security;

create policy as_definer on app_public.live_events to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.live_events for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

grant select on app_public.live_events to :DATABASE_AUTHENTICATED;

-- The outbox is bounded: the worker's prune_live_events task (hourly) drops events older than the retention.
create function app_private.prune_live_events(keep interval) returns bigint
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with gone as (
      delete from app_public.live_events e
       using app_private.live_event_counters c
       where e.org_id = c.org_id and e.created_at < now() - prune_live_events.keep
      returning 1)
    select count(*) from gone
  $$;
comment on function app_private.prune_live_events(interval) is 'Deletes live events older than `keep`; returns how many.';
grant execute on function app_private.prune_live_events(interval) to :DATABASE_AUTHENTICATOR;

-- A subscription started after a mutation must not miss the events the mutation's job emits before the client
-- subscribes. Mutations that emit events return `liveSeq`: this function, evaluated in the mutation's own statement.
-- Being stable, it reads the counter as the statement's snapshot saw it when it started, before the statement's
-- own events: every event the mutation emits, and every later one, has a greater seq, so subscribing with
-- `since: liveSeq` delivers them all (and at most a few concurrent earlier ones).
create function app_public.live_seq() returns bigint
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case when o.id is null then null else coalesce((select c.last_seq from app_private.live_event_counters c where c.org_id = o.id), 0) end
      from (select app_public.current_org_id() as id) o
  $$;
comment on function app_public.live_seq() is
  E'@behavior -*\nThe caller''s organization''s last live-event seq (0 before its first event; NULL without a session), as the calling statement''s snapshot sees it.';
grant execute on function app_public.live_seq() to :DATABASE_AUTHENTICATED;

-- Live events numbered after commit. Each organization numbers its live events (seq) without gaps, and every event
-- numbered later has a greater number, which the subscriptions rely on: a skipped number means an event to fetch
-- from the outbox, and `since` resumes exactly. Numbering inside the writing transaction would hold the
-- organization's counter row locked until commit, and NOTIFY's commit takes a lock global to the cluster: every
-- transaction of an organization would wait for the one before it, commit and WAL flush included
-- (bench/audit-contention.ts with documents: 267 transactions/s for 100 writers, 915 without). So a change appends its event unnumbered, with no
-- lock and no notification, and one numberer (each API server runs one, server/live-numberer.ts; the database lets
-- one work at a time) numbers the committed events of each organization in the order they were appended and
-- notifies quire_live for each, in that order, from its own transaction. An event is unnumbered only until the
-- next run (LIVE_NUMBER_INTERVAL_MS), and only inside the outbox: subscribers hear of it once it is numbered.
alter table app_public.live_events
  alter column seq drop not null,
  add column append_order bigint generated always as identity;

comment on column app_public.live_events.seq is 'The organization''s event number, without gaps, given after the writing transaction commits.';
comment on column app_public.live_events.append_order is 'The order events were appended in, across all organizations; the numberer numbers each organization''s events in this order.';

-- Only the unnumbered events, so the numberer's frequent look costs nothing when there is nothing to number.
create index live_events_unnumbered_idx on app_public.live_events (org_id, append_order) where seq is null;

-- The numberer: up to `batch` committed unnumbered events, organization by organization under its counter row,
-- numbered on from the counter in append order and announced on quire_live in that order. One numberer at a time:
-- a second caller returns 0 at once (the running one numbers whatever it can see; a later run the rest).
create function app_private.number_live_events(batch int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org uuid;
  v_last bigint;
  v_count int;
  v_numbered int := 0;
begin
  if not pg_try_advisory_xact_lock(hashtextextended('quire.live_number', 0)) then
    return 0;
  end if;
  for v_org in
    select distinct u.org_id from app_public.live_events u where u.seq is null
  loop
    insert into app_private.live_event_counters (org_id, last_seq) values (v_org, 0)
      on conflict on constraint live_event_counters_pkey do nothing;
    select c.last_seq into v_last from app_private.live_event_counters c where c.org_id = v_org for update;
    with next as (
      select e.id, v_last + row_number() over (order by e.append_order) as seq
        from app_public.live_events e
       where e.org_id = v_org and e.seq is null
       order by e.append_order
       limit greatest(number_live_events.batch - v_numbered, 0)
    )
    update app_public.live_events e set seq = next.seq from next where e.id = next.id;
    get diagnostics v_count = row_count;
    update app_private.live_event_counters c set last_seq = v_last + v_count where c.org_id = v_org;
    perform pg_notify('quire_live', json_build_object('orgId', e.org_id, 'seq', e.seq, 'entity', e.entity, 'op', e.op,
                                                      'entityId', e.entity_id, 'documentId', e.document_id)::text)
       from app_public.live_events e
      where e.org_id = v_org and e.seq > v_last and e.seq <= v_last + v_count
      order by e.seq;
    v_numbered := v_numbered + v_count;
    exit when v_numbered >= number_live_events.batch;
  end loop;
  return v_numbered;
end;
$$;
comment on function app_private.number_live_events(int) is
  'Numbers up to `batch` committed live events (each organization''s in append order, on from its counter) and notifies quire_live for each; returns how many. 0 when another numberer is at work.';
grant execute on function app_private.number_live_events(int) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- 13. Integrations
--
-- Notion and Confluence: connections with sealed tokens, OAuth state, sync runs and publications.
-- ==================================================================================================================

-- Notion workspaces and Confluence Cloud sites an organization connected. The row says what is connected and how
-- it is doing; the OAuth tokens are elsewhere (app_private.integration_secrets), sealed, and never in this table.
create type app_public.integration_provider as enum ('notion', 'confluence');

create type app_public.integration_status as enum ('connected', 'needs_reauth', 'disconnected');

create table app_public.integrations (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  provider app_public.integration_provider not null,
  status app_public.integration_status not null default 'connected',
  external_id text not null check (char_length(external_id) between 1 and 200),
  external_name text not null default '' check (char_length(external_name) <= 500),
  external_url text check (char_length(external_url) <= 2000 and external_url ~ '^https://'),
  scopes text[] not null default '{}',
  connected_by uuid references app_public.users on delete set null,
  last_sync_at timestamptz,
  last_sync_status text check (last_sync_status in ('finished', 'partial', 'failed')),
  last_error_code text check (last_error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, provider, external_id)
);

create index integrations_id_idx on app_public.integrations (id);
comment on constraint integrations_pkey on app_public.integrations is '@behavior -single -update -delete';

comment on table app_public.integrations is
  E'@primaryKey id\n@behavior -insert -update -delete\nA Notion workspace or Confluence Cloud site connected to the organization (startIntegration). Admins connect and disconnect; everyone in the organization reads.';

comment on column app_public.integrations.external_id is 'The Notion workspace id or the Atlassian cloud id of the site.';
comment on column app_public.integrations.status is E'@behavior +attribute:filterBy\nconnected; needs_reauth once the provider refused our refresh token (an admin connects again); disconnected.';
comment on column app_public.integrations.last_error_code is 'Why the last sync or token refresh failed, e.g. INVALID_GRANT or RATE_LIMITED.';

comment on constraint integrations_connected_by_fkey on app_public.integrations is E'@fieldName connectedByUser\n@foreignFieldName connectedIntegrations';

create index integrations_org_id_connected_by_idx on app_public.integrations (org_id, connected_by);

create trigger _100_timestamps before insert or update on app_public.integrations
  for each row execute procedure app_private.tg__timestamps();

create trigger _900_live_event after insert or update or delete on app_public.integrations
  for each row execute procedure app_private.tg__live_event('integration');

alter table app_public.integrations enable row level security;

alter table app_public.integrations force row level security;

create policy as_definer on app_public.integrations to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.integrations for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

grant select on app_public.integrations to :DATABASE_AUTHENTICATED;

-- Sealed OAuth tokens: XChaCha20-Poly1305 with the organization, integration, provider and purpose as associated
-- data and the id of the key that sealed them (lib/sealing.ts). The database never sees a key or a plaintext
-- token; a ciphertext copied to another row fails to open.
create table app_private.integration_secrets (
  integration_id uuid not null,
  org_id uuid not null references app_public.organizations on delete cascade,
  key_id text not null check (char_length(key_id) between 1 and 64),
  access_nonce bytea not null,
  access_ciphertext bytea not null,
  refresh_nonce bytea,
  refresh_ciphertext bytea,
  access_expires_at timestamptz,
  updated_at timestamptz not null default now(),
  check ((refresh_nonce is null) = (refresh_ciphertext is null)),
  primary key (org_id, integration_id),
  foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete cascade
);

comment on table app_private.integration_secrets is 'An integration''s OAuth tokens, sealed (lib/sealing.ts) under key_id.';

create index integration_secrets_key_id_idx on app_private.integration_secrets (key_id);

alter table app_private.integration_secrets enable row level security;

alter table app_private.integration_secrets force row level security;

create policy as_definer on app_private.integration_secrets to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- The OAuth authorization-code flow's `state`: random, single-use, valid for 10 minutes, bound to the user, the
-- organization and the provider, and stored as its SHA-256. The PKCE verifier waits here for the callback.
create table app_private.oauth_states (
  state_hash bytea not null check (length(state_hash) = 32),
  org_id uuid not null references app_public.organizations on delete cascade,
  user_id uuid not null references app_public.users on delete cascade,
  provider app_public.integration_provider not null,
  return_to text not null,
  code_verifier text not null,
  expires_at timestamptz not null default now() + interval '10 minutes',
  used_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (org_id, state_hash)
);

-- The provider's callback brings only the state. A SHA-256 of random bytes does not collide, so the index need
-- not be unique (a unique index without org_id would not shard).
create index oauth_states_state_hash_idx on app_private.oauth_states (state_hash);

comment on table app_private.oauth_states is 'Pending OAuth authorizations: hashed state, who started it, where to return, the PKCE verifier.';

create index oauth_states_user_id_idx on app_private.oauth_states (user_id);

alter table app_private.oauth_states enable row level security;

alter table app_private.oauth_states force row level security;

create policy as_definer on app_private.oauth_states to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

alter table app_public.documents add foreign key (org_id, integration_id) references app_public.integrations (org_id, id);

create trigger _800_clear_documents_integration_id before delete on app_public.integrations
  for each row execute procedure app_private.tg__clear_references('app_public.documents', 'integration_id');

comment on constraint documents_org_id_integration_id_fkey on app_public.documents is E'@fieldName integration\n@foreignFieldName documents';

alter table app_public.jobs add foreign key (org_id, integration_id) references app_public.integrations (org_id, id);

create trigger _800_clear_jobs_integration_id before delete on app_public.integrations
  for each row execute procedure app_private.tg__clear_references('app_public.jobs', 'integration_id');

comment on constraint jobs_org_id_integration_id_fkey on app_public.jobs is E'@fieldName integration\n@foreignFieldName jobs';

-- Each import or sync run, counted: a run that could not fetch everything is `partial`, never silently finished.
create table app_public.integration_sync_runs (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  integration_id uuid not null,
  job_id uuid not null,
  kind app_public.job_kind not null check (kind in ('import', 'sync')),
  status text not null default 'running' check (status in ('running', 'finished', 'partial', 'failed')),
  seen int not null default 0,
  imported int not null default 0,
  updated int not null default 0,
  skipped int not null default 0,
  failed int not null default 0,
  deleted_at_source int not null default 0,
  error_code text check (error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete cascade,
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade
);

create index integration_sync_runs_id_idx on app_public.integration_sync_runs (id);
comment on constraint integration_sync_runs_pkey on app_public.integration_sync_runs is '@behavior -single -update -delete';

comment on table app_public.integration_sync_runs is
  E'@primaryKey id\n@behavior -insert -update -delete\nOne import or sync of an integration: pages seen, imported, updated, skipped, failed, and deleted at the source.';

comment on constraint integration_sync_runs_org_id_integration_id_fkey on app_public.integration_sync_runs is E'@fieldName integration\n@foreignFieldName syncRuns';

comment on constraint integration_sync_runs_org_id_job_id_fkey on app_public.integration_sync_runs is E'@fieldName job\n@foreignFieldName syncRun';

create index integration_sync_runs_org_id_integration_id_idx on app_public.integration_sync_runs (org_id, integration_id, started_at desc);

-- Where a summary was published: publishing the same summary to the same target again updates that page.
create table app_public.summary_publications (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  summary_id uuid not null,
  integration_id uuid not null,
  target_key text not null check (char_length(target_key) between 1 and 500),
  external_id text not null check (char_length(external_id) between 1 and 200),
  url text not null check (char_length(url) <= 2000 and url ~ '^https?://'),
  published_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, summary_id, integration_id, target_key),
  foreign key (org_id, summary_id) references app_public.summaries (org_id, id) on delete cascade,
  foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete cascade
);

create index summary_publications_id_idx on app_public.summary_publications (id);
comment on constraint summary_publications_pkey on app_public.summary_publications is '@behavior -single -update -delete';

comment on table app_public.summary_publications is
  E'@primaryKey id\n@behavior -insert -update -delete\nA summary published as a Notion or Confluence page; re-publishing to the same target updates it.';

comment on column app_public.summary_publications.target_key is 'The target, normalized: notion:<parent page id> or confluence:<space id>:<parent page id or ->.';

comment on constraint summary_publications_org_id_summary_id_fkey on app_public.summary_publications is E'@fieldName summary\n@foreignFieldName publications';

comment on constraint summary_publications_org_id_integration_id_fkey on app_public.summary_publications is E'@fieldName integration\n@foreignFieldName publications';

create index summary_publications_org_id_integration_id_idx on app_public.summary_publications (org_id, integration_id);

create trigger _100_timestamps before insert or update on app_public.summary_publications
  for each row execute procedure app_private.tg__timestamps();

alter table app_public.integration_sync_runs enable row level security;

alter table app_public.integration_sync_runs force row level security;

create policy as_definer on app_public.integration_sync_runs to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.integration_sync_runs for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy update_as_runner on app_public.integration_sync_runs for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and job_id = app_public.current_job_id()) with check (org_id = app_public.current_org_id());

grant select on app_public.integration_sync_runs to :DATABASE_AUTHENTICATED;

grant update (status, seen, imported, updated, skipped, failed, deleted_at_source, error_code, finished_at)
  on app_public.integration_sync_runs to :DATABASE_AUTHENTICATED;

alter table app_public.summary_publications enable row level security;

alter table app_public.summary_publications force row level security;

create policy as_definer on app_public.summary_publications to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_own_org on app_public.summary_publications for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

create policy insert_as_publisher on app_public.summary_publications for insert to :DATABASE_AUTHENTICATED
  with check (org_id = app_public.current_org_id() and app_public.current_job_kind() = 'publish');

create policy update_as_publisher on app_public.summary_publications for update to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_job_kind() = 'publish')
  with check (org_id = app_public.current_org_id());

grant select on app_public.summary_publications to :DATABASE_AUTHENTICATED;

grant insert (org_id, summary_id, integration_id, target_key, external_id, url), update (external_id, url, published_at)
  on app_public.summary_publications to :DATABASE_AUTHENTICATED;

-- Connecting, step 1 (startIntegration): the server generates the state and PKCE verifier, this records them for
-- the caller. Admins and owners only. Hidden from GraphQL: the server's startIntegration mutation calls it.
create function app_public.begin_integration_oauth(provider app_public.integration_provider, state_hash bytea, return_to text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
begin
  perform app_private.require_role('admin', 'Only admins and owners connect integrations.', 'Sign in to connect an integration.');
  -- Abandoned authorizations do not pile up.
  delete from app_private.oauth_states s where s.expires_at < now() - interval '1 day';
  insert into app_private.oauth_states (state_hash, org_id, user_id, provider, return_to, code_verifier)
    values (begin_integration_oauth.state_hash, app_public.current_org_id(), app_public.current_user_id(),
            begin_integration_oauth.provider, begin_integration_oauth.return_to, begin_integration_oauth.code_verifier);
end;
$$;
comment on function app_public.begin_integration_oauth(app_public.integration_provider, bytea, text, text) is
  E'@behavior -*\nRecords a pending OAuth authorization for the caller (admins and owners); called by startIntegration.';
grant execute on function app_public.begin_integration_oauth(app_public.integration_provider, bytea, text, text) to :DATABASE_AUTHENTICATED;

-- Connecting, step 2 (GET /oauth/:provider/callback, no session: the browser returns from the provider). The
-- state is consumed at once, whatever follows, so it can never be replayed; an unknown, expired, used or
-- other-provider state answers nothing. Called by the server as the authenticator.
create type app_private.oauth_grant as (org_id uuid, user_id uuid, return_to text, code_verifier text);

create function app_private.consume_oauth_state(provider app_public.integration_provider, state_hash bytea) returns app_private.oauth_grant
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.oauth_states s set used_at = now()
     where s.state_hash = consume_oauth_state.state_hash and s.provider = consume_oauth_state.provider
       and s.used_at is null and s.expires_at > now()
    returning (s.org_id, s.user_id, s.return_to, s.code_verifier)::app_private.oauth_grant
  $$;
comment on function app_private.consume_oauth_state(app_public.integration_provider, bytea) is
  'Marks a pending OAuth state used and returns who started it, or NULL when it is unknown, expired, used or for another provider.';
grant execute on function app_private.consume_oauth_state(app_public.integration_provider, bytea) to :DATABASE_AUTHENTICATOR;

-- The id an integration has or will have, so the tokens can be sealed with it as associated data before the row
-- is written: reconnecting the same workspace reuses its row.
create function app_private.integration_id_for(org_id uuid, provider app_public.integration_provider, external_id text) returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce(
      (select i.id from app_public.integrations i
        where i.org_id = integration_id_for.org_id and i.provider = integration_id_for.provider and i.external_id = integration_id_for.external_id),
      gen_random_uuid())
  $$;
comment on function app_private.integration_id_for(uuid, app_public.integration_provider, text) is 'The id of the organization''s integration with this workspace or site, or a new one.';
grant execute on function app_private.integration_id_for(uuid, app_public.integration_provider, text) to :DATABASE_AUTHENTICATOR;

create function app_private.complete_integration(
  integration_id uuid, grant_ app_private.oauth_grant, provider app_public.integration_provider,
  external_id text, external_name text, external_url text, scopes text[],
  key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
) returns app_public.integrations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_integration app_public.integrations;
begin
  -- Whoever started the flow must still be an admin there when it completes, and stays one until this commits.
  perform 1 from app_public.memberships m
      join app_public.organizations o on o.id = m.org_id and o.is_active
      join app_public.users u on u.id = m.user_id and u.is_active
     where m.org_id = (grant_).org_id and m.user_id = (grant_).user_id and m.role >= 'admin'
       for share of m;
  if not found then
    raise exception 'Only admins and owners connect integrations.' using errcode = 'DNIED';
  end if;
  insert into app_public.integrations as i (id, org_id, provider, status, external_id, external_name, external_url, scopes, connected_by)
    values (complete_integration.integration_id, (grant_).org_id, complete_integration.provider, 'connected', complete_integration.external_id,
            coalesce(complete_integration.external_name, ''), complete_integration.external_url, coalesce(complete_integration.scopes, '{}'), (grant_).user_id)
    on conflict on constraint integrations_org_id_provider_external_id_key do update
      set status = 'connected', external_name = excluded.external_name, external_url = excluded.external_url,
          scopes = excluded.scopes, connected_by = excluded.connected_by, last_error_code = null
    returning * into v_integration;
  if v_integration.id <> complete_integration.integration_id then
    raise exception 'The integration changed while connecting; try again.' using errcode = '40001';
  end if;
  insert into app_private.integration_secrets as s (integration_id, org_id, key_id, access_nonce, access_ciphertext, refresh_nonce, refresh_ciphertext, access_expires_at)
    values (v_integration.id, v_integration.org_id, complete_integration.key_id, complete_integration.access_nonce, complete_integration.access_ciphertext,
            complete_integration.refresh_nonce, complete_integration.refresh_ciphertext, complete_integration.access_expires_at)
    on conflict on constraint integration_secrets_pkey do update
      set key_id = excluded.key_id, access_nonce = excluded.access_nonce, access_ciphertext = excluded.access_ciphertext,
          refresh_nonce = excluded.refresh_nonce, refresh_ciphertext = excluded.refresh_ciphertext,
          access_expires_at = excluded.access_expires_at, updated_at = now();
  return v_integration;
end;
$$;
comment on function app_private.complete_integration(uuid, app_private.oauth_grant, app_public.integration_provider, text, text, text, text[], text, bytea, bytea, bytea, bytea, timestamptz) is
  'Stores a connected integration and its sealed tokens for the organization and admin of a consumed OAuth state.';
grant execute on function app_private.complete_integration(uuid, app_private.oauth_grant, app_public.integration_provider, text, text, text, text[], text, bytea, bytea, bytea, bytea, timestamptz)
  to :DATABASE_AUTHENTICATOR;

-- Using the tokens: the server (browsing, as a member) and the worker (in a job's context, for its own
-- integration) read the sealed tokens through these functions. The integration must be the caller's
-- organization's, connected, and, for a job, the job's own. `lock` takes the row lock that makes a token refresh
-- single-flight: a second refresher waits, then sees the tokens the first one stored.
create type app_public.integration_credentials as (
  integration_id uuid, org_id uuid, provider app_public.integration_provider, external_id text, key_id text,
  access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
);

comment on type app_public.integration_credentials is E'@behavior -*\nAn integration''s sealed tokens, for the server and worker.';

create function app_private.may_use_integration(integration_id uuid) returns boolean
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select exists (
      select 1 from app_public.integrations i
       where i.id = may_use_integration.integration_id and i.org_id = app_public.current_org_id() and i.status = 'connected'
         and (app_public.current_member_role() >= 'member'
              or exists (select 1 from app_public.jobs j where j.id = app_public.current_job_id() and j.integration_id = i.id)))
  $$;
comment on function app_private.may_use_integration(uuid) is 'Whether this session (a member) or job (its own integration) may use the integration''s tokens.';

create function app_public.integration_credentials(integration_id uuid, lock boolean default false) returns app_public.integration_credentials
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v app_public.integration_credentials;
begin
  if not app_private.may_use_integration(integration_credentials.integration_id) then
    if app_public.current_member_role() = 'viewer'
       and exists (select 1 from app_public.integrations i where i.id = integration_credentials.integration_id and i.org_id = app_public.current_org_id()) then
      raise exception 'Viewers cannot browse or use integrations.' using errcode = 'DNIED';
    end if;
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  if lock then
    perform 1 from app_private.integration_secrets s
     where s.org_id = app_public.current_org_id() and s.integration_id = integration_credentials.integration_id for update;
  end if;
  select i.id, i.org_id, i.provider, i.external_id, s.key_id, s.access_nonce, s.access_ciphertext, s.refresh_nonce, s.refresh_ciphertext, s.access_expires_at
    into v
    from app_public.integrations i join app_private.integration_secrets s on s.org_id = i.org_id and s.integration_id = i.id
   where i.org_id = app_public.current_org_id() and i.id = integration_credentials.integration_id;
  if v.integration_id is null then
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  return v;
end;
$$;
comment on function app_public.integration_credentials(uuid, boolean) is
  E'@behavior -*\nThe sealed tokens of a connected integration of the caller''s organization; with lock, held until the transaction ends (single-flight refresh).';
grant execute on function app_public.integration_credentials(uuid, boolean) to :DATABASE_AUTHENTICATED;

create function app_public.store_integration_tokens(
  integration_id uuid, key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if not app_private.may_use_integration(store_integration_tokens.integration_id) then
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  update app_private.integration_secrets s
     set key_id = store_integration_tokens.key_id, access_nonce = store_integration_tokens.access_nonce,
         access_ciphertext = store_integration_tokens.access_ciphertext,
         refresh_nonce = store_integration_tokens.refresh_nonce, refresh_ciphertext = store_integration_tokens.refresh_ciphertext,
         access_expires_at = store_integration_tokens.access_expires_at, updated_at = now()
   where s.org_id = app_public.current_org_id() and s.integration_id = store_integration_tokens.integration_id;
end;
$$;
comment on function app_public.store_integration_tokens(uuid, text, bytea, bytea, bytea, bytea, timestamptz) is
  E'@behavior -*\nReplaces an integration''s sealed tokens after a refresh (the new refresh token is stored before the access token is used).';
grant execute on function app_public.store_integration_tokens(uuid, text, bytea, bytea, bytea, bytea, timestamptz) to :DATABASE_AUTHENTICATED;

-- The provider refused our refresh token: the integration needs an admin to connect again. Its queued and
-- running jobs stop (INTEGRATION_NEEDS_REAUTH), and the change reaches the organization's live subscribers.
create function app_public.integration_needs_reauth(integration_id uuid, error_code text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid;
begin
  if not app_private.may_use_integration(integration_needs_reauth.integration_id) then
    return;
  end if;
  update app_public.integrations i set status = 'needs_reauth', last_error_code = integration_needs_reauth.error_code
   where i.id = integration_needs_reauth.integration_id;
  for v_job_id in
    update app_public.jobs j
       set status = 'failed', finished_at = now(), error_code = 'INTEGRATION_NEEDS_REAUTH',
           error_message = 'The connection was refused by the provider; an admin must connect it again.'
     where j.integration_id = integration_needs_reauth.integration_id and j.status in ('queued', 'running')
       and j.id is distinct from app_public.current_job_id()
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
end;
$$;
comment on function app_public.integration_needs_reauth(uuid, text) is
  E'@behavior -*\nMarks an integration needs_reauth and fails its other unfinished jobs (called when the provider answers invalid_grant).';
grant execute on function app_public.integration_needs_reauth(uuid, text) to :DATABASE_AUTHENTICATED;

-- Disconnecting (admins): the row stays, `disconnected`, so imported documents and publications keep their
-- history; the sealed tokens are deleted and unfinished jobs of the integration are cancelled. Revoking at the
-- provider is the server's part (disconnectIntegration), done before this with the tokens this returns.
create function app_public.disconnect_integration(integration_id uuid) returns app_public.integrations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.lock_member_role();
  v_integration app_public.integrations;
  v_job_id uuid;
begin
  select * into v_integration from app_public.integrations i
   where i.id = disconnect_integration.integration_id and i.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  perform app_private.check_role(v_role, 'admin', 'Only admins and owners disconnect integrations.', signed_out => null);
  delete from app_private.integration_secrets s where s.org_id = v_integration.org_id and s.integration_id = v_integration.id;
  for v_job_id in
    update app_public.jobs j set status = 'cancelled', finished_at = now(), error_code = 'INTEGRATION_DISCONNECTED',
                                 error_message = 'The integration was disconnected.'
     where j.integration_id = v_integration.id and j.status in ('queued', 'running')
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
  update app_public.integrations i set status = 'disconnected' where i.id = v_integration.id returning * into v_integration;
  return v_integration;
end;
$$;
comment on function app_public.disconnect_integration(uuid) is
  E'@behavior -*\nDeletes an integration''s tokens, cancels its unfinished jobs and marks it disconnected (admins); called by disconnectIntegration after revoking at the provider.';
grant execute on function app_public.disconnect_integration(uuid) to :DATABASE_AUTHENTICATED;

-- Queueing integration work: a jobs row (with its parameters) and its graphile-worker job in one transaction,
-- as summarizeDocument does. Members and above; the integration must be the caller's and connected.
create function app_private.queue_integration_job(kind app_public.job_kind, integration_id uuid, params jsonb, summary_id uuid default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_status app_public.integration_status;
  v_job app_public.jobs;
begin
  perform app_private.require_role('member', 'Viewers cannot import or publish.');
  select i.status into v_status from app_public.integrations i
   where i.id = queue_integration_job.integration_id and i.org_id = v_org_id
     for share;
  if not found then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  if v_status <> 'connected' then
    raise exception 'The integration is not connected; an admin must connect it again.' using errcode = 'BADIN';
  end if;
  insert into app_public.jobs (org_id, kind, integration_id, summary_id, params, requested_by)
    values (v_org_id, queue_integration_job.kind, queue_integration_job.integration_id, queue_integration_job.summary_id,
            queue_integration_job.params, app_public.current_user_id())
    returning * into v_job;
  if queue_integration_job.kind in ('import', 'sync') then
    insert into app_public.integration_sync_runs (org_id, integration_id, job_id, kind)
      values (v_org_id, queue_integration_job.integration_id, v_job.id, queue_integration_job.kind);
  end if;
  perform app_private.enqueue_job(v_job, queue_integration_job.kind::text || '_integration');
  return v_job;
end;
$$;
comment on function app_private.queue_integration_job(app_public.job_kind, uuid, jsonb, uuid) is
  'Queues an import, sync or publish job for a connected integration of the caller''s organization (members and above).';

create function app_public.import_documents(integration_id uuid, external_ids text[]) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if cardinality(external_ids) is null or cardinality(external_ids) not between 1 and 500 then
    raise exception 'Give between 1 and 500 page ids.' using errcode = 'BADIN';
  end if;
  if exists (select 1 from unnest(external_ids) e where e is null or e !~ '^[A-Za-z0-9_-]{1,100}$') then
    raise exception 'A page id is malformed.' using errcode = 'BADIN';
  end if;
  return app_private.queue_integration_job('import', import_documents.integration_id,
    jsonb_build_object('externalIds', (select jsonb_agg(distinct e) from unnest(external_ids) e)));
end;
$$;
comment on function app_public.import_documents(uuid, text[]) is
  E'@resultFieldName job\nImports pages of a connected Notion or Confluence integration as documents, as a job (members and above). Importing a page again updates its document.';
grant execute on function app_public.import_documents(uuid, text[]) to :DATABASE_AUTHENTICATED;

create function app_public.sync_integration(integration_id uuid) returns app_public.jobs
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select * from app_private.queue_integration_job('sync', sync_integration.integration_id, '{}'::jsonb) $$;
comment on function app_public.sync_integration(uuid) is
  E'@resultFieldName job\nRe-imports the pages of an integration''s documents that changed at the source and flags those deleted there, as a job (members and above).';
grant execute on function app_public.sync_integration(uuid) to :DATABASE_AUTHENTICATED;

create function app_public.publish_summary(summary_id uuid, integration_id uuid, parent_page_id text default null, space_id text default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_provider app_public.integration_provider;
begin
  if not exists (select 1 from app_public.summaries s where s.id = publish_summary.summary_id and s.org_id = app_public.current_org_id()) then
    raise exception 'No such summary.' using errcode = 'NTFND';
  end if;
  select i.provider into v_provider from app_public.integrations i
   where i.id = publish_summary.integration_id and i.org_id = app_public.current_org_id();
  if coalesce(parent_page_id, '') !~ '^[A-Za-z0-9_-]{0,100}$' or coalesce(space_id, '') !~ '^[A-Za-z0-9_-]{0,100}$' then
    raise exception 'A page or space id is malformed.' using errcode = 'BADIN';
  end if;
  if v_provider = 'notion' and (parent_page_id is null or space_id is not null) then
    raise exception 'Publishing to Notion needs parentPageId (and no spaceId).' using errcode = 'BADIN';
  end if;
  if v_provider = 'confluence' and space_id is null then
    raise exception 'Publishing to Confluence needs spaceId (parentPageId is optional).' using errcode = 'BADIN';
  end if;
  return app_private.queue_integration_job('publish', publish_summary.integration_id,
    jsonb_strip_nulls(jsonb_build_object('parentPageId', parent_page_id, 'spaceId', space_id,
      'targetKey', case v_provider when 'notion' then 'notion:' || parent_page_id
                                   else 'confluence:' || space_id || ':' || coalesce(parent_page_id, '-') end)),
    publish_summary.summary_id);
end;
$$;
comment on function app_public.publish_summary(uuid, uuid, text, text) is
  E'@resultFieldName job\nPublishes a summary as a page, as a job (members and above): under a Notion page (parentPageId) or in a Confluence space (spaceId, optionally under parentPageId). Publishing the same summary to the same target again updates that page.';
grant execute on function app_public.publish_summary(uuid, uuid, text, text) to :DATABASE_AUTHENTICATED;

-- Key rotation. An operator puts a new key first in SEALING_KEYS (keeping the old ones after it), restarts, and
-- calls app_admin.reseal_integration_secrets(): the worker's reseal_secrets task opens every secret sealed with an
-- older key and seals it with the current one. Until it has run, the old keys must stay configured.
create function app_admin.reseal_integration_secrets() returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('reseal_secrets', '{}'::json, job_key => 'reseal_secrets');
end;
$$;
comment on function app_admin.reseal_integration_secrets() is
  E'Queues the re-sealing of every integration secret with the current key (after a new key was put first in SEALING_KEYS).\nExample: select app_admin.reseal_integration_secrets();';

create function app_private.secrets_to_reseal(current_key_id text, batch int) returns setof app_public.integration_credentials
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select i.id, i.org_id, i.provider, i.external_id, s.key_id, s.access_nonce, s.access_ciphertext, s.refresh_nonce, s.refresh_ciphertext, s.access_expires_at
      from app_private.integration_secrets s join app_public.integrations i on i.org_id = s.org_id and i.id = s.integration_id
     where s.key_id <> secrets_to_reseal.current_key_id
     order by s.integration_id
     limit batch
  $$;
comment on function app_private.secrets_to_reseal(text, int) is 'A batch of integration secrets sealed with a key other than the current one.';
grant execute on function app_private.secrets_to_reseal(text, int) to :DATABASE_AUTHENTICATOR;

create function app_private.reseal(integration_id uuid, old_key_id text, key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea)
  returns boolean
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with done as (
      update app_private.integration_secrets s
         set key_id = reseal.key_id, access_nonce = reseal.access_nonce, access_ciphertext = reseal.access_ciphertext,
             refresh_nonce = reseal.refresh_nonce, refresh_ciphertext = reseal.refresh_ciphertext, updated_at = now()
       where s.integration_id = reseal.integration_id and s.key_id = reseal.old_key_id
      returning 1)
    select exists (select 1 from done)
  $$;
comment on function app_private.reseal(uuid, text, text, bytea, bytea, bytea, bytea) is
  'Replaces one secret sealed with old_key_id by its re-sealing (no-op if it changed meanwhile, e.g. a refresh).';
grant execute on function app_private.reseal(uuid, text, text, bytea, bytea, bytea, bytea) to :DATABASE_AUTHENTICATOR;

-- The integration shows how its last import or sync went; written by the job that ran it.
create function app_public.note_integration_sync(status text, error_code text default null) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_public.integrations i
       set last_sync_at = now(), last_sync_status = note_integration_sync.status, last_error_code = note_integration_sync.error_code
      from app_public.jobs j
     where j.id = app_public.current_job_id() and j.kind in ('import', 'sync') and i.id = j.integration_id
  $$;
comment on function app_public.note_integration_sync(text, text) is
  E'@behavior -*\nRecords the outcome of the running import or sync job on its integration (worker only: needs a job context).';
grant execute on function app_public.note_integration_sync(text, text) to :DATABASE_AUTHENTICATED;

create trigger _900_audit after insert or update or delete on app_public.integrations for each row execute procedure app_private.tg__audit();

create trigger _900_audit after insert or update or delete on app_public.integration_sync_runs for each row execute procedure app_private.tg__audit();

create trigger _900_audit after insert or update or delete on app_public.summary_publications for each row execute procedure app_private.tg__audit();

-- ==================================================================================================================
-- 14. Audit log
--
-- The audit log: append-only, hash-chained per organization after commit, checkpointed and verifiable.
-- ==================================================================================================================

-- The audit log: one row for every committed change to a tenant table and for each security event (sign-in,
-- failed sign-in, refresh-token reuse, logout, role change, integration connect and disconnect, denied requests).
-- Rows are written only by the security definer functions below, never by an API role, and they outlive the
-- organization they describe: org_id has no foreign key, so deleting an organization keeps its history (operators
-- purge it with app_admin.purge_audit_events). Each organization's rows form a hash chain: every row carries the
-- SHA-256 of the previous row's hash and its own contents, so an edited, removed or inserted row breaks the chain
-- at that point. Events that belong to no organization (a failed sign-in for an unknown address) form a chain of
-- their own under the nil UUID.
create table app_public.audit_events (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null,
  seq bigint not null check (seq > 0),
  occurred_at timestamptz not null default now(),
  actor_user_id uuid,
  actor_session_id uuid,
  actor_job_id uuid,
  db_role text not null default session_user,
  action text not null check (action ~ '^[a-z_]{1,40}$'),
  table_name text,
  record_id uuid,
  changed_columns text[] not null default '{}',
  old_values jsonb,
  new_values jsonb,
  details jsonb not null default '{}',
  request_id text,
  client_ip inet,
  prev_hash bytea not null check (length(prev_hash) = 32),
  hash bytea not null check (length(hash) = 32),
  constraint audit_events_org_id_seq_key unique (org_id, seq),
  primary key (org_id, id)
);

create index audit_events_id_idx on app_public.audit_events (id);
comment on constraint audit_events_pkey on app_public.audit_events is '@behavior -single -update -delete';

comment on table app_public.audit_events is
  E'@primaryKey id\n@behavior -insert -update -delete -query:resource:list -query:resource:connection\nOne change or security event in an organization, append-only and hash-chained per organization. Admins and owners read them with `auditLog`.';

comment on column app_public.audit_events.org_id is 'The organization; the nil UUID for events of no organization. Not a foreign key: audit rows outlive their organization.';
comment on column app_public.audit_events.seq is 'Position in the organization''s chain, from 1 without gaps (purged prefixes aside).';
comment on column app_public.audit_events.occurred_at is 'When the transaction that made the change began (UTC).';
comment on column app_public.audit_events.actor_user_id is 'Who acted: the signed-in user, or the requester of the job that acted; null for operators and the system.';
comment on column app_public.audit_events.actor_session_id is 'The session the change was made through, if any.';
comment on column app_public.audit_events.actor_job_id is 'The background job that made the change, if any.';
comment on column app_public.audit_events.db_role is 'The database login that made the change (the API''s authenticator, or an operator in psql).';

comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sign_in_failed, refresh_reuse, logout, session_revoked, access_denied and request_failed for security events.';

comment on column app_public.audit_events.table_name is 'The table changed (without schema), for row changes.';
comment on column app_public.audit_events.record_id is 'The id of the row changed.';
comment on column app_public.audit_events.changed_columns is 'Columns set by an insert, changed by an update, or held by a deleted row.';
comment on column app_public.audit_events.old_values is 'Values before the change, for the changed columns; content bodies and secrets are never recorded.';
comment on column app_public.audit_events.new_values is 'Values after the change, for the changed columns; content bodies and secrets are never recorded.';
comment on column app_public.audit_events.details is 'Event-specific facts, e.g. the reason a session ended or the code of a denied request.';
comment on column app_public.audit_events.request_id is 'The x-request-id of the API request that made the change.';
comment on column app_public.audit_events.client_ip is 'The client''s address as seen through the configured trusted proxies.';
comment on column app_public.audit_events.prev_hash is E'@behavior -*\nThe previous event''s hash (32 zero bytes for the first).';
comment on column app_public.audit_events.hash is E'@behavior -*\nSHA-256 over prev_hash and this event''s contents.';

-- Reading: the filters admins use (actor, action, table, time) all start from the organization.
create index audit_events_org_id_occurred_at_idx on app_public.audit_events (org_id, occurred_at);

create index audit_events_org_id_actor_idx on app_public.audit_events (org_id, actor_user_id, seq);
create index audit_events_org_id_table_idx on app_public.audit_events (org_id, table_name, seq);

-- Admins and owners of the organization read its log; nobody writes it through the API (no grants beyond select).
alter table app_public.audit_events enable row level security;

alter table app_public.audit_events force row level security;

create policy as_definer on app_public.audit_events to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create policy select_as_admin on app_public.audit_events for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

grant select on app_public.audit_events to :DATABASE_AUTHENTICATED;

-- Append-only for real: updates, deletes and truncation are refused for every role but the table's owner (a
-- superuser in psql included), whatever grants and policies say. The owner may (that is how an operator purges old
-- rows), and anything it edits shows up in app_admin.verify_audit_chain.
create function app_private.tg_audit_events__append_only() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if current_user <> (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = tg_relid) then
    raise exception 'Audit events cannot be changed or removed.' using errcode = 'DNIED';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end;
$$;
comment on function app_private.tg_audit_events__append_only() is 'Refuses update, delete and truncate on audit_events for everyone but the table owner.';

create trigger _100_append_only before update or delete on app_public.audit_events
  for each row execute procedure app_private.tg_audit_events__append_only();

create trigger _100_append_only_truncate before truncate on app_public.audit_events
  for each statement execute procedure app_private.tg_audit_events__append_only();

-- The head of each chain: the last sequence number and hash. Appending locks the organization's head row, so
-- concurrent writers of one organization take turns (until they commit) and the chain never forks; writers of
-- different organizations never wait for each other. The anchor is where verification starts after a purge.
create table app_private.audit_chains (
  org_id uuid primary key,
  last_seq bigint not null default 0,
  last_hash bytea not null default decode(repeat('00', 32), 'hex'),
  anchor_seq bigint not null default 0,
  anchor_hash bytea not null default decode(repeat('00', 32), 'hex')
);

comment on table app_private.audit_chains is 'Per-organization head of the audit hash chain (last seq and hash), and the anchor left by the last purge.';

alter table app_private.audit_chains enable row level security;

alter table app_private.audit_chains force row level security;

create policy as_definer on app_private.audit_chains to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- The hashed contents of an event: every column but prev_hash and hash themselves (prev_hash is hashed as the
-- prefix), in this canonical encoding, documented in the README (Audit log):
--   sha256(prev_hash (32 bytes) || utf8(jsonb_build_array(2, id, org_id, seq, occurred_at, actor_user_id,
--     actor_session_id, actor_job_id, db_role, action, table_name, record_id, changed_columns, old_values,
--     new_values, details, request_id, client_ip)::text))
-- where 2 names this encoding, occurred_at is whole microseconds since the Unix epoch, client_ip is inet's text form
-- (the mask shown unless it is the full width), and jsonb's text form is canonical (keys sorted, one spacing), so
-- neither TimeZone, DateStyle nor the client changes a hash.
create function app_private.audit_hash(prev_hash bytea, e app_public.audit_events) returns bytea
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select sha256(audit_hash.prev_hash || convert_to(jsonb_build_array(
      2, e.id, e.org_id, e.seq, (extract(epoch from e.occurred_at) * 1000000)::bigint, e.actor_user_id,
      e.actor_session_id, e.actor_job_id, e.db_role, e.action, e.table_name, e.record_id, e.changed_columns,
      e.old_values, e.new_values, e.details, e.request_id, e.client_ip::text)::text, 'UTF8'))
  $$;
comment on function app_private.audit_hash(bytea, app_public.audit_events) is
  'SHA-256 of the previous hash and every column of an audit event (encoding 2, see the README''s Audit log).';

-- Appending: one insert, no lock. Same signature and callers (tg__audit, sign-ins, request failures) as before.
create function app_private.append_audit_event(
  org_id uuid, action text, table_name text, record_id uuid, changed_columns text[], old_values jsonb, new_values jsonb,
  details jsonb, actor_user_id uuid, actor_session_id uuid, actor_job_id uuid, request_id text, client_ip inet
) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.audit_events (
      org_id, occurred_at, actor_user_id, actor_session_id, actor_job_id, db_role, action, table_name, record_id,
      changed_columns, old_values, new_values, details, request_id, client_ip
    ) values (
      append_audit_event.org_id, now(), append_audit_event.actor_user_id, append_audit_event.actor_session_id,
      append_audit_event.actor_job_id, session_user, append_audit_event.action, append_audit_event.table_name,
      append_audit_event.record_id, coalesce(append_audit_event.changed_columns, '{}'), append_audit_event.old_values,
      append_audit_event.new_values, coalesce(append_audit_event.details, '{}'),
      nullif(append_audit_event.request_id, ''), append_audit_event.client_ip
    )
  $$;
comment on function app_private.append_audit_event(uuid, text, text, uuid, text[], jsonb, jsonb, jsonb, uuid, uuid, uuid, text, inet) is
  'Appends an unsealed event for the organization (no lock: app_private.seal_audit_events chains it after commit).';

-- The audit trigger, cheap per row: the actor comes from the transaction's verified context when
-- app_hidden.enter_context has cached one (every API request and job: the policies ask for it first), with lookups
-- of the session or job token for transactions that have none (an operator in psql), and the trigger inserts its
-- row itself.

-- The actor: the verified context's user and session (or job), else looked up from the session or job token.
create function app_private.audit_actor(out user_id uuid, out session_id uuid, out job_id uuid, out request_id text, out client_ip inet)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if current_setting('quire.ctx', true) = app_hidden.context_key() and nullif(current_setting('quire.ctx_user_id', true), '') is not null then
    user_id := current_setting('quire.ctx_user_id', true)::uuid;
    job_id := nullif(current_setting('quire.ctx_job_id', true), '')::uuid;
    session_id := case when job_id is null then app_private.uuid_setting('jwt.claims.session_id') end;
  else
    session_id := app_private.uuid_setting('jwt.claims.session_id');
    if session_id is not null then
      select s.user_id into user_id from app_private.sessions s where s.id = audit_actor.session_id;
      if not found then
        session_id := null;
      end if;
    else
      select j.requested_by, j.id into user_id, job_id
        from app_private.job_tokens t join app_public.jobs j on j.org_id = t.org_id and j.id = t.job_id
       where t.job_id = app_private.uuid_setting('quire.job_id')
         and t.token_hash = sha256(convert_to(coalesce(nullif(current_setting('quire.job_token', true), ''), '-'), 'UTF8'));
    end if;
  end if;
  request_id := left(nullif(current_setting('quire.request_id', true), ''), 128);
  client_ip := case when current_setting('quire.client_ip', true) ~ '^[0-9a-fA-F.:]{2,45}$'
                    then current_setting('quire.client_ip', true)::inet end;
end;
$$;
comment on function app_private.audit_actor() is 'The acting user, session or job, request id and client address of this transaction, for audit events.';

-- Requests refused or failed in a transaction that rolled back leave no row changes behind, so the server records
-- them afterwards, in a transaction of their own, with what it verified of the caller. Only the server's own login
-- (the authenticator, never an API role) may call this.
create function app_private.record_request_failure(
  org_id uuid, user_id uuid, session_id uuid, action text, details jsonb, request_id text, client_ip inet
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if record_request_failure.action not in ('access_denied', 'request_failed') then
    raise exception 'Unknown request failure action.' using errcode = 'BADIN';
  end if;
  if not exists (select 1 from app_public.organizations o where o.id = record_request_failure.org_id) then
    return;
  end if;
  perform app_private.append_audit_event(
    record_request_failure.org_id, record_request_failure.action, null, null, '{}', null, null,
    coalesce(record_request_failure.details, '{}'), record_request_failure.user_id, record_request_failure.session_id,
    null, left(record_request_failure.request_id, 128), record_request_failure.client_ip);
end;
$$;
comment on function app_private.record_request_failure(uuid, uuid, uuid, text, jsonb, text, inet) is
  'Records an API request that was denied or failed (its own transaction rolled back) as an audit event.';
grant execute on function app_private.record_request_failure(uuid, uuid, uuid, text, jsonb, text, inet) to :DATABASE_AUTHENTICATOR;

-- Readers: the newest first, unsealed events (the newest of all) before sealed ones.
create function app_public.audit_log(
  actor_user_id uuid default null, action text default null, table_name text default null,
  since timestamptz default null, until timestamptz default null
) returns setof app_public.audit_events
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if coalesce(app_public.current_member_role() < 'admin', true) then
    raise exception 'Only admins and owners read the audit log.' using errcode = 'DNIED';
  end if;
  return query
    select e.* from app_public.audit_events e
     where e.org_id = app_public.current_org_id()
       and (audit_log.actor_user_id is null or e.actor_user_id = audit_log.actor_user_id)
       and (audit_log.action is null or e.action = audit_log.action)
       and (audit_log.table_name is null or e.table_name = audit_log.table_name)
       and (audit_log.since is null or e.occurred_at >= audit_log.since)
       and (audit_log.until is null or e.occurred_at < audit_log.until)
     order by e.seq desc nulls first, e.append_order desc;
end;
$$;
comment on function app_public.audit_log(uuid, text, text, timestamptz, timestamptz) is
  E'The organization''s audit log, newest first (admins and owners), optionally only one actor''s, action''s or table''s events, or those from `since` (inclusive) until `until` (exclusive).';
grant execute on function app_public.audit_log(uuid, text, text, timestamptz, timestamptz) to :DATABASE_AUTHENTICATED;

-- A purge also asks for its anchor to be checkpointed: with checkpoints, verification accepts removed events
-- only behind an anchor that was signed as one, so a purge is on record outside the database.
create function app_admin.purge_audit_events(org_id uuid, before timestamptz) returns bigint
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_last app_public.audit_events;
  v_count bigint;
begin
  select * into v_last from app_public.audit_events a
   where a.org_id = purge_audit_events.org_id
     and a.seq <= (select coalesce(max(b.seq), 0) from app_public.audit_events b
                    where b.org_id = purge_audit_events.org_id and b.occurred_at < purge_audit_events.before)
   order by a.seq desc limit 1;
  if not found then
    return 0;
  end if;
  perform 1 from app_private.audit_chains c where c.org_id = purge_audit_events.org_id for update;
  delete from app_public.audit_events a where a.org_id = purge_audit_events.org_id and a.seq <= v_last.seq;
  get diagnostics v_count = row_count;
  update app_private.audit_chains c set anchor_seq = v_last.seq, anchor_hash = v_last.hash, anchor_checkpointed = false
   where c.org_id = purge_audit_events.org_id;
  perform graphile_worker.add_job('checkpoint_audit', '{}'::json, job_key => 'checkpoint_audit');
  return v_count;
end;
$$;
comment on function app_admin.purge_audit_events(uuid, timestamptz) is
  'Deletes an organization''s audit events older than `before` (a prefix of its chain), anchors the chain at the last one removed and queues the anchor''s checkpoint; returns how many.';

-- The last checkpoint made of each chain, so the worker's every-minute task only signs the heads that moved (one
-- pass over this table, a row per organization; no index, which would make every append a non-HOT update), and
-- whether the anchor of the last purge has been checkpointed yet.
alter table app_private.audit_chains
  add column checkpoint_seq bigint not null default 0,
  add column checkpoint_hash bytea,
  add column checkpointed_at timestamptz,
  add column anchor_checkpointed boolean not null default false;

comment on column app_private.audit_chains.checkpoint_seq is 'The seq of the last head checkpoint signed (0: none yet).';
comment on column app_private.audit_chains.checkpoint_hash is 'The hash of the last head checkpoint signed.';
comment on column app_private.audit_chains.checkpointed_at is 'When the last head checkpoint was recorded.';
comment on column app_private.audit_chains.anchor_checkpointed is 'Whether the anchor of the last purge has been signed as a checkpoint.';

-- What the worker's checkpoint_audit task signs next: each head that moved since its last checkpoint ('head'), and
-- each purge anchor not yet signed ('anchor'). Only what is chained: the head is the last event appended.
create function app_private.audit_checkpoints_due(batch int)
  returns table (org_id uuid, kind text, seq bigint, hash bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.org_id, d.kind, d.seq, d.hash from (
      select c.org_id, 'head' as kind, c.last_seq as seq, c.last_hash as hash from app_private.audit_chains c
       where c.last_seq > 0 and (c.last_seq, c.last_hash) is distinct from (c.checkpoint_seq, c.checkpoint_hash)
      union all
      select c.org_id, 'anchor', c.anchor_seq, c.anchor_hash from app_private.audit_chains c
       where c.anchor_seq > 0 and not c.anchor_checkpointed
    ) d
    order by d.org_id, d.kind
    limit greatest(audit_checkpoints_due.batch, 1)
  $$;
comment on function app_private.audit_checkpoints_due(int) is
  'Chain heads that moved since their last checkpoint, and purge anchors not yet checkpointed: what checkpoint_audit signs next.';
grant execute on function app_private.audit_checkpoints_due(int) to :DATABASE_AUTHENTICATOR;

-- The worker records a checkpoint once it is signed and written to every sink. A head only moves forward here, and
-- only to an event of the chain with that hash; an anchor is marked only if it is still the chain's anchor.
create function app_private.record_audit_checkpoint(org_id uuid, kind text, seq bigint, hash bytea) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if record_audit_checkpoint.kind = 'head' then
    update app_private.audit_chains c
       set checkpoint_seq = record_audit_checkpoint.seq, checkpoint_hash = record_audit_checkpoint.hash, checkpointed_at = now()
     where c.org_id = record_audit_checkpoint.org_id and c.checkpoint_seq <= record_audit_checkpoint.seq
       and exists (select 1 from app_public.audit_events a where a.org_id = record_audit_checkpoint.org_id
                      and a.seq = record_audit_checkpoint.seq and a.hash = record_audit_checkpoint.hash);
  elsif record_audit_checkpoint.kind = 'anchor' then
    update app_private.audit_chains c set anchor_checkpointed = true
     where c.org_id = record_audit_checkpoint.org_id and c.anchor_seq = record_audit_checkpoint.seq
       and c.anchor_hash = record_audit_checkpoint.hash;
  else
    raise exception 'A checkpoint is of a head or an anchor.' using errcode = 'BADIN';
  end if;
end;
$$;
comment on function app_private.record_audit_checkpoint(uuid, text, bigint, bytea) is
  'Records that a head or anchor checkpoint was signed and written out, so it is not signed again.';
grant execute on function app_private.record_audit_checkpoint(uuid, text, bigint, bytea) to :DATABASE_AUTHENTICATOR;

-- On demand (besides the worker's every-minute schedule): e.g. before a backup, or right before verifying.
create function app_admin.checkpoint_audit_chains() returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('checkpoint_audit', '{}'::json, job_key => 'checkpoint_audit');
end;
$$;
comment on function app_admin.checkpoint_audit_chains() is
  E'Queues a checkpoint of every audit chain whose head moved since its last one (the worker also does this every minute).\nExample: select app_admin.checkpoint_audit_chains();';

-- The audit chain, sealed after commit. Chaining inside the writing transaction would hold the organization's
-- chain head row until commit, so its writers would take turns (a hundred concurrent writers of one organization
-- managed about 50 transactions a second that way). So a change appends its row unsealed (no seq, no hashes) and takes no
-- lock; one sealer (the worker's loop, worker/audit-sealer.ts, or app_admin.seal_audit_events() by hand) chains
-- the committed rows of each organization in batches, in the order they were appended. The chain keeps its
-- guarantees: exactly one row per committed change (the row is written by the change's own transaction, so a
-- rolled-back change leaves none), no gaps and no forks (only the sealer numbers rows, one sealer at a time, under
-- the chain head's lock), and tampering with a sealed row is still named by verify_audit_chain. An unsealed row
-- is not yet covered by a hash: the verifier reports how many are pending, and the sealer keeps that window to
-- about a second.

-- Unsealed rows: seq, prev_hash and hash all null until the sealer fills them in together. append_order is the
-- order rows were appended in (a sequence: no lock, no wait); it orders an organization's rows for sealing.
alter table app_public.audit_events
  alter column seq drop not null,
  alter column prev_hash drop not null,
  alter column hash drop not null,
  add column append_order bigint generated always as identity,
  add constraint audit_events_sealed_check check ((seq is null) = (hash is null) and (seq is null) = (prev_hash is null));

comment on column app_public.audit_events.seq is 'Position in the organization''s chain, from 1 without gaps (purged prefixes aside); null until the event is sealed, about a second after its change commits.';
comment on column app_public.audit_events.append_order is E'@behavior -*\nThe order events were appended in, across all organizations; the sealer chains each organization''s events in this order.';
comment on column app_public.audit_events.prev_hash is E'@behavior -*\nThe previous event''s hash (32 zero bytes for the first); null until sealed.';
comment on column app_public.audit_events.hash is E'@behavior -*\nSHA-256 over prev_hash and this event''s contents; null until sealed.';

-- Only the unsealed rows, so the sealer's scan costs nothing when there is nothing to seal.
create index audit_events_unsealed_idx on app_public.audit_events (org_id, append_order) where seq is null;

-- Sealing: the committed unsealed rows this transaction sees (a row of a transaction still running is not seen; it
-- is sealed by a later run), organization by organization, each under its chain head's lock, numbered on from the
-- head and hashed in append order (one after another: each hash covers the one before), then written with one
-- update per organization. One sealer at a time: a second caller returns 0 at once instead of queueing.
create function app_private.seal_audit_events(batch int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org uuid;
  v_chain app_private.audit_chains;
  e app_public.audit_events;
  v_ids uuid[];
  v_seqs bigint[];
  v_prevs bytea[];
  v_hashes bytea[];
  v_sealed int := 0;
begin
  -- The advisory lock's key is a hash of a name no other lock of Quire's uses.
  if not pg_try_advisory_xact_lock(hashtextextended('quire.audit_seal', 0)) then
    return 0;
  end if;
  for v_org in
    select distinct u.org_id from app_public.audit_events u where u.seq is null
  loop
    insert into app_private.audit_chains (org_id) values (v_org) on conflict on constraint audit_chains_pkey do nothing;
    select * into v_chain from app_private.audit_chains c where c.org_id = v_org for update;
    v_ids := '{}';
    v_seqs := '{}';
    v_prevs := '{}';
    v_hashes := '{}';
    for e in
      select * from app_public.audit_events a where a.org_id = v_org and a.seq is null
       order by a.append_order limit greatest(seal_audit_events.batch - v_sealed, 0)
    loop
      e.seq := v_chain.last_seq + 1;
      e.prev_hash := v_chain.last_hash;
      e.hash := app_private.audit_hash(e.prev_hash, e);
      v_ids := v_ids || e.id;
      v_seqs := v_seqs || e.seq;
      v_prevs := v_prevs || e.prev_hash;
      v_hashes := v_hashes || e.hash;
      v_chain.last_seq := e.seq;
      v_chain.last_hash := e.hash;
    end loop;
    update app_public.audit_events a set seq = s.seq, prev_hash = s.prev_hash, hash = s.hash
      from unnest(v_ids, v_seqs, v_prevs, v_hashes) as s(id, seq, prev_hash, hash)
     where a.id = s.id;
    v_sealed := v_sealed + cardinality(v_ids);
    update app_private.audit_chains c set last_seq = v_chain.last_seq, last_hash = v_chain.last_hash where c.org_id = v_org;
    exit when v_sealed >= seal_audit_events.batch;
  end loop;
  return v_sealed;
end;
$$;
comment on function app_private.seal_audit_events(int) is
  'Chains up to `batch` committed unsealed audit events (each organization''s in append order) and moves the heads; returns how many. 0 when another sealer is at work.';
grant execute on function app_private.seal_audit_events(int) to :DATABASE_AUTHENTICATOR;

-- By hand: seals everything committed now (e.g. before verifying or checkpointing from psql), waiting for a sealer
-- at work to finish first.
create function app_admin.seal_audit_events() returns bigint
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_total bigint := 0;
  v_batch int;
begin
  perform pg_advisory_xact_lock(hashtextextended('quire.audit_seal', 0));
  loop
    v_batch := app_private.seal_audit_events(10000);
    v_total := v_total + v_batch;
    exit when v_batch < 10000;
  end loop;
  return v_total;
end;
$$;
comment on function app_admin.seal_audit_events() is
  E'Seals every committed audit event not yet chained (the worker does this about every second); returns how many.\nExample: select app_admin.seal_audit_events();';

create function app_admin.verify_audit_chain(org_id uuid)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_chain app_private.audit_chains;
  v_expected_seq bigint;
  v_prev bytea;
  v_count bigint := 0;
  v_pending bigint;
  e app_public.audit_events;
begin
  select count(*) into v_pending from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is null;
  select * into v_chain from app_private.audit_chains c where c.org_id = verify_audit_chain.org_id;
  if not found then
    return query select not exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null),
      0::bigint, null::bigint, null::uuid, case when exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null)
                                                then 'events exist without a chain head' end, v_pending;
    return;
  end if;
  v_expected_seq := v_chain.anchor_seq + 1;
  v_prev := v_chain.anchor_hash;
  for e in select * from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null order by a.seq loop
    v_count := v_count + 1;
    if e.seq <> v_expected_seq then
      return query select false, v_count, e.seq, e.id,
        format('expected event %s, found %s: events are missing or were inserted', v_expected_seq, e.seq), v_pending;
      return;
    elsif e.prev_hash <> v_prev then
      return query select false, v_count, e.seq, e.id, 'its previous hash does not match the event before it', v_pending;
      return;
    elsif e.hash <> app_private.audit_hash(e.prev_hash, e) then
      return query select false, v_count, e.seq, e.id, 'its contents do not match its hash: it was edited', v_pending;
      return;
    end if;
    v_prev := e.hash;
    v_expected_seq := e.seq + 1;
  end loop;
  if v_expected_seq - 1 <> v_chain.last_seq or v_prev <> v_chain.last_hash then
    return query select false, v_count, v_expected_seq, null::uuid,
      format('the chain ends at event %s but its head says %s: the newest events were removed', v_expected_seq - 1, v_chain.last_seq), v_pending;
    return;
  end if;
  return query select true, v_count, null::bigint, null::uuid, null::text, v_pending;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid) is
  'Checks an organization''s sealed audit chain (the nil UUID for events of no organization); names the first broken event and why, and counts the events not sealed yet (pending).';

create function app_admin.verify_audit_chain(org_id uuid, checkpoints jsonb)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_own record;
  v_chain app_private.audit_chains;
  v_newest bigint;
  v_event app_public.audit_events;
  c record;
begin
  if jsonb_typeof(verify_audit_chain.checkpoints) is distinct from 'array' or exists (
    select 1 from jsonb_array_elements(verify_audit_chain.checkpoints) x
     where jsonb_typeof(x) <> 'object' or coalesce(x->>'seq', '') !~ '^[0-9]{1,18}$'
        or coalesce(x->>'hash', '') !~ '^[0-9a-f]{64}$' or coalesce(x->>'kind', '') not in ('head', 'anchor')
  ) then
    raise exception 'Checkpoints are an array of {"seq": n, "hash": "<64 hex digits>", "kind": "head" or "anchor"}.' using errcode = 'BADIN';
  end if;
  select * into v_own from app_admin.verify_audit_chain(verify_audit_chain.org_id) o;
  if not v_own.valid then
    return query select v_own.valid, v_own.events, v_own.first_broken_seq, v_own.first_broken_id, v_own.problem, v_own.pending;
    return;
  end if;
  select max((x->>'seq')::bigint) into v_newest from jsonb_array_elements(verify_audit_chain.checkpoints) x;
  select * into v_chain from app_private.audit_chains ch where ch.org_id = verify_audit_chain.org_id;
  if not found then
    return query select v_newest is null, v_own.events, v_newest, null::uuid,
      case when v_newest is not null then format('there is no chain, but checkpoint %s was made: the log was deleted', v_newest) end, v_own.pending;
    return;
  end if;
  if v_newest > v_chain.last_seq then
    return query select false, v_own.events, v_chain.last_seq + 1, null::uuid,
      format('the head is at event %s but checkpoint %s was made: the newest events were removed and the head rewound', v_chain.last_seq, v_newest), v_own.pending;
    return;
  end if;
  for c in
    select (x->>'seq')::bigint as seq, decode(x->>'hash', 'hex') as hash, x->>'kind' as kind
      from jsonb_array_elements(verify_audit_chain.checkpoints) x order by 1, 3
  loop
    if c.seq < v_chain.anchor_seq then
      continue; -- purged: only the anchor is left of it
    elsif c.seq = v_chain.anchor_seq then
      if c.hash <> v_chain.anchor_hash then
        return query select false, v_own.events, c.seq, null::uuid,
          format('checkpoint %s does not match the anchor the purge left: events up to it were rewritten', c.seq), v_own.pending;
        return;
      end if;
    else
      select * into v_event from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq = c.seq;
      if v_event.hash is distinct from c.hash then
        return query select false, v_own.events, c.seq, v_event.id,
          format('checkpoint %s is no longer in the chain: event %s or one before it was rewritten', c.seq, c.seq), v_own.pending;
        return;
      end if;
    end if;
  end loop;
  if v_chain.anchor_seq > 0 and not exists (
    select 1 from jsonb_array_elements(verify_audit_chain.checkpoints) x
     where x->>'kind' = 'anchor' and (x->>'seq')::bigint = v_chain.anchor_seq and decode(x->>'hash', 'hex') = v_chain.anchor_hash
  ) then
    return query select false, v_own.events, v_chain.anchor_seq, null::uuid,
      format('events up to %s were removed, but no anchor checkpoint records a purge there', v_chain.anchor_seq), v_own.pending;
    return;
  end if;
  return query select true, v_own.events, null::bigint, null::uuid, null::text, v_own.pending;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid, jsonb) is
  'Checks an organization''s sealed audit chain and, beyond it, that it still holds every checkpoint given (signatures checked by the caller: npm run audit:verify); counts the events not sealed yet (pending).';

create function app_admin.verify_audit_chains(checkpoints jsonb)
  returns table (org_id uuid, valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if jsonb_typeof(verify_audit_chains.checkpoints) is distinct from 'array' or exists (
    select 1 from jsonb_array_elements(verify_audit_chains.checkpoints) x
     where jsonb_typeof(x) <> 'object' or coalesce(x->>'org', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
  ) then
    raise exception 'Checkpoints are an array of objects, each naming its organization ("org").' using errcode = 'BADIN';
  end if;
  return query
    select o.org_id, v.valid, v.events, v.first_broken_seq, v.first_broken_id, v.problem, v.pending
      from (select c.org_id from app_private.audit_chains c
            union select distinct a.org_id from app_public.audit_events a
            union select (x->>'org')::uuid from jsonb_array_elements(verify_audit_chains.checkpoints) x) o
      cross join lateral app_admin.verify_audit_chain(o.org_id, coalesce(
        (select jsonb_agg(x) from jsonb_array_elements(verify_audit_chains.checkpoints) x where (x->>'org')::uuid = o.org_id),
        '[]'::jsonb)) v
     order by o.org_id;
end;
$$;
comment on function app_admin.verify_audit_chains(jsonb) is
  'Checks every organization''s audit chain against the checkpoints given (signatures checked by the caller: npm run audit:verify); one row per organization, with its events not sealed yet (pending).';

-- ==================================================================================================================
-- 15. Rate limits
--
-- Request rate limits: counters the servers sync, and the limits per tier.
-- ==================================================================================================================

-- What each subscription tier may send: per user and per organization, requests a minute.
create table app_private.tier_rate_limits (
  tier app_public.subscription_tier primary key,
  user_per_minute int not null check (user_per_minute > 0),
  org_per_minute int not null check (org_per_minute > 0)
);

comment on table app_private.tier_rate_limits is 'API requests a minute each tier allows per signed-in user and per organization.';

alter table app_private.tier_rate_limits enable row level security;

alter table app_private.tier_rate_limits force row level security;

create policy as_definer on app_private.tier_rate_limits to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create function app_admin.set_tier_rate_limit(tier app_public.subscription_tier, user_per_minute int, org_per_minute int)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_rate_limits l
       set user_per_minute = set_tier_rate_limit.user_per_minute, org_per_minute = set_tier_rate_limit.org_per_minute
     where l.tier = set_tier_rate_limit.tier
  $$;
comment on function app_admin.set_tier_rate_limit(app_public.subscription_tier, int, int) is
  E'Sets the API requests a minute a tier allows per user and per organization.\nExample: select app_admin.set_tier_rate_limit(''free'', 300, 1000);';

create unlogged table app_private.rate_limit_windows (
  key text primary key check (length(key) <= 200),
  window_start timestamptz not null,
  hits int not null check (hits >= 0)
);

comment on table app_private.rate_limit_windows is
  'Requests counted in the current one-minute window across all server instances, per address (ip:…), user (user:…) or organization (org:…). Unlogged: emptied by a crash.';

alter table app_private.rate_limit_windows enable row level security;

alter table app_private.rate_limit_windows force row level security;

create policy as_definer on app_private.rate_limit_windows to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- One instance's sync: adds `deltas` to `keys` in the window starting at `window_start` (a newer window resets a
-- key; counts for an older one are dropped; keys without new counts are only read) and answers the totals of
-- those keys (a key with no row yet is absent, meaning 0), with the per-user and
-- per-organization limits of each organization in `org_ids`, as {"hits": {key: n}, "limits": {org: [user, org]}}.
-- Keys are locked in key order, so concurrent syncs of several instances never deadlock. Rows of windows an
-- hour old are swept now and then.
create function app_private.sync_rate_limits(keys text[], deltas int[], window_start timestamptz, org_ids uuid[])
  returns jsonb
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_hits jsonb;
begin
  if cardinality(keys) > 200000 or cardinality(keys) <> cardinality(deltas) or cardinality(org_ids) > 100000 then
    raise exception 'A rate limit sync names at most 200000 keys, each with its count.' using errcode = '22023';
  end if;
  -- Keys with nothing new are only read: a sync never writes a row it does not add to.
  with incoming as (
    select k.key, sum(greatest(k.delta, 0))::int as delta
      from unnest(keys, deltas) as k(key, delta)
     group by k.key
  ), counted as (
    insert into app_private.rate_limit_windows as w (key, window_start, hits)
    select i.key, sync_rate_limits.window_start, i.delta from incoming i where i.delta > 0 order by i.key
    on conflict (key) do update
      set hits = case
            when w.window_start = excluded.window_start then w.hits + excluded.hits
            when w.window_start < excluded.window_start then excluded.hits
            else w.hits
          end,
          window_start = greatest(w.window_start, excluded.window_start)
    returning w.key, w.window_start, w.hits
  ), totals as (
    select c.key, c.window_start, c.hits from counted c
    union all
    select w.key, w.window_start, w.hits from app_private.rate_limit_windows w
     where w.key in (select i.key from incoming i where i.delta = 0)
  )
  select coalesce(jsonb_object_agg(t.key, case when t.window_start = sync_rate_limits.window_start then t.hits else 0 end), '{}')
    into v_hits from totals t;
  if random() < 0.01 then
    delete from app_private.rate_limit_windows w where w.window_start < now() - interval '1 hour';
  end if;
  return jsonb_build_object(
    'hits', v_hits,
    'limits', coalesce((
      select jsonb_object_agg(o.id, jsonb_build_array(l.user_per_minute, l.org_per_minute))
        from app_public.organizations o join app_private.tier_rate_limits l on l.tier = o.tier
       where o.id = any(sync_rate_limits.org_ids)), '{}'));
end;
$$;
comment on function app_private.sync_rate_limits(text[], int[], timestamptz, uuid[]) is
  'One server instance''s rate-limit sync: adds its new counts, answers the cluster-wide totals of its keys in the current window and its organizations'' tier limits.';
grant execute on function app_private.sync_rate_limits(text[], int[], timestamptz, uuid[]) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- 16. Workers and operators
--
-- Workers and operators: heartbeats, readiness, releasing the jobs of workers that died, and the app_admin functions an
-- operator calls from psql.
-- ==================================================================================================================

-- Readiness needs to know that a worker is alive. Each worker process upserts a row here every few seconds;
-- /health/ready reads the newest. The authenticator (which the worker and server log in as) reaches the table
-- only through the two functions below: it is not tenant data and no API role sees it.
create table app_private.worker_heartbeats (
  worker_id text primary key check (length(worker_id) between 1 and 200),
  hostname text not null,
  pid int not null,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now()
);

comment on table app_private.worker_heartbeats is 'One row per running worker process, refreshed every few seconds.';

create function app_private.forget_worker(worker_id text) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
    delete from app_private.worker_heartbeats where worker_heartbeats.worker_id = forget_worker.worker_id
  $$;
comment on function app_private.forget_worker(text) is 'Called by a worker process on clean shutdown.';
grant execute on function app_private.forget_worker(text) to :DATABASE_AUTHENTICATOR;

-- What /health/ready reports: the newest applied migration (compared by the server with the newest committed
-- file it ships) and how long ago any worker last reported in.
create function app_private.readiness(out latest_migration text, out worker_seen_seconds_ago double precision)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  as $$
    select
      (select max(filename) from graphile_migrate.migrations),
      (select extract(epoch from now() - max(last_seen_at))::double precision from app_private.worker_heartbeats)
  $$;
comment on function app_private.readiness() is
  'For GET /health/ready: the newest applied migration and the age in seconds of the newest worker heartbeat.';
grant execute on function app_private.readiness() to :DATABASE_AUTHENTICATOR;

-- Dead workers' queue entries are freed whatever the Quire job's status (a run that had put its job back to
-- `queued` but died before graphile-worker recorded the failure left the entry locked for four hours): the lock ids
-- recorded at job start by processes no longer reporting in, and any entry locked for longer than `max_age_seconds`
-- by a lock id no live process reports (a worker that died before its job's first write). A job on its last attempt
-- would never run again, so it fails (WORKER_LOST) rather than stay `queued` or `running`.
create function app_private.release_dead_workers(max_age_seconds int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_lock_ids text[];
  v_job_ids uuid[];
  v_job_id uuid;
begin
  -- Starting from what is locked (few rows), not from every job token ever issued.
  with live as (
    select h.worker_id, h.lock_id from app_private.worker_heartbeats h
     where h.last_seen_at > now() - make_interval(secs => max_age_seconds))
  select array_agg(distinct gj.locked_by) into v_lock_ids
    from graphile_worker._private_jobs gj
   where gj.locked_by is not null
     and not exists (select 1 from live where live.lock_id = gj.locked_by)
     and not exists (select 1 from app_private.job_tokens t join live on live.worker_id = t.runner_id where t.lock_id = gj.locked_by)
     and (gj.locked_at < now() - make_interval(secs => max_age_seconds)
          or exists (select 1 from app_private.job_tokens t where t.lock_id = gj.locked_by and t.runner_id is not null));
  if v_lock_ids is null then
    return 0;
  end if;
  select array_agg(j.id) into v_job_ids
    from graphile_worker._private_jobs gj
    join app_public.jobs j on j.id::text = gj.key
   where gj.locked_by = any (v_lock_ids) and gj.attempts >= gj.max_attempts;
  -- No run owns a released job until the next one claims it: the presumed-dead one, should it still be going, is
  -- fenced off (it would otherwise complete, i.e. delete, the queue entry another worker is about to take). Tokens
  -- first: this waits for such a run's open transaction, which may itself re-queue the entry.
  update app_private.job_tokens t set runner_id = null, lock_id = null, run_id = gen_random_uuid() where t.lock_id = any (v_lock_ids);
  perform graphile_worker.force_unlock_workers(v_lock_ids);
  foreach v_job_id in array coalesce(v_job_ids, '{}') loop
    perform graphile_worker.remove_job(v_job_id::text);
    update app_public.jobs j
       set status = 'failed', finished_at = now(), error_code = 'WORKER_LOST',
           error_message = 'The worker running this job stopped, and no attempts were left.'
     where j.id = v_job_id and j.status in ('queued', 'running');
  end loop;
  return cardinality(v_lock_ids);
end;
$$;
grant execute on function app_private.release_dead_workers(int) to :DATABASE_AUTHENTICATOR;
comment on function app_private.release_dead_workers(int) is
  'Unlocks the graphile-worker jobs held by worker processes that stopped reporting in (whatever their Quire status); returns how many lock ids were released.';

-- Each worker process reports its graphile-worker lock id with its heartbeat, so a queue entry locked by an id no
-- live process reports can be told apart from one a live worker is running (see release_dead_workers).
alter table app_private.worker_heartbeats add column lock_id text check (length(lock_id) between 1 and 200);

comment on column app_private.worker_heartbeats.lock_id is 'The graphile-worker lock id (locked_by) of the process''s worker pool.';

create function app_private.record_worker_heartbeat(worker_id text, hostname text, pid int, lock_id text default null) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
    insert into app_private.worker_heartbeats (worker_id, hostname, pid, lock_id)
    values (record_worker_heartbeat.worker_id, record_worker_heartbeat.hostname, record_worker_heartbeat.pid, record_worker_heartbeat.lock_id)
    on conflict (worker_id) do update
      set last_seen_at = now(), hostname = excluded.hostname, pid = excluded.pid,
          lock_id = coalesce(excluded.lock_id, worker_heartbeats.lock_id)
  $$;
comment on function app_private.record_worker_heartbeat(text, text, int, text) is
  'Called by each worker process every WORKER_HEARTBEAT_SECONDS: marks it alive and records its graphile-worker lock id.';
grant execute on function app_private.record_worker_heartbeat(text, text, int, text) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- 17. Seed data
--
-- Seed data: the tiers' allowances and limits and the global templates. Last, so it passes through every trigger above.
-- ==================================================================================================================

-- The owner writes under forced row-level security only in definer mode (the as_definer policies).
select set_config('quire.definer', 'on', true);

-- Three global templates to start with.
select app_admin.upsert_global_template(
  'Executive summary',
  E'Write an executive summary of the document "{{document.title}}" for the leadership of {{organization.name}}. '
  'In at most five sentences, state the purpose, the main findings and what is decided or asked. Date: {{date}}.\n\n{{document.content}}',
  'Five sentences for busy readers: purpose, findings, decisions.');

select app_admin.upsert_global_template(
  'Key points',
  E'List the key points of "{{document.title}}" as short bullet points, most important first, without repeating yourself.\n\n{{document.content}}',
  'The document''s main points as a bullet list.');

select app_admin.upsert_global_template(
  'Action items',
  E'Extract every action item from "{{document.title}}": who does what, by when (if stated). '
  'Answer "No action items." if there are none.\n\n{{document.content}}',
  'Who does what, by when.');

insert into app_private.tier_allowances (tier, monthly_summaries, monthly_tokens) values
  ('free', 100, 500000), ('basic', 2000, 10000000), ('premium', 20000, 100000000);

insert into app_private.tier_rate_limits (tier, user_per_minute, org_per_minute) values
  ('free', 600, 1200), ('basic', 1200, 6000), ('premium', 3000, 30000);

select set_config('quire.definer', '', true);
