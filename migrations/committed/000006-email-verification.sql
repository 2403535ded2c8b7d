--! Previous: sha1:3a11f7ea53df4f6dd4c63cfab4cc4ef3bf36d4d2
--! Hash: sha1:f40983b80834c01d28b302be670c74fca317309b
--! Message: email verification

-- Email verification, and registration that tells nothing
--
-- register no longer signs in, and answers the same whether or not the address has an account: a new address gets
-- an organization, an account whose address is unverified, and an email with a link (24 hours) that verifies it;
-- an address that has an account gets an email saying someone tried (at most one an hour) and nothing else. The
-- registrant then signs in with login. Until the address is verified, the account signs in and works but cannot
-- invite people or connect integrations (UNVRF), so an address nobody proved to own cannot reach out to others. A
-- new organization's slug ends in random characters, so it never reveals which names are taken. Addresses that
-- arrive another way are verified already: an invitation's link came to that inbox, a provider vouched for it, an
-- operator typed it; accounts that existed before this migration are counted as verified.

alter table app_public.users add column if not exists email_verified_at timestamptz default now();

comment on column app_public.users.email_verified_at is
  'When the person proved they receive mail at the address (verifyEmail), or when the account was made from a proof (an invitation, single sign-on, an operator); NULL while unverified.';

-- The live verification link of a person: one at a time (each sent email replaces it), 24 hours.
create table if not exists app_private.email_verification_tokens (
  user_id uuid primary key references app_public.users on delete cascade,
  token_hash bytea not null check (length(token_hash) = 32),
  expires_at timestamptz not null
);

create unique index if not exists email_verification_tokens_token_hash_idx on app_private.email_verification_tokens (token_hash);

comment on table app_private.email_verification_tokens is 'The digest of each unverified person''s newest verification link, valid 24 hours.';

-- Two more kinds of mail, both to a person: the verification link, and the notice that someone tried to register
-- with their address.
alter table app_private.mail_outbox drop constraint if exists mail_outbox_kind_check;
alter table app_private.mail_outbox add constraint mail_outbox_kind_check
  check (kind in ('password_reset', 'invitation', 'verify_email', 'registration_attempt')) not valid;
alter table app_private.mail_outbox validate constraint mail_outbox_kind_check;
alter table app_private.mail_outbox drop constraint if exists mail_outbox_check;
alter table app_private.mail_outbox add constraint mail_outbox_check
  check ((kind = 'invitation') = (invitation_id is not null) and (kind <> 'invitation') = (user_id is not null)) not valid;
alter table app_private.mail_outbox validate constraint mail_outbox_check;

-- A slug for a new organization: the name's slug and six random characters, drawn again in the unlikely case they
-- are taken. Nothing about other organizations' slugs can be read from it.
create or replace function app_private.fresh_slug(name text) returns text
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_base text := rtrim(left(app_private.slugify(fresh_slug.name), 43), '-');
  v_candidate text;
begin
  loop
    v_candidate := v_base || '-' || (select string_agg(substr('abcdefghijkmnpqrstuvwxyz23456789', 1 + floor(random() * 32)::int, 1), '')
                                       from generate_series(1, 6));
    exit when not exists (select 1 from app_public.organizations o where o.slug = v_candidate);
  end loop;
  return v_candidate;
end;
$$;
comment on function app_private.fresh_slug(text) is 'A new organization''s slug: the name''s slug (at most 43 characters) and six random characters, never one in use.';

-- Registration. The server hashed the password either way (the same work whatever the answer).
drop function if exists app_private.register(text, text, text, text, uuid, bytea, timestamptz);
create or replace function app_private.register(organization_name text, email text, full_name text, password_hash text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_email text := lower(btrim(register.email));
  v_user_id uuid;
  v_org_id uuid;
begin
  select u.id into v_user_id from app_public.users u where u.email = v_email for update;
  if v_user_id is not null then
    -- Its owner hears of it, at most once an hour; the registrant learns nothing.
    if not exists (select 1 from app_private.mail_outbox o
                    where o.user_id = v_user_id and o.kind = 'registration_attempt' and o.created_at > now() - interval '1 hour') then
      perform app_private.queue_mail('registration_attempt', v_user_id, null);
    end if;
    return;
  end if;
  insert into app_public.organizations (name, slug)
    values (btrim(register.organization_name), app_private.fresh_slug(register.organization_name))
    returning id into v_org_id;
  insert into app_public.users (email, full_name, email_verified_at) values (v_email, btrim(register.full_name), null)
    returning id into v_user_id;
  insert into app_private.user_secrets (user_id, password_hash) values (v_user_id, register.password_hash);
  insert into app_public.memberships (org_id, user_id, role) values (v_org_id, v_user_id, 'owner');
  perform app_private.queue_mail('verify_email', v_user_id, null);
end;
$$;
comment on function app_private.register(text, text, text, text) is
  'Creates an organization and its owner (unverified; a verification email is queued), or, when the address has an account, queues a notice to it. Answers nothing either way.';
grant execute on function app_private.register(text, text, text, text) to :DATABASE_AUTHENTICATOR;

-- What send_email calls before each attempt, with the two new kinds: a verification link replaces the person's
-- previous one (24 hours); a registration notice needs no token. Nothing is sent to a deactivated account, nor a
-- verification link to a verified one.
create or replace function app_private.prepare_email(outbox_id uuid, token_hash bytea)
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
  elsif v_mail.kind = 'verify_email' then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active and u.email_verified_at is null;
    if v_email is not null then
      insert into app_private.email_verification_tokens as t (user_id, token_hash, expires_at)
        values (v_mail.user_id, prepare_email.token_hash, app_private.clock_now() + interval '24 hours')
        on conflict on constraint email_verification_tokens_pkey do update set token_hash = excluded.token_hash, expires_at = excluded.expires_at;
      return query select v_mail.kind, v_email, interval '24 hours';
      return;
    end if;
  elsif v_mail.kind = 'registration_attempt' then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active;
    if v_email is not null then
      return query select v_mail.kind, v_email, interval '0';
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

-- verifyEmail: the link's token proves the inbox; the link is spent. Anyone holding the link may use it (it is the
-- proof), signed in or not.
create or replace function app_private.verify_email(token_hash bytea) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  delete from app_private.email_verification_tokens t
   where t.token_hash = verify_email.token_hash and t.expires_at > app_private.clock_now()
   returning t.user_id into v_user_id;
  if v_user_id is null then
    return false;
  end if;
  update app_public.users u set email_verified_at = now() where u.id = v_user_id and u.email_verified_at is null;
  perform app_private.audit_person_event(v_user_id, 'email_verified');
  return true;
end;
$$;
comment on function app_private.verify_email(bytea) is 'Spends a verification link''s token and marks its person''s address verified (audit email_verified); false for an unknown, spent or expired link.';
grant execute on function app_private.verify_email(bytea) to :DATABASE_AUTHENTICATOR;

-- resendVerificationEmail, from a live session of an unverified person: at most three an hour.
create or replace function app_private.resend_verification_email(session_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select p.user_id into v_user_id from app_private.live_person_session(resend_verification_email.session_id) p
    join app_public.users u on u.id = p.user_id and u.email_verified_at is null;
  if v_user_id is null then
    return false;
  end if;
  perform 1 from app_public.users u where u.id = v_user_id for update;
  if (select count(*) from app_private.mail_outbox o
       where o.user_id = v_user_id and o.kind = 'verify_email' and o.created_at > now() - interval '1 hour') >= 3 then
    raise exception 'A verification email was sent a moment ago; check your inbox or try again within the hour.' using errcode = 'RLIMT';
  end if;
  perform app_private.queue_mail('verify_email', v_user_id, null);
  return true;
end;
$$;
comment on function app_private.resend_verification_email(uuid) is
  'Queues a new verification email for the session''s unverified person (at most three an hour: RLIMT); false when already verified or the session is not live.';
grant execute on function app_private.resend_verification_email(uuid) to :DATABASE_AUTHENTICATOR;

-- The calls an unverified address may not make: inviting, connecting integrations.
create or replace function app_private.require_verified_email() returns void
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if exists (select 1 from app_public.users u where u.id = app_public.current_user_id() and u.email_verified_at is null) then
    raise exception 'Verify your email address first (the link we emailed you; resendVerificationEmail sends another).' using errcode = 'UNVRF';
  end if;
end;
$$;
comment on function app_private.require_verified_email() is 'Raises UNVRF when the caller''s address is not verified.';
grant execute on function app_private.require_verified_email() to :DATABASE_AUTHENTICATED;

-- Inviting and connecting integrations need a verified address (after the role check, so a viewer still hears
-- FORBIDDEN).
create or replace function app_hidden.create_invitation(email text, role app_public.membership_role, token_hash bytea, valid_for interval)
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
  perform app_private.require_verified_email();
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

create or replace function app_public.begin_integration_oauth(provider app_public.integration_provider, state_hash bytea, return_to text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('admin', 'Only admins and owners connect integrations.', 'Sign in to connect an integration.');
  perform app_private.require_verified_email();
  -- Abandoned authorizations do not pile up.
  delete from app_private.oauth_states s where s.expires_at < now() - interval '1 day';
  insert into app_private.oauth_states (state_hash, org_id, user_id, provider, return_to, code_verifier)
    values (begin_integration_oauth.state_hash, app_public.current_org_id(), app_public.current_user_id(),
            begin_integration_oauth.provider, begin_integration_oauth.return_to, begin_integration_oauth.code_verifier);
end;
$$;

comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sso_sign_in, sign_in_failed, refresh_reuse, logout, session_ended, session_revoked, api_key_created, api_key_used, api_key_revoked, mfa_enrolled, mfa_disabled, mfa_failed, email_verified, access_denied and request_failed for security events.';

-- An operator's way to vouch for an address (a person who cannot receive the email, checked out of band).
create or replace function app_admin.verify_email(email text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  update app_public.users u set email_verified_at = now()
   where u.email = lower(btrim(verify_email.email)) and u.email_verified_at is null
   returning u.id into v_user_id;
  if v_user_id is null then
    return false;
  end if;
  delete from app_private.email_verification_tokens t where t.user_id = v_user_id;
  perform app_private.audit_person_event(v_user_id, 'email_verified', null, jsonb_build_object('by', 'operator'));
  return true;
end;
$$;
comment on function app_admin.verify_email(text) is
  E'Marks a person''s address verified without the emailed link (after checking out of band); false when it already was or there is no such account.\nExample: select app_admin.verify_email(''ann@acme.example'');';
