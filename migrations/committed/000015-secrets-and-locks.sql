--! Previous: sha1:c8aafcf6b94bed5de4bfe2118c893ca1d8bfcd79
--! Hash: sha1:76f6b74b8c99cd09305518d267c77fae64c78500
--! Message: secrets out of the mail queue, throttle before verifying, role checks under lock

-- Mail without secrets in the queue. A queued email used to carry its whole text, one-time link included, in the
-- graphile-worker job (kept there after a last failed attempt, and written to the logs with the job). Now the job
-- carries only the id of a row here, which says what to send and to whom (by reference: no address, no token);
-- send_email mints the link's token when it sends, through app_private.prepare_email. Each attempt mints a new
-- token and replaces the one the previous attempt made, so only the newest link works.
create table app_private.mail_outbox (
  id uuid primary key default gen_random_uuid(),
  kind text not null check (kind in ('password_reset', 'invitation')),
  user_id uuid references app_public.users on delete cascade,
  invitation_id uuid references app_public.invitations on delete cascade,
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
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- The token an attempt minted for a reset email, so the next attempt can replace it.
alter table app_private.password_reset_tokens add column outbox_id uuid references app_private.mail_outbox on delete set null;
create unique index password_reset_tokens_outbox_id_idx on app_private.password_reset_tokens (outbox_id);
comment on column app_private.password_reset_tokens.outbox_id is 'The queued email this token was minted for (a retry replaces it); NULL once sent.';

drop function app_private.enqueue_email(text, text, text);

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
    select i.email into v_email
      from app_public.invitations i join app_public.organizations o on o.id = i.org_id and o.is_active
     where i.id = v_mail.invitation_id and i.accepted_at is null and i.expires_at > now()
       for update of i;
    if v_email is not null then
      insert into app_private.invitation_tokens as t (invitation_id, token_hash) values (v_mail.invitation_id, prepare_email.token_hash)
        on conflict on constraint invitation_tokens_pkey do update set token_hash = excluded.token_hash;
      return query select v_mail.kind, v_email, (select i.expires_at - now() from app_public.invitations i where i.id = v_mail.invitation_id);
      return;
    end if;
  end if;
  delete from app_private.mail_outbox o where o.id = v_mail.id;
end;
$$;
comment on function app_private.prepare_email(uuid, bytea) is
  'send_email, before each attempt: stores the new token''s digest (the previous attempt''s token stops working) and returns kind, recipient and validity; no row when nothing is left to send.';

create function app_private.email_sent(outbox_id uuid) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.password_reset_tokens t set outbox_id = null where t.outbox_id = email_sent.outbox_id;
    delete from app_private.mail_outbox o where o.id = email_sent.outbox_id;
  $$;
comment on function app_private.email_sent(uuid) is 'send_email, once delivered: forgets the outbox row (its token stays valid).';
grant execute on function app_private.prepare_email(uuid, bytea), app_private.email_sent(uuid) to :DATABASE_AUTHENTICATOR;

-- Asking for a reset queues a reference; the token is made when the email goes out. At most 3 live links per
-- person still: live tokens and reset emails not sent yet both count.
drop function app_private.request_password_reset(text, bytea, text, text);
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

create or replace function app_public.change_member_role(membership_id uuid, role app_public.membership_role)
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
  if v_caller < 'admin' then
    raise exception 'Only admins and owners manage members.' using errcode = 'DNIED';
  end if;
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

create or replace function app_public.remove_member(membership_id uuid) returns app_public.memberships
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
    if v_caller < 'admin' then
      raise exception 'Only admins and owners remove members.' using errcode = 'DNIED';
    end if;
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

-- Invitations: the role is checked under lock; with mail, the email is queued by reference (the worker mints the
-- token when it sends); without mail, the server made the token and hands the link to the inviting admin.
drop function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval, text, text);
create function app_hidden.create_invitation(email text, role app_public.membership_role, token_hash bytea, valid_for interval)
  returns app_public.invitations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_private.lock_member_role();
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
  if create_invitation.token_hash is null then
    perform app_private.queue_mail('invitation', null, v_invitation.id);
  else
    insert into app_private.invitation_tokens (invitation_id, token_hash) values (v_invitation.id, create_invitation.token_hash);
  end if;
  return v_invitation;
end;
$$;
comment on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval) is
  'Invites an email to the caller''s organization (admins; owners for the owner role), replacing a pending invitation. With a token digest, stores it (the caller hands the link over); without, queues the invitation email.';
grant execute on function app_hidden.create_invitation(text, app_public.membership_role, bytea, interval) to :DATABASE_AUTHENTICATED;

-- Accepting: the invitation's organization must still be active (invitation_by_token checked it, outside this
-- transaction).
create or replace function app_private.accept_invitation(
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
    join app_public.invitations i on i.id = t.invitation_id
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
  delete from app_private.invitation_tokens where invitation_id = v_invitation.id;
  update app_public.users set last_login_at = now() where id = v_user_id;
  select slug into v_slug from app_public.organizations where id = v_invitation.org_id;
  return app_private.open_session(v_user_id, v_slug, accept_invitation.session_id, accept_invitation.refresh_token_hash, accept_invitation.expires_at);
end;
$$;

-- Session functions: the session is locked FOR SHARE while it is used, so a concurrent logout, password reset or
-- removal either waits or has ended it (then LOGIN), never races past the check.
create or replace function app_private.change_password(session_id uuid, password_hash text) returns int
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

create or replace function app_private.switch_organization(
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

-- Jobs: the role is read under lock before the job row is locked (cancel_job read it first, then locked the job).
create or replace function app_public.summarize_document(document_id uuid, template_id uuid default null) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_role app_public.membership_role := app_private.lock_member_role();
  v_version record;
  v_job app_public.jobs;
begin
  if v_org_id is null or v_role is null then
    raise exception 'Sign in to request summaries.' using errcode = 'LOGIN';
  end if;
  if v_role < 'member' then
    raise exception 'Viewers cannot request summaries.' using errcode = 'DNIED';
  end if;
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

create or replace function app_public.cancel_job(job_id uuid) returns app_public.jobs
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
  if v_role is null or v_role < 'member' or (v_role < 'admin' and v_job.requested_by is distinct from app_public.current_user_id()) then
    raise exception 'Only the member who asked for a job, or an admin, can cancel it.' using errcode = 'DNIED';
  end if;
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

-- Integrations: connecting and disconnecting check the role under lock; queueing work locks the integration
-- FOR SHARE, so a concurrent disconnect (which cancels unfinished jobs) cannot miss a job queued meanwhile.
create or replace function app_public.begin_integration_oauth(provider app_public.integration_provider, state_hash bytea, return_to text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.lock_member_role();
begin
  if v_role is null then
    raise exception 'Sign in to connect an integration.' using errcode = 'LOGIN';
  end if;
  if v_role < 'admin' then
    raise exception 'Only admins and owners connect integrations.' using errcode = 'DNIED';
  end if;
  -- Abandoned authorizations do not pile up.
  delete from app_private.oauth_states s where s.expires_at < now() - interval '1 day';
  insert into app_private.oauth_states (state_hash, org_id, user_id, provider, return_to, code_verifier)
    values (begin_integration_oauth.state_hash, app_public.current_org_id(), app_public.current_user_id(),
            begin_integration_oauth.provider, begin_integration_oauth.return_to, begin_integration_oauth.code_verifier);
end;
$$;

create or replace function app_private.complete_integration(
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

create or replace function app_public.disconnect_integration(integration_id uuid) returns app_public.integrations
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
  if v_role is null or v_role < 'admin' then
    raise exception 'Only admins and owners disconnect integrations.' using errcode = 'DNIED';
  end if;
  delete from app_private.integration_secrets s where s.integration_id = v_integration.id;
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

create or replace function app_private.queue_integration_job(kind app_public.job_kind, integration_id uuid, params jsonb, summary_id uuid default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_role app_public.membership_role := app_private.lock_member_role();
  v_status app_public.integration_status;
  v_job app_public.jobs;
begin
  if v_org_id is null or v_role is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  if v_role < 'member' then
    raise exception 'Viewers cannot import or publish.' using errcode = 'DNIED';
  end if;
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
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

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

create or replace function app_private.record_login_failure(email text, ip inet) returns int
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
comment on function app_private.record_login_failure(text, inet) is
  'Records a failed sign-in (its slot was taken by begin_login); returns the seconds the client must now wait (0 if none).';

create or replace function app_private.complete_login(
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

drop function app_private.login_lookup(text, inet);
drop function app_private.login_retry_after(text, inet);
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
drop function app_private.session_password_hash(uuid);
