--! Previous: sha1:8d622556e1779035938af2456f97adcb8ef0a384
--! Hash: sha1:c8aafcf6b94bed5de4bfe2118c893ca1d8bfcd79
--! Message: live catch-up

-- Live updates survive a lost LISTEN connection. Notifications sent while a server's connection is down are gone, so
-- on reconnection the server reads what the database kept instead: live events from the outbox (already there), and
-- which of the sessions its WebSockets belong to have ended meanwhile (below), so a logout in the gap still closes
-- them. The sessions table is that outbox: revoked_at, deletion, expiry and membership say whether one is live.
create function app_private.ended_sessions(session_ids uuid[]) returns setof uuid
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
          and s.expires_at > now())
  $$;
comment on function app_private.ended_sessions(uuid[]) is
  'Of the given session ids, those no longer live (revoked, deleted, expired, or their membership, user or organization gone); the same test as session_context. For servers re-checking their WebSockets after missing quire_session_ended notifications.';
grant execute on function app_private.ended_sessions(uuid[]) to :DATABASE_AUTHENTICATOR;

-- A subscription started after a mutation must not miss the events the mutation's job emits before the client
-- subscribes. Mutations that emit events return `liveSeq`: this function, evaluated in the mutation's own statement.
-- Being stable, it reads the counter as the statement's snapshot saw it when it started, before the statement's
-- own events: every event the mutation emits, and every later one, has a greater seq, so subscribing with
-- `since: liveSeq` delivers them all (and at most a few concurrent earlier ones).
create function app_public.live_seq() returns bigint
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case when o.id is null then null else coalesce((select c.last_seq from app_private.live_event_counters c where c.org_id = o.id), 0) end
      from (select app_public.current_org_id() as id) o
  $$;
comment on function app_public.live_seq() is
  E'@behavior -*\nThe caller''s organization''s last live-event seq (0 before its first event; NULL without a session), as the calling statement''s snapshot sees it.';
grant execute on function app_public.live_seq() to :DATABASE_AUTHENTICATED;
