--! Previous: sha1:cac8bb685f07f74a37c6da114f89c2dd2b3bd67e
--! Hash: sha1:430772e087eb336d9606339f729f7eaf9d86181f
--! Message: Asking documents after an attacker's review: indexed retrieval, no passages of the trash, embeddings charged with their chunks within the allowance, usage that says whose key paid, private questions out of exports and gone with their account, cancelled streams charged, askers may cancel

-- Asking documents, after an attacker's review: retrieval that uses its indexes, passages of the trash out of
-- reach, embeddings charged with the chunks they made and only within the allowance, usage that says whose key paid
-- and prices found by model family, private questions kept out of the organization's export and gone with their
-- asker's account, a streamed answer paid for even when cancelled, and the asker (a viewer too) may cancel.

-- ==================================================================================================================
-- Retrieval: each list from its own index, fused on at most 100 ids
-- ==================================================================================================================

-- Lexemes are quoted as tsquery wants them (backslash and quote escaped), never as SQL literals.
create or replace function app_hidden.any_word_query(config regconfig, query text) returns tsquery
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select nullif(array_to_string(array(select '''' || replace(replace(w, '\', '\\'), '''', '''''') || ''':*'
                                           from unnest(tsvector_to_array(to_tsvector(config, left(query, 2000)))) as w
                                          limit 64), ' | '), '')::tsquery
  $$;

-- The text list reads the (org_id, search) GIN index, the vector list scans only embedded chunks; each keeps its
-- best 50, and only those are joined for the result.
create or replace function app_hidden.retrieve_chunks(query text, query_embedding real[] default null,
  document_ids uuid[] default null, first int default 8) returns setof app_hidden.retrieved_chunk
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    with q as (
      select app_hidden.any_word_query(app_hidden.search_config(app_public.current_org_id()), retrieve_chunks.query) as tsq
    ),
    by_text as (
      select c.id, ts_rank_cd(c.search, q.tsq, 1) as text_rank,
             row_number() over (order by ts_rank_cd(c.search, q.tsq, 1) desc, c.id) as position
        from q, app_public.document_chunks c
        join app_public.documents d on d.org_id = c.org_id and d.id = c.document_id and d.revision = c.document_revision
       where q.tsq is not null and c.org_id = app_public.current_org_id() and c.search @@ q.tsq
         and (retrieve_chunks.document_ids is null or c.document_id = any (retrieve_chunks.document_ids))
       order by text_rank desc, c.id
       limit 50
    ),
    by_vector as (
      select s.id, s.similarity, row_number() over (order by s.similarity desc, s.id) as position
        from (select c.id, app_hidden.cosine_similarity(c.embedding, retrieve_chunks.query_embedding) as similarity
                from app_public.document_chunks c
                join app_public.documents d on d.org_id = c.org_id and d.id = c.document_id and d.revision = c.document_revision
               where retrieve_chunks.query_embedding is not null and c.org_id = app_public.current_org_id()
                 and c.embedding is not null
                 and (retrieve_chunks.document_ids is null or c.document_id = any (retrieve_chunks.document_ids))) s
       where s.similarity is not null
       order by s.similarity desc, s.id
       limit 50
    ),
    fused as (
      select coalesce(t.id, v.id) as id, t.text_rank, v.similarity,
             coalesce(1.0 / (60 + t.position), 0) + coalesce(1.0 / (60 + v.position), 0) as score
        from by_text t full join by_vector v on v.id = t.id
    )
    select c.id, c.document_id, c.document_revision, d.title, c.heading, c.content, f.text_rank::real, f.similarity, f.score
      from fused f
      join app_public.document_chunks c on c.org_id = app_public.current_org_id() and c.id = f.id
      join app_public.documents d on d.org_id = c.org_id and d.id = c.document_id
     order by f.score desc, c.id
     limit greatest(1, least(retrieve_chunks.first, 50))
  $$;

-- A query longer than a question may be is refused, not answered with nothing.
create or replace function app_public.search_documents(query text) returns setof app_public.search_hit
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_config regconfig := app_hidden.search_config(app_public.current_org_id());
begin
  if char_length(search_documents.query) > 2000 then
    raise exception 'A search is at most 2000 characters long.' using errcode = 'BADIN';
  end if;
  return query
    select r.chunk_id, r.document_id, r.title, r.heading,
           ts_headline(v_config, r.content, app_hidden.any_word_query(v_config, search_documents.query),
                       'StartSel=«, StopSel=», MaxFragments=2, MaxWords=30, MinWords=8, FragmentDelimiter=" … "'),
           r.score
      from app_hidden.retrieve_chunks(search_documents.query, null, null, 50) r;
end;
$$;

-- ==================================================================================================================
-- The trash: a trashed document's passages go (nothing reads them: not search, not answers, not the chunk list),
-- and come back, cut again, with a restore.
-- ==================================================================================================================

create or replace function app_private.tg_documents__trash_chunks() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if new.trashed_at is not null then
    delete from app_public.document_chunks c where c.org_id = new.org_id and c.document_id = new.id;
  else
    perform app_private.queue_chunking(new.org_id, new.id);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_documents__trash_chunks() is 'Trigger: a trashed document''s chunks are deleted; a restored one is cut again.';

drop trigger if exists _600_trash_chunks on app_public.documents;
create trigger _600_trash_chunks after update of trashed_at on app_public.documents
  for each row when (new.trashed_at is distinct from old.trashed_at) execute procedure app_private.tg_documents__trash_chunks();

-- Whatever was trashed before this migration loses its chunks now.
select set_config('quire.definer', 'on', true);
delete from app_public.document_chunks c using app_public.documents d
 where d.org_id = c.org_id and d.id = c.document_id and d.trashed_at is not null;
select set_config('quire.definer', '', true);

-- ==================================================================================================================
-- Embeddings: only within the allowance, charged in the transaction that keeps the chunks they made
-- ==================================================================================================================

drop function if exists app_private.document_to_chunk(uuid);
create function app_private.document_to_chunk(document_id uuid,
  out org_id uuid, out revision int, out format app_public.document_format, out content text, out within_allowance boolean)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.org_id, d.revision, d.format, d.content,
           (select u.prompt_tokens + u.completion_tokens < u.token_allowance from app_private.usage_of(d.org_id) u)
      from app_public.documents d
     where d.id = document_to_chunk.document_id and d.trashed_at is null
  $$;
comment on function app_private.document_to_chunk(uuid) is
  'The chunk_document task''s read: a live document''s organization, revision, format and content, and whether its organization has tokens left this month (for embeddings).';
grant execute on function app_private.document_to_chunk(uuid) to :DATABASE_AUTHENTICATOR;

drop function if exists app_private.record_embedding_usage(uuid, text, text, int);
drop function if exists app_private.replace_document_chunks(uuid, int, jsonb, text);
drop function if exists app_private.replace_document_chunks(uuid, int, jsonb, text, text, int);
create function app_private.replace_document_chunks(document_id uuid, revision int, chunks jsonb, embedding_model text,
  embedding_provider text, embedding_tokens int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_count int;
begin
  if jsonb_typeof(replace_document_chunks.chunks) <> 'array' or jsonb_array_length(replace_document_chunks.chunks) > 2000 then
    raise exception 'chunks must be an array of at most 2000 chunks.' using errcode = 'BADIN';
  end if;
  select d.org_id into v_org_id from app_public.documents d
   where d.id = replace_document_chunks.document_id and d.revision = replace_document_chunks.revision and d.trashed_at is null
     for share;
  if not found then
    return null;
  end if;
  delete from app_public.document_chunks c where c.org_id = v_org_id and c.document_id = replace_document_chunks.document_id;
  insert into app_public.document_chunks (org_id, document_id, document_revision, ordinal, heading, content, language, embedding, embedding_model)
  select v_org_id, replace_document_chunks.document_id, replace_document_chunks.revision, (c ->> 'ordinal')::int,
         nullif(c ->> 'heading', ''), c ->> 'content', app_hidden.search_config(v_org_id),
         case when jsonb_typeof(c -> 'embedding') = 'array' then array(select jsonb_array_elements_text(c -> 'embedding')::real) end,
         case when jsonb_typeof(c -> 'embedding') = 'array' then replace_document_chunks.embedding_model end
    from jsonb_array_elements(replace_document_chunks.chunks) as c;
  get diagnostics v_count = row_count;
  if replace_document_chunks.embedding_model is not null then
    insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
    values (v_org_id, null, 'embedding', replace_document_chunks.embedding_provider, replace_document_chunks.embedding_model,
            greatest(replace_document_chunks.embedding_tokens, 0), 0);
  end if;
  return v_count;
end;
$$;
comment on function app_private.replace_document_chunks(uuid, int, jsonb, text, text, int) is
  'The chunk_document task''s write: replaces a live document''s chunks by those of `revision` while it is current, and charges their embeddings (if any) in the same transaction; null when stale, trashed or gone (nothing charged).';
grant execute on function app_private.replace_document_chunks(uuid, int, jsonb, text, text, int) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- Usage: whose key paid, and prices by model family
-- ==================================================================================================================

alter table app_public.usage_records add column if not exists own_key boolean not null default false;
comment on column app_public.usage_records.own_key is 'True when the organization''s own API key paid the provider (the deployment did not): billed apart.';

-- A price applies to its model and to the model's dated versions ("gpt-4o-mini" prices "gpt-4o-mini-2024-07-18"):
-- the exact name first, then the longest family, then the provider's *.
create or replace function app_private.tg_usage_records__cost() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  new.own_key := exists (select 1 from app_public.llm_settings s
                          where s.org_id = new.org_id and s.has_api_key and new.kind <> 'embedding'
                            and coalesce(s.provider, new.provider) = new.provider);
  select round((new.prompt_tokens * p.input_per_million + new.completion_tokens * p.output_per_million) / 1000000, 6)
    into new.cost_usd
    from app_private.llm_prices p
   where p.provider = new.provider
     and (p.model = new.model or p.model = '*' or starts_with(new.model, p.model || '-'))
   order by p.model = new.model desc, p.model = '*', char_length(p.model) desc
   limit 1;
  return new;
end;
$$;

drop function if exists app_admin.billing_report(date);
create function app_admin.billing_report(month date)
  returns table (org_id uuid, organization text, tier app_public.subscription_tier, kind text, provider text, model text,
                 own_key boolean, requests bigint, prompt_tokens bigint, completion_tokens bigint, cost_usd numeric,
                 unpriced_requests bigint)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.id, o.name, o.tier, u.kind, u.provider, u.model, u.own_key, count(*), sum(u.prompt_tokens)::bigint,
           sum(u.completion_tokens)::bigint, coalesce(sum(u.cost_usd), 0), count(*) filter (where u.cost_usd is null)
      from app_public.usage_records u
      join app_public.organizations o on o.id = u.org_id
     where u.created_at >= date_trunc('month', billing_report.month::timestamp) at time zone 'UTC'
       and u.created_at < (date_trunc('month', billing_report.month::timestamp) + interval '1 month') at time zone 'UTC'
     group by o.id, o.name, o.tier, u.kind, u.provider, u.model, u.own_key
     order by o.name, o.id, u.kind, u.provider, u.model, u.own_key
  $$;
comment on function app_admin.billing_report(date) is
  E'Usage and cost of every organization in the calendar month (UTC) of `month`, by kind and model, and whether the organization''s own key paid (own_key: not the deployment''s to bill).\nExample: \\copy (select * from app_admin.billing_report(''2026-11-01'')) to ''billing-2026-11.csv'' csv header';

-- A streamed answer or summary was read while it was written: a cancelled run that had text from the model is
-- charged what it used (estimated by the worker), once, so cancelling is never a way around the allowance.
create or replace function app_private.charge_cancelled_run(job_id uuid, token text, run_id uuid, kind text, provider text,
  model text, prompt_tokens int, completion_tokens int) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
begin
  if charge_cancelled_run.kind not in ('summary', 'answer') then
    raise exception 'Only summaries and answers are charged.' using errcode = 'BADIN';
  end if;
  select j.org_id into v_org_id
    from app_private.job_tokens t join app_public.jobs j on j.org_id = t.org_id and j.id = t.job_id
   where t.job_id = charge_cancelled_run.job_id and t.run_id = charge_cancelled_run.run_id
     and t.token_hash = sha256(convert_to(coalesce(charge_cancelled_run.token, ''), 'UTF8'))
     and j.status = 'cancelled';
  if not found then
    return false;
  end if;
  insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
  values (v_org_id, charge_cancelled_run.job_id, charge_cancelled_run.kind, charge_cancelled_run.provider,
          left(charge_cancelled_run.model, 200), greatest(charge_cancelled_run.prompt_tokens, 0),
          greatest(charge_cancelled_run.completion_tokens, 0))
  on conflict on constraint usage_records_org_id_job_id_key do nothing;
  return found;
end;
$$;
comment on function app_private.charge_cancelled_run(uuid, text, uuid, text, text, text, int, int) is
  'Charges a cancelled job''s run (with its token) for the model''s tokens it used while streaming; once per job.';
grant execute on function app_private.charge_cancelled_run(uuid, text, uuid, text, text, text, int, int) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- Settings: when the key last changed is a fact of the audited row
-- ==================================================================================================================

alter table app_public.llm_settings add column if not exists key_set_at timestamptz;
comment on column app_public.llm_settings.key_set_at is 'When the organization''s API key was last set (the key itself is never shown).';

create or replace function app_private.tg_llm_secrets__key_set() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_public.llm_settings s set key_set_at = now() where s.org_id = new.org_id and s.id = new.settings_id;
  return null;
end;
$$;
comment on function app_private.tg_llm_secrets__key_set() is 'Trigger: a new or replaced LLM key stamps llm_settings.key_set_at (so the audit log shows the change).';

drop trigger if exists _500_key_set on app_private.llm_secrets;
create trigger _500_key_set after insert or update on app_private.llm_secrets
  for each row execute procedure app_private.tg_llm_secrets__key_set();

-- ==================================================================================================================
-- Privacy: a person's questions are theirs
-- ==================================================================================================================

-- The organization's export holds what the organization shares; each person's own questions, answers and citations
-- are theirs (and chunks are cut again from the documents).
create or replace function app_hidden.export_tables() returns table (table_name text, omitted text[])
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select c.relname::text,
           array_remove(array[
             case when c.relname = 'documents' then 'search' end,
             case when c.relname in ('files', 'organization_exports') then 'storage_key' end,
             case when c.relname = 'api_keys' then 'secret_hash' end,
             case when c.relname = 'audit_events' then 'append_order' end], null)
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'app_public' and c.relkind = 'r'
       and c.relname not in ('live_events', 'document_chunks', 'questions', 'answers', 'answer_citations')
       and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
     order by c.relname
  $$;
comment on function app_hidden.export_tables() is
  'The tables an organization export holds (not chunks, nor anyone''s own questions and answers), and the columns it leaves out of each.';

-- A deleted account takes its questions, answers and citations with it.
create or replace function app_private.tg_users__forget_questions() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  delete from app_public.questions q where q.asked_by = new.id;
  return null;
end;
$$;
comment on function app_private.tg_users__forget_questions() is 'Trigger: an account deleted (users.deleted_at set) deletes the person''s questions and their answers.';

drop trigger if exists _600_forget_questions on app_public.users;
create trigger _600_forget_questions after update of deleted_at on app_public.users
  for each row when (new.deleted_at is not null and old.deleted_at is null) execute procedure app_private.tg_users__forget_questions();

-- Whoever asked may cancel their own job, a viewer allowed to ask included; anyone else's takes an admin.
create or replace function app_public.cancel_job(job_id uuid) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.lock_member_role();
  v_job app_public.jobs;
begin
  select * into v_job from app_public.jobs j
   where j.id = cancel_job.job_id and j.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such job.' using errcode = 'NTFND';
  end if;
  perform app_private.check_role(v_role, case when v_job.requested_by = app_public.current_user_id() then 'viewer' else 'admin' end::app_public.membership_role,
                                 'Only the person who asked for a job, or an admin, can cancel it.', signed_out => null);
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
