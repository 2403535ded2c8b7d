--! Previous: -
--! Hash: sha1:08aa23fde9f6ee1bb246fbd0fc28566f38c34c04
--! Message: foundation

-- Nothing is usable by default. Functions are EXECUTE-able by PUBLIC unless revoked, so revoke that for every
-- function the owner creates from now on and grant per function instead (tenancy invariant 5); nobody but the
-- owner may create objects in the public schema.
alter default privileges revoke all on functions from public;
revoke all on schema public from public;

-- The four schemas of DESIGN.md. app_public is what GraphQL exposes; app_hidden is readable by the API roles under
-- RLS but not exposed; app_private holds secrets and is reached only through security definer functions;
-- app_admin holds the functions an operator calls from psql.
drop schema if exists app_public cascade;
drop schema if exists app_hidden cascade;
drop schema if exists app_private cascade;
drop schema if exists app_admin cascade;
create schema app_public;
create schema app_hidden;
create schema app_private;
create schema app_admin;
comment on schema app_public is 'Everything the GraphQL API exposes. Every table has row-level security enabled and forced.';
comment on schema app_hidden is 'Readable by the API roles under row-level security, but not exposed in GraphQL.';
comment on schema app_private is 'Secrets and internals. No grants to API roles; reached only through security definer functions.';
comment on schema app_admin is 'Functions an operator calls from psql to administer tenants. Not exposed to API roles.';
grant usage on schema app_public, app_hidden to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;
-- The authenticator itself (never an API role: it is NOINHERIT and every request switches away from it) may call
-- the few app_private functions granted to it below, for health checks and worker heartbeats.
grant usage on schema app_private to :DATABASE_AUTHENTICATOR;

-- The request context. The server verifies the access token and passes its claims as transaction-local settings
-- (jwt.claims.*); policies read them through these functions. A pooled connection that once served another
-- request reads '' rather than NULL, and a hand-set garbage value must not raise: both mean "no claim", so policies
-- simply match no rows. Policies call them as `(select app_public.current_org_id())` so they run once per statement.
create function app_public.current_org_id() returns uuid
  language sql stable parallel safe
  as $$
    select case when s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then s::uuid end
    from (select current_setting('jwt.claims.org_id', true) as s) as setting
  $$;
comment on function app_public.current_org_id() is
  E'@behavior -*\nThe organization named by the verified access token of this request, or NULL when there is none.';
grant execute on function app_public.current_org_id() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

create function app_public.current_user_id() returns uuid
  language sql stable parallel safe
  as $$
    select case when s ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then s::uuid end
    from (select current_setting('jwt.claims.user_id', true) as s) as setting
  $$;
comment on function app_public.current_user_id() is
  E'@behavior -*\nThe user named by the verified access token of this request, or NULL when there is none.';
grant execute on function app_public.current_user_id() to :DATABASE_AUTHENTICATED, :DATABASE_ANONYMOUS;

-- created_at/updated_at are facts the database keeps, not values a client sends: this trigger overwrites both.
-- updated_at always moves forward, even when two updates land within the clock's resolution, so it can serve as
-- an optimistic-concurrency token.
create function app_private.tg__timestamps() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
  new.updated_at := case
    when tg_op = 'UPDATE' and old.updated_at >= now() then old.updated_at + interval '1 millisecond'
    else now()
  end;
  return new;
end;
$$;
comment on function app_private.tg__timestamps() is
  'Trigger (before insert or update): sets created_at on insert and moves updated_at forward on every write.';

-- Readiness needs to know that a worker is alive. Each worker process upserts a row here every few seconds;
-- /health/ready reads the newest. The authenticator (which the worker and server log in as) reaches the table
-- only through the two functions below: it is not tenant data and no API role sees it.
create table app_private.worker_heartbeats (
  worker_id text primary key check (length(worker_id) between 1 and 200),
  hostname text not null,
  pid int not null,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now()
);
comment on table app_private.worker_heartbeats is 'One row per running worker process, refreshed every few seconds.';

create function app_private.record_worker_heartbeat(worker_id text, hostname text, pid int) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
    insert into app_private.worker_heartbeats (worker_id, hostname, pid)
    values (record_worker_heartbeat.worker_id, record_worker_heartbeat.hostname, record_worker_heartbeat.pid)
    on conflict (worker_id) do update set last_seen_at = now(), hostname = excluded.hostname, pid = excluded.pid
  $$;
comment on function app_private.record_worker_heartbeat(text, text, int) is
  'Called by each worker process every WORKER_HEARTBEAT_SECONDS: marks it alive.';
grant execute on function app_private.record_worker_heartbeat(text, text, int) to :DATABASE_AUTHENTICATOR;

create function app_private.forget_worker(worker_id text) returns void
  language sql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
    delete from app_private.worker_heartbeats where worker_heartbeats.worker_id = forget_worker.worker_id
  $$;
comment on function app_private.forget_worker(text) is 'Called by a worker process on clean shutdown.';
grant execute on function app_private.forget_worker(text) to :DATABASE_AUTHENTICATOR;

-- What /health/ready reports: the newest applied migration (compared by the server with the newest committed
-- file it ships) and how long ago any worker last reported in.
create function app_private.readiness(out latest_migration text, out worker_seen_seconds_ago double precision)
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  as $$
    select
      (select max(filename) from graphile_migrate.migrations),
      (select extract(epoch from now() - max(last_seen_at))::double precision from app_private.worker_heartbeats)
  $$;
comment on function app_private.readiness() is
  'For GET /health/ready: the newest applied migration and the age in seconds of the newest worker heartbeat.';
grant execute on function app_private.readiness() to :DATABASE_AUTHENTICATOR;
