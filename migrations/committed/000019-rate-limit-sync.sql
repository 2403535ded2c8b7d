--! Previous: sha1:e523f1afe8cea189b7bb0e94fe52fa156804536d
--! Hash: sha1:14f126c8221cae9b54c52669e1c18558d65c69d2
--! Message: rate limit sync

-- Rate limits off the request path (issue 12). Each server instance counts requests in memory and, every
-- RATE_LIMIT_SYNC_MS, adds its new counts here in one statement and reads back the cluster-wide totals, so a
-- request costs no round trip and no commit. The table is UNLOGGED: counts are not worth a WAL flush, and after a
-- crash of PostgreSQL (which empties it) limits simply start a fresh window.
drop function app_private.take_request(inet, uuid, uuid, int);
drop function app_private.hit_rate_limit(text, int);
drop table app_private.rate_limit_counters;

create unlogged table app_private.rate_limit_windows (
  key text primary key check (length(key) <= 200),
  window_start timestamptz not null,
  hits int not null check (hits >= 0)
);
comment on table app_private.rate_limit_windows is
  'Requests counted in the current one-minute window across all server instances, per address (ip:…), user (user:…) or organization (org:…). Unlogged: emptied by a crash.';
alter table app_private.rate_limit_windows enable row level security;
alter table app_private.rate_limit_windows force row level security;
create policy as_definer on app_private.rate_limit_windows to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- One instance's sync: adds `deltas` to `keys` in the window starting at `window_start` (a newer window resets a
-- key; counts for an older one are dropped; keys without new counts are only read) and answers the totals of
-- those keys (a key with no row yet is absent, meaning 0), with the per-user and
-- per-organization limits of each organization in `org_ids`, as {"hits": {key: n}, "limits": {org: [user, org]}}.
-- Keys are locked in key order, so concurrent syncs of several instances never deadlock. Rows of windows an
-- hour old are swept now and then.
create function app_private.sync_rate_limits(keys text[], deltas int[], window_start timestamptz, org_ids uuid[])
  returns jsonb
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_hits jsonb;
begin
  if cardinality(keys) > 200000 or cardinality(keys) <> cardinality(deltas) or cardinality(org_ids) > 100000 then
    raise exception 'A rate limit sync names at most 200000 keys, each with its count.' using errcode = '22023';
  end if;
  -- Keys with nothing new are only read: a sync never writes a row it does not add to.
  with incoming as (
    select k.key, sum(greatest(k.delta, 0))::int as delta
      from unnest(keys, deltas) as k(key, delta)
     group by k.key
  ), counted as (
    insert into app_private.rate_limit_windows as w (key, window_start, hits)
    select i.key, sync_rate_limits.window_start, i.delta from incoming i where i.delta > 0 order by i.key
    on conflict (key) do update
      set hits = case
            when w.window_start = excluded.window_start then w.hits + excluded.hits
            when w.window_start < excluded.window_start then excluded.hits
            else w.hits
          end,
          window_start = greatest(w.window_start, excluded.window_start)
    returning w.key, w.window_start, w.hits
  ), totals as (
    select c.key, c.window_start, c.hits from counted c
    union all
    select w.key, w.window_start, w.hits from app_private.rate_limit_windows w
     where w.key in (select i.key from incoming i where i.delta = 0)
  )
  select coalesce(jsonb_object_agg(t.key, case when t.window_start = sync_rate_limits.window_start then t.hits else 0 end), '{}')
    into v_hits from totals t;
  if random() < 0.01 then
    delete from app_private.rate_limit_windows w where w.window_start < now() - interval '1 hour';
  end if;
  return jsonb_build_object(
    'hits', v_hits,
    'limits', coalesce((
      select jsonb_object_agg(o.id, jsonb_build_array(l.user_per_minute, l.org_per_minute))
        from app_public.organizations o join app_private.tier_rate_limits l on l.tier = o.tier
       where o.id = any(sync_rate_limits.org_ids)), '{}'));
end;
$$;
comment on function app_private.sync_rate_limits(text[], int[], timestamptz, uuid[]) is
  'One server instance''s rate-limit sync: adds its new counts, answers the cluster-wide totals of its keys in the current window and its organizations'' tier limits.';
grant execute on function app_private.sync_rate_limits(text[], int[], timestamptz, uuid[]) to :DATABASE_AUTHENTICATOR;
