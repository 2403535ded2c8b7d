--! Previous: sha1:46a026abe7fbee7c71e986e167b9482c56e55007
--! Hash: sha1:ce524e4cf44a4e5bbb242536b746365698683c6e
--! Message: sso and registration hardening

-- Single sign-on and registration hardening (an attacker's review)
--
-- - An unknown subject is never linked to an existing account by its address: an organization's admin chooses the
--   provider and its domains, so its provider could claim any member's address (and, through switchOrganization,
--   reach their other organizations). An existing person links their account by starting single sign-on while
--   signed in (the state names them); otherwise an address that has an account is refused.
-- - A single sign-on session stays in its organization: switchOrganization from it is refused, since the provider
--   vouched for the person to that organization only (and its second factor is the provider's).
-- - Accounts a provider creates are unverified until their emailed link is used: nobody proved the admin's domain.
-- - Connecting a provider needs a verified address, like inviting; so does enrolling 2FA (a squatter on an address
--   could otherwise lock its owner out with a second factor).
-- - Mail limits count a log that delivery does not delete (the outbox row goes once sent, so the counts stayed 0).
-- - Disconnecting the provider ends its sessions; a password reset gives a password to an account that had none.

alter table app_private.sso_states add column if not exists link_user_id uuid references app_public.users on delete cascade;

create index if not exists sso_states_link_user_id_idx on app_private.sso_states (link_user_id);

comment on column app_private.sso_states.link_user_id is 'The signed-in person who started this sign-in, to link to the provider''s subject if it is new; NULL otherwise.';

drop function if exists app_private.save_sso_state(uuid, bytea, text, text);
create or replace function app_private.save_sso_state(org_id uuid, state_hash bytea, nonce text, code_verifier text, link_user_id uuid)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  insert into app_private.sso_states (org_id, state_hash, nonce, code_verifier, expires_at, link_user_id)
    values (save_sso_state.org_id, save_sso_state.state_hash, save_sso_state.nonce, save_sso_state.code_verifier,
            app_private.clock_now() + interval '10 minutes', save_sso_state.link_user_id);
  if random() < 0.01 then
    delete from app_private.sso_states s where s.expires_at < app_private.clock_now();
    delete from app_private.sso_handoffs h where h.expires_at < app_private.clock_now();
  end if;
end;
$$;
comment on function app_private.save_sso_state(uuid, bytea, text, text, uuid) is
  'Keeps a single sign-on attempt (state digest, nonce, PKCE verifier, and the signed-in person starting it, if any) for ten minutes.';
grant execute on function app_private.save_sso_state(uuid, bytea, text, text, uuid) to :DATABASE_AUTHENTICATOR;

drop function if exists app_private.take_sso_state(bytea);
create or replace function app_private.take_sso_state(state_hash bytea)
  returns table (
    org_id uuid, nonce text, code_verifier text, link_user_id uuid, issuer text, client_id text, key_id text, secret_nonce bytea, secret_ciphertext bytea
  )
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with taken as (
      delete from app_private.sso_states s where s.state_hash = take_sso_state.state_hash returning s.*
    )
    select t.org_id, t.nonce, t.code_verifier, t.link_user_id, p.issuer, p.client_id, x.key_id, x.secret_nonce, x.secret_ciphertext
      from taken t
      join app_public.sso_providers p on p.org_id = t.org_id
      join app_private.sso_secrets x on x.org_id = p.org_id and x.provider_id = p.id
     where t.expires_at > app_private.clock_now()
  $$;
comment on function app_private.take_sso_state(bytea) is
  'Spends a single sign-on attempt by its state digest; answers its nonce, PKCE verifier, linking person and provider only when it was unexpired.';
grant execute on function app_private.take_sso_state(bytea) to :DATABASE_AUTHENTICATOR;

-- Who the provider's subject is. A known subject is its person, always. An unknown one is linked to the person who
-- started the sign-in while signed in (a member of the organization without an identity at this provider yet);
-- otherwise it needs a verified address in an allowed domain that has no account yet, and becomes a new account
-- (its address unverified until its emailed link is used) and member. An address that has an account is refused
-- (TAKEN) whatever the organization: that person signs in and links from there.
drop function if exists app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea);
create or replace function app_private.sso_sign_in(
  org_id uuid, issuer text, subject text, email text, email_verified boolean, full_name text, code_hash bytea, link_user_id uuid
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_provider app_public.sso_providers;
  v_user_id uuid;
  v_email text := lower(btrim(sso_sign_in.email));
begin
  select p.* into v_provider from app_public.sso_providers p where p.org_id = sso_sign_in.org_id for share;
  if not found or v_provider.issuer <> sso_sign_in.issuer then
    raise exception 'Single sign-on is not set up for this organization.' using errcode = 'NTFND';
  end if;
  select i.user_id into v_user_id from app_public.sso_identities i
   where i.org_id = sso_sign_in.org_id and i.issuer = sso_sign_in.issuer and i.subject = sso_sign_in.subject;
  if v_user_id is not null then
    if not exists (select 1 from app_public.memberships m where m.org_id = sso_sign_in.org_id and m.user_id = v_user_id) then
      raise exception 'You are no longer a member of this organization; ask an admin to invite you.' using errcode = 'DNIED';
    end if;
    update app_public.sso_identities i set last_sign_in_at = now()
     where i.org_id = sso_sign_in.org_id and i.issuer = sso_sign_in.issuer and i.subject = sso_sign_in.subject;
  elsif sso_sign_in.link_user_id is not null then
    -- Linking: the person proved their account (signed in) and their provider account (this sign-in).
    if not exists (select 1 from app_public.memberships m where m.org_id = sso_sign_in.org_id and m.user_id = sso_sign_in.link_user_id) then
      raise exception 'Sign in to this organization first, then link its single sign-on.' using errcode = 'DNIED';
    end if;
    if exists (select 1 from app_public.sso_identities i
                where i.org_id = sso_sign_in.org_id and i.user_id = sso_sign_in.link_user_id and i.issuer = sso_sign_in.issuer) then
      raise exception 'This person already signs in with another account of the identity provider.' using errcode = 'DNIED';
    end if;
    v_user_id := sso_sign_in.link_user_id;
    insert into app_public.sso_identities (org_id, user_id, issuer, subject, last_sign_in_at)
      values (sso_sign_in.org_id, v_user_id, sso_sign_in.issuer, sso_sign_in.subject, now());
  else
    if not coalesce(sso_sign_in.email_verified, false) or v_email is null or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
      raise exception 'Your identity provider did not confirm an email address.' using errcode = 'DNIED';
    end if;
    if not v_provider.allowed_domains @> array[split_part(v_email, '@', 2)] then
      raise exception 'Your email domain may not join this organization through single sign-on.' using errcode = 'DNIED';
    end if;
    if exists (select 1 from app_public.users u where u.email = v_email) then
      raise exception 'An account with this address already exists: sign in with it, then start single sign-on to link it.' using errcode = 'TAKEN';
    end if;
    insert into app_public.users (email, full_name, email_verified_at)
      values (v_email, coalesce(nullif(left(btrim(coalesce(sso_sign_in.full_name, '')), 200), ''), v_email), null)
      returning id into v_user_id;
    insert into app_public.memberships (org_id, user_id, role) values (sso_sign_in.org_id, v_user_id, v_provider.default_role);
    insert into app_public.sso_identities (org_id, user_id, issuer, subject, last_sign_in_at)
      values (sso_sign_in.org_id, v_user_id, sso_sign_in.issuer, sso_sign_in.subject, now());
    perform app_private.queue_mail('verify_email', v_user_id, null);
  end if;
  insert into app_private.sso_handoffs (org_id, code_hash, user_id, expires_at)
    values (sso_sign_in.org_id, sso_sign_in.code_hash, v_user_id, app_private.clock_now() + interval '1 minute');
end;
$$;
comment on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea, uuid) is
  'After the server validated an ID token: finds the person by (issuer, subject), links the signed-in person who started it, or provisions a new account (verified address, allowed domain, no account yet; unverified until its link is used); leaves a one-minute handoff. DNIED: removed member, not a member to link, already linked, unverified address or domain not allowed; TAKEN: the address has an account.';
grant execute on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea, uuid) to :DATABASE_AUTHENTICATOR;

-- A single sign-on session stays in its organization.
create or replace function app_private.switch_organization(
  current_session_id uuid, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
  v_method text;
begin
  select s.user_id, s.auth_method into v_user_id, v_method
    from app_private.sessions s join app_public.users u on u.id = s.user_id and u.is_active
   where s.id = switch_organization.current_session_id and s.revoked_at is null and s.expires_at > now()
     for share of s, u;
  if not found then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  if v_method = 'sso' then
    raise exception 'A single sign-on session stays in its organization: sign in to the other one.' using errcode = 'DNIED';
  end if;
  return app_private.open_session(
    v_user_id, switch_organization.organization_slug, switch_organization.session_id,
    switch_organization.refresh_token_hash, switch_organization.expires_at);
end;
$$;
comment on function app_private.switch_organization(uuid, text, uuid, bytea, timestamptz) is
  'Opens a session in another organization of the same user, from a live password session; LOGIN if it is not live, DNIED from a single sign-on session, NTFND if not a member.';

-- Connecting a provider lets it create members: it needs a verified address, like inviting.
create or replace function app_private.tg_sso_providers__verified() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  perform app_private.require_verified_email();
  return new;
end;
$$;
comment on function app_private.tg_sso_providers__verified() is 'Trigger: refuses (UNVRF) a provider connected or changed by a person whose address is not verified.';

drop trigger if exists _050_verified on app_public.sso_providers;
create trigger _050_verified before insert or update on app_public.sso_providers
  for each row execute procedure app_private.tg_sso_providers__verified();

-- Enrolling 2FA needs a verified address too.
create or replace function app_private.tg_user_mfa__verified() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if exists (select 1 from app_public.users u where u.id = new.user_id and u.email_verified_at is null) then
    raise exception 'Verify your email address first (the link we emailed you; resendVerificationEmail sends another).' using errcode = 'UNVRF';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_user_mfa__verified() is 'Trigger: refuses (UNVRF) a 2FA secret for a person whose address is not verified.';

drop trigger if exists _050_verified on app_private.user_mfa;
create trigger _050_verified before insert on app_private.user_mfa
  for each row execute procedure app_private.tg_user_mfa__verified();

-- Mail limits count this log: one row per email queued to a person, kept a day (the outbox row is deleted once sent).
create table if not exists app_private.mail_log (
  user_id uuid not null references app_public.users on delete cascade,
  kind text not null,
  queued_at timestamptz not null default now()
);

create index if not exists mail_log_user_id_kind_queued_at_idx on app_private.mail_log (user_id, kind, queued_at);

comment on table app_private.mail_log is 'Emails queued to each person in the last day, by kind: what the per-person mail limits count.';

create or replace function app_private.tg_mail_outbox__log() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  insert into app_private.mail_log (user_id, kind) values (new.user_id, new.kind);
  if random() < 0.01 then
    delete from app_private.mail_log l where l.queued_at < now() - interval '1 day';
  end if;
  return null;
end;
$$;
comment on function app_private.tg_mail_outbox__log() is 'Trigger: logs each email queued to a person in app_private.mail_log.';

drop trigger if exists _900_log on app_private.mail_outbox;
create trigger _900_log after insert on app_private.mail_outbox
  for each row when (new.user_id is not null) execute procedure app_private.tg_mail_outbox__log();

-- How many emails of a kind were queued to a person within `recent`.
create or replace function app_private.mails_sent(user_id uuid, kind text, recent interval) returns int
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select count(*)::int from app_private.mail_log l
     where l.user_id = mails_sent.user_id and l.kind = mails_sent.kind and l.queued_at > now() - mails_sent.recent
  $$;
comment on function app_private.mails_sent(uuid, text, interval) is 'Emails of `kind` queued to the person within `recent` (app_private.mail_log).';

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
    if app_private.mails_sent(v_user_id, 'registration_attempt', interval '1 hour') = 0 then
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
  if app_private.mails_sent(v_user_id, 'verify_email', interval '1 hour') >= 3 then
    raise exception 'A verification email was sent a moment ago; check your inbox or try again within the hour.' using errcode = 'RLIMT';
  end if;
  perform app_private.queue_mail('verify_email', v_user_id, null);
  return true;
end;
$$;

-- Disconnecting the provider ends the sessions it opened (they were exempt from require_mfa on its word).
create or replace function app_public.remove_sso() returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('admin', 'Only admins can change sign-in settings.');
  update app_public.organizations o set require_sso = false where o.id = app_public.current_org_id() and o.require_sso;
  delete from app_public.sso_providers p where p.org_id = app_public.current_org_id();
  if not found then
    return false;
  end if;
  update app_private.sessions s set revoked_at = now(), revoked_reason = 'single sign-on disconnected'
   where s.org_id = app_public.current_org_id() and s.auth_method = 'sso' and s.revoked_at is null;
  return true;
end;
$$;
comment on function app_public.remove_sso() is
  'Disconnects the organization''s identity provider, stops requiring single sign-on and ends the sessions it opened; false when none was connected. Admins; not API keys.';

-- A password reset sets a password even where there was none (an account made by single sign-on).
create or replace function app_private.reset_password(token_hash bytea, password_hash text) returns uuid
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
  insert into app_private.user_secrets as s (user_id, password_hash) values (v_user_id, reset_password.password_hash)
    on conflict (user_id) do update set password_hash = excluded.password_hash, password_changed_at = now();
  -- Every other token of the person dies with this one, and so does every session.
  update app_private.password_reset_tokens t set used_at = now() where t.user_id = v_user_id and t.used_at is null;
  perform app_private.revoke_user_sessions(v_user_id, 'password reset');
  return v_user_id;
end;
$$;
