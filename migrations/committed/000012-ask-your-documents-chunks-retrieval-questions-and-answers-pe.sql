--! Previous: sha1:e99647884d483af29bbd82417fbae78d6dd10d2b
--! Hash: sha1:cac8bb685f07f74a37c6da114f89c2dd2b3bd67e
--! Message: Ask your documents: chunks, retrieval, questions and answers, per-organization LLM settings, prices and costs

-- Ask your documents: retrieval chunks, questions and answers with citations, per-organization LLM settings, prices
-- and costs (issue 16). Retrieval runs under the caller's row-level security like every other read, so an answer can
-- never draw on, or cite, another organization's text.

-- ==================================================================================================================
-- Settings an organization chooses for retrieval and questions
-- ==================================================================================================================

-- Jobs that answer a question. Only plpgsql bodies name the new value: it cannot be used in the transaction that
-- adds it.
alter type app_public.job_kind add value if not exists 'answer';

-- searchLanguage picks the text-search configuration of the organization's chunks and queries (a fixed list, so
-- the cast to regconfig never fails); viewersMayAsk lets viewers ask questions.
create or replace function app_private.valid_org_settings(settings jsonb) returns boolean
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select jsonb_typeof(settings) = 'object'
      and not exists (
        select 1 from jsonb_each(settings) as s(key, value)
        where not (
          (s.key in ('timezone', 'locale', 'summaryLanguage') and jsonb_typeof(s.value) = 'string'
            and char_length(s.value #>> '{}') between 1 and 64)
          or (s.key = 'defaultTemplateId' and jsonb_typeof(s.value) in ('string', 'null'))
          or (s.key in ('trashRetentionDays', 'jobRetentionDays', 'syncRunRetentionDays') and jsonb_typeof(s.value) = 'number'
            and (s.value #>> '{}') ~ '^[0-9]{1,4}$' and (s.value #>> '{}')::int between 1 and 3650)
          or (s.key = 'searchLanguage' and jsonb_typeof(s.value) = 'string'
            and (s.value #>> '{}') in ('simple', 'danish', 'dutch', 'english', 'finnish', 'french', 'german', 'hungarian',
                                       'italian', 'norwegian', 'portuguese', 'romanian', 'russian', 'spanish', 'swedish', 'turkish'))
          or (s.key = 'viewersMayAsk' and jsonb_typeof(s.value) = 'boolean')
        )
      )
  $$;

-- The text-search configuration of an organization's chunks: its searchLanguage, else simple (no stemming, no
-- stop-words: right for any language, best for none).
create or replace function app_hidden.search_config(org_id uuid) returns regconfig
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce((select (o.settings ->> 'searchLanguage')::regconfig from app_public.organizations o where o.id = search_config.org_id),
                    'simple'::regconfig)
  $$;
comment on function app_hidden.search_config(uuid) is 'The organization''s text-search configuration (settings.searchLanguage, default simple).';
grant execute on function app_hidden.search_config(uuid) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- Chunks: the retrieval unit
--
-- A document is split (by the chunk_document task) into chunks by headings and paragraphs, with overlap, each
-- small enough to quote to a model. Chunks belong to one revision: an edit deletes the old ones in its own
-- transaction and queues a new split, so no retrieval ever sees text the document no longer has.
-- ==================================================================================================================

create table if not exists app_public.document_chunks (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  document_id uuid not null,
  document_revision int not null check (document_revision >= 1),
  ordinal int not null check (ordinal between 0 and 9999),
  heading text check (char_length(heading) between 1 and 1000),
  content text not null check (char_length(content) between 1 and 8000),
  language regconfig not null default 'simple',
  search tsvector generated always as (
    setweight(to_tsvector(language, coalesce(heading, '')), 'A') || setweight(to_tsvector(language, content), 'B')
  ) stored,
  embedding real[] check (cardinality(embedding) between 1 and 4096),
  embedding_model text check (char_length(embedding_model) between 1 and 200),
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, document_id, document_revision, ordinal),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete cascade,
  check ((embedding is null) = (embedding_model is null))
);

create index if not exists document_chunks_id_idx on app_public.document_chunks (id);
create index if not exists document_chunks_org_id_search_idx on app_public.document_chunks using gin (org_id, search);

comment on table app_public.document_chunks is
  E'@primaryKey id\n@behavior -insert -update -delete\nA passage of a document as retrieval sees it: split by headings and paragraphs, with overlap; refreshed by the worker whenever the content changes. Read-only.';
comment on constraint document_chunks_pkey on app_public.document_chunks is '@behavior -single -update -delete';
comment on constraint document_chunks_org_id_document_id_fkey on app_public.document_chunks is E'@fieldName document\n@foreignFieldName chunks';
comment on column app_public.document_chunks.document_revision is 'The revision of the document this chunk was cut from (always the current one).';
comment on column app_public.document_chunks.heading is 'The headings above the passage, outermost first, joined by " › "; null before the first heading.';
comment on column app_public.document_chunks.language is E'@behavior -*\nThe text-search configuration (the organization''s searchLanguage when cut).';
comment on column app_public.document_chunks.search is E'@behavior -*\nFull-text vector over heading (weight A) and content (B).';
comment on column app_public.document_chunks.embedding is E'@behavior -*\nThe embedding of heading and content, when an embedding provider is configured.';
comment on column app_public.document_chunks.embedding_model is 'The model that made the embedding; null without one.';

alter table app_public.document_chunks enable row level security;
alter table app_public.document_chunks force row level security;

drop policy if exists as_definer on app_public.document_chunks;
create policy as_definer on app_public.document_chunks to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- Chunks of a trashed document stay until it is purged (a restore needs no new split); reads that matter (search,
-- retrieval) join the documents, whose policy hides the trash.
drop policy if exists select_own_org on app_public.document_chunks;
create policy select_own_org on app_public.document_chunks for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

grant select on app_public.document_chunks to :DATABASE_AUTHENTICATED;

-- A new document, or a new revision, is split again. Debounced: the job key replaces a pending split, due two
-- seconds after the last edit, so typing does not split on every save. Behind every organization's own jobs in the
-- queue (priority), so a large import's splits never delay anyone's summary.
create or replace function app_private.queue_chunking(org_id uuid, document_id uuid) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('chunk_document', json_build_object('documentId', queue_chunking.document_id),
    job_key => 'chunk:' || queue_chunking.document_id::text, run_at => now() + interval '2 seconds', max_attempts => 5,
    priority => 1001);
end;
$$;
comment on function app_private.queue_chunking(uuid, uuid) is 'Queues (or pushes back) the split of a document into chunks.';

create or replace function app_private.tg_documents__chunk() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'UPDATE' then
    delete from app_public.document_chunks c
     where c.org_id = new.org_id and c.document_id = new.id and c.document_revision < new.revision;
  end if;
  perform app_private.queue_chunking(new.org_id, new.id);
  return null;
end;
$$;
comment on function app_private.tg_documents__chunk() is
  'Trigger (after insert, or update of the revision, on documents): drops the chunks of older revisions and queues a new split.';

drop trigger if exists _600_chunk_new on app_public.documents;
create trigger _600_chunk_new after insert on app_public.documents
  for each row execute procedure app_private.tg_documents__chunk();
drop trigger if exists _600_chunk_edited on app_public.documents;
create trigger _600_chunk_edited after update of content on app_public.documents
  for each row when (new.revision is distinct from old.revision) execute procedure app_private.tg_documents__chunk();

-- A new searchLanguage applies to the chunks already cut (their vectors are computed again).
create or replace function app_private.tg_organizations__search_language() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  update app_public.document_chunks c set language = app_hidden.search_config(new.id)
   where c.org_id = new.id and c.language is distinct from app_hidden.search_config(new.id);
  return null;
end;
$$;
comment on function app_private.tg_organizations__search_language() is 'Trigger: recomputes the chunks'' vectors when settings.searchLanguage changes.';

drop trigger if exists _600_search_language on app_public.organizations;
create trigger _600_search_language after update of settings on app_public.organizations
  for each row when (new.settings ->> 'searchLanguage' is distinct from old.settings ->> 'searchLanguage')
  execute procedure app_private.tg_organizations__search_language();

-- What the chunk_document task reads: the document's current text, as the owner (the task is the deployment's, not
-- one job's). gone: the document no longer exists.
create or replace function app_private.document_to_chunk(document_id uuid,
  out org_id uuid, out revision int, out format app_public.document_format, out content text)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.org_id, d.revision, d.format, d.content from app_public.documents d where d.id = document_to_chunk.document_id
  $$;
comment on function app_private.document_to_chunk(uuid) is 'The chunk_document task''s read: a document''s organization, revision, format and content.';
grant execute on function app_private.document_to_chunk(uuid) to :DATABASE_AUTHENTICATOR;

-- The task's write: the chunks of `revision`, only if it is still the document's revision (checked under a share
-- lock, so an edit committing meanwhile waits and then drops them itself). chunks: [{ordinal, heading, content,
-- embedding?}], at most 2000. Returns the number written, or null when the revision is stale or the document gone.
create or replace function app_private.replace_document_chunks(document_id uuid, revision int, chunks jsonb, embedding_model text)
  returns int
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
   where d.id = replace_document_chunks.document_id and d.revision = replace_document_chunks.revision
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
  return v_count;
end;
$$;
comment on function app_private.replace_document_chunks(uuid, int, jsonb, text) is
  'The chunk_document task''s write: replaces a document''s chunks by those of `revision` while it is current; null when stale or gone.';
grant execute on function app_private.replace_document_chunks(uuid, int, jsonb, text) to :DATABASE_AUTHENTICATOR;

-- Documents that existed before chunks did are split once, when the worker schema is there (a fresh database gets
-- its documents later, each through the trigger).
do $$
declare
  v_document record;
begin
  if to_regnamespace('graphile_worker') is not null then
    for v_document in select d.org_id, d.id from app_public.documents d loop
      perform app_private.queue_chunking(v_document.org_id, v_document.id);
    end loop;
  end if;
end;
$$;

-- ==================================================================================================================
-- Retrieval
--
-- Ranked full-text search over chunks, and, where chunks have embeddings, vector similarity fused with it by
-- reciprocal rank fusion (each list contributes 1 / (60 + rank)). Similarity is computed exactly in SQL over real[]
-- (the embedded default and CI have no pgvector); it scans the organization's embedded chunks, which is what an
-- organization of documentation pages can afford. Both run as the caller (security invoker): RLS decides what is
-- searched, and trashed documents are out of it through the documents' policy.
-- ==================================================================================================================

-- Cosine similarity of two vectors of the same length (null otherwise, or when either has no length).
create or replace function app_hidden.cosine_similarity(a real[], b real[]) returns double precision
  language sql immutable parallel safe strict
  set search_path = pg_catalog, pg_temp
  as $$
    select case when cardinality(a) = cardinality(b) and cardinality(a) > 0 then
      (select sum(x * y) / nullif(sqrt(sum(x * x)) * sqrt(sum(y * y)), 0)
         from unnest(a, b) as v(x, y))
    end
  $$;
comment on function app_hidden.cosine_similarity(real[], real[]) is 'Cosine similarity of two equally long vectors; null when lengths differ.';
grant execute on function app_hidden.cosine_similarity(real[], real[]) to :DATABASE_AUTHENTICATED;

-- Any of the query's words, as a tsquery in `config`: a question's words are matched one by one (a chunk with more
-- of them ranks higher), not all at once as a search box does.
create or replace function app_hidden.any_word_query(config regconfig, query text) returns tsquery
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select nullif(array_to_string(array(select quote_literal(w) || ':*'
                                           from unnest(tsvector_to_array(to_tsvector(config, left(query, 2000)))) as w
                                          limit 64), ' | '), '')::tsquery
  $$;
comment on function app_hidden.any_word_query(regconfig, text) is 'A tsquery matching any of the (normalized) words of `query`, at most 64, as prefixes.';
grant execute on function app_hidden.any_word_query(regconfig, text) to :DATABASE_AUTHENTICATED;

drop type if exists app_hidden.retrieved_chunk cascade;
create type app_hidden.retrieved_chunk as (
  chunk_id uuid,
  document_id uuid,
  document_revision int,
  title text,
  heading text,
  content text,
  text_rank real,
  similarity double precision,
  score double precision
);

-- The best `first` chunks for `query` (and `query_embedding`, when given), optionally only of `document_ids`.
create or replace function app_hidden.retrieve_chunks(query text, query_embedding real[] default null,
  document_ids uuid[] default null, first int default 8) returns setof app_hidden.retrieved_chunk
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    with q as (
      select app_hidden.any_word_query(app_hidden.search_config(app_public.current_org_id()), retrieve_chunks.query) as tsq
    ),
    candidates as (
      select c.id, c.document_id, c.document_revision, d.title, c.heading, c.content, c.search, c.embedding
        from app_public.document_chunks c
        join app_public.documents d on d.org_id = c.org_id and d.id = c.document_id and d.revision = c.document_revision
       where c.org_id = app_public.current_org_id()
         and (retrieve_chunks.document_ids is null or c.document_id = any (retrieve_chunks.document_ids))
    ),
    by_text as (
      select c.id, ts_rank_cd(c.search, q.tsq, 1) as text_rank,
             row_number() over (order by ts_rank_cd(c.search, q.tsq, 1) desc, c.id) as position
        from candidates c, q
       where q.tsq is not null and c.search @@ q.tsq
       order by text_rank desc, c.id
       limit 50
    ),
    by_vector as (
      select c.id, s.similarity, row_number() over (order by s.similarity desc, c.id) as position
        from candidates c
       cross join lateral (select app_hidden.cosine_similarity(c.embedding, retrieve_chunks.query_embedding) as similarity) s
       where retrieve_chunks.query_embedding is not null and s.similarity is not null
       order by s.similarity desc, c.id
       limit 50
    )
    select c.id, c.document_id, c.document_revision, c.title, c.heading, c.content, t.text_rank::real, v.similarity,
           coalesce(1.0 / (60 + t.position), 0) + coalesce(1.0 / (60 + v.position), 0) as score
      from candidates c
      left join by_text t on t.id = c.id
      left join by_vector v on v.id = c.id
     where t.id is not null or v.id is not null
     order by score desc, c.id
     limit greatest(1, least(retrieve_chunks.first, 50))
  $$;
comment on function app_hidden.retrieve_chunks(text, real[], uuid[], int) is
  'Retrieval for answers and search: the best chunks (at most 50) by full-text rank fused with vector similarity (reciprocal rank fusion), under the caller''s RLS.';
grant execute on function app_hidden.retrieve_chunks(text, real[], uuid[], int) to :DATABASE_AUTHENTICATED;

drop type if exists app_public.search_hit cascade;
create type app_public.search_hit as (
  chunk_id uuid,
  document_id uuid,
  title text,
  heading text,
  highlight text,
  score double precision
);
comment on type app_public.search_hit is 'A passage that matches a search: its document, heading, an excerpt with the matching words between « and », and its score.';
comment on column app_public.search_hit.highlight is 'Up to two fragments of the passage, the matching words marked «like this» (plain text: no HTML).';

-- The search box over passages: full-text ranked (no embeddings for a typed query: the API has no model to embed
-- it), the best 50 at most; `first` of the connection takes fewer.
drop function if exists app_public.search_documents(text, int);
create or replace function app_public.search_documents(query text) returns setof app_public.search_hit
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select r.chunk_id, r.document_id, r.title, r.heading,
           ts_headline(app_hidden.search_config(app_public.current_org_id()), r.content,
                       app_hidden.any_word_query(app_hidden.search_config(app_public.current_org_id()), search_documents.query),
                       'StartSel=«, StopSel=», MaxFragments=2, MaxWords=30, MinWords=8, FragmentDelimiter=" … "'),
           r.score
      from app_hidden.retrieve_chunks(search_documents.query, null, null, 50) r
     where char_length(search_documents.query) <= 2000
  $$;
comment on function app_public.search_documents(text) is
  E'The passages of the organization''s documents that best match `query` (any of its words, at most 2000 characters; title and heading matches rank higher), best first, at most 50. Trashed documents are never searched.';
grant execute on function app_public.search_documents(text) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- Per-organization LLM settings
--
-- An organization may use its own provider account: provider, model and API key, the key sealed by the server
-- (libsodium, SEALING_KEYS) into app_private.llm_secrets and never readable back. Without a row, the deployment's
-- LLM_* configuration applies. Templates may pin a model of the organization's provider.
-- ==================================================================================================================

create table if not exists app_public.llm_settings (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  provider text check (provider in ('extractive', 'openai', 'anthropic')),
  model text check (char_length(model) between 1 and 200 and model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$'),
  has_api_key boolean not null default false,
  updated_by uuid default app_public.current_user_id() references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id)
);

create index if not exists llm_settings_id_idx on app_public.llm_settings (id);
create index if not exists llm_settings_org_id_updated_by_idx on app_public.llm_settings (org_id, updated_by);

comment on table app_public.llm_settings is
  E'@primaryKey id\n@behavior -insert -update -delete\nThe organization''s own language model: provider, model and whether it has its own API key (sealed, never shown). Without one, the deployment''s model is used. Set with setLlmSettings (admins).';
comment on constraint llm_settings_pkey on app_public.llm_settings is '@behavior -single -update -delete';
comment on constraint llm_settings_updated_by_fkey on app_public.llm_settings is E'@fieldName updater\n@foreignFieldName llmSettingsUpdated';
comment on column app_public.llm_settings.provider is 'extractive, openai or anthropic; null: the deployment''s provider (with this organization''s model or key).';
comment on column app_public.llm_settings.model is 'Null: the provider''s default model.';

drop trigger if exists _100_timestamps on app_public.llm_settings;
create trigger _100_timestamps before insert or update on app_public.llm_settings
  for each row execute procedure app_private.tg__timestamps();
drop trigger if exists _900_audit on app_public.llm_settings;
create trigger _900_audit after insert or update or delete on app_public.llm_settings
  for each row execute procedure app_private.tg__audit();

alter table app_public.llm_settings enable row level security;
alter table app_public.llm_settings force row level security;

drop policy if exists as_definer on app_public.llm_settings;
create policy as_definer on app_public.llm_settings to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');
drop policy if exists select_own_org on app_public.llm_settings;
create policy select_own_org on app_public.llm_settings for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id());

grant select on app_public.llm_settings to :DATABASE_AUTHENTICATED;

create table if not exists app_private.llm_secrets (
  org_id uuid not null,
  settings_id uuid not null,
  key_id text not null,
  secret_nonce bytea not null,
  secret_ciphertext bytea not null,
  primary key (org_id, settings_id),
  foreign key (org_id, settings_id) references app_public.llm_settings (org_id, id) on delete cascade
);

comment on table app_private.llm_secrets is 'The organization''s LLM API key, sealed under SEALING_KEYS key key_id for its organization.';

alter table app_private.llm_secrets enable row level security;
alter table app_private.llm_secrets force row level security;

drop policy if exists as_definer on app_private.llm_secrets;
create policy as_definer on app_private.llm_secrets to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- Sets the organization's model (admins; the server seals the key first). key: given (a new sealed key), kept
-- (keep_key: the stored one stays, when the provider does not change), or none.
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
        updated_by = app_public.current_user_id()
  returning * into v_settings;
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
comment on function app_hidden.set_llm_settings(text, text, boolean, text, bytea, bytea) is
  'setLlmSettings'' write (the server seals the key first): admins set the organization''s provider, model and key.';
grant execute on function app_hidden.set_llm_settings(text, text, boolean, text, bytea, bytea) to :DATABASE_AUTHENTICATED;

create or replace function app_public.clear_llm_settings() returns app_public.llm_settings
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_settings app_public.llm_settings;
begin
  perform app_private.require_role('admin', 'Only admins can change the organization''s language model.');
  delete from app_public.llm_settings s where s.org_id = app_public.current_org_id() returning * into v_settings;
  return v_settings;
end;
$$;
comment on function app_public.clear_llm_settings() is
  E'@resultFieldName llmSettings\nGoes back to the deployment''s language model, forgetting the organization''s own provider, model and key (admins). Returns what was removed.';
grant execute on function app_public.clear_llm_settings() to :DATABASE_AUTHENTICATED;

-- A template may pin a model of the organization's provider (e.g. a larger one for long reports).
alter table app_public.templates add column if not exists model text
  check (char_length(model) between 1 and 200 and model ~ '^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$');
comment on column app_public.templates.model is 'The model summaries with this template use, of the organization''s provider; null: the organization''s model.';
grant insert (model), update (model) on app_public.templates to :DATABASE_AUTHENTICATED;

-- Re-sealing with the current key covers the organization's LLM keys too (kind llm, owner the organization).
create or replace function app_private.person_and_org_secrets_to_reseal(current_key_id text, batch int)
  returns table (kind text, owner_id uuid, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    (select 'totp', f.user_id, f.key_id, f.secret_nonce, f.secret_ciphertext
       from app_private.user_mfa f where f.key_id <> person_and_org_secrets_to_reseal.current_key_id
      order by f.user_id limit batch)
    union all
    (select 'oidc', s.org_id, s.key_id, s.secret_nonce, s.secret_ciphertext
       from app_private.sso_secrets s where s.key_id <> person_and_org_secrets_to_reseal.current_key_id
      order by s.org_id limit batch)
    union all
    (select 'llm', x.org_id, x.key_id, x.secret_nonce, x.secret_ciphertext
       from app_private.llm_secrets x where x.key_id <> person_and_org_secrets_to_reseal.current_key_id
      order by x.org_id limit batch)
  $$;

create or replace function app_private.reseal_person_or_org_secret(kind text, owner_id uuid, old_key_id text, old_nonce bytea, key_id text, secret_nonce bytea, secret_ciphertext bytea)
  returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  -- Only the very sealing that was read (key and nonce): one replaced meanwhile was sealed with the current key.
  if reseal_person_or_org_secret.kind = 'totp' then
    update app_private.user_mfa f
       set key_id = reseal_person_or_org_secret.key_id, secret_nonce = reseal_person_or_org_secret.secret_nonce,
           secret_ciphertext = reseal_person_or_org_secret.secret_ciphertext
     where f.user_id = reseal_person_or_org_secret.owner_id and f.key_id = reseal_person_or_org_secret.old_key_id
       and f.secret_nonce = reseal_person_or_org_secret.old_nonce;
  elsif reseal_person_or_org_secret.kind = 'oidc' then
    update app_private.sso_secrets s
       set key_id = reseal_person_or_org_secret.key_id, secret_nonce = reseal_person_or_org_secret.secret_nonce,
           secret_ciphertext = reseal_person_or_org_secret.secret_ciphertext
     where s.org_id = reseal_person_or_org_secret.owner_id and s.key_id = reseal_person_or_org_secret.old_key_id
       and s.secret_nonce = reseal_person_or_org_secret.old_nonce;
  elsif reseal_person_or_org_secret.kind = 'llm' then
    update app_private.llm_secrets x
       set key_id = reseal_person_or_org_secret.key_id, secret_nonce = reseal_person_or_org_secret.secret_nonce,
           secret_ciphertext = reseal_person_or_org_secret.secret_ciphertext
     where x.org_id = reseal_person_or_org_secret.owner_id and x.key_id = reseal_person_or_org_secret.old_key_id
       and x.secret_nonce = reseal_person_or_org_secret.old_nonce;
  else
    raise exception 'Unknown secret kind.' using errcode = 'BADIN';
  end if;
  return found;
end;
$$;

-- The model a job runs with: the organization's settings (and its sealed key), the template's pinned model over the
-- organization's. Null provider: the deployment's configuration.
drop type if exists app_private.job_llm cascade;
create type app_private.job_llm as (provider text, model text, key_id text, secret_nonce bytea, secret_ciphertext bytea);

create or replace function app_private.job_llm(org_id uuid, template_model text default null) returns app_private.job_llm
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select s.provider, coalesce(job_llm.template_model, s.model), x.key_id, x.secret_nonce, x.secret_ciphertext
      from (select 1) one
      left join app_public.llm_settings s on s.org_id = job_llm.org_id
      left join app_private.llm_secrets x on x.org_id = s.org_id and x.settings_id = s.id and s.has_api_key
  $$;
comment on function app_private.job_llm(uuid, text) is 'The provider, model and sealed key an organization''s job uses (provider null: the deployment''s).';

-- ==================================================================================================================
-- Prices and costs
--
-- The operator keeps a price table (US dollars per million input and output tokens, per provider and model; model
-- '*' prices a provider's models without a row of their own). Each usage row gets its cost when written, so a later
-- price change never rewrites history; a usage row without a price has a null cost and is reported as unpriced.
-- ==================================================================================================================

create table if not exists app_private.llm_prices (
  provider text not null check (char_length(provider) between 1 and 50),
  model text not null check (char_length(model) between 1 and 200),
  input_per_million numeric(12, 4) not null check (input_per_million >= 0),
  output_per_million numeric(12, 4) not null check (output_per_million >= 0),
  updated_at timestamptz not null default now(),
  primary key (provider, model)
);

comment on table app_private.llm_prices is 'USD per million input and output tokens, per provider and model (model * for the provider''s other models). Operator-managed: app_admin.set_llm_price.';

alter table app_private.llm_prices enable row level security;
alter table app_private.llm_prices force row level security;

drop policy if exists as_definer on app_private.llm_prices;
create policy as_definer on app_private.llm_prices to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- The offline models cost nothing.
select set_config('quire.definer', 'on', true);
insert into app_private.llm_prices (provider, model, input_per_million, output_per_million)
values ('extractive', '*', 0, 0)
on conflict on constraint llm_prices_pkey do nothing;
select set_config('quire.definer', '', true);

create or replace function app_admin.set_llm_price(provider text, model text, input_per_million numeric, output_per_million numeric)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_private.llm_prices as p (provider, model, input_per_million, output_per_million)
    values (set_llm_price.provider, set_llm_price.model, set_llm_price.input_per_million, set_llm_price.output_per_million)
    on conflict on constraint llm_prices_pkey do update
      set input_per_million = excluded.input_per_million, output_per_million = excluded.output_per_million, updated_at = now()
  $$;
comment on function app_admin.set_llm_price(text, text, numeric, numeric) is
  E'Sets the price of a model in USD per million input and output tokens (model * for the provider''s models without their own price). Applies to usage recorded from now on.\nExample: select app_admin.set_llm_price(''openai'', ''gpt-4o-mini'', 0.15, 0.60);';

create or replace function app_admin.remove_llm_price(provider text, model text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  delete from app_private.llm_prices p where p.provider = remove_llm_price.provider and p.model = remove_llm_price.model;
  return found;
end;
$$;
comment on function app_admin.remove_llm_price(text, text) is E'Removes a price; usage recorded afterwards is unpriced (null cost) unless a * price applies.\nExample: select app_admin.remove_llm_price(''openai'', ''gpt-4o-mini'');';

-- Usage rows say what they were for and what they cost. Embeddings belong to no job.
alter table app_public.usage_records add column if not exists kind text not null default 'summary'
  check (kind in ('summary', 'answer', 'embedding'));
alter table app_public.usage_records add column if not exists cost_usd numeric(14, 6) check (cost_usd >= 0);
alter table app_public.usage_records alter column job_id drop not null;
alter table app_public.usage_records drop constraint if exists usage_records_job_check;
alter table app_public.usage_records add constraint usage_records_job_check check ((job_id is null) = (kind = 'embedding'));

comment on column app_public.usage_records.kind is E'@behavior +attribute:filterBy\nsummary, answer or embedding (chunks embedded for retrieval).';
comment on column app_public.usage_records.cost_usd is 'What the tokens cost at the operator''s price when recorded (USD); null when the model has no price.';
comment on table app_public.usage_records is
  E'@primaryKey id\n@behavior -insert -update -delete\nLLM usage charged to the organization: one row per summary or answer made, and per batch of chunks embedded, with its cost.';

create or replace function app_private.tg_usage_records__cost() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  select round((new.prompt_tokens * p.input_per_million + new.completion_tokens * p.output_per_million) / 1000000, 6)
    into new.cost_usd
    from app_private.llm_prices p
   where p.provider = new.provider and p.model in (new.model, '*')
   order by p.model = '*'
   limit 1;
  return new;
end;
$$;
comment on function app_private.tg_usage_records__cost() is 'Trigger (before insert on usage_records): the cost at the current price of the provider and model.';

drop trigger if exists _200_cost on app_public.usage_records;
create trigger _200_cost before insert on app_public.usage_records
  for each row execute procedure app_private.tg_usage_records__cost();

-- The monthly counters count requests (summaries and answers) and every token, embeddings' included.
create or replace function app_private.tg_usage_records__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.usage_counters as c (org_id, month_start, summaries, prompt_tokens, completion_tokens)
    values (new.org_id, app_private.month_start(new.created_at), case when new.kind = 'embedding' then 0 else 1 end,
            new.prompt_tokens, new.completion_tokens)
    on conflict (org_id, month_start) do update
      set summaries = c.summaries + excluded.summaries, prompt_tokens = c.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = c.completion_tokens + excluded.completion_tokens;
  elsif current_setting('quire.retention', true) is distinct from 'on' then
    update app_private.usage_counters c
       set summaries = greatest(c.summaries - case when old.kind = 'embedding' then 0 else 1 end, 0),
           prompt_tokens = greatest(c.prompt_tokens - old.prompt_tokens, 0),
           completion_tokens = greatest(c.completion_tokens - old.completion_tokens, 0)
     where c.org_id = old.org_id and c.month_start = app_private.month_start(old.created_at);
  end if;
  return null;
end;
$$;

-- The chunk_document task's usage: the tokens of one document's embeddings.
create or replace function app_private.record_embedding_usage(org_id uuid, provider text, model text, prompt_tokens int) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.usage_records (org_id, job_id, kind, provider, model, prompt_tokens, completion_tokens)
    values (record_embedding_usage.org_id, null, 'embedding', record_embedding_usage.provider, record_embedding_usage.model,
            record_embedding_usage.prompt_tokens, 0)
  $$;
comment on function app_private.record_embedding_usage(uuid, text, text, int) is 'Charges an organization for the tokens of chunks embedded.';
grant execute on function app_private.record_embedding_usage(uuid, text, text, int) to :DATABASE_AUTHENTICATOR;

drop type if exists app_public.usage_line cascade;
create type app_public.usage_line as (
  period_start timestamptz,
  kind text,
  provider text,
  model text,
  requests bigint,
  prompt_tokens bigint,
  completion_tokens bigint,
  cost_usd numeric,
  unpriced_requests bigint
);
comment on type app_public.usage_line is 'Usage of one period, kind and model: requests, tokens, cost (USD) and how many requests had no price.';

-- Usage by period (day, week or month, UTC), kind and model, between `since` (default: the start of this month)
-- and `until` (default: now), under the caller's RLS.
create or replace function app_public.organization_usage_lines(since timestamptz default null, until timestamptz default null,
  period text default 'month') returns setof app_public.usage_line
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if organization_usage_lines.period is null or organization_usage_lines.period not in ('day', 'week', 'month') then
    raise exception 'The period must be day, week or month.' using errcode = 'BADIN';
  end if;
  return query
    select date_trunc(organization_usage_lines.period, u.created_at, 'UTC'), u.kind, u.provider, u.model, count(*),
           sum(u.prompt_tokens)::bigint, sum(u.completion_tokens)::bigint, coalesce(sum(u.cost_usd), 0),
           count(*) filter (where u.cost_usd is null)
      from app_public.usage_records u
     where u.org_id = app_public.current_org_id()
       and u.created_at >= coalesce(organization_usage_lines.since, date_trunc('month', now(), 'UTC'))
       and u.created_at < coalesce(organization_usage_lines.until, now())
     group by 1, 2, 3, 4
     order by 1, 2, 3, 4;
end;
$$;
comment on function app_public.organization_usage_lines(timestamptz, timestamptz, text) is
  'The organization''s LLM usage and its cost by period (day, week or month, UTC), kind (summary, answer, embedding) and model, from `since` (default: the start of this month) to `until` (default: now).';
grant execute on function app_public.organization_usage_lines(timestamptz, timestamptz, text) to :DATABASE_AUTHENTICATED;

-- The operator's billing export: one row per organization, kind and model for a calendar month (UTC).
create or replace function app_admin.billing_report(month date)
  returns table (org_id uuid, organization text, tier app_public.subscription_tier, kind text, provider text, model text,
                 requests bigint, prompt_tokens bigint, completion_tokens bigint, cost_usd numeric, unpriced_requests bigint)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.id, o.name, o.tier, u.kind, u.provider, u.model, count(*), sum(u.prompt_tokens)::bigint,
           sum(u.completion_tokens)::bigint, coalesce(sum(u.cost_usd), 0), count(*) filter (where u.cost_usd is null)
      from app_public.usage_records u
      join app_public.organizations o on o.id = u.org_id
     where u.created_at >= date_trunc('month', billing_report.month::timestamp) at time zone 'UTC'
       and u.created_at < (date_trunc('month', billing_report.month::timestamp) + interval '1 month') at time zone 'UTC'
     group by o.id, o.name, o.tier, u.kind, u.provider, u.model
     order by o.name, o.id, u.kind, u.provider, u.model
  $$;
comment on function app_admin.billing_report(date) is
  E'Usage and cost of every organization in the calendar month (UTC) of `month`, by kind and model.\nExample: \\copy (select * from app_admin.billing_report(''2026-11-01'')) to ''billing-2026-11.csv'' csv header';

-- ==================================================================================================================
-- Questions and answers
--
-- askQuestion queues an answer job; the worker retrieves chunks in the job's RLS context, asks the model to answer
-- only from them, and writes the answer with its citations. Both are the asker's: listed to them alone.
-- ==================================================================================================================

create table if not exists app_public.questions (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  asked_by uuid not null default app_public.current_user_id() references app_public.users on delete cascade,
  job_id uuid,
  question text not null check (char_length(question) between 1 and 2000),
  document_ids uuid[] check (cardinality(document_ids) between 1 and 50),
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, job_id) references app_public.jobs (org_id, id)
);

create index if not exists questions_id_idx on app_public.questions (id);
create index if not exists questions_org_id_asked_by_created_at_idx on app_public.questions (org_id, asked_by, created_at desc);

comment on table app_public.questions is
  E'@primaryKey id\n@behavior -insert -update -delete\nA question asked of the organization''s documents (askQuestion). Each person sees only their own.';
comment on constraint questions_pkey on app_public.questions is '@behavior -single -update -delete';
comment on constraint questions_org_id_job_id_fkey on app_public.questions is E'@fieldName job\n@foreignFieldName question';
comment on constraint questions_asked_by_fkey on app_public.questions is E'@fieldName asker\n@foreignFieldName questionsAsked';
comment on column app_public.questions.job_id is 'The job that answers it; null once retention has removed that job (the question and answer stay).';
comment on column app_public.questions.document_ids is 'The documents the question was limited to; null: all of them.';

create table if not exists app_public.answers (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  question_id uuid not null,
  job_id uuid,
  asked_by uuid not null references app_public.users on delete cascade,
  content text not null check (octet_length(content) between 1 and 131072),
  provider text not null,
  model text not null,
  prompt_tokens int not null check (prompt_tokens >= 0),
  completion_tokens int not null check (completion_tokens >= 0),
  latency_ms int not null check (latency_ms >= 0),
  sources jsonb not null default '[]'::jsonb check (jsonb_typeof(sources) = 'array' and jsonb_array_length(sources) <= 50),
  created_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, question_id),
  unique (org_id, job_id),
  foreign key (org_id, question_id) references app_public.questions (org_id, id) on delete cascade,
  foreign key (org_id, job_id) references app_public.jobs (org_id, id)
);

-- A question and its answer outlive the job that answered it (retention removes old jobs).
drop trigger if exists _800_clear_questions_job_id on app_public.jobs;
create trigger _800_clear_questions_job_id before delete on app_public.jobs
  for each row execute procedure app_private.tg__clear_references('app_public.questions', 'job_id');
drop trigger if exists _800_clear_answers_job_id on app_public.jobs;
create trigger _800_clear_answers_job_id before delete on app_public.jobs
  for each row execute procedure app_private.tg__clear_references('app_public.answers', 'job_id');

create index if not exists answers_id_idx on app_public.answers (id);
create index if not exists answers_org_id_asked_by_idx on app_public.answers (org_id, asked_by);

comment on table app_public.answers is
  E'@primaryKey id\n@behavior -insert -update -delete\nThe answer to a question, written by the worker from the passages it retrieved, with the model, tokens and the document revisions it drew on. Shown as text.';
comment on constraint answers_pkey on app_public.answers is '@behavior -single -update -delete';
comment on constraint answers_org_id_question_id_fkey on app_public.answers is E'@fieldName question\n@foreignFieldName answer';
comment on constraint answers_org_id_job_id_fkey on app_public.answers is E'@fieldName job\n@foreignFieldName answer';
comment on constraint answers_asked_by_fkey on app_public.answers is E'@behavior -*';
comment on column app_public.answers.sources is 'The passages the model was given, in order: [{chunkId, documentId, documentRevision}]; citations point at them.';
comment on column app_public.answers.asked_by is E'@behavior -*\nThe asker (copied from the question, for the policy).';

create table if not exists app_public.answer_citations (
  id uuid not null default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  answer_id uuid not null,
  asked_by uuid not null references app_public.users on delete cascade,
  ordinal int not null check (ordinal between 0 and 49),
  marker int not null check (marker between 1 and 50),
  document_id uuid,
  document_revision int not null check (document_revision >= 1),
  chunk_id uuid not null,
  quote text not null check (char_length(quote) between 1 and 1000),
  primary key (org_id, id),
  unique (org_id, answer_id, ordinal),
  foreign key (org_id, answer_id) references app_public.answers (org_id, id) on delete cascade,
  foreign key (org_id, document_id) references app_public.documents (org_id, id)
);

create index if not exists answer_citations_id_idx on app_public.answer_citations (id);
create index if not exists answer_citations_org_id_document_id_idx on app_public.answer_citations (org_id, document_id);
create index if not exists answer_citations_org_id_asked_by_idx on app_public.answer_citations (org_id, asked_by);

-- A citation outlives its document: it keeps its quote.
drop trigger if exists _800_clear_answer_citations_document_id on app_public.documents;
create trigger _800_clear_answer_citations_document_id before delete on app_public.documents
  for each row execute procedure app_private.tg__clear_references('app_public.answer_citations', 'document_id');

comment on table app_public.answer_citations is
  E'@primaryKey id\n@behavior -insert -update -delete\nWhere an answer''s claim comes from: the [marker] in the answer, the document and revision, and the quoted sentence of the passage.';
comment on constraint answer_citations_pkey on app_public.answer_citations is '@behavior -single -update -delete';
comment on constraint answer_citations_org_id_answer_id_fkey on app_public.answer_citations is E'@fieldName answer\n@foreignFieldName citations';
comment on constraint answer_citations_org_id_document_id_fkey on app_public.answer_citations is E'@fieldName document\n@foreignFieldName citations';
comment on constraint answer_citations_asked_by_fkey on app_public.answer_citations is E'@behavior -*';
comment on column app_public.answer_citations.asked_by is E'@behavior -*\nThe asker (copied from the question, for the policy).';
comment on column app_public.answer_citations.marker is 'The number in the answer''s text, [1] for the first passage given.';
comment on column app_public.answer_citations.document_id is 'Null once the document is deleted for good (the quote stays).';

-- Each person reads their own questions, answers and citations; the answer job, whose context is its requester's,
-- reads its question through the same policy. Audit rows never hold the question, answer or quote text.
alter table app_public.questions enable row level security;
alter table app_public.questions force row level security;

drop policy if exists as_definer on app_public.questions;
create policy as_definer on app_public.questions to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');
drop policy if exists select_own on app_public.questions;
create policy select_own on app_public.questions for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and asked_by = app_public.current_user_id());

grant select on app_public.questions to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.questions;
create trigger _900_audit after insert or update or delete on app_public.questions
  for each row execute procedure app_private.tg__audit('question');

alter table app_public.answers enable row level security;
alter table app_public.answers force row level security;

drop policy if exists as_definer on app_public.answers;
create policy as_definer on app_public.answers to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');
drop policy if exists select_own on app_public.answers;
create policy select_own on app_public.answers for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and asked_by = app_public.current_user_id());

grant select on app_public.answers to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.answers;
create trigger _900_audit after insert or update or delete on app_public.answers
  for each row execute procedure app_private.tg__audit('content');

alter table app_public.answer_citations enable row level security;
alter table app_public.answer_citations force row level security;

drop policy if exists as_definer on app_public.answer_citations;
create policy as_definer on app_public.answer_citations to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');
drop policy if exists select_own on app_public.answer_citations;
create policy select_own on app_public.answer_citations for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and asked_by = app_public.current_user_id());

grant select on app_public.answer_citations to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.answer_citations;
create trigger _900_audit after insert or update or delete on app_public.answer_citations
  for each row execute procedure app_private.tg__audit('quote');

-- Asking: members and above, viewers too where the organization allows it (settings.viewersMayAsk). The question
-- is checked here (length, the documents it is limited to: the caller's, not trashed) and counts against the
-- month's allowance like a summary.
create or replace function app_public.ask_question(question text, document_ids uuid[] default null) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_question text := btrim(ask_question.question);
  v_documents uuid[];
  v_job app_public.jobs;
begin
  perform app_private.check_role(app_private.lock_member_role(),
    case when (select o.settings -> 'viewersMayAsk' from app_public.organizations o where o.id = v_org_id) = 'true'::jsonb
         then 'viewer' else 'member' end::app_public.membership_role,
    'Viewers cannot ask questions in this organization.', 'Sign in to ask questions.');
  if v_question is null or char_length(v_question) not between 1 and 2000 then
    raise exception 'A question is 1 to 2000 characters long.' using errcode = 'BADIN';
  end if;
  if ask_question.document_ids is not null then
    select array_agg(distinct i) into v_documents from unnest(ask_question.document_ids) as i where i is not null;
    if v_documents is null or cardinality(v_documents) > 50 then
      raise exception 'Limit a question to 1 to 50 documents, or none.' using errcode = 'BADIN';
    end if;
    if (select count(*) from app_public.documents d
         where d.org_id = v_org_id and d.id = any (v_documents) and d.trashed_at is null) <> cardinality(v_documents) then
      raise exception 'No such document.' using errcode = 'NTFND';
    end if;
  end if;
  perform app_private.check_allowance(v_org_id);
  insert into app_public.jobs (org_id, kind, requested_by) values (v_org_id, 'answer', app_public.current_user_id())
    returning * into v_job;
  insert into app_public.questions (org_id, asked_by, job_id, question, document_ids)
    values (v_org_id, app_public.current_user_id(), v_job.id, v_question, v_documents);
  perform app_private.enqueue_job(v_job, 'answer_question');
  return v_job;
end;
$$;
comment on function app_public.ask_question(text, uuid[]) is
  E'@resultFieldName job\nAsks a question of the organization''s documents (or of up to 50 of them) and returns the answer job at once: follow it with jobProgress (the answer as it is written) or jobUpdated; the answer and its citations are then job.question.answer. Members and above (viewers too when settings.viewersMayAsk). QUOTA_EXCEEDED once the month''s allowance is used up.';
grant execute on function app_public.ask_question(text, uuid[]) to :DATABASE_AUTHENTICATED;

-- Start: claim the run, mark the job running, read the question and the model to use (as start_summary_job does).
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
  update app_public.jobs j
     set status = 'running', attempts = j.attempts + 1, started_at = coalesce(j.started_at, now())
   where j.id = start_answer_job.job_id and j.status in ('queued', 'running')
  returning j.org_id, j.requested_by into org_id, requested_by;
  if not found then
    outcome := 'gone';
    return;
  end if;
  select q.question, q.document_ids into question, document_ids
    from app_public.questions q where q.org_id = start_answer_job.org_id and q.job_id = start_answer_job.job_id;
  v_llm := app_private.job_llm(start_answer_job.org_id);
  llm_provider := v_llm.provider;
  llm_model := v_llm.model;
  llm_key_id := v_llm.key_id;
  llm_nonce := v_llm.secret_nonce;
  llm_ciphertext := v_llm.secret_ciphertext;
  outcome := case when question is null then 'gone' else 'started' end;
end;
$$;
comment on function app_private.start_answer_job(uuid, text, uuid, text, text) is
  'An answer run''s first call: claims the job for `run_id` (with its token), marks it running and returns the question and the organization''s model; outcome started or gone.';
grant execute on function app_private.start_answer_job(uuid, text, uuid, text, text) to :DATABASE_AUTHENTICATOR;

-- Finish: the answer, its citations, its usage and the job's success together, only while this run owns the
-- running job (as finish_summary_job). citations: [{ordinal, marker, chunkId, documentId, documentRevision, quote}],
-- each naming one of `sources` ([{chunkId, documentId, documentRevision}]); any other is dropped here too.
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
  if app_private.enter_job_run(finish_answer_job.job_id, finish_answer_job.token, finish_answer_job.run_id) is null then
    return 'gone';
  end if;
  select j.* into v_job from app_public.jobs j where j.id = finish_answer_job.job_id and j.status = 'running' for update;
  if not found then
    return 'gone';
  end if;
  select q.* into v_question from app_public.questions q where q.org_id = v_job.org_id and q.job_id = v_job.id;
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
comment on function app_private.finish_answer_job(uuid, text, uuid, text, text, text, int, int, int, jsonb, jsonb) is
  'An answer run''s last call: writes the answer, its citations, its usage and the job''s success while the run owns the running job; succeeded, superseded or gone.';
grant execute on function app_private.finish_answer_job(uuid, text, uuid, text, text, text, int, int, int, jsonb, jsonb) to :DATABASE_AUTHENTICATOR;

-- Summaries run with the organization's model too, and a template's pinned one: the start returns them.
drop function if exists app_private.start_summary_job(uuid, text, uuid, text, text, text);
create function app_private.start_summary_job(job_id uuid, token text, run_id uuid, runner_id text, lock_id text, marker text,
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
end;
$$;
comment on function app_private.start_summary_job(uuid, text, uuid, text, text, text) is
  'A summary run''s first call: claims the job for `run_id` (with its token), marks it running and returns its document, rendered prompt and the model to use (the template''s, else the organization''s; provider null: the deployment''s); outcome started, gone or document-gone.';
grant execute on function app_private.start_summary_job(uuid, text, uuid, text, text, text) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- Cancelling stops the model
--
-- A job that becomes cancelled (cancelJob, its document deleted or trashed) is announced on quire_job_cancelled, so
-- the worker running it aborts its request to the provider at once instead of paying for text no one will keep.
-- ==================================================================================================================

create or replace function app_private.tg_jobs__announce_cancel() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  perform pg_notify('quire_job_cancelled', new.id::text);
  return null;
end;
$$;
comment on function app_private.tg_jobs__announce_cancel() is 'Trigger: NOTIFY quire_job_cancelled with the id of a job just cancelled.';

drop trigger if exists _910_announce_cancel on app_public.jobs;
create trigger _910_announce_cancel after update of status on app_public.jobs
  for each row when (new.status = 'cancelled' and old.status is distinct from 'cancelled')
  execute procedure app_private.tg_jobs__announce_cancel();

comment on constraint document_chunks_org_id_fkey on app_public.document_chunks is E'@fieldName organization\n@foreignFieldName documentChunks';
comment on constraint llm_settings_org_id_fkey on app_public.llm_settings is E'@fieldName organization\n@foreignFieldName llmSettings';
comment on constraint questions_org_id_fkey on app_public.questions is E'@fieldName organization\n@foreignFieldName questions';
comment on constraint answers_org_id_fkey on app_public.answers is E'@fieldName organization\n@foreignFieldName answers';
comment on constraint answer_citations_org_id_fkey on app_public.answer_citations is E'@fieldName organization\n@foreignFieldName answerCitations';

-- An export holds what the organization wrote: chunks are cut again from its documents, so they stay out.
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
     where n.nspname = 'app_public' and c.relkind = 'r' and c.relname not in ('live_events', 'document_chunks')
       and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
     order by c.relname
  $$;
comment on function app_hidden.export_tables() is 'The tables an organization export holds (chunks aside), and the columns it leaves out of each.';
