--! Previous: sha1:ce524e4cf44a4e5bbb242536b746365698683c6e
--! Hash: sha1:c1678b7be252a4a260baf33b008093b3a99bba17
--! Message: sso finishes where it started

-- Single sign-on finishes where it started
--
-- - A signed-in person links their account by starting single sign-on; until now the callback made the link, so a
--   linking sign-in's URL handed to another browser attached that browser's provider account to the starter. The
--   link is now made by completeSso, and only when the request carries the session of the person who started it.
-- - Login CSRF (RFC 6749 10.12): the state was not bound to the browser that started the sign-in, so an attacker
--   could hand a victim the callback URL of the attacker's own sign-in and sign the victim in as the attacker.
--   startSso now also returns a browser binding that the starting app keeps (never in a URL) and completeSso must
--   present; the database keeps its SHA-256 with the attempt and then with the handoff.

alter table app_private.sso_states add column if not exists binding_hash bytea check (length(binding_hash) = 32);

comment on column app_private.sso_states.binding_hash is 'SHA-256 of the browser binding startSso returned; completeSso must present the binding.';

drop function if exists app_private.save_sso_state(uuid, bytea, text, text, uuid);
create or replace function app_private.save_sso_state(
  org_id uuid, state_hash bytea, nonce text, code_verifier text, link_user_id uuid, binding_hash bytea
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  insert into app_private.sso_states (org_id, state_hash, nonce, code_verifier, expires_at, link_user_id, binding_hash)
    values (save_sso_state.org_id, save_sso_state.state_hash, save_sso_state.nonce, save_sso_state.code_verifier,
            app_private.clock_now() + interval '10 minutes', save_sso_state.link_user_id, save_sso_state.binding_hash);
  if random() < 0.01 then
    delete from app_private.sso_states s where s.expires_at < app_private.clock_now();
    delete from app_private.sso_handoffs h where h.expires_at < app_private.clock_now();
  end if;
end;
$$;
comment on function app_private.save_sso_state(uuid, bytea, text, text, uuid, bytea) is
  'Keeps a single sign-on attempt (state digest, nonce, PKCE verifier, the signed-in person starting it if any, the browser binding''s digest) for ten minutes.';
grant execute on function app_private.save_sso_state(uuid, bytea, text, text, uuid, bytea) to :DATABASE_AUTHENTICATOR;

drop function if exists app_private.take_sso_state(bytea);
create or replace function app_private.take_sso_state(state_hash bytea)
  returns table (
    org_id uuid, nonce text, code_verifier text, link_user_id uuid, binding_hash bytea, issuer text, client_id text,
    key_id text, secret_nonce bytea, secret_ciphertext bytea
  )
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with taken as (
      delete from app_private.sso_states s where s.state_hash = take_sso_state.state_hash returning s.*
    )
    select t.org_id, t.nonce, t.code_verifier, t.link_user_id, t.binding_hash, p.issuer, p.client_id, x.key_id, x.secret_nonce, x.secret_ciphertext
      from taken t
      join app_public.sso_providers p on p.org_id = t.org_id
      join app_private.sso_secrets x on x.org_id = p.org_id and x.provider_id = p.id
     where t.expires_at > app_private.clock_now()
  $$;
comment on function app_private.take_sso_state(bytea) is
  'Spends a single sign-on attempt by its state digest; answers its nonce, PKCE verifier, linking person, binding digest and provider only when it was unexpired.';
grant execute on function app_private.take_sso_state(bytea) to :DATABASE_AUTHENTICATOR;

alter table app_private.sso_handoffs
  add column if not exists link_issuer text,
  add column if not exists link_subject text,
  add column if not exists binding_hash bytea check (length(binding_hash) = 32);

comment on column app_private.sso_handoffs.link_subject is 'The provider subject to link to user_id when completeSso comes from their session (NULL: a sign-in).';

drop function if exists app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea, uuid);
create or replace function app_private.sso_sign_in(
  org_id uuid, issuer text, subject text, email text, email_verified boolean, full_name text, code_hash bytea, link_user_id uuid,
  binding_hash bytea
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_provider app_public.sso_providers;
  v_user_id uuid;
  v_email text := lower(btrim(sso_sign_in.email));
  v_link boolean := false;
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
    -- The link is made by complete_sso, from the session of the person who started it: a browser that was handed
    -- this sign-in's URL cannot attach its own provider account to them.
    v_user_id := sso_sign_in.link_user_id;
    v_link := true;
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
  insert into app_private.sso_handoffs (org_id, code_hash, user_id, expires_at, link_issuer, link_subject, binding_hash)
    values (sso_sign_in.org_id, sso_sign_in.code_hash, v_user_id, app_private.clock_now() + interval '1 minute',
            case when v_link then sso_sign_in.issuer end, case when v_link then sso_sign_in.subject end, sso_sign_in.binding_hash);
end;
$$;
comment on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea, uuid, bytea) is
  'After the server validated an ID token: finds the person by (issuer, subject), prepares the link of the signed-in person who started it (made by complete_sso, from their session), or provisions a new account (verified address, allowed domain, no account yet; unverified until its link is used); leaves a one-minute handoff. DNIED: removed member, not a member to link, already linked, unverified address or domain not allowed; TAKEN: the address has an account.';
grant execute on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea, uuid, bytea) to :DATABASE_AUTHENTICATOR;


drop function if exists app_private.complete_sso(bytea, uuid, bytea, timestamptz);
create or replace function app_private.complete_sso(
  code_hash bytea, session_id uuid, refresh_token_hash bytea, expires_at timestamptz, caller_user_id uuid, binding_hash bytea
)
  returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_handoff app_private.sso_handoffs;
  v_role app_public.membership_role;
begin
  delete from app_private.sso_handoffs h where h.code_hash = complete_sso.code_hash returning h.* into v_handoff;
  if v_handoff.user_id is null or v_handoff.expires_at <= app_private.clock_now()
     or v_handoff.binding_hash is distinct from complete_sso.binding_hash then
    raise exception 'This sign-in has expired; sign in again.' using errcode = 'LOGIN';
  end if;
  if v_handoff.link_subject is not null then
    if complete_sso.caller_user_id is distinct from v_handoff.user_id then
      raise exception 'Finish linking single sign-on from the session that started it.' using errcode = 'LOGIN';
    end if;
    if exists (select 1 from app_public.sso_identities i
                where i.org_id = v_handoff.org_id
                  and ((i.issuer = v_handoff.link_issuer and i.subject = v_handoff.link_subject)
                       or (i.user_id = v_handoff.user_id and i.issuer = v_handoff.link_issuer))) then
      raise exception 'This provider account or person is already linked.' using errcode = 'DNIED';
    end if;
    insert into app_public.sso_identities (org_id, user_id, issuer, subject, last_sign_in_at)
      values (v_handoff.org_id, v_handoff.user_id, v_handoff.link_issuer, v_handoff.link_subject, now());
  end if;
  select m.role into v_role
    from app_public.memberships m
    join app_public.users u on u.id = m.user_id and u.is_active
    join app_public.organizations o on o.id = m.org_id and o.is_active
   where m.org_id = v_handoff.org_id and m.user_id = v_handoff.user_id;
  if v_role is null then
    raise exception 'This sign-in has expired; sign in again.' using errcode = 'LOGIN';
  end if;
  update app_public.memberships m set last_used_at = now() where m.org_id = v_handoff.org_id and m.user_id = v_handoff.user_id;
  update app_public.users u set last_login_at = now() where u.id = v_handoff.user_id;
  insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at, auth_method)
    values (complete_sso.session_id, v_handoff.user_id, v_handoff.org_id, complete_sso.refresh_token_hash, complete_sso.expires_at, 'sso');
  return (complete_sso.session_id, v_handoff.user_id, v_handoff.org_id, v_role)::app_private.session_grant;
end;
$$;
comment on function app_private.complete_sso(bytea, uuid, bytea, timestamptz, uuid, bytea) is
  'Spends a single sign-on handoff presented with the browser binding of its startSso and opens a session marked sso; a linking handoff first links the provider account, only for the person who started it (caller_user_id). LOGIN when it is unknown, spent, expired, bound to another browser, another caller''s link, or the person or organization is no longer active; DNIED when already linked.';
grant execute on function app_private.complete_sso(bytea, uuid, bytea, timestamptz, uuid, bytea) to :DATABASE_AUTHENTICATOR;
