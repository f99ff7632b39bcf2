#!/usr/bin/env bash
# `make bench`: a release coordinator on a private PostgreSQL (default settings, fsync on,
# over its Unix socket), measured by `mito bench`; then EXPLAIN ANALYZE of the claim with
# 100,000 Ready tasks, and the coordinator's instructions per task under callgrind.
#
# Besides absolute rates (which vary several-fold between machines) it prints figures that
# hold on any machine: the end-to-end rate as a share of what `pgbench -N` commits per
# second on the same PostgreSQL, statements and transactions per task, system CPU and
# context switches per task, and instructions per task.
#
#   MITO_BENCH_BIN=PATH         measure another build of the same version (e.g. make dist's)
#   MITO_BENCH_COORDINATOR=PATH the coordinator run under callgrind, if not MITO_BENCH_BIN's
#                               (to compare another build's count with the same load)
#   MITO_BENCH_INSTRUCTIONS=N   tasks of the callgrind runs (N and 5N; default 200, about
#                               a minute in all); 0 skips them
#   MITO_BENCH_OUT=DIR          where the printout and the callgrind files are kept
#                               (default target/bench/<UTC time>)
# Arguments go to `mito bench` (e.g. --tasks 4000). Everything started here is stopped, by
# pid, at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
MITO="${MITO_BENCH_BIN:-$PWD/target/profiling/mito}"
WORKERS=16
source tests/bench/lib.sh
exec > >(tee "$OUT/bench.txt") 2>&1
echo "make bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?'): printout in $OUT/bench.txt"
echo "machine: $(nproc) cores; coordinator, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') and load on this machine"

TPS=$(db_ceiling "$WORKERS")
[ -n "$TPS" ] || { echo "bench: pgbench gave no rate:"; cat "$DIR/pgbench.log"; exit 1; }
TPS=$(printf '%.0f' "$TPS")
echo "database ceiling: pgbench -N, $WORKERS clients, ${MITO_BENCH_PGBENCH_SECS:-10} s, over the Unix socket: $TPS transactions/s"

psql_ -qc "CREATE DATABASE mito" >/dev/null
openssl genpkey -algorithm ed25519 -out "$DIR/private.pem" 2>/dev/null
openssl pkey -in "$DIR/private.pem" -pubout -out "$DIR/public.pem"
DB=$(db_url mito)
PORT=$(free_port)
MITO_LOG=warn "$MITO" coordinator --bind "127.0.0.1:$PORT" --db "$DB" \
    --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
    --data-dir "$DIR/data" 2>"$DIR/coordinator.log" &
COORD=$!; PIDS+=("$COORD")
wait_http "http://127.0.0.1:$PORT/health" 10 || { echo "bench: the coordinator did not start:"; tail "$DIR/coordinator.log"; exit 1; }
sleep 1
"$MITO" bench -c "http://127.0.0.1:$PORT" --coordinator-pid "$COORD" --workers "$WORKERS" \
    --db "$DB" --db-ceiling "$TPS" "$@"

echo
echo "EXPLAIN ANALYZE of the claim with 100,000 Ready tasks:"
# The binary prints the statement and the queue connections' settings, so this explains
# exactly what runs.
CLAIM=$("$MITO" bench --print-sql claim)
SETUP=$("$MITO" bench --print-sql queue-setup)
PARAMS=$(grep -o '\$[0-9]\+' <<<"$CLAIM" | sort -u | tr '\n' ' ')
if [ "$PARAMS" != '$1 $2 ' ]; then
    echo "bench: the claim now takes parameters $PARAMS; update the PREPARE and EXECUTE below (\$1 worker uuid, \$2 lease seconds)"
    exit 1
fi
psql_ -d mito -q <<SQL
INSERT INTO groups (group_name, creator_id) SELECT 'explain', id FROM users WHERE username = 'mitosis_admin';
INSERT INTO workers (worker_id, creator_id, tags) SELECT '00000000-0000-0000-0000-00000000e001', id, '{gpu}' FROM users WHERE username = 'mitosis_admin';
INSERT INTO group_worker (group_id, worker_id, role, vouched_by) SELECT g.id, w.id, 1, w.creator_id FROM groups g, workers w WHERE g.group_name = 'explain' AND w.tags = '{gpu}';
INSERT INTO active_tasks (creator_id, group_id, task_id, uuid, tags, state, timeout, priority, spec)
SELECT g.creator_id, g.id, n, gen_random_uuid(), CASE WHEN n % 2 = 0 THEN '{gpu}'::text[] ELSE '{}'::text[] END, 1, 60, n % 10, '{"args":["true"]}'
FROM groups g, generate_series(1, 100000) n WHERE g.group_name = 'explain';
ANALYZE;
$SETUP;
PREPARE claim(uuid, float8) AS $CLAIM;
BEGIN;
EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) EXECUTE claim('00000000-0000-0000-0000-00000000e001', 10);
ROLLBACK;
SQL
stop_pid "$COORD"

N=${MITO_BENCH_INSTRUCTIONS:-200}
if [ "$N" != 0 ]; then
    echo
    echo "instructions per task: a coordinator under valgrind --tool=callgrind, its own database, $N and $((5 * N)) tasks end to end (MITO_BENCH_INSTRUCTIONS=0 skips this):"
    CG="$OUT/callgrind"; mkdir -p "$CG"
    psql_ -qc "CREATE DATABASE mito_callgrind" >/dev/null
    PORT=$(free_port)
    MITO_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$CG/callgrind.out" \
        "${MITO_BENCH_COORDINATOR:-$MITO}" coordinator --bind "127.0.0.1:$PORT" --db "$(db_url mito_callgrind)" \
        --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
        --data-dir "$DIR/data-callgrind" 2>"$CG/coordinator.log" &
    VG=$!; PIDS+=("$VG")
    wait_http "http://127.0.0.1:$PORT/health" 300 || { echo "bench: the coordinator under valgrind did not start:"; tail "$CG/coordinator.log"; exit 1; }
    "$MITO" bench -c "http://127.0.0.1:$PORT" --coordinator-pid "$VG" --workers "$WORKERS" \
        --instructions "$N" --callgrind-dir "$CG"
    stop_pid "$VG"
fi
