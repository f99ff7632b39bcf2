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

# What a fresh Debian machine may lack: the PostgreSQL server, curl and openssl.
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
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

# From here on, everything goes through `mito client`, as a user would type it. The demo
# keeps its credentials file in .demo so it never touches ~/.config/mitosis.
client() { "$MITO" client -c "$URL" --credential-path "$DEMO/credentials-$WHO" "$@"; }
say "logging in as mitosis_admin (the token is cached, 0600, for the next commands)"
WHO=admin client -u mitosis_admin -p mitosis_admin auth
say "creating user alice, who creates group lab and adds the admin as a reader"
WHO=admin client admin users create alice alice-pw
WHO=alice client -u alice -p alice-pw groups create lab
WHO=alice client groups update-user lab mitosis_admin:read
WHO=alice client groups get lab
WHO=admin client users groups

say "starting mito worker as alice, serving group lab (working files under .demo/cache)"
XDG_CONFIG_HOME="$DEMO/config" XDG_CACHE_HOME="$DEMO/cache" \
    "$MITO" worker -c "$URL" -u alice -p alice-pw --retain --groups lab 2>"$DEMO/worker.log" &
WORKER=$!
for _ in $(seq 100); do grep -q "Worker is running" "$DEMO/worker.log" 2>/dev/null && break; sleep 0.1; done
grep "Worker registered" "$DEMO/worker.log" || { cat "$DEMO/worker.log"; exit 1; }

say "alice submits a sample task to lab and waits for it"
WHO=alice client tasks submit -g lab -l demo --terminal --wait -- \
    sh -c 'echo "Hello, Mitosis! from task $MITO_TASK_UUID"; uname -sr; echo "42" > "$MITO_RESULT_DIR/answer.txt"; echo "a warning" >&2'
UUID=$(WHO=alice client --json tasks query -g lab -l demo | grep -o '"uuid": *"[0-9a-f-]*"' | head -1 | grep -o '[0-9a-f-]\{36\}')
say "the task, its output and its artifacts"
WHO=alice client tasks get "$UUID"
WHO=alice client tasks logs "$UUID"
WHO=alice client tasks artifacts download "$UUID" result -o "$DEMO/result.tar.gz"
tar -xzOf "$DEMO/result.tar.gz" result/answer.txt | sed 's/^/result\/answer.txt: /'
WHO=alice client --json tasks query -g lab --count
say "a failure exits non-zero with the server's message"
WHO=alice client groups get nosuchgroup || echo "(exit status $?)"
say "done; stopping everything the demo started"
kill "$WORKER" 2>/dev/null; wait "$WORKER" 2>/dev/null || true
