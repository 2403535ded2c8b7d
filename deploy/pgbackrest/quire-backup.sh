#!/usr/bin/env bash
# quire-backup: the backup service of docker-compose.yml (installed as /usr/local/bin/quire-backup by this directory's
# Dockerfile). pgBackRest has no scheduler of its own, and cron in a container needs root and loses the environment,
# so this loop is the schedule. Runs as the postgres user; pgBackRest reads /etc/pgbackrest/pgbackrest.conf.
#
#   quire-backup schedule           create (or check) the stanza, take a backup at once when the newest is overdue,
#                                   then every day at BACKUP_HOUR_UTC:00 UTC: a full backup on BACKUP_FULL_WEEKDAY, or
#                                   when no full backup is younger than 8 days, else a differential. A failed backup
#                                   is retried every BACKUP_RETRY_MINUTES, BACKUP_RETRIES times, then waits for the
#                                   next day (the healthcheck turns unhealthy meanwhile).
#   quire-backup now [full|diff]    one backup now; without a type, the one the schedule would take now.
#   quire-backup health             exit 0 when the newest backup is at most BACKUP_MAX_AGE_HOURS old (or one is
#                                   running) and PostgreSQL's WAL archiving is not failing; else say why and exit 1.
#
# Environment: PGBACKREST_STANZA (quire), BACKUP_HOUR_UTC (1), BACKUP_FULL_WEEKDAY (7: Sunday; 1 is Monday),
# BACKUP_RETRY_MINUTES (60), BACKUP_RETRIES (3), BACKUP_MAX_AGE_HOURS (26), PGHOST (/var/run/postgresql: the socket).
set -euo pipefail

stanza=${PGBACKREST_STANZA:-quire}
hour=${BACKUP_HOUR_UTC:-1}
full_weekday=${BACKUP_FULL_WEEKDAY:-7}
retry_minutes=${BACKUP_RETRY_MINUTES:-60}
retries=${BACKUP_RETRIES:-3}
max_age_hours=${BACKUP_MAX_AGE_HOURS:-26}
export PGHOST=${PGHOST:-/var/run/postgresql}

say() { printf '%s quire-backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

for n in "$hour" "$full_weekday" "$retry_minutes" "$retries" "$max_age_hours"; do
  [[ $n =~ ^[0-9]+$ ]] || { say "BACKUP_* settings are whole numbers (got '$n')"; exit 2; }
done
((hour <= 23 && full_weekday >= 1 && full_weekday <= 7)) || { say "BACKUP_HOUR_UTC is 0-23, BACKUP_FULL_WEEKDAY 1-7"; exit 2; }

pgbr() { pgbackrest --stanza="$stanza" "$@"; }

# Stop time (Unix seconds) of the newest backup of a type ("full", or "" for any); 0 when there is none.
newest() {
  pgbr --output=json info | jq --arg type "$1" '[.[0].backup[]? | select($type == "" or .type == $type) | .timestamp.stop] | max // 0'
}

# The type the schedule takes now: full on the full-backup weekday, or when the newest full is over 8 days old.
due_type() {
  local now full
  now=$(date -u +%s)
  # Unknown (the repository cannot be read): full, the backup that needs nothing before it.
  full=$(newest full) || full=0
  if (($(date -u +%u) == full_weekday || now - full > 8 * 86400)); then echo full; else echo diff; fi
}

backup() {
  local type=$1 t0
  t0=$(date -u +%s)
  say "starting a $type backup"
  # In the background, so that a stop signal reaches this script (PID 1) and is passed on to pgBackRest.
  pgbr --type="$type" backup &
  child=$!
  if wait "$child"; then
    child=
    say "$type backup done in $(($(date -u +%s) - t0)) s"
  else
    child=
    say "ERROR: the $type backup failed after $(($(date -u +%s) - t0)) s (see pgBackRest's output above)"
    return 1
  fi
}

# A backup of the due type, retried after failures; never fails the loop.
backup_with_retries() {
  local attempt
  for ((attempt = 0; attempt <= retries; attempt++)); do
    backup "$(due_type)" && return 0
    ((attempt < retries)) && { say "retrying in $retry_minutes min"; pause $((retry_minutes * 60)); }
  done
  say "ERROR: giving up until the next scheduled backup"
}

child=
pause() {
  sleep "$1" &
  child=$!
  wait "$child" || true
  child=
}
trap 'say "stopping"; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null; wait 2>/dev/null; exit 0' TERM INT

schedule() {
  say "stanza $stanza: full backups on ISO weekday $full_weekday, differentials on the other days, at $(printf '%02d' "$hour"):00 UTC"
  # stanza-create is idempotent; check proves archive_command reaches the repository. Both wait for PostgreSQL.
  until pgbr stanza-create && pgbr check; do
    say "ERROR: the stanza or WAL archiving is not ready; trying again in 5 min"
    pause 300
  done
  local last now next
  last=$(newest "") || last=0
  now=$(date -u +%s)
  if ((now - last > 24 * 3600)); then
    say "the newest backup is overdue (or there is none): taking one now"
    backup_with_retries
  fi
  while true; do
    now=$(date -u +%s)
    next=$(date -u -d "today $hour:00" +%s)
    ((next > now)) || next=$(date -u -d "tomorrow $hour:00" +%s)
    say "next backup at $(date -u -d "@$next" +%Y-%m-%dT%H:%M:%SZ)"
    pause $((next - now))
    backup_with_retries
  done
}

health() {
  local info last running failing
  info=$(pgbr --output=json info)
  last=$(jq '[.[0].backup[]?.timestamp.stop] | max // 0' <<<"$info")
  running=$(jq '.[0].status.lock.backup.held // false' <<<"$info")
  if (($(date -u +%s) - last > max_age_hours * 3600)) && [[ $running != true ]]; then
    if ((last == 0)); then echo "no backup yet"; else echo "the newest backup is from $(date -u -d "@$last" +%Y-%m-%dT%H:%M:%SZ), over $max_age_hours h ago"; fi
    return 1
  fi
  # pg_stat_archiver: the last failure is newer than the last success while archive_command keeps failing.
  failing=$(psql -U postgres -d postgres -XAtc "select coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) from pg_stat_archiver")
  if [[ $failing == t ]]; then
    echo "WAL archiving is failing: see the postgres service's log (archive command failed)"
    return 1
  fi
  echo "ok: newest backup $(date -u -d "@$last" +%Y-%m-%dT%H:%M:%SZ)$([[ $running == true ]] && echo ", a backup is running")"
}

case "${1:-schedule}" in
  schedule) schedule ;;
  now)
    type=${2:-$(due_type)}
    [[ $type == full || $type == diff || $type == incr ]] || { say "the type is full, diff or incr"; exit 2; }
    backup "$type"
    ;;
  health) health ;;
  *)
    echo "usage: quire-backup [schedule | now [full|diff|incr] | health]" >&2
    exit 2
    ;;
esac
