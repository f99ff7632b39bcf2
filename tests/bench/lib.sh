# Shared by tests/bench/run.sh and compare.sh: a private PostgreSQL, and stopping by pid.
# Sourced after `cd` to the repository root; sets PGBIN, PGPORT, DIR (a temp dir that goes
# away at exit) and OUT (kept: target/bench/<UTC time>, for the printout and profiles).

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] || { echo "bench: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 2; }
DIR=$(mktemp -d /tmp/mito-bench.XXXXXX)
OUT=${MITO_BENCH_OUT:-$PWD/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
AS_PG=(); if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS_PG=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

PIDS=()
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cleanup() {
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# Default settings and fsync on; pg_stat_statements counts the coordinator's statements.
PGPORT=$(free_port)
"${AS_PG[@]}" "$PGBIN/initdb" -A trust -U postgres -D "$DIR/pg" >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -o "-p $PGPORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200 \
    -c shared_preload_libraries=pg_stat_statements" -l "$DIR/pg.log" -w start >/dev/null
psql_() { "$PGBIN/psql" -h "$DIR" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }
psql_ -qc "CREATE EXTENSION pg_stat_statements" >/dev/null

# db_url NAME: the URL of database NAME over the Unix socket, as a coordinator on the
# database's host would connect (TCP over loopback costs both sides more per round trip).
db_url() {
    echo "postgres://postgres@$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$DIR"):$PGPORT/$1"
}

# wait_http URL SECONDS: true once URL answers 2xx.
wait_http() {
    for _ in $(seq $(($2 * 10))); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

# db_ceiling CLIENTS: what PostgreSQL alone commits per second, over the same socket:
# pgbench -N (an UPDATE, a SELECT and an INSERT per transaction, no contended rows) at
# scale 1 in a database of its own, for MITO_BENCH_PGBENCH_SECS (default 10) seconds.
db_ceiling() {
    psql_ -qc "CREATE DATABASE pgbench" >/dev/null
    pgbench -i -q -s 1 -h "$DIR" -p "$PGPORT" -U postgres pgbench >"$DIR/pgbench-init.log" 2>&1
    pgbench -N -c "$1" -j 2 -T "${MITO_BENCH_PGBENCH_SECS:-10}" -h "$DIR" -p "$PGPORT" -U postgres pgbench \
        >"$DIR/pgbench.log" 2>&1
    sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$DIR/pgbench.log"
}
