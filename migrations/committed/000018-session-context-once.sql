--! Previous: sha1:f49f9cc1eb00301e7c4715b16cb3583c97548fef
--! Hash: sha1:e523f1afe8cea189b7bb0e94fe52fa156804536d
--! Message: session context once

-- The request context, checked once per transaction (issue 12). Until now every policy's
-- `(select app_public.current_org_id())` called a security definer function that joined sessions, memberships,
-- users and organizations (or job_tokens and jobs for the worker): once per statement, and several times per
-- statement where a policy reads more than one helper. Now the check runs once per transaction: the first helper
-- that finds no verified context for the transaction's input settings calls app_hidden.enter_context(), which
-- verifies them exactly as before and caches what it found in transaction-local settings; every later call reads
-- the cache. The helpers are plain `language sql stable` expressions with no SET clause, so the planner inlines
-- them and a policy's sub-select becomes an InitPlan over current_setting(), usable as an index condition.
--
-- The cache is keyed on its inputs: quire.ctx holds the input settings it was computed for (session and
-- organization claims, or the job id, token and run), so a transaction that presents other inputs (a test that
-- changes caller, a worker that takes on a job after doing its own work) is checked afresh, never served the
-- previous answer. Every value is set with is_local, so nothing outlives the transaction: a pooled connection
-- starts each request with an empty cache, and a revoked session, removed member or changed role takes effect on
-- the next request exactly as before.
--
-- What stops a forged context. The API never runs SQL a caller wrote: every statement is PostGraphile's or
-- Quire's, with the settings taken from a verified token. Someone who connects with the authenticator's own
-- credential (a server secret) and types SQL could set quire.ctx and the cached values by hand and act as any
-- member of any organization; before this change they needed only a session id, which every access token of
-- that session carries, so the credential was already equivalent to every tenant's API access. What still holds
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

-- The helpers the policies read: the cache when it answers for this transaction's inputs, the check otherwise.
create or replace function app_public.current_org_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_org_id', true), '')::uuid
      else (app_hidden.enter_context()).org_id end
  $$;

create or replace function app_public.current_user_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_user_id', true), '')::uuid
      else (app_hidden.enter_context()).user_id end
  $$;

create or replace function app_public.current_member_role() returns app_public.membership_role
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_role', true), '')::app_public.membership_role
      else (app_hidden.enter_context()).role end
  $$;

create or replace function app_public.current_job_id() returns uuid
  language sql stable
  as $$
    select case when current_setting('quire.ctx', true) = app_hidden.context_key()
      then nullif(current_setting('quire.ctx_job_id', true), '')::uuid
      else (app_hidden.enter_context()).job_id end
  $$;

-- The definer functions that ask for the whole context read the same cache.
create or replace function app_private.session_context(out org_id uuid, out user_id uuid, out role app_public.membership_role)
  language sql stable
  as $$ select app_public.current_org_id(), app_public.current_user_id(), app_public.current_member_role() $$;
comment on function app_private.session_context() is
  'The organization, user and role of this transaction''s verified context (app_hidden.enter_context, cached); NULLs without a session; raises LOGIN when the session is not live.';
