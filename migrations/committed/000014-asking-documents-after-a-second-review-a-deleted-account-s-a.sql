--! Previous: sha1:430772e087eb336d9606339f729f7eaf9d86181f
--! Hash: sha1:7c150d89ecd77974edcfe1855b917d6a989ff328
--! Message: Asking documents after a second review: a deleted account's answer jobs end, usage says whose key paid as the run began, a run finishing after a cancel is charged, embeddings of replaced revisions are charged, prices match dated versions only, key time set by setLlmSettings alone

-- Asking documents, after a second review: a deleted account's unfinished answer jobs end instead of hanging, usage
-- says whose key paid as the run began (not as the settings read when it ended), a run that finishes after its job
-- was cancelled is charged what it used, embeddings are charged even when their chunks are dropped, prices match
-- dated versions only, and the key's time is set by setLlmSettings alone (re-sealing is not a key change).

-- ==================================================================================================================
-- Whose key paid: fixed when the run starts
-- ==================================================================================================================

alter table app_private.job_tokens add column if not exists own_key boolean not null default false;
comment on column app_private.job_tokens.own_key is 'Whether the run uses its organization''s own LLM key (set by the start step), for its usage row.';

create or replace function app_private.start_summary_job(job_id uuid, token text, run_id uuid, runner_id text, lock_id text, marker text,
  out outcome text, out org_id uuid, out requested_by uuid, out document_id uuid, out template_version_id uuid,
  out global_template_version_id uuid, out revision int, out content text, out prompt text,
  out llm_provider text, out llm_model text, out llm_key_id text, out llm_nonce bytea, out llm_ciphertext bytea)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_template_model text;
  v_llm app_private.job_llm;
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
  select d.revision, d.content, app_public.render_template(coalesce(tv.body, gv.body), d.title, start_summary_job.marker, o.name), t.model
    into revision, content, prompt, v_template_model
    from app_public.documents d
    join app_public.organizations o on o.id = d.org_id
    left join app_public.template_versions tv on tv.org_id = d.org_id and tv.id = start_summary_job.template_version_id
    left join app_public.templates t on t.org_id = tv.org_id and t.id = tv.template_id
    left join app_public.global_template_versions gv on gv.id = start_summary_job.global_template_version_id
   where d.org_id = start_summary_job.org_id and d.id = start_summary_job.document_id and (tv.id is not null or gv.id is not null);
  outcome := case when found then 'started' else 'document-gone' end;
  v_llm := app_private.job_llm(start_summary_job.org_id, v_template_model);
  llm_provider := v_llm.provider;
  llm_model := v_llm.model;
  llm_key_id := v_llm.key_id;
  llm_nonce := v_llm.secret_nonce;
  llm_ciphertext := v_llm.secret_ciphertext;
  update app_private.job_tokens t set own_key = v_llm.secret_ciphertext is not null where t.job_id = start_summary_job.job_id;
end;
$$;

create or replace function app_private.start_answer_job(job_id uuid, token text, run_id uuid, runner_id text, lock_id text,
  out outcome text, out org_id uuid, out requested_by uuid, out question text, out document_ids uuid[],
  out llm_provider text, out llm_model text, out llm_key_id text, out llm_nonce bytea, out llm_ciphertext bytea)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_llm app_private.job_llm;
begin
  update app_private.job_tokens t
     set run_id = start_answer_job.run_id, runner_id = start_answer_job.runner_id, lock_id = start_answer_job.lock_id
   where t.job_id = start_answer_job.job_id
     and t.token_hash = sha256(convert_to(coalesce(start_answer_job.token, ''), 'UTF8'));
  if app_private.enter_job_run(start_answer_job.job_id, start_answer_job.token, start_answer_job.run_id) is null then
    outcome := 'gone';
    return;
  end if;
  select j.org_id into org_id from app_public.jobs j where j.id = start_answer_job.job_id;
  select q.question, q.document_ids into question, document_ids
    from app_public.questions q where q.org_id = start_answer_job.org_id and q.job_id = start_answer_job.job_id;
  -- The question went with its asker's account: the job ends cancelled, it does not run.
  if question is null then
    update app_public.jobs j set status = 'cancelled', finished_at = now()
     where j.id = start_answer_job.job_id and j.status in ('queued', 'running');
    outcome := 'gone';
    return;
  end if;
  update app_public.jobs j
     set status = 'running', attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
   where j.id = start_answer_job.job_id and j.status in ('queued', 'running')
  returning j.org_id, j.requested_by into org_id, requested_by;
  if not found then
    outcome := 'gone';
    return;
  end if;
  v_llm := app_private.job_llm(start_answer_job.org_id);
  llm_provider := v_llm.provider;
  llm_model := v_llm.model;
  llm_key_id := v_llm.key_id;
  llm_nonce := v_llm.secret_nonce;
  llm_ciphertext := v_llm.secret_ciphertext;
  update app_private.job_tokens t set own_key = v_llm.secret_ciphertext is not null where t.job_id = start_answer_job.job_id;
  outcome := 'started';
end;
$$;

-- own_key from the run's start; a price applies to its model and to its dated versions only ("gpt-4o-mini" prices
-- "gpt-4o-mini-2024-07-18" and "gpt-4o-mini-latest", not "gpt-4o-mini-tts"), else the provider's *.
create or replace function app_private.tg_usage_records__cost() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  new.own_key := coalesce((select t.own_key from app_private.job_tokens t where t.org_id = new.org_id and t.job_id = new.job_id), false);
  select round((new.prompt_tokens * p.input_per_million + new.completion_tokens * p.output_per_million) / 1000000, 6)
    into new.cost_usd
    from app_private.llm_prices p
   where p.provider = new.provider
     and (p.model = new.model or p.model = '*'
          or (starts_with(new.model, p.model || '-')
              and substr(new.model, char_length(p.model) + 2) ~ '^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}|latest)$'))
   order by p.model = new.model desc, p.model = '*'
   limit 1;
  return new;
end;
$$;

-- ==================================================================================================================
-- A run that ends after its job was cancelled is charged what it used
-- ==================================================================================================================

create or replace function app_private.finish_summary_job(job_id uuid, token text, run_id uuid, content text, provider text, model text,
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
  if app_private.charge_cancelled_run(finish_summary_job.job_id, finish_summary_job.token, finish_summary_job.run_id, 'summary',
       finish_summary_job.provider, finish_summary_job.model, finish_summary_job.prompt_tokens, finish_summary_job.completion_tokens) then
    return 'gone';
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

create or replace function app_private.finish_answer_job(job_id uuid, token text, run_id uuid, content text, provider text,
  model text, prompt_tokens int, completion_tokens int, latency_ms int, sources jsonb, citations jsonb) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job app_public.jobs;
  v_question app_public.questions;
  v_answer_id uuid;
begin
  perform 1 from app_private.job_tokens t where t.job_id = finish_answer_job.job_id for share;
  if exists (select 1 from app_private.job_tokens t
              where t.job_id = finish_answer_job.job_id and t.run_id is not null and t.run_id <> finish_answer_job.run_id) then
    return 'superseded';
  end if;
  if app_private.charge_cancelled_run(finish_answer_job.job_id, finish_answer_job.token, finish_answer_job.run_id, 'answer',
       finish_answer_job.provider, finish_answer_job.model, finish_answer_job.prompt_tokens, finish_answer_job.completion_tokens) then
    return 'gone';
  end if;
  if app_private.enter_job_run(finish_answer_job.job_id, finish_answer_job.token, finish_answer_job.run_id) is null then
    return 'gone';
  end if;
  select j.* into v_job from app_public.jobs j where j.id = finish_answer_job.job_id and j.status = 'running' for update;
  if not found then
    return 'gone';
  end if;
  select q.* into v_question from app_public.questions q where q.org_id = v_job.org_id and q.job_id = v_job.id;
  if v_question.id is null then
    return 'gone';
  end if;
  insert into app_public.answers (org_id, question_id, job_id, asked_by, content, provider, model, prompt_tokens,
                                  completion_tokens, latency_ms, sources)
  values (v_job.org_id, v_question.id, v_job.id, v_question.asked_by, finish_answer_job.content, finish_answer_job.provider,
          finish_answer_job.model, finish_answer_job.prompt_tokens, finish_answer_job.completion_tokens,
          finish_answer_job.latency_ms, finish_answer_job.sources)
  on conflict on constraint answers_org_id_job_id_key do nothing
  returning id into v_answer_id;
  if v_answer_id is not null then
    insert into app_public.answer_citations (org_id, answer_id, asked_by, ordinal, marker, document_id, document_revision, chunk_id, quote)
    select v_job.org_id, v_answer_id, v_question.asked_by, (c ->> 'ordinal')::int, (c ->> 'marker')::int, d.id,
           (c ->> 'documentRevision')::int, (c ->> 'chunkId')::uuid, c ->> 'quote'
      from jsonb_array_elements(finish_answer_job.citations) as c
      -- Only a source given to the model, of a document that still exists in the organization.
      join jsonb_array_elements(finish_answer_job.sources) as s
        on s ->> 'chunkId' = c ->> 'chunkId' and s ->> 'documentId' = c ->> 'documentId'
      join app_public.documents d on d.org_id = v_job.org_id and d.id = (c ->> 'documentId')::uuid
     limit 50;
    insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
    values (v_job.org_id, v_job.id, 'answer', finish_answer_job.provider, finish_answer_job.model,
            finish_answer_job.prompt_tokens, finish_answer_job.completion_tokens)
    on conflict on constraint usage_records_org_id_job_id_key do nothing;
  end if;
  update app_public.jobs j
     set status = 'succeeded', finished_at = now(), error_code = null, error_message = null
   where j.id = v_job.id;
  return 'succeeded';
end;
$$;

-- ==================================================================================================================
-- Embeddings of a revision that was replaced meanwhile: the provider was paid, so is the charge
-- ==================================================================================================================

create or replace function app_private.record_embedding_usage(org_id uuid, provider text, model text, prompt_tokens int) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
    values (record_embedding_usage.org_id, null, 'embedding', record_embedding_usage.provider, left(record_embedding_usage.model, 200),
            greatest(record_embedding_usage.prompt_tokens, 0), 0)
  $$;
comment on function app_private.record_embedding_usage(uuid, text, text, int) is
  'Charges an organization for embeddings whose chunks were not kept (the document changed meanwhile).';
grant execute on function app_private.record_embedding_usage(uuid, text, text, int) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- The key's time: set by setLlmSettings alone
-- ==================================================================================================================

drop trigger if exists _500_key_set on app_private.llm_secrets;
drop function if exists app_private.tg_llm_secrets__key_set();

create or replace function app_hidden.set_llm_settings(provider text, model text, keep_key boolean,
  key_id text, secret_nonce bytea, secret_ciphertext bytea) returns app_public.llm_settings
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_old app_public.llm_settings;
  v_settings app_public.llm_settings;
  v_keep boolean;
begin
  perform app_private.require_role('admin', 'Only admins can change the organization''s language model.');
  if set_llm_settings.provider is not null and set_llm_settings.provider not in ('extractive', 'openai', 'anthropic') then
    raise exception 'The provider must be extractive, openai, anthropic or none (the deployment''s).' using errcode = 'BADIN';
  end if;
  if set_llm_settings.model is not null and (char_length(set_llm_settings.model) not between 1 and 200
       or set_llm_settings.model !~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$') then
    raise exception 'The model name is not valid.' using errcode = 'BADIN';
  end if;
  select * into v_old from app_public.llm_settings s where s.org_id = v_org_id for update;
  v_keep := set_llm_settings.keep_key and set_llm_settings.secret_ciphertext is null
            and v_old.has_api_key and v_old.provider is not distinct from set_llm_settings.provider;
  if set_llm_settings.keep_key and set_llm_settings.secret_ciphertext is null and not coalesce(v_keep, false) then
    raise exception 'There is no stored API key for this provider to keep: give one.' using errcode = 'BADIN';
  end if;
  if set_llm_settings.provider = 'anthropic' and set_llm_settings.secret_ciphertext is null and not coalesce(v_keep, false) then
    raise exception 'The anthropic provider needs an API key.' using errcode = 'BADIN';
  end if;
  insert into app_public.llm_settings as s (org_id, provider, model, has_api_key)
  values (v_org_id, set_llm_settings.provider, set_llm_settings.model,
          set_llm_settings.secret_ciphertext is not null or coalesce(v_keep, false))
  on conflict on constraint llm_settings_org_id_key do update
    set provider = excluded.provider, model = excluded.model, has_api_key = excluded.has_api_key,
        updated_by = app_public.current_user_id(),
        key_set_at = case when set_llm_settings.secret_ciphertext is not null then now()
                          when excluded.has_api_key then s.key_set_at end
  returning * into v_settings;
  if set_llm_settings.secret_ciphertext is not null and v_old.id is null then
    update app_public.llm_settings s set key_set_at = now() where s.org_id = v_org_id returning * into v_settings;
  end if;
  if set_llm_settings.secret_ciphertext is not null then
    insert into app_private.llm_secrets as x (org_id, settings_id, key_id, secret_nonce, secret_ciphertext)
    values (v_org_id, v_settings.id, set_llm_settings.key_id, set_llm_settings.secret_nonce, set_llm_settings.secret_ciphertext)
    on conflict on constraint llm_secrets_pkey do update
      set key_id = excluded.key_id, secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext;
  elsif not coalesce(v_keep, false) then
    delete from app_private.llm_secrets x where x.org_id = v_org_id and x.settings_id = v_settings.id;
  end if;
  return v_settings;
end;
$$;

-- ==================================================================================================================
-- A deleted account: its unfinished answer jobs end with its questions
-- ==================================================================================================================

create or replace function app_private.tg_users__forget_questions() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid;
begin
  for v_job_id in
    update app_public.jobs j set status = 'cancelled', finished_at = now()
      from app_public.questions q
     where q.asked_by = new.id and j.org_id = q.org_id and j.id = q.job_id and j.status in ('queued', 'running')
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
  delete from app_public.questions q where q.asked_by = new.id;
  return null;
end;
$$;
