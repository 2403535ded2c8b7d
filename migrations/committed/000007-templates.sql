--! Previous: sha1:3b10bf914215f25636ce75af9d60d671f146bb77
--! Hash: sha1:c17a14e8ca81a333d6f35b1ab2e20b8b9c29d2a3
--! Message: templates

-- Summary templates. A template's prompt body may use only these placeholders, replaced as plain text (no code
-- runs): {{document.title}}, {{document.content}}, {{organization.name}}, {{date}}. A body with an unknown
-- placeholder or stray braces is refused when saved (BADTM, BAD_TEMPLATE), naming the problem.
create function app_private.template_problem(body text) returns text
  language sql immutable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    select coalesce(
      (select 'Unknown placeholder ' || m[1] || '; use {{document.title}}, {{document.content}}, {{organization.name}} or {{date}}.'
         from regexp_matches(body, '(\{\{\s*[^{}]*?\s*\}\})', 'g') as m
        where regexp_replace(m[1], '\s', '', 'g') not in ('{{document.title}}', '{{document.content}}', '{{organization.name}}', '{{date}}')
        limit 1),
      case when regexp_replace(body, '\{\{\s*[^{}]*?\s*\}\}', '', 'g') ~ '\{\{|\}\}'
           then 'Unbalanced {{ or }}: placeholders are written {{name}}.' end
    )
  $$;
comment on function app_private.template_problem(text) is 'What is wrong with a template body, or NULL when it is valid.';

-- Security definer: it runs for API roles, which have no USAGE on app_private where the check lives.
create function app_private.tg_templates__check_body() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_problem text := app_private.template_problem(new.body);
begin
  if v_problem is not null then
    raise exception '%', v_problem using errcode = 'BADTM';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_templates__check_body() is 'Trigger: refuses a template body with unknown placeholders or stray braces (BADTM).';

-- Global templates belong to no organization: operators create them (app_admin), every organization reads them.
-- They live apart from organization templates so that every tenant table keeps `org_id not null`.
create table app_public.global_templates (
  id uuid primary key default gen_random_uuid(),
  name text not null unique check (char_length(name) between 1 and 200),
  description text not null default '' check (char_length(description) <= 2000),
  body text not null check (char_length(body) between 1 and 20000),
  version int not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table app_public.global_templates is E'@behavior -insert -update -delete\nA summary template every organization can use; maintained by operators.';
create trigger _100_timestamps before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg__timestamps();
create trigger _200_check_body before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__check_body();

create table app_public.templates (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  name text not null check (char_length(name) between 1 and 200),
  description text not null default '' check (char_length(description) <= 2000),
  body text not null check (char_length(body) between 1 and 20000),
  version int not null default 1,
  created_by uuid default app_public.current_user_id() references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, name)
);
comment on table app_public.templates is 'An organization''s own summary template. Admins and owners write; everyone in the organization reads.';
comment on column app_public.templates.version is 'Grows by one with each edit of name, description or body; every version is kept in template_versions.';
create index templates_org_id_created_by_idx on app_public.templates (org_id, created_by);
create trigger _100_timestamps before insert or update on app_public.templates
  for each row execute procedure app_private.tg__timestamps();
create trigger _200_check_body before insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__check_body();

-- Every version is kept, immutable, so a summary can point at exactly the text it used: editing or deleting the
-- template never changes or breaks it (the version outlives its template; template_id then becomes NULL).
create table app_public.template_versions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  template_id uuid,
  version int not null,
  name text not null,
  body text not null,
  created_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, template_id, version),
  foreign key (org_id, template_id) references app_public.templates (org_id, id) on delete set null (template_id)
);
comment on table app_public.template_versions is E'@behavior -insert -update -delete\nAn immutable version of an organization template, kept after the template is edited or deleted.';

create table app_public.global_template_versions (
  id uuid primary key default gen_random_uuid(),
  global_template_id uuid references app_public.global_templates on delete set null,
  version int not null,
  name text not null,
  body text not null,
  created_at timestamptz not null default now(),
  unique (global_template_id, version)
);
comment on table app_public.global_template_versions is E'@behavior -insert -update -delete\nAn immutable version of a global template.';

-- Versions are written by the database, in the same statement as the template: the number before the row is
-- written, the kept copy after (it references the row).
create function app_private.tg_templates__number_version() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if tg_op = 'INSERT' then
    new.version := 1;
  elsif (new.name, new.description, new.body) is distinct from (old.name, old.description, old.body) then
    new.version := old.version + 1;
  else
    new.version := old.version;
  end if;
  return new;
end;
$$;
comment on function app_private.tg_templates__number_version() is 'Trigger: numbers each change of a template''s name, description or body.';

create function app_private.tg_templates__keep_version() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'UPDATE' and new.version = old.version then
    return null;
  end if;
  if tg_table_name = 'templates' then
    insert into app_public.template_versions (org_id, template_id, version, name, body)
      values (new.org_id, new.id, new.version, new.name, new.body);
  else
    insert into app_public.global_template_versions (global_template_id, version, name, body)
      values (new.id, new.version, new.name, new.body);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_templates__keep_version() is 'Trigger: keeps an immutable copy of each new template version.';

create trigger _300_number_version before insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__number_version();
create trigger _300_number_version before insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__number_version();
create trigger _900_keep_version after insert or update on app_public.templates
  for each row execute procedure app_private.tg_templates__keep_version();
create trigger _900_keep_version after insert or update on app_public.global_templates
  for each row execute procedure app_private.tg_templates__keep_version();

-- Row-level security.
alter table app_public.global_templates enable row level security;
alter table app_public.global_templates force row level security;
create policy as_definer on app_public.global_templates to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_all on app_public.global_templates for select to :DATABASE_AUTHENTICATED using (true);
grant select on app_public.global_templates to :DATABASE_AUTHENTICATED;

alter table app_public.global_template_versions enable row level security;
alter table app_public.global_template_versions force row level security;
create policy as_definer on app_public.global_template_versions to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_all on app_public.global_template_versions for select to :DATABASE_AUTHENTICATED using (true);
grant select on app_public.global_template_versions to :DATABASE_AUTHENTICATED;

alter table app_public.templates enable row level security;
alter table app_public.templates force row level security;
create policy as_definer on app_public.templates to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.templates for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy insert_as_admin on app_public.templates for insert to :DATABASE_AUTHENTICATED
  with check (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin');
create policy update_as_admin on app_public.templates for update to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin')
  with check (org_id = (select app_public.current_org_id()));
create policy delete_as_admin on app_public.templates for delete to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_member_role()) >= 'admin');
grant select, delete on app_public.templates to :DATABASE_AUTHENTICATED;
grant insert (name, description, body), update (name, description, body) on app_public.templates to :DATABASE_AUTHENTICATED;

alter table app_public.template_versions enable row level security;
alter table app_public.template_versions force row level security;
create policy as_definer on app_public.template_versions to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.template_versions for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
grant select on app_public.template_versions to :DATABASE_AUTHENTICATED;

-- The rendered prompt for a document, without calling the LLM: plain text replacement of the four placeholders.
-- The template is the organization's or a global one; both it and the document are read under RLS.
create function app_public.preview_template(template_id uuid, document_id uuid) returns text
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
  as $$
declare
  v_body text;
  v_title text;
  v_content text;
begin
  select t.body into v_body from app_public.templates t where t.id = preview_template.template_id;
  if v_body is null then
    select g.body into v_body from app_public.global_templates g where g.id = preview_template.template_id;
  end if;
  select d.title, d.content into v_title, v_content from app_public.documents d where d.id = preview_template.document_id;
  if v_body is null or v_title is null then
    raise exception 'No such template or document.' using errcode = 'NTFND';
  end if;
  return app_public.render_template(v_body, v_title, v_content,
    (select o.name from app_public.organizations o where o.id = app_public.current_org_id()));
end;
$$;
comment on function app_public.preview_template(uuid, uuid) is
  'The prompt a template produces for a document (placeholders replaced as plain text), without calling the LLM.';
grant execute on function app_public.preview_template(uuid, uuid) to :DATABASE_AUTHENTICATED;

create function app_public.render_template(body text, title text, content text, organization_name text) returns text
  language sql stable parallel safe
  set search_path = pg_catalog, pg_temp
  as $$
    -- One pass per placeholder; a value that itself contains "{{…}}" is inserted as text and never expanded.
    select string_agg(
             case piece
               when '{{document.title}}' then coalesce(title, '')
               when '{{document.content}}' then coalesce(content, '')
               when '{{organization.name}}' then coalesce(organization_name, '')
               when '{{date}}' then to_char(now() at time zone 'UTC', 'YYYY-MM-DD')
               else piece
             end, '' order by ordinality)
      from regexp_split_to_table(
             regexp_replace(body, '\{\{\s*(document\.title|document\.content|organization\.name|date)\s*\}\}', E'\x01{{\\1}}\x01', 'g'),
             E'\x01') with ordinality as parts (piece, ordinality)
  $$;
comment on function app_public.render_template(text, text, text, text) is
  E'@behavior -*\nReplaces the four placeholders of a template body with the given values, as plain text.';
grant execute on function app_public.render_template(text, text, text, text) to :DATABASE_AUTHENTICATED;

-- Operators maintain the global templates.
create function app_admin.upsert_global_template(name text, body text, description text default '') returns app_public.global_templates
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_public.global_templates (name, description, body)
      values (upsert_global_template.name, upsert_global_template.description, upsert_global_template.body)
    on conflict (name) do update set description = excluded.description, body = excluded.body
    returning *
  $$;
comment on function app_admin.upsert_global_template(text, text, text) is
  E'Creates or edits (as a new version) a global template.\nExample: select * from app_admin.upsert_global_template(''Risks'', ''List the risks in {{document.title}}:\\n{{document.content}}'');';

-- Three global templates to start with.
select app_admin.upsert_global_template(
  'Executive summary',
  E'Write an executive summary of the document "{{document.title}}" for the leadership of {{organization.name}}. '
  'In at most five sentences, state the purpose, the main findings and what is decided or asked. Date: {{date}}.\n\n{{document.content}}',
  'Five sentences for busy readers: purpose, findings, decisions.');
select app_admin.upsert_global_template(
  'Key points',
  E'List the key points of "{{document.title}}" as short bullet points, most important first, without repeating yourself.\n\n{{document.content}}',
  'The document''s main points as a bullet list.');
select app_admin.upsert_global_template(
  'Action items',
  E'Extract every action item from "{{document.title}}": who does what, by when (if stated). '
  'Answer "No action items." if there are none.\n\n{{document.content}}',
  'Who does what, by when.');
