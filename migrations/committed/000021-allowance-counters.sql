--! Previous: sha1:7ff75912c89a1e89240592ebe91b806c46fe52f2
--! Hash: sha1:891b15b6c08e8d9533d8f8c29b9e8cbcdaa4d3f5
--! Message: allowance counters

-- The allowance check in O(1) (issue 12). summarizeDocument used to count the month's usage rows and the
-- organization's in-flight jobs on every request (aggregates that grow with the month). Two running counters now
-- hold the same numbers, kept by triggers in the transactions that change them, so they are exactly as current as
-- the rows: the check (still serialized per organization by check_allowance's lock) reads one row of each.

create table app_private.usage_counters (
  org_id uuid not null references app_public.organizations on delete cascade,
  month_start timestamptz not null,
  summaries int not null default 0 check (summaries >= 0),
  prompt_tokens bigint not null default 0 check (prompt_tokens >= 0),
  completion_tokens bigint not null default 0 check (completion_tokens >= 0),
  primary key (org_id, month_start)
);
comment on table app_private.usage_counters is 'Per organization and calendar month (UTC): the usage rows made and their tokens, kept by a trigger on usage_records.';
alter table app_private.usage_counters enable row level security;
alter table app_private.usage_counters force row level security;
create policy as_definer on app_private.usage_counters to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

create table app_private.jobs_in_flight (
  org_id uuid primary key references app_public.organizations on delete cascade,
  jobs int not null default 0 check (jobs >= 0)
);
comment on table app_private.jobs_in_flight is 'Per organization: its jobs queued or running, kept by a trigger on jobs.';
alter table app_private.jobs_in_flight enable row level security;
alter table app_private.jobs_in_flight force row level security;
create policy as_definer on app_private.jobs_in_flight to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- The calendar month (UTC) a moment falls in, as the allowance counts it.
create function app_private.month_start(at timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select date_trunc('month', month_start.at at time zone 'UTC') at time zone 'UTC' $$;
comment on function app_private.month_start(timestamptz) is 'The start of the calendar month (UTC) of `at`.';

-- Removals only update (never insert): when an organization is deleted its counters go with it, and a cascading
-- delete of its rows must not bring a counter back.
create function app_private.tg_usage_records__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.usage_counters as c (org_id, month_start, summaries, prompt_tokens, completion_tokens)
    values (new.org_id, app_private.month_start(new.created_at), 1, new.prompt_tokens, new.completion_tokens)
    on conflict (org_id, month_start) do update
      set summaries = c.summaries + 1, prompt_tokens = c.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = c.completion_tokens + excluded.completion_tokens;
  else
    update app_private.usage_counters c
       set summaries = greatest(c.summaries - 1, 0), prompt_tokens = greatest(c.prompt_tokens - old.prompt_tokens, 0),
           completion_tokens = greatest(c.completion_tokens - old.completion_tokens, 0)
     where c.org_id = old.org_id and c.month_start = app_private.month_start(old.created_at);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_usage_records__count() is 'Trigger (after insert or delete on usage_records): keeps usage_counters.';
create trigger _500_count after insert or delete on app_public.usage_records
  for each row execute function app_private.tg_usage_records__count();

create function app_private.tg_jobs__in_flight() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_delta int := (case when tg_op <> 'DELETE' and new.status in ('queued', 'running') then 1 else 0 end)
               - (case when tg_op <> 'INSERT' and old.status in ('queued', 'running') then 1 else 0 end);
begin
  if v_delta > 0 then
    insert into app_private.jobs_in_flight as f (org_id, jobs) values (new.org_id, v_delta)
    on conflict (org_id) do update set jobs = f.jobs + excluded.jobs;
  elsif v_delta < 0 then
    update app_private.jobs_in_flight f set jobs = greatest(f.jobs + v_delta, 0) where f.org_id = old.org_id;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_jobs__in_flight() is 'Trigger (after insert, status update or delete on jobs): keeps jobs_in_flight.';
create trigger _500_in_flight after insert or update of status or delete on app_public.jobs
  for each row execute function app_private.tg_jobs__in_flight();

-- What the counters start from.
insert into app_private.usage_counters (org_id, month_start, summaries, prompt_tokens, completion_tokens)
select u.org_id, app_private.month_start(u.created_at), count(*), sum(u.prompt_tokens), sum(u.completion_tokens)
  from app_public.usage_records u
 group by 1, 2;
insert into app_private.jobs_in_flight (org_id, jobs)
select j.org_id, count(*) from app_public.jobs j where j.status in ('queued', 'running') group by 1;

create or replace function app_private.usage_of(org_id uuid) returns app_public.organization_usage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select p.start, p.start + interval '1 month', o.tier,
           coalesce(c.summaries, 0), coalesce(f.jobs, 0), coalesce(c.prompt_tokens, 0), coalesce(c.completion_tokens, 0),
           a.monthly_summaries, a.monthly_tokens
      from app_public.organizations o
      join app_private.tier_allowances a on a.tier = o.tier
     cross join (select app_private.month_start(now()) as start) p
      left join app_private.usage_counters c on c.org_id = o.id and c.month_start = p.start
      left join app_private.jobs_in_flight f on f.org_id = o.id
     where o.id = usage_of.org_id
  $$;
comment on function app_private.usage_of(uuid) is 'An organization''s usage this month and its allowance, from its running counters.';
