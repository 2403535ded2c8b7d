--! Previous: sha1:f40983b80834c01d28b302be670c74fca317309b
--! Hash: sha1:46a026abe7fbee7c71e986e167b9482c56e55007
--! Message: sign-in hardening

-- Sign-in hardening (a review of two-factor authentication and single sign-on)
--
-- - The session test that live subscriptions use (ended_sessions) holds the organization's sign-in rules too, like
--   every request's (enter_context): a session that require_mfa or require_sso refuses is not served live events.
-- - Requiring 2FA or single sign-on ends, at once, the sessions the rule refuses (their sockets close, their refresh
--   tokens stop), instead of leaving them to be refused request by request.
-- - Turning 2FA on enables the very secret the code was checked against (a second startMfaEnrollment meanwhile
--   cannot slip another one in), and ends the person's other sessions.
-- - A challenge's five guesses are taken before each check, under its lock, so concurrent guesses cannot exceed them.
-- - 2FA secrets and identity-provider client secrets are re-sealed with the current key along with integration
--   tokens (app_admin.reseal_integration_secrets), so rotating SEALING_KEYS does not strand them.

-- Whether a live session may be used under its organization's sign-in rules: the one definition of it that both
-- request checks share. (A person without 2FA in an organization that requires it, or a password session of a
-- member below owner in one that requires single sign-on, may not; API keys and single sign-on sessions are not
-- held to require_mfa.)
create or replace function app_private.sign_in_rules_refuse(
  require_mfa boolean, require_sso boolean, is_service boolean, auth_method text, role app_public.membership_role, user_id uuid
) returns text
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case
      when is_service then null
      when require_sso and auth_method <> 'sso' and role <> 'owner' then 'SSORQ'
      when require_mfa and auth_method <> 'sso' and not app_private.mfa_enabled(user_id) then 'MFAEN'
    end
  $$;
comment on function app_private.sign_in_rules_refuse(boolean, boolean, boolean, text, app_public.membership_role, uuid) is
  'The SQLSTATE (SSORQ, MFAEN) of the organization''s sign-in rule that refuses a session with these facts, or NULL when none does.';

create or replace function app_hidden.enter_context(out org_id uuid, out user_id uuid, out role app_public.membership_role, out job_id uuid)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_key text := app_hidden.context_key();
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
  v_refused text;
begin
  if v_session_id is not null then
    select s.org_id, s.user_id, m.role,
           case when o.require_mfa or o.require_sso
             then app_private.sign_in_rules_refuse(o.require_mfa, o.require_sso, u.is_service, s.auth_method, m.role, s.user_id) end
      into org_id, user_id, role, v_refused
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
    if v_refused = 'SSORQ' then
      raise exception 'This organization signs in with single sign-on (startSso).' using errcode = 'SSORQ';
    elsif v_refused = 'MFAEN' then
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

create or replace function app_private.ended_sessions(session_ids uuid[]) returns setof uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select id
      from unnest(ended_sessions.session_ids) as given(id)
     where not exists (
       select 1
         from app_private.sessions s
         join app_public.memberships m on m.org_id = s.org_id and m.user_id = s.user_id
         join app_public.users u on u.id = s.user_id and u.is_active
         join app_public.organizations o on o.id = s.org_id and o.is_active
        where s.id = given.id
          and s.revoked_at is null
          and s.expires_at > now()
          and (not (o.require_mfa or o.require_sso)
               or app_private.sign_in_rules_refuse(o.require_mfa, o.require_sso, u.is_service, s.auth_method, m.role, s.user_id) is null))
  $$;
comment on function app_private.ended_sessions(uuid[]) is
  'Of the given session ids, those no longer usable (revoked, deleted, expired, their membership, user or organization gone, or refused by the organization''s sign-in rules); the same test as enter_context. For shared subscription reads and for servers re-checking their WebSockets.';

-- Ends the organization's sessions that its sign-in rules now refuse (after require_mfa or require_sso was set).
create or replace function app_private.end_refused_sessions(org_id uuid, reason text) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with ended as (
      update app_private.sessions x set revoked_at = now(), revoked_reason = end_refused_sessions.reason
        from app_public.memberships m, app_public.users u, app_public.organizations o
       where x.org_id = end_refused_sessions.org_id and x.revoked_at is null and x.expires_at > now()
         and m.org_id = x.org_id and m.user_id = x.user_id and u.id = x.user_id and o.id = x.org_id
         and app_private.sign_in_rules_refuse(o.require_mfa, o.require_sso, u.is_service, x.auth_method, m.role, x.user_id) is not null
      returning 1)
    select count(*)::int from ended
  $$;
comment on function app_private.end_refused_sessions(uuid, text) is 'Revokes the organization''s live sessions that its sign-in rules refuse; returns how many.';

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
  perform app_private.end_refused_sessions(v_org.id, 'two-factor authentication required');
  return v_org;
end;
$$;
comment on function app_public.set_require_mfa(boolean) is
  'Requires (or stops requiring) two-factor authentication of the organization''s members, ending at once the sessions of those without it. Admins with 2FA on themselves; not API keys. Members without 2FA may sign in again, and are then refused with MFA_ENROLLMENT_REQUIRED until they enroll.';

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
  perform app_private.end_refused_sessions(v_org.id, 'single sign-on required');
  return v_org;
end;
$$;
comment on function app_public.set_require_sso(boolean) is
  'Requires (or stops requiring) single sign-on of the organization''s members, ending at once their password sessions. Owners keep their password (break-glass). Admins (owners, or admins signed in through the provider); not API keys.';

-- Enrollment, step 2, now bound to the secret the server checked the code against (key_id and nonce identify a
-- sealing): if another startMfaEnrollment replaced it meanwhile, nothing is enabled. The person's other sessions
-- end: whoever else held one signed in with a password alone.
drop function if exists app_private.enable_mfa(uuid, bigint, bytea[]);
create or replace function app_private.enable_mfa(session_id uuid, step bigint, recovery_code_hashes bytea[], key_id text, secret_nonce bytea)
  returns int
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
  update app_private.user_mfa f set enabled_at = now()
   where f.user_id = v_user_id and f.enabled_at is null and f.key_id = enable_mfa.key_id and f.secret_nonce = enable_mfa.secret_nonce;
  if not found then
    raise exception 'The authenticator secret changed meanwhile (or two-factor authentication is already on); start again.' using errcode = 'TAKEN';
  end if;
  insert into app_private.mfa_recovery_codes (user_id, code_hash) select v_user_id, h from unnest(enable_mfa.recovery_code_hashes) h;
  perform app_private.audit_person_event(v_user_id, 'mfa_enrolled', enable_mfa.session_id);
  return app_private.revoke_user_sessions(v_user_id, 'two-factor authentication turned on', enable_mfa.session_id);
end;
$$;
comment on function app_private.enable_mfa(uuid, bigint, bytea[], text, bytea) is
  'Enrollment step 2: spends the first verified code''s step and turns 2FA on for the session''s person, if the pending secret is still the one the code was checked against (key_id, secret_nonce; TAKEN otherwise); keeps the digests of their ten recovery codes; ends their other sessions and returns how many. Audit mfa_enrolled.';
grant execute on function app_private.enable_mfa(uuid, bigint, bytea[], text, bytea) to :DATABASE_AUTHENTICATOR;

-- verify_mfa step 1 takes one of the challenge's five guesses before the check, under the challenge's lock: however
-- many arrive at once, at most five codes are ever checked against one challenge. A guess refused by the sign-in
-- budgets takes none.
create or replace function app_private.begin_mfa_challenge(challenge_hash bytea, ip inet)
  returns table (user_id uuid, retry_after_seconds int, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_challenge_id uuid;
  v_user record;
  v_wait int;
begin
  select c.id into v_challenge_id
    from app_private.mfa_challenges c
   where c.challenge_hash = begin_mfa_challenge.challenge_hash
     and c.used_at is null and c.expires_at > app_private.clock_now() and c.failures < 5
   for update;
  select u.id, u.email into v_user
    from app_private.mfa_challenges c join app_public.users u on u.id = c.user_id and u.is_active
   where c.id = v_challenge_id;
  if v_user.id is null then
    return;
  end if;
  select b.retry_after_seconds into v_wait from app_private.begin_login(v_user.email, begin_mfa_challenge.ip) b;
  if v_wait = 0 then
    update app_private.mfa_challenges c set failures = c.failures + 1 where c.id = v_challenge_id;
  end if;
  return query
    select v_user.id, v_wait, f.key_id, f.secret_nonce, f.secret_ciphertext
      from app_private.user_mfa f where f.user_id = v_user.id and f.enabled_at is not null;
end;
$$;
comment on function app_private.begin_mfa_challenge(bytea, inet) is
  'verify_mfa step 1: for a live challenge, counts the guess against the sign-in budgets and, when allowed, takes one of the challenge''s five guesses (under its lock); answers the seconds to wait and the sealed secret. No row for a dead challenge.';

comment on column app_private.mfa_challenges.failures is 'Guesses taken (before each check): the challenge dies at five, right or wrong.';

create or replace function app_private.record_mfa_failure(user_id uuid, challenge_hash bytea default null)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.audit_person_event(record_mfa_failure.user_id, 'mfa_failed');
end;
$$;
comment on function app_private.record_mfa_failure(uuid, bytea) is
  'Records a wrong second-factor code (audit mfa_failed). The guess was already counted (begin_mfa_challenge, begin_mfa_check).';

-- Who may ask whether a person has 2FA: the server's login (and definer functions), never an API role directly.
revoke execute on function app_private.mfa_enabled(uuid) from :DATABASE_AUTHENTICATED;

-- Re-sealing with the current key covers every sealed secret: 2FA secrets and identity-provider client secrets too.
create or replace function app_private.person_and_org_secrets_to_reseal(current_key_id text, batch int)
  returns table (kind text, owner_id uuid, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    (select 'totp', f.user_id, f.key_id, f.secret_nonce, f.secret_ciphertext
       from app_private.user_mfa f where f.key_id <> person_and_org_secrets_to_reseal.current_key_id
      order by f.user_id limit batch)
    union all
    (select 'oidc', s.org_id, s.key_id, s.secret_nonce, s.secret_ciphertext
       from app_private.sso_secrets s where s.key_id <> person_and_org_secrets_to_reseal.current_key_id
      order by s.org_id limit batch)
  $$;
comment on function app_private.person_and_org_secrets_to_reseal(text, int) is
  'Batches of 2FA secrets (kind totp, owner the person) and identity-provider client secrets (kind oidc, owner the organization) sealed with a key other than the current one.';
grant execute on function app_private.person_and_org_secrets_to_reseal(text, int) to :DATABASE_AUTHENTICATOR;

create or replace function app_private.reseal_person_or_org_secret(kind text, owner_id uuid, old_key_id text, old_nonce bytea, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- Only the very sealing that was read (key and nonce): one replaced meanwhile (a new enrollment, a reconfigured
  -- provider) was sealed with the current key already.
  if reseal_person_or_org_secret.kind = 'totp' then
    update app_private.user_mfa f
       set key_id = reseal_person_or_org_secret.key_id, secret_nonce = reseal_person_or_org_secret.secret_nonce,
           secret_ciphertext = reseal_person_or_org_secret.secret_ciphertext
     where f.user_id = reseal_person_or_org_secret.owner_id and f.key_id = reseal_person_or_org_secret.old_key_id
       and f.secret_nonce = reseal_person_or_org_secret.old_nonce;
  elsif reseal_person_or_org_secret.kind = 'oidc' then
    update app_private.sso_secrets s
       set key_id = reseal_person_or_org_secret.key_id, secret_nonce = reseal_person_or_org_secret.secret_nonce,
           secret_ciphertext = reseal_person_or_org_secret.secret_ciphertext
     where s.org_id = reseal_person_or_org_secret.owner_id and s.key_id = reseal_person_or_org_secret.old_key_id
       and s.secret_nonce = reseal_person_or_org_secret.old_nonce;
  else
    raise exception 'Unknown secret kind.' using errcode = 'BADIN';
  end if;
  return found;
end;
$$;
comment on function app_private.reseal_person_or_org_secret(text, uuid, text, bytea, text, bytea, bytea) is
  'Replaces one 2FA secret (totp) or identity-provider client secret (oidc) by its re-sealing, if it is still the sealing that was read.';
grant execute on function app_private.reseal_person_or_org_secret(text, uuid, text, bytea, text, bytea, bytea) to :DATABASE_AUTHENTICATOR;

comment on function app_admin.reseal_integration_secrets() is
  E'Queues the re-sealing with the current key (after a new key was put first in SEALING_KEYS) of every sealed secret: integration tokens, 2FA secrets, identity-provider client secrets.\nExample: select app_admin.reseal_integration_secrets();';

-- A password or code checked right outside sign-in (starting or confirming enrollment, turning 2FA off) gives its
-- budget slot back as a successful sign-in does: a person who enrolls and then signs in is not throttled for it.
create or replace function app_private.refund_sign_in_budget(user_id uuid, ip inet) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_keys text[];
begin
  select app_private.login_throttle_keys(u.email, refund_sign_in_budget.ip) into v_keys
    from app_public.users u where u.id = refund_sign_in_budget.user_id;
  update app_private.login_throttle t
     set attempts = case when t.key = v_keys[2] then greatest(t.attempts - 1, 0) else 0 end
   where t.key = any (v_keys);
end;
$$;
comment on function app_private.refund_sign_in_budget(uuid, inet) is
  'After a right password or code outside sign-in: the person''s budgets start afresh and the address gets its slot back, as after a successful sign-in.';
grant execute on function app_private.refund_sign_in_budget(uuid, inet) to :DATABASE_AUTHENTICATOR;
