--! Previous: sha1:2ba39890ce95266c560f37af296541c7e11bd405
--! Hash: sha1:e99647884d483af29bbd82417fbae78d6dd10d2b
--! Message: an organization's data: export, erasure, account deletion and retention

-- An organization's data: export, erasure, account deletion and retention
--
-- An owner can take the organization's data away (one archive of its rows and files, in object storage, behind a
-- short-lived signed link), or have it erased after a grace period they can still cancel; a person can delete
-- their own account; and what the product no longer needs (finished jobs, usage details, sync runs, expired
-- sessions and tokens, old audit events) is removed on schedule, per tier with per-organization overrides.

-- ==================================================================================================================
-- Export
-- ==================================================================================================================

-- The new kind is only used inside function bodies here: an enum value added in a transaction cannot be used in
-- that transaction itself.
alter type app_public.job_kind add value if not exists 'export';

create table if not exists app_public.organization_exports (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  job_id uuid not null,
  storage_key text not null check (storage_key ~ '^orgs/[0-9a-f-]{36}/exports/[0-9a-f-]{36}$'),
  bytes bigint not null check (bytes >= 0),
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  row_counts jsonb not null default '{}'::jsonb check (jsonb_typeof(row_counts) = 'object'),
  file_count int not null default 0 check (file_count >= 0),
  created_by uuid references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  primary key (org_id, id),
  unique (org_id, job_id),
  unique (org_id, storage_key),
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade,
  check (split_part(storage_key, '/', 2) = org_id::text)
);

create index if not exists organization_exports_id_idx on app_public.organization_exports (id);
create index if not exists organization_exports_org_id_created_by_idx on app_public.organization_exports (org_id, created_by);
create index if not exists organization_exports_org_id_expires_at_idx on app_public.organization_exports (org_id, expires_at);

comment on table app_public.organization_exports is
  E'@primaryKey id\n@behavior -insert -update -delete\nAn archive of the organization''s data (exportOrganization): JSON lines of every row and the original files, kept until expiresAt. Owners only; download it with organizationExportUrl.';
comment on constraint organization_exports_pkey on app_public.organization_exports is '@behavior -single -update -delete';
comment on constraint organization_exports_org_id_job_id_key on app_public.organization_exports is '@behavior -*';
comment on constraint organization_exports_org_id_storage_key_key on app_public.organization_exports is '@behavior -*';
comment on column app_public.organization_exports.storage_key is E'@behavior -*\nWhere the archive is stored; never shown.';
comment on column app_public.organization_exports.row_counts is 'Rows in the archive, per table.';
comment on column app_public.organization_exports.file_count is 'Original files in the archive.';
comment on column app_public.organization_exports.expires_at is 'When the archive is deleted (7 days after it was made).';
comment on constraint organization_exports_org_id_fkey on app_public.organization_exports is E'@fieldName organization\n@foreignFieldName exports';
comment on constraint organization_exports_org_id_job_id_fkey on app_public.organization_exports is E'@fieldName job\n@foreignFieldName export';
comment on constraint organization_exports_created_by_fkey on app_public.organization_exports is E'@fieldName creator\n@foreignFieldName organizationExports';

alter table app_public.organization_exports enable row level security;
alter table app_public.organization_exports force row level security;

drop policy if exists as_definer on app_public.organization_exports;
create policy as_definer on app_public.organization_exports to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_as_owner on app_public.organization_exports;
create policy select_as_owner on app_public.organization_exports for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and app_public.current_member_role() = 'owner');

grant select (org_id, id, job_id, bytes, sha256, row_counts, file_count, created_by, created_at, expires_at)
  on app_public.organization_exports to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.organization_exports;
create trigger _900_audit after insert or update or delete on app_public.organization_exports
  for each row execute procedure app_private.tg__audit('storage_key');

-- An export's archive goes when its row does (expiry, erasure), after commit, like a file's original.
drop trigger if exists _900_queue_deletion on app_public.organization_exports;
create trigger _900_queue_deletion after delete on app_public.organization_exports
  referencing old table as deleted_files for each statement execute function app_private.tg_files__queue_deletion();

create or replace function app_public.export_organization() returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_job app_public.jobs;
begin
  perform app_private.require_role('owner', 'Only owners export the organization''s data.', 'Sign in to export.');
  v_org_id := app_public.current_org_id();
  -- The organization's row serializes the check below: two requests at once make one export, not two.
  perform 1 from app_public.organizations o where o.id = v_org_id for update;
  if exists (select 1 from app_public.jobs j where j.org_id = v_org_id and j.kind = 'export' and j.status in ('queued', 'running')) then
    raise exception 'An export of this organization is already under way.' using errcode = 'TAKEN';
  end if;
  -- Archives count against storage: a full allowance makes no more of them.
  if (select coalesce(u.bytes, 0) + coalesce(u.reserved_bytes, 0) from app_private.storage_usage u where u.org_id = v_org_id)
     >= (select a.storage_bytes from app_public.organizations o join app_private.tier_allowances a on a.tier = o.tier where o.id = v_org_id) then
    raise exception 'The organization''s storage allowance is used up; delete older exports or files first.' using errcode = 'QUOTA';
  end if;
  insert into app_public.jobs (org_id, kind, requested_by) values (v_org_id, 'export', app_public.current_user_id()) returning * into v_job;
  perform app_private.enqueue_job(v_job, 'export_organization');
  return v_job;
end;
$$;
comment on function app_public.export_organization() is
  E'@resultFieldName job\nQueues an export of the organization''s data (owners): one archive of JSON lines (every row of the organization, members without any secret) and the original files. Follow the job live; when it succeeds, its export (Job.export) is downloaded with organizationExportUrl, and the owner is emailed. One export at a time (CONFLICT).';
grant execute on function app_public.export_organization() to :DATABASE_AUTHENTICATED;

-- What goes in an archive: every table of the organization but the live-event outbox, each without the columns
-- that are internal (search vectors, storage keys) or a digest of a secret.
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
     where n.nspname = 'app_public' and c.relkind = 'r' and c.relname <> 'live_events'
       and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
     order by c.relname
  $$;
comment on function app_hidden.export_tables() is 'The tables an organization export holds, and the columns it leaves out of each.';
grant execute on function app_hidden.export_tables() to :DATABASE_AUTHENTICATED;

-- One page of a table's rows for the export job running in this transaction (security definer: an export holds
-- rows no role reads whole, such as trashed documents; the organization and the job's kind are checked here).
create or replace function app_hidden.export_page(table_name text, after_id uuid, max_count int) returns setof jsonb
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_omitted text[];
  -- A page holds at most this much row text (and always one row): documents and revisions are megabytes each.
  v_max_bytes bigint := 16 * 1024 * 1024;
begin
  if v_org_id is null or app_public.current_job_kind() is distinct from 'export' then
    raise exception 'Only an export job reads export pages.' using errcode = 'DNIED';
  end if;
  if export_page.table_name = 'organizations' then
    return query select to_jsonb(o) from app_public.organizations o where o.id = v_org_id and export_page.after_id is null;
    return;
  elsif export_page.table_name = 'users' then
    -- A person's sign-in times are theirs across organizations: not this one's to export.
    return query
      select to_jsonb(u) - 'last_login_at' from app_public.users u
       where u.id in (select m.user_id from app_public.memberships m where m.org_id = v_org_id)
         and (export_page.after_id is null or u.id > export_page.after_id)
       order by u.id limit least(greatest(export_page.max_count, 1), 10000);
    return;
  end if;
  select t.omitted into v_omitted from app_hidden.export_tables() t where t.table_name = export_page.table_name;
  if not found then
    raise exception 'Not an exported table.' using errcode = 'BADIN';
  end if;
  return query execute format(
    'select x.row from (
       select to_jsonb(p) - $3 as row, p.id, row_number() over (order by p.id) as n,
              sum(octet_length(p::text)) over (order by p.id) as running
         from (select t.* from app_public.%I t where t.org_id = $1 and ($2::uuid is null or t.id > $2) order by t.id limit $4) p) x
      where x.n = 1 or x.running <= $5
      order by x.id',
    export_page.table_name)
    using v_org_id, export_page.after_id, v_omitted, least(greatest(export_page.max_count, 1), 10000), v_max_bytes;
end;
$$;
comment on function app_hidden.export_page(text, uuid, int) is
  'Up to `max_count` rows (as JSON, at most 16 MiB of them but always one) of one exported table of the export job''s organization, after `after_id` in id order: organizations, users (its members) or any table of app_hidden.export_tables(). An empty page is the end.';
grant execute on function app_hidden.export_page(text, uuid, int) to :DATABASE_AUTHENTICATED;

-- The originals an export copies: key, name and id of each file of the organization (trashed ones too).
create or replace function app_hidden.export_files(after_id uuid, max_count int)
  returns table (id uuid, storage_key text, name text, bytes bigint, sha256 text)
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if app_public.current_org_id() is null or app_public.current_job_kind() is distinct from 'export' then
    raise exception 'Only an export job reads export pages.' using errcode = 'DNIED';
  end if;
  return query
    select f.id, f.storage_key, f.name, f.bytes, f.sha256 from app_public.files f
     where f.org_id = app_public.current_org_id() and (export_files.after_id is null or f.id > export_files.after_id)
     order by f.id limit least(greatest(export_files.max_count, 1), 10000);
end;
$$;
comment on function app_hidden.export_files(uuid, int) is 'Up to `max_count` files of the export job''s organization (the trash included) after `after_id`, with their storage keys and hashes.';
grant execute on function app_hidden.export_files(uuid, int) to :DATABASE_AUTHENTICATED;

-- The export job's last step: the archive's row (kept 7 days), the job's success and the owner's email, together.
create or replace function app_hidden.finish_export(storage_key text, bytes bigint, sha256 text, row_counts jsonb, file_count int) returns uuid
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job app_public.jobs;
  v_id uuid;
begin
  select * into v_job from app_public.jobs j where j.id = app_public.current_job_id() and j.kind = 'export' and j.status = 'running' for update;
  if not found or finish_export.storage_key <> 'orgs/' || v_job.org_id || '/exports/' || v_job.id then
    raise exception 'No running export job.' using errcode = 'NTFND';
  end if;
  insert into app_public.organization_exports (org_id, job_id, storage_key, bytes, sha256, row_counts, file_count, created_by, expires_at)
    values (v_job.org_id, v_job.id, finish_export.storage_key, finish_export.bytes, finish_export.sha256, finish_export.row_counts,
            finish_export.file_count, v_job.requested_by, now() + interval '7 days')
    on conflict on constraint organization_exports_org_id_job_id_key do update
      set bytes = excluded.bytes, sha256 = excluded.sha256, row_counts = excluded.row_counts, file_count = excluded.file_count
    returning id into v_id;
  update app_public.jobs j set status = 'succeeded', finished_at = now(), error_code = null, error_message = null where j.id = v_job.id;
  if v_job.requested_by is not null then
    perform app_private.queue_mail('export_ready', v_job.requested_by, null);
  end if;
  return v_id;
end;
$$;
comment on function app_hidden.finish_export(text, bigint, text, jsonb, int) is
  'Records the running export job''s archive (its key must be orgs/<org>/exports/<job id>), marks the job succeeded and emails the owner who asked.';
grant execute on function app_hidden.finish_export(text, bigint, text, jsonb, int) to :DATABASE_AUTHENTICATED;

-- What organizationExportUrl signs: an owner's unexpired archive.
create or replace function app_hidden.export_download(export_id uuid) returns table (storage_key text, name text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('owner', 'Only owners download the organization''s exports.', 'Sign in to download exports.');
  return query
    select e.storage_key, 'quire-export-' || o.slug || '-' || to_char(e.created_at at time zone 'UTC', 'YYYYMMDD"T"HH24MISS"Z"') || '.tar'
      from app_public.organization_exports e join app_public.organizations o on o.id = e.org_id
     where e.org_id = app_public.current_org_id() and e.id = export_download.export_id and e.expires_at > now();
  if not found then
    raise exception 'No such export.' using errcode = 'NTFND';
  end if;
end;
$$;
comment on function app_hidden.export_download(uuid) is 'The storage key and file name of an unexpired export of the caller''s organization (owners); NTFND otherwise.';
grant execute on function app_hidden.export_download(uuid) to :DATABASE_AUTHENTICATED;

-- The export's email: its kind names what to send, to the owner who asked; the link is the app's exports page, where
-- the owner signs in to download (a signed link in an inbox could be forwarded to anyone).
alter table app_private.mail_outbox drop constraint if exists mail_outbox_kind_check;
alter table app_private.mail_outbox add constraint mail_outbox_kind_check
  check (kind in ('password_reset', 'invitation', 'verify_email', 'registration_attempt', 'export_ready', 'organization_deletion')) not valid;
alter table app_private.mail_outbox validate constraint mail_outbox_kind_check;

create or replace function app_private.prepare_email(outbox_id uuid, token_hash bytea)
  returns table (kind text, recipient text, valid_for interval)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_mail app_private.mail_outbox;
  v_email text;
  v_org_id uuid;
  v_expires_at timestamptz;
begin
  select * into v_mail from app_private.mail_outbox o where o.id = prepare_email.outbox_id for update;
  if not found then
    return;
  end if;
  if v_mail.kind = 'password_reset' then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active;
    delete from app_private.password_reset_tokens t where t.outbox_id = v_mail.id;
    if v_email is not null then
      insert into app_private.password_reset_tokens (token_hash, user_id, expires_at, outbox_id)
        values (prepare_email.token_hash, v_mail.user_id, now() + interval '1 hour', v_mail.id);
      return query select v_mail.kind, v_email, interval '1 hour';
      return;
    end if;
  elsif v_mail.kind = 'verify_email' then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active and u.email_verified_at is null;
    if v_email is not null then
      insert into app_private.email_verification_tokens as t (user_id, token_hash, expires_at)
        values (v_mail.user_id, prepare_email.token_hash, app_private.clock_now() + interval '24 hours')
        on conflict on constraint email_verification_tokens_pkey do update set token_hash = excluded.token_hash, expires_at = excluded.expires_at;
      return query select v_mail.kind, v_email, interval '24 hours';
      return;
    end if;
  elsif v_mail.kind in ('registration_attempt', 'export_ready', 'organization_deletion') then
    select u.email into v_email from app_public.users u where u.id = v_mail.user_id and u.is_active;
    if v_email is not null then
      return query select v_mail.kind, v_email, case v_mail.kind when 'export_ready' then interval '7 days' else interval '0' end;
      return;
    end if;
  else
    select i.email, i.org_id, i.expires_at into v_email, v_org_id, v_expires_at
      from app_public.invitations i join app_public.organizations o on o.id = i.org_id and o.is_active
     where i.id = v_mail.invitation_id and i.accepted_at is null and i.expires_at > now()
       for update of i;
    if v_email is not null then
      insert into app_private.invitation_tokens as t (org_id, invitation_id, token_hash)
        values (v_org_id, v_mail.invitation_id, prepare_email.token_hash)
        on conflict on constraint invitation_tokens_pkey do update set token_hash = excluded.token_hash;
      return query select v_mail.kind, v_email, v_expires_at - now();
      return;
    end if;
  end if;
  delete from app_private.mail_outbox o where o.id = v_mail.id;
end;
$$;

-- ==================================================================================================================
-- Erasure
--
-- deleteOrganization schedules the erasure after a grace period (ORGANIZATION_DELETION_GRACE, 14 days unless an
-- operator sets another); until then an owner can cancel it. The worker's erase_organizations task then revokes
-- the integrations at their providers and deletes the organization, which takes every row of it along (its files'
-- and exports' objects are queued for deletion by their rows' triggers). The audit log is not a tenant table's
-- cascade: its events and chain outlive the organization, the deletion is recorded in it, and the chain verifies.
-- ==================================================================================================================

alter table app_public.organizations add column if not exists deletion_scheduled_for timestamptz;
alter table app_public.organizations add column if not exists deletion_requested_by uuid references app_public.users on delete set null;
alter table app_public.organizations add column if not exists deletion_by_operator boolean not null default false;
comment on column app_public.organizations.deletion_by_operator is 'True when an operator scheduled the erasure (app_admin.delete_organization): owners cannot cancel it.';
comment on column app_public.organizations.deletion_scheduled_for is 'When the organization and all its data will be erased (deleteOrganization); NULL when no erasure is scheduled.';
comment on column app_public.organizations.deletion_requested_by is 'Who scheduled the erasure.';
comment on constraint organizations_deletion_requested_by_fkey on app_public.organizations is E'@fieldName deletionRequester\n@foreignFieldName organizationDeletionsRequested';
create index if not exists organizations_deletion_scheduled_for_idx on app_public.organizations (deletion_scheduled_for) where deletion_scheduled_for is not null;
create index if not exists organizations_deletion_requested_by_idx on app_public.organizations (deletion_requested_by);

-- Deployment-wide settings of the data life cycle that operators change with app_admin.set_lifecycle_setting.
create table if not exists app_private.lifecycle_settings (
  name text primary key check (name in ('organization_deletion_grace')),
  value interval not null check (value >= interval '0')
);
comment on table app_private.lifecycle_settings is 'Deployment-wide data life-cycle settings (organization_deletion_grace).';
alter table app_private.lifecycle_settings enable row level security;
alter table app_private.lifecycle_settings force row level security;
drop policy if exists as_definer on app_private.lifecycle_settings;
create policy as_definer on app_private.lifecycle_settings to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

create or replace function app_private.deletion_grace() returns interval
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select coalesce((select s.value from app_private.lifecycle_settings s where s.name = 'organization_deletion_grace'), interval '14 days') $$;
comment on function app_private.deletion_grace() is 'How long after deleteOrganization the erasure happens (default 14 days).';

create or replace function app_admin.set_organization_deletion_grace(grace interval) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    insert into app_private.lifecycle_settings (name, value) values ('organization_deletion_grace', set_organization_deletion_grace.grace)
    on conflict (name) do update set value = excluded.value
  $$;
comment on function app_admin.set_organization_deletion_grace(interval) is
  E'Sets how long deleteOrganization waits before erasing (default 14 days; already scheduled erasures keep their date).\nExample: select app_admin.set_organization_deletion_grace(''30 days'');';

-- The erase job: one for all organizations due, coalesced by its key, due when the first of them is.
create or replace function app_private.schedule_erasure(due timestamptz) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('erase_organizations', '{}'::json, run_at => schedule_erasure.due,
                                  job_key => 'erase_organizations:' || to_char(schedule_erasure.due at time zone 'UTC', 'YYYYMMDDHH24MISS'),
                                  max_attempts => 10);
end;
$$;
comment on function app_private.schedule_erasure(timestamptz) is 'Queues the erase_organizations task to run at `due` (the hourly schedule also runs it).';

create or replace function app_public.delete_organization(confirm_slug text) returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  perform app_private.require_role('owner', 'Only owners delete the organization.', 'Sign in to delete the organization.');
  select * into v_org from app_public.organizations o where o.id = app_public.current_org_id() for update;
  if v_org.slug is distinct from delete_organization.confirm_slug then
    raise exception 'Confirm with the organization''s slug (%).', v_org.slug using errcode = 'BADIN';
  end if;
  if v_org.deletion_scheduled_for is not null then
    raise exception 'The organization''s erasure is already scheduled.' using errcode = 'TAKEN';
  end if;
  update app_public.organizations o
     set deletion_scheduled_for = now() + app_private.deletion_grace(), deletion_requested_by = app_public.current_user_id()
   where o.id = v_org.id
  returning * into v_org;
  perform app_private.schedule_erasure(v_org.deletion_scheduled_for);
  perform app_private.append_audit_event(v_org.id, 'organization_deletion_scheduled', 'organizations', v_org.id, '{deletion_scheduled_for}', null, null,
    jsonb_build_object('deletion_scheduled_for', v_org.deletion_scheduled_for),
    (app_private.audit_actor()).user_id, (app_private.audit_actor()).session_id, null, (app_private.audit_actor()).request_id, (app_private.audit_actor()).client_ip);
  perform app_private.queue_mail('organization_deletion', m.user_id, null)
     from app_public.memberships m join app_public.users u on u.id = m.user_id and not u.is_service
    where m.org_id = v_org.id and m.role = 'owner';
  return v_org;
end;
$$;
comment on function app_public.delete_organization(text) is
  E'@resultFieldName organization\nSchedules the erasure of the organization and all its data (owners, confirming with its slug) after the grace period (deletionScheduledFor); cancelOrganizationDeletion stops it until then. Every owner is emailed. The erasure deletes every row and file, revokes the integrations and ends every session; the audit log keeps the record.';
grant execute on function app_public.delete_organization(text) to :DATABASE_AUTHENTICATED;

create or replace function app_public.cancel_organization_deletion() returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  perform app_private.require_role('owner', 'Only owners cancel the organization''s deletion.', 'Sign in first.');
  if exists (select 1 from app_public.organizations o where o.id = app_public.current_org_id() and o.deletion_by_operator) then
    raise exception 'The erasure was scheduled by the service''s operators; ask them to cancel it.' using errcode = 'DNIED';
  end if;
  update app_public.organizations o set deletion_scheduled_for = null, deletion_requested_by = null
   where o.id = app_public.current_org_id() and o.deletion_scheduled_for is not null and o.deletion_scheduled_for > now()
  returning * into v_org;
  if not found then
    raise exception 'No erasure of the organization is scheduled.' using errcode = 'NTFND';
  end if;
  perform app_private.append_audit_event(v_org.id, 'organization_deletion_cancelled', 'organizations', v_org.id, '{deletion_scheduled_for}', null, null,
    '{}'::jsonb, (app_private.audit_actor()).user_id, (app_private.audit_actor()).session_id, null, (app_private.audit_actor()).request_id,
    (app_private.audit_actor()).client_ip);
  return v_org;
end;
$$;
comment on function app_public.cancel_organization_deletion() is
  E'@resultFieldName organization\nCancels the scheduled erasure of the organization (owners), before it happens.';
grant execute on function app_public.cancel_organization_deletion() to :DATABASE_AUTHENTICATED;

-- The organizations whose erasure is due, for the worker (which revokes their integrations first).
create or replace function app_private.organizations_due_for_erasure(max_count int) returns setof uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.id from app_public.organizations o
     where o.deletion_scheduled_for is not null and o.deletion_scheduled_for <= now()
     order by o.deletion_scheduled_for limit least(greatest(max_count, 1), 100)
  $$;
comment on function app_private.organizations_due_for_erasure(int) is 'Organizations whose scheduled erasure is due (at most 100).';

-- The integrations of an organization being erased, for revocation at the provider (sealed tokens; the worker opens them).
create or replace function app_private.integrations_to_revoke(org_id uuid)
  returns table (id uuid, provider app_public.integration_provider, key_id text, access_nonce bytea, access_ciphertext bytea)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select i.id, i.provider, s.key_id, s.access_nonce, s.access_ciphertext
      from app_public.integrations i join app_private.integration_secrets s on s.integration_id = i.id
     where i.org_id = integrations_to_revoke.org_id
  $$;
comment on function app_private.integrations_to_revoke(uuid) is 'The sealed access tokens of an organization''s integrations, to revoke them before it is erased.';

-- Organizations erased, with the tier whose audit retention their surviving audit log keeps.
create table if not exists app_private.erased_organizations (
  org_id uuid primary key,
  tier app_public.subscription_tier not null,
  erased_at timestamptz not null default now()
);
comment on table app_private.erased_organizations is 'Organizations erased, and the tier whose audit retention applies to the audit log they leave behind.';
alter table app_private.erased_organizations enable row level security;
alter table app_private.erased_organizations force row level security;
drop policy if exists as_definer on app_private.erased_organizations;
create policy as_definer on app_private.erased_organizations to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- Erases one organization now: records the erasure in its audit chain (which outlives it), then deletes it, every
-- row of it cascading (files' and exports' objects are queued by their triggers, sessions and secrets go with it).
create or replace function app_private.erase_organization(org_id uuid, reason text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
  v_files int;
  v_documents int;
  v_service_users uuid[];
begin
  select * into v_org from app_public.organizations o where o.id = erase_organization.org_id for update;
  -- Locked now: a cancel that committed after the task listed the organization is seen here.
  if not found or v_org.deletion_scheduled_for is null or v_org.deletion_scheduled_for > now() then
    return false;
  end if;
  select count(*) into v_files from app_public.files f where f.org_id = v_org.id;
  select count(*) into v_documents from app_public.documents d where d.org_id = v_org.id;
  select coalesce(array_agg(k.user_id), '{}') into v_service_users from app_public.api_keys k where k.org_id = v_org.id;
  perform app_private.append_audit_event(v_org.id, 'organization_erased', 'organizations', v_org.id, '{}', null, null,
    jsonb_build_object('slug', v_org.slug, 'reason', erase_organization.reason, 'documents', v_documents, 'files', v_files,
                       'requested_by', v_org.deletion_requested_by, 'by_operator', v_org.deletion_by_operator),
    null, null, null, null, null);
  -- Its audit log outlives it, for its tier's audit retention (apply_retention purges it from this record).
  insert into app_private.erased_organizations (org_id, tier, erased_at) values (v_org.id, v_org.tier, now())
    on conflict on constraint erased_organizations_pkey do nothing;
  -- Uploads under way: their objects may be stored already (the cascade would forget their keys).
  perform app_private.release_pending_upload(v_org.id, p.storage_key, true) from app_private.pending_uploads p where p.org_id = v_org.id;
  -- Exports first: their rows reference jobs, which go with the organization too.
  delete from app_public.organization_exports e where e.org_id = v_org.id;
  delete from app_public.files f where f.org_id = v_org.id;
  delete from app_public.organizations o where o.id = v_org.id;
  -- Its API keys' service accounts belonged to it alone.
  delete from app_public.users u where u.id = any(v_service_users) and u.is_service;
  return true;
end;
$$;
comment on function app_private.erase_organization(uuid, text) is
  'Erases an organization and every row of it now (objects queued for deletion), recording organization_erased in its audit chain, which outlives it.';

-- From psql: erase at once (or after `grace`), as deleteOrganization would; the worker's task does the erasing, so
-- the organization's integrations are revoked at their providers first.
create or replace function app_admin.delete_organization(org_id uuid, grace interval default interval '0') returns timestamptz
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_due timestamptz := now() + coalesce(delete_organization.grace, interval '0');
begin
  update app_public.organizations o set deletion_scheduled_for = v_due, deletion_by_operator = true where o.id = delete_organization.org_id;
  if not found then
    raise exception 'No such organization.' using errcode = 'NTFND';
  end if;
  perform app_private.append_audit_event(delete_organization.org_id, 'organization_deletion_scheduled', 'organizations', delete_organization.org_id,
    '{deletion_scheduled_for}', null, null, jsonb_build_object('deletion_scheduled_for', v_due, 'by', 'operator'), null, null, null, null, null);
  perform app_private.schedule_erasure(v_due);
  return v_due;
end;
$$;
comment on function app_admin.delete_organization(uuid, interval) is
  E'Schedules an organization''s erasure (default: now); the worker revokes its integrations, deletes every row and file, and records organization_erased in its audit chain. Returns when.\nExample: select app_admin.delete_organization(''…uuid…'');';

-- ==================================================================================================================
-- Account deletion
--
-- A person deletes their own account: memberships, sessions, secrets, second factor and single sign-on links go;
-- the user row stays as an anonymous tombstone so that what they wrote stays attributed ("Deleted user") and no
-- reference breaks. Not while they are the last owner of an organization (CONFLICT): they hand it over, or delete
-- it, first.
-- ==================================================================================================================

alter table app_public.users add column if not exists deleted_at timestamptz;
comment on column app_public.users.deleted_at is 'When the person deleted their account; the row remains, anonymous, so their content stays attributed.';

create or replace function app_private.delete_account(user_id uuid) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org record;
  v_user app_public.users;
begin
  select * into v_user from app_public.users u where u.id = delete_account.user_id and u.deleted_at is null and not u.is_service for update;
  if not found then
    raise exception 'No such account.' using errcode = 'NTFND';
  end if;
  -- Each organization's owner rows are locked first, in one order, so two owners leaving at once (or a demotion
  -- racing this) cannot both pass the check and leave the organization with none.
  for v_org in
    select m.org_id, o.slug from app_public.memberships m join app_public.organizations o on o.id = m.org_id
     where m.user_id = v_user.id and m.role = 'owner' order by m.org_id
  loop
    perform 1 from app_public.memberships x where x.org_id = v_org.org_id and x.role = 'owner' order by x.id for update;
    if not exists (select 1 from app_public.memberships other join app_public.users ou on ou.id = other.user_id
                    where other.org_id = v_org.org_id and other.role = 'owner' and other.user_id <> v_user.id
                      and ou.is_active and ou.deleted_at is null) then
      raise exception 'You are the last owner of %: make someone else an owner, or delete the organization, first.', v_org.slug using errcode = 'TAKEN';
    end if;
  end loop;
  for v_org in select m.org_id from app_public.memberships m where m.user_id = v_user.id loop
    perform app_private.append_audit_event(v_org.org_id, 'account_deleted', 'users', v_user.id, '{}', null, null, '{}'::jsonb,
      v_user.id, null, null, (app_private.audit_actor()).request_id, (app_private.audit_actor()).client_ip);
  end loop;
  delete from app_private.sessions s where s.user_id = v_user.id;
  delete from app_public.memberships m where m.user_id = v_user.id;
  delete from app_private.user_secrets s where s.user_id = v_user.id;
  delete from app_private.user_mfa s where s.user_id = v_user.id;
  delete from app_private.mfa_recovery_codes s where s.user_id = v_user.id;
  delete from app_public.sso_identities s where s.user_id = v_user.id;
  delete from app_private.password_reset_tokens t where t.user_id = v_user.id;
  delete from app_private.email_verification_tokens t where t.user_id = v_user.id;
  delete from app_private.mail_outbox o where o.user_id = v_user.id;
  update app_public.users u
     set email = 'deleted-' || replace(u.id::text, '-', '') || '@deleted.quire.invalid', full_name = 'Deleted user',
         is_active = false, deleted_at = now(), last_login_at = null
   where u.id = v_user.id;
end;
$$;
comment on function app_private.delete_account(uuid) is
  'Deletes a person''s account (memberships, sessions, secrets, 2FA, SSO links), keeping an anonymous tombstone row; TAKEN (CONFLICT) while they are the last owner of an organization.';
grant execute on function app_private.delete_account(uuid) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- Retention
--
-- What each tier keeps, in days (NULL: forever); an organization may keep jobs and sync runs for less (settings
-- jobRetentionDays, syncRunRetentionDays); audit retention is an operator's (app_admin.set_tier_retention), never
-- an organization admin's. Jobs are removed only when they left nothing behind (a summary is content, kept with
-- its job); usage rows are the per-summary details, the monthly totals stay.
-- ==================================================================================================================

create table if not exists app_private.tier_retention (
  tier app_public.subscription_tier primary key,
  jobs_days int not null check (jobs_days >= 1),
  usage_days int not null check (usage_days >= 62),
  sync_runs_days int not null check (sync_runs_days >= 1),
  audit_days int check (audit_days >= 30)
);
comment on table app_private.tier_retention is 'Per tier: days finished jobs, usage details, sync runs and audit events are kept (audit NULL: forever).';
alter table app_private.tier_retention enable row level security;
alter table app_private.tier_retention force row level security;
drop policy if exists as_definer on app_private.tier_retention;
create policy as_definer on app_private.tier_retention to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

select set_config('quire.definer', 'on', true);
insert into app_private.tier_retention (tier, jobs_days, usage_days, sync_runs_days, audit_days) values
  ('free', 90, 400, 90, 365), ('basic', 365, 800, 180, 1095), ('premium', 730, 1200, 365, null)
  on conflict (tier) do nothing;
select set_config('quire.definer', '', true);

create or replace function app_admin.set_tier_retention(tier app_public.subscription_tier, jobs_days int, usage_days int, sync_runs_days int, audit_days int)
  returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_retention r
       set jobs_days = set_tier_retention.jobs_days, usage_days = set_tier_retention.usage_days,
           sync_runs_days = set_tier_retention.sync_runs_days, audit_days = set_tier_retention.audit_days
     where r.tier = set_tier_retention.tier
  $$;
comment on function app_admin.set_tier_retention(app_public.subscription_tier, int, int, int, int) is
  E'Sets how many days a tier keeps finished jobs, usage details (at least 62: the allowance counts this month''s), sync runs and audit events (NULL: forever; at least 30).\nExample: select app_admin.set_tier_retention(''free'', 90, 400, 90, 365);';

-- The two retention settings an organization's admins may shorten, beside trashRetentionDays.
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
        )
      )
  $$;

-- Days an organization keeps a kind of data: its own setting when shorter than its tier's, else the tier's.
create or replace function app_private.retention_days(org_id uuid, kind text) returns int
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case retention_days.kind
             when 'jobs' then least(r.jobs_days, (o.settings ->> 'jobRetentionDays')::int)
             when 'usage' then r.usage_days
             when 'sync_runs' then least(r.sync_runs_days, (o.settings ->> 'syncRunRetentionDays')::int)
             when 'audit' then r.audit_days
           end
      from app_public.organizations o join app_private.tier_retention r on r.tier = o.tier
     where o.id = retention_days.org_id
  $$;
comment on function app_private.retention_days(uuid, text) is 'Days an organization keeps jobs, usage, sync_runs or audit events (NULL: forever).';

-- Retention runs one organization per transaction (the task drives it), so no lock is held across organizations and
-- the audit sealer never waits on a whole pass. Deletes made by retention are recorded in the audit log by id alone
-- (quire.retention): removing data must not copy it into a log kept longer; and they leave the monthly usage totals
-- as they were (the allowance counts this month's).
create or replace function app_private.retention_organizations() returns setof uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.id from app_public.organizations o
    union
    select e.org_id from app_private.erased_organizations e
  $$;
comment on function app_private.retention_organizations() is 'Every organization retention applies to: those that exist, and the erased ones whose audit log remains.';

create or replace function app_private.apply_retention_to(org_id uuid, max_count int) returns table (kind text, removed bigint)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_now timestamptz := app_private.clock_now();
  v_tier app_public.subscription_tier;
  v_audit_days int;
  v_count bigint;
begin
  perform set_config('quire.retention', 'on', true);
  select o.tier into v_tier from app_public.organizations o where o.id = apply_retention_to.org_id;
  if not found then
    -- Erased: only its audit log is left.
    select r.audit_days into v_audit_days
      from app_private.erased_organizations e join app_private.tier_retention r on r.tier = e.tier
     where e.org_id = apply_retention_to.org_id;
  else
    v_audit_days := app_private.retention_days(apply_retention_to.org_id, 'audit');
    with gone as (
      delete from app_public.usage_records u where u.org_id = apply_retention_to.org_id and u.id in (
        select x.id from app_public.usage_records x
         where x.org_id = apply_retention_to.org_id
           and x.created_at < v_now - make_interval(days => app_private.retention_days(apply_retention_to.org_id, 'usage'))
         limit apply_retention_to.max_count)
      returning 1)
    select count(*) into v_count from gone;
    return query values ('usage_records', v_count);
    with gone as (
      delete from app_public.integration_sync_runs r where r.org_id = apply_retention_to.org_id and r.id in (
        select x.id from app_public.integration_sync_runs x
         where x.org_id = apply_retention_to.org_id
           and x.finished_at < v_now - make_interval(days => app_private.retention_days(apply_retention_to.org_id, 'sync_runs'))
         limit apply_retention_to.max_count)
      returning 1)
    select count(*) into v_count from gone;
    return query values ('sync_runs', v_count);
    -- A job goes once it left nothing: no summary, no sync run, no export, no usage row.
    with gone as (
      delete from app_public.jobs j where j.org_id = apply_retention_to.org_id and j.id in (
        select x.id from app_public.jobs x
         where x.org_id = apply_retention_to.org_id
           and x.finished_at < v_now - make_interval(days => app_private.retention_days(apply_retention_to.org_id, 'jobs'))
           and not exists (select 1 from app_public.summaries s where s.org_id = x.org_id and s.job_id = x.id)
           and not exists (select 1 from app_public.integration_sync_runs r where r.org_id = x.org_id and r.job_id = x.id)
           and not exists (select 1 from app_public.organization_exports e where e.org_id = x.org_id and e.job_id = x.id)
           and not exists (select 1 from app_public.usage_records u where u.org_id = x.org_id and u.job_id = x.id)
         limit apply_retention_to.max_count)
      returning 1)
    select count(*) into v_count from gone;
    return query values ('jobs', v_count);
    with gone as (
      delete from app_public.organization_exports x where x.org_id = apply_retention_to.org_id and x.expires_at < v_now returning 1)
    select count(*) into v_count from gone;
    return query values ('exports', v_count);
  end if;
  if v_audit_days is not null then
    return query values ('audit_events', app_admin.purge_audit_events(apply_retention_to.org_id, v_now - make_interval(days => v_audit_days)));
  end if;
end;
$$;
comment on function app_private.apply_retention_to(uuid, int) is
  'Removes one organization''s usage details, finished sync runs, finished jobs that left nothing behind, expired exports (at most `max_count` of each) and audit events past their retention (purged behind an anchor); for an erased organization, its audit events only. Returns the count of each kind.';

create or replace function app_private.apply_retention_everywhere() returns table (kind text, removed bigint)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_now timestamptz := app_private.clock_now();
  v_count bigint;
begin
  with gone as (delete from app_private.login_attempts a where a.attempted_at < v_now - interval '90 days' returning 1)
  select count(*) into v_count from gone;
  return query values ('login_attempts', v_count);
  with gone as (
    delete from app_private.sessions s
     where coalesce(s.revoked_at, s.expires_at) < v_now - interval '30 days'
       and not exists (select 1 from app_public.api_keys k where k.org_id = s.org_id and k.session_id = s.id)
    returning 1)
  select count(*) into v_count from gone;
  return query values ('sessions', v_count);
  with a as (delete from app_private.password_reset_tokens t where t.expires_at < v_now returning 1),
       b as (delete from app_private.email_verification_tokens t where t.expires_at < v_now returning 1),
       c as (delete from app_private.mfa_challenges t where t.expires_at < v_now returning 1),
       d as (delete from app_private.sso_states t where t.expires_at < v_now returning 1),
       e as (delete from app_private.sso_handoffs t where t.expires_at < v_now returning 1),
       f as (delete from app_private.oauth_states t where t.expires_at < v_now returning 1),
       g as (delete from app_private.mail_log t where t.queued_at < v_now - interval '7 days' returning 1)
  select (select count(*) from a) + (select count(*) from b) + (select count(*) from c) + (select count(*) from d)
       + (select count(*) from e) + (select count(*) from f) + (select count(*) from g) into v_count;
  return query values ('expired_tokens', v_count);
end;
$$;
comment on function app_private.apply_retention_everywhere() is
  'Removes sign-in attempts past 90 days, sessions ended 30 days ago (an API key''s stays with its key) and expired tokens; returns the count of each kind.';

-- The audit trigger, with retention's deletes recorded by id alone.
create or replace function app_private.tg__audit() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_old jsonb := case when tg_op <> 'INSERT' then to_jsonb(old) end;
  v_new jsonb := case when tg_op <> 'DELETE' then to_jsonb(new) end;
  v_row jsonb := coalesce(v_new, v_old);
  v_org uuid := case when tg_table_name = 'organizations' then (v_row->>'id')::uuid else (v_row->>'org_id')::uuid end;
  v_changed text[];
  v_action text := lower(tg_op);
  v_details jsonb := '{}';
  v_actor record;
begin
  if tg_table_name <> 'organizations' and not exists (select 1 from app_public.organizations o where o.id = v_org) then
    return null;
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(array_agg(n.key order by n.key), '{}') into v_changed
      from jsonb_each(v_new) n where n.key <> 'updated_at' and n.value is distinct from v_old->n.key;
    if cardinality(v_changed) = 0 then
      return null;
    end if;
    select jsonb_object_agg(o.key, o.value) into v_old from jsonb_each(v_old) o where o.key = any(v_changed);
    select jsonb_object_agg(n.key, n.value) into v_new from jsonb_each(v_new) n where n.key = any(v_changed);
    if tg_table_name = 'memberships' and 'role' = any(v_changed) then
      v_action := 'role_change';
    elsif tg_table_name = 'integrations' and 'status' = any(v_changed) then
      v_action := case v_new->>'status' when 'connected' then 'integration_connect' when 'disconnected' then 'integration_disconnect' else v_action end;
    end if;
  else
    select coalesce(array_agg(r.key order by r.key), '{}') into v_changed from jsonb_each(v_row) r where r.value <> 'null'::jsonb;
    if tg_table_name = 'integrations' then
      v_action := case tg_op when 'INSERT' then 'integration_connect' else 'integration_disconnect' end;
    end if;
  end if;
  if tg_nargs > 0 then
    v_old := v_old - tg_argv;
    v_new := v_new - tg_argv;
  end if;
  if tg_op = 'DELETE' and current_setting('quire.retention', true) = 'on' then
    v_old := null;
    v_changed := '{}';
    v_details := '{"retention": true}';
  end if;
  v_actor := app_private.audit_actor();
  insert into app_public.audit_events (
    org_id, occurred_at, actor_user_id, actor_session_id, actor_job_id, db_role, action, table_name, record_id,
    changed_columns, old_values, new_values, details, request_id, client_ip
  ) values (
    v_org, now(), v_actor.user_id, v_actor.session_id, v_actor.job_id, session_user, v_action, tg_table_name,
    (v_row->>'id')::uuid, v_changed, v_old, v_new, v_details, v_actor.request_id, v_actor.client_ip
  );
  return null;
end;
$$;

-- Usage counters, left alone by retention's deletes (they are this and past months' totals, the allowance's basis).
create or replace function app_private.tg_usage_records__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.usage_counters as c (org_id, month_start, summaries, prompt_tokens, completion_tokens)
    values (new.org_id, app_private.month_start(new.created_at), 1, new.prompt_tokens, new.completion_tokens)
    on conflict (org_id, month_start) do update
      set summaries = c.summaries + 1, prompt_tokens = c.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = c.completion_tokens + excluded.completion_tokens;
  elsif current_setting('quire.retention', true) is distinct from 'on' then
    update app_private.usage_counters c
       set summaries = greatest(c.summaries - 1, 0), prompt_tokens = greatest(c.prompt_tokens - old.prompt_tokens, 0),
           completion_tokens = greatest(c.completion_tokens - old.completion_tokens, 0)
     where c.org_id = old.org_id and c.month_start = app_private.month_start(old.created_at);
  end if;
  return null;
end;
$$;

-- Export archives count against storage, like files.
create or replace function app_private.tg_organization_exports__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.storage_usage as u (org_id, bytes) values (new.org_id, new.bytes)
    on conflict (org_id) do update set bytes = u.bytes + excluded.bytes;
  elsif tg_op = 'UPDATE' then
    update app_private.storage_usage u set bytes = greatest(u.bytes - old.bytes + new.bytes, 0) where u.org_id = new.org_id;
  else
    update app_private.storage_usage u set bytes = greatest(u.bytes - old.bytes, 0) where u.org_id = old.org_id;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_organization_exports__count() is 'Trigger (after insert, update of bytes, or delete on organization_exports): keeps storage_usage.bytes.';

drop trigger if exists _500_count on app_public.organization_exports;
create trigger _500_count after insert or update of bytes or delete on app_public.organization_exports
  for each row execute function app_private.tg_organization_exports__count();

-- ==================================================================================================================
-- The trash and history, after an attacker's review
-- ==================================================================================================================

-- A trashed document is read-only to what a person edits, not to the bookkeeping of other rows: deleting its author,
-- its trasher or its integration sets a reference to NULL, which is an UPDATE too and must go through.
create or replace function app_private.tg_documents__trashed_read_only() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if old.trashed_at is not null and new.trashed_at is not null
     and (new.title, new.content, new.format, new.metadata, new.external_url) is distinct from (old.title, old.content, old.format, old.metadata, old.external_url) then
    raise exception 'The document is in the trash; restore it first.' using errcode = 'NTFND';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_documents__trashed_read_only() is
  'Trigger: refuses changes to what a person edits of a document in the trash (NTFND); references other rows clear still go through.';

drop trigger if exists _050_trashed_read_only on app_public.documents;
create trigger _050_trashed_read_only before update of title, content, format, metadata, external_url on app_public.documents
  for each row when (old.trashed_at is not null) execute procedure app_private.tg_documents__trashed_read_only();

-- Trashing also cancels the unfinished jobs about the document's summaries (a publication).
create or replace function app_private.tg_documents__trash() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_actor record := app_private.audit_actor();
  v_job_id uuid;
begin
  update app_public.summaries s set trashed_at = new.trashed_at where s.org_id = new.org_id and s.document_id = new.id;
  update app_public.files f set trashed_at = new.trashed_at where f.org_id = new.org_id and f.document_id = new.id;
  update app_public.document_revisions r set trashed_at = new.trashed_at where r.org_id = new.org_id and r.document_id = new.id;
  if new.trashed_at is not null then
    for v_job_id in
      update app_public.jobs j
         set status = 'cancelled', finished_at = now(), error_code = 'DOCUMENT_DELETED', error_message = 'The document was moved to the trash.'
       where j.org_id = new.org_id and j.status in ('queued', 'running')
         and (j.document_id = new.id
              or j.summary_id in (select s.id from app_public.summaries s where s.org_id = new.org_id and s.document_id = new.id))
      returning j.id
    loop
      perform graphile_worker.remove_job(v_job_id::text);
    end loop;
  end if;
  perform app_private.append_audit_event(
    new.org_id, case when new.trashed_at is null then 'document_restored' else 'document_trashed' end, 'documents', new.id,
    '{trashed_at}', null, null, jsonb_build_object('title', new.title),
    v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  return null;
end;
$$;

-- Emptying the trash goes in batches (each well within a request's statement timeout): the caller repeats while
-- the answer is not 0.
drop function if exists app_public.empty_trash();
create or replace function app_public.empty_trash(max_count int default 200) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_count int;
  v_actor record;
begin
  perform app_private.require_role('admin', 'Only admins and owners empty the trash.', 'Sign in to empty the trash.');
  if empty_trash.max_count is null or empty_trash.max_count not between 1 and 1000 then
    raise exception 'maxCount is 1 to 1000.' using errcode = 'BADIN';
  end if;
  v_count := app_private.delete_trashed(app_public.current_org_id(), 'infinity', empty_trash.max_count);
  if v_count > 0 then
    v_actor := app_private.audit_actor();
    perform app_private.append_audit_event(
      app_public.current_org_id(), 'trash_emptied', 'documents', null, '{}', null, null, jsonb_build_object('documents', v_count),
      v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  end if;
  return v_count;
end;
$$;
comment on function app_public.empty_trash(int) is
  E'@resultFieldName deletedCount\nDeletes for good up to maxCount (default 200, at most 1000) documents of the trash, oldest first, with their summaries, revisions and files; returns how many (admins and owners). Call again until it answers 0.';
grant execute on function app_public.empty_trash(int) to :DATABASE_AUTHENTICATED;

-- Revisions count against the storage allowance like files: history is data the organization keeps.
create or replace function app_private.tg_document_revisions__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.storage_usage as u (org_id, bytes) values (new.org_id, octet_length(new.content))
    on conflict (org_id) do update set bytes = u.bytes + excluded.bytes;
  else
    update app_private.storage_usage u set bytes = greatest(u.bytes - octet_length(old.content), 0) where u.org_id = old.org_id;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_document_revisions__count() is 'Trigger (after insert or delete on document_revisions): counts revisions'' content in storage_usage.bytes.';

drop trigger if exists _500_count on app_public.document_revisions;
create trigger _500_count after insert or delete on app_public.document_revisions
  for each row execute function app_private.tg_document_revisions__count();

select set_config('quire.definer', 'on', true);
insert into app_private.storage_usage as u (org_id, bytes)
  select r.org_id, sum(octet_length(r.content)) from app_public.document_revisions r group by r.org_id
  on conflict (org_id) do update set bytes = u.bytes + excluded.bytes;
select set_config('quire.definer', '', true);

-- An abandoned upload's caller learns whether the reservation was still there: only then is the object its to delete
-- (none means the document's transaction committed after all, and the object is the file's).
drop function if exists app_hidden.release_upload(text);
create or replace function app_hidden.release_upload(storage_key text) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('member', 'Viewers cannot upload files.', 'Sign in to upload files.');
  return app_private.release_pending_upload(app_public.current_org_id(), release_upload.storage_key, true);
end;
$$;
comment on function app_hidden.release_upload(text) is
  'Abandons an upload: gives its reserved room back and queues its object for deletion; false when there was no such reservation (the upload committed).';
grant execute on function app_hidden.release_upload(text) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- Loose ends of the life cycle
-- ==================================================================================================================

-- Whether a stored object still belongs to a live row: a file not in the trash, or an unexpired export. The local
-- backend's download route asks before sending, so a link issued before a trash, an erasure or an expiry stops
-- working at once rather than when it expires.
create or replace function app_private.stored_object_live(storage_key text) returns boolean
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select exists (select 1 from app_public.files f
                    where f.storage_key = stored_object_live.storage_key and f.trashed_at is null
                      and f.org_id = (substring(stored_object_live.storage_key from '^orgs/([0-9a-f-]{36})/'))::uuid)
        or exists (select 1 from app_public.organization_exports e
                    where e.storage_key = stored_object_live.storage_key and e.expires_at > now()
                      and e.org_id = (substring(stored_object_live.storage_key from '^orgs/([0-9a-f-]{36})/'))::uuid)
  $$;
comment on function app_private.stored_object_live(text) is 'Whether the object is still a live file''s (not in the trash) or an unexpired export''s: the local download route''s last check.';
grant execute on function app_private.stored_object_live(text) to :DATABASE_AUTHENTICATOR;

-- What proves it is the person deleting their account: their password, or, for an account without one (single
-- sign-on only), a single sign-on from the last 10 minutes. NULL when the session is not live.
create or replace function app_private.account_deletion_proof(session_id uuid) returns text
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select case when sec.password_hash is not null then 'password'
                when s.auth_method = 'sso' and s.created_at > now() - interval '10 minutes' then 'recent_sso'
                else 'sign_in_again' end
      from app_private.sessions s
      left join app_private.user_secrets sec on sec.user_id = s.user_id
     where s.id = account_deletion_proof.session_id and s.revoked_at is null and s.expires_at > now()
  $$;
comment on function app_private.account_deletion_proof(uuid) is
  'For deleteMyAccount: password (check it), recent_sso (an account without a password signed in with SSO in the last 10 minutes) or sign_in_again; NULL for a session that is not live.';
grant execute on function app_private.account_deletion_proof(uuid) to :DATABASE_AUTHENTICATOR;

-- ==================================================================================================================
-- The worker's grants
-- ==================================================================================================================

grant execute on function app_private.retention_organizations() to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.apply_retention_to(uuid, int) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.apply_retention_everywhere() to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.organizations_due_for_erasure(int) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.integrations_to_revoke(uuid) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.erase_organization(uuid, text) to :DATABASE_AUTHENTICATOR;
