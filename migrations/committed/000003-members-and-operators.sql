--! Previous: sha1:e908f3184ea9e065898961354868a20db20bbe76
--! Hash: sha1:15d45cc1d18b20bd7e30d4d01fe980d8d12ee755
--! Message: members and operators

-- Managing members through the API. Writes to memberships go only through these functions, which enforce what RLS
-- alone cannot express: admins manage members below owner, only owners touch owners, and every organization keeps
-- at least one owner. Role changes and removals apply on the member's next request (sessions read the membership).
create function app_private.assert_keeps_an_owner(org_id uuid, losing_membership_id uuid) returns void
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  -- Lock the organization's owner rows so two concurrent demotions cannot both pass this check.
  perform 1 from app_public.memberships m where m.org_id = assert_keeps_an_owner.org_id and m.role = 'owner' for update;
  if not exists (
    select 1 from app_public.memberships m
     where m.org_id = assert_keeps_an_owner.org_id and m.role = 'owner' and m.id <> assert_keeps_an_owner.losing_membership_id
  ) then
    raise exception 'An organization must keep at least one owner.' using errcode = 'DNIED';
  end if;
end;
$$;
comment on function app_private.assert_keeps_an_owner(uuid, uuid) is
  'Raises DNIED when the organization would have no owner left without the given membership.';

create function app_public.change_member_role(membership_id uuid, role app_public.membership_role)
  returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_public.current_member_role();
  v_target app_public.memberships;
begin
  if v_caller is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  select * into v_target from app_public.memberships m
   where m.id = change_member_role.membership_id and m.org_id = app_public.current_org_id() for update;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  if v_caller < 'admin' then
    raise exception 'Only admins and owners manage members.' using errcode = 'DNIED';
  end if;
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
comment on function app_public.change_member_role(uuid, app_public.membership_role) is
  'Changes a member''s role. Admins manage members below owner; only owners change owners or make owners; the last owner cannot be demoted.';
grant execute on function app_public.change_member_role(uuid, app_public.membership_role) to :DATABASE_AUTHENTICATED;

create function app_public.remove_member(membership_id uuid) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_caller app_public.membership_role := app_public.current_member_role();
  v_target app_public.memberships;
begin
  if v_caller is null then
    raise exception 'Sign in first.' using errcode = 'LOGIN';
  end if;
  select * into v_target from app_public.memberships m
   where m.id = remove_member.membership_id and m.org_id = app_public.current_org_id() for update;
  if not found then
    raise exception 'No such member.' using errcode = 'NTFND';
  end if;
  -- Anyone may leave; removing someone else takes an admin, and removing an owner takes an owner.
  if v_target.user_id <> app_public.current_user_id() then
    if v_caller < 'admin' then
      raise exception 'Only admins and owners remove members.' using errcode = 'DNIED';
    end if;
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
comment on function app_public.remove_member(uuid) is
  'Removes a member (or lets a member leave) and ends their sessions in this organization; never the last owner.';
grant execute on function app_public.remove_member(uuid) to :DATABASE_AUTHENTICATED;

-- Operators, from psql as the owner (RLS is forced on the owner: these functions are the way in). Passwords set
-- here are hashed with pgcrypto's bcrypt, which the server verifies like its own hashes.
create extension if not exists pgcrypto with schema public;

create function app_admin.create_organization(
  name text, owner_email text, owner_full_name text, owner_password text, slug text default null
) returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  insert into app_public.organizations (name, slug)
    values (btrim(create_organization.name),
            coalesce(create_organization.slug, app_private.unused_slug(app_private.slugify(create_organization.name))))
    returning * into v_org;
  perform app_admin.add_user(v_org.slug, owner_email, owner_full_name, 'owner', owner_password);
  return v_org;
end;
$$;
comment on function app_admin.create_organization(text, text, text, text, text) is
  E'Creates an organization with its first owner (an existing account, or a new one with the given password).\nExample: select * from app_admin.create_organization(''Acme'', ''ann@acme.example'', ''Ann Smith'', ''a long passphrase'');';

create function app_admin.add_user(
  organization_slug text, email text, full_name text, role app_public.membership_role default 'member', password text default null
) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org_id uuid;
  v_user_id uuid;
  v_membership app_public.memberships;
begin
  select id into v_org_id from app_public.organizations where slug = add_user.organization_slug;
  if not found then
    raise exception 'No organization with slug %.', add_user.organization_slug using errcode = 'NTFND';
  end if;
  select id into v_user_id from app_public.users where users.email = lower(btrim(add_user.email));
  if not found then
    if add_user.password is null or length(add_user.password) < 8 then
      raise exception 'A new account needs a password of at least 8 characters.' using errcode = 'BADIN';
    end if;
    insert into app_public.users (email, full_name) values (lower(btrim(add_user.email)), btrim(add_user.full_name))
      returning id into v_user_id;
    insert into app_private.user_secrets (user_id, password_hash) values (v_user_id, public.crypt(add_user.password, public.gen_salt('bf', 12)));
  end if;
  insert into app_public.memberships (org_id, user_id, role) values (v_org_id, v_user_id, add_user.role)
    on conflict (org_id, user_id) do update set role = excluded.role
    returning * into v_membership;
  return v_membership;
end;
$$;
comment on function app_admin.add_user(text, text, text, app_public.membership_role, text) is
  E'Adds a person to an organization with a role (creating the account, with a bcrypt-hashed password, if new); an existing member gets the role.\nExample: select * from app_admin.add_user(''acme'', ''bob@acme.example'', ''Bob'', ''admin'', ''another passphrase'');';

create function app_admin.set_tier(organization_slug text, tier app_public.subscription_tier) returns app_public.organizations
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    update app_public.organizations set tier = set_tier.tier where slug = set_tier.organization_slug returning *
  $$;
comment on function app_admin.set_tier(text, app_public.subscription_tier) is
  E'Sets an organization''s subscription tier (free, basic, premium).\nExample: select * from app_admin.set_tier(''acme'', ''premium'');';

create function app_admin.set_organization_active(organization_slug text, active boolean) returns app_public.organizations
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
declare
  v_org app_public.organizations;
begin
  update app_public.organizations set is_active = set_organization_active.active
   where slug = set_organization_active.organization_slug returning * into v_org;
  if not found then
    raise exception 'No organization with slug %.', set_organization_active.organization_slug using errcode = 'NTFND';
  end if;
  if not active then
    update app_private.sessions set revoked_at = now(), revoked_reason = 'organization deactivated'
     where org_id = v_org.id and revoked_at is null;
  end if;
  return v_org;
end;
$$;
comment on function app_admin.set_organization_active(text, boolean) is
  E'Deactivates (revoking its sessions) or reactivates an organization.\nExample: select * from app_admin.set_organization_active(''acme'', false);';

create function app_admin.list_organizations()
  returns table (slug text, name text, tier app_public.subscription_tier, is_active boolean, members bigint, owners bigint, created_at timestamptz)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select o.slug, o.name, o.tier, o.is_active,
           count(m.id), count(m.id) filter (where m.role = 'owner'), o.created_at
      from app_public.organizations o left join app_public.memberships m on m.org_id = o.id
     group by o.id order by o.created_at
  $$;
comment on function app_admin.list_organizations() is
  E'Every organization with its member and owner counts.\nExample: select * from app_admin.list_organizations();';

create function app_admin.revoke_user_sessions(email text) returns int
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  set quire.definer = 'on'
  as $$
    select app_private.revoke_user_sessions(
      (select id from app_public.users where users.email = lower(btrim(revoke_user_sessions.email))), 'revoked by operator')
  $$;
comment on function app_admin.revoke_user_sessions(text) is
  E'Ends every session of a person (e.g. a lost laptop); returns how many ended.\nExample: select app_admin.revoke_user_sessions(''bob@acme.example'');';
