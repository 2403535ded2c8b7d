--! Previous: sha1:e9d88ff00e1d9bc0cda76b5aeb24ae59bdd58673
--! Hash: sha1:357ee751dfa830ef92dacfd2f10bea3cf1cfd788
--! Message: sessions a user can see

-- Sessions a person can see and end
--
-- A person lists their live sessions (where and with what each was opened, when its refresh token was last used,
-- which one is this request's) and ends any of them; an admin ends a member's sessions in the organization. A
-- session also ends when its refresh token goes unused for SESSION_IDLE_SECONDS, as well as at its absolute
-- expiry (REFRESH_TOKEN_TTL_SECONDS after sign-in, never extended).

-- Where a session was opened: the request's address and user agent, read from the sign-in's settings by a trigger
-- so no sign-in path can forget them. The user agent is shown back to its owner only, cut to 256 characters.
alter table app_private.sessions
  add column if not exists client_ip inet,
  add column if not exists user_agent text;

-- Checked without holding sign-ins up: added NOT VALID (no scan under the exclusive lock), then validated under a
-- lock that lets reads and writes go on.
alter table app_private.sessions drop constraint if exists sessions_user_agent_length;
alter table app_private.sessions add constraint sessions_user_agent_length check (char_length(user_agent) <= 256) not valid;
alter table app_private.sessions validate constraint sessions_user_agent_length;

comment on column app_private.sessions.client_ip is 'The address the session was opened from (quire.client_ip of the sign-in).';
comment on column app_private.sessions.user_agent is 'The User-Agent the session was opened with (quire.user_agent of the sign-in), at most 256 characters.';

create or replace function app_private.tg_sessions__origin() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  new.client_ip := (app_private.audit_actor()).client_ip;
  new.user_agent := left(nullif(current_setting('quire.user_agent', true), ''), 256);
  return new;
end;
$$;
comment on function app_private.tg_sessions__origin() is 'Trigger: records the address and user agent a session is opened with.';

drop trigger if exists _100_origin on app_private.sessions;
create trigger _100_origin before insert on app_private.sessions
  for each row execute procedure app_private.tg_sessions__origin();

-- What a person sees of a session: never a token or a hash.
drop function if exists app_public.my_sessions();
drop function if exists app_public.end_session(uuid);
drop function if exists app_public.end_member_sessions(uuid);
drop type if exists app_public.user_session;
create type app_public.user_session as (
  row_id uuid,
  organization_id uuid,
  organization_name text,
  created_at timestamptz,
  last_used_at timestamptz,
  expires_at timestamptz,
  client_ip inet,
  user_agent text,
  is_current boolean
);
comment on type app_public.user_session is 'One of the caller''s live sessions, without any token.';
comment on column app_public.user_session.row_id is 'The session''s id, for endSession.';
comment on column app_public.user_session.last_used_at is 'When its refresh token was last used (or the sign-in); access tokens in between are not recorded.';
comment on column app_public.user_session.is_current is 'True for the session this request was made with.';

-- The caller's live sessions in every organization they belong to, most recently used first; none in a job's context
-- (a job acts for its requester, not as them).
create function app_public.my_sessions() returns setof app_public.user_session
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select s.id, s.org_id, o.name, s.created_at, coalesce(s.rotated_at, s.created_at), s.expires_at, s.client_ip, s.user_agent,
           s.id = app_private.uuid_setting('jwt.claims.session_id')
      from app_private.sessions s
      join app_public.memberships m on m.org_id = s.org_id and m.user_id = s.user_id
      join app_public.organizations o on o.id = s.org_id and o.is_active
     where s.user_id = app_public.current_user_id()
       and app_private.uuid_setting('jwt.claims.session_id') is not null and app_public.current_job_id() is null
       and s.revoked_at is null and s.expires_at > now()
     order by coalesce(s.rotated_at, s.created_at) desc, s.id
  $$;
comment on function app_public.my_sessions() is
  'Your live sessions in every organization you belong to, most recently used first; the one of this request is marked.';
grant execute on function app_public.my_sessions() to :DATABASE_AUTHENTICATED;

-- Ending one of one's own sessions (this one included: it is a logout). Another person's session, or one already
-- ended, is not found.
create function app_public.end_session(session_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- A person's own session only: a job runs with its requester as the user, and must not reach their sessions.
  if app_public.current_user_id() is null or app_private.uuid_setting('jwt.claims.session_id') is null
     or app_public.current_job_id() is not null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  update app_private.sessions s set revoked_at = now(), revoked_reason = 'ended by user'
   where s.id = end_session.session_id and s.user_id = app_public.current_user_id() and s.revoked_at is null and s.expires_at > now();
  if not found then
    raise exception 'No such session.' using errcode = 'NTFND';
  end if;
  return true;
end;
$$;
comment on function app_public.end_session(uuid) is
  'Ends one of your sessions (listed by mySessions): its refresh token stops working and its live connections close at once.';
grant execute on function app_public.end_session(uuid) to :DATABASE_AUTHENTICATED;

-- An admin ends a member's sessions in this organization (a stolen laptop, a contractor leaving). Admins cannot end
-- an owner's sessions; only owners can. The member's sessions in other organizations are theirs.
create function app_public.end_member_sessions(membership_id uuid) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.require_role('admin', 'Only admins and owners end other members'' sessions.');
  v_target app_public.memberships;
  v_ended int;
begin
  select * into v_target from app_public.memberships m
   where m.org_id = app_public.current_org_id() and m.id = end_member_sessions.membership_id
     for share;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  if v_target.role > v_role then
    raise exception 'Only owners end an owner''s sessions.' using errcode = 'DNIED';
  end if;
  with ended as (
    update app_private.sessions s set revoked_at = now(), revoked_reason = 'ended by an admin'
     where s.org_id = v_target.org_id and s.user_id = v_target.user_id and s.revoked_at is null and s.expires_at > now()
    returning 1)
  select count(*)::int into v_ended from ended;
  return v_ended;
end;
$$;
comment on function app_public.end_member_sessions(uuid) is
  'Admins and owners: ends every session of a member in this organization (not an owner''s, unless you are one); returns how many ended.';
grant execute on function app_public.end_member_sessions(uuid) to :DATABASE_AUTHENTICATED;

-- Idle sessions end: refreshing checks when the refresh token was last used, and ends the session (reason 'idle')
-- when that was more than idle_seconds ago. Access tokens live ACCESS_TOKEN_TTL_SECONDS, less than any idle time
-- the configuration accepts, so an idle session's last access token has already expired.
-- Servers of the previous release, still running while a deploy migrates, call it with five arguments: the
-- sixth defaults to SESSION_IDLE_SECONDS' default.
drop function if exists app_private.refresh_session(uuid, int, bytea, bytea, int);
create or replace function app_private.refresh_session(
  session_id uuid, presented_generation int, presented_hash bytea, next_hash bytea, grace_seconds int, idle_seconds int default 259200
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
  if coalesce(s.rotated_at, s.created_at) <= app_private.clock_now() - make_interval(secs => refresh_session.idle_seconds) then
    update app_private.sessions set revoked_at = app_private.clock_now(), revoked_reason = 'idle' where sessions.org_id = s.org_id and sessions.id = s.id;
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  select m.role into v_role
    from app_public.memberships m
    join app_public.users u on u.id = m.user_id and u.is_active
    join app_public.organizations o on o.id = m.org_id and o.is_active
   where m.org_id = s.org_id and m.user_id = s.user_id;
  if v_role is null then
    update app_private.sessions set revoked_at = app_private.clock_now(), revoked_reason = 'membership ended' where sessions.org_id = s.org_id and sessions.id = s.id;
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  if refresh_session.presented_generation = s.refresh_generation and refresh_session.presented_hash = s.refresh_token_hash then
    update app_private.sessions
       set refresh_generation = s.refresh_generation + 1, previous_token_hash = s.refresh_token_hash,
           refresh_token_hash = refresh_session.next_hash, rotated_at = app_private.clock_now()
     where sessions.org_id = s.org_id and sessions.id = s.id;
    return query select 'rotated', s.user_id, s.org_id, v_role, s.refresh_generation + 1, s.expires_at;
  elsif refresh_session.presented_generation = s.refresh_generation - 1 and refresh_session.presented_hash = s.previous_token_hash
        and s.rotated_at > app_private.clock_now() - make_interval(secs => refresh_session.grace_seconds) then
    return query select 'grace', s.user_id, s.org_id, v_role, s.refresh_generation, s.expires_at;
  elsif refresh_session.presented_generation < s.refresh_generation then
    update app_private.sessions set revoked_at = app_private.clock_now(), revoked_reason = 'refresh token reuse' where sessions.org_id = s.org_id and sessions.id = s.id;
    return query select 'reused', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  else
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  end if;
end;
$$;
comment on function app_private.refresh_session(uuid, int, bytea, bytea, int, int) is
  'Rotates a refresh token: rotated | grace (concurrent refresh: same new generation) | reused (session revoked) | invalid (also when idle longer than idle_seconds: the session ends).';
grant execute on function app_private.refresh_session(uuid, int, bytea, bytea, int, int) to :DATABASE_AUTHENTICATOR;

-- Session ends in the audit log: a person ending their own, an admin ending a member's, and idleness are
-- session_ended, with the reason. When someone else ended it, they are the actor and the details name the session.
create or replace function app_private.tg_sessions__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_action text;
  v_metadata jsonb := '{}';
begin
  if tg_op = 'INSERT' then
    v_action := 'sign_in';
  elsif old.revoked_at is null and new.revoked_at is not null then
    v_action := case
      when new.revoked_reason in ('logout', 'logout everywhere') then 'logout'
      when new.revoked_reason = 'refresh token reuse' then 'refresh_reuse'
      when new.revoked_reason in ('ended by user', 'ended by an admin', 'idle') then 'session_ended'
      else 'session_revoked' end;
    v_metadata := jsonb_build_object('reason', new.revoked_reason);
  else
    return null;
  end if;
  -- Ended by someone else (an admin): they are the actor; whose session it was goes in the details.
  if v_actor.user_id is not null and v_actor.user_id is distinct from new.user_id then
    perform app_private.append_audit_event(
      new.org_id, v_action, null, null, '{}', null, null,
      v_metadata || jsonb_build_object('session_user_id', new.user_id, 'session_id', new.id),
      v_actor.user_id, v_actor.session_id, null, v_actor.request_id, v_actor.client_ip);
  else
    perform app_private.append_audit_event(
      new.org_id, v_action, null, null, '{}', null, null, v_metadata,
      new.user_id, new.id, null, v_actor.request_id, v_actor.client_ip);
  end if;
  return null;
end;
$$;
