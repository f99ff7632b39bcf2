#!/usr/bin/env bash
# `make demo`: runs mito on this machine and shows it working, then stops everything it
# started. Installs the PostgreSQL server packages if they are missing (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
MITO="$PWD/target/debug/mito"
DEMO="$PWD/.demo"
rm -rf "$DEMO"; mkdir -p "$DEMO"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    say "installing the PostgreSQL server (apt-get)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS_PG=()
if [ "$(id -u)" = 0 ]; then chown postgres "$DEMO"; AS_PG=(runuser -u postgres --); fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -f "$DEMO/pg/postmaster.pid" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DEMO/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "starting a private PostgreSQL in .demo/pg"
PGPORT=$(free_port)
"${AS_PG[@]}" "$PGBIN/initdb" -A trust -U postgres -D "$DEMO/pg" >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DEMO/pg" -o "-p $PGPORT -k $DEMO -c listen_addresses=127.0.0.1" -l "$DEMO/pg.log" -w start >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE mitosis" >/dev/null

say "generating the coordinator's keys (the seed's openssl commands)"
openssl genpkey -algorithm ed25519 -out "$DEMO/private.pem"
openssl pkey -in "$DEMO/private.pem" -pubout -out "$DEMO/public.pem"

PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
say "starting mito coordinator on $URL"
"$MITO" coordinator --bind "127.0.0.1:$PORT" --db "postgres://postgres@127.0.0.1:$PGPORT/mitosis" \
    --access-token-private-path "$DEMO/private.pem" --access-token-public-path "$DEMO/public.pem" \
    --data-dir "$DEMO/data" 2>"$DEMO/coordinator.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "$URL/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$URL/health"; echo

md5json() { printf '%s' "$1" | md5sum | cut -c1-32 | sed 's/../& /g' | { read -ra h; printf '['; sep=""; for x in "${h[@]}"; do printf '%s%d' "$sep" "0x$x"; sep=","; done; printf ']'; }; }
post() { curl -s -X POST "$URL$1" -H 'Content-Type: application/json' ${3:+-H "Authorization: Bearer $3"} -d "$2"; }

say "logging in as mitosis_admin"
TOKEN=$(post /login "{\"username\":\"mitosis_admin\",\"md5_password\":$(md5json mitosis_admin)}" | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s "$URL/auth" -H "Authorization: Bearer $TOKEN"; echo

say "creating user alice, who creates group lab and adds the admin as a reader"
post /admin/users "{\"username\":\"alice\",\"md5_password\":$(md5json alice-pw),\"admin\":false}" "$TOKEN"
ALICE=$(post /login "{\"username\":\"alice\",\"md5_password\":$(md5json alice-pw)}" | sed 's/.*"token":"\([^"]*\)".*/\1/')
post /groups '{"group_name":"lab"}' "$ALICE"
curl -s -X PUT "$URL/groups/lab/users" -H 'Content-Type: application/json' -H "Authorization: Bearer $ALICE" -d '{"relations":{"mitosis_admin":"Read"}}'
curl -s "$URL/groups/lab" -H "Authorization: Bearer $ALICE"; echo
curl -s "$URL/users/groups" -H "Authorization: Bearer $TOKEN"; echo

say "starting mito worker as alice, serving group lab (working files under .demo/cache)"
XDG_CONFIG_HOME="$DEMO/config" XDG_CACHE_HOME="$DEMO/cache" \
    "$MITO" worker -c "$URL" -u alice -p alice-pw --retain --groups lab --polling-interval 2s 2>"$DEMO/worker.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "Worker is running" "$DEMO/worker.log" 2>/dev/null && break; sleep 0.1; done
grep "Worker registered" "$DEMO/worker.log" || { cat "$DEMO/worker.log"; exit 1; }

say "submitting a task to group lab and waiting for it"
TASK=$(post /tasks '{"group_name":"lab","tags":[],"labels":[],"timeout":"1m","priority":0,
  "task_spec":{"args":["sh","-c","echo hello from $MITO_TASK_UUID > '"$DEMO"'/task-output.txt; uname -sr >> '"$DEMO"'/task-output.txt"]}}' "$ALICE" \
  | sed 's/.*"uuid":"\([^"]*\)".*/\1/')
echo "task $TASK"
for _ in $(seq 300); do
    INFO=$(curl -s "$URL/tasks/$TASK" -H "Authorization: Bearer $ALICE")
    case "$INFO" in *'"result":{'*) break ;; esac
    sleep 0.1
done
echo "$INFO" | python3 -c 'import json,sys; i=json.load(sys.stdin)["info"]; print("state:", i["state"], " result:", json.dumps(i["result"]))' 2>/dev/null || echo "$INFO"
say "the task's output"
cat "$DEMO/task-output.txt"
grep "committed" "$DEMO/worker.log" || true

say "done; stopping everything the demo started"
