--! Previous: sha1:2e814ed735a8de9f2d751279d540551eea85b647
--! Hash: sha1:f49f9cc1eb00301e7c4715b16cb3583c97548fef
--! Message: bounds

-- Bounds on what the API stores and answers, so that one request cannot hold megabytes the server then multiplies.
-- Constraints on existing columns are added `not valid`: rows written before this migration are not re-checked
-- (a deployment with an oversized one still migrates), every new write is.

-- A document's metadata is a small object (the upload's facts, an integration's page facts), never a second content:
-- without a bound, a list of documents with their metadata could answer gigabytes. Named as PostgreSQL names column
-- checks, so a refusal names the field (`metadata is not allowed …`).
alter table app_public.documents add constraint documents_metadata_check1
  check (octet_length(metadata::text) <= 65536) not valid;

-- A summary is an LLM's answer: at most 128 KiB (about 32,000 tokens). The providers refuse longer completions
-- (LLM_BAD_RESPONSE) before this check would.
alter table app_public.summaries add constraint summaries_content_check
  check (octet_length(content) <= 131072) not valid;

-- Templates: {{document.content}} at most once, and at most 20 placeholders in all, so that what a template renders
-- is the document plus a bounded amount, never a multiple of it (a preview of a hundred copies of a document, or a
-- summary job whose prompt uses up the organization's monthly allowance). Refused when saved (BADTM).
create or replace function app_private.template_problem(body text) returns text
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select coalesce(
      (select 'Unknown placeholder ' || m[1] || '; use {{document.title}}, {{document.content}}, {{organization.name}} or {{date}}.'
         from regexp_matches(body, '(\{\{\s*[^{}]*?\s*\}\})', 'g') as m
        where regexp_replace(m[1], '\s', '', 'g') not in ('{{document.title}}', '{{document.content}}', '{{organization.name}}', '{{date}}')
        limit 1),
      case when regexp_replace(body, '\{\{\s*[^{}]*?\s*\}\}', '', 'g') ~ '\{\{|\}\}'
           then 'Unbalanced {{ or }}: placeholders are written {{name}}.' end,
      case when (select count(*) from regexp_matches(body, '\{\{\s*document\.content\s*\}\}', 'g')) > 1
           then '{{document.content}} may appear only once in a template: the document''s text is sent to the model once.' end,
      case when (select count(*) from regexp_matches(body, '\{\{\s*[^{}]*?\s*\}\}', 'g')) > 20
           then 'A template may use at most 20 placeholders.' end
    )
  $$;
comment on function app_private.template_problem(text) is
  'What is wrong with a template body (an unknown placeholder, stray braces, {{document.content}} more than once, more than 20 placeholders), or NULL when it is valid.';

-- The rendered text is bounded too, for templates saved before the rule above: at most the document's content plus
-- 1 MiB (a valid template renders far less). Over: TOOLG (TOO_LARGE), for a preview and a summary job alike.
create or replace function app_public.render_template(body text, title text, content text, organization_name text) returns text
  language plpgsql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_limit bigint := coalesce(octet_length(content), 0) + 1048576;
  v_rendered text;
begin
  -- One pass per placeholder; a value that itself contains "{{…}}" is inserted as text and never expanded. The size
  -- is added up before the pieces are joined, so an oversized result is never built.
  if (select coalesce(sum(case regexp_replace(piece, '\s', '', 'g')
                            when '{{document.title}}' then coalesce(octet_length(title), 0)
                            when '{{document.content}}' then coalesce(octet_length(content), 0)
                            when '{{organization.name}}' then coalesce(octet_length(organization_name), 0)
                            else octet_length(piece)
                          end), 0)
        from regexp_split_to_table(
               regexp_replace(body, '\{\{\s*(document\.title|document\.content|organization\.name|date)\s*\}\}', E'\x01{{\\1}}\x01', 'g'),
               E'\x01') as parts (piece)) > v_limit then
    raise exception 'The template renders more than % bytes for this document: use {{document.content}} only once.', v_limit
      using errcode = 'TOOLG';
  end if;
  select string_agg(
           case piece
             when '{{document.title}}' then coalesce(title, '')
             when '{{document.content}}' then coalesce(content, '')
             when '{{organization.name}}' then coalesce(organization_name, '')
             when '{{date}}' then to_char(now() at time zone 'UTC', 'YYYY-MM-DD')
             else piece
           end, '' order by ordinality)
    into v_rendered
    from regexp_split_to_table(
           regexp_replace(body, '\{\{\s*(document\.title|document\.content|organization\.name|date)\s*\}\}', E'\x01{{\\1}}\x01', 'g'),
           E'\x01') with ordinality as parts (piece, ordinality);
  return v_rendered;
end;
$$;
comment on function app_public.render_template(text, text, text, text) is
  E'@behavior -*\nReplaces the four placeholders of a template body with the given values, as plain text; refuses (TOOLG) a result over the content plus 1 MiB.';

-- Lists of documents need no content: its size and its beginning are enough to show a list, and cost a page of
-- rows only kilobytes (GraphQL refuses lists whose content could be too large: RESPONSE_TOO_LARGE).
create function app_public.documents_content_length(d app_public.documents) returns int
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select octet_length(d.content) $$;
comment on function app_public.documents_content_length(app_public.documents) is
  'Size of the content in UTF-8 bytes (what DOCUMENT_MAX_BYTES limits).';
grant execute on function app_public.documents_content_length(app_public.documents) to :DATABASE_AUTHENTICATED;

create function app_public.documents_excerpt(d app_public.documents, max_chars int default 280) returns text
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$ select left(d.content, least(greatest(coalesce(max_chars, 280), 0), 2000)) $$;
comment on function app_public.documents_excerpt(app_public.documents, int) is
  'The first `maxChars` characters of the content (default 280, at most 2000): for lists, which cannot ask for whole contents.';
grant execute on function app_public.documents_excerpt(app_public.documents, int) to :DATABASE_AUTHENTICATED;
