--! Previous: sha1:08aa23fde9f6ee1bb246fbd0fc28566f38c34c04
--! Hash: sha1:e908f3184ea9e065898961354868a20db20bbe76
--! Message: identity

-- Roles within an organization, weakest first, so `role >= 'admin'` reads as "admin or above".
create type app_public.membership_role as enum ('viewer', 'member', 'admin', 'owner');
comment on type app_public.membership_role is
  'viewer reads; member also writes content; admin also manages members below owner, templates and integrations; owner also manages the organization and its owners.';
create type app_public.subscription_tier as enum ('free', 'basic', 'premium');

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
alter table app_public.organizations add constraint organizations_settings_valid check (app_private.valid_org_settings(settings));
-- A check constraint calls its function with the privileges of whoever writes the row.
grant execute on function app_private.valid_org_settings(jsonb) to :DATABASE_AUTHENTICATED;

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

-- A person's role in an organization (tenancy invariants: org_id first, composite keys, org-leading indexes).
create table app_public.memberships (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  user_id uuid not null references app_public.users on delete cascade,
  role app_public.membership_role not null default 'member',
  last_used_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, user_id)
);
comment on column app_public.memberships.last_used_at is 'When the member last signed in to or switched to this organization.';
-- Sign-in looks memberships up by person; the one index on a tenant table that does not lead with org_id.
create index memberships_user_id_idx on app_public.memberships (user_id);
create trigger _100_timestamps before insert or update on app_public.memberships
  for each row execute procedure app_private.tg__timestamps();

-- One row per sign-in. The refresh token is never stored: only the SHA-256 of the current one and of the one it
-- replaced (for the grace window), and the generation it has reached.
create table app_private.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references app_public.users on delete cascade,
  org_id uuid not null references app_public.organizations on delete cascade,
  refresh_generation int not null default 1,
  refresh_token_hash bytea not null check (length(refresh_token_hash) = 32),
  previous_token_hash bytea check (length(previous_token_hash) = 32),
  rotated_at timestamptz,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  revoked_reason text
);
comment on table app_private.sessions is 'One per sign-in: the refresh-token family, its organization, and whether it is still live.';
create index sessions_user_id_idx on app_private.sessions (user_id) where revoked_at is null;

-- The request context, now checked against a live session. The access token names its session (sid); each
-- statement that consults these functions reads that session once (policies wrap them in a sub-select) and so sees
-- logout, deactivation, removal and role changes on the very next request, whatever the token still says.
-- A token whose session is not live fails with LOGIN rather than quietly reading nothing.
create function app_private.session_context(out org_id uuid, out user_id uuid, out role app_public.membership_role)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
begin
  if v_session_id is null then
    return;
  end if;
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
end;
$$;
comment on function app_private.session_context() is
  'The organization, user and role of the live session named by jwt.claims.session_id; NULLs without one; raises LOGIN when it is no longer live.';

create or replace function app_public.current_org_id() returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select org_id from app_private.session_context() $$;
comment on function app_public.current_org_id() is
  E'@behavior -*\nThe organization of this request''s live session, or NULL when there is none.';

create or replace function app_public.current_user_id() returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select user_id from app_private.session_context() $$;
comment on function app_public.current_user_id() is
  E'@behavior -*\nThe user of this request''s live session, or NULL when there is none.';

create function app_public.current_member_role() returns app_public.membership_role
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select role from app_private.session_context() $$;
comment on function app_public.current_member_role() is
  E'@behavior -*\nThe caller''s role in the current organization, read through the live session (never from the token).';
grant execute on function app_public.current_member_role() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- Row-level security, forced: the owner is held to it too, so an operator's stray `delete` in psql touches nothing.
-- Security definer functions run as the owner and must act across organizations (register creates one); they
-- declare `set quire.definer = 'on'`, and the owner's policy admits exactly that. They check the caller themselves.
-- Every other policy names the API role it is for: a policy for PUBLIC would also apply to the owner inside those
-- functions, and its call back into the session lookup would recurse. The sub-selects make each policy
-- expression run once per statement.
alter table app_public.organizations enable row level security;
alter table app_public.organizations force row level security;
create policy as_definer on app_public.organizations to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own on app_public.organizations for select to :DATABASE_AUTHENTICATED using (id = (select app_public.current_org_id()));
create policy update_as_admin on app_public.organizations for update to :DATABASE_AUTHENTICATED
  using (id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin');
grant select on app_public.organizations to :DATABASE_AUTHENTICATED;
grant update (name, settings) on app_public.organizations to :DATABASE_AUTHENTICATED;
comment on table app_public.organizations is E'@behavior -insert -delete\nA tenant: everything else belongs to exactly one organization.';

alter table app_public.users enable row level security;
alter table app_public.users force row level security;
create policy as_definer on app_public.users to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
-- A person sees themself and the members of their current organization.
create policy select_self_and_colleagues on app_public.users for select to :DATABASE_AUTHENTICATED using (
  id = (select app_public.current_user_id())
  or id in (select m.user_id from app_public.memberships m where m.org_id = (select app_public.current_org_id()))
);
create policy update_self on app_public.users for update to :DATABASE_AUTHENTICATED using (id = (select app_public.current_user_id()));
grant select on app_public.users to :DATABASE_AUTHENTICATED;
grant update (full_name) on app_public.users to :DATABASE_AUTHENTICATED;
comment on table app_public.users is E'@behavior -insert -delete\nA person. One account per email address; memberships join people to organizations.';

alter table app_public.memberships enable row level security;
alter table app_public.memberships force row level security;
create policy as_definer on app_public.memberships to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.memberships for select to :DATABASE_AUTHENTICATED using (org_id = (select app_public.current_org_id()));
grant select on app_public.memberships to :DATABASE_AUTHENTICATED;
comment on table app_public.memberships is E'@behavior -insert -update -delete\nA person''s role in an organization. Every organization keeps at least one owner.';

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

-- How long a client must wait before trying to sign in again: 5 failures for one account, or 30 from one address,
-- within 15 minutes (failures before the account's last success do not count). 0 means go ahead.
create function app_private.login_retry_after(email text, ip inet) returns int
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    with account as (
      select attempted_at from app_private.login_attempts a
       where a.email = login_retry_after.email and not a.succeeded
         and a.attempted_at > now() - interval '15 minutes'
         and a.attempted_at > coalesce((select max(b.attempted_at) from app_private.login_attempts b
                                         where b.email = login_retry_after.email and b.succeeded), '-infinity')
       order by attempted_at desc offset 4 limit 1
    ), address as (
      select attempted_at from app_private.login_attempts a
       where login_retry_after.ip is not null and a.ip = login_retry_after.ip and not a.succeeded
         and a.attempted_at > now() - interval '15 minutes'
       order by attempted_at desc offset 29 limit 1
    )
    select greatest(0, ceil(extract(epoch from (max(attempted_at) + interval '15 minutes' - now()))))::int
      from (select attempted_at from account union all select attempted_at from address) as locked
  $$;
comment on function app_private.login_retry_after(text, inet) is
  'Seconds until `email` (5 failures) or `ip` (30 failures) may try to sign in again after failures within 15 minutes; 0 when allowed.';

-- The first step of sign-in: is the client throttled, and which hash to verify. The server verifies the password
-- itself, off the database connection (bcrypt takes ~0.25 s of CPU).
create function app_private.login_lookup(email text, ip inet)
  returns table (user_id uuid, password_hash text, retry_after_seconds int)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select u.id, s.password_hash, r.seconds
      from (select app_private.login_retry_after(lower(btrim(login_lookup.email)), login_lookup.ip) as seconds) r
      left join app_public.users u on u.email = lower(btrim(login_lookup.email)) and u.is_active and r.seconds = 0
      left join app_private.user_secrets s on s.user_id = u.id
  $$;
comment on function app_private.login_lookup(text, inet) is
  'Sign-in step 1: seconds to wait (0 to proceed) and, when allowed, the active user with `email` and their password hash.';

create function app_private.record_login_failure(email text, ip inet) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_private.login_attempts (email, ip, succeeded) values (lower(btrim(record_login_failure.email)), record_login_failure.ip, false);
    select app_private.login_retry_after(lower(btrim(record_login_failure.email)), record_login_failure.ip);
  $$;
comment on function app_private.record_login_failure(text, inet) is 'Records a failed sign-in; returns the seconds the client must now wait (0 if none).';

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
begin
  insert into app_private.login_attempts (email, ip, succeeded) values (lower(btrim(complete_login.email)), complete_login.ip, true);
  update app_public.users set last_login_at = now() where id = complete_login.user_id;
  return app_private.open_session(
    complete_login.user_id, complete_login.organization_slug, complete_login.session_id,
    complete_login.refresh_token_hash, complete_login.expires_at);
end;
$$;
comment on function app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz) is
  'Sign-in step 2, once the server verified the password: records the success and opens a session.';

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

-- Refresh-token rotation with reuse detection. Presenting the current token moves the session to the next
-- generation. Presenting the one just replaced, within the grace window, is a concurrent refresh and gets the
-- current generation back (the same new token). Presenting any older one means a token was stolen: the whole
-- session is revoked.
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
  if not found or s.revoked_at is not null or s.expires_at <= now() then
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  select m.role into v_role
    from app_public.memberships m
    join app_public.users u on u.id = m.user_id and u.is_active
    join app_public.organizations o on o.id = m.org_id and o.is_active
   where m.org_id = s.org_id and m.user_id = s.user_id;
  if v_role is null then
    update app_private.sessions set revoked_at = now(), revoked_reason = 'membership ended' where id = s.id;
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
    return;
  end if;
  if refresh_session.presented_generation = s.refresh_generation and refresh_session.presented_hash = s.refresh_token_hash then
    update app_private.sessions
       set refresh_generation = s.refresh_generation + 1, previous_token_hash = s.refresh_token_hash,
           refresh_token_hash = refresh_session.next_hash, rotated_at = now()
     where id = s.id;
    return query select 'rotated', s.user_id, s.org_id, v_role, s.refresh_generation + 1, s.expires_at;
  elsif refresh_session.presented_generation = s.refresh_generation - 1 and refresh_session.presented_hash = s.previous_token_hash
        and s.rotated_at > now() - make_interval(secs => refresh_session.grace_seconds) then
    return query select 'grace', s.user_id, s.org_id, v_role, s.refresh_generation, s.expires_at;
  elsif refresh_session.presented_generation < s.refresh_generation then
    update app_private.sessions set revoked_at = now(), revoked_reason = 'refresh token reuse' where id = s.id;
    return query select 'reused', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  else
    return query select 'invalid', null::uuid, null::uuid, null::app_public.membership_role, null::int, null::timestamptz;
  end if;
end;
$$;
comment on function app_private.refresh_session(uuid, int, bytea, bytea, int) is
  'Rotates a refresh token: rotated | grace (concurrent refresh: same new generation) | reused (session revoked) | invalid.';

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
   where s.id = switch_organization.current_session_id and s.revoked_at is null and s.expires_at > now();
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

-- The authenticator runs sign-in on behalf of clients that are not signed in yet; the API roles never see these.
grant execute on function
  app_private.login_lookup(text, inet),
  app_private.record_login_failure(text, inet),
  app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz),
  app_private.register(text, text, text, text, uuid, bytea, timestamptz),
  app_private.refresh_session(uuid, int, bytea, bytea, int),
  app_private.revoke_session(uuid, text),
  app_private.revoke_user_sessions(uuid, text, uuid),
  app_private.switch_organization(uuid, text, uuid, bytea, timestamptz)
to :DATABASE_AUTHENTICATOR;
