--! Previous: sha1:f2f8f44bbb87df919ec519fe9951f3ffb0579c31
--! Hash: sha1:3a11f7ea53df4f6dd4c63cfab4cc4ef3bf36d4d2
--! Message: single sign-on

-- Single sign-on (OpenID Connect), per organization
--
-- An organization's admins connect its identity provider (Okta, Entra ID, Google Workspace, Keycloak…): issuer,
-- client id and secret (sealed by the server with SEALING_KEYS; the database never holds it in the clear), the email
-- domains it may provision, and the role new members get. A sign-in goes to the provider with PKCE, state and nonce;
-- the server checks the ID token (openid-client) and the database decides who it is: a known (issuer, subject) is
-- that person, always; an unknown one with a verified address in an allowed domain is provisioned just in time. The
-- browser then gets a one-minute, single-use handoff code that completeSso trades for the usual tokens. An
-- organization may require single sign-on (require_sso): password sessions of its members are refused, its owners
-- excepted (the break-glass path when the provider is down).

-- How a session was opened: single sign-on sessions pass require_sso (and leave second factors to the provider).
alter table app_private.sessions add column if not exists auth_method text not null default 'password';

alter table app_private.sessions drop constraint if exists sessions_auth_method_valid;
alter table app_private.sessions add constraint sessions_auth_method_valid check (auth_method in ('password', 'sso')) not valid;
alter table app_private.sessions validate constraint sessions_auth_method_valid;

comment on column app_private.sessions.auth_method is 'password (any sign-in that is not single sign-on: passwords, invitations, switching, API keys) or sso.';

alter table app_public.organizations add column if not exists require_sso boolean not null default false;

comment on column app_public.organizations.require_sso is
  'Members sign in through the organization''s identity provider only; owners keep their password (setRequireSso; admins).';

create table if not exists app_public.sso_providers (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  issuer text not null check (char_length(issuer) <= 500 and issuer ~ '^https?://[^\s?#]+$'),
  client_id text not null check (char_length(client_id) between 1 and 500 and client_id = btrim(client_id)),
  allowed_domains text[] not null default '{}'
    check (cardinality(allowed_domains) <= 50 and array_to_string(allowed_domains, ',') ~ '^([a-z0-9.-]+(,|$))*$'),
  default_role app_public.membership_role not null default 'member' check (default_role <> 'owner'),
  created_by uuid references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  -- One identity provider per organization.
  unique (org_id)
);

create index if not exists sso_providers_id_idx on app_public.sso_providers (id);
create index if not exists sso_providers_org_id_created_by_idx on app_public.sso_providers (org_id, created_by);
-- startSso by email domain reads every provider (one row per organization that connected one) rather than an index
-- that does not lead with org_id: tenancy invariant 4.

comment on table app_public.sso_providers is
  E'@primaryKey id\n@behavior -insert -update -delete\nThe organization''s OpenID Connect identity provider (configureSso). Admins see it; its client secret is sealed elsewhere and never readable.';
comment on constraint sso_providers_pkey on app_public.sso_providers is '@behavior -single -update -delete';
comment on constraint sso_providers_org_id_key on app_public.sso_providers is '@behavior -single -update -delete';
comment on constraint sso_providers_org_id_fkey on app_public.sso_providers is E'@fieldName organization\n@foreignFieldName ssoProviders';
comment on constraint sso_providers_created_by_fkey on app_public.sso_providers is E'@fieldName creator\n@foreignFieldName createdSsoProviders';
comment on column app_public.sso_providers.issuer is 'The provider''s issuer URL, exactly as its discovery document and ID tokens state it.';
comment on column app_public.sso_providers.allowed_domains is 'Email domains (lowercase) whose verified addresses are provisioned on first sign-in; empty: nobody new.';
comment on column app_public.sso_providers.default_role is 'The role of members provisioned on first sign-in (at most admin).';

drop trigger if exists _100_timestamps on app_public.sso_providers;
create trigger _100_timestamps before insert or update on app_public.sso_providers
  for each row execute procedure app_private.tg__timestamps();

alter table app_public.sso_providers enable row level security;

alter table app_public.sso_providers force row level security;

drop policy if exists as_definer on app_public.sso_providers;
create policy as_definer on app_public.sso_providers to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_as_admin on app_public.sso_providers;
create policy select_as_admin on app_public.sso_providers for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

grant select on app_public.sso_providers to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.sso_providers;
create trigger _900_audit after insert or update or delete on app_public.sso_providers
  for each row execute procedure app_private.tg__audit();

create table if not exists app_private.sso_secrets (
  org_id uuid not null,
  provider_id uuid not null,
  key_id text not null,
  secret_nonce bytea not null,
  secret_ciphertext bytea not null,
  primary key (org_id, provider_id),
  foreign key (org_id, provider_id) references app_public.sso_providers (org_id, id) on delete cascade
);

comment on table app_private.sso_secrets is 'The identity provider''s client secret, sealed under SEALING_KEYS key key_id for its organization.';

-- Who a provider's subject is, per organization: the only way a later sign-in finds its person.
create table if not exists app_public.sso_identities (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  user_id uuid not null references app_public.users on delete cascade,
  issuer text not null,
  subject text not null check (char_length(subject) between 1 and 255),
  created_at timestamptz not null default now(),
  last_sign_in_at timestamptz,
  primary key (org_id, id),
  unique (org_id, issuer, subject)
);

create index if not exists sso_identities_id_idx on app_public.sso_identities (id);
create index if not exists sso_identities_org_id_user_id_idx on app_public.sso_identities (org_id, user_id);

comment on table app_public.sso_identities is
  E'@primaryKey id\n@behavior -insert -update -delete\nA person of the organization as its identity provider knows them (issuer and subject). Admins see them.';
comment on constraint sso_identities_pkey on app_public.sso_identities is '@behavior -single -update -delete';
comment on constraint sso_identities_org_id_issuer_subject_key on app_public.sso_identities is '@behavior -single -update -delete';
comment on constraint sso_identities_org_id_fkey on app_public.sso_identities is E'@fieldName organization\n@foreignFieldName ssoIdentities';
comment on constraint sso_identities_user_id_fkey on app_public.sso_identities is E'@fieldName user\n@foreignFieldName ssoIdentities';

alter table app_public.sso_identities enable row level security;

alter table app_public.sso_identities force row level security;

drop policy if exists as_definer on app_public.sso_identities;
create policy as_definer on app_public.sso_identities to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_as_admin on app_public.sso_identities;
create policy select_as_admin on app_public.sso_identities for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() >= 'admin');

grant select on app_public.sso_identities to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.sso_identities;
create trigger _900_audit after insert or update or delete on app_public.sso_identities
  for each row execute procedure app_private.tg__audit();

-- A sign-in on its way to the provider: the state's digest (the browser carries the state), the nonce the ID token
-- must carry and the PKCE verifier, for ten minutes, used once.
create table if not exists app_private.sso_states (
  org_id uuid not null references app_public.organizations on delete cascade,
  state_hash bytea not null check (length(state_hash) = 32),
  nonce text not null,
  code_verifier text not null,
  expires_at timestamptz not null,
  primary key (org_id, state_hash)
);

create index if not exists sso_states_state_hash_idx on app_private.sso_states (state_hash);

comment on table app_private.sso_states is 'Single sign-on attempts waiting for the provider''s redirect: state digest, nonce and PKCE verifier; deleted when used.';

-- A sign-in the provider vouched for, waiting for the browser's completeSso: one minute, used once.
create table if not exists app_private.sso_handoffs (
  org_id uuid not null references app_public.organizations on delete cascade,
  code_hash bytea not null check (length(code_hash) = 32),
  user_id uuid not null references app_public.users on delete cascade,
  expires_at timestamptz not null,
  primary key (org_id, code_hash)
);

create index if not exists sso_handoffs_code_hash_idx on app_private.sso_handoffs (code_hash);
create index if not exists sso_handoffs_user_id_idx on app_private.sso_handoffs (user_id);

comment on table app_private.sso_handoffs is 'Single sign-ons waiting for completeSso: the digest of the one-minute handoff code and whom it signs in.';

-- Connecting the provider: the server sealed the client secret for this organization; the admin's role is checked
-- here. Replaces the organization's provider, keeping its id (and so its people's identities) when the issuer stays.
create or replace function app_hidden.configure_sso(
  issuer text, client_id text, allowed_domains text[], default_role app_public.membership_role,
  key_id text, secret_nonce bytea, secret_ciphertext bytea
) returns app_public.sso_providers
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_provider app_public.sso_providers;
  v_domains text[];
begin
  -- require_role also refuses API keys at admin level.
  perform app_private.require_role('admin', 'Only admins can change sign-in settings.');
  select coalesce(array_agg(distinct lower(btrim(d)) order by lower(btrim(d))), '{}') into v_domains
    from unnest(configure_sso.allowed_domains) d where btrim(d) <> '';
  if exists (select 1 from unnest(v_domains) d where d !~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$') then
    raise exception 'allowedDomains must be domain names such as acme.example.' using errcode = 'BADIN';
  end if;
  if configure_sso.default_role = 'owner' then
    raise exception 'defaultRole may be at most admin.' using errcode = 'BADIN';
  end if;
  insert into app_public.sso_providers as p (org_id, issuer, client_id, allowed_domains, default_role, created_by)
    values (v_org_id, btrim(configure_sso.issuer), btrim(configure_sso.client_id), v_domains,
            coalesce(configure_sso.default_role, 'member'), app_public.current_user_id())
    on conflict on constraint sso_providers_org_id_key do update
      set issuer = excluded.issuer, client_id = excluded.client_id, allowed_domains = excluded.allowed_domains,
          default_role = excluded.default_role
    returning p.* into v_provider;
  insert into app_private.sso_secrets (org_id, provider_id, key_id, secret_nonce, secret_ciphertext)
    values (v_org_id, v_provider.id, configure_sso.key_id, configure_sso.secret_nonce, configure_sso.secret_ciphertext)
    on conflict on constraint sso_secrets_pkey do update
      set key_id = excluded.key_id, secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext;
  return v_provider;
end;
$$;
comment on function app_hidden.configure_sso(text, text, text[], app_public.membership_role, text, bytea, bytea) is
  'Sets the organization''s identity provider and its sealed client secret (configureSso). Admins; not API keys. BADIN for a malformed domain or an owner default role.';
grant execute on function app_hidden.configure_sso(text, text, text[], app_public.membership_role, text, bytea, bytea) to :DATABASE_AUTHENTICATED;

-- Disconnecting the provider also stops requiring it (nobody could sign in otherwise); identities stay, so
-- reconnecting the same issuer finds the same people.
create or replace function app_public.remove_sso() returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('admin', 'Only admins can change sign-in settings.');
  update app_public.organizations o set require_sso = false where o.id = app_public.current_org_id() and o.require_sso;
  delete from app_public.sso_providers p where p.org_id = app_public.current_org_id();
  return found;
end;
$$;
comment on function app_public.remove_sso() is
  'Disconnects the organization''s identity provider and stops requiring single sign-on; false when none was connected. Admins; not API keys.';
grant execute on function app_public.remove_sso() to :DATABASE_AUTHENTICATED;

create or replace function app_public.set_require_sso(required boolean) returns app_public.organizations
  language plpgsql volatile strict security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  perform app_private.require_role('admin', 'Only admins can change sign-in settings.');
  if set_require_sso.required and not exists (select 1 from app_public.sso_providers p where p.org_id = app_public.current_org_id()) then
    raise exception 'Connect an identity provider first (configureSso).' using errcode = 'BADIN';
  end if;
  -- An admin who is not an owner must have signed in through the provider (so it works, and they keep access).
  if set_require_sso.required and app_public.current_member_role() <> 'owner' and not exists (
       select 1 from app_private.sessions s
        where s.id = app_private.uuid_setting('jwt.claims.session_id') and s.org_id = app_public.current_org_id() and s.auth_method = 'sso') then
    raise exception 'Sign in with single sign-on first (or ask an owner).' using errcode = 'BADIN';
  end if;
  update app_public.organizations o set require_sso = set_require_sso.required
   where o.id = app_public.current_org_id()
   returning o.* into v_org;
  return v_org;
end;
$$;
comment on function app_public.set_require_sso(boolean) is
  'Requires (or stops requiring) single sign-on of the organization''s members: their password sessions are refused with SSO_REQUIRED from the next request. Owners keep their password (break-glass). Admins; not API keys.';
grant execute on function app_public.set_require_sso(boolean) to :DATABASE_AUTHENTICATED;

-- Starting a sign-in, anonymously: the provider of the organization named by slug, or else of the one whose
-- allowed domains hold the email domain (when exactly one does). The sealed client secret comes along for the
-- server, which stores the attempt with save_sso_state.
create or replace function app_private.sso_provider_for(organization_slug text, email_domain text)
  returns table (org_id uuid, issuer text, client_id text, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select p.org_id, p.issuer, p.client_id, s.key_id, s.secret_nonce, s.secret_ciphertext
      from app_public.sso_providers p
      join app_public.organizations o on o.id = p.org_id and o.is_active
      join app_private.sso_secrets s on s.org_id = p.org_id and s.provider_id = p.id
     where case when sso_provider_for.organization_slug is not null then o.slug = sso_provider_for.organization_slug
                else p.allowed_domains @> array[lower(btrim(sso_provider_for.email_domain))]
                     and (select count(*) from app_public.sso_providers q
                           where q.allowed_domains @> array[lower(btrim(sso_provider_for.email_domain))]) = 1 end
  $$;
comment on function app_private.sso_provider_for(text, text) is
  'The identity provider (with its sealed client secret) of the active organization named by slug, or else of the only one allowing the email domain; no row otherwise.';
grant execute on function app_private.sso_provider_for(text, text) to :DATABASE_AUTHENTICATOR;

create or replace function app_private.save_sso_state(org_id uuid, state_hash bytea, nonce text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  insert into app_private.sso_states (org_id, state_hash, nonce, code_verifier, expires_at)
    values (save_sso_state.org_id, save_sso_state.state_hash, save_sso_state.nonce, save_sso_state.code_verifier,
            app_private.clock_now() + interval '10 minutes');
  if random() < 0.01 then
    delete from app_private.sso_states s where s.expires_at < app_private.clock_now();
    delete from app_private.sso_handoffs h where h.expires_at < app_private.clock_now();
  end if;
end;
$$;
comment on function app_private.save_sso_state(uuid, bytea, text, text) is 'Keeps a single sign-on attempt (state digest, nonce, PKCE verifier) for ten minutes.';
grant execute on function app_private.save_sso_state(uuid, bytea, text, text) to :DATABASE_AUTHENTICATOR;

-- The provider sent the browser back: the attempt is spent whatever follows (a replayed state finds nothing), and
-- only an unexpired one answers, with what the server needs to redeem the code.
create or replace function app_private.take_sso_state(state_hash bytea)
  returns table (org_id uuid, nonce text, code_verifier text, issuer text, client_id text, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with taken as (
      delete from app_private.sso_states s where s.state_hash = take_sso_state.state_hash returning s.*
    )
    select t.org_id, t.nonce, t.code_verifier, p.issuer, p.client_id, x.key_id, x.secret_nonce, x.secret_ciphertext
      from taken t
      join app_public.sso_providers p on p.org_id = t.org_id
      join app_private.sso_secrets x on x.org_id = p.org_id and x.provider_id = p.id
     where t.expires_at > app_private.clock_now()
  $$;
comment on function app_private.take_sso_state(bytea) is
  'Spends a single sign-on attempt by its state digest; answers its nonce, PKCE verifier and provider only when it was unexpired.';
grant execute on function app_private.take_sso_state(bytea) to :DATABASE_AUTHENTICATOR;

-- The provider vouched for (issuer, subject) and the server checked its ID token: who that is in the organization.
-- A known subject is its person, always (a changed address at the provider changes nothing here). An unknown one
-- needs a verified address in an allowed domain: a new address becomes a new account (no password) and member with
-- the default role; an address that is already a member is linked; an address with an account outside the
-- organization is refused (TAKEN), since an admin could list any domain: that person joins by invitation first;
-- a member already linked to another subject of the same provider is refused (DNIED).
-- Leaves a one-minute handoff for complete_sso.
create or replace function app_private.sso_sign_in(
  org_id uuid, issuer text, subject text, email text, email_verified boolean, full_name text, code_hash bytea
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
  else
    if not coalesce(sso_sign_in.email_verified, false) or v_email is null or v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' then
      raise exception 'Your identity provider did not confirm an email address.' using errcode = 'DNIED';
    end if;
    if not v_provider.allowed_domains @> array[split_part(v_email, '@', 2)] then
      raise exception 'Your email domain may not join this organization through single sign-on.' using errcode = 'DNIED';
    end if;
    select u.id into v_user_id from app_public.users u where u.email = v_email;
    if v_user_id is null then
      insert into app_public.users (email, full_name)
        values (v_email, coalesce(nullif(left(btrim(coalesce(sso_sign_in.full_name, '')), 200), ''), v_email))
        returning id into v_user_id;
      insert into app_public.memberships (org_id, user_id, role) values (sso_sign_in.org_id, v_user_id, v_provider.default_role);
    elsif not exists (select 1 from app_public.memberships m where m.org_id = sso_sign_in.org_id and m.user_id = v_user_id) then
      raise exception 'An account with this address already exists: sign in with it and accept an invitation to the organization, then single sign-on links to it.' using errcode = 'TAKEN';
    elsif exists (select 1 from app_public.sso_identities i
                   where i.org_id = sso_sign_in.org_id and i.user_id = v_user_id and i.issuer = sso_sign_in.issuer) then
      -- Already linked to another subject: a second provider account claiming the address is not the same person.
      raise exception 'This person already signs in with another account of the identity provider.' using errcode = 'DNIED';
    end if;
    insert into app_public.sso_identities (org_id, user_id, issuer, subject, last_sign_in_at)
      values (sso_sign_in.org_id, v_user_id, sso_sign_in.issuer, sso_sign_in.subject, now());
  end if;
  insert into app_private.sso_handoffs (org_id, code_hash, user_id, expires_at)
    values (sso_sign_in.org_id, sso_sign_in.code_hash, v_user_id, app_private.clock_now() + interval '1 minute');
end;
$$;
comment on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea) is
  'After the server validated an ID token: finds the person by (issuer, subject), or provisions or links them (verified address, allowed domain), and leaves a one-minute handoff. DNIED: removed member, unverified address or domain not allowed; TAKEN: an account outside the organization.';
grant execute on function app_private.sso_sign_in(uuid, text, text, text, boolean, text, bytea) to :DATABASE_AUTHENTICATOR;

-- completeSso: the handoff is spent and the session opens, marked as single sign-on.
create or replace function app_private.complete_sso(code_hash bytea, session_id uuid, refresh_token_hash bytea, expires_at timestamptz)
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
  if v_handoff.user_id is null or v_handoff.expires_at <= app_private.clock_now() then
    raise exception 'This sign-in has expired; sign in again.' using errcode = 'LOGIN';
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
comment on function app_private.complete_sso(bytea, uuid, bytea, timestamptz) is
  'Spends a single sign-on handoff and opens a session marked sso. LOGIN when it is unknown, spent, expired, or the person or organization is no longer active.';
grant execute on function app_private.complete_sso(bytea, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- Password sign-ins into an organization that requires single sign-on are refused up front (owners excepted), with
-- the code that tells the client to use startSso.
create or replace function app_private.open_session(
  user_id uuid, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_membership app_public.memberships;
  v_require_sso boolean;
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
  select o.require_sso into v_require_sso from app_public.organizations o where o.id = v_membership.org_id;
  if v_require_sso and v_membership.role <> 'owner' then
    raise exception 'This organization signs in with single sign-on (startSso).' using errcode = 'SSORQ';
  end if;
  update app_public.memberships set last_used_at = now() where id = v_membership.id;
  insert into app_private.sessions (id, user_id, org_id, refresh_token_hash, expires_at)
    values (open_session.session_id, open_session.user_id, v_membership.org_id, open_session.refresh_token_hash, open_session.expires_at);
  return (open_session.session_id, open_session.user_id, v_membership.org_id, v_membership.role)::app_private.session_grant;
end;
$$;
comment on function app_private.open_session(uuid, text, uuid, bytea, timestamptz) is
  'Starts a password (non-SSO) session for a member in the named (or most recently used) active organization; NTFND if there is none, SSORQ if it requires single sign-on and they are not an owner.';

-- Every request's session check holds require_sso too: once an organization requires single sign-on, its members'
-- password sessions are refused from their next request (owners and API keys excepted). Single sign-on sessions
-- leave the second factor to the provider, so require_mfa does not hold them.
create or replace function app_hidden.enter_context(out org_id uuid, out user_id uuid, out role app_public.membership_role, out job_id uuid)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key text := app_hidden.context_key();
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
  v_needs_mfa boolean;
  v_needs_sso boolean;
begin
  if v_session_id is not null then
    select s.org_id, s.user_id, m.role,
           o.require_mfa and not u.is_service and s.auth_method <> 'sso',
           o.require_sso and not u.is_service and s.auth_method <> 'sso' and m.role <> 'owner'
      into org_id, user_id, role, v_needs_mfa, v_needs_sso
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
    if v_needs_sso then
      raise exception 'This organization signs in with single sign-on (startSso).' using errcode = 'SSORQ';
    end if;
    if v_needs_mfa and not app_private.mfa_enabled(user_id) then
      raise exception 'This organization requires two-factor authentication: turn it on first (startMfaEnrollment).' using errcode = 'MFAEN';
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
  'Verifies this transaction''s input settings once (the live session named by jwt.claims.session_id, or the job named by quire.job_id with its token and run) and caches the organization, user, role and job in transaction-local settings. Raises LOGIN when the session is not live, SSORQ for a password session in an organization that requires single sign-on (owners excepted), MFAEN when its organization requires 2FA the person has not turned on; NULLs without a session or job.';

-- Sign-ins through the identity provider are sso_sign_in in the audit log.
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
    v_action := case when new.auth_method = 'sso' then 'sso_sign_in' else 'sign_in' end;
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

comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sso_sign_in, sign_in_failed, refresh_reuse, logout, session_ended, session_revoked, api_key_created, api_key_used, api_key_revoked, mfa_enrolled, mfa_disabled, mfa_failed, access_denied and request_failed for security events.';
