#!/usr/bin/env bash
# `make bench`: a release coordinator on a private PostgreSQL (default settings, fsync on),
# measured by `mito bench`, then EXPLAIN ANALYZE of the claim with 100,000 Ready tasks.
# Everything started here is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
# MITO_BENCH_BIN measures another build of the same version (e.g. the static one of make dist).
MITO="${MITO_BENCH_BIN:-$PWD/target/release/mito}"
DIR=$(mktemp -d /tmp/mito-bench.XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS_PG=(); if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS_PG=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PGPORT=$(free_port); PORT=$(free_port)
COORD=""
cleanup() {
    [ -n "$COORD" ] && kill "$COORD" 2>/dev/null && wait "$COORD" 2>/dev/null || true
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
"${AS_PG[@]}" "$PGBIN/initdb" -A trust -U postgres -D "$DIR/pg" >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -o "-p $PGPORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200" -l "$DIR/pg.log" -w start >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE mito" >/dev/null
openssl genpkey -algorithm ed25519 -out "$DIR/private.pem" 2>/dev/null
openssl pkey -in "$DIR/private.pem" -pubout -out "$DIR/public.pem"
# The coordinator reaches PostgreSQL over its Unix socket, as a coordinator on the database's
# host would: TCP over loopback costs both sides more per round trip.
DB="postgres://postgres@$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$DIR"):$PGPORT/mito"
MITO_LOG=warn "$MITO" coordinator --bind "127.0.0.1:$PORT" --db "$DB" \
    --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
    --data-dir "$DIR/data" 2>"$DIR/coordinator.log" &
COORD=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 1
echo "machine: $(nproc) cores; coordinator, PostgreSQL and load on this machine"
"$MITO" bench -c "http://127.0.0.1:$PORT" --coordinator-pid "$COORD" "$@"

echo
echo "EXPLAIN ANALYZE of the claim with 100,000 Ready tasks:"
# The statement and session settings are read from the source, so this explains what runs.
extract() { python3 -c 'import re,sys; print(re.search(r"const "+sys.argv[1]+r": &str = \"(.*?)\";", open(sys.argv[2]).read(), re.S).group(1).replace("\\\n", " "))' "$@"; }
CLAIM=$(extract CLAIM src/coordinator/scheduler.rs)
SETUP=$(extract QUEUE_SETUP src/coordinator/db.rs)
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d mito -q <<SQL
INSERT INTO groups (group_name, creator_id) SELECT 'explain', id FROM users WHERE username = 'mitosis_admin';
INSERT INTO workers (worker_id, creator_id, tags) SELECT '00000000-0000-0000-0000-00000000e001', id, '{gpu}' FROM users WHERE username = 'mitosis_admin';
INSERT INTO group_worker (group_id, worker_id, role, vouched_by) SELECT g.id, w.id, 1, w.creator_id FROM groups g, workers w WHERE g.group_name = 'explain' AND w.tags = '{gpu}';
INSERT INTO active_tasks (creator_id, group_id, task_id, uuid, tags, state, timeout, priority, spec)
SELECT g.creator_id, g.id, n, gen_random_uuid(), CASE WHEN n % 2 = 0 THEN '{gpu}'::text[] ELSE '{}'::text[] END, 1, 60, n % 10, '{"args":["true"]}'
FROM groups g, generate_series(1, 100000) n WHERE g.group_name = 'explain';
ANALYZE;
$SETUP;
PREPARE claim(uuid) AS $CLAIM;
BEGIN;
EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) EXECUTE claim('00000000-0000-0000-0000-00000000e001');
ROLLBACK;
SQL
