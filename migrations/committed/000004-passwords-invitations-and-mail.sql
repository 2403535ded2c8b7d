--! Previous: sha1:15d45cc1d18b20bd7e30d4d01fe980d8d12ee755
--! Hash: sha1:086b4ecc14ce839be3f3388487d3fec7952e98ed
--! Message: passwords, invitations and mail

-- Outgoing mail is a job: the request that causes it commits fast, and an unreachable SMTP server is retried by
-- the worker (send_email) instead of failing the request. The body holds a one-time link, so the job row is the
-- only place its token exists in clear, until the job completes and graphile-worker deletes it.
create function app_private.enqueue_email(recipient text, subject text, body text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
begin
  perform graphile_worker.add_job(
    'send_email',
    json_build_object('to', recipient, 'subject', subject, 'text', body),
    max_attempts => 5
  );
end;
$$;
comment on function app_private.enqueue_email(text, text, text) is 'Queues an email for the send_email task (5 attempts).';

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

create function app_private.request_password_reset(email text, token_hash bytea, subject text, body text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select u.id into v_user_id from app_public.users u where u.email = lower(btrim(request_password_reset.email)) and u.is_active;
  if v_user_id is null or (
    select count(*) from app_private.password_reset_tokens t
     where t.user_id = v_user_id and t.used_at is null and t.expires_at > now()
  ) >= 3 then
    return false;
  end if;
  insert into app_private.password_reset_tokens (token_hash, user_id, expires_at)
    values (request_password_reset.token_hash, v_user_id, now() + interval '1 hour');
  perform app_private.enqueue_email(lower(btrim(request_password_reset.email)), subject, body);
  return true;
end;
$$;
comment on function app_private.request_password_reset(text, bytea, text, text) is
  'Stores a reset token for an active account with this email and queues the email; false (and nothing stored) otherwise. Callers must not reveal which.';

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

-- Changing a password from a live session: the server verifies the current password against this hash first.
create function app_private.session_password_hash(session_id uuid) returns text
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  as $$
    select s.password_hash from app_private.sessions x join app_private.user_secrets s on s.user_id = x.user_id
     where x.id = session_password_hash.session_id and x.revoked_at is null and x.expires_at > now()
  $$;
comment on function app_private.session_password_hash(uuid) is 'The password hash of the person signed in with a live session; NULL otherwise.';

create function app_private.change_password(session_id uuid, password_hash text) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_user_id uuid;
begin
  select x.user_id into v_user_id from app_private.sessions x
   where x.id = change_password.session_id and x.revoked_at is null and x.expires_at > now();
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

-- Invitations: an admin invites an email with a role; the invitee accepts with a one-time token, creating an
-- account or joining with an existing one. The token's digest lives apart, in app_private.
create table app_public.invitations (
  id uuid primary key default gen_random_uuid(),
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
  unique (org_id, id)
);
create unique index invitations_pending_email_idx on app_public.invitations (org_id, email) where accepted_at is null;
create trigger _100_timestamps before insert or update on app_public.invitations
  for each row execute procedure app_private.tg__timestamps();
comment on table app_public.invitations is
  E'@behavior -insert -update\nAn invitation to join the organization with a role; admins and owners see and delete them.';

create table app_private.invitation_tokens (
  invitation_id uuid primary key references app_public.invitations on delete cascade,
  token_hash bytea not null unique check (length(token_hash) = 32)
);
comment on table app_private.invitation_tokens is 'SHA-256 digests of invitation tokens.';

alter table app_public.invitations enable row level security;
alter table app_public.invitations force row level security;
create policy as_definer on app_public.invitations to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_as_admin on app_public.invitations for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin');
create policy delete_as_admin on app_public.invitations for delete to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin'
         and (role < 'owner' or (select app_public.current_member_role()) = 'owner'));
grant select, delete on app_public.invitations to :DATABASE_AUTHENTICATED;

-- Called within the inviting admin's request (the server supplies the token's digest, and the email text when
-- mail is configured). Replaces a pending invitation of the same email.
create function app_hidden.create_invitation(
  email text, role app_public.membership_role, token_hash bytea, valid_for interval, subject text, body text
) returns app_public.invitations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_public.current_member_role();
  v_org_id uuid := app_public.current_org_id();
  v_email text := lower(btrim(create_invitation.email));
  v_invitation app_public.invitations;
begin
  if v_caller is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  if v_caller < 'admin' then
    raise exception 'Only admins and owners invite members.' using errcode = 'DNIED';
  end if;
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
  insert into app_private.invitation_tokens (invitation_id, token_hash) values (v_invitation.id, create_invitation.token_hash);
  if create_invitation.body is not null then
    perform app_private.enqueue_email(v_email, create_invitation.subject, create_invitation.body);
  end if;
  return v_invitation;
end;
$$;
comment on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval, text, text) is
  'Invites an email to the caller''s organization (admins; owners for the owner role), replacing a pending invitation; queues the email when given.';
grant execute on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval, text, text) to :DATABASE_AUTHENTICATED;

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
      join app_public.invitations i on i.id = t.invitation_id and i.accepted_at is null and i.expires_at > now()
      join app_public.organizations o on o.id = i.org_id and o.is_active
      left join app_public.users u on u.email = i.email and u.is_active
      left join app_private.user_secrets s on s.user_id = u.id
     where t.token_hash = invitation_by_token.token_hash
  $$;
comment on function app_private.invitation_by_token(bytea) is
  'The pending, unexpired invitation a token names, with the existing active account of its email (if any).';

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
    from app_private.invitation_tokens t join app_public.invitations i on i.id = t.invitation_id
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
  delete from app_private.invitation_tokens where invitation_id = v_invitation.id;
  update app_public.users set last_login_at = now() where id = v_user_id;
  select slug into v_slug from app_public.organizations where id = v_invitation.org_id;
  return app_private.open_session(v_user_id, v_slug, accept_invitation.session_id, accept_invitation.refresh_token_hash, accept_invitation.expires_at);
end;
$$;
comment on function app_private.accept_invitation(bytea, text, text, uuid, bytea, timestamptz) is
  'Accepts an invitation (creating the account when the email has none) and opens a session in its organization.';

grant execute on function
  app_private.request_password_reset(text, bytea, text, text),
  app_private.reset_password(bytea, text),
  app_private.session_password_hash(uuid),
  app_private.change_password(uuid, text),
  app_private.invitation_by_token(bytea),
  app_private.accept_invitation(bytea, text, text, uuid, bytea, timestamptz)
to :DATABASE_AUTHENTICATOR;

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
