--! Previous: sha1:8cc218e4852046394de90882cdcecc628d1dc1a1
--! Hash: sha1:ea9ee0f256643a89ebac68c715d89ae9065bab51
--! Message: live seq at commit

-- Live-event numbers given at commit. Each organization numbers its live events (seq) in commit order, which the
-- subscriptions rely on: a skipped number means an event to fetch from the outbox, and `since` resumes exactly.
-- Until now the number was taken when the change was made, by updating the organization's counter row, and that
-- row stayed locked until the transaction ended: every transaction of an organization that changed a document, job,
-- summary or integration waited for the one before it to finish entirely. The event is now written unnumbered and
-- numbered by a deferred constraint trigger, which runs as the transaction commits: the counter row is held only
-- for the commit itself, and the numbers still follow commit order (the next committer of the organization waits
-- for the row, then reads the number after the last one committed). The notification goes out from the same
-- trigger, with the number, at commit as before. An event's number is null only inside its own transaction.

alter table app_public.live_events alter column seq drop not null;
comment on column app_public.live_events.seq is 'The organization''s event number, in commit order without gaps; given as the writing transaction commits.';

-- The change's event, unnumbered: no counter, no lock.
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
comment on function app_private.tg__live_event() is 'Trigger: appends an unnumbered live event (ids only) to the organization''s outbox; it is numbered and announced at commit.';

-- At commit, in the order the events were written: the organization's next number, and the quire_live
-- notification. An event gone by then (its organization deleted later in the same transaction) takes no number,
-- so the numbers stay without gaps.
create function app_private.tg_live_events__number() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_seq bigint;
begin
  if not exists (select 1 from app_public.live_events e where e.id = new.id)
     or not exists (select 1 from app_public.organizations o where o.id = new.org_id) then
    return null;
  end if;
  insert into app_private.live_event_counters as c (org_id, last_seq) values (new.org_id, 1)
    on conflict (org_id) do update set last_seq = c.last_seq + 1
    returning last_seq into v_seq;
  update app_public.live_events e set seq = v_seq where e.id = new.id;
  perform pg_notify('quire_live',
    json_build_object('orgId', new.org_id, 'seq', v_seq, 'entity', new.entity, 'op', new.op, 'entityId', new.entity_id,
                      'documentId', new.document_id)::text);
  return null;
end;
$$;
comment on function app_private.tg_live_events__number() is
  'Deferred trigger: numbers a live event in its organization''s commit order and notifies quire_live, as its transaction commits.';
create constraint trigger _900_number after insert on app_public.live_events
  deferrable initially deferred for each row execute procedure app_private.tg_live_events__number();
