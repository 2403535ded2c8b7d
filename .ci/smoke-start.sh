#!/usr/bin/env bash
# `npm start` exactly as the README says, with nothing configured, on a fresh data directory: it must become
# ready, answer a GraphQL query, and stop on SIGTERM with exit 0 and no postgres process left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

data=$(mktemp -d)
chmod 755 "$data"   # the embedded PostgreSQL runs as its own user when CI runs as root
log="$data/start.log"
# Below the kernel's ephemeral range (32768-60999 here): right after the test suites, an outgoing loopback
# connection can still hold a port in that range as its source, and PostgreSQL then cannot listen there.
port=25678
pg_port=25432
# In a session of its own, so that cleanup can end npm, its shell and node together.
DATA_DIR="$data" PORT=$port EMBEDDED_POSTGRES_PORT=$pg_port LOG_PRETTY=false setsid npm start >"$log" 2>&1 &
pid=$!
cleanup() { kill -9 -- "-$pid" 2>/dev/null || true; pkill -f -- "-D $data" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "npm start exited early:"; cat "$log"; exit 1; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$port/health/ready"; echo
answer=$(curl -fsS "http://127.0.0.1:$port/graphql" -H 'content-type: application/json' -d '{"query":"{ __typename }"}')
echo "$answer"
[ "$answer" = '{"data":{"__typename":"Query"}}' ] || { echo "unexpected GraphQL answer"; cat "$log"; exit 1; }

# Signal Quire's node process, as a process supervisor would (npm itself reports 143 when it is signalled).
node_pid=$(pgrep -s "$pid" -fx "node bin/start.ts" | head -n 1)
[ -n "$node_pid" ] || { echo "no node process under npm start"; exit 1; }
kill -TERM "$node_pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || { echo "npm start exited $status after SIGTERM"; cat "$log"; exit 1; }
if pgrep -f -- "-D $data" >/dev/null; then echo "a postgres process outlived npm start"; exit 1; fi
grep -q '"msg":"embedded PostgreSQL stopped"' "$log" || { echo "no clean stop in the log"; cat "$log"; exit 1; }
echo "npm start: ready, answered, stopped cleanly (exit 0)"
