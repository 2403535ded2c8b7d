--! Previous: sha1:891b15b6c08e8d9533d8f8c29b9e8cbcdaa4d3f5
--! Hash: sha1:6b49dd846a3556e2d84ba42e722e1f9a44109082
--! Message: audit sealed after commit

-- The audit chain, sealed after commit. Until now every audited change took its organization's chain head row
-- until it committed, so one organization's writers took turns: a hundred concurrent writers of one organization
-- managed about 50 transactions a second. Now a change appends its row unsealed (no seq, no hashes) and takes no
-- lock; one sealer (the worker's loop, worker/audit-sealer.ts, or app_admin.seal_audit_events() by hand) chains
-- the committed rows of each organization in batches, in the order they were appended. The chain keeps its
-- guarantees: exactly one row per committed change (the row is written by the change's own transaction, so a
-- rolled-back change leaves none), no gaps and no forks (only the sealer numbers rows, one sealer at a time, under
-- the chain head's lock), and tampering with a sealed row is still named by verify_audit_chain. An unsealed row
-- is not yet covered by a hash: the verifier reports how many are pending, and the sealer keeps that window to
-- about a second.

-- Unsealed rows: seq, prev_hash and hash all null until the sealer fills them in together. append_order is the
-- order rows were appended in (a sequence: no lock, no wait); it orders an organization's rows for sealing.
alter table app_public.audit_events
  alter column seq drop not null,
  alter column prev_hash drop not null,
  alter column hash drop not null,
  add column append_order bigint generated always as identity,
  add constraint audit_events_sealed_check check ((seq is null) = (hash is null) and (seq is null) = (prev_hash is null));
comment on column app_public.audit_events.seq is 'Position in the organization''s chain, from 1 without gaps (purged prefixes aside); null until the event is sealed, about a second after its change commits.';
comment on column app_public.audit_events.append_order is E'@behavior -*\nThe order events were appended in, across all organizations; the sealer chains each organization''s events in this order.';
comment on column app_public.audit_events.prev_hash is E'@behavior -*\nThe previous event''s hash (32 zero bytes for the first); null until sealed.';
comment on column app_public.audit_events.hash is E'@behavior -*\nSHA-256 over prev_hash and this event''s contents; null until sealed.';
-- Only the unsealed rows, so the sealer's scan costs nothing when there is nothing to seal.
create index audit_events_unsealed_idx on app_public.audit_events (org_id, append_order) where seq is null;

-- Appending: one insert, no lock. Same signature and callers (tg__audit, sign-ins, request failures) as before.
create or replace function app_private.append_audit_event(
  org_id uuid, action text, table_name text, record_id uuid, changed_columns text[], old_values jsonb, new_values jsonb,
  details jsonb, actor_user_id uuid, actor_session_id uuid, actor_job_id uuid, request_id text, client_ip inet
) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.audit_events (
      org_id, occurred_at, actor_user_id, actor_session_id, actor_job_id, db_role, action, table_name, record_id,
      changed_columns, old_values, new_values, details, request_id, client_ip
    ) values (
      append_audit_event.org_id, now(), append_audit_event.actor_user_id, append_audit_event.actor_session_id,
      append_audit_event.actor_job_id, session_user, append_audit_event.action, append_audit_event.table_name,
      append_audit_event.record_id, coalesce(append_audit_event.changed_columns, '{}'), append_audit_event.old_values,
      append_audit_event.new_values, coalesce(append_audit_event.details, '{}'),
      nullif(append_audit_event.request_id, ''), append_audit_event.client_ip
    )
  $$;
comment on function app_private.append_audit_event(uuid, text, text, uuid, text[], jsonb, jsonb, jsonb, uuid, uuid, uuid, text, inet) is
  'Appends an unsealed event for the organization (no lock: app_private.seal_audit_events chains it after commit).';

-- Sealing: the committed unsealed rows this transaction sees (a row of a transaction still running is not seen; it
-- is sealed by a later run), organization by organization, each under its chain head's lock, numbered on from the
-- head and hashed in append order (one after another: each hash covers the one before), then written with one
-- update per organization. One sealer at a time: a second caller returns 0 at once instead of queueing.
create function app_private.seal_audit_events(batch int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org uuid;
  v_chain app_private.audit_chains;
  e app_public.audit_events;
  v_ids uuid[];
  v_seqs bigint[];
  v_prevs bytea[];
  v_hashes bytea[];
  v_sealed int := 0;
begin
  -- The advisory lock's key is a hash of a name no other lock of Quire's uses.
  if not pg_try_advisory_xact_lock(hashtextextended('quire.audit_seal', 0)) then
    return 0;
  end if;
  for v_org in
    select distinct u.org_id from app_public.audit_events u where u.seq is null
  loop
    insert into app_private.audit_chains (org_id) values (v_org) on conflict on constraint audit_chains_pkey do nothing;
    select * into v_chain from app_private.audit_chains c where c.org_id = v_org for update;
    v_ids := '{}';
    v_seqs := '{}';
    v_prevs := '{}';
    v_hashes := '{}';
    for e in
      select * from app_public.audit_events a where a.org_id = v_org and a.seq is null
       order by a.append_order limit greatest(seal_audit_events.batch - v_sealed, 0)
    loop
      e.seq := v_chain.last_seq + 1;
      e.prev_hash := v_chain.last_hash;
      e.hash := app_private.audit_hash(e.prev_hash, e);
      v_ids := v_ids || e.id;
      v_seqs := v_seqs || e.seq;
      v_prevs := v_prevs || e.prev_hash;
      v_hashes := v_hashes || e.hash;
      v_chain.last_seq := e.seq;
      v_chain.last_hash := e.hash;
    end loop;
    update app_public.audit_events a set seq = s.seq, prev_hash = s.prev_hash, hash = s.hash
      from unnest(v_ids, v_seqs, v_prevs, v_hashes) as s(id, seq, prev_hash, hash)
     where a.id = s.id;
    v_sealed := v_sealed + cardinality(v_ids);
    update app_private.audit_chains c set last_seq = v_chain.last_seq, last_hash = v_chain.last_hash where c.org_id = v_org;
    exit when v_sealed >= seal_audit_events.batch;
  end loop;
  return v_sealed;
end;
$$;
comment on function app_private.seal_audit_events(int) is
  'Chains up to `batch` committed unsealed audit events (each organization''s in append order) and moves the heads; returns how many. 0 when another sealer is at work.';
grant execute on function app_private.seal_audit_events(int) to :DATABASE_AUTHENTICATOR;

-- By hand: seals everything committed now (e.g. before verifying or checkpointing from psql), waiting for a sealer
-- at work to finish first.
create function app_admin.seal_audit_events() returns bigint
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_total bigint := 0;
  v_batch int;
begin
  perform pg_advisory_xact_lock(hashtextextended('quire.audit_seal', 0));
  loop
    v_batch := app_private.seal_audit_events(10000);
    v_total := v_total + v_batch;
    exit when v_batch < 10000;
  end loop;
  return v_total;
end;
$$;
comment on function app_admin.seal_audit_events() is
  E'Seals every committed audit event not yet chained (the worker does this about every second); returns how many.\nExample: select app_admin.seal_audit_events();';

-- The audit trigger, cheaper per row. Per row it also looked its actor up again (a security definer call reading
-- sessions or job tokens) and called another security definer function to insert. Now the actor comes from the
-- transaction's verified context when app_hidden.enter_context has cached one (every API request and job: the
-- policies ask for it first), with the old lookups kept for transactions that have none (an operator in psql), and
-- the trigger inserts its row itself. What is recorded is unchanged.

-- The actor: the verified context's user and session (or job), else the lookups of before.
create or replace function app_private.audit_actor(out user_id uuid, out session_id uuid, out job_id uuid, out request_id text, out client_ip inet)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if current_setting('quire.ctx', true) = app_hidden.context_key() and nullif(current_setting('quire.ctx_user_id', true), '') is not null then
    user_id := current_setting('quire.ctx_user_id', true)::uuid;
    job_id := nullif(current_setting('quire.ctx_job_id', true), '')::uuid;
    session_id := case when job_id is null then app_private.uuid_setting('jwt.claims.session_id') end;
  else
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
  end if;
  request_id := left(nullif(current_setting('quire.request_id', true), ''), 128);
  client_ip := case when current_setting('quire.client_ip', true) ~ '^[0-9a-fA-F.:]{2,45}$'
                    then current_setting('quire.client_ip', true)::inet end;
end;
$$;

-- Row changes, as before, inserting the unsealed event directly (app_private.append_audit_event stays for the
-- security events, which are one per transaction at most).
create or replace function app_private.tg__audit() returns trigger
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
  insert into app_public.audit_events (
    org_id, occurred_at, actor_user_id, actor_session_id, actor_job_id, db_role, action, table_name, record_id,
    changed_columns, old_values, new_values, details, request_id, client_ip
  ) values (
    v_org, now(), v_actor.user_id, v_actor.session_id, v_actor.job_id, session_user, v_action, tg_table_name,
    (v_row->>'id')::uuid, v_changed, v_old, v_new, '{}', v_actor.request_id, v_actor.client_ip
  );
  return null;
end;
$$;
comment on function app_private.tg__audit() is 'Records a row change as an unsealed audit event; the trigger arguments name columns whose values are left out.';

-- Readers: the newest first, unsealed events (the newest of all) before sealed ones.
create or replace function app_public.audit_log(
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
     order by e.seq desc nulls first, e.append_order desc;
end;
$$;

-- Verification walks the sealed rows as before and reports the unsealed ones honestly: `pending` counts them (they
-- are not covered by any hash yet). Its result gains that column, so it is recreated, and the verifiers built on it.
drop function app_admin.verify_audit_chains(jsonb);
drop function app_admin.verify_audit_chain(uuid, jsonb);
drop function app_admin.verify_audit_chain(uuid);

create function app_admin.verify_audit_chain(org_id uuid)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_chain app_private.audit_chains;
  v_expected_seq bigint;
  v_prev bytea;
  v_count bigint := 0;
  v_pending bigint;
  e app_public.audit_events;
begin
  select count(*) into v_pending from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is null;
  select * into v_chain from app_private.audit_chains c where c.org_id = verify_audit_chain.org_id;
  if not found then
    return query select not exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null),
      0::bigint, null::bigint, null::uuid, case when exists (select 1 from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null)
                                                then 'events exist without a chain head' end, v_pending;
    return;
  end if;
  v_expected_seq := v_chain.anchor_seq + 1;
  v_prev := v_chain.anchor_hash;
  for e in select * from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq is not null order by a.seq loop
    v_count := v_count + 1;
    if e.seq <> v_expected_seq then
      return query select false, v_count, e.seq, e.id,
        format('expected event %s, found %s: events are missing or were inserted', v_expected_seq, e.seq), v_pending;
      return;
    elsif e.prev_hash <> v_prev then
      return query select false, v_count, e.seq, e.id, 'its previous hash does not match the event before it', v_pending;
      return;
    elsif e.hash <> app_private.audit_hash(e.prev_hash, e) then
      return query select false, v_count, e.seq, e.id, 'its contents do not match its hash: it was edited', v_pending;
      return;
    end if;
    v_prev := e.hash;
    v_expected_seq := e.seq + 1;
  end loop;
  if v_expected_seq - 1 <> v_chain.last_seq or v_prev <> v_chain.last_hash then
    return query select false, v_count, v_expected_seq, null::uuid,
      format('the chain ends at event %s but its head says %s: the newest events were removed', v_expected_seq - 1, v_chain.last_seq), v_pending;
    return;
  end if;
  return query select true, v_count, null::bigint, null::uuid, null::text, v_pending;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid) is
  'Checks an organization''s sealed audit chain (the nil UUID for events of no organization); names the first broken event and why, and counts the events not sealed yet (pending).';

create function app_admin.verify_audit_chain(org_id uuid, checkpoints jsonb)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_own record;
  v_chain app_private.audit_chains;
  v_newest bigint;
  v_event app_public.audit_events;
  c record;
begin
  if jsonb_typeof(verify_audit_chain.checkpoints) is distinct from 'array' or exists (
    select 1 from jsonb_array_elements(verify_audit_chain.checkpoints) x
     where jsonb_typeof(x) <> 'object' or coalesce(x->>'seq', '') !~ '^[0-9]{1,18}$'
        or coalesce(x->>'hash', '') !~ '^[0-9a-f]{64}$' or coalesce(x->>'kind', '') not in ('head', 'anchor')
  ) then
    raise exception 'Checkpoints are an array of {"seq": n, "hash": "<64 hex digits>", "kind": "head" or "anchor"}.' using errcode = 'BADIN';
  end if;
  select * into v_own from app_admin.verify_audit_chain(verify_audit_chain.org_id) o;
  if not v_own.valid then
    return query select v_own.valid, v_own.events, v_own.first_broken_seq, v_own.first_broken_id, v_own.problem, v_own.pending;
    return;
  end if;
  select max((x->>'seq')::bigint) into v_newest from jsonb_array_elements(verify_audit_chain.checkpoints) x;
  select * into v_chain from app_private.audit_chains ch where ch.org_id = verify_audit_chain.org_id;
  if not found then
    return query select v_newest is null, v_own.events, v_newest, null::uuid,
      case when v_newest is not null then format('there is no chain, but checkpoint %s was made: the log was deleted', v_newest) end, v_own.pending;
    return;
  end if;
  if v_newest > v_chain.last_seq then
    return query select false, v_own.events, v_chain.last_seq + 1, null::uuid,
      format('the head is at event %s but checkpoint %s was made: the newest events were removed and the head rewound', v_chain.last_seq, v_newest), v_own.pending;
    return;
  end if;
  for c in
    select (x->>'seq')::bigint as seq, decode(x->>'hash', 'hex') as hash, x->>'kind' as kind
      from jsonb_array_elements(verify_audit_chain.checkpoints) x order by 1, 3
  loop
    if c.seq < v_chain.anchor_seq then
      continue; -- purged: only the anchor is left of it
    elsif c.seq = v_chain.anchor_seq then
      if c.hash <> v_chain.anchor_hash then
        return query select false, v_own.events, c.seq, null::uuid,
          format('checkpoint %s does not match the anchor the purge left: events up to it were rewritten', c.seq), v_own.pending;
        return;
      end if;
    else
      select * into v_event from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq = c.seq;
      if v_event.hash is distinct from c.hash then
        return query select false, v_own.events, c.seq, v_event.id,
          format('checkpoint %s is no longer in the chain: event %s or one before it was rewritten', c.seq, c.seq), v_own.pending;
        return;
      end if;
    end if;
  end loop;
  if v_chain.anchor_seq > 0 and not exists (
    select 1 from jsonb_array_elements(verify_audit_chain.checkpoints) x
     where x->>'kind' = 'anchor' and (x->>'seq')::bigint = v_chain.anchor_seq and decode(x->>'hash', 'hex') = v_chain.anchor_hash
  ) then
    return query select false, v_own.events, v_chain.anchor_seq, null::uuid,
      format('events up to %s were removed, but no anchor checkpoint records a purge there', v_chain.anchor_seq), v_own.pending;
    return;
  end if;
  return query select true, v_own.events, null::bigint, null::uuid, null::text, v_own.pending;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid, jsonb) is
  'Checks an organization''s sealed audit chain and, beyond it, that it still holds every checkpoint given (signatures checked by the caller: npm run audit:verify); counts the events not sealed yet (pending).';

create function app_admin.verify_audit_chains(checkpoints jsonb)
  returns table (org_id uuid, valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text, pending bigint)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if jsonb_typeof(verify_audit_chains.checkpoints) is distinct from 'array' or exists (
    select 1 from jsonb_array_elements(verify_audit_chains.checkpoints) x
     where jsonb_typeof(x) <> 'object' or coalesce(x->>'org', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
  ) then
    raise exception 'Checkpoints are an array of objects, each naming its organization ("org").' using errcode = 'BADIN';
  end if;
  return query
    select o.org_id, v.valid, v.events, v.first_broken_seq, v.first_broken_id, v.problem, v.pending
      from (select c.org_id from app_private.audit_chains c
            union select distinct a.org_id from app_public.audit_events a
            union select (x->>'org')::uuid from jsonb_array_elements(verify_audit_chains.checkpoints) x) o
      cross join lateral app_admin.verify_audit_chain(o.org_id, coalesce(
        (select jsonb_agg(x) from jsonb_array_elements(verify_audit_chains.checkpoints) x where (x->>'org')::uuid = o.org_id),
        '[]'::jsonb)) v
     order by o.org_id;
end;
$$;
comment on function app_admin.verify_audit_chains(jsonb) is
  'Checks every organization''s audit chain against the checkpoints given (signatures checked by the caller: npm run audit:verify); one row per organization, with its events not sealed yet (pending).';

-- Checkpoints (app_private.audit_checkpoints_due) sign chain heads, which only the sealer moves: they cover what is
-- sealed, and events still unsealed are signed by the next checkpoint after the sealer reaches them.
