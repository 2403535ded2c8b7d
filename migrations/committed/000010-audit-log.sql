--! Previous: sha1:af5816df20206a89ef500ce2967e05da4807b7ea
--! Hash: sha1:e9e30e12a29a339706aebadb4f4bd2adf3cbd12e
--! Message: audit log

-- The audit log: one row for every committed change to a tenant table and for each security event (sign-in,
-- failed sign-in, refresh-token reuse, logout, role change, integration connect and disconnect, denied requests).
-- Rows are written only by the security definer functions below, never by an API role, and they outlive the
-- organization they describe: org_id has no foreign key, so deleting an organization keeps its history (operators
-- purge it with app_admin.purge_audit_events). Each organization's rows form a hash chain: every row carries the
-- SHA-256 of the previous row's hash and its own contents, so an edited, removed or inserted row breaks the chain
-- at that point. Events that belong to no organization (a failed sign-in for an unknown address) form a chain of
-- their own under the nil UUID.
create table app_public.audit_events (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null,
  seq bigint not null check (seq > 0),
  occurred_at timestamptz not null default now(),
  actor_user_id uuid,
  actor_session_id uuid,
  actor_job_id uuid,
  db_role text not null default session_user,
  action text not null check (action ~ '^[a-z_]{1,40}$'),
  table_name text,
  record_id uuid,
  changed_columns text[] not null default '{}',
  old_values jsonb,
  new_values jsonb,
  details jsonb not null default '{}',
  request_id text,
  client_ip inet,
  prev_hash bytea not null check (length(prev_hash) = 32),
  hash bytea not null check (length(hash) = 32),
  constraint audit_events_org_id_seq_key unique (org_id, seq),
  constraint audit_events_org_id_id_key unique (org_id, id)
);
comment on table app_public.audit_events is
  E'@behavior -insert -update -delete -query:resource:list -query:resource:connection\nOne change or security event in an organization, append-only and hash-chained per organization. Admins and owners read them with `auditLog`.';
comment on column app_public.audit_events.org_id is 'The organization; the nil UUID for events of no organization. Not a foreign key: audit rows outlive their organization.';
comment on column app_public.audit_events.seq is 'Position in the organization''s chain, from 1 without gaps (purged prefixes aside).';
comment on column app_public.audit_events.occurred_at is 'When the transaction that made the change began (UTC).';
comment on column app_public.audit_events.actor_user_id is 'Who acted: the signed-in user, or the requester of the job that acted; null for operators and the system.';
comment on column app_public.audit_events.actor_session_id is 'The session the change was made through, if any.';
comment on column app_public.audit_events.actor_job_id is 'The background job that made the change, if any.';
comment on column app_public.audit_events.db_role is 'The database login that made the change (the API''s authenticator, or an operator in psql).';
comment on column app_public.audit_events.action is
  'insert, update or delete for row changes; role_change, integration_connect and integration_disconnect for those row changes; sign_in, sign_in_failed, refresh_reuse, logout, session_revoked, access_denied and request_failed for security events.';
comment on column app_public.audit_events.table_name is 'The table changed (without schema), for row changes.';
comment on column app_public.audit_events.record_id is 'The id of the row changed.';
comment on column app_public.audit_events.changed_columns is 'Columns set by an insert, changed by an update, or held by a deleted row.';
comment on column app_public.audit_events.old_values is 'Values before the change, for the changed columns; content bodies and secrets are never recorded.';
comment on column app_public.audit_events.new_values is 'Values after the change, for the changed columns; content bodies and secrets are never recorded.';
comment on column app_public.audit_events.details is 'Event-specific facts, e.g. the reason a session ended or the code of a denied request.';
comment on column app_public.audit_events.request_id is 'The x-request-id of the API request that made the change.';
comment on column app_public.audit_events.client_ip is 'The client''s address as seen through the configured trusted proxies.';
comment on column app_public.audit_events.prev_hash is E'@behavior -*\nThe previous event''s hash (32 zero bytes for the first).';
comment on column app_public.audit_events.hash is E'@behavior -*\nSHA-256 over prev_hash and this event''s contents.';

-- Reading: the filters admins use (actor, action, table, time) all start from the organization.
create index audit_events_org_id_occurred_at_idx on app_public.audit_events (org_id, occurred_at);
create index audit_events_org_id_actor_idx on app_public.audit_events (org_id, actor_user_id, seq);
create index audit_events_org_id_table_idx on app_public.audit_events (org_id, table_name, seq);

-- Admins and owners of the organization read its log; nobody writes it through the API (no grants beyond select).
alter table app_public.audit_events enable row level security;
alter table app_public.audit_events force row level security;
create policy as_definer on app_public.audit_events to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_as_admin on app_public.audit_events for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin');
grant select on app_public.audit_events to :DATABASE_AUTHENTICATED;

-- Append-only for real: updates, deletes and truncation are refused for every role but the table's owner (a
-- superuser in psql included), whatever grants and policies say. The owner may (that is how an operator purges old
-- rows), and anything it edits shows up in app_admin.verify_audit_chain.
create function app_private.tg_audit_events__append_only() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if current_user <> (select pg_get_userbyid(c.relowner) from pg_class c where c.oid = tg_relid) then
    raise exception 'Audit events cannot be changed or removed.' using errcode = 'DNIED';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end;
$$;
comment on function app_private.tg_audit_events__append_only() is 'Refuses update, delete and truncate on audit_events for everyone but the table owner.';
create trigger _100_append_only before update or delete on app_public.audit_events
  for each row execute procedure app_private.tg_audit_events__append_only();
create trigger _100_append_only_truncate before truncate on app_public.audit_events
  for each statement execute procedure app_private.tg_audit_events__append_only();

-- The head of each chain: the last sequence number and hash. Appending locks the organization's head row, so
-- concurrent writers of one organization take turns (until they commit) and the chain never forks; writers of
-- different organizations never wait for each other. The anchor is where verification starts after a purge.
create table app_private.audit_chains (
  org_id uuid primary key,
  last_seq bigint not null default 0,
  last_hash bytea not null default decode(repeat('00', 32), 'hex'),
  anchor_seq bigint not null default 0,
  anchor_hash bytea not null default decode(repeat('00', 32), 'hex')
);
comment on table app_private.audit_chains is 'Per-organization head of the audit hash chain (last seq and hash), and the anchor left by the last purge.';
alter table app_private.audit_chains enable row level security;
alter table app_private.audit_chains force row level security;
create policy as_definer on app_private.audit_chains to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- The hashed contents of an event: every column but id, prev_hash and hash, as a JSON array (jsonb's text form is
-- canonical, and the time is in microseconds since the epoch, so neither TimeZone nor DateStyle changes it).
create function app_private.audit_hash(prev_hash bytea, e app_public.audit_events) returns bytea
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select sha256(audit_hash.prev_hash || convert_to(jsonb_build_array(
      e.org_id, e.seq, (extract(epoch from e.occurred_at) * 1000000)::bigint, e.actor_user_id, e.actor_session_id,
      e.actor_job_id, e.db_role, e.action, e.table_name, e.record_id, e.changed_columns, e.old_values, e.new_values,
      e.details, e.request_id, host(e.client_ip))::text, 'UTF8'))
  $$;
comment on function app_private.audit_hash(bytea, app_public.audit_events) is 'SHA-256 of the previous hash and an audit event''s contents.';

-- Appends one event to its organization's chain.
create function app_private.append_audit_event(
  org_id uuid, action text, table_name text, record_id uuid, changed_columns text[], old_values jsonb, new_values jsonb,
  details jsonb, actor_user_id uuid, actor_session_id uuid, actor_job_id uuid, request_id text, client_ip inet
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_chain app_private.audit_chains;
  v_event app_public.audit_events;
begin
  insert into app_private.audit_chains (org_id) values (append_audit_event.org_id)
    on conflict on constraint audit_chains_pkey do nothing;
  select * into v_chain from app_private.audit_chains c where c.org_id = append_audit_event.org_id for update;
  v_event := row(
    gen_random_uuid(), append_audit_event.org_id, v_chain.last_seq + 1, now(), append_audit_event.actor_user_id,
    append_audit_event.actor_session_id, append_audit_event.actor_job_id, session_user, append_audit_event.action,
    append_audit_event.table_name, append_audit_event.record_id, coalesce(append_audit_event.changed_columns, '{}'),
    append_audit_event.old_values, append_audit_event.new_values, coalesce(append_audit_event.details, '{}'),
    nullif(append_audit_event.request_id, ''), append_audit_event.client_ip, v_chain.last_hash, null
  )::app_public.audit_events;
  v_event.hash := app_private.audit_hash(v_chain.last_hash, v_event);
  insert into app_public.audit_events select (v_event).*;
  update app_private.audit_chains c set last_seq = v_event.seq, last_hash = v_event.hash where c.org_id = v_event.org_id;
end;
$$;
comment on function app_private.append_audit_event(uuid, text, text, uuid, text[], jsonb, jsonb, jsonb, uuid, uuid, uuid, text, inet) is
  'Appends an event to the organization''s audit chain, waiting for other writers of the same organization.';

-- Who is acting in this transaction: the session named by the request's claims (looked up, so a forged id names
-- nobody) or the job named by a valid job token; the request id and client address come from the request settings.
create function app_private.audit_actor(out user_id uuid, out session_id uuid, out job_id uuid, out request_id text, out client_ip inet)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  session_id := app_private.uuid_setting('jwt.claims.session_id');
  if session_id is not null then
    select s.user_id into user_id from app_private.sessions s where s.id = audit_actor.session_id;
    if not found then
      session_id := null;
    end if;
  else
    select j.requested_by, j.id into user_id, job_id
      from app_private.job_tokens t join app_public.jobs j on j.id = t.job_id
     where t.job_id = app_private.uuid_setting('quire.job_id')
       and t.token_hash = sha256(convert_to(coalesce(nullif(current_setting('quire.job_token', true), ''), '-'), 'UTF8'));
  end if;
  request_id := left(nullif(current_setting('quire.request_id', true), ''), 128);
  client_ip := case when current_setting('quire.client_ip', true) ~ '^[0-9a-fA-F.:]{2,45}$'
                    then current_setting('quire.client_ip', true)::inet end;
end;
$$;
comment on function app_private.audit_actor() is 'The acting user, session or job, request id and client address of this transaction, for audit events.';

-- Row changes. The trigger's arguments name columns whose values are never recorded (content bodies); their names
-- still appear among the changed columns. Updates that change nothing (updated_at aside) are not events. Rows
-- removed by the cascade of an organization's deletion are not itemized: the organization's own delete stands for
-- them (the organization row is already gone when the cascade runs, which no caller can fake).
create function app_private.tg__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  v_row jsonb := coalesce(v_new, v_old);
  v_org uuid := case when tg_table_name = 'organizations' then (v_row->>'id')::uuid else (v_row->>'org_id')::uuid end;
  v_changed text[];
  v_action text := lower(tg_op);
  v_actor record;
begin
  if tg_table_name <> 'organizations' and not exists (select 1 from app_public.organizations o where o.id = v_org) then
    return null;
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(array_agg(n.key order by n.key), '{}') into v_changed
      from jsonb_each(v_new) n where n.key <> 'updated_at' and n.value is distinct from v_old->n.key;
    if cardinality(v_changed) = 0 then
      return null;
    end if;
    select jsonb_object_agg(o.key, o.value) into v_old from jsonb_each(v_old) o where o.key = any(v_changed);
    select jsonb_object_agg(n.key, n.value) into v_new from jsonb_each(v_new) n where n.key = any(v_changed);
    if tg_table_name = 'memberships' and 'role' = any(v_changed) then
      v_action := 'role_change';
    elsif tg_table_name = 'integrations' and 'status' = any(v_changed) then
      v_action := case v_new->>'status' when 'connected' then 'integration_connect' when 'disconnected' then 'integration_disconnect' else v_action end;
    end if;
  else
    select coalesce(array_agg(r.key order by r.key), '{}') into v_changed from jsonb_each(v_row) r where r.value <> 'null'::jsonb;
    if tg_table_name = 'integrations' then
      v_action := case tg_op when 'INSERT' then 'integration_connect' else 'integration_disconnect' end;
    end if;
  end if;
  if tg_nargs > 0 then
    v_old := v_old - tg_argv;
    v_new := v_new - tg_argv;
  end if;
  v_actor := app_private.audit_actor();
  perform app_private.append_audit_event(
    v_org, v_action, tg_table_name, (v_row->>'id')::uuid, v_changed, v_old, v_new, '{}',
    v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  return null;
end;
$$;
comment on function app_private.tg__audit() is 'Records a row change as an audit event; the trigger arguments name columns whose values are left out.';

-- Every tenant table is audited (the catalog test checks it), except the live-events outbox, which only repeats
-- what the audited changes already say, and the log itself.
create trigger _900_audit after insert or update or delete on app_public.organizations for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.memberships for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.invitations for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.documents for each row execute procedure app_private.tg__audit('content', 'search');
create trigger _900_audit after insert or update or delete on app_public.templates for each row execute procedure app_private.tg__audit('body');
create trigger _900_audit after insert or update or delete on app_public.template_versions for each row execute procedure app_private.tg__audit('body');
create trigger _900_audit after insert or update or delete on app_public.jobs for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.summaries for each row execute procedure app_private.tg__audit('content');
create trigger _900_audit after insert or update or delete on app_public.usage_records for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.integrations for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.integration_sync_runs for each row execute procedure app_private.tg__audit();
create trigger _900_audit after insert or update or delete on app_public.summary_publications for each row execute procedure app_private.tg__audit();

-- Session events: opening a session is a sign-in (password, registration, invitation or organization switch);
-- its end says why. Written with the session's own user, whatever the request settings say.
create function app_private.tg_sessions__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_action text;
begin
  if tg_op = 'INSERT' then
    v_action := 'sign_in';
  elsif old.revoked_at is null and new.revoked_at is not null then
    v_action := case
      when new.revoked_reason in ('logout', 'logout everywhere') then 'logout'
      when new.revoked_reason = 'refresh token reuse' then 'refresh_reuse'
      else 'session_revoked' end;
  else
    return null;
  end if;
  perform app_private.append_audit_event(
    new.org_id, v_action, null, null, '{}', null, null,
    case when tg_op = 'UPDATE' then jsonb_build_object('reason', new.revoked_reason) else '{}' end,
    new.user_id, new.id, null, v_actor.request_id, v_actor.client_ip);
  return null;
end;
$$;
comment on function app_private.tg_sessions__audit() is 'Records sign-ins (new sessions) and session ends (logout, refresh-token reuse, revocation) as audit events.';
create trigger _900_audit after insert or update of revoked_at on app_private.sessions
  for each row execute procedure app_private.tg_sessions__audit();

-- Failed sign-ins: recorded in every organization of the account the address names (its admins see attempts on
-- their members), or in the nil chain when no account has that address. login_attempts rows are committed on
-- their own, so the failure is recorded although the sign-in itself fails.
create function app_private.tg_login_attempts__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_request_id text := (app_private.audit_actor()).request_id;
  v_user_id uuid;
  v_org_id uuid;
  v_recorded boolean := false;
begin
  select u.id into v_user_id from app_public.users u where u.email = new.email;
  for v_org_id in select m.org_id from app_public.memberships m where m.user_id = v_user_id order by m.org_id loop
    perform app_private.append_audit_event(
      v_org_id, 'sign_in_failed', null, null, '{}', null, null, jsonb_build_object('user_id', v_user_id),
      null, null, null, v_request_id, new.ip);
    v_recorded := true;
  end loop;
  if not v_recorded then
    perform app_private.append_audit_event(
      '00000000-0000-0000-0000-000000000000', 'sign_in_failed', null, null, '{}', null, null,
      jsonb_build_object('email', new.email), null, null, null, v_request_id, new.ip);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_login_attempts__audit() is 'Records a failed sign-in in the organizations of the account it targeted (or the nil chain).';
create trigger _900_audit after insert on app_private.login_attempts
  for each row when (not new.succeeded) execute procedure app_private.tg_login_attempts__audit();

-- Requests refused or failed in a transaction that rolled back leave no row changes behind, so the server records
-- them afterwards, in a transaction of their own, with what it verified of the caller. Only the server's own login
-- (the authenticator, never an API role) may call this.
create function app_private.record_request_failure(
  org_id uuid, user_id uuid, session_id uuid, action text, details jsonb, request_id text, client_ip inet
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if record_request_failure.action not in ('access_denied', 'request_failed') then
    raise exception 'Unknown request failure action.' using errcode = 'BADIN';
  end if;
  if not exists (select 1 from app_public.organizations o where o.id = record_request_failure.org_id) then
    return;
  end if;
  perform app_private.append_audit_event(
    record_request_failure.org_id, record_request_failure.action, null, null, '{}', null, null,
    coalesce(record_request_failure.details, '{}'), record_request_failure.user_id, record_request_failure.session_id,
    null, left(record_request_failure.request_id, 128), record_request_failure.client_ip);
end;
$$;
comment on function app_private.record_request_failure(uuid, uuid, uuid, text, jsonb, text, inet) is
  'Records an API request that was denied or failed (its own transaction rolled back) as an audit event.';
grant execute on function app_private.record_request_failure(uuid, uuid, uuid, text, jsonb, text, inet) to :DATABASE_AUTHENTICATOR;

-- Reading the log through GraphQL: admins and owners, newest first, filtered by actor, action, table and time.
-- The policy on audit_events holds on its own; the check here turns "sees nothing" into a clear FORBIDDEN.
create function app_public.audit_log(
  actor_user_id uuid default null, action text default null, table_name text default null,
  since timestamptz default null, until timestamptz default null
) returns setof app_public.audit_events
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if coalesce(app_public.current_member_role() < 'admin', true) then
    raise exception 'Only admins and owners read the audit log.' using errcode = 'DNIED';
  end if;
  return query
    select e.* from app_public.audit_events e
     where e.org_id = app_public.current_org_id()
       and (audit_log.actor_user_id is null or e.actor_user_id = audit_log.actor_user_id)
       and (audit_log.action is null or e.action = audit_log.action)
       and (audit_log.table_name is null or e.table_name = audit_log.table_name)
       and (audit_log.since is null or e.occurred_at >= audit_log.since)
       and (audit_log.until is null or e.occurred_at < audit_log.until)
     order by e.seq desc;
end;
$$;
comment on function app_public.audit_log(uuid, text, text, timestamptz, timestamptz) is
  E'The organization''s audit log, newest first (admins and owners), optionally only one actor''s, action''s or table''s events, or those from `since` (inclusive) until `until` (exclusive).';
grant execute on function app_public.audit_log(uuid, text, text, timestamptz, timestamptz) to :DATABASE_AUTHENTICATED;

-- Verification, for operators: walks an organization's chain from its anchor and names the first event whose
-- sequence, previous hash or own hash is wrong, or says the newest events were removed.
create function app_admin.verify_audit_chain(org_id uuid)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_chain app_private.audit_chains;
  v_expected_seq bigint;
  v_prev bytea;
  v_count bigint := 0;
  e app_public.audit_events;
begin
  select * into v_chain from app_private.audit_chains c where c.org_id = verify_audit_chain.org_id;
  if not found then
    return query select not exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id),
      0::bigint, null::bigint, null::uuid, case when exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id)
                                                then 'events exist without a chain head' end;
    return;
  end if;
  v_expected_seq := v_chain.anchor_seq + 1;
  v_prev := v_chain.anchor_hash;
  for e in select * from app_public.audit_events a where a.org_id = verify_audit_chain.org_id order by a.seq loop
    v_count := v_count + 1;
    if e.seq <> v_expected_seq then
      return query select false, v_count, e.seq, e.id,
        format('expected event %s, found %s: events are missing or were inserted', v_expected_seq, e.seq);
      return;
    elsif e.prev_hash <> v_prev then
      return query select false, v_count, e.seq, e.id, 'its previous hash does not match the event before it';
      return;
    elsif e.hash <> app_private.audit_hash(e.prev_hash, e) then
      return query select false, v_count, e.seq, e.id, 'its contents do not match its hash: it was edited';
      return;
    end if;
    v_prev := e.hash;
    v_expected_seq := e.seq + 1;
  end loop;
  if v_expected_seq - 1 <> v_chain.last_seq or v_prev <> v_chain.last_hash then
    return query select false, v_count, v_expected_seq, null::uuid,
      format('the chain ends at event %s but its head says %s: the newest events were removed', v_expected_seq - 1, v_chain.last_seq);
    return;
  end if;
  return query select true, v_count, null::bigint, null::uuid, null::text;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid) is
  'Checks an organization''s audit hash chain (the nil UUID for events of no organization); names the first broken event and why.';

-- Retention: audit events are kept, even after their organization is deleted, until an operator purges them. A
-- purge removes the oldest events (those before `before`) and leaves their last hash as the chain's anchor, so what
-- remains still verifies and a later removal is still detected.
create function app_admin.purge_audit_events(org_id uuid, before timestamptz) returns bigint
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_last app_public.audit_events;
  v_count bigint;
begin
  select * into v_last from app_public.audit_events a
   where a.org_id = purge_audit_events.org_id
     and a.seq <= (select coalesce(max(b.seq), 0) from app_public.audit_events b
                    where b.org_id = purge_audit_events.org_id and b.occurred_at < purge_audit_events.before)
   order by a.seq desc limit 1;
  if not found then
    return 0;
  end if;
  perform 1 from app_private.audit_chains c where c.org_id = purge_audit_events.org_id for update;
  delete from app_public.audit_events a where a.org_id = purge_audit_events.org_id and a.seq <= v_last.seq;
  get diagnostics v_count = row_count;
  update app_private.audit_chains c set anchor_seq = v_last.seq, anchor_hash = v_last.hash where c.org_id = purge_audit_events.org_id;
  return v_count;
end;
$$;
comment on function app_admin.purge_audit_events(uuid, timestamptz) is
  'Deletes an organization''s audit events older than `before` (a prefix of its chain) and anchors the chain at the last one removed; returns how many.';
