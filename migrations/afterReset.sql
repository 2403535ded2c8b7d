-- Runs as the superuser right after `graphile-migrate reset` recreates a database. The roles themselves are created
-- by db/bootstrap.ts (they are cluster-wide and hold passwords, so they stay out of migrations); this only restores
-- the database-level privileges a fresh database lacks.
begin;
revoke all on database :DATABASE_NAME from public;
grant all on database :DATABASE_NAME to :DATABASE_OWNER;
grant connect on database :DATABASE_NAME to :DATABASE_AUTHENTICATOR;
alter schema public owner to :DATABASE_OWNER;
revoke all on schema public from public;
commit;
