--! Previous: sha1:76f6b74b8c99cd09305518d267c77fae64c78500
--! Hash: sha1:2e814ed735a8de9f2d751279d540551eea85b647
--! Message: durable jobs

-- Jobs survive restarts, rolling deploys and outages (issue 11).

-- Fencing. A run of a job claims it (run_id) in its first transaction; from then on only that run opens the job's
-- RLS context (setting quire.job_run), so a stale run (an earlier attempt whose worker was presumed dead, or that is
-- still finishing after another worker took the job over) can never change the job, its summary or its usage.
-- failing_since is when the job's transient failures (LLM outages, rate limits) began, bounding how long it retries.
alter table app_private.job_tokens add column run_id uuid, add column failing_since timestamptz;
comment on column app_private.job_tokens.run_id is 'The run (one delivery to a worker) that owns the job now; only it opens the job''s context.';
create index job_tokens_lock_id_idx on app_private.job_tokens (lock_id) where lock_id is not null;
comment on column app_private.job_tokens.failing_since is 'When the job''s current streak of transient failures began (bounds LLM_RETRY_WINDOW_SECONDS).';

create or replace function app_private.job_context(out org_id uuid, out user_id uuid, out job_id uuid)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select j.org_id, j.requested_by, j.id
      from app_private.job_tokens t
      join app_public.jobs j on j.id = t.job_id and j.status in ('queued', 'running')
     where t.job_id = app_private.uuid_setting('quire.job_id')
       and t.token_hash = sha256(convert_to(coalesce(nullif(current_setting('quire.job_token', true), ''), '-'), 'UTF8'))
       and (t.run_id is null or t.run_id = app_private.uuid_setting('quire.job_run'))
  $$;
comment on function app_private.job_context() is
  'The job named by quire.job_id, its organization and requester, when quire.job_token is its token, quire.job_run the run that claimed it last (if any), and it is still queued or running; NULLs otherwise.';

-- Claiming replaces note_job_runner: it also records the run, and it waits for the open transaction of any run
-- holding the job (hold_job_run), so a claim never lands in the middle of another run's write.
drop function app_private.note_job_runner(uuid, text, text);
create function app_private.claim_job_run(job_id uuid, run_id uuid, runner_id text, lock_id text) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.job_tokens t
       set run_id = claim_job_run.run_id, runner_id = claim_job_run.runner_id, lock_id = claim_job_run.lock_id
     where t.job_id = claim_job_run.job_id
  $$;
comment on function app_private.claim_job_run(uuid, uuid, text, text) is
  'Makes `run_id` the only run that opens the job''s context, and records the worker process (heartbeat id) and graphile-worker lock id running it.';
grant execute on function app_private.claim_job_run(uuid, uuid, text, text) to :DATABASE_AUTHENTICATOR;

create function app_private.hold_job_run(job_id uuid, run_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- The share lock makes a concurrent claim wait until this transaction ends.
  perform 1 from app_private.job_tokens t where t.job_id = hold_job_run.job_id for share;
  return not exists (
    select 1 from app_private.job_tokens t
     where t.job_id = hold_job_run.job_id and t.run_id is not null and t.run_id <> hold_job_run.run_id);
end;
$$;
comment on function app_private.hold_job_run(uuid, uuid) is
  'False when another run has claimed the job since `run_id` did; otherwise keeps new claims out until the transaction ends.';
grant execute on function app_private.hold_job_run(uuid, uuid) to :DATABASE_AUTHENTICATOR;

-- Waiting without holding a worker slot and without using up the job's attempts: the job goes back to `queued`
-- and its graphile-worker job is added again under the same key, due after `delay` (add_job leaves the running entry
-- to be completed by the run, which then returns normally). Used for transient failures (a rate limit's
-- Retry-After, an LLM outage) and for runs cut short by a worker's shutdown. The queue, priority and flags of the
-- entry are kept. False (and nothing changed) when the caller's run no longer owns the job. In app_hidden: the
-- worker calls it as the authenticated role, inside the job's context.
create function app_hidden.retry_job_later(delay interval, error_code text, error_message text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid := app_public.current_job_id();
  v_entry record;
begin
  if v_job_id is null then
    return false;
  end if;
  select t.identifier, gj.payload, q.queue_name, gj.priority, gj.max_attempts,
         array(select jsonb_object_keys(coalesce(gj.flags, '{}'::jsonb))) as flags
    into v_entry
    from graphile_worker._private_jobs gj
    join graphile_worker._private_tasks t on t.id = gj.task_id
    left join graphile_worker._private_job_queues q on q.id = gj.job_queue_id
   where gj.key = v_job_id::text;
  if not found then
    return false;
  end if;
  update app_public.jobs j
     set status = 'queued', error_code = retry_job_later.error_code, error_message = left(retry_job_later.error_message, 1000), finished_at = null
   where j.id = v_job_id and j.status in ('queued', 'running');
  if not found then
    return false;
  end if;
  perform graphile_worker.add_job(v_entry.identifier, v_entry.payload, queue_name => v_entry.queue_name,
    run_at => now() + greatest(retry_job_later.delay, interval '0'), max_attempts => v_entry.max_attempts, job_key => v_job_id::text,
    priority => v_entry.priority, flags => nullif(v_entry.flags, '{}'::text[]));
  return true;
end;
$$;
comment on function app_hidden.retry_job_later(interval, text, text) is
  'In a job''s context: puts the job back in the queue due after `delay`, its attempts untouched; false when the run no longer owns it.';
grant execute on function app_hidden.retry_job_later(interval, text, text) to :DATABASE_AUTHENTICATED;

create function app_hidden.job_failing_since() returns timestamptz
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.job_tokens t set failing_since = coalesce(t.failing_since, now())
     where t.job_id = app_public.current_job_id()
    returning t.failing_since
  $$;
comment on function app_hidden.job_failing_since() is
  'In a job''s context: when its transient failures began (now, on the first); NULL when the run no longer owns the job.';
grant execute on function app_hidden.job_failing_since() to :DATABASE_AUTHENTICATED;

-- Each worker process reports its graphile-worker lock id with its heartbeat, so a queue entry locked by an id no
-- live process reports can be told apart from one a live worker is running (see release_dead_workers).
alter table app_private.worker_heartbeats add column lock_id text check (length(lock_id) between 1 and 200);
comment on column app_private.worker_heartbeats.lock_id is 'The graphile-worker lock id (locked_by) of the process''s worker pool.';
drop function app_private.record_worker_heartbeat(text, text, int);
create function app_private.record_worker_heartbeat(worker_id text, hostname text, pid int, lock_id text default null) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
    insert into app_private.worker_heartbeats (worker_id, hostname, pid, lock_id)
    values (record_worker_heartbeat.worker_id, record_worker_heartbeat.hostname, record_worker_heartbeat.pid, record_worker_heartbeat.lock_id)
    on conflict (worker_id) do update
      set last_seen_at = now(), hostname = excluded.hostname, pid = excluded.pid,
          lock_id = coalesce(excluded.lock_id, worker_heartbeats.lock_id)
  $$;
comment on function app_private.record_worker_heartbeat(text, text, int, text) is
  'Called by each worker process every WORKER_HEARTBEAT_SECONDS: marks it alive and records its graphile-worker lock id.';
grant execute on function app_private.record_worker_heartbeat(text, text, int, text) to :DATABASE_AUTHENTICATOR;

-- A worker frees the queue entries it holds but no longer runs: on every heartbeat (an entry whose completion or
-- failure could not be recorded, e.g. during a database outage; locked at least `min_locked_seconds` ago, as one
-- just taken may not be known as running yet) and when it stops (with `running` empty and no minimum).
create function app_private.unlock_worker_jobs(lock_id text, running bigint[], min_locked_seconds int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_count int;
begin
  update graphile_worker._private_jobs gj set locked_at = null, locked_by = null
   where gj.locked_by = unlock_worker_jobs.lock_id and gj.id <> all (coalesce(unlock_worker_jobs.running, '{}'))
     and gj.locked_at <= now() - make_interval(secs => unlock_worker_jobs.min_locked_seconds);
  get diagnostics v_count = row_count;
  update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
   where q.locked_by = unlock_worker_jobs.lock_id
     and not exists (
       select 1 from graphile_worker._private_jobs gj
        where gj.job_queue_id = q.id and gj.locked_by = unlock_worker_jobs.lock_id);
  return v_count;
end;
$$;
comment on function app_private.unlock_worker_jobs(text, bigint[], int) is
  'Unlocks the graphile-worker jobs (and queues) locked by `lock_id` at least `min_locked_seconds` ago, except those `running`; returns how many jobs.';
grant execute on function app_private.unlock_worker_jobs(text, bigint[], int) to :DATABASE_AUTHENTICATOR;

-- Dead workers' queue entries are freed whatever the Quire job's status (a run that had put its job back to
-- `queued` but died before graphile-worker recorded the failure left the entry locked for four hours): the lock ids
-- recorded at job start by processes no longer reporting in, and any entry locked for longer than `max_age_seconds`
-- by a lock id no live process reports (a worker that died before its job's first write). A job on its last attempt
-- would never run again, so it fails (WORKER_LOST) rather than stay `queued` or `running`.
create or replace function app_private.release_dead_workers(max_age_seconds int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_lock_ids text[];
  v_job_ids uuid[];
  v_job_id uuid;
begin
  -- Starting from what is locked (few rows), not from every job token ever issued.
  with live as (
    select h.worker_id, h.lock_id from app_private.worker_heartbeats h
     where h.last_seen_at > now() - make_interval(secs => max_age_seconds))
  select array_agg(distinct gj.locked_by) into v_lock_ids
    from graphile_worker._private_jobs gj
   where gj.locked_by is not null
     and not exists (select 1 from live where live.lock_id = gj.locked_by)
     and not exists (select 1 from app_private.job_tokens t join live on live.worker_id = t.runner_id where t.lock_id = gj.locked_by)
     and (gj.locked_at < now() - make_interval(secs => max_age_seconds)
          or exists (select 1 from app_private.job_tokens t where t.lock_id = gj.locked_by and t.runner_id is not null));
  if v_lock_ids is null then
    return 0;
  end if;
  select array_agg(j.id) into v_job_ids
    from graphile_worker._private_jobs gj
    join app_public.jobs j on j.id::text = gj.key
   where gj.locked_by = any (v_lock_ids) and gj.attempts >= gj.max_attempts;
  -- No run owns a released job until the next one claims it: the presumed-dead one, should it still be going, is
  -- fenced off (it would otherwise complete, i.e. delete, the queue entry another worker is about to take). Tokens
  -- first: this waits for such a run's open transaction, which may itself re-queue the entry.
  update app_private.job_tokens t set runner_id = null, lock_id = null, run_id = gen_random_uuid() where t.lock_id = any (v_lock_ids);
  perform graphile_worker.force_unlock_workers(v_lock_ids);
  foreach v_job_id in array coalesce(v_job_ids, '{}') loop
    perform graphile_worker.remove_job(v_job_id::text);
    update app_public.jobs j
       set status = 'failed', finished_at = now(), error_code = 'WORKER_LOST',
           error_message = 'The worker running this job stopped, and no attempts were left.'
     where j.id = v_job_id and j.status in ('queued', 'running');
  end loop;
  return cardinality(v_lock_ids);
end;
$$;
comment on function app_private.release_dead_workers(int) is
  'Unlocks the graphile-worker jobs held by worker processes that stopped reporting in (whatever their Quire status); returns how many lock ids were released.';

-- A summary made while its document was being edited describes an older revision: it is stale from the start.
-- Set by a trigger so every writer gets it; the document row is share-locked so an edit committing at the same time
-- either is seen here or, waiting for this transaction, marks the new summary stale itself.
create function app_private.tg_summaries__stale_on_insert() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_revision int;
begin
  select d.revision into v_revision from app_public.documents d
   where d.org_id = new.org_id and d.id = new.document_id
     for share;
  new.stale := new.stale or coalesce(v_revision > new.document_revision, false);
  return new;
end;
$$;
comment on function app_private.tg_summaries__stale_on_insert() is 'Trigger: a new summary of an older revision than its document''s is stale.';
create trigger _200_stale_on_insert before insert on app_public.summaries
  for each row execute procedure app_private.tg_summaries__stale_on_insert();
