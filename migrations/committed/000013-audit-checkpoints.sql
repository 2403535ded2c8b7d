--! Previous: sha1:f552d372964b9f12cf1e1e0c5c8997e5ebcad0be
--! Hash: sha1:8d622556e1779035938af2456f97adcb8ef0a384
--! Message: audit checkpoints

-- The audit chain against its own database owner. The owner may change audit rows (that is how a purge works), and
-- whoever can change rows can also recompute every later hash and the head, or delete the newest rows and rewind
-- the head: the chain alone then still verifies. So (1) every column of a row is hashed, its id included, and
-- (2) the chain heads are checkpointed outside the database: the worker signs (organization, seq, hash, time) with
-- an Ed25519 key the database never sees and writes it to the log and to the configured sinks
-- (lib/audit-checkpoints.ts); app_admin.verify_audit_chains then checks the chains against those checkpoints.

-- Each chain's verdict before the hash changes below, so it can be re-hashed: a chain that verifies, wholly; a
-- broken one up to its first broken event, so it is still reported broken there. The owner sees and changes audit
-- rows only with quire.definer on (the as_definer policies): on until the re-hash is done, for this transaction only.
select set_config('quire.definer', 'on', true);
create temporary table audit_chains_to_rehash on commit drop as
  select c.org_id, v.valid, v.first_broken_seq from app_private.audit_chains c, lateral app_admin.verify_audit_chain(c.org_id) v;

-- The hashed contents of an event: every column but prev_hash and hash themselves (prev_hash is hashed as the
-- prefix), in this canonical encoding, documented in the README (Audit log):
--   sha256(prev_hash (32 bytes) || utf8(jsonb_build_array(2, id, org_id, seq, occurred_at, actor_user_id,
--     actor_session_id, actor_job_id, db_role, action, table_name, record_id, changed_columns, old_values,
--     new_values, details, request_id, client_ip)::text))
-- where 2 names this encoding, occurred_at is whole microseconds since the Unix epoch, client_ip is inet's text form
-- (the mask shown unless it is the full width), and jsonb's text form is canonical (keys sorted, one spacing), so
-- neither TimeZone, DateStyle nor the client changes a hash.
create or replace function app_private.audit_hash(prev_hash bytea, e app_public.audit_events) returns bytea
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select sha256(audit_hash.prev_hash || convert_to(jsonb_build_array(
      2, e.id, e.org_id, e.seq, (extract(epoch from e.occurred_at) * 1000000)::bigint, e.actor_user_id,
      e.actor_session_id, e.actor_job_id, e.db_role, e.action, e.table_name, e.record_id, e.changed_columns,
      e.old_values, e.new_values, e.details, e.request_id, e.client_ip::text)::text, 'UTF8'))
  $$;
comment on function app_private.audit_hash(bytea, app_public.audit_events) is
  'SHA-256 of the previous hash and every column of an audit event (encoding 2, see the README''s Audit log).';

-- Re-hash each chain from its anchor on (an anchor left by an earlier purge keeps its old hash: the row it hashed is
-- gone), and move the head along if the chain verified. Nothing outside the database holds an old hash yet.
do $$
declare
  v_chain record;
  v_prev bytea;
  e app_public.audit_events;
begin
  for v_chain in
    select c.org_id, c.anchor_hash, r.valid, r.first_broken_seq
      from app_private.audit_chains c join audit_chains_to_rehash r on r.org_id = c.org_id order by c.org_id
  loop
    v_prev := v_chain.anchor_hash;
    for e in
      select * from app_public.audit_events a
       where a.org_id = v_chain.org_id and (v_chain.valid or a.seq < v_chain.first_broken_seq) order by a.seq
    loop
      e.prev_hash := v_prev;
      v_prev := app_private.audit_hash(v_prev, e);
      update app_public.audit_events a set prev_hash = e.prev_hash, hash = v_prev where a.id = e.id;
    end loop;
    if v_chain.valid then
      update app_private.audit_chains c set last_hash = v_prev where c.org_id = v_chain.org_id;
    end if;
  end loop;
  perform set_config('quire.definer', '', true);
end;
$$;

-- The last checkpoint made of each chain, so the worker's every-minute task only signs the heads that moved (one
-- pass over this table, a row per organization; no index, which would make every append a non-HOT update), and
-- whether the anchor of the last purge has been checkpointed yet.
alter table app_private.audit_chains
  add column checkpoint_seq bigint not null default 0,
  add column checkpoint_hash bytea,
  add column checkpointed_at timestamptz,
  add column anchor_checkpointed boolean not null default false;
comment on column app_private.audit_chains.checkpoint_seq is 'The seq of the last head checkpoint signed (0: none yet).';
comment on column app_private.audit_chains.checkpoint_hash is 'The hash of the last head checkpoint signed.';
comment on column app_private.audit_chains.checkpointed_at is 'When the last head checkpoint was recorded.';
comment on column app_private.audit_chains.anchor_checkpointed is 'Whether the anchor of the last purge has been signed as a checkpoint.';

-- What the worker's checkpoint_audit task signs next: each head that moved since its last checkpoint ('head'), and
-- each purge anchor not yet signed ('anchor'). Only what is chained: the head is the last event appended.
create function app_private.audit_checkpoints_due(batch int)
  returns table (org_id uuid, kind text, seq bigint, hash bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.org_id, d.kind, d.seq, d.hash from (
      select c.org_id, 'head' as kind, c.last_seq as seq, c.last_hash as hash from app_private.audit_chains c
       where c.last_seq > 0 and (c.last_seq, c.last_hash) is distinct from (c.checkpoint_seq, c.checkpoint_hash)
      union all
      select c.org_id, 'anchor', c.anchor_seq, c.anchor_hash from app_private.audit_chains c
       where c.anchor_seq > 0 and not c.anchor_checkpointed
    ) d
    order by d.org_id, d.kind
    limit greatest(audit_checkpoints_due.batch, 1)
  $$;
comment on function app_private.audit_checkpoints_due(int) is
  'Chain heads that moved since their last checkpoint, and purge anchors not yet checkpointed: what checkpoint_audit signs next.';
grant execute on function app_private.audit_checkpoints_due(int) to :DATABASE_AUTHENTICATOR;

-- The worker records a checkpoint once it is signed and written to every sink. A head only moves forward here, and
-- only to an event of the chain with that hash; an anchor is marked only if it is still the chain's anchor.
create function app_private.record_audit_checkpoint(org_id uuid, kind text, seq bigint, hash bytea) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if record_audit_checkpoint.kind = 'head' then
    update app_private.audit_chains c
       set checkpoint_seq = record_audit_checkpoint.seq, checkpoint_hash = record_audit_checkpoint.hash, checkpointed_at = now()
     where c.org_id = record_audit_checkpoint.org_id and c.checkpoint_seq <= record_audit_checkpoint.seq
       and exists (select 1 from app_public.audit_events a where a.org_id = record_audit_checkpoint.org_id
                      and a.seq = record_audit_checkpoint.seq and a.hash = record_audit_checkpoint.hash);
  elsif record_audit_checkpoint.kind = 'anchor' then
    update app_private.audit_chains c set anchor_checkpointed = true
     where c.org_id = record_audit_checkpoint.org_id and c.anchor_seq = record_audit_checkpoint.seq
       and c.anchor_hash = record_audit_checkpoint.hash;
  else
    raise exception 'A checkpoint is of a head or an anchor.' using errcode = 'BADIN';
  end if;
end;
$$;
comment on function app_private.record_audit_checkpoint(uuid, text, bigint, bytea) is
  'Records that a head or anchor checkpoint was signed and written out, so it is not signed again.';
grant execute on function app_private.record_audit_checkpoint(uuid, text, bigint, bytea) to :DATABASE_AUTHENTICATOR;

-- On demand (besides the worker's every-minute schedule): e.g. before a backup, or right before verifying.
create function app_admin.checkpoint_audit_chains() returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('checkpoint_audit', '{}'::json, job_key => 'checkpoint_audit');
end;
$$;
comment on function app_admin.checkpoint_audit_chains() is
  E'Queues a checkpoint of every audit chain whose head moved since its last one (the worker also does this every minute).\nExample: select app_admin.checkpoint_audit_chains();';

-- A purge now also asks for its anchor to be checkpointed: with checkpoints, verification accepts removed events
-- only behind an anchor that was signed as one, so a purge is on record outside the database.
create or replace function app_admin.purge_audit_events(org_id uuid, before timestamptz) returns bigint
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
  update app_private.audit_chains c set anchor_seq = v_last.seq, anchor_hash = v_last.hash, anchor_checkpointed = false
   where c.org_id = purge_audit_events.org_id;
  perform graphile_worker.add_job('checkpoint_audit', '{}'::json, job_key => 'checkpoint_audit');
  return v_count;
end;
$$;
comment on function app_admin.purge_audit_events(uuid, timestamptz) is
  'Deletes an organization''s audit events older than `before` (a prefix of its chain), anchors the chain at the last one removed and queues the anchor''s checkpoint; returns how many.';

-- Verification against checkpoints, for one organization. `checkpoints` are the organization's checkpoints whose
-- signatures the caller checked (npm run audit:verify does): [{"seq": n, "hash": "<hex>", "kind": "head"|"anchor"}].
-- Beyond the chain's own checks it names a checkpoint whose event no longer has that hash (rewritten), a head behind
-- the newest checkpoint (newest events removed and the head rewound), checkpoints of a chain that is gone, and an
-- anchor that no anchor checkpoint vouches for (events removed other than by purge_audit_events).
create function app_admin.verify_audit_chain(org_id uuid, checkpoints jsonb)
  returns table (valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text)
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
    return query select v_own.valid, v_own.events, v_own.first_broken_seq, v_own.first_broken_id, v_own.problem;
    return;
  end if;
  select max((x->>'seq')::bigint) into v_newest from jsonb_array_elements(verify_audit_chain.checkpoints) x;
  select * into v_chain from app_private.audit_chains ch where ch.org_id = verify_audit_chain.org_id;
  if not found then
    return query select v_newest is null, v_own.events, v_newest, null::uuid,
      case when v_newest is not null then format('there is no chain, but checkpoint %s was made: the log was deleted', v_newest) end;
    return;
  end if;
  if v_newest > v_chain.last_seq then
    return query select false, v_own.events, v_chain.last_seq + 1, null::uuid,
      format('the head is at event %s but checkpoint %s was made: the newest events were removed and the head rewound', v_chain.last_seq, v_newest);
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
          format('checkpoint %s does not match the anchor the purge left: events up to it were rewritten', c.seq);
        return;
      end if;
    else
      select * into v_event from app_public.audit_events a where a.org_id = verify_audit_chain.org_id and a.seq = c.seq;
      if v_event.hash is distinct from c.hash then
        return query select false, v_own.events, c.seq, v_event.id,
          format('checkpoint %s is no longer in the chain: event %s or one before it was rewritten', c.seq, c.seq);
        return;
      end if;
    end if;
  end loop;
  if v_chain.anchor_seq > 0 and not exists (
    select 1 from jsonb_array_elements(verify_audit_chain.checkpoints) x
     where x->>'kind' = 'anchor' and (x->>'seq')::bigint = v_chain.anchor_seq and decode(x->>'hash', 'hex') = v_chain.anchor_hash
  ) then
    return query select false, v_own.events, v_chain.anchor_seq, null::uuid,
      format('events up to %s were removed, but no anchor checkpoint records a purge there', v_chain.anchor_seq);
    return;
  end if;
  return query select true, v_own.events, null::bigint, null::uuid, null::text;
end;
$$;
comment on function app_admin.verify_audit_chain(uuid, jsonb) is
  'Checks an organization''s audit chain and, beyond it, that it still holds every checkpoint given (signatures checked by the caller: npm run audit:verify).';

-- Every chain at once: each organization with a chain, with events, or named by a checkpoint. `checkpoints` as
-- above, each with its "org".
create function app_admin.verify_audit_chains(checkpoints jsonb)
  returns table (org_id uuid, valid boolean, events bigint, first_broken_seq bigint, first_broken_id uuid, problem text)
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
    select o.org_id, v.valid, v.events, v.first_broken_seq, v.first_broken_id, v.problem
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
  'Checks every organization''s audit chain against the checkpoints given (signatures checked by the caller: npm run audit:verify); one row per organization.';
