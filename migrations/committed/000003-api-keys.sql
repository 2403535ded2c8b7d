--! Previous: sha1:357ee751dfa830ef92dacfd2f10bea3cf1cfd788
--! Hash: sha1:21ab64512ed74f29498ce898814e725895f0c3c1
--! Message: api keys

-- API keys for machine clients
--
-- An organization's admins create keys for scripts and services: a name, a role (at most admin, and at most their
-- own) and an optional expiry. A key acts as a service account of its own (a person row with no password, and a
-- membership with the key's role) holding one session, so everything that holds for people holds for it: row-level
-- security by its role, the session check of every request (revocation and expiry apply to the next one), rate
-- limits per account, live connections closed when it ends, and the audit log naming it. The key is shown once;
-- the database keeps the SHA-256 of its secret. Keys cannot manage keys or members.

alter table app_public.users add column if not exists is_service boolean not null default false;

comment on column app_public.users.is_service is 'True for an API key''s service account: it has no password and cannot sign in.';

-- Whether the caller is an API key (a service account).
create or replace function app_private.caller_is_service() returns boolean
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select coalesce((select u.is_service from app_public.users u where u.id = app_public.current_user_id()), false)
  $$;
comment on function app_private.caller_is_service() is 'Whether the caller is an API key''s service account.';
grant execute on function app_private.caller_is_service() to :DATABASE_AUTHENTICATED;

create table if not exists app_public.api_keys (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null check (char_length(name) between 1 and 100 and name = btrim(name)),
  role app_public.membership_role not null check (role <> 'owner'),
  user_id uuid not null references app_public.users on delete cascade,
  session_id uuid not null,
  secret_hash bytea not null check (length(secret_hash) = 32),
  created_by uuid references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  first_used_at timestamptz,
  revoked_at timestamptz,
  primary key (org_id, id),
  foreign key (org_id, session_id) references app_private.sessions (org_id, id) on delete cascade
);

-- A key names itself by id (the server checks it by id alone).
create index if not exists api_keys_id_idx on app_public.api_keys (id);
create index if not exists api_keys_org_id_user_id_idx on app_public.api_keys (org_id, user_id);
create index if not exists api_keys_org_id_session_id_idx on app_public.api_keys (org_id, session_id);
create index if not exists api_keys_org_id_created_by_idx on app_public.api_keys (org_id, created_by);

comment on table app_public.api_keys is
  E'@primaryKey id\n@behavior -insert -update -delete\nAn API key of the organization (createApiKey). Admins and owners see them; the secret is never stored, only its SHA-256.';
comment on constraint api_keys_pkey on app_public.api_keys is '@behavior -single -update -delete';
comment on column app_public.api_keys.user_id is 'The key''s service account: the person the key acts as.';
comment on constraint api_keys_org_id_fkey on app_public.api_keys is E'@fieldName organization\n@foreignFieldName apiKeys';
comment on constraint api_keys_user_id_fkey on app_public.api_keys is E'@fieldName serviceAccount\n@foreignFieldName apiKeysActedAs';
comment on constraint api_keys_created_by_fkey on app_public.api_keys is E'@fieldName creator\n@foreignFieldName createdApiKeys';
comment on constraint api_keys_org_id_session_id_fkey on app_public.api_keys is E'@behavior -*';
comment on column app_public.api_keys.first_used_at is 'When a request first used the key.';

alter table app_public.api_keys enable row level security;

alter table app_public.api_keys force row level security;

drop policy if exists as_definer on app_public.api_keys;
create policy as_definer on app_public.api_keys to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_as_admin on app_public.api_keys;
create policy select_as_admin on app_public.api_keys for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

-- Neither the digest nor the session is readable through the API.
grant select (org_id, id, name, role, user_id, created_by, created_at, expires_at, first_used_at, revoked_at)
  on app_public.api_keys to :DATABASE_AUTHENTICATED;

-- Named audit actions for keys, besides the generic ones of every table: creation, first use, revocation.
create or replace function app_private.tg_api_keys__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_action text;
begin
  if tg_op = 'INSERT' then
    v_action := 'api_key_created';
  elsif old.first_used_at is null and new.first_used_at is not null then
    v_action := 'api_key_used';
  elsif old.revoked_at is null and new.revoked_at is not null then
    v_action := 'api_key_revoked';
  else
    return null;
  end if;
  perform app_private.append_audit_event(
    new.org_id, v_action, 'api_keys', new.id, '{}', null, null,
    jsonb_build_object('name', new.name, 'role', new.role, 'expires_at', new.expires_at),
    v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  return null;
end;
$$;
comment on function app_private.tg_api_keys__audit() is 'Records api_key_created, api_key_used (first use) and api_key_revoked, without any secret.';

drop trigger if exists _900_audit on app_public.api_keys;
create trigger _900_audit after insert or update or delete on app_public.api_keys
  for each row execute procedure app_private.tg__audit('secret_hash');

drop trigger if exists _900_audit_named on app_public.api_keys;
create trigger _900_audit_named after insert or update on app_public.api_keys
  for each row execute procedure app_private.tg_api_keys__audit();

-- Creating a key: the service account, its membership and its one session, in the caller's organization. Returns
-- the key, `qk_<id>_<secret>` (the id without hyphens), which is never shown again.
drop function if exists app_public.create_api_key(text, app_public.membership_role, timestamptz);
create function app_public.create_api_key(name text, role app_public.membership_role, expires_at timestamptz default null)
  returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_private.require_role('admin', 'Only admins and owners create API keys.');
  v_org_id uuid := app_public.current_org_id();
  v_id uuid := gen_random_uuid();
  v_secret text := encode(public.gen_random_bytes(32), 'hex');
  v_user_id uuid;
  v_name text := btrim(coalesce(create_api_key.name, ''));
begin
  if char_length(v_name) not between 1 and 100 then
    raise exception 'A key''s name is 1 to 100 characters.' using errcode = 'BADIN';
  end if;
  if create_api_key.role is null or create_api_key.role = 'owner' or create_api_key.role > v_caller then
    raise exception 'A key''s role is at most admin, and at most your own.' using errcode = 'DNIED';
  end if;
  if create_api_key.expires_at is not null and create_api_key.expires_at <= now() then
    raise exception 'A key''s expiry must be in the future.' using errcode = 'BADIN';
  end if;
  insert into app_public.users (email, full_name, is_service)
    values ('api-key-' || replace(v_id::text, '-', '') || '@keys.quire.invalid', v_name, true)
    returning id into v_user_id;
  insert into app_public.memberships (org_id, user_id, role) values (v_org_id, v_user_id, create_api_key.role);
  insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at)
    values (v_id, v_user_id, v_org_id, sha256(public.gen_random_bytes(32)), coalesce(create_api_key.expires_at, 'infinity'));
  insert into app_public.api_keys (org_id, id, name, role, user_id, session_id, secret_hash, created_by, expires_at)
    values (v_org_id, v_id, v_name, create_api_key.role, v_user_id, v_id, sha256(convert_to(v_secret, 'UTF8')),
            app_public.current_user_id(), create_api_key.expires_at);
  return 'qk_' || replace(v_id::text, '-', '') || '_' || v_secret;
end;
$$;
comment on function app_public.create_api_key(text, app_public.membership_role, timestamptz) is
  'Admins and owners: creates an API key with a name, a role (at most admin, and at most yours) and an optional expiry. Returns the key, shown this once: send it as `Authorization: Bearer <key>`.';
grant execute on function app_public.create_api_key(text, app_public.membership_role, timestamptz) to :DATABASE_AUTHENTICATED;

-- Revoking: the key's session ends (its next request is refused, its live connections close).
drop function if exists app_public.revoke_api_key(uuid);
create function app_public.revoke_api_key(api_key_id uuid) returns app_public.api_keys
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key app_public.api_keys;
begin
  perform app_private.require_role('admin', 'Only admins and owners revoke API keys.');
  update app_public.api_keys k set revoked_at = now()
   where k.org_id = app_public.current_org_id() and k.id = revoke_api_key.api_key_id and k.revoked_at is null
  returning * into v_key;
  if not found then
    raise exception 'No such API key.' using errcode = 'NTFND';
  end if;
  update app_private.sessions s set revoked_at = now(), revoked_reason = 'api key revoked'
   where s.org_id = v_key.org_id and s.id = v_key.session_id and s.revoked_at is null;
  return v_key;
end;
$$;
comment on function app_public.revoke_api_key(uuid) is
  'Admins and owners: revokes an API key of the organization; its next request is refused and its live connections close.';
grant execute on function app_public.revoke_api_key(uuid) to :DATABASE_AUTHENTICATED;

-- The server's check of a presented key (as the authenticator, before any request context exists): the key's
-- session grant when the secret matches and the key is neither revoked nor expired, its organization active. The
-- first use is recorded. Every request's transaction then checks the session itself, as for a person.
drop function if exists app_private.api_key_grant(uuid, bytea);
create function app_private.api_key_grant(api_key_id uuid, secret_hash bytea) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key app_public.api_keys;
  v_grant app_private.session_grant;
begin
  select k.* into v_key from app_public.api_keys k
    join app_public.organizations o on o.id = k.org_id and o.is_active
   where k.id = api_key_grant.api_key_id and k.secret_hash = api_key_grant.secret_hash
     and k.revoked_at is null and (k.expires_at is null or k.expires_at > now());
  if not found then
    return null;
  end if;
  select s.id, s.user_id, s.org_id, m.role into v_grant
    from app_private.sessions s join app_public.memberships m on m.org_id = s.org_id and m.user_id = s.user_id
   where s.org_id = v_key.org_id and s.id = v_key.session_id and s.revoked_at is null and s.expires_at > now();
  if v_grant.session_id is not null and v_key.first_used_at is null then
    update app_public.api_keys k set first_used_at = now() where k.org_id = v_key.org_id and k.id = v_key.id and k.first_used_at is null;
  end if;
  return v_grant;
end;
$$;
comment on function app_private.api_key_grant(uuid, bytea) is
  'The session grant of a live API key whose secret has this SHA-256, or NULL. Records the first use.';
grant execute on function app_private.api_key_grant(uuid, bytea) to :DATABASE_AUTHENTICATOR;

-- A key whose session ends by any path (an admin ending the member's sessions, the key logging itself out, an
-- operator revoking the account's sessions) is revoked too, so apiKeys never shows a dead key as live.
create or replace function app_private.tg_sessions__revoke_key() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_public.api_keys k set revoked_at = new.revoked_at
   where k.org_id = new.org_id and k.session_id = new.id and k.revoked_at is null;
  return null;
end;
$$;
comment on function app_private.tg_sessions__revoke_key() is 'Trigger: revokes the API key whose session was revoked.';

drop trigger if exists _800_revoke_key on app_private.sessions;
create trigger _800_revoke_key after update of revoked_at on app_private.sessions
  for each row when (old.revoked_at is null and new.revoked_at is not null) execute procedure app_private.tg_sessions__revoke_key();

comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sign_in_failed, refresh_reuse, logout, session_ended, session_revoked, api_key_created, api_key_used, api_key_revoked, access_denied and request_failed for security events.';

-- Keys cannot manage members: an admin-level check refuses a service account, and so does any change to a
-- membership it attempts (changeMemberRole and removeMember check the role on their own). A key's own role is the
-- one it was created with: its service account's membership keeps it (revoke the key and create another).
create or replace function app_private.require_role(min app_public.membership_role, denied text, signed_out text default 'Sign in first.')
  returns app_public.membership_role
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_role app_public.membership_role := app_private.check_role(app_private.lock_member_role(), require_role.min, require_role.denied, require_role.signed_out);
begin
  if require_role.min >= 'admin' and app_private.caller_is_service() then
    raise exception 'API keys cannot manage members, keys or integrations.' using errcode = 'DNIED';
  end if;
  return v_role;
end;
$$;

create or replace function app_private.tg_memberships__not_by_keys() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if app_private.caller_is_service() then
    raise exception 'API keys cannot manage members, keys or integrations.' using errcode = 'DNIED';
  end if;
  if tg_op = 'UPDATE' and new.role is distinct from old.role
     and exists (select 1 from app_public.users u where u.id = old.user_id and u.is_service) then
    raise exception 'An API key keeps the role it was created with; revoke it and create another.' using errcode = 'DNIED';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end;
$$;
comment on function app_private.tg_memberships__not_by_keys() is 'Trigger: refuses a change to memberships made by an API key, and a role change of a key''s own membership.';

drop trigger if exists _050_not_by_keys on app_public.memberships;
create trigger _050_not_by_keys before update or delete on app_public.memberships
  for each row execute procedure app_private.tg_memberships__not_by_keys();
