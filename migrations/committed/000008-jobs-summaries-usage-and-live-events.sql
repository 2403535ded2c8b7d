--! Previous: sha1:c17a14e8ca81a333d6f35b1ab2e20b8b9c29d2a3
--! Hash: sha1:25e2edc813328f4492350a31b57c01eb32f5bb10
--! Message: jobs, summaries, usage and live events

-- Background work an organization asked for. A job row is the user-facing record (status, error, result); the
-- graphile-worker job that runs it is keyed by the same id and is never visible to the API.
create type app_public.job_kind as enum ('summarize', 'import', 'sync', 'publish');
create type app_public.job_status as enum ('queued', 'running', 'succeeded', 'failed', 'cancelled');

create table app_public.jobs (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  kind app_public.job_kind not null,
  status app_public.job_status not null default 'queued',
  document_id uuid,
  template_version_id uuid,
  global_template_version_id uuid references app_public.global_template_versions on delete set null,
  summary_id uuid,
  requested_by uuid references app_public.users on delete set null,
  attempts int not null default 0 check (attempts >= 0),
  max_attempts int not null default coalesce(nullif(current_setting('quire.job_max_attempts', true), '')::int, 3)
    check (max_attempts between 1 and 25),
  error_code text check (error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  error_message text check (char_length(error_message) <= 1000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  unique (org_id, id),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete set null (document_id),
  foreign key (org_id, template_version_id) references app_public.template_versions (org_id, id) on delete set null (template_version_id),
  check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
);
comment on table app_public.jobs is
  E'@behavior -insert -update -delete\nBackground work of the organization: summaries, imports and syncs from Notion and Confluence, publishing. Created by mutations such as summarizeDocument, run by the worker, visible to everyone in the organization.';
comment on column app_public.jobs.status is E'@behavior +attribute:filterBy\nqueued, running, succeeded, failed or cancelled; clients filter by it.';
comment on column app_public.jobs.kind is E'@behavior +attribute:filterBy\nWhat the job does.';
comment on column app_public.jobs.max_attempts is 'Runs allowed; defaults to the server''s JOB_MAX_ATTEMPTS (setting quire.job_max_attempts), else 3.';
comment on column app_public.jobs.attempts is 'Runs started so far (a run interrupted by a dead worker counts).';
comment on column app_public.jobs.error_code is 'For failed jobs: a stable code such as LLM_TIMEOUT, LLM_RATE_LIMITED, LLM_UNAVAILABLE, LLM_REJECTED, LLM_AUTH, LLM_BAD_RESPONSE, DOCUMENT_DELETED or INTERNAL. While a retry is pending, the last attempt''s error.';
comment on column app_public.jobs.error_message is 'A message safe to show: never a secret or a stack.';
comment on column app_public.jobs.document_id is 'The document the job is about; NULL once that document is deleted.';
create index jobs_org_id_created_at_idx on app_public.jobs (org_id, created_at desc, id);
create index jobs_org_id_status_idx on app_public.jobs (org_id, status) where status in ('queued', 'running');
create index jobs_org_id_document_id_idx on app_public.jobs (org_id, document_id);
create index jobs_org_id_template_version_id_idx on app_public.jobs (org_id, template_version_id);
create index jobs_org_id_global_template_version_id_idx on app_public.jobs (org_id, global_template_version_id);
create index jobs_org_id_requested_by_idx on app_public.jobs (org_id, requested_by);
create trigger _100_timestamps before insert or update on app_public.jobs
  for each row execute procedure app_private.tg__timestamps();

-- A summary is immutable output of exactly one job, made from one template version (an organization's or a
-- global one) and one revision of its document. It goes with its document; `stale` tells it is out of date.
create table app_public.summaries (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  document_id uuid not null,
  job_id uuid not null,
  template_version_id uuid,
  global_template_version_id uuid references app_public.global_template_versions on delete restrict,
  content text not null,
  provider text not null check (char_length(provider) between 1 and 50),
  model text not null check (char_length(model) between 1 and 200),
  prompt_tokens int not null check (prompt_tokens >= 0),
  completion_tokens int not null check (completion_tokens >= 0),
  latency_ms int not null check (latency_ms >= 0),
  document_revision int not null,
  stale boolean not null default false,
  created_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete cascade,
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade,
  foreign key (org_id, template_version_id) references app_public.template_versions (org_id, id) on delete restrict,
  check (num_nonnulls(template_version_id, global_template_version_id) = 1)
);
comment on table app_public.summaries is
  E'@behavior -insert -update -delete\nAn LLM summary of a document, written by the worker. Everyone in the organization reads it.';
comment on column app_public.summaries.document_revision is 'The document revision the summary was made from.';
comment on column app_public.summaries.stale is 'True once the document''s content changed after the summary was made.';
create index summaries_org_id_document_id_idx on app_public.summaries (org_id, document_id, created_at desc);
create index summaries_org_id_template_version_id_idx on app_public.summaries (org_id, template_version_id);
create index summaries_org_id_global_template_version_id_idx on app_public.summaries (org_id, global_template_version_id);

alter table app_public.jobs add foreign key (org_id, summary_id) references app_public.summaries (org_id, id) on delete set null (summary_id);
create index jobs_org_id_summary_id_idx on app_public.jobs (org_id, summary_id);

-- Usage is what the organization is charged for: one row per successful job, written in the transaction that
-- writes its summary ((org_id, job_id) is unique, so a job delivered twice is never charged twice). It outlives the summary.
create table app_public.usage_records (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  job_id uuid not null,
  summary_id uuid,
  provider text not null,
  model text not null,
  prompt_tokens int not null check (prompt_tokens >= 0),
  completion_tokens int not null check (completion_tokens >= 0),
  created_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade,
  foreign key (org_id, summary_id) references app_public.summaries (org_id, id) on delete set null (summary_id)
);
comment on table app_public.usage_records is
  E'@behavior -insert -update -delete\nLLM usage charged to the organization, one row per summary made.';
create index usage_records_org_id_created_at_idx on app_public.usage_records (org_id, created_at);
create index usage_records_org_id_summary_id_idx on app_public.usage_records (org_id, summary_id);

-- The worker runs a job inside the job's organization's RLS context, without a user session: the graphile-worker
-- payload carries the job id and a random token whose SHA-256 is kept here. While the job is queued or running,
-- the pair (settings quire.job_id and quire.job_token) stands in for a session: current_org_id() is the job's
-- organization and current_job_id() the job, so the worker reads and writes under the same policies as users.
create table app_private.job_tokens (
  job_id uuid primary key references app_public.jobs on delete cascade,
  token_hash bytea not null check (length(token_hash) = 32),
  runner_id text,
  lock_id text
);
comment on table app_private.job_tokens is 'Per-job secret (SHA-256) for the worker''s RLS context, and which worker process holds the job.';
alter table app_private.job_tokens enable row level security;
alter table app_private.job_tokens force row level security;
create policy as_definer on app_private.job_tokens to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

create function app_private.job_context(out org_id uuid, out user_id uuid, out job_id uuid)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select j.org_id, j.requested_by, j.id
      from app_private.job_tokens t
      join app_public.jobs j on j.id = t.job_id and j.status in ('queued', 'running')
     where t.job_id = app_private.uuid_setting('quire.job_id')
       and t.token_hash = sha256(convert_to(coalesce(nullif(current_setting('quire.job_token', true), ''), '-'), 'UTF8'))
  $$;
comment on function app_private.job_context() is
  'The job named by quire.job_id, its organization and requester, when quire.job_token is its token and it is still queued or running; NULLs otherwise.';

-- The session lookup learns the job context: without a session, a valid job token gives the organization (and
-- no membership role, so member-only policies never apply to the worker).
create or replace function app_private.session_context(out org_id uuid, out user_id uuid, out role app_public.membership_role)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_session_id uuid := app_private.uuid_setting('jwt.claims.session_id');
begin
  if v_session_id is null then
    if nullif(current_setting('quire.job_id', true), '') is not null then
      select c.org_id, c.user_id into org_id, user_id from app_private.job_context() c;
    end if;
    return;
  end if;
  select s.org_id, s.user_id, m.role into org_id, user_id, role
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
end;
$$;

create function app_public.current_job_id() returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select case when nullif(current_setting('jwt.claims.session_id', true), '') is null then (select job_id from app_private.job_context()) end $$;
comment on function app_public.current_job_id() is
  E'@behavior -*\nThe job the worker is running in this transaction (quire.job_id with a valid quire.job_token), or NULL.';
grant execute on function app_public.current_job_id() to :DATABASE_AUTHENTICATED;

-- Which worker process runs a job, so that a job held by a process that died is released (below). Called by the
-- worker as the authenticator, before it takes on the job's context.
create function app_private.note_job_runner(job_id uuid, runner_id text, lock_id text) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.job_tokens t set runner_id = note_job_runner.runner_id, lock_id = note_job_runner.lock_id
     where t.job_id = note_job_runner.job_id
  $$;
comment on function app_private.note_job_runner(uuid, text, text) is 'Records the worker process (heartbeat id) and graphile-worker id running a job.';
grant execute on function app_private.note_job_runner(uuid, text, text) to :DATABASE_AUTHENTICATOR;

-- graphile-worker keeps a crashed worker's jobs locked for 4 hours. Quire knows better: a process whose heartbeat
-- is older than `max_age_seconds` is dead, so its running jobs are unlocked now and retried by a live worker. A job
-- that was on its last attempt would never run again, so it fails (WORKER_LOST) rather than stay `running`.
create function app_private.release_dead_workers(max_age_seconds int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_lock_ids text[];
  v_job_id uuid;
begin
  select array_agg(distinct t.lock_id) into v_lock_ids
    from app_private.job_tokens t
    join app_public.jobs j on j.id = t.job_id and j.status = 'running'
   where t.lock_id is not null
     and not exists (
       select 1 from app_private.worker_heartbeats h
        where h.worker_id = t.runner_id and h.last_seen_at > now() - make_interval(secs => max_age_seconds));
  if v_lock_ids is null then
    return 0;
  end if;
  perform graphile_worker.force_unlock_workers(v_lock_ids);
  for v_job_id in
    update app_private.job_tokens t set runner_id = null, lock_id = null
     where t.lock_id = any (v_lock_ids)
    returning t.job_id
  loop
    if exists (select 1 from graphile_worker._private_jobs gj where gj.key = v_job_id::text and gj.attempts >= gj.max_attempts) then
      perform graphile_worker.remove_job(v_job_id::text);
      update app_public.jobs j
         set status = 'failed', finished_at = now(), error_code = 'WORKER_LOST',
             error_message = 'The worker running this job stopped, and no attempts were left.'
       where j.id = v_job_id and j.status = 'running';
    end if;
  end loop;
  return cardinality(v_lock_ids);
end;
$$;
comment on function app_private.release_dead_workers(int) is
  'Unlocks the graphile-worker jobs of Quire jobs whose worker process stopped reporting in; returns how many workers were released.';
grant execute on function app_private.release_dead_workers(int) to :DATABASE_AUTHENTICATOR;

-- Row-level security. Everyone in the organization reads jobs, summaries and usage; only the worker, in the job's
-- context, writes them (and only for its own job); users change jobs through summarizeDocument and cancelJob.
alter table app_public.jobs enable row level security;
alter table app_public.jobs force row level security;
create policy as_definer on app_public.jobs to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.jobs for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy update_as_runner on app_public.jobs for update to :DATABASE_AUTHENTICATED
  using (id = (select app_public.current_job_id())) with check (org_id = (select app_public.current_org_id()));
grant select on app_public.jobs to :DATABASE_AUTHENTICATED;
grant update (status, attempts, error_code, error_message, summary_id, started_at, finished_at) on app_public.jobs to :DATABASE_AUTHENTICATED;

alter table app_public.summaries enable row level security;
alter table app_public.summaries force row level security;
create policy as_definer on app_public.summaries to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.summaries for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy insert_as_runner on app_public.summaries for insert to :DATABASE_AUTHENTICATED
  with check (job_id = (select app_public.current_job_id()) and org_id = (select app_public.current_org_id()));
grant select on app_public.summaries to :DATABASE_AUTHENTICATED;
grant insert (org_id, document_id, job_id, template_version_id, global_template_version_id, content, provider, model,
  prompt_tokens, completion_tokens, latency_ms, document_revision) on app_public.summaries to :DATABASE_AUTHENTICATED;

alter table app_public.usage_records enable row level security;
alter table app_public.usage_records force row level security;
create policy as_definer on app_public.usage_records to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.usage_records for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy insert_as_runner on app_public.usage_records for insert to :DATABASE_AUTHENTICATED
  with check (job_id = (select app_public.current_job_id()) and org_id = (select app_public.current_org_id()));
grant select on app_public.usage_records to :DATABASE_AUTHENTICATED;
grant insert (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens) on app_public.usage_records to :DATABASE_AUTHENTICATED;

-- A job moves forward only: queued → running → one of succeeded, failed, cancelled (running → queued when a retry
-- is pending). A finished job never changes again, so a late worker cannot overwrite a cancellation.
create function app_private.tg_jobs__transition() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if old.status in ('succeeded', 'failed', 'cancelled') and new.status is distinct from old.status then
    raise exception 'The job has already finished.' using errcode = 'BADIN';
  end if;
  if new.status = 'queued' and old.status not in ('queued', 'running') then
    raise exception 'A job cannot go back to the queue.' using errcode = 'BADIN';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_jobs__transition() is 'Trigger: refuses status changes of finished jobs.';
create trigger _200_transition before update on app_public.jobs
  for each row execute procedure app_private.tg_jobs__transition();

-- Monthly allowances per tier. Operators change them with app_admin.set_tier_allowance; summarizeDocument refuses
-- (QUOTA, QUOTA_EXCEEDED) once the month's summaries (made or in flight) or tokens reach the allowance.
create table app_private.tier_allowances (
  tier app_public.subscription_tier primary key,
  monthly_summaries int not null check (monthly_summaries >= 0),
  monthly_tokens bigint not null check (monthly_tokens >= 0)
);
comment on table app_private.tier_allowances is 'Monthly summary and token allowance of each subscription tier.';
insert into app_private.tier_allowances (tier, monthly_summaries, monthly_tokens) values
  ('free', 100, 500000), ('basic', 2000, 10000000), ('premium', 20000, 100000000);
alter table app_private.tier_allowances enable row level security;
alter table app_private.tier_allowances force row level security;
create policy as_definer on app_private.tier_allowances to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

create function app_admin.set_tier_allowance(tier app_public.subscription_tier, monthly_summaries int, monthly_tokens bigint)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_allowances a
       set monthly_summaries = set_tier_allowance.monthly_summaries, monthly_tokens = set_tier_allowance.monthly_tokens
     where a.tier = set_tier_allowance.tier
  $$;
comment on function app_admin.set_tier_allowance(app_public.subscription_tier, int, bigint) is
  E'Sets a tier''s monthly allowance of summaries and LLM tokens.\nExample: select app_admin.set_tier_allowance(''free'', 200, 1000000);';

-- The current calendar month (UTC) of an organization's usage.
create type app_public.organization_usage as (
  period_start timestamptz,
  period_end timestamptz,
  tier app_public.subscription_tier,
  summaries int,
  jobs_in_flight int,
  prompt_tokens bigint,
  completion_tokens bigint,
  summary_allowance int,
  token_allowance bigint
);
comment on type app_public.organization_usage is 'Usage of the current month (UTC) against the tier''s allowance.';

create function app_private.usage_of(org_id uuid) returns app_public.organization_usage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select p.start, p.start + interval '1 month', o.tier,
           (select count(*)::int from app_public.usage_records u where u.org_id = o.id and u.created_at >= p.start),
           (select count(*)::int from app_public.jobs j where j.org_id = o.id and j.status in ('queued', 'running')),
           (select coalesce(sum(u.prompt_tokens), 0) from app_public.usage_records u where u.org_id = o.id and u.created_at >= p.start),
           (select coalesce(sum(u.completion_tokens), 0) from app_public.usage_records u where u.org_id = o.id and u.created_at >= p.start),
           a.monthly_summaries, a.monthly_tokens
      from app_public.organizations o
      join app_private.tier_allowances a on a.tier = o.tier,
           (select date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' as start) p
     where o.id = usage_of.org_id
  $$;
comment on function app_private.usage_of(uuid) is 'An organization''s usage this month and its allowance.';

create function app_public.organization_usage() returns app_public.organization_usage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select * from app_private.usage_of(app_public.current_org_id()) where app_public.current_org_id() is not null $$;
comment on function app_public.organization_usage() is
  'The current organization''s usage this month (UTC): summaries made, jobs in flight, tokens, and the tier''s allowance.';
grant execute on function app_public.organization_usage() to :DATABASE_AUTHENTICATED;

-- Asking for a summary: checks the caller, resolves the template to its current version (pinned, so later edits
-- do not change what this job makes), checks the month's allowance, and queues the job and its graphile-worker job
-- in the caller's transaction. The allowance check is serialized per organization so concurrent requests cannot
-- all slip under it. Without a template: the organization's defaultTemplateId setting, else "Executive summary".
create function app_private.template_version_for(org_id uuid, template_id uuid, out template_version_id uuid, out global_template_version_id uuid)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select (select tv.id from app_public.templates t
              join app_public.template_versions tv on tv.org_id = t.org_id and tv.template_id = t.id and tv.version = t.version
             where t.id = template_version_for.template_id and t.org_id = template_version_for.org_id),
           (select gv.id from app_public.global_templates g
              join app_public.global_template_versions gv on gv.global_template_id = g.id and gv.version = g.version
             where g.id = template_version_for.template_id)
  $$;
comment on function app_private.template_version_for(uuid, uuid) is 'The current version of an organization''s template, or of a global template, with this id.';

create function app_private.default_template_id(org_id uuid) returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce(
      (select (o.settings ->> 'defaultTemplateId')::uuid from app_public.organizations o
        where o.id = default_template_id.org_id
          and o.settings ->> 'defaultTemplateId' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'),
      (select g.id from app_public.global_templates g where g.name = 'Executive summary'))
  $$;
comment on function app_private.default_template_id(uuid) is 'The template used when none is named: the organization''s defaultTemplateId, else the global "Executive summary".';

create function app_private.check_allowance(org_id uuid) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_usage app_public.organization_usage;
begin
  perform pg_advisory_xact_lock(hashtextextended('quire.allowance:' || check_allowance.org_id::text, 0));
  v_usage := app_private.usage_of(check_allowance.org_id);
  if v_usage.summaries + v_usage.jobs_in_flight >= v_usage.summary_allowance then
    raise exception 'This month''s allowance of % summaries is used up.', v_usage.summary_allowance using errcode = 'QUOTA';
  end if;
  if v_usage.prompt_tokens + v_usage.completion_tokens >= v_usage.token_allowance then
    raise exception 'This month''s allowance of % tokens is used up.', v_usage.token_allowance using errcode = 'QUOTA';
  end if;
end;
$$;
comment on function app_private.check_allowance(uuid) is 'Raises QUOTA (QUOTA_EXCEEDED) when the organization''s monthly allowance is used up; holds a per-organization lock until commit.';

-- Every kind of job is queued the same way once its row exists: a random token for the worker's RLS context
-- (kept as its SHA-256), and the graphile-worker job keyed by the job's id, carrying only the id and the token.
create function app_private.enqueue_job(job app_public.jobs, task text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_token text := encode(public.gen_random_bytes(32), 'hex');
begin
  insert into app_private.job_tokens (job_id, token_hash) values ((job).id, sha256(convert_to(v_token, 'UTF8')));
  perform graphile_worker.add_job(task, json_build_object('jobId', (job).id, 'token', v_token),
    job_key => (job).id::text, max_attempts => (job).max_attempts);
end;
$$;
comment on function app_private.enqueue_job(app_public.jobs, text) is 'Gives a new job its worker token and queues it for `task`.';

create function app_public.summarize_document(document_id uuid, template_id uuid default null) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_role app_public.membership_role := app_public.current_member_role();
  v_version record;
  v_job app_public.jobs;
begin
  if v_org_id is null or v_role is null then
    raise exception 'Sign in to request summaries.' using errcode = 'LOGIN';
  end if;
  if v_role < 'member' then
    raise exception 'Viewers cannot request summaries.' using errcode = 'DNIED';
  end if;
  if not exists (select 1 from app_public.documents d where d.id = summarize_document.document_id and d.org_id = v_org_id) then
    raise exception 'No such document.' using errcode = 'NTFND';
  end if;
  select * into v_version
    from app_private.template_version_for(v_org_id, coalesce(summarize_document.template_id, app_private.default_template_id(v_org_id)));
  if v_version.template_version_id is null and v_version.global_template_version_id is null then
    raise exception 'No such template.' using errcode = 'NTFND';
  end if;
  perform app_private.check_allowance(v_org_id);
  insert into app_public.jobs (org_id, kind, document_id, template_version_id, global_template_version_id, requested_by)
    values (v_org_id, 'summarize', summarize_document.document_id, v_version.template_version_id, v_version.global_template_version_id,
            app_public.current_user_id())
    returning * into v_job;
  perform app_private.enqueue_job(v_job, 'summarize');
  return v_job;
end;
$$;
comment on function app_public.summarize_document(uuid, uuid) is
  E'@resultFieldName job\nQueues an LLM summary of a document with a template (default: the organization''s defaultTemplateId, else the global "Executive summary") and returns the job at once; follow it with the jobUpdated subscription. Members and above. QUOTA_EXCEEDED once the month''s allowance is used up.';
grant execute on function app_public.summarize_document(uuid, uuid) to :DATABASE_AUTHENTICATED;

-- Cancelling: a queued job is removed from the queue; a running one is marked cancelled, and the worker, which
-- writes its result only while the job is still running, discards what it was making. The requester or an admin.
create function app_public.cancel_job(job_id uuid) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job app_public.jobs;
  v_role app_public.membership_role := app_public.current_member_role();
begin
  select * into v_job from app_public.jobs j
   where j.id = cancel_job.job_id and j.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such job.' using errcode = 'NTFND';
  end if;
  if v_role < 'member' or (v_role < 'admin' and v_job.requested_by is distinct from app_public.current_user_id()) then
    raise exception 'Only the member who asked for a job, or an admin, can cancel it.' using errcode = 'DNIED';
  end if;
  if v_job.status = 'cancelled' then
    return v_job;
  end if;
  if v_job.status <> all (array['queued', 'running']::app_public.job_status[]) then
    raise exception 'The job has already finished (%).', v_job.status using errcode = 'BADIN';
  end if;
  perform graphile_worker.remove_job(v_job.id::text);
  update app_public.jobs j set status = 'cancelled', finished_at = now() where j.id = v_job.id returning * into v_job;
  return v_job;
end;
$$;
comment on function app_public.cancel_job(uuid) is
  E'@resultFieldName job\nCancels a queued or running job (the member who asked for it, or an admin); cancelling a cancelled job changes nothing.';
grant execute on function app_public.cancel_job(uuid) to :DATABASE_AUTHENTICATED;

-- A deleted document takes its summaries with it (cascade) and cancels its unfinished jobs, so no worker spends
-- LLM calls on it; an edited one marks its summaries stale.
create function app_private.tg_documents__cancel_jobs() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid;
begin
  for v_job_id in
    update app_public.jobs j
       set status = 'cancelled', finished_at = now(), error_code = 'DOCUMENT_DELETED', error_message = 'The document was deleted.'
     where j.org_id = old.org_id and j.document_id = old.id and j.status in ('queued', 'running')
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
  return old;
end;
$$;
comment on function app_private.tg_documents__cancel_jobs() is 'Trigger: cancels the unfinished jobs of a document being deleted.';
create trigger _500_cancel_jobs before delete on app_public.documents
  for each row execute procedure app_private.tg_documents__cancel_jobs();

create function app_private.tg_documents__stale_summaries() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_public.summaries s set stale = true
   where s.org_id = new.org_id and s.document_id = new.id and not s.stale and s.document_revision < new.revision;
  return null;
end;
$$;
comment on function app_private.tg_documents__stale_summaries() is 'Trigger: marks a document''s summaries stale once its content changed.';
create trigger _500_stale_summaries after update of content on app_public.documents
  for each row when (new.revision > old.revision) execute procedure app_private.tg_documents__stale_summaries();

-- Live updates. Every change of a job, document or summary appends an event to the organization's outbox, numbered
-- by a per-organization sequence, and NOTIFYs the channel `quire_live` with ids only. Each server holds one LISTEN
-- connection and hands an event to the subscribers of that organization alone (the organization comes from their
-- verified token, never from an argument); subscribers re-read the rows under their own RLS, and a reconnecting
-- client replays what it missed from the outbox with `since`. The counter row serializes an organization's writers, so sequence order is commit order.
create table app_private.live_event_counters (
  org_id uuid primary key references app_public.organizations on delete cascade,
  last_seq bigint not null
);
comment on table app_private.live_event_counters is 'The last live-event sequence number of each organization.';
alter table app_private.live_event_counters enable row level security;
alter table app_private.live_event_counters force row level security;
create policy as_definer on app_private.live_event_counters to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

create table app_public.live_events (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  seq bigint not null,
  entity text not null check (entity in ('job', 'document', 'summary', 'integration')),
  op text not null check (op in ('insert', 'update', 'delete')),
  entity_id uuid not null,
  document_id uuid,
  created_at timestamptz not null default now(),
  unique (org_id, seq),
  unique (org_id, id)
);
comment on table app_public.live_events is
  E'@behavior -*\nThe organization''s recent changes (the outbox the subscriptions replay from with `since`); kept for LIVE_EVENT_RETENTION.';
create index live_events_org_id_created_at_idx on app_public.live_events (org_id, created_at);
alter table app_public.live_events enable row level security;
alter table app_public.live_events force row level security;
create policy as_definer on app_public.live_events to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.live_events for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
grant select on app_public.live_events to :DATABASE_AUTHENTICATED;

create function app_private.tg__live_event() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_row jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
  v_org_id uuid := (v_row ->> 'org_id')::uuid;
  v_id uuid := (v_row ->> 'id')::uuid;
  v_document_id uuid := case tg_argv[0] when 'document' then v_id else (v_row ->> 'document_id')::uuid end;
  v_seq bigint;
begin
  -- A document deleted together with its organization has no outbox left to write to.
  if tg_op = 'DELETE' and not exists (select 1 from app_public.organizations o where o.id = v_org_id) then
    return null;
  end if;
  insert into app_private.live_event_counters as c (org_id, last_seq) values (v_org_id, 1)
    on conflict (org_id) do update set last_seq = c.last_seq + 1
    returning last_seq into v_seq;
  insert into app_public.live_events (org_id, seq, entity, op, entity_id, document_id)
    values (v_org_id, v_seq, tg_argv[0], lower(tg_op), v_id, v_document_id);
  perform pg_notify('quire_live',
    json_build_object('orgId', v_org_id, 'seq', v_seq, 'entity', tg_argv[0], 'op', lower(tg_op), 'entityId', v_id, 'documentId', v_document_id)::text);
  return null;
end;
$$;
comment on function app_private.tg__live_event() is 'Trigger: appends a live event (ids only) to the organization''s outbox and notifies quire_live.';
create trigger _900_live_event after insert or update or delete on app_public.jobs
  for each row execute procedure app_private.tg__live_event('job');
create trigger _900_live_event after insert or update or delete on app_public.documents
  for each row execute procedure app_private.tg__live_event('document');
create trigger _900_live_event after insert or update or delete on app_public.summaries
  for each row execute procedure app_private.tg__live_event('summary');

-- The outbox is bounded: the worker's prune_live_events task (hourly) drops events older than the retention.
create function app_private.prune_live_events(keep interval) returns bigint
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with gone as (
      delete from app_public.live_events e
       using app_private.live_event_counters c
       where e.org_id = c.org_id and e.created_at < now() - prune_live_events.keep
      returning 1)
    select count(*) from gone
  $$;
comment on function app_private.prune_live_events(interval) is 'Deletes live events older than `keep`; returns how many.';
grant execute on function app_private.prune_live_events(interval) to :DATABASE_AUTHENTICATOR;

-- Foreign keys that include org_id (so a row can only point inside its own organization) would otherwise be named
-- after both columns in GraphQL (orgDocument, summariesByOrgIdAndDocumentId); these smart tags give the names a
-- client expects.
comment on constraint template_versions_org_id_template_id_fkey on app_public.template_versions is
  E'@fieldName template\n@foreignFieldName versions';
comment on constraint jobs_org_id_document_id_fkey on app_public.jobs is E'@fieldName document\n@foreignFieldName jobs';
comment on constraint jobs_org_id_template_version_id_fkey on app_public.jobs is E'@fieldName templateVersion\n@foreignFieldName jobs';
comment on constraint jobs_org_id_summary_id_fkey on app_public.jobs is E'@fieldName summary\n@foreignFieldName jobsBySummary';
comment on constraint jobs_requested_by_fkey on app_public.jobs is E'@fieldName requester\n@foreignFieldName requestedJobs';
comment on constraint summaries_org_id_document_id_fkey on app_public.summaries is E'@fieldName document\n@foreignFieldName summaries';
comment on constraint summaries_org_id_job_id_fkey on app_public.summaries is E'@fieldName job\n@foreignFieldName producedSummary';
comment on constraint summaries_org_id_template_version_id_fkey on app_public.summaries is E'@fieldName templateVersion\n@foreignFieldName summaries';
comment on constraint usage_records_org_id_job_id_fkey on app_public.usage_records is E'@fieldName job\n@foreignFieldName usageRecord';
comment on constraint usage_records_org_id_summary_id_fkey on app_public.usage_records is E'@fieldName summary\n@foreignFieldName usageRecords';
