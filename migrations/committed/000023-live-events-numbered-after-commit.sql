--! Previous: sha1:6b49dd846a3556e2d84ba42e722e1f9a44109082
--! Hash: sha1:e4dfd40c83017e0ed3e030a90e0f33c9fe071a31
--! Message: live events numbered after commit

-- Live events numbered after commit. Each organization numbers its live events (seq) without gaps, and every event
-- numbered later has a greater number, which the subscriptions rely on: a skipped number means an event to fetch
-- from the outbox, and `since` resumes exactly. Until now a change took its number by updating its organization's
-- counter row, which stayed locked until the transaction ended, and announced it with NOTIFY, whose commit takes
-- a lock global to the cluster: every transaction of an organization that changed a document, job, summary or
-- integration waited for the one before it, commit and WAL flush included (bench/audit-contention.ts with
-- documents: 267 transactions/s for 100 writers, 915 without). Now a change appends its event unnumbered, with no
-- lock and no notification, and one numberer (each API server runs one, server/live-numberer.ts; the database lets
-- one work at a time) numbers the committed events of each organization in the order they were appended and
-- notifies quire_live for each, in that order, from its own transaction. An event is unnumbered only until the
-- next run (LIVE_NUMBER_INTERVAL_MS), and only inside the outbox: subscribers hear of it once it is numbered.

alter table app_public.live_events
  alter column seq drop not null,
  add column append_order bigint generated always as identity;
comment on column app_public.live_events.seq is 'The organization''s event number, without gaps, given after the writing transaction commits.';
comment on column app_public.live_events.append_order is 'The order events were appended in, across all organizations; the numberer numbers each organization''s events in this order.';
-- Only the unnumbered events, so the numberer's frequent look costs nothing when there is nothing to number.
create index live_events_unnumbered_idx on app_public.live_events (org_id, append_order) where seq is null;

-- The change's event, unnumbered and unannounced: no counter, no lock, no NOTIFY.
create or replace function app_private.tg__live_event() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_row jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
  v_org_id uuid := (v_row ->> 'org_id')::uuid;
  v_id uuid := (v_row ->> 'id')::uuid;
begin
  -- A document deleted together with its organization has no outbox left to write to.
  if tg_op = 'DELETE' and not exists (select 1 from app_public.organizations o where o.id = v_org_id) then
    return null;
  end if;
  insert into app_public.live_events (org_id, seq, entity, op, entity_id, document_id)
    values (v_org_id, null, tg_argv[0], lower(tg_op), v_id,
            case tg_argv[0] when 'document' then v_id else (v_row ->> 'document_id')::uuid end);
  return null;
end;
$$;
comment on function app_private.tg__live_event() is 'Trigger: appends an unnumbered live event (ids only) to the organization''s outbox; app_private.number_live_events numbers and announces it after commit.';

-- The numberer: up to `batch` committed unnumbered events, organization by organization under its counter row,
-- numbered on from the counter in append order and announced on quire_live in that order. One numberer at a time:
-- a second caller returns 0 at once (the running one numbers whatever it can see; a later run the rest).
create function app_private.number_live_events(batch int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org uuid;
  v_last bigint;
  v_count int;
  v_numbered int := 0;
begin
  if not pg_try_advisory_xact_lock(hashtextextended('quire.live_number', 0)) then
    return 0;
  end if;
  for v_org in
    select distinct u.org_id from app_public.live_events u where u.seq is null
  loop
    insert into app_private.live_event_counters (org_id, last_seq) values (v_org, 0)
      on conflict on constraint live_event_counters_pkey do nothing;
    select c.last_seq into v_last from app_private.live_event_counters c where c.org_id = v_org for update;
    with next as (
      select e.id, v_last + row_number() over (order by e.append_order) as seq
        from app_public.live_events e
       where e.org_id = v_org and e.seq is null
       order by e.append_order
       limit greatest(number_live_events.batch - v_numbered, 0)
    )
    update app_public.live_events e set seq = next.seq from next where e.id = next.id;
    get diagnostics v_count = row_count;
    update app_private.live_event_counters c set last_seq = v_last + v_count where c.org_id = v_org;
    perform pg_notify('quire_live', json_build_object('orgId', e.org_id, 'seq', e.seq, 'entity', e.entity, 'op', e.op,
                                                      'entityId', e.entity_id, 'documentId', e.document_id)::text)
       from app_public.live_events e
      where e.org_id = v_org and e.seq > v_last and e.seq <= v_last + v_count
      order by e.seq;
    v_numbered := v_numbered + v_count;
    exit when v_numbered >= number_live_events.batch;
  end loop;
  return v_numbered;
end;
$$;
comment on function app_private.number_live_events(int) is
  'Numbers up to `batch` committed live events (each organization''s in append order, on from its counter) and notifies quire_live for each; returns how many. 0 when another numberer is at work.';
grant execute on function app_private.number_live_events(int) to :DATABASE_AUTHENTICATOR;
