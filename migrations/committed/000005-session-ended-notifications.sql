--! Previous: sha1:086b4ecc14ce839be3f3388487d3fec7952e98ed
--! Hash: sha1:a8b960c12c5315b0eb808850bc6c1ab9574ee6de
--! Message: session ended notifications

-- Logout must also close the session's open WebSocket connections, on whichever server instance holds them:
-- every instance LISTENs on quire_session_ended. The payload is the session id only (anyone may LISTEN).
create function app_private.tg_sessions__notify_ended() returns trigger
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
  as $$
begin
  if tg_op = 'DELETE' then
    perform pg_notify('quire_session_ended', old.id::text);
  elsif old.revoked_at is null and new.revoked_at is not null then
    perform pg_notify('quire_session_ended', new.id::text);
  end if;
  return null;
end;
$$;
comment on function app_private.tg_sessions__notify_ended() is
  'Trigger: NOTIFY quire_session_ended with the session id when a session is revoked or deleted.';
create trigger _900_notify_ended after update of revoked_at or delete on app_private.sessions
  for each row execute procedure app_private.tg_sessions__notify_ended();
