--! Previous: sha1:e4dfd40c83017e0ed3e030a90e0f33c9fe071a31
--! Hash: sha1:4f94a5a8cf7ec3cc95091bdca7924d82137a9fb8
--! Message: require-role

-- Roles: one check for "the caller is a member with at least this role".
--
-- Eight security definer functions opened with the same lines: read the caller's role (locked, so a concurrent demotion waits or has
-- happened), raise LOGIN without a membership and DNIED below the role the action needs. check_role is that test once;
-- require_role reads the role under lock and checks it, for functions whose first step it is. Functions that must
-- find their target first (so that a missing one is NTFND, as before) or that read the role under a stronger lock
-- (membership changes) call check_role on the role they hold. Each keeps its own messages; codes are unchanged.
-- (audit_log runs as the caller, who may not call app_private functions, so it keeps its own one-line check.)
create or replace function app_private.check_role(
  role app_public.membership_role, min app_public.membership_role, denied text, signed_out text default 'Sign in first.'
) returns app_public.membership_role
  language plpgsql immutable
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if check_role.role is null and check_role.signed_out is not null then
    raise exception '%', check_role.signed_out using errcode = 'LOGIN';
  end if;
  if check_role.role is null or check_role.role < check_role.min then
    raise exception '%', check_role.denied using errcode = 'DNIED';
  end if;
  return check_role.role;
end;
$$;
comment on function app_private.check_role(app_public.membership_role, app_public.membership_role, text, text) is
  'Returns `role` when it is at least `min`. Raises LOGIN (`signed_out`) when `role` is NULL, or DNIED (`denied`) when it is lower, or NULL with `signed_out` NULL.';

create or replace function app_private.require_role(min app_public.membership_role, denied text, signed_out text default 'Sign in first.')
  returns app_public.membership_role
  language sql volatile
  set search_path = pg_catalog, pg_temp
  as $$
    select app_private.check_role(app_private.lock_member_role(), require_role.min, require_role.denied, require_role.signed_out)
  $$;
comment on function app_private.require_role(app_public.membership_role, text, text) is
  'The caller''s role in the current organization, its membership row locked FOR SHARE until the transaction ends; LOGIN (`signed_out`) without one, DNIED (`denied`) below `min`.';

create or replace function app_public.change_member_role(membership_id uuid, role app_public.membership_role)
  returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_caller app_public.membership_role;
  v_target app_public.memberships;
begin
  v_caller := app_private.lock_org_memberships();
  select * into v_target from app_public.memberships m where m.id = change_member_role.membership_id and m.org_id = v_org_id;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  perform app_private.check_role(v_caller, 'admin', 'Only admins and owners manage members.');
  if v_caller < 'owner' and (v_target.role = 'owner' or change_member_role.role = 'owner') then
    raise exception 'Only owners can change an owner''s role or make someone an owner.' using errcode = 'DNIED';
  end if;
  if v_target.role = 'owner' and change_member_role.role <> 'owner' then
    perform app_private.assert_keeps_an_owner(v_target.org_id, v_target.id);
  end if;
  update app_public.memberships m set role = change_member_role.role where m.id = v_target.id returning * into v_target;
  return v_target;
end;
$$;

create or replace function app_public.remove_member(membership_id uuid) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_caller app_public.membership_role;
  v_target app_public.memberships;
begin
  v_caller := app_private.lock_org_memberships();
  select * into v_target from app_public.memberships m where m.id = remove_member.membership_id and m.org_id = v_org_id;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  -- Anyone may leave; removing someone else takes an admin, and removing an owner takes an owner.
  if v_target.user_id <> app_public.current_user_id() then
    perform app_private.check_role(v_caller, 'admin', 'Only admins and owners remove members.');
    if v_target.role = 'owner' and v_caller < 'owner' then
      raise exception 'Only owners can remove an owner.' using errcode = 'DNIED';
    end if;
  end if;
  if v_target.role = 'owner' then
    perform app_private.assert_keeps_an_owner(v_target.org_id, v_target.id);
  end if;
  delete from app_public.memberships m where m.id = v_target.id;
  update app_private.sessions s set revoked_at = now(), revoked_reason = 'removed from organization'
   where s.user_id = v_target.user_id and s.org_id = v_target.org_id and s.revoked_at is null;
  return v_target;
end;
$$;

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
  if not exists (select 1 from app_public.documents d where d.id = summarize_document.document_id and d.org_id = v_org_id) then
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
  -- The member who asked may cancel their own job; anyone else's takes an admin.
  perform app_private.check_role(v_role, case when v_job.requested_by = app_public.current_user_id() then 'member' else 'admin' end::app_public.membership_role,
                                 'Only the member who asked for a job, or an admin, can cancel it.', signed_out => null);
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

create or replace function app_public.begin_integration_oauth(provider app_public.integration_provider, state_hash bytea, return_to text, code_verifier text)
  returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
begin
  perform app_private.require_role('admin', 'Only admins and owners connect integrations.', 'Sign in to connect an integration.');
  -- Abandoned authorizations do not pile up.
  delete from app_private.oauth_states s where s.expires_at < now() - interval '1 day';
  insert into app_private.oauth_states (state_hash, org_id, user_id, provider, return_to, code_verifier)
    values (begin_integration_oauth.state_hash, app_public.current_org_id(), app_public.current_user_id(),
            begin_integration_oauth.provider, begin_integration_oauth.return_to, begin_integration_oauth.code_verifier);
end;
$$;

create or replace function app_public.disconnect_integration(integration_id uuid) returns app_public.integrations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_role app_public.membership_role := app_private.lock_member_role();
  v_integration app_public.integrations;
  v_job_id uuid;
begin
  select * into v_integration from app_public.integrations i
   where i.id = disconnect_integration.integration_id and i.org_id = app_public.current_org_id()
     for update;
  if not found then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  perform app_private.check_role(v_role, 'admin', 'Only admins and owners disconnect integrations.', signed_out => null);
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

create or replace function app_private.queue_integration_job(kind app_public.job_kind, integration_id uuid, params jsonb, summary_id uuid default null)
  returns app_public.jobs
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid := app_public.current_org_id();
  v_status app_public.integration_status;
  v_job app_public.jobs;
begin
  perform app_private.require_role('member', 'Viewers cannot import or publish.');
  select i.status into v_status from app_public.integrations i
   where i.id = queue_integration_job.integration_id and i.org_id = v_org_id
     for share;
  if not found then
    raise exception 'No such integration.' using errcode = 'NTFND';
  end if;
  if v_status <> 'connected' then
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

create or replace function app_hidden.create_invitation(email text, role app_public.membership_role, token_hash bytea, valid_for interval)
  returns app_public.invitations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_private.require_role('admin', 'Only admins and owners invite members.');
  v_org_id uuid := app_public.current_org_id();
  v_email text := lower(btrim(create_invitation.email));
  v_invitation app_public.invitations;
begin
  if create_invitation.role = 'owner' and v_caller < 'owner' then
    raise exception 'Only owners can invite owners.' using errcode = 'DNIED';
  end if;
  if v_email !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' or char_length(v_email) > 320 then
    raise exception 'Enter a valid email address.' using errcode = 'BADIN';
  end if;
  if exists (select 1 from app_public.memberships m join app_public.users u on u.id = m.user_id
              where m.org_id = v_org_id and u.email = v_email) then
    raise exception 'This person is already a member.' using errcode = 'TAKEN';
  end if;
  delete from app_public.invitations i where i.org_id = v_org_id and i.email = v_email and i.accepted_at is null;
  insert into app_public.invitations (org_id, email, role, invited_by, expires_at)
    values (v_org_id, v_email, create_invitation.role, app_public.current_user_id(), now() + create_invitation.valid_for)
    returning * into v_invitation;
  if create_invitation.token_hash is null then
    perform app_private.queue_mail('invitation', null, v_invitation.id);
  else
    insert into app_private.invitation_tokens (invitation_id, token_hash) values (v_invitation.id, create_invitation.token_hash);
  end if;
  return v_invitation;
end;
$$;
