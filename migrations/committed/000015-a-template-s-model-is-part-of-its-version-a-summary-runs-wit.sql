--! Previous: sha1:7c150d89ecd77974edcfe1855b917d6a989ff328
--! Hash: sha1:6fe26f8c79ece136b0f301033dfe122fd325b34b
--! Message: A template's model is part of its version: a summary runs with the model of the version it pinned, and changing the model makes a new version

-- A template's model is part of its version: a summary runs with the model of the version it pinned when it was
-- asked for, as it runs with that version's body, and changing the model makes a new version.

alter table app_public.template_versions add column if not exists model text
  check (char_length(model) between 1 and 200 and model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$');
comment on column app_public.template_versions.model is 'The model this version asks for (of the organization''s provider); null: the organization''s.';

-- Versions that exist take their template's model as it is now (the best that is known of them).
select set_config('quire.definer', 'on', true);
update app_public.template_versions v set model = t.model
  from app_public.templates t
 where t.org_id = v.org_id and t.id = v.template_id and t.model is not null and v.model is distinct from t.model;
select set_config('quire.definer', '', true);

-- Shared by templates and global templates (which have no model): the model is read from the row as JSON.
create or replace function app_private.tg_templates__number_version() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if tg_op = 'INSERT' then
    new.version := 1;
  elsif (new.name, new.description, new.body, to_jsonb(new) ->> 'model')
        is distinct from (old.name, old.description, old.body, to_jsonb(old) ->> 'model') then
    new.version := old.version + 1;
  else
    new.version := old.version;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_templates__number_version() is 'Trigger: numbers each change of a template''s name, description, body or model.';

create or replace function app_private.tg_templates__keep_version() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'UPDATE' and new.version = old.version then
    return null;
  end if;
  if tg_table_name = 'templates' then
    insert into app_public.template_versions (org_id, template_id, version, name, body, model)
      values (new.org_id, new.id, new.version, new.name, new.body, to_jsonb(new) ->> 'model');
  else
    insert into app_public.global_template_versions (global_template_id, version, name, body)
      values (new.id, new.version, new.name, new.body);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_templates__keep_version() is 'Trigger: keeps an immutable copy of each new template version (its model included).';

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
  select d.revision, d.content, app_public.render_template(coalesce(tv.body, gv.body), d.title, start_summary_job.marker, o.name), tv.model
    into revision, content, prompt, v_template_model
    from app_public.documents d
    join app_public.organizations o on o.id = d.org_id
    left join app_public.template_versions tv on tv.org_id = d.org_id and tv.id = start_summary_job.template_version_id
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
