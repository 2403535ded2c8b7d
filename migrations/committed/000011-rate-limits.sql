--! Previous: sha1:e9e30e12a29a339706aebadb4f4bd2adf3cbd12e
--! Hash: sha1:34107480cf10f8a92ad716ad4e10f02c62ef3527
--! Message: rate limits

-- Request rate limits, counted in PostgreSQL so that every server instance enforces the same budget. One row per
-- key (an address, a user or an organization) holds the current one-minute window and its count; a new window
-- resets it in place, so the table stays one row per active key. Rows idle for an hour are swept now and then.
create table app_private.rate_limit_counters (
  key text primary key,
  window_start timestamptz not null,
  hits int not null
);
comment on table app_private.rate_limit_counters is 'Requests counted in the current one-minute window, per address (ip:…), user (user:…) or organization (org:…).';
alter table app_private.rate_limit_counters enable row level security;
alter table app_private.rate_limit_counters force row level security;
create policy as_definer on app_private.rate_limit_counters to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- What each subscription tier may send: per user and per organization, requests a minute.
create table app_private.tier_rate_limits (
  tier app_public.subscription_tier primary key,
  user_per_minute int not null check (user_per_minute > 0),
  org_per_minute int not null check (org_per_minute > 0)
);
comment on table app_private.tier_rate_limits is 'API requests a minute each tier allows per signed-in user and per organization.';
insert into app_private.tier_rate_limits (tier, user_per_minute, org_per_minute) values
  ('free', 600, 1200), ('basic', 1200, 6000), ('premium', 3000, 30000);
alter table app_private.tier_rate_limits enable row level security;
alter table app_private.tier_rate_limits force row level security;
create policy as_definer on app_private.tier_rate_limits to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- Counts one request against `key`; returns the seconds until its window ends when the count is now over `limit`,
-- else 0. The upsert takes the key's row lock only for this one statement.
create function app_private.hit_rate_limit(key text, max_hits int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_window timestamptz := date_trunc('minute', now());
  v_hits int;
begin
  insert into app_private.rate_limit_counters as c (key, window_start, hits) values (hit_rate_limit.key, v_window, 1)
    on conflict on constraint rate_limit_counters_pkey do update
      set hits = case when c.window_start = excluded.window_start then c.hits + 1 else 1 end,
          window_start = excluded.window_start
    returning c.hits into v_hits;
  if random() < 0.001 then
    delete from app_private.rate_limit_counters c where c.window_start < now() - interval '1 hour';
  end if;
  if v_hits > hit_rate_limit.max_hits then
    return greatest(1, ceil(extract(epoch from v_window + interval '1 minute' - now())))::int;
  end if;
  return 0;
end;
$$;
comment on function app_private.hit_rate_limit(text, int) is 'Counts a request against a key''s one-minute window; seconds to wait when over the limit, else 0.';

-- One API request: anonymous ones count against their address; signed-in ones against their user and their
-- organization, with the organization's tier's limits. Returns the seconds to wait (0: go ahead) and which limit
-- was hit. Only the server's own login (the authenticator) calls this, before the request runs.
create function app_private.take_request(ip inet, user_id uuid, org_id uuid, anonymous_per_minute int,
  out retry_after_seconds int, out scope text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_limits app_private.tier_rate_limits;
begin
  retry_after_seconds := 0;
  if take_request.user_id is null then
    if take_request.ip is not null then
      retry_after_seconds := app_private.hit_rate_limit('ip:' || host(take_request.ip), take_request.anonymous_per_minute);
      scope := case when retry_after_seconds > 0 then 'address' end;
    end if;
    return;
  end if;
  select l.* into v_limits from app_public.organizations o join app_private.tier_rate_limits l on l.tier = o.tier
   where o.id = take_request.org_id;
  if not found then
    v_limits := row('free', 600, 1200)::app_private.tier_rate_limits;
  end if;
  retry_after_seconds := app_private.hit_rate_limit('user:' || take_request.user_id, v_limits.user_per_minute);
  if retry_after_seconds > 0 then
    scope := 'user';
    return;
  end if;
  retry_after_seconds := app_private.hit_rate_limit('org:' || take_request.org_id, v_limits.org_per_minute);
  scope := case when retry_after_seconds > 0 then 'organization' end;
end;
$$;
comment on function app_private.take_request(inet, uuid, uuid, int) is
  'Counts one API request against its address (anonymous) or its user and organization (by tier); seconds to wait and the limit hit.';
grant execute on function app_private.take_request(inet, uuid, uuid, int) to :DATABASE_AUTHENTICATOR;

create function app_admin.set_tier_rate_limit(tier app_public.subscription_tier, user_per_minute int, org_per_minute int)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_rate_limits l
       set user_per_minute = set_tier_rate_limit.user_per_minute, org_per_minute = set_tier_rate_limit.org_per_minute
     where l.tier = set_tier_rate_limit.tier
  $$;
comment on function app_admin.set_tier_rate_limit(app_public.subscription_tier, int, int) is
  E'Sets the API requests a minute a tier allows per user and per organization.\nExample: select app_admin.set_tier_rate_limit(''free'', 300, 1000);';
