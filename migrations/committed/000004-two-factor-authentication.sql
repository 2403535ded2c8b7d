--! Previous: sha1:21ab64512ed74f29498ce898814e725895f0c3c1
--! Hash: sha1:f2f8f44bbb87df919ec519fe9951f3ffb0579c31
--! Message: two-factor authentication

-- Two-factor authentication (TOTP)
--
-- A person enrolls an authenticator app: the server makes a secret, seals it with SEALING_KEYS (the database never
-- holds it in the clear) and shows it once; the first code confirms it and turns 2FA on, with ten single-use
-- recovery codes kept as SHA-256 digests. From then on a correct password is not enough: sign-in answers
-- MFA_REQUIRED with a single-use challenge, and verify_mfa's code completes it. Codes are checked by the server
-- (it holds the key); the database decides everything else under row locks: a code's time step is accepted once
-- (a step at or before the last one used is refused, so an observed code cannot be replayed), a recovery code
-- once, a challenge once and for five minutes, and every code guess counts against the same per-account and
-- per-address budgets as a password guess. An organization may require 2FA of its members (require_mfa).

create table if not exists app_private.user_mfa (
  user_id uuid primary key references app_public.users on delete cascade,
  key_id text not null,
  secret_nonce bytea not null,
  secret_ciphertext bytea not null,
  enabled_at timestamptz,
  last_step bigint not null default 0,
  created_at timestamptz not null default now()
);

comment on table app_private.user_mfa is
  'A person''s TOTP secret, sealed (XChaCha20-Poly1305 under SEALING_KEYS key key_id); pending until enabled_at is set by a first code. last_step is the last 30-second step a code was accepted for.';

create table if not exists app_private.mfa_recovery_codes (
  user_id uuid not null references app_private.user_mfa on delete cascade,
  code_hash bytea not null check (length(code_hash) = 32),
  used_at timestamptz,
  primary key (user_id, code_hash)
);

comment on table app_private.mfa_recovery_codes is 'SHA-256 of each single-use recovery code; used_at once spent.';

-- A sign-in waiting for its second factor. Global like the account it belongs to: the organization is only chosen
-- when the session opens. The client holds the token; the database keeps its digest.
create table if not exists app_private.mfa_challenges (
  id uuid primary key default gen_random_uuid(),
  challenge_hash bytea not null check (length(challenge_hash) = 32),
  user_id uuid not null references app_public.users on delete cascade,
  organization_slug text,
  ip inet,
  expires_at timestamptz not null,
  failures int not null default 0,
  used_at timestamptz
);

create unique index if not exists mfa_challenges_challenge_hash_idx on app_private.mfa_challenges (challenge_hash);
create index if not exists mfa_challenges_user_id_idx on app_private.mfa_challenges (user_id);

comment on table app_private.mfa_challenges is
  'Sign-ins whose password was right, waiting for a code: single use, five minutes, five wrong codes.';

-- An organization can require 2FA: a member without it may sign in, but every request of that session is refused
-- with MFA_ENROLLMENT_REQUIRED until they enroll (the enrollment mutations do not go through that check). API keys
-- are exempt: they have no person to carry a second factor.
alter table app_public.organizations add column if not exists require_mfa boolean not null default false;

comment on column app_public.organizations.require_mfa is
  'Members must turn on two-factor authentication before they can use the organization (setRequireMfa; admins).';

-- Security events concern a person, who may belong to several organizations: each of them records the event (their
-- admins see what happens to their members' accounts), like a failed sign-in.
create or replace function app_private.audit_person_event(user_id uuid, action text, session_id uuid default null, details jsonb default '{}')
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_org_id uuid;
begin
  for v_org_id in select m.org_id from app_public.memberships m where m.user_id = audit_person_event.user_id order by m.org_id loop
    perform app_private.append_audit_event(
      v_org_id, audit_person_event.action, null, null, '{}', null, null,
      coalesce(audit_person_event.details, '{}') || jsonb_build_object('user_id', audit_person_event.user_id),
      audit_person_event.user_id, coalesce(audit_person_event.session_id, v_actor.session_id), null, v_actor.request_id, v_actor.client_ip);
  end loop;
end;
$$;
comment on function app_private.audit_person_event(uuid, text, uuid, jsonb) is
  'Appends `action` about a person to the audit log of every organization they belong to, with the request''s session, id and address.';

-- The live session `session_id` of a person (not an API key), or nothing.
create or replace function app_private.live_person_session(session_id uuid)
  returns table (user_id uuid, email text)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select u.id, u.email
      from app_private.sessions s
      join app_public.users u on u.id = s.user_id and u.is_active and not u.is_service
     where s.id = live_person_session.session_id and s.revoked_at is null and s.expires_at > now()
  $$;
comment on function app_private.live_person_session(uuid) is 'The person of a live session (never an API key''s service account), or no row.';

-- Enrollment, step 1: the server sealed a fresh secret for the session's person (the token's user, which must be
-- the session's); it waits here until confirmed. Starting again replaces a pending secret; an enabled one must be
-- turned off first. Returns the person's email address, the account name the authenticator app shows.
create or replace function app_private.stage_mfa(session_id uuid, user_id uuid, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_email text;
begin
  select p.email into v_email from app_private.live_person_session(stage_mfa.session_id) p where p.user_id = stage_mfa.user_id;
  if v_email is null then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  insert into app_private.user_mfa as f (user_id, key_id, secret_nonce, secret_ciphertext)
    values (stage_mfa.user_id, stage_mfa.key_id, stage_mfa.secret_nonce, stage_mfa.secret_ciphertext)
    on conflict on constraint user_mfa_pkey do update
      set key_id = excluded.key_id, secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext,
          created_at = now(), last_step = 0
      where f.enabled_at is null;
  if not found then
    raise exception 'Two-factor authentication is already on; turn it off first.' using errcode = 'TAKEN';
  end if;
  return v_email;
end;
$$;
comment on function app_private.stage_mfa(uuid, uuid, text, bytea, bytea) is
  'Enrollment step 1: keeps the sealed secret of the session''s person, pending until enable_mfa; returns their email. LOGIN without a live person session of that user; TAKEN when 2FA is already on.';
grant execute on function app_private.stage_mfa(uuid, uuid, text, bytea, bytea) to :DATABASE_AUTHENTICATOR;

-- Before a code from a signed-in person is checked (confirming enrollment, turning 2FA off): the guess takes a slot
-- of the sign-in budgets, like a password guess, and the sealed secret comes back for the server to check it with.
create or replace function app_private.begin_mfa_check(session_id uuid, ip inet)
  returns table (user_id uuid, retry_after_seconds int, key_id text, secret_nonce bytea, secret_ciphertext bytea, enabled boolean, last_step bigint)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_person record;
  v_wait int;
begin
  select p.user_id, p.email into v_person from app_private.live_person_session(begin_mfa_check.session_id) p;
  if v_person.user_id is null then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  select b.retry_after_seconds into v_wait from app_private.begin_login(v_person.email, begin_mfa_check.ip) b;
  return query
    select v_person.user_id, v_wait, f.key_id, f.secret_nonce, f.secret_ciphertext, f.enabled_at is not null, f.last_step
      from (select 1) as one
      left join app_private.user_mfa f on f.user_id = v_person.user_id;
end;
$$;
comment on function app_private.begin_mfa_check(uuid, inet) is
  'Counts a code guess of the session''s person against the sign-in budgets; answers the seconds to wait (0 to proceed) and their sealed secret (NULLs without one).';
grant execute on function app_private.begin_mfa_check(uuid, inet) to :DATABASE_AUTHENTICATOR;

-- A code was wrong: recorded for the person's organizations (their admins see guessing), and against the challenge
-- when it came with one, which dies after five.
create or replace function app_private.record_mfa_failure(user_id uuid, challenge_hash bytea default null)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_private.mfa_challenges c set failures = c.failures + 1
   where c.challenge_hash = record_mfa_failure.challenge_hash and c.user_id = record_mfa_failure.user_id;
  perform app_private.audit_person_event(record_mfa_failure.user_id, 'mfa_failed');
end;
$$;
comment on function app_private.record_mfa_failure(uuid, bytea) is 'Records a wrong second-factor code (audit mfa_failed) and counts it against the challenge, if any.';
grant execute on function app_private.record_mfa_failure(uuid, bytea) to :DATABASE_AUTHENTICATOR;

-- Spending a code, under the lock of the person's 2FA row so two requests cannot both spend the same one: a time
-- step only after the last one accepted, or an unused recovery code. CREDS otherwise (a replayed code).
create or replace function app_private.spend_mfa_code(user_id uuid, step bigint, recovery_code_hash bytea)
  returns void
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_last bigint;
begin
  select f.last_step into v_last from app_private.user_mfa f where f.user_id = spend_mfa_code.user_id for update;
  if not found then
    raise exception 'Two-factor authentication is not on.' using errcode = 'BADIN';
  end if;
  if spend_mfa_code.step is not null then
    if spend_mfa_code.step <= v_last then
      raise exception 'This code was already used; wait for the next one.' using errcode = 'CREDS';
    end if;
    update app_private.user_mfa f set last_step = spend_mfa_code.step where f.user_id = spend_mfa_code.user_id;
  else
    update app_private.mfa_recovery_codes r set used_at = now()
     where r.user_id = spend_mfa_code.user_id and r.code_hash = spend_mfa_code.recovery_code_hash and r.used_at is null;
    if not found then
      raise exception 'The code is incorrect.' using errcode = 'CREDS';
    end if;
  end if;
end;
$$;
comment on function app_private.spend_mfa_code(uuid, bigint, bytea) is
  'Spends a verified TOTP step (after the last one accepted) or an unused recovery code of the person, under lock; CREDS for a replay.';

-- Enrollment, step 2: the first code proves the app holds the secret; 2FA is on from here, with fresh recovery codes.
create or replace function app_private.enable_mfa(session_id uuid, step bigint, recovery_code_hashes bytea[])
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select p.user_id into v_user_id from app_private.live_person_session(enable_mfa.session_id) p;
  if v_user_id is null then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  if cardinality(enable_mfa.recovery_code_hashes) <> 10 then
    raise exception 'Ten recovery codes are expected.' using errcode = 'BADIN';
  end if;
  perform app_private.spend_mfa_code(v_user_id, enable_mfa.step, null);
  update app_private.user_mfa f set enabled_at = now() where f.user_id = v_user_id and f.enabled_at is null;
  if not found then
    raise exception 'Two-factor authentication is already on.' using errcode = 'TAKEN';
  end if;
  insert into app_private.mfa_recovery_codes (user_id, code_hash) select v_user_id, h from unnest(enable_mfa.recovery_code_hashes) h;
  perform app_private.audit_person_event(v_user_id, 'mfa_enrolled', enable_mfa.session_id);
end;
$$;
comment on function app_private.enable_mfa(uuid, bigint, bytea[]) is
  'Enrollment step 2: spends the first verified code''s step, turns 2FA on for the session''s person and keeps the digests of their ten recovery codes. Audit mfa_enrolled.';
grant execute on function app_private.enable_mfa(uuid, bigint, bytea[]) to :DATABASE_AUTHENTICATOR;

-- Turning 2FA off takes a fresh code (or a recovery code), so a stolen session alone cannot.
create or replace function app_private.disable_mfa(session_id uuid, step bigint, recovery_code_hash bytea)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select p.user_id into v_user_id from app_private.live_person_session(disable_mfa.session_id) p;
  if v_user_id is null then
    raise exception 'Your session has ended; sign in again.' using errcode = 'LOGIN';
  end if;
  if not exists (select 1 from app_private.user_mfa f where f.user_id = v_user_id and f.enabled_at is not null) then
    raise exception 'Two-factor authentication is not on.' using errcode = 'BADIN';
  end if;
  perform app_private.spend_mfa_code(v_user_id, disable_mfa.step, disable_mfa.recovery_code_hash);
  delete from app_private.user_mfa f where f.user_id = v_user_id;
  perform app_private.audit_person_event(v_user_id, 'mfa_disabled', disable_mfa.session_id);
end;
$$;
comment on function app_private.disable_mfa(uuid, bigint, bytea) is
  'Turns 2FA off for the session''s person after spending a verified code or a recovery code; their recovery codes go with it. Audit mfa_disabled.';
grant execute on function app_private.disable_mfa(uuid, bigint, bytea) to :DATABASE_AUTHENTICATOR;

create or replace function app_private.mfa_enabled(user_id uuid) returns boolean
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select exists (select 1 from app_private.user_mfa f where f.user_id = mfa_enabled.user_id and f.enabled_at is not null)
  $$;
comment on function app_private.mfa_enabled(uuid) is 'Whether the person has two-factor authentication on.';
grant execute on function app_private.mfa_enabled(uuid) to :DATABASE_AUTHENTICATOR, :DATABASE_AUTHENTICATED;

-- Signing in. What complete_login did is now finish_login, which only definer functions call: a session for a
-- person with 2FA on opens only through complete_mfa_login, once a code was spent. complete_login itself raises
-- MFARQ for them, so no path of the server can skip the second factor.
create or replace function app_private.finish_login(
  user_id uuid, email text, ip inet, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_keys text[] := app_private.login_throttle_keys(finish_login.email, finish_login.ip);
begin
  insert into app_private.login_attempts (email, ip, succeeded) values (lower(btrim(finish_login.email)), finish_login.ip, true);
  -- The account's budgets start afresh; the address gets this attempt's slot back.
  update app_private.login_throttle t
     set attempts = case when t.key = v_keys[2] then greatest(t.attempts - 1, 0) else 0 end
   where t.key = any (v_keys);
  update app_public.users set last_login_at = now() where id = finish_login.user_id;
  return app_private.open_session(
    finish_login.user_id, finish_login.organization_slug, finish_login.session_id,
    finish_login.refresh_token_hash, finish_login.expires_at);
end;
$$;
comment on function app_private.finish_login(uuid, text, inet, text, uuid, bytea, timestamptz) is
  'Records a successful sign-in (every factor verified) and opens a session. Called by complete_login and complete_mfa_login only.';

create or replace function app_private.complete_login(
  user_id uuid, email text, ip inet, organization_slug text, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if app_private.mfa_enabled(complete_login.user_id) then
    raise exception 'Enter the code from your authenticator app.' using errcode = 'MFARQ';
  end if;
  return app_private.finish_login(
    complete_login.user_id, complete_login.email, complete_login.ip, complete_login.organization_slug,
    complete_login.session_id, complete_login.refresh_token_hash, complete_login.expires_at);
end;
$$;
comment on function app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz) is
  'Sign-in step 2, once the server verified the password: records the success and opens a session; MFARQ when the person has 2FA on (open_mfa_challenge, then complete_mfa_login).';
grant execute on function app_private.complete_login(uuid, text, inet, text, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- The password was right and 2FA is on: a challenge for the code, valid five minutes. Old challenges go now and then.
create or replace function app_private.open_mfa_challenge(user_id uuid, organization_slug text, ip inet, challenge_hash bytea)
  returns timestamptz
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_expires_at timestamptz := app_private.clock_now() + interval '5 minutes';
begin
  if not app_private.mfa_enabled(open_mfa_challenge.user_id) then
    raise exception 'Two-factor authentication is not on.' using errcode = 'BADIN';
  end if;
  insert into app_private.mfa_challenges (challenge_hash, user_id, organization_slug, ip, expires_at)
    values (open_mfa_challenge.challenge_hash, open_mfa_challenge.user_id, open_mfa_challenge.organization_slug,
            open_mfa_challenge.ip, v_expires_at);
  if random() < 0.01 then
    delete from app_private.mfa_challenges c where c.expires_at < app_private.clock_now() - interval '1 hour';
  end if;
  return v_expires_at;
end;
$$;
comment on function app_private.open_mfa_challenge(uuid, text, inet, bytea) is
  'After a right password for a person with 2FA on: keeps the digest of a single-use challenge for five minutes and returns its expiry.';
grant execute on function app_private.open_mfa_challenge(uuid, text, inet, bytea) to :DATABASE_AUTHENTICATOR;

-- verify_mfa, step 1: the live challenge, the guess counted against the person's and the address's budgets, and the
-- sealed secret to check the code with. No row when the challenge is unknown, spent, expired or failed five times.
create or replace function app_private.begin_mfa_challenge(challenge_hash bytea, ip inet)
  returns table (user_id uuid, retry_after_seconds int, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user record;
  v_wait int;
begin
  select u.id, u.email into v_user
    from app_private.mfa_challenges c
    join app_public.users u on u.id = c.user_id and u.is_active
   where c.challenge_hash = begin_mfa_challenge.challenge_hash
     and c.used_at is null and c.expires_at > app_private.clock_now() and c.failures < 5;
  if v_user.id is null then
    return;
  end if;
  select b.retry_after_seconds into v_wait from app_private.begin_login(v_user.email, begin_mfa_challenge.ip) b;
  return query
    select v_user.id, v_wait, f.key_id, f.secret_nonce, f.secret_ciphertext
      from app_private.user_mfa f where f.user_id = v_user.id and f.enabled_at is not null;
end;
$$;
comment on function app_private.begin_mfa_challenge(bytea, inet) is
  'verify_mfa step 1: for a live challenge, counts the guess against the sign-in budgets and answers the seconds to wait and the sealed secret; no row for a dead challenge.';
grant execute on function app_private.begin_mfa_challenge(bytea, inet) to :DATABASE_AUTHENTICATOR;

-- verify_mfa, step 2, once the server verified the code: the challenge and the code are spent under lock (a second
-- request with the same challenge or code finds them spent), and the session opens as a password sign-in's would.
create or replace function app_private.complete_mfa_login(
  challenge_hash bytea, step bigint, recovery_code_hash bytea, ip inet, session_id uuid, refresh_token_hash bytea, expires_at timestamptz
) returns app_private.session_grant
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_challenge app_private.mfa_challenges;
  v_email text;
begin
  select c.* into v_challenge from app_private.mfa_challenges c
   where c.challenge_hash = complete_mfa_login.challenge_hash
     and c.used_at is null and c.expires_at > app_private.clock_now() and c.failures < 5
   for update;
  if not found then
    raise exception 'This sign-in has expired; sign in again.' using errcode = 'LOGIN';
  end if;
  update app_private.mfa_challenges c set used_at = now() where c.id = v_challenge.id;
  perform app_private.spend_mfa_code(v_challenge.user_id, complete_mfa_login.step, complete_mfa_login.recovery_code_hash);
  select u.email into v_email from app_public.users u where u.id = v_challenge.user_id;
  return app_private.finish_login(
    v_challenge.user_id, v_email, complete_mfa_login.ip, v_challenge.organization_slug,
    complete_mfa_login.session_id, complete_mfa_login.refresh_token_hash, complete_mfa_login.expires_at);
end;
$$;
comment on function app_private.complete_mfa_login(bytea, bigint, bytea, inet, uuid, bytea, timestamptz) is
  'verify_mfa step 2: spends the challenge and the verified code (a TOTP step or a recovery code) and opens the session. LOGIN for a dead challenge, CREDS for a replayed code.';
grant execute on function app_private.complete_mfa_login(bytea, bigint, bytea, inet, uuid, bytea, timestamptz) to :DATABASE_AUTHENTICATOR;

-- An admin decides whether the organization requires 2FA, having turned it on for themselves first (or they would
-- lock themselves out). Not an API key: keys cannot change sign-in settings.
create or replace function app_public.set_require_mfa(required boolean) returns app_public.organizations
  language plpgsql volatile strict security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  -- require_role also refuses API keys at admin level.
  perform app_private.require_role('admin', 'Only admins can change sign-in settings.');
  if set_require_mfa.required and not app_private.mfa_enabled(app_public.current_user_id()) then
    raise exception 'Turn on two-factor authentication for yourself first.' using errcode = 'BADIN';
  end if;
  update app_public.organizations o set require_mfa = set_require_mfa.required
   where o.id = app_public.current_org_id()
   returning o.* into v_org;
  return v_org;
end;
$$;
comment on function app_public.set_require_mfa(boolean) is
  'Requires (or stops requiring) two-factor authentication of the organization''s members. Admins with 2FA on themselves; not API keys. Members without 2FA are then refused with MFA_ENROLLMENT_REQUIRED until they enroll.';
grant execute on function app_public.set_require_mfa(boolean) to :DATABASE_AUTHENTICATED;

-- An operator's way back in for a person who lost both their authenticator and their recovery codes (after checking
-- who they are out of band): 2FA off, their sessions ended.
create or replace function app_admin.reset_mfa(email text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_user_id uuid;
begin
  select u.id into v_user_id from app_public.users u where u.email = lower(btrim(reset_mfa.email));
  delete from app_private.user_mfa f where f.user_id = v_user_id;
  if not found then
    return false;
  end if;
  perform app_private.revoke_user_sessions(v_user_id, 'two-factor reset by operator');
  perform app_private.audit_person_event(v_user_id, 'mfa_disabled', null, jsonb_build_object('by', 'operator'));
  return true;
end;
$$;
comment on function app_admin.reset_mfa(text) is
  E'Turns two-factor authentication off for a person who lost their authenticator and recovery codes, and ends their sessions; false when it was off.\nExample: select app_admin.reset_mfa(''bob@acme.example'');';

-- Every request's session check also holds require_mfa: a person without 2FA in an organization that requires it is
-- refused (MFAEN) until they enroll; the enrollment mutations run outside this check. The extra lookup happens only
-- in such organizations.
create or replace function app_hidden.enter_context(out org_id uuid, out user_id uuid, out role app_public.membership_role, out job_id uuid)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key text := app_hidden.context_key();
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
  v_needs_mfa boolean;
begin
  if v_session_id is not null then
    select s.org_id, s.user_id, m.role, o.require_mfa and not u.is_service into org_id, user_id, role, v_needs_mfa
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
  'Verifies this transaction''s input settings once (the live session named by jwt.claims.session_id, or the job named by quire.job_id with its token and run) and caches the organization, user, role and job in transaction-local settings. Raises LOGIN when the session is not live, MFAEN when its organization requires 2FA the person has not turned on; NULLs without a session or job.';

comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sign_in_failed, refresh_reuse, logout, session_ended, session_revoked, api_key_created, api_key_used, api_key_revoked, mfa_enrolled, mfa_disabled, mfa_failed, access_denied and request_failed for security events.';

-- Whether a person has 2FA on: shown to themselves, and to their organization's admins (who see whom require_mfa
-- would hold up); NULL to anyone else.
create or replace function app_public.users_mfa_enabled(u app_public.users) returns boolean
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case when u.id = app_public.current_user_id()
                  or (app_public.current_member_role() >= 'admin' and app_private.is_colleague(u.id))
      then app_private.mfa_enabled(u.id) end
  $$;
comment on function app_public.users_mfa_enabled(app_public.users) is
  'Whether the person has two-factor authentication on; visible to themselves and to admins, NULL otherwise.';
grant execute on function app_public.users_mfa_enabled(app_public.users) to :DATABASE_AUTHENTICATED;
