--! Previous: sha1:a8b960c12c5315b0eb808850bc6c1ab9574ee6de
--! Hash: sha1:3b10bf914215f25636ce75af9d60d671f146bb77
--! Message: documents

-- GIN indexes cannot lead with a uuid column on their own; btree_gin lets the full-text index lead with org_id
-- (tenancy invariant 4), so one organization's search never scans another's postings.
create extension if not exists btree_gin with schema public;

create type app_public.document_format as enum ('markdown', 'plain', 'html');
create type app_public.document_source as enum ('manual', 'upload', 'notion', 'confluence');

-- An organization's knowledge base. Text is PostgreSQL `text` in a UTF8 database: any Unicode round-trips byte
-- for byte, and a NUL byte or invalid UTF-8 is refused by PostgreSQL itself (22021, BAD_INPUT).
create table app_public.documents (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  title text not null check (char_length(title) between 1 and 500),
  content text not null default '',
  format app_public.document_format not null default 'markdown',
  source app_public.document_source not null default 'manual',
  external_id text check (char_length(external_id) between 1 and 500),
  external_url text check (char_length(external_url) <= 2000 and external_url ~ '^https?://'),
  metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  author_id uuid default app_public.current_user_id() references app_public.users on delete set null,
  revision int not null default 1,
  content_hash text not null default '',
  search tsvector generated always as (
    setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', content), 'B')
  ) stored,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, source, external_id)
);
comment on table app_public.documents is 'A document of the organization''s knowledge base. Members write; everyone in the organization reads.';
comment on column app_public.documents.external_id is 'The page id at the source (Notion, Confluence); re-imports match on it.';
comment on column app_public.documents.revision is 'Starts at 1 and grows by one each time the content changes.';
comment on column app_public.documents.content_hash is 'SHA-256 (hex) of the content, maintained by the database.';
comment on column app_public.documents.search is E'@behavior -*\nFull-text vector over title (weight A) and content (B).';
create index documents_org_id_created_at_idx on app_public.documents (org_id, created_at desc, id);
create index documents_org_id_search_idx on app_public.documents using gin (org_id, search);
create index documents_org_id_author_id_idx on app_public.documents (org_id, author_id);
create trigger _100_timestamps before insert or update on app_public.documents
  for each row execute procedure app_private.tg__timestamps();

-- Revision and hash are facts the database keeps: the hash follows the content, the revision counts content
-- changes, and neither can be set by a client. The size limit is the server's DOCUMENT_MAX_BYTES, passed in each
-- request's settings (5 MB when unset).
create function app_private.tg_documents__revision() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_limit bigint := coalesce(nullif(current_setting('quire.max_document_bytes', true), '')::bigint, 5242880);
begin
  if octet_length(new.content) > v_limit then
    raise exception 'The document is larger than the limit of % bytes.', v_limit using errcode = 'TOOLG';
  end if;
  new.content_hash := encode(sha256(convert_to(new.content, 'UTF8')), 'hex');
  if tg_op = 'INSERT' then
    new.revision := 1;
  else
    new.revision := case when new.content is distinct from old.content then old.revision + 1 else old.revision end;
    new.author_id := old.author_id;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_documents__revision() is
  'Trigger: enforces the size limit, sets content_hash, and counts content changes in revision.';
create trigger _200_revision before insert or update on app_public.documents
  for each row execute procedure app_private.tg_documents__revision();

alter table app_public.documents enable row level security;
alter table app_public.documents force row level security;
create policy as_definer on app_public.documents to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.documents for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy insert_as_member on app_public.documents for insert to :DATABASE_AUTHENTICATED
  with check (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'member');
create policy update_as_member on app_public.documents for update to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'member')
  with check (org_id = (select app_public.current_org_id()));
create policy delete_as_member on app_public.documents for delete to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'member');
grant select, delete on app_public.documents to :DATABASE_AUTHENTICATED;
grant insert (title, content, format, source, external_id, external_url, metadata) on app_public.documents to :DATABASE_AUTHENTICATED;
grant update (title, content, format, external_url, metadata) on app_public.documents to :DATABASE_AUTHENTICATED;

-- Listing with filters and full-text search: one function, so the frontend has one query to build on. With
-- `search`, results are ranked (title matches above content matches); without it, newest first. RLS applies
-- (security invoker), so only the caller's organization is ever searched.
create function app_public.find_documents(
  search text default null,
  title_contains text default null,
  format app_public.document_format default null,
  source app_public.document_source default null,
  created_after timestamptz default null,
  created_before timestamptz default null
) returns setof app_public.documents
  language sql stable
  set search_path = pg_catalog, pg_temp
  as $$
    select d.*
      from app_public.documents d,
           (select case when nullif(btrim(find_documents.search), '') is null then null
                        else websearch_to_tsquery('simple', find_documents.search) end as q) as query
     where (query.q is null or d.search @@ query.q)
       and (find_documents.title_contains is null or strpos(lower(d.title), lower(find_documents.title_contains)) > 0)
       and (find_documents.format is null or d.format = find_documents.format)
       and (find_documents.source is null or d.source = find_documents.source)
       and (find_documents.created_after is null or d.created_at >= find_documents.created_after)
       and (find_documents.created_before is null or d.created_at < find_documents.created_before)
     order by case when query.q is null then 0 else ts_rank(d.search, query.q) end desc, d.created_at desc, d.id
  $$;
comment on function app_public.find_documents(text, text, app_public.document_format, app_public.document_source, timestamptz, timestamptz) is
  E'The organization''s documents, filtered (title substring, format, source, creation range) and, with `search`, full-text matched (web-search syntax: words, "phrases", -exclusions) and ranked.';
grant execute on function app_public.find_documents(text, text, app_public.document_format, app_public.document_source, timestamptz, timestamptz)
  to :DATABASE_AUTHENTICATED;
