--! Previous: sha1:25e2edc813328f4492350a31b57c01eb32f5bb10
--! Hash: sha1:af5816df20206a89ef500ce2967e05da4807b7ea
--! Message: integrations

-- Notion workspaces and Confluence Cloud sites an organization connected. The row says what is connected and how
-- it is doing; the OAuth tokens are elsewhere (app_private.integration_secrets), sealed, and never in this table.
create type app_public.integration_provider as enum ('notion', 'confluence');
create type app_public.integration_status as enum ('connected', 'needs_reauth', 'disconnected');

create table app_public.integrations (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  provider app_public.integration_provider not null,
  status app_public.integration_status not null default 'connected',
  external_id text not null check (char_length(external_id) between 1 and 200),
  external_name text not null default '' check (char_length(external_name) <= 500),
  external_url text check (char_length(external_url) <= 2000 and external_url ~ '^https://'),
  scopes text[] not null default '{}',
  connected_by uuid references app_public.users on delete set null,
  last_sync_at timestamptz,
  last_sync_status text check (last_sync_status in ('finished', 'partial', 'failed')),
  last_error_code text check (last_error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, provider, external_id)
);
comment on table app_public.integrations is
  E'@behavior -insert -update -delete\nA Notion workspace or Confluence Cloud site connected to the organization (startIntegration). Admins connect and disconnect; everyone in the organization reads.';
comment on column app_public.integrations.external_id is 'The Notion workspace id or the Atlassian cloud id of the site.';
comment on column app_public.integrations.status is E'@behavior +attribute:filterBy\nconnected; needs_reauth once the provider refused our refresh token (an admin connects again); disconnected.';
comment on column app_public.integrations.last_error_code is 'Why the last sync or token refresh failed, e.g. INVALID_GRANT or RATE_LIMITED.';
comment on constraint integrations_connected_by_fkey on app_public.integrations is E'@fieldName connectedByUser\n@foreignFieldName connectedIntegrations';
create index integrations_org_id_connected_by_idx on app_public.integrations (org_id, connected_by);
create trigger _100_timestamps before insert or update on app_public.integrations
  for each row execute procedure app_private.tg__timestamps();
create trigger _900_live_event after insert or update or delete on app_public.integrations
  for each row execute procedure app_private.tg__live_event('integration');

alter table app_public.integrations enable row level security;
alter table app_public.integrations force row level security;
create policy as_definer on app_public.integrations to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.integrations for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
grant select on app_public.integrations to :DATABASE_AUTHENTICATED;

-- Sealed OAuth tokens: XChaCha20-Poly1305 with the organization, integration, provider and purpose as associated
-- data and the id of the key that sealed them (lib/sealing.ts). The database never sees a key or a plaintext
-- token; a ciphertext copied to another row fails to open.
create table app_private.integration_secrets (
  integration_id uuid primary key references app_public.integrations on delete cascade,
  org_id uuid not null references app_public.organizations on delete cascade,
  key_id text not null check (char_length(key_id) between 1 and 64),
  access_nonce bytea not null,
  access_ciphertext bytea not null,
  refresh_nonce bytea,
  refresh_ciphertext bytea,
  access_expires_at timestamptz,
  updated_at timestamptz not null default now(),
  check ((refresh_nonce is null) = (refresh_ciphertext is null))
);
comment on table app_private.integration_secrets is 'An integration''s OAuth tokens, sealed (lib/sealing.ts) under key_id.';
create index integration_secrets_org_id_idx on app_private.integration_secrets (org_id);
create index integration_secrets_key_id_idx on app_private.integration_secrets (key_id);
alter table app_private.integration_secrets enable row level security;
alter table app_private.integration_secrets force row level security;
create policy as_definer on app_private.integration_secrets to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- The OAuth authorization-code flow's `state`: random, single-use, valid for 10 minutes, bound to the user, the
-- organization and the provider, and stored as its SHA-256. The PKCE verifier waits here for the callback.
create table app_private.oauth_states (
  state_hash bytea primary key check (length(state_hash) = 32),
  org_id uuid not null references app_public.organizations on delete cascade,
  user_id uuid not null references app_public.users on delete cascade,
  provider app_public.integration_provider not null,
  return_to text not null,
  code_verifier text not null,
  expires_at timestamptz not null default now() + interval '10 minutes',
  used_at timestamptz,
  created_at timestamptz not null default now()
);
comment on table app_private.oauth_states is 'Pending OAuth authorizations: hashed state, who started it, where to return, the PKCE verifier.';
create index oauth_states_org_id_idx on app_private.oauth_states (org_id);
create index oauth_states_user_id_idx on app_private.oauth_states (user_id);
alter table app_private.oauth_states enable row level security;
alter table app_private.oauth_states force row level security;
create policy as_definer on app_private.oauth_states to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');

-- Imported documents remember the integration they came from (a sync compares them with the source).
alter table app_public.documents add column integration_id uuid;
alter table app_public.documents add foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete set null (integration_id);
comment on constraint documents_org_id_integration_id_fkey on app_public.documents is E'@fieldName integration\n@foreignFieldName documents';
create index documents_org_id_integration_id_idx on app_public.documents (org_id, integration_id);

-- Jobs remember the integration they work with and their parameters (page ids, publishing target).
alter table app_public.jobs add column integration_id uuid;
alter table app_public.jobs add column params jsonb not null default '{}'::jsonb check (jsonb_typeof(params) = 'object');
alter table app_public.jobs add foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete set null (integration_id);
comment on constraint jobs_org_id_integration_id_fkey on app_public.jobs is E'@fieldName integration\n@foreignFieldName jobs';
comment on column app_public.jobs.params is 'What the job was asked to do: the page ids of an import, the target of a publication.';
create index jobs_org_id_integration_id_idx on app_public.jobs (org_id, integration_id);

-- Each import or sync run, counted: a run that could not fetch everything is `partial`, never silently finished.
create table app_public.integration_sync_runs (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  integration_id uuid not null,
  job_id uuid not null,
  kind app_public.job_kind not null check (kind in ('import', 'sync')),
  status text not null default 'running' check (status in ('running', 'finished', 'partial', 'failed')),
  seen int not null default 0,
  imported int not null default 0,
  updated int not null default 0,
  skipped int not null default 0,
  failed int not null default 0,
  deleted_at_source int not null default 0,
  error_code text check (error_code ~ '^[A-Z][A-Z_]{1,39}$'),
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  unique (org_id, id),
  unique (org_id, job_id),
  foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete cascade,
  foreign key (org_id, job_id) references app_public.jobs (org_id, id) on delete cascade
);
comment on table app_public.integration_sync_runs is
  E'@behavior -insert -update -delete\nOne import or sync of an integration: pages seen, imported, updated, skipped, failed, and deleted at the source.';
comment on constraint integration_sync_runs_org_id_integration_id_fkey on app_public.integration_sync_runs is E'@fieldName integration\n@foreignFieldName syncRuns';
comment on constraint integration_sync_runs_org_id_job_id_fkey on app_public.integration_sync_runs is E'@fieldName job\n@foreignFieldName syncRun';
create index integration_sync_runs_org_id_integration_id_idx on app_public.integration_sync_runs (org_id, integration_id, started_at desc);

-- Where a summary was published: publishing the same summary to the same target again updates that page.
create table app_public.summary_publications (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null default app_public.current_org_id() references app_public.organizations on delete cascade,
  summary_id uuid not null,
  integration_id uuid not null,
  target_key text not null check (char_length(target_key) between 1 and 500),
  external_id text not null check (char_length(external_id) between 1 and 200),
  url text not null check (char_length(url) <= 2000 and url ~ '^https?://'),
  published_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, id),
  unique (org_id, summary_id, integration_id, target_key),
  foreign key (org_id, summary_id) references app_public.summaries (org_id, id) on delete cascade,
  foreign key (org_id, integration_id) references app_public.integrations (org_id, id) on delete cascade
);
comment on table app_public.summary_publications is
  E'@behavior -insert -update -delete\nA summary published as a Notion or Confluence page; re-publishing to the same target updates it.';
comment on column app_public.summary_publications.target_key is 'The target, normalized: notion:<parent page id> or confluence:<space id>:<parent page id or ->.';
comment on constraint summary_publications_org_id_summary_id_fkey on app_public.summary_publications is E'@fieldName summary\n@foreignFieldName publications';
comment on constraint summary_publications_org_id_integration_id_fkey on app_public.summary_publications is E'@fieldName integration\n@foreignFieldName publications';
create index summary_publications_org_id_integration_id_idx on app_public.summary_publications (org_id, integration_id);
create trigger _100_timestamps before insert or update on app_public.summary_publications
  for each row execute procedure app_private.tg__timestamps();

alter table app_public.summaries add column published_url text check (char_length(published_url) <= 2000 and published_url ~ '^https?://');
comment on column app_public.summaries.published_url is 'Where the summary was last published (all targets are in publications).';

-- The worker writes imported documents, runs and publications in a job's context, and only for jobs of the
-- matching kind: current_job_kind() is NULL outside a job.
create function app_public.current_job_kind() returns app_public.job_kind
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select j.kind from app_public.jobs j where j.id = app_public.current_job_id() $$;
comment on function app_public.current_job_kind() is E'@behavior -*\nThe kind of the job the worker is running in this transaction, or NULL.';
grant execute on function app_public.current_job_kind() to :DATABASE_AUTHENTICATED;

create policy insert_as_importer on app_public.documents for insert to :DATABASE_AUTHENTICATED
  with check (org_id = (select app_public.current_org_id()) and (select app_public.current_job_kind()) in ('import', 'sync'));
create policy update_as_importer on app_public.documents for update to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_job_kind()) in ('import', 'sync'))
  with check (org_id = (select app_public.current_org_id()));
grant insert (integration_id) on app_public.documents to :DATABASE_AUTHENTICATED;

alter table app_public.integration_sync_runs enable row level security;
alter table app_public.integration_sync_runs force row level security;
create policy as_definer on app_public.integration_sync_runs to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.integration_sync_runs for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy update_as_runner on app_public.integration_sync_runs for update to :DATABASE_AUTHENTICATED
  using (job_id = (select app_public.current_job_id())) with check (org_id = (select app_public.current_org_id()));
grant select on app_public.integration_sync_runs to :DATABASE_AUTHENTICATED;
grant update (status, seen, imported, updated, skipped, failed, deleted_at_source, error_code, finished_at)
  on app_public.integration_sync_runs to :DATABASE_AUTHENTICATED;

alter table app_public.summary_publications enable row level security;
alter table app_public.summary_publications force row level security;
create policy as_definer on app_public.summary_publications to :DATABASE_OWNER
  using ((select current_setting('quire.definer', true)) = 'on') with check ((select current_setting('quire.definer', true)) = 'on');
create policy select_own_org on app_public.summary_publications for select to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()));
create policy insert_as_publisher on app_public.summary_publications for insert to :DATABASE_AUTHENTICATED
  with check (org_id = (select app_public.current_org_id()) and (select app_public.current_job_kind()) = 'publish');
create policy update_as_publisher on app_public.summary_publications for update to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_job_kind()) = 'publish')
  with check (org_id = (select app_public.current_org_id()));
grant select on app_public.summary_publications to :DATABASE_AUTHENTICATED;
grant insert (org_id, summary_id, integration_id, target_key, external_id, url), update (external_id, url, published_at)
  on app_public.summary_publications to :DATABASE_AUTHENTICATED;

create policy update_as_publisher on app_public.summaries for update to :DATABASE_AUTHENTICATED
  using (org_id = (select app_public.current_org_id()) and (select app_public.current_job_kind()) = 'publish')
  with check (org_id = (select app_public.current_org_id()));
grant update (published_url) on app_public.summaries to :DATABASE_AUTHENTICATED;

-- Connecting, step 1 (startIntegration): the server generates the state and PKCE verifier, this records them for
-- the caller. Admins and owners only. Hidden from GraphQL: the server's startIntegration mutation calls it.
create function app_public.begin_integration_oauth(provider app_public.integration_provider, state_hash bytea, return_to text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if app_public.current_member_role() is null then
    raise exception 'Sign in to connect an integration.' using errcode = 'LOGIN';
  end if;
  if app_public.current_member_role() < 'admin' then
    raise exception 'Only admins and owners connect integrations.' using errcode = 'DNIED';
  end if;
  -- Abandoned authorizations do not pile up.
  delete from app_private.oauth_states s where s.expires_at < now() - interval '1 day';
  insert into app_private.oauth_states (state_hash, org_id, user_id, provider, return_to, code_verifier)
    values (begin_integration_oauth.state_hash, app_public.current_org_id(), app_public.current_user_id(),
            begin_integration_oauth.provider, begin_integration_oauth.return_to, begin_integration_oauth.code_verifier);
end;
$$;
comment on function app_public.begin_integration_oauth(app_public.integration_provider, bytea, text, text) is
  E'@behavior -*\nRecords a pending OAuth authorization for the caller (admins and owners); called by startIntegration.';
grant execute on function app_public.begin_integration_oauth(app_public.integration_provider, bytea, text, text) to :DATABASE_AUTHENTICATED;

-- Connecting, step 2 (GET /oauth/:provider/callback, no session: the browser returns from the provider). The
-- state is consumed at once, whatever follows, so it can never be replayed; an unknown, expired, used or
-- other-provider state answers nothing. Called by the server as the authenticator.
create type app_private.oauth_grant as (org_id uuid, user_id uuid, return_to text, code_verifier text);

create function app_private.consume_oauth_state(provider app_public.integration_provider, state_hash bytea) returns app_private.oauth_grant
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_private.oauth_states s set used_at = now()
     where s.state_hash = consume_oauth_state.state_hash and s.provider = consume_oauth_state.provider
       and s.used_at is null and s.expires_at > now()
    returning (s.org_id, s.user_id, s.return_to, s.code_verifier)::app_private.oauth_grant
  $$;
comment on function app_private.consume_oauth_state(app_public.integration_provider, bytea) is
  'Marks a pending OAuth state used and returns who started it, or NULL when it is unknown, expired, used or for another provider.';
grant execute on function app_private.consume_oauth_state(app_public.integration_provider, bytea) to :DATABASE_AUTHENTICATOR;

-- The id an integration has or will have, so the tokens can be sealed with it as associated data before the row
-- is written: reconnecting the same workspace reuses its row.
create function app_private.integration_id_for(org_id uuid, provider app_public.integration_provider, external_id text) returns uuid
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select coalesce(
      (select i.id from app_public.integrations i
        where i.org_id = integration_id_for.org_id and i.provider = integration_id_for.provider and i.external_id = integration_id_for.external_id),
      gen_random_uuid())
  $$;
comment on function app_private.integration_id_for(uuid, app_public.integration_provider, text) is 'The id of the organization''s integration with this workspace or site, or a new one.';
grant execute on function app_private.integration_id_for(uuid, app_public.integration_provider, text) to :DATABASE_AUTHENTICATOR;

create function app_private.complete_integration(
  integration_id uuid, grant_ app_private.oauth_grant, provider app_public.integration_provider,
  external_id text, external_name text, external_url text, scopes text[],
  key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
) returns app_public.integrations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_integration app_public.integrations;
begin
  -- Whoever started the flow must still be an admin there when it completes.
  if not exists (
    select 1 from app_public.memberships m
      join app_public.organizations o on o.id = m.org_id and o.is_active
      join app_public.users u on u.id = m.user_id and u.is_active
     where m.org_id = (grant_).org_id and m.user_id = (grant_).user_id and m.role >= 'admin') then
    raise exception 'Only admins and owners connect integrations.' using errcode = 'DNIED';
  end if;
  insert into app_public.integrations as i (id, org_id, provider, status, external_id, external_name, external_url, scopes, connected_by)
    values (complete_integration.integration_id, (grant_).org_id, complete_integration.provider, 'connected', complete_integration.external_id,
            coalesce(complete_integration.external_name, ''), complete_integration.external_url, coalesce(complete_integration.scopes, '{}'), (grant_).user_id)
    on conflict on constraint integrations_org_id_provider_external_id_key do update
      set status = 'connected', external_name = excluded.external_name, external_url = excluded.external_url,
          scopes = excluded.scopes, connected_by = excluded.connected_by, last_error_code = null
    returning * into v_integration;
  if v_integration.id <> complete_integration.integration_id then
    raise exception 'The integration changed while connecting; try again.' using errcode = '40001';
  end if;
  insert into app_private.integration_secrets as s (integration_id, org_id, key_id, access_nonce, access_ciphertext, refresh_nonce, refresh_ciphertext, access_expires_at)
    values (v_integration.id, v_integration.org_id, complete_integration.key_id, complete_integration.access_nonce, complete_integration.access_ciphertext,
            complete_integration.refresh_nonce, complete_integration.refresh_ciphertext, complete_integration.access_expires_at)
    on conflict on constraint integration_secrets_pkey do update
      set key_id = excluded.key_id, access_nonce = excluded.access_nonce, access_ciphertext = excluded.access_ciphertext,
          refresh_nonce = excluded.refresh_nonce, refresh_ciphertext = excluded.refresh_ciphertext,
          access_expires_at = excluded.access_expires_at, updated_at = now();
  return v_integration;
end;
$$;
comment on function app_private.complete_integration(uuid, app_private.oauth_grant, app_public.integration_provider, text, text, text, text[], text, bytea, bytea, bytea, bytea, timestamptz) is
  'Stores a connected integration and its sealed tokens for the organization and admin of a consumed OAuth state.';
grant execute on function app_private.complete_integration(uuid, app_private.oauth_grant, app_public.integration_provider, text, text, text, text[], text, bytea, bytea, bytea, bytea, timestamptz)
  to :DATABASE_AUTHENTICATOR;

-- Using the tokens: the server (browsing, as a member) and the worker (in a job's context, for its own
-- integration) read the sealed tokens through these functions. The integration must be the caller's
-- organization's, connected, and, for a job, the job's own. `lock` takes the row lock that makes a token refresh
-- single-flight: a second refresher waits, then sees the tokens the first one stored.
create type app_public.integration_credentials as (
  integration_id uuid, org_id uuid, provider app_public.integration_provider, external_id text, key_id text,
  access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
);
comment on type app_public.integration_credentials is E'@behavior -*\nAn integration''s sealed tokens, for the server and worker.';

create function app_private.may_use_integration(integration_id uuid) returns boolean
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select exists (
      select 1 from app_public.integrations i
       where i.id = may_use_integration.integration_id and i.org_id = app_public.current_org_id() and i.status = 'connected'
         and (app_public.current_member_role() >= 'member'
              or exists (select 1 from app_public.jobs j where j.id = app_public.current_job_id() and j.integration_id = i.id)))
  $$;
comment on function app_private.may_use_integration(uuid) is 'Whether this session (a member) or job (its own integration) may use the integration''s tokens.';

create function app_public.integration_credentials(integration_id uuid, lock boolean default false) returns app_public.integration_credentials
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v app_public.integration_credentials;
begin
  if not app_private.may_use_integration(integration_credentials.integration_id) then
    if app_public.current_member_role() = 'viewer'
       and exists (select 1 from app_public.integrations i where i.id = integration_credentials.integration_id and i.org_id = app_public.current_org_id()) then
      raise exception 'Viewers cannot browse or use integrations.' using errcode = 'DNIED';
    end if;
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  if lock then
    perform 1 from app_private.integration_secrets s where s.integration_id = integration_credentials.integration_id for update;
  end if;
  select i.id, i.org_id, i.provider, i.external_id, s.key_id, s.access_nonce, s.access_ciphertext, s.refresh_nonce, s.refresh_ciphertext, s.access_expires_at
    into v
    from app_public.integrations i join app_private.integration_secrets s on s.integration_id = i.id
   where i.id = integration_credentials.integration_id;
  if v.integration_id is null then
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  return v;
end;
$$;
comment on function app_public.integration_credentials(uuid, boolean) is
  E'@behavior -*\nThe sealed tokens of a connected integration of the caller''s organization; with lock, held until the transaction ends (single-flight refresh).';
grant execute on function app_public.integration_credentials(uuid, boolean) to :DATABASE_AUTHENTICATED;

create function app_public.store_integration_tokens(
  integration_id uuid, key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea, access_expires_at timestamptz
) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if not app_private.may_use_integration(store_integration_tokens.integration_id) then
    raise exception 'No such connected integration.' using errcode = 'NTFND';
  end if;
  update app_private.integration_secrets s
     set key_id = store_integration_tokens.key_id, access_nonce = store_integration_tokens.access_nonce,
         access_ciphertext = store_integration_tokens.access_ciphertext,
         refresh_nonce = store_integration_tokens.refresh_nonce, refresh_ciphertext = store_integration_tokens.refresh_ciphertext,
         access_expires_at = store_integration_tokens.access_expires_at, updated_at = now()
   where s.integration_id = store_integration_tokens.integration_id;
end;
$$;
comment on function app_public.store_integration_tokens(uuid, text, bytea, bytea, bytea, bytea, timestamptz) is
  E'@behavior -*\nReplaces an integration''s sealed tokens after a refresh (the new refresh token is stored before the access token is used).';
grant execute on function app_public.store_integration_tokens(uuid, text, bytea, bytea, bytea, bytea, timestamptz) to :DATABASE_AUTHENTICATED;

-- The provider refused our refresh token: the integration needs an admin to connect again. Its queued and
-- running jobs stop (INTEGRATION_NEEDS_REAUTH), and the change reaches the organization's live subscribers.
create function app_public.integration_needs_reauth(integration_id uuid, error_code text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_job_id uuid;
begin
  if not app_private.may_use_integration(integration_needs_reauth.integration_id) then
    return;
  end if;
  update app_public.integrations i set status = 'needs_reauth', last_error_code = integration_needs_reauth.error_code
   where i.id = integration_needs_reauth.integration_id;
  for v_job_id in
    update app_public.jobs j
       set status = 'failed', finished_at = now(), error_code = 'INTEGRATION_NEEDS_REAUTH',
           error_message = 'The connection was refused by the provider; an admin must connect it again.'
     where j.integration_id = integration_needs_reauth.integration_id and j.status in ('queued', 'running')
       and j.id is distinct from app_public.current_job_id()
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
end;
$$;
comment on function app_public.integration_needs_reauth(uuid, text) is
  E'@behavior -*\nMarks an integration needs_reauth and fails its other unfinished jobs (called when the provider answers invalid_grant).';
grant execute on function app_public.integration_needs_reauth(uuid, text) to :DATABASE_AUTHENTICATED;

-- Disconnecting (admins): the row stays, `disconnected`, so imported documents and publications keep their
-- history; the sealed tokens are deleted and unfinished jobs of the integration are cancelled. Revoking at the
-- provider is the server's part (disconnectIntegration), done before this with the tokens this returns.
create function app_public.disconnect_integration(integration_id uuid) returns app_public.integrations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_integration app_public.integrations;
  v_job_id uuid;
begin
  select * into v_integration from app_public.integrations i
   where i.id = disconnect_integration.integration_id and i.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  if app_public.current_member_role() < 'admin' then
    raise exception 'Only admins and owners disconnect integrations.' using errcode = 'DNIED';
  end if;
  delete from app_private.integration_secrets s where s.integration_id = v_integration.id;
  for v_job_id in
    update app_public.jobs j set status = 'cancelled', finished_at = now(), error_code = 'INTEGRATION_DISCONNECTED',
                                 error_message = 'The integration was disconnected.'
     where j.integration_id = v_integration.id and j.status in ('queued', 'running')
    returning j.id
  loop
    perform graphile_worker.remove_job(v_job_id::text);
  end loop;
  update app_public.integrations i set status = 'disconnected' where i.id = v_integration.id returning * into v_integration;
  return v_integration;
end;
$$;
comment on function app_public.disconnect_integration(uuid) is
  E'@behavior -*\nDeletes an integration''s tokens, cancels its unfinished jobs and marks it disconnected (admins); called by disconnectIntegration after revoking at the provider.';
grant execute on function app_public.disconnect_integration(uuid) to :DATABASE_AUTHENTICATED;

-- Queueing integration work: a jobs row (with its parameters) and its graphile-worker job in one transaction,
-- as summarizeDocument does. Members and above; the integration must be the caller's and connected.
create function app_private.queue_integration_job(kind app_public.job_kind, integration_id uuid, params jsonb, summary_id uuid default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_role app_public.membership_role := app_public.current_member_role();
  v_job app_public.jobs;
begin
  if v_org_id is null or v_role is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  if v_role < 'member' then
    raise exception 'Viewers cannot import or publish.' using errcode = 'DNIED';
  end if;
  if not exists (select 1 from app_public.integrations i where i.id = queue_integration_job.integration_id and i.org_id = v_org_id) then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  if not exists (select 1 from app_public.integrations i where i.id = queue_integration_job.integration_id and i.status = 'connected') then
    raise exception 'The integration is not connected; an admin must connect it again.' using errcode = 'BADIN';
  end if;
  insert into app_public.jobs (org_id, kind, integration_id, summary_id, params, requested_by)
    values (v_org_id, queue_integration_job.kind, queue_integration_job.integration_id, queue_integration_job.summary_id,
            queue_integration_job.params, app_public.current_user_id())
    returning * into v_job;
  if queue_integration_job.kind in ('import', 'sync') then
    insert into app_public.integration_sync_runs (org_id, integration_id, job_id, kind)
      values (v_org_id, queue_integration_job.integration_id, v_job.id, queue_integration_job.kind);
  end if;
  perform app_private.enqueue_job(v_job, queue_integration_job.kind::text || '_integration');
  return v_job;
end;
$$;
comment on function app_private.queue_integration_job(app_public.job_kind, uuid, jsonb, uuid) is
  'Queues an import, sync or publish job for a connected integration of the caller''s organization (members and above).';

create function app_public.import_documents(integration_id uuid, external_ids text[]) returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  if cardinality(external_ids) is null or cardinality(external_ids) not between 1 and 500 then
    raise exception 'Give between 1 and 500 page ids.' using errcode = 'BADIN';
  end if;
  if exists (select 1 from unnest(external_ids) e where e is null or e !~ '^[A-Za-z0-9_-]{1,100}$') then
    raise exception 'A page id is malformed.' using errcode = 'BADIN';
  end if;
  return app_private.queue_integration_job('import', import_documents.integration_id,
    jsonb_build_object('externalIds', (select jsonb_agg(distinct e) from unnest(external_ids) e)));
end;
$$;
comment on function app_public.import_documents(uuid, text[]) is
  E'@resultFieldName job\nImports pages of a connected Notion or Confluence integration as documents, as a job (members and above). Importing a page again updates its document.';
grant execute on function app_public.import_documents(uuid, text[]) to :DATABASE_AUTHENTICATED;

create function app_public.sync_integration(integration_id uuid) returns app_public.jobs
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$ select * from app_private.queue_integration_job('sync', sync_integration.integration_id, '{}'::jsonb) $$;
comment on function app_public.sync_integration(uuid) is
  E'@resultFieldName job\nRe-imports the pages of an integration''s documents that changed at the source and flags those deleted there, as a job (members and above).';
grant execute on function app_public.sync_integration(uuid) to :DATABASE_AUTHENTICATED;

create function app_public.publish_summary(summary_id uuid, integration_id uuid, parent_page_id text default null, space_id text default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_provider app_public.integration_provider;
begin
  if not exists (select 1 from app_public.summaries s where s.id = publish_summary.summary_id and s.org_id = app_public.current_org_id()) then
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
comment on function app_public.publish_summary(uuid, uuid, text, text) is
  E'@resultFieldName job\nPublishes a summary as a page, as a job (members and above): under a Notion page (parentPageId) or in a Confluence space (spaceId, optionally under parentPageId). Publishing the same summary to the same target again updates that page.';
grant execute on function app_public.publish_summary(uuid, uuid, text, text) to :DATABASE_AUTHENTICATED;

-- Key rotation. An operator puts a new key first in SEALING_KEYS (keeping the old ones after it), restarts, and
-- calls app_admin.reseal_integration_secrets(): the worker's reseal_secrets task opens every secret sealed with an
-- older key and seals it with the current one. Until it has run, the old keys must stay configured.
create function app_admin.reseal_integration_secrets() returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
begin
  perform graphile_worker.add_job('reseal_secrets', '{}'::json, job_key => 'reseal_secrets');
end;
$$;
comment on function app_admin.reseal_integration_secrets() is
  E'Queues the re-sealing of every integration secret with the current key (after a new key was put first in SEALING_KEYS).\nExample: select app_admin.reseal_integration_secrets();';

create function app_private.secrets_to_reseal(current_key_id text, batch int) returns setof app_public.integration_credentials
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select i.id, i.org_id, i.provider, i.external_id, s.key_id, s.access_nonce, s.access_ciphertext, s.refresh_nonce, s.refresh_ciphertext, s.access_expires_at
      from app_private.integration_secrets s join app_public.integrations i on i.id = s.integration_id
     where s.key_id <> secrets_to_reseal.current_key_id
     order by s.integration_id
     limit batch
  $$;
comment on function app_private.secrets_to_reseal(text, int) is 'A batch of integration secrets sealed with a key other than the current one.';
grant execute on function app_private.secrets_to_reseal(text, int) to :DATABASE_AUTHENTICATOR;

create function app_private.reseal(integration_id uuid, old_key_id text, key_id text, access_nonce bytea, access_ciphertext bytea, refresh_nonce bytea, refresh_ciphertext bytea)
  returns boolean
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    with done as (
      update app_private.integration_secrets s
         set key_id = reseal.key_id, access_nonce = reseal.access_nonce, access_ciphertext = reseal.access_ciphertext,
             refresh_nonce = reseal.refresh_nonce, refresh_ciphertext = reseal.refresh_ciphertext, updated_at = now()
       where s.integration_id = reseal.integration_id and s.key_id = reseal.old_key_id
      returning 1)
    select exists (select 1 from done)
  $$;
comment on function app_private.reseal(uuid, text, text, bytea, bytea, bytea, bytea) is
  'Replaces one secret sealed with old_key_id by its re-sealing (no-op if it changed meanwhile, e.g. a refresh).';
grant execute on function app_private.reseal(uuid, text, text, bytea, bytea, bytea, bytea) to :DATABASE_AUTHENTICATOR;

-- The integration shows how its last import or sync went; written by the job that ran it.
create function app_public.note_integration_sync(status text, error_code text default null) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_public.integrations i
       set last_sync_at = now(), last_sync_status = note_integration_sync.status, last_error_code = note_integration_sync.error_code
      from app_public.jobs j
     where j.id = app_public.current_job_id() and j.kind in ('import', 'sync') and i.id = j.integration_id
  $$;
comment on function app_public.note_integration_sync(text, text) is
  E'@behavior -*\nRecords the outcome of the running import or sync job on its integration (worker only: needs a job context).';
grant execute on function app_public.note_integration_sync(text, text) to :DATABASE_AUTHENTICATED;
