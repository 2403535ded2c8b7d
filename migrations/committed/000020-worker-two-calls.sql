--! Previous: sha1:14f126c8221cae9b54c52669e1c18558d65c69d2
--! Hash: sha1:7ff75912c89a1e89240592ebe91b806c46fe52f2
--! Message: worker two calls

-- A summary job in two database calls (issue 12). The worker used to open two transactions of several round trips
-- each (claim, hold, settings, mark running, read; then hold, settings, lock, summary, usage, success). Each step
-- is now one security definer function, called as one statement (one round trip, one commit). Both take on the
-- job's context first (its id, token and run as transaction-local settings, exactly what the worker used to set),
-- so app_public.current_job_id() verifies the token once through app_hidden.enter_context and every trigger (audit
-- log, live events) sees the job's organization and requester as before. Both work only on that job, by its id,
-- after that check; the fencing is the same: a run claims the job when it starts, and its finish changes nothing
-- once another run has claimed it.

-- The job's input settings for the rest of the transaction; the job's id when they open its context, else NULL.
create function app_private.enter_job_run(job_id uuid, token text, run_id uuid) returns uuid
  language sql volatile
  set search_path = pg_catalog, pg_temp
  as $$
    select case when set_config('quire.job_id', enter_job_run.job_id::text, true) is not null
                 and set_config('quire.job_token', enter_job_run.token, true) is not null
                 and set_config('quire.job_run', enter_job_run.run_id::text, true) is not null
           then app_public.current_job_id() end
  $$;
comment on function app_private.enter_job_run(uuid, text, uuid) is
  'Sets a run''s job settings (quire.job_id, quire.job_token, quire.job_run) for this transaction; the job id when they open its context, else NULL.';

-- Start: claim the run (only with the job's token), mark the job running, and read the document and the rendered
-- prompt (with `marker` where the content goes). outcome: started; gone (the token opens nothing: the job was
-- cancelled, finished, or is not this token's); document-gone (the document or template no longer exists).
create function app_private.start_summary_job(job_id uuid, token text, run_id uuid, runner_id text, lock_id text, marker text,
  out outcome text, out org_id uuid, out requested_by uuid, out document_id uuid, out template_version_id uuid,
  out global_template_version_id uuid, out revision int, out content text, out prompt text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- The claim waits for any other run's open transaction on the job (its row lock), then keeps the job this run's.
  update app_private.job_tokens t
     set run_id = start_summary_job.run_id, runner_id = start_summary_job.runner_id, lock_id = start_summary_job.lock_id
   where t.job_id = start_summary_job.job_id
     and t.token_hash = sha256(convert_to(coalesce(start_summary_job.token, ''), 'UTF8'));
  if app_private.enter_job_run(start_summary_job.job_id, start_summary_job.token, start_summary_job.run_id) is null then
    outcome := 'gone';
    return;
  end if;
  update app_public.jobs j
     set status = 'running', attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
   where j.id = start_summary_job.job_id and j.status in ('queued', 'running')
  returning j.org_id, j.requested_by, j.document_id, j.template_version_id, j.global_template_version_id
    into org_id, requested_by, document_id, template_version_id, global_template_version_id;
  if not found then
    outcome := 'gone';
    return;
  end if;
  select d.revision, d.content, app_public.render_template(coalesce(tv.body, gv.body), d.title, start_summary_job.marker, o.name)
    into revision, content, prompt
    from app_public.documents d
    join app_public.organizations o on o.id = d.org_id
    left join app_public.template_versions tv on tv.org_id = d.org_id and tv.id = start_summary_job.template_version_id
    left join app_public.global_template_versions gv on gv.id = start_summary_job.global_template_version_id
   where d.org_id = start_summary_job.org_id and d.id = start_summary_job.document_id and (tv.id is not null or gv.id is not null);
  outcome := case when found then 'started' else 'document-gone' end;
end;
$$;
comment on function app_private.start_summary_job(uuid, text, uuid, text, text, text) is
  'A summary run''s first call: claims the job for `run_id` (with its token), marks it running and returns its document and rendered prompt; outcome started, gone or document-gone.';
grant execute on function app_private.start_summary_job(uuid, text, uuid, text, text, text) to :DATABASE_AUTHENTICATOR;

-- Finish: write the summary, its usage row and the job's success together, only while this run owns the job and
-- it is still running. At-least-once delivery meets the unique job_id of summaries and usage_records, so there is
-- never a second summary or charge. outcome: succeeded; superseded (another run claimed the job: nothing
-- changed); gone (cancelled or finished meanwhile: the result is dropped).
create function app_private.finish_summary_job(job_id uuid, token text, run_id uuid, content text, provider text, model text,
  prompt_tokens int, completion_tokens int, latency_ms int, document_revision int) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job app_public.jobs;
  v_summary_id uuid;
begin
  -- The share lock keeps a new claim out until this transaction ends.
  perform 1 from app_private.job_tokens t where t.job_id = finish_summary_job.job_id for share;
  if exists (select 1 from app_private.job_tokens t
              where t.job_id = finish_summary_job.job_id and t.run_id is not null and t.run_id <> finish_summary_job.run_id) then
    return 'superseded';
  end if;
  if app_private.enter_job_run(finish_summary_job.job_id, finish_summary_job.token, finish_summary_job.run_id) is null then
    return 'gone';
  end if;
  select j.* into v_job from app_public.jobs j where j.id = finish_summary_job.job_id and j.status = 'running' for update;
  if not found then
    return 'gone';
  end if;
  insert into app_public.summaries (org_id, document_id, job_id, template_version_id, global_template_version_id, content,
                                    provider, model, prompt_tokens, completion_tokens, latency_ms, document_revision)
  values (v_job.org_id, v_job.document_id, v_job.id, v_job.template_version_id, v_job.global_template_version_id,
          finish_summary_job.content, finish_summary_job.provider, finish_summary_job.model, finish_summary_job.prompt_tokens,
          finish_summary_job.completion_tokens, finish_summary_job.latency_ms, finish_summary_job.document_revision)
  on conflict on constraint summaries_org_id_job_id_key do nothing
  returning id into v_summary_id;
  if v_summary_id is not null then
    insert into app_public.usage_records (org_id, job_id, summary_id, provider, model, prompt_tokens, completion_tokens)
    values (v_job.org_id, v_job.id, v_summary_id, finish_summary_job.provider, finish_summary_job.model,
            finish_summary_job.prompt_tokens, finish_summary_job.completion_tokens)
    on conflict on constraint usage_records_org_id_job_id_key do nothing;
  end if;
  update app_public.jobs j
     set status = 'succeeded', finished_at = now(), error_code = null, error_message = null, summary_id = coalesce(v_summary_id, j.summary_id)
   where j.id = v_job.id;
  return 'succeeded';
end;
$$;
comment on function app_private.finish_summary_job(uuid, text, uuid, text, text, text, int, int, int, int) is
  'A summary run''s last call: writes the summary, its usage and the job''s success while the run owns the running job; succeeded, superseded or gone.';
grant execute on function app_private.finish_summary_job(uuid, text, uuid, text, text, text, int, int, int, int) to :DATABASE_AUTHENTICATOR;
