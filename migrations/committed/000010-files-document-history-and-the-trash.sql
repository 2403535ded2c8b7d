--! Previous: sha1:c1678b7be252a4a260baf33b008093b3a99bba17
--! Hash: sha1:2ba39890ce95266c560f37af296541c7e11bd405
--! Message: files, document history and the trash

-- Files, document history and the trash
--
-- An uploaded file's original is kept in object storage (the local filesystem or S3, chosen by the server's
-- configuration); the database keeps what it knows of it (`files`) and decides where it goes: every key is made
-- here, under the organization's own prefix, so no client ever names an object. Storage is counted against the
-- tier's allowance in O(1), like the monthly allowance. Objects cannot be deleted inside a transaction, so deleting
-- a file row (its document emptied from the trash, its organization erased) queues its key, and a worker task
-- removes the object after commit: a rolled-back deletion leaves the object in place.
--
-- Every content change keeps the previous revision, and deleting a document moves it to the trash with its
-- summaries and files, out of every list, search and live event until it is restored or purged.

-- ==================================================================================================================
-- Storage allowance
-- ==================================================================================================================

alter table app_private.tier_allowances add column if not exists storage_bytes bigint;
-- The tiers' rows are behind the definer policy even for the owner.
select set_config('quire.definer', 'on', true);
update app_private.tier_allowances
   set storage_bytes = case tier when 'free' then 1073741824 when 'basic' then 53687091200 else 536870912000 end
 where storage_bytes is null;
select set_config('quire.definer', '', true);
alter table app_private.tier_allowances alter column storage_bytes set not null;
alter table app_private.tier_allowances drop constraint if exists tier_allowances_storage_bytes_check;
alter table app_private.tier_allowances add constraint tier_allowances_storage_bytes_check check (storage_bytes >= 0);
comment on column app_private.tier_allowances.storage_bytes is 'Bytes of stored files (originals, exports) an organization of the tier may keep.';

drop function if exists app_admin.set_tier_storage(app_public.subscription_tier, bigint);
create function app_admin.set_tier_storage(tier app_public.subscription_tier, storage_bytes bigint) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.tier_allowances a set storage_bytes = set_tier_storage.storage_bytes where a.tier = set_tier_storage.tier
  $$;
comment on function app_admin.set_tier_storage(app_public.subscription_tier, bigint) is
  E'Sets how many bytes of files an organization of the tier may store.\nExample: select app_admin.set_tier_storage(''free'', 2 * 1024^3);';

-- What an organization stores: the files it keeps and the uploads under way (reserved before their bytes are sent,
-- so two uploads at once cannot both fit in the room of one).
create table if not exists app_private.storage_usage (
  org_id uuid primary key references app_public.organizations on delete cascade,
  bytes bigint not null default 0 check (bytes >= 0),
  reserved_bytes bigint not null default 0 check (reserved_bytes >= 0)
);
comment on table app_private.storage_usage is 'Per organization: bytes of stored files (kept by a trigger on files) and bytes reserved by uploads under way.';

alter table app_private.storage_usage enable row level security;
alter table app_private.storage_usage force row level security;
drop policy if exists as_definer on app_private.storage_usage;
create policy as_definer on app_private.storage_usage to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- ==================================================================================================================
-- Files
-- ==================================================================================================================

create table if not exists app_public.files (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  document_id uuid not null,
  name text check (char_length(name) between 1 and 255),
  content_type text not null check (content_type ~ '^[a-z0-9.+-]{1,60}/[a-z0-9.+-]{1,80}$'),
  bytes bigint not null check (bytes >= 0),
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  storage_key text not null check (storage_key ~ '^orgs/[0-9a-f-]{36}/[a-z]+/[0-9a-f-]{36}$'),
  created_by uuid default app_public.current_user_id() references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  trashed_at timestamptz,
  primary key (org_id, id),
  unique (org_id, storage_key),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete cascade,
  check (split_part(storage_key, '/', 2) = org_id::text)
);

create index if not exists files_id_idx on app_public.files (id);
create index if not exists files_org_id_document_id_idx on app_public.files (org_id, document_id);
create index if not exists files_org_id_created_by_idx on app_public.files (org_id, created_by);

comment on table app_public.files is
  E'@primaryKey id\n@behavior -insert -update -delete\nThe original of an uploaded file, kept in object storage beside the document extracted from it. Download it with fileDownloadUrl.';
comment on constraint files_pkey on app_public.files is '@behavior -single -update -delete';
comment on constraint files_org_id_storage_key_key on app_public.files is '@behavior -*';
comment on column app_public.files.name is 'The file''s name as uploaded (without any path), or NULL when it had none.';
comment on column app_public.files.content_type is 'The media type detected from the file''s bytes (never the one the client claimed).';
comment on column app_public.files.bytes is 'Size of the original in bytes.';
comment on column app_public.files.sha256 is 'SHA-256 (hex) of the original.';
comment on column app_public.files.storage_key is E'@behavior -*\nWhere the object is stored, under the organization''s prefix; never shown.';
comment on column app_public.files.trashed_at is 'When the file''s document was moved to the trash (the file went with it).';
comment on constraint files_org_id_fkey on app_public.files is E'@fieldName organization\n@foreignFieldName files';
comment on constraint files_org_id_document_id_fkey on app_public.files is E'@fieldName document\n@foreignFieldName files';
comment on constraint files_created_by_fkey on app_public.files is E'@fieldName creator\n@foreignFieldName createdFiles';

-- A trashed row is seen by no API role: functions about the trash (security definer) read it themselves.

alter table app_public.files enable row level security;
alter table app_public.files force row level security;

drop policy if exists as_definer on app_public.files;
create policy as_definer on app_public.files to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_own_org on app_public.files;
create policy select_own_org on app_public.files for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and trashed_at is null);

-- Rows are written by app_hidden.attach_file only; the storage key is never readable through the API.
grant select (org_id, id, document_id, name, content_type, bytes, sha256, created_by, created_at, trashed_at)
  on app_public.files to :DATABASE_AUTHENTICATED;

drop trigger if exists _900_audit on app_public.files;
create trigger _900_audit after insert or update or delete on app_public.files
  for each row execute procedure app_private.tg__audit('storage_key');

-- Storage used follows the rows, in the transactions that change them.
create or replace function app_private.tg_files__count() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if tg_op = 'INSERT' then
    insert into app_private.storage_usage as u (org_id, bytes) values (new.org_id, new.bytes)
    on conflict (org_id) do update set bytes = u.bytes + excluded.bytes;
  else
    update app_private.storage_usage u set bytes = greatest(u.bytes - old.bytes, 0) where u.org_id = old.org_id;
  end if;
  return null;
end;
$$;
comment on function app_private.tg_files__count() is 'Trigger (after insert or delete on files): keeps storage_usage.bytes.';

drop trigger if exists _500_count on app_public.files;
create trigger _500_count after insert or delete on app_public.files
  for each row execute function app_private.tg_files__count();

-- Objects whose rows are gone, waiting for the worker to delete them from storage. No reference to the
-- organization: the queue outlives an erased organization, whose objects still have to go.
create table if not exists app_private.storage_deletions (
  id bigint generated always as identity,
  org_id uuid not null,
  storage_key text not null,
  queued_at timestamptz not null default now(),
  primary key (org_id, id)
);
create index if not exists storage_deletions_id_idx on app_private.storage_deletions (id);
comment on table app_private.storage_deletions is 'Objects to delete from storage after commit (delete_stored_objects task).';

alter table app_private.storage_deletions enable row level security;
alter table app_private.storage_deletions force row level security;
drop policy if exists as_definer on app_private.storage_deletions;
create policy as_definer on app_private.storage_deletions to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- One job however many keys a statement queued: the key coalesces them.
create or replace function app_private.queue_storage_deletion(org_id uuid, storage_keys text[]) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if cardinality(queue_storage_deletion.storage_keys) = 0 then
    return;
  end if;
  insert into app_private.storage_deletions (org_id, storage_key)
    select queue_storage_deletion.org_id, k from unnest(queue_storage_deletion.storage_keys) k;
  perform graphile_worker.add_job('delete_stored_objects', '{}'::json, job_key => 'delete_stored_objects', max_attempts => 10);
end;
$$;
comment on function app_private.queue_storage_deletion(uuid, text[]) is 'Queues objects for deletion from storage once the transaction commits.';

create or replace function app_private.tg_files__queue_deletion() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_batch record;
begin
  for v_batch in select d.org_id, array_agg(d.storage_key) as storage_keys from deleted_files d group by d.org_id loop
    perform app_private.queue_storage_deletion(v_batch.org_id, v_batch.storage_keys);
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_files__queue_deletion() is 'Trigger (after delete on files, per statement): queues the deleted rows'' objects for deletion.';

drop trigger if exists _900_queue_deletion on app_public.files;
create trigger _900_queue_deletion after delete on app_public.files
  referencing old table as deleted_files for each statement execute function app_private.tg_files__queue_deletion();

-- The worker takes a batch, deletes the objects, then says which are done. Deleting an object twice is harmless, so
-- two workers sharing a batch cost a request, never a mistake.
create or replace function app_private.storage_deletions_due(max_count int) returns table (id bigint, storage_key text)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.id, d.storage_key from app_private.storage_deletions d order by d.id limit least(greatest(max_count, 1), 1000)
  $$;
comment on function app_private.storage_deletions_due(int) is 'The oldest objects waiting to be deleted from storage (at most 1000).';

create or replace function app_private.storage_deletions_done(ids bigint[]) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ delete from app_private.storage_deletions d where d.id = any(storage_deletions_done.ids) $$;
comment on function app_private.storage_deletions_done(bigint[]) is 'Forgets objects the worker deleted from storage.';

-- ==================================================================================================================
-- Uploads: reserve, store, attach
--
-- The server reserves room and a key (one round trip), stores the object under that key, then inserts the document
-- and attaches the file in one transaction. A failure between them releases the reservation and deletes the
-- object; a server that dies between them leaves a reservation the worker sweeps (the object is deleted and the
-- room given back), so no object outlives its upload without a row.
-- ==================================================================================================================

create table if not exists app_private.pending_uploads (
  org_id uuid not null references app_public.organizations on delete cascade,
  storage_key text not null,
  bytes bigint not null check (bytes >= 0),
  created_at timestamptz not null default now(),
  primary key (org_id, storage_key)
);
comment on table app_private.pending_uploads is 'Keys handed out for uploads under way, with the room they reserved.';
create index if not exists pending_uploads_created_at_idx on app_private.pending_uploads (created_at);

alter table app_private.pending_uploads enable row level security;
alter table app_private.pending_uploads force row level security;
drop policy if exists as_definer on app_private.pending_uploads;
create policy as_definer on app_private.pending_uploads to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

-- Room for `bytes` more, or QUOTA. Holds the organization's usage row locked until commit, so concurrent reservations
-- see each other.
create or replace function app_private.reserve_storage(org_id uuid, bytes bigint) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_used bigint;
  v_allowance bigint;
begin
  insert into app_private.storage_usage as u (org_id, reserved_bytes) values (reserve_storage.org_id, 0)
  on conflict on constraint storage_usage_pkey do update set reserved_bytes = u.reserved_bytes
  returning u.bytes + u.reserved_bytes into v_used;
  select a.storage_bytes into v_allowance
    from app_public.organizations o join app_private.tier_allowances a on a.tier = o.tier where o.id = reserve_storage.org_id;
  if v_used + reserve_storage.bytes > v_allowance then
    raise exception 'The organization''s storage allowance of % bytes is used up (% bytes stored).', v_allowance, v_used using errcode = 'QUOTA';
  end if;
  update app_private.storage_usage u set reserved_bytes = u.reserved_bytes + reserve_storage.bytes where u.org_id = reserve_storage.org_id;
end;
$$;
comment on function app_private.reserve_storage(uuid, bigint) is 'Reserves room for `bytes` in the organization''s storage allowance, or raises QUOTA (QUOTA_EXCEEDED).';

create or replace function app_hidden.reserve_upload(bytes bigint) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_key text;
begin
  perform app_private.require_role('member', 'Viewers cannot upload files.', 'Sign in to upload files.');
  v_org_id := app_public.current_org_id();
  if reserve_upload.bytes is null or reserve_upload.bytes < 0 then
    raise exception 'A file''s size must be given.' using errcode = 'BADIN';
  end if;
  perform app_private.reserve_storage(v_org_id, reserve_upload.bytes);
  v_key := 'orgs/' || v_org_id || '/files/' || gen_random_uuid();
  insert into app_private.pending_uploads (storage_key, org_id, bytes) values (v_key, v_org_id, reserve_upload.bytes);
  return v_key;
end;
$$;
comment on function app_hidden.reserve_upload(bigint) is
  'An upload''s first step: reserves room for `bytes` (QUOTA_EXCEEDED when there is none) and returns the storage key the object goes under. Members and above.';
grant execute on function app_hidden.reserve_upload(bigint) to :DATABASE_AUTHENTICATED;

-- Gives a reservation's room back. With `queue_object`, its object is queued for deletion too (it may have been
-- stored before the upload failed).
create or replace function app_private.release_pending_upload(org_id uuid, storage_key text, queue_object boolean) returns boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_bytes bigint;
begin
  delete from app_private.pending_uploads p
   where p.org_id = release_pending_upload.org_id and p.storage_key = release_pending_upload.storage_key
  returning p.bytes into v_bytes;
  if not found then
    return false;
  end if;
  update app_private.storage_usage u set reserved_bytes = greatest(u.reserved_bytes - v_bytes, 0)
   where u.org_id = release_pending_upload.org_id;
  if release_pending_upload.queue_object then
    perform app_private.queue_storage_deletion(release_pending_upload.org_id, array[release_pending_upload.storage_key]);
  end if;
  return true;
end;
$$;
comment on function app_private.release_pending_upload(uuid, text, boolean) is 'Ends a reservation, giving its room back (and with queue_object, queueing its object for deletion).';

create or replace function app_hidden.release_upload(storage_key text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.require_role('member', 'Viewers cannot upload files.', 'Sign in to upload files.');
  perform app_private.release_pending_upload(app_public.current_org_id(), release_upload.storage_key, true);
end;
$$;
comment on function app_hidden.release_upload(text) is 'Abandons an upload: gives its reserved room back and queues its object (if stored) for deletion.';
grant execute on function app_hidden.release_upload(text) to :DATABASE_AUTHENTICATED;

-- The file row, in the transaction that inserted its document: only for a key this organization reserved, and of
-- the size it reserved, so a key can neither be borrowed from another organization nor reused.
create or replace function app_hidden.attach_file(document_id uuid, storage_key text, name text, content_type text, bytes bigint, sha256 text)
  returns uuid
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_reserved bigint;
  v_id uuid;
begin
  perform app_private.require_role('member', 'Viewers cannot upload files.', 'Sign in to upload files.');
  v_org_id := app_public.current_org_id();
  select p.bytes into v_reserved from app_private.pending_uploads p
   where p.org_id = v_org_id and p.storage_key = attach_file.storage_key for update;
  if not found or v_reserved <> attach_file.bytes then
    raise exception 'No such upload.' using errcode = 'NTFND';
  end if;
  if not exists (select 1 from app_public.documents d where d.org_id = v_org_id and d.id = attach_file.document_id and d.trashed_at is null) then
    raise exception 'No such document.' using errcode = 'NTFND';
  end if;
  perform app_private.release_pending_upload(v_org_id, attach_file.storage_key, false);
  insert into app_public.files (org_id, document_id, name, content_type, bytes, sha256, storage_key, created_by)
    values (v_org_id, attach_file.document_id, attach_file.name, attach_file.content_type, attach_file.bytes, attach_file.sha256,
            attach_file.storage_key, app_public.current_user_id())
    returning id into v_id;
  return v_id;
end;
$$;
comment on function app_hidden.attach_file(uuid, text, text, text, bigint, text) is
  'An upload''s last step, in the document''s transaction: records the stored original of a reserved key. Members and above.';
grant execute on function app_hidden.attach_file(uuid, text, text, text, bigint, text) to :DATABASE_AUTHENTICATED;

-- Reservations of uploads that never finished (a server stopped between storing and committing): their objects are
-- queued for deletion and their room given back.
create or replace function app_private.sweep_pending_uploads(older_than interval) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_upload record;
  v_count int := 0;
begin
  for v_upload in
    select p.org_id, p.storage_key from app_private.pending_uploads p
     where p.created_at < now() - sweep_pending_uploads.older_than
     order by p.created_at limit 1000 for update skip locked
  loop
    if app_private.release_pending_upload(v_upload.org_id, v_upload.storage_key, true) then
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.sweep_pending_uploads(interval) is 'Ends reservations older than `older_than` (at most 1000 a call), queueing their objects for deletion; returns how many.';

-- What a download needs: the file's key and name, for a file the caller can see (any role).
create or replace function app_hidden.file_download(file_id uuid)
  returns table (storage_key text, name text, content_type text, bytes bigint)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform app_private.check_role(app_private.lock_member_role(), 'viewer', 'You cannot download files.', 'Sign in to download files.');
  return query
    select f.storage_key, f.name, f.content_type, f.bytes from app_public.files f
     where f.org_id = app_public.current_org_id() and f.id = file_download.file_id and f.trashed_at is null;
  if not found then
    raise exception 'No such file.' using errcode = 'NTFND';
  end if;
end;
$$;
comment on function app_hidden.file_download(uuid) is 'The storage key and name of one of the organization''s files, for a signed download URL; NTFND otherwise.';
grant execute on function app_hidden.file_download(uuid) to :DATABASE_AUTHENTICATED;

drop function if exists app_public.organization_storage();
drop type if exists app_public.organization_storage;
create type app_public.organization_storage as (used_bytes bigint, reserved_bytes bigint, allowance_bytes bigint);
comment on type app_public.organization_storage is 'Storage of an organization against its tier''s allowance.';

create function app_public.organization_storage() returns app_public.organization_storage
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce(u.bytes, 0), coalesce(u.reserved_bytes, 0), a.storage_bytes
      from app_public.organizations o
      join app_private.tier_allowances a on a.tier = o.tier
      left join app_private.storage_usage u on u.org_id = o.id
     where o.id = app_public.current_org_id()
  $$;
comment on function app_public.organization_storage() is
  'Storage of the current organization: bytes of files kept (the trash included), bytes reserved by uploads under way, and the tier''s allowance (QUOTA_EXCEEDED past it).';
grant execute on function app_public.organization_storage() to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- Document history
-- ==================================================================================================================

create table if not exists app_public.document_revisions (
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  id uuid not null default gen_random_uuid(),
  document_id uuid not null,
  revision int not null check (revision >= 1),
  title text not null,
  content text not null,
  format app_public.document_format not null,
  content_hash text not null,
  created_at timestamptz not null,
  replaced_at timestamptz not null default now(),
  replaced_by uuid default app_public.current_user_id() references app_public.users on delete set null,
  trashed_at timestamptz,
  primary key (org_id, id),
  unique (org_id, document_id, revision),
  foreign key (org_id, document_id) references app_public.documents (org_id, id) on delete cascade
);

create index if not exists document_revisions_id_idx on app_public.document_revisions (id);
create index if not exists document_revisions_org_id_replaced_by_idx on app_public.document_revisions (org_id, replaced_by);

comment on table app_public.document_revisions is
  E'@primaryKey id\n@behavior -insert -update -delete\nA previous revision of a document, kept when its content changed (the newest 100). Immutable; restoreDocumentRevision makes one current again (as a new revision). List a document''s with documentRevisions(condition: { documentId }) or Document.revisions.';
comment on constraint document_revisions_pkey on app_public.document_revisions is '@behavior -single -update -delete';
comment on constraint document_revisions_org_id_document_id_revision_key on app_public.document_revisions is '@behavior -*';
comment on column app_public.document_revisions.created_at is 'When this revision became current.';
comment on column app_public.document_revisions.replaced_at is 'When a newer revision replaced it.';
comment on column app_public.document_revisions.replaced_by is 'Who made the change that replaced it (NULL for a job or an operator).';
comment on column app_public.document_revisions.revision is E'@behavior +attribute:orderBy\nThe document''s revision number this content had.';
comment on column app_public.document_revisions.trashed_at is 'When the revision''s document was moved to the trash (the revision went with it).';
comment on constraint document_revisions_org_id_fkey on app_public.document_revisions is E'@fieldName organization\n@foreignFieldName documentRevisions';
comment on constraint document_revisions_org_id_document_id_fkey on app_public.document_revisions is E'@fieldName document\n@foreignFieldName revisions';
comment on constraint document_revisions_replaced_by_fkey on app_public.document_revisions is E'@fieldName replacer\n@foreignFieldName replacedRevisions';

alter table app_public.document_revisions enable row level security;
alter table app_public.document_revisions force row level security;

drop policy if exists as_definer on app_public.document_revisions;
create policy as_definer on app_public.document_revisions to :DATABASE_OWNER
  using (current_setting('quire.definer', true) = 'on') with check (current_setting('quire.definer', true) = 'on');

drop policy if exists select_own_org on app_public.document_revisions;
create policy select_own_org on app_public.document_revisions for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and trashed_at is null);

grant select on app_public.document_revisions to :DATABASE_AUTHENTICATED;

-- Revisions are written by the documents trigger only; a document keeps its newest 100 (each at most
-- DOCUMENT_MAX_BYTES), so its history is bounded like everything else a client can grow.
create or replace function app_private.tg_documents__keep_revision() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  insert into app_public.document_revisions (org_id, document_id, revision, title, content, format, content_hash, created_at, replaced_by)
    values (old.org_id, old.id, old.revision, old.title, old.content, old.format, old.content_hash,
            coalesce((select max(r.replaced_at) from app_public.document_revisions r where r.org_id = old.org_id and r.document_id = old.id), old.created_at),
            app_public.current_user_id())
    on conflict (org_id, document_id, revision) do nothing;
  delete from app_public.document_revisions r
   where r.org_id = old.org_id and r.document_id = old.id and r.revision <= old.revision - 100;
  return null;
end;
$$;
comment on function app_private.tg_documents__keep_revision() is 'Trigger: keeps the content a change replaced as an immutable revision (the newest 100 per document).';

drop trigger if exists _600_keep_revision on app_public.documents;
create trigger _600_keep_revision after update of content on app_public.documents
  for each row when (new.revision > old.revision) execute procedure app_private.tg_documents__keep_revision();

drop trigger if exists _900_audit on app_public.document_revisions;
create trigger _900_audit after insert or update or delete on app_public.document_revisions
  for each row execute procedure app_private.tg__audit('content');

-- ==================================================================================================================
-- The trash
-- ==================================================================================================================

alter table app_public.documents add column if not exists trashed_at timestamptz;
alter table app_public.documents add column if not exists trashed_by uuid references app_public.users on delete set null;
comment on column app_public.documents.trashed_at is 'When the document was moved to the trash (NULL: it is not in the trash).';
comment on column app_public.documents.trashed_by is 'Who moved it to the trash.';
comment on constraint documents_trashed_by_fkey on app_public.documents is E'@fieldName trasher\n@foreignFieldName documentsTrashed';
create index if not exists documents_org_id_trashed_at_idx on app_public.documents (org_id, trashed_at) where trashed_at is not null;
create index if not exists documents_org_id_trashed_by_idx on app_public.documents (org_id, trashed_by);

alter table app_public.summaries add column if not exists trashed_at timestamptz;
comment on column app_public.summaries.trashed_at is 'When the summary''s document was moved to the trash (the summary went with it).';

-- Deleting moves to the trash: the API no longer deletes documents itself (emptyTrash and the purge do).
comment on table app_public.documents is
  E'@primaryKey id\n@behavior -delete\nA document of the organization''s knowledge base. Members write; everyone in the organization reads. deleteDocument moves it to the trash.';
revoke delete on app_public.documents from :DATABASE_AUTHENTICATED;
drop policy if exists delete_as_member on app_public.documents;

drop policy if exists select_own_org on app_public.documents;
create policy select_own_org on app_public.documents for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and trashed_at is null);

drop policy if exists select_own_org on app_public.summaries;
create policy select_own_org on app_public.summaries for select to :DATABASE_AUTHENTICATED
  using (org_id = app_public.current_org_id() and trashed_at is null);

-- A trashed row leaves live updates as if deleted and comes back as if inserted; while in the trash it sends none.
create or replace function app_private.tg__live_event() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_row jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
  v_org_id uuid := (v_row ->> 'org_id')::uuid;
  v_id uuid := (v_row ->> 'id')::uuid;
  v_op text := lower(tg_op);
  v_was_trashed boolean := tg_op <> 'INSERT' and (to_jsonb(old) ->> 'trashed_at') is not null;
  v_is_trashed boolean := tg_op <> 'DELETE' and (to_jsonb(new) ->> 'trashed_at') is not null;
begin
  -- A document deleted together with its organization has no outbox left to write to.
  if tg_op = 'DELETE' and not exists (select 1 from app_public.organizations o where o.id = v_org_id) then
    return null;
  end if;
  if v_was_trashed and (v_is_trashed or tg_op = 'DELETE') or tg_op = 'INSERT' and v_is_trashed then
    return null;
  elsif v_is_trashed then
    v_op := 'delete';
  elsif v_was_trashed then
    v_op := 'insert';
  end if;
  insert into app_public.live_events (org_id, seq, entity, op, entity_id, document_id)
    values (v_org_id, null, tg_argv[0], v_op, v_id,
            case tg_argv[0] when 'document' then v_id else (v_row ->> 'document_id')::uuid end);
  return null;
end;
$$;

-- Moving a document in or out of the trash takes its summaries, files and revisions along; moving it in cancels its unfinished
-- jobs (no LLM call is spent on a trashed document) and both are named in the audit log.
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
       where j.org_id = new.org_id and j.document_id = new.id and j.status in ('queued', 'running')
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
comment on function app_private.tg_documents__trash() is
  'Trigger: a document moved to or out of the trash takes its summaries, files and revisions along, cancels its unfinished jobs when trashed, and records document_trashed or document_restored.';

drop trigger if exists _500_trash on app_public.documents;
create trigger _500_trash after update of trashed_at on app_public.documents
  for each row when (new.trashed_at is distinct from old.trashed_at) execute procedure app_private.tg_documents__trash();

-- A document in the trash is read-only: restore it first.
create or replace function app_private.tg_documents__trashed_read_only() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if old.trashed_at is not null and new.trashed_at is not null then
    raise exception 'The document is in the trash; restore it first.' using errcode = 'NTFND';
  end if;
  return new;
end;
$$;
comment on function app_private.tg_documents__trashed_read_only() is 'Trigger: refuses changes to a document in the trash (NTFND), except taking it out.';

drop trigger if exists _050_trashed_read_only on app_public.documents;
create trigger _050_trashed_read_only before update on app_public.documents
  for each row when (old.trashed_at is not null) execute procedure app_private.tg_documents__trashed_read_only();

create or replace function app_public.delete_document(document_id uuid) returns app_public.documents
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_document app_public.documents;
begin
  perform app_private.require_role('member', 'Viewers cannot delete documents.', 'Sign in to delete documents.');
  update app_public.documents d set trashed_at = now(), trashed_by = app_public.current_user_id()
   where d.org_id = app_public.current_org_id() and d.id = delete_document.document_id and d.trashed_at is null
  returning * into v_document;
  if not found then
    raise exception 'No such document.' using errcode = 'NTFND';
  end if;
  return v_document;
end;
$$;
comment on function app_public.delete_document(uuid) is
  E'@resultFieldName document\nMoves a document to the trash with its summaries and files (members and above): it leaves every list, search and live update, and its unfinished jobs are cancelled. restoreDocument brings it back; emptyTrash or the organization''s purge (trashRetentionDays, default 30) deletes it for good.';
grant execute on function app_public.delete_document(uuid) to :DATABASE_AUTHENTICATED;

create or replace function app_public.restore_document(document_id uuid) returns app_public.documents
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_document app_public.documents;
begin
  perform app_private.require_role('member', 'Viewers cannot restore documents.', 'Sign in to restore documents.');
  update app_public.documents d set trashed_at = null, trashed_by = null
   where d.org_id = app_public.current_org_id() and d.id = restore_document.document_id and d.trashed_at is not null
  returning * into v_document;
  if not found then
    raise exception 'No such document in the trash.' using errcode = 'NTFND';
  end if;
  return v_document;
end;
$$;
comment on function app_public.restore_document(uuid) is
  E'@resultFieldName document\nTakes a document out of the trash, with its summaries and files (members and above).';
grant execute on function app_public.restore_document(uuid) to :DATABASE_AUTHENTICATED;

create or replace function app_public.trashed_documents() returns setof app_public.documents
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select d.* from app_public.documents d
     where d.org_id = app_public.current_org_id() and d.trashed_at is not null
     order by d.trashed_at desc, d.id
  $$;
comment on function app_public.trashed_documents() is 'The organization''s documents in the trash, most recently trashed first (their summaries and files come back with restoreDocument).';
grant execute on function app_public.trashed_documents() to :DATABASE_AUTHENTICATED;

-- Hard deletion, for the trash only. Deleting the rows cascades to summaries, revisions and files; the files'
-- objects are queued for deletion by their trigger.
create or replace function app_private.delete_trashed(org_id uuid, trashed_before timestamptz, max_count int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_count int;
begin
  with gone as (
    delete from app_public.documents d
     where d.org_id = delete_trashed.org_id and d.id in (
       select t.id from app_public.documents t
        where t.org_id = delete_trashed.org_id and t.trashed_at is not null and t.trashed_at < delete_trashed.trashed_before
        order by t.trashed_at limit delete_trashed.max_count
          for update skip locked)
    returning 1)
  select count(*) into v_count from gone;
  return v_count;
end;
$$;
comment on function app_private.delete_trashed(uuid, timestamptz, int) is
  'Deletes for good up to `max_count` of an organization''s documents trashed before `trashed_before`, with their summaries, revisions and files; returns how many.';

create or replace function app_public.empty_trash() returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_count int;
  v_actor record;
begin
  perform app_private.require_role('admin', 'Only admins and owners empty the trash.', 'Sign in to empty the trash.');
  v_count := app_private.delete_trashed(app_public.current_org_id(), 'infinity', 10000);
  v_actor := app_private.audit_actor();
  perform app_private.append_audit_event(
    app_public.current_org_id(), 'trash_emptied', 'documents', null, '{}', null, null, jsonb_build_object('documents', v_count),
    v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  return v_count;
end;
$$;
comment on function app_public.empty_trash() is
  E'@resultFieldName deletedCount\nDeletes for good every document in the trash (at most 10,000 a call), with its summaries, revisions and files; returns how many (admins and owners).';
grant execute on function app_public.empty_trash() to :DATABASE_AUTHENTICATED;

-- The scheduled purge: documents trashed longer ago than their organization's trashRetentionDays (default 30).
create or replace function app_private.purge_trash(max_count int) returns int
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org record;
  v_count int := 0;
begin
  for v_org in
    select distinct o.id, coalesce((o.settings ->> 'trashRetentionDays')::int, 30) as days
      from app_public.documents d join app_public.organizations o on o.id = d.org_id
     where d.trashed_at is not null
  loop
    exit when v_count >= purge_trash.max_count;
    v_count := v_count + app_private.delete_trashed(v_org.id, now() - make_interval(days => v_org.days), purge_trash.max_count - v_count);
  end loop;
  return v_count;
end;
$$;
comment on function app_private.purge_trash(int) is 'Deletes for good documents trashed longer ago than their organization''s trashRetentionDays (default 30), at most `max_count`; returns how many.';

-- trashRetentionDays joins the organization settings admins may change.
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
          or (s.key = 'trashRetentionDays' and jsonb_typeof(s.value) = 'number'
            and (s.value #>> '{}') ~ '^[0-9]{1,4}$' and (s.value #>> '{}')::int between 1 and 3650)
        )
      )
  $$;

-- ==================================================================================================================
-- Revisions: listing and restoring
-- ==================================================================================================================

create or replace function app_public.restore_document_revision(document_id uuid, revision int) returns app_public.documents
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_old app_public.document_revisions;
  v_document app_public.documents;
  v_actor record;
begin
  perform app_private.require_role('member', 'Viewers cannot restore revisions.', 'Sign in to restore revisions.');
  select r.* into v_old from app_public.document_revisions r
    join app_public.documents d on d.org_id = r.org_id and d.id = r.document_id and d.trashed_at is null
   where r.org_id = app_public.current_org_id() and r.document_id = restore_document_revision.document_id
     and r.revision = restore_document_revision.revision;
  if not found then
    raise exception 'No such revision.' using errcode = 'NTFND';
  end if;
  update app_public.documents d set title = v_old.title, content = v_old.content, format = v_old.format
   where d.org_id = v_old.org_id and d.id = v_old.document_id
  returning * into v_document;
  v_actor := app_private.audit_actor();
  perform app_private.append_audit_event(
    v_document.org_id, 'document_revision_restored', 'documents', v_document.id, '{content}', null, null,
    jsonb_build_object('restored_revision', v_old.revision, 'revision', v_document.revision),
    v_actor.user_id, v_actor.session_id, v_actor.job_id, v_actor.request_id, v_actor.client_ip);
  return v_document;
end;
$$;
comment on function app_public.restore_document_revision(uuid, int) is
  E'@resultFieldName document\nMakes a previous revision current again: its title, content and format become a new revision (the one replaced is kept). Members and above; NOT_FOUND for a revision the document does not have.';
grant execute on function app_public.restore_document_revision(uuid, int) to :DATABASE_AUTHENTICATED;


-- ==================================================================================================================
-- Functions that read documents as the owner: the trash is out of their reach too
-- ==================================================================================================================

create or replace function app_public.summarize_document(document_id uuid, template_id uuid default null) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_version record;
  v_job app_public.jobs;
begin
  perform app_private.require_role('member', 'Viewers cannot request summaries.', 'Sign in to request summaries.');
  if not exists (select 1 from app_public.documents d
                  where d.id = summarize_document.document_id and d.org_id = v_org_id and d.trashed_at is null) then
    raise exception 'No such document.' using errcode = 'NTFND';
  end if;
  select * into v_version
    from app_private.template_version_for(v_org_id, coalesce(summarize_document.template_id, app_private.default_template_id(v_org_id)));
  if v_version.template_version_id is null and v_version.global_template_version_id is null then
    raise exception 'No such template.' using errcode = 'NTFND';
  end if;
  perform app_private.check_allowance(v_org_id);
  insert into app_public.jobs (org_id, kind, document_id, template_version_id, global_template_version_id, requested_by)
    values (v_org_id, 'summarize', summarize_document.document_id, v_version.template_version_id, v_version.global_template_version_id,
            app_public.current_user_id())
    returning * into v_job;
  perform app_private.enqueue_job(v_job, 'summarize');
  return v_job;
end;
$$;

create or replace function app_public.publish_summary(summary_id uuid, integration_id uuid, parent_page_id text default null, space_id text default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_provider app_public.integration_provider;
begin
  if not exists (select 1 from app_public.summaries s
                  where s.id = publish_summary.summary_id and s.org_id = app_public.current_org_id() and s.trashed_at is null) then
    raise exception 'No such summary.' using errcode = 'NTFND';
  end if;
  select i.provider into v_provider from app_public.integrations i
   where i.id = publish_summary.integration_id and i.org_id = app_public.current_org_id();
  if coalesce(parent_page_id, '') !~ '^[A-Za-z0-9_-]{0,100}$' or coalesce(space_id, '') !~ '^[A-Za-z0-9_-]{0,100}$' then
    raise exception 'A page or space id is malformed.' using errcode = 'BADIN';
  end if;
  if v_provider = 'notion' and (parent_page_id is null or space_id is not null) then
    raise exception 'Publishing to Notion needs parentPageId (and no spaceId).' using errcode = 'BADIN';
  end if;
  if v_provider = 'confluence' and space_id is null then
    raise exception 'Publishing to Confluence needs spaceId (parentPageId is optional).' using errcode = 'BADIN';
  end if;
  return app_private.queue_integration_job('publish', publish_summary.integration_id,
    jsonb_strip_nulls(jsonb_build_object('parentPageId', parent_page_id, 'spaceId', space_id,
      'targetKey', case v_provider when 'notion' then 'notion:' || parent_page_id
                                   else 'confluence:' || space_id || ':' || coalesce(parent_page_id, '-') end)),
    publish_summary.summary_id);
end;
$$;

-- An import or sync writes a page's document by its (source, external id); a document of that page in the trash stays
-- there untouched. The conflict must see the trashed row, which no API role can, so this runs as the owner and
-- checks what the importer policies would: a running import or sync job of the organization.
create or replace function app_hidden.upsert_imported_document(
  title text, content text, source app_public.document_source, external_id text, external_url text, metadata jsonb, integration_id uuid,
  out inserted boolean)
  returns setof boolean
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if app_public.current_org_id() is null or app_public.current_job_kind() is distinct from 'import' and app_public.current_job_kind() is distinct from 'sync' then
    raise exception 'Only import and sync jobs write imported documents.' using errcode = 'DNIED';
  end if;
  return query
    insert into app_public.documents as d (org_id, title, content, format, source, external_id, external_url, metadata, integration_id, author_id)
    values (app_public.current_org_id(), upsert_imported_document.title, upsert_imported_document.content, 'markdown',
            upsert_imported_document.source, upsert_imported_document.external_id, upsert_imported_document.external_url,
            upsert_imported_document.metadata, upsert_imported_document.integration_id, app_public.current_user_id())
    on conflict on constraint documents_org_id_source_external_id_key do update
       set title = excluded.title, content = excluded.content, external_url = excluded.external_url, metadata = excluded.metadata
     where d.trashed_at is null
       and ((d.title, d.content) is distinct from (excluded.title, excluded.content) or d.metadata ? 'deletedAtSource')
    returning (d.xmax = 0);
end;
$$;
comment on function app_hidden.upsert_imported_document(text, text, app_public.document_source, text, text, jsonb, uuid) is
  'Inserts or updates an imported page''s document (import and sync jobs of the organization only); no row when nothing changed or the document is in the trash.';
grant execute on function app_hidden.upsert_imported_document(text, text, app_public.document_source, text, text, jsonb, uuid) to :DATABASE_AUTHENTICATED;

-- ==================================================================================================================
-- The worker's grants
-- ==================================================================================================================

grant execute on function app_private.storage_deletions_due(int) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.storage_deletions_done(bigint[]) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.sweep_pending_uploads(interval) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.purge_trash(int) to :DATABASE_AUTHENTICATOR;
