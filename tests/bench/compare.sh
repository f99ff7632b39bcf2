#!/usr/bin/env bash
# `make bench-compare` (opt-in): mito's release coordinator and the released mitosis 0.6.8
# coordinator on one private PostgreSQL (a database each, both over its Unix socket;
# mitosis with s3s-fs for its storage), the same `mito bench` load against each in turn
# (mito, mitosis, mito, ...), then the mito/mitosis ratio of each figure's median. The
# ratios hold better across machines than either side's absolute figures. Statements and
# transactions per task are counted on both sides (pg_stat_statements, pg_stat_database).
#
# mitosis has no long-poll, so its simulated workers poll every 5 ms; the array submit is
# skipped (mitosis has no arrays). mitosis is $MITOSIS_BIN, else /opt/mitosis-0.6.8/bin/mito,
# else installed into .compat/mitosis-0.6.8 as `make compat` does (several minutes, once);
# s3s-fs likewise ($MITO_TEST_S3S_FS, /opt/s3s-fs, .compat/s3s-fs).
#   MITO_BENCH_ROUNDS=N   runs of each (default 3)
#   MITO_BENCH_OUT=DIR    where the printout is kept (default target/bench/<UTC time>)
# Arguments go to `mito bench` (default here: --tasks 4000 --repeat 1). Everything started
# here is stopped, by pid, at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
MITO="${MITO_BENCH_BIN:-$PWD/target/profiling/mito}"
COMPAT="$PWD/.compat"
WORKERS=16

. tests/compat/tools.sh
find_compat_tools bench-compare

source tests/bench/lib.sh
exec > >(tee "$OUT/bench-compare.txt") 2>&1
echo "make bench-compare, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?'): printout in $OUT/bench-compare.txt"
echo "machine: $(nproc) cores; both coordinators, PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') and load on this machine"
echo "mito: $("$MITO" --version), mitosis: $("$MITOSIS_BIN" --version 2>&1 | head -1)"
for db in mito mitosis; do psql_ -qc "CREATE DATABASE $db" >/dev/null; done
openssl genpkey -algorithm ed25519 -out "$DIR/private.pem" 2>/dev/null
openssl pkey -in "$DIR/private.pem" -pubout -out "$DIR/public.pem"

MPORT=$(free_port)
MITO_LOG=warn "$MITO" coordinator --bind "127.0.0.1:$MPORT" --db "$(db_url mito)" \
    --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
    --data-dir "$DIR/mito-data" 2>"$DIR/mito-coordinator.log" &
MPID=$!; PIDS+=("$MPID")

S3PORT=$(free_port)
mkdir -p "$DIR/s3"
"$S3S_FS" --host 127.0.0.1 --port "$S3PORT" --access-key bench_access --secret-key bench_secret "$DIR/s3" \
    >"$DIR/s3s-fs.log" 2>&1 &
PIDS+=("$!")
OPORT=$(free_port)
mkdir -p "$DIR/home"
(cd "$DIR/home" && HOME="$DIR/home" XDG_CONFIG_HOME="$DIR/home/.config" RUST_LOG=warn exec "$MITOSIS_BIN" coordinator \
    --bind "127.0.0.1:$OPORT" --db "$(db_url mitosis)" --s3 "http://127.0.0.1:$S3PORT" \
    --s3-access-key bench_access --s3-secret-key bench_secret --s3-force-path-style \
    --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
    </dev/null >"$DIR/mitosis-coordinator.log" 2>&1) &
OPID=$!; PIDS+=("$OPID")

wait_http "http://127.0.0.1:$MPORT/health" 10 || { echo "bench-compare: mito did not start:"; tail "$DIR/mito-coordinator.log"; exit 1; }
wait_http "http://127.0.0.1:$OPORT/health" 30 || { echo "bench-compare: mitosis did not start:"; tail "$DIR/mitosis-coordinator.log"; exit 1; }
sleep 1
"$MITO" bench -c "http://127.0.0.1:$MPORT" --coordinator-pid "$MPID" --db "$(db_url mito)" --label mito \
    --against "http://127.0.0.1:$OPORT" --against-pid "$OPID" --against-db "$(db_url mitosis)" \
    --against-poll 5ms --against-label "mitosis 0.6.8" \
    --rounds "${MITO_BENCH_ROUNDS:-3}" --workers "$WORKERS" --array 0 --tasks 4000 --repeat 1 "$@"
