#!/usr/bin/env bash
# `make compat`: wire compatibility between mito and the released mitosis 0.6.8.
#
# Four checks, each a series of steps that print PASS or FAIL with the command that ran:
#   1. the mitosis 0.6.8 client against a mito coordinator (users, groups, tasks,
#      attachments, artifacts; mito's local object store, no S3);
#   2. a mitosis 0.6.8 worker against a mito coordinator (register, fetch, run, commit);
#   3. a mito worker, and the mitosis client, against a mitosis 0.6.8 coordinator
#      (which needs S3: s3s-fs on a free port);
#   4. the same mitosis client commands (and a mitosis worker) against both coordinators,
#      whose outputs must match; deliberate differences print KNOWN with the reason.
# The script exits non-zero if any step fails. Everything it starts (a private PostgreSQL,
# s3s-fs, coordinators, workers) is stopped by pid on exit; logs are kept in .compat/run.
#
# The mitosis binary is $MITOSIS_BIN, else /opt/mitosis-0.6.8/bin/mito, else it is installed
# into .compat/mitosis-0.6.8 with `cargo install mito --version 0.6.8 --locked`.
# s3s-fs is $MITO_TEST_S3S_FS, else /opt/s3s-fs/bin/s3s-fs, else installed into .compat/s3s-fs.
#
# The mitosis client exits 0 even when a request fails, so steps are judged by its output
# (it logs ERROR on failures) and by reading the state back through mito's own client.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
MITO="$ROOT/target/debug/mito"
COMPAT="$ROOT/.compat"
RUN="$COMPAT/run"
rm -rf "$RUN"; mkdir -p "$RUN"

[ -x "$MITO" ] || { echo "compat: $MITO is missing; run \`cargo build\` (or \`make compat\`)" >&2; exit 2; }

. tests/compat/tools.sh
find_compat_tools compat
echo "compat: mito $("$MITO" --version 2>&1 | head -1), mitosis $("$MITOSIS_BIN" --version 2>&1 | head -1)"

# ---------------------------------------------------------------- processes and cleanup
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] || { echo "compat: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 2; }
AS_PG=(); if [ "$(id -u)" = 0 ]; then chown postgres "$RUN"; AS_PG=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [ -f "$RUN/pg/postmaster.pid" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$RUN/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

wait_http() { # URL: true once it answers (any status), within 20 s
    for _ in $(seq 200); do curl -s -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

PGPORT=$(free_port)
"${AS_PG[@]}" "$PGBIN/initdb" -A trust -U postgres -D "$RUN/pg" >/dev/null || exit 2
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$RUN/pg" -o "-p $PGPORT -k $RUN -c listen_addresses=127.0.0.1" \
    -l "$RUN/pg.log" -w start >/dev/null || exit 2
for db in mito mitosis; do "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE $db" >/dev/null; done
openssl genpkey -algorithm ed25519 -out "$RUN/private.pem" 2>/dev/null
openssl pkey -in "$RUN/private.pem" -pubout -out "$RUN/public.pem"

# ---------------------------------------------------------------- reporting
FAILS=0; PASSES=0
pass() { PASSES=$((PASSES + 1)); printf '  PASS  %s\n' "$*"; }
fail() { FAILS=$((FAILS + 1)); printf '  FAIL  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }

# A temp HOME per user so neither client reads or writes ~/.config/mitosis.
home_of() { local h="$RUN/home-$1"; mkdir -p "$h/.config" "$h/.cache"; echo "$h"; }

# WHO is USER or USER:PASSWORD; the password defaults to "USER-pw" (the admin's is its name).
creds() { local u=${1%%:*} p; if [ "$u" != "$1" ]; then p=${1#*:}; elif [ "$u" = mitosis_admin ]; then p=$u; else p="$u-pw"; fi; echo "$u $p"; }
# old WHO URL ARGS...: runs the mitosis client as WHO,
# output in $OUT. Fails the step when the output has ERROR. Logs in afresh each time: with
# -u and -p given the client never prompts.
OUT=""
old() {
    local who pw url=$2; read -r who pw <<<"$(creds "$1")"; shift 2
    local h; h=$(home_of "old-$who-${url##*:}")
    OUT=$(cd "$h" && HOME="$h" XDG_CONFIG_HOME="$h/.config" XDG_CACHE_HOME="$h/.cache" \
        timeout 60 "$MITOSIS_BIN" client -c "$url" -u "$who" -p "$pw" "$@" 2>&1 </dev/null)
    local rc=$?
    printf '%s\n' "$OUT" >>"$RUN/mitosis-client.log"
    [ $rc = 0 ] && ! grep -q 'ERROR' <<<"$OUT"
}
# step DESCRIPTION WHO URL ARGS...: one PASS/FAIL line for one mitosis client command.
step() {
    local desc=$1 who=$2 url=$3; shift 3
    if old "$who" "$url" "$@"; then pass "$desc: mitosis client $*"
    else fail "$desc: mitosis client $* -> $(head -c 400 <<<"$OUT")"; fi
}
# new WHO URL ARGS...: runs mito's own client (JSON output) to read state back.
new() {
    local who pw url=$2; read -r who pw <<<"$(creds "$1")"; shift 2
    local h; h=$(home_of "new-$who-${url##*:}")
    HOME="$h" XDG_CONFIG_HOME="$h/.config" timeout 60 "$MITO" client -c "$url" \
        --credential-path "$h/credentials" -u "$who" -p "$pw" --json "$@" 2>>"$RUN/mito-client.log" </dev/null
}
# expect DESCRIPTION COMMAND...: PASS when the command succeeds.
expect() {
    local desc=$1; shift
    if "$@" >/dev/null 2>&1; then pass "$desc"; else fail "$desc"; fi
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
uuid_in() { grep -o '[0-9a-f]\{8\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{12\}' | head -1; }

# wait_task WHO URL UUID STATE: polls mito's client until the task reaches STATE (60 s).
wait_task() {
    local st=""
    for _ in $(seq 120); do
        st=$(new "$1" "$2" tasks get "$3" | json "d['info']['state']" 2>/dev/null)
        [ "$st" = "$4" ] && return 0
        sleep 0.5
    done
    echo "task $3 is still ${st:-unknown}, expected $4" >&2
    return 1
}

# ---------------------------------------------------------------- mito coordinator
MPORT=$(free_port); MURL="http://127.0.0.1:$MPORT"
# Started as a new user would: config.example.toml with its address and database adjusted
# (its key paths are relative, so they resolve to the keys generated in $RUN).
sed -e "s|^bind = .*|bind = \"127.0.0.1:$MPORT\"|" \
    -e "s|^db_url = .*|db_url = \"postgres://postgres@127.0.0.1:$PGPORT/mito\"|" \
    -e "s|^# data_dir = .*|data_dir = \"$RUN/mito-data\"|" config.example.toml >"$RUN/coordinator.toml"
H=$(home_of mito-coordinator)
HOME="$H" XDG_CONFIG_HOME="$H/.config" "$MITO" coordinator --config "$RUN/coordinator.toml" \
    </dev/null 2>"$RUN/mito-coordinator.log" &
PIDS+=($!)
wait_http "$MURL/health" || { echo "compat: mito coordinator did not start:"; tail "$RUN/mito-coordinator.log"; exit 1; }

section "1. mitosis 0.6.8 client -> mito coordinator ($MURL)"
step "auth" mitosis_admin "$MURL" auth
step "admin creates alice" mitosis_admin "$MURL" admin users create alice alice-pw
step "admin creates bob" mitosis_admin "$MURL" admin users create bob bob-old
step "bob changes his password" bob:bob-old "$MURL" users change-password bob-old bob-pw
expect "bob logs in to mito with the new password" new bob "$MURL" auth
step "alice creates group lab" alice "$MURL" groups create lab
step "alice adds bob to lab as writer" alice "$MURL" groups update-user lab bob:write mitosis_admin:read
step "alice reads group lab" alice "$MURL" groups get lab
if grep -q 'bob' <<<"$OUT"; then pass "groups get lists bob"; else fail "groups get lists bob -> $OUT"; fi
step "bob lists his groups" bob "$MURL" users groups
if grep -q 'lab' <<<"$OUT"; then pass "users groups lists lab"; else fail "users groups lists lab -> $OUT"; fi
step "alice removes bob from lab" alice "$MURL" groups remove-user lab bob
if new bob "$MURL" users groups | grep -q '"lab"'; then fail "bob still sees lab after remove-user (mito client users groups)"
else pass "bob no longer sees lab (mito client users groups)"; fi

step "alice submits a task" alice "$MURL" tasks submit -g lab -l compat -- echo hi
T1=$(uuid_in <<<"$OUT")
if [ -n "$T1" ] && new alice "$MURL" tasks get "$T1" | json "d['info']['state']" 2>/dev/null | grep -qx Ready; then
    pass "the submitted task $T1 is Ready (mito client tasks get)"
else fail "the submitted task ${T1:-<no uuid printed>} is not Ready: $OUT"; fi
step "alice gets the task" alice "$MURL" tasks get "${T1:-missing}"
if grep -q "${T1:-missing}" <<<"$OUT"; then pass "tasks get shows the uuid"; else fail "tasks get shows the uuid -> $OUT"; fi
step "alice queries tasks" alice "$MURL" tasks query -g lab -l compat -v
if grep -q "${T1:-missing}" <<<"$OUT"; then pass "tasks query finds the task"; else fail "tasks query finds the task -> $OUT"; fi
step "alice counts tasks" alice "$MURL" tasks query -g lab --count
step "alice cancels the task" alice "$MURL" tasks cancel "${T1:-missing}"
expect "the task is Cancelled (mito client tasks get)" wait_task alice "$MURL" "${T1:-missing}" Cancelled

printf 'compat attachment %s\n' "$RANDOM" >"$RUN/input.txt"
step "alice uploads an attachment" alice "$MURL" groups attachments upload -g lab "$RUN/input.txt" data/input.txt
step "alice lists attachments" alice "$MURL" groups attachments query -g lab
if grep -q 'data/input.txt' <<<"$OUT"; then pass "attachments query lists data/input.txt"; else fail "attachments query lists data/input.txt -> $OUT"; fi
step "alice downloads the attachment" alice "$MURL" groups attachments download -g lab data/input.txt -o "$RUN/input.back"
expect "the downloaded attachment has the uploaded bytes" cmp "$RUN/input.txt" "$RUN/input.back"
# mitosis refuses to delete an attachment updated within the last hour (section 3 checks
# that the real coordinator does too); backdate it in mito's database, then delete it.
old alice "$MURL" groups attachments delete -g lab data/input.txt
if grep -q 'updated in the last hour' <<<"$OUT"; then pass "a fresh attachment is not deleted, as in mitosis: mitosis client groups attachments delete"
else fail "a fresh attachment is not deleted, as in mitosis -> $OUT"; fi
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d mito -qc \
    "UPDATE attachments SET updated_at = now() - interval '2 hours' WHERE key = 'data/input.txt'" >/dev/null
step "alice deletes the (backdated) attachment" alice "$MURL" groups attachments delete -g lab data/input.txt
if new alice "$MURL" groups attachments query -g lab | grep -q 'data/input.txt'; then fail "the attachment is still listed after delete (mito client)"
else pass "the attachment is gone (mito client groups attachments query)"; fi

step "alice uploads a result artifact to the task" alice "$MURL" tasks artifacts upload "$RUN/input.txt" "${T1:-missing}" result
mkdir -p "$RUN/artifact"
step "alice downloads the artifact" alice "$MURL" tasks artifacts download "${T1:-missing}" result -o "$RUN/artifact"
if cmp -s "$RUN/input.txt" "$(find "$RUN/artifact" -type f | head -1)"; then pass "the downloaded artifact has the uploaded bytes"
else fail "the downloaded artifact has the uploaded bytes (got: $(find "$RUN/artifact" -type f))"; fi

# Task edits and filters: the other task commands a mitosis user types.
step "alice submits a task with every option" alice "$MURL" tasks submit -g lab -t gpu -l compat,opts \
    --timeout 1h -p 5 -e A=1,B=2 --terminal -- echo opts
T4=$(uuid_in <<<"$OUT")
got=$(new alice "$MURL" tasks get "${T4:-missing}" | json "(d['info']['priority'], sorted(d['info']['tags']), sorted(d['info']['labels']), d['info']['timeout'], d['info']['spec']['envs'], d['info']['spec']['terminal_output'])" 2>&1)
if [ "$got" = "(5, ['gpu'], ['compat', 'opts'], 3600, {'A': '1', 'B': '2'}, True)" ]; then pass "mito stored every submit option: $got"
else fail "mito stored every submit option: got $got"; fi
step "alice changes the task" alice "$MURL" tasks change "${T4:-missing}" -p 7 --timeout 2h -- echo changed
got=$(new alice "$MURL" tasks get "${T4:-missing}" | json "(d['info']['priority'], d['info']['timeout'], d['info']['spec']['args'])" 2>&1)
if [ "$got" = "(7, 7200, ['echo', 'changed'])" ]; then pass "the change is stored: $got"; else fail "the change is stored: got $got"; fi
step "alice replaces the task's labels" alice "$MURL" tasks update-labels "${T4:-missing}" relabelled
got=$(new alice "$MURL" tasks get "${T4:-missing}" | json "d['info']['labels']" 2>&1)
if [ "$got" = "['relabelled']" ]; then pass "the labels are replaced"; else fail "the labels are replaced: got $got"; fi
step "alice queries by state and priority" alice "$MURL" tasks query -g lab -s ready -p '>=7'
if grep -q "${T4:-missing}" <<<"$OUT" && ! grep -q "${T1:-missing}" <<<"$OUT"; then pass "the filters select the changed task only"
else fail "the filters select the changed task only -> $OUT"; fi
step "alice cancels by filter" alice "$MURL" tasks cancel-many -g lab -l relabelled
expect "cancel-many cancelled the task (mito client tasks get)" wait_task alice "$MURL" "${T4:-missing}" Cancelled
old alice "$MURL" groups attachments upload -g lab "$RUN/input.txt" data/meta.txt
step "alice reads an attachment's metadata" alice "$MURL" groups attachments get -g lab data/meta.txt
if grep -q "size $(wc -c <"$RUN/input.txt")B" <<<"$OUT"; then pass "attachments get shows the size"; else fail "attachments get shows the size -> $OUT"; fi
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d mito -qc \
    "UPDATE artifacts SET updated_at = now() - interval '2 hours'" >/dev/null
step "alice deletes the (backdated) artifact" alice "$MURL" tasks artifacts delete "${T1:-missing}" result
got=$(new alice "$MURL" tasks get "${T1:-missing}" | json "[a['content_type'] for a in d['artifacts']]" 2>&1)
if [ "$got" = "[]" ]; then pass "the artifact is gone (mito client tasks get)"
else fail "the artifact is gone (mito client tasks get): artifacts $got"; fi

section "2. mitosis 0.6.8 worker -> mito coordinator ($MURL)"
# worker_up LOG: true once the worker's log says it is running (30 s).
worker_up() {
    for _ in $(seq 300); do grep -q 'Worker is running' "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
H=$(home_of old-worker)
(cd "$H" && HOME="$H" XDG_CONFIG_HOME="$H/.config" XDG_CACHE_HOME="$H/.cache" \
    exec "$MITOSIS_BIN" worker -c "$MURL" -u alice -p alice-pw -g lab --skip-redis \
    --polling-interval 1s --heartbeat-interval 5s </dev/null >"$RUN/mitosis-worker.log" 2>&1) &
OLDW=$!; PIDS+=($OLDW)
cmd="mitosis worker -c $MURL -u alice -p alice-pw -g lab --skip-redis --polling-interval 1s"
if worker_up "$RUN/mitosis-worker.log"; then pass "registers and runs: $cmd"
else fail "registers and runs: $cmd -> $(tail -5 "$RUN/mitosis-worker.log")"; fi
T2=$(new alice "$MURL" tasks submit -g lab --terminal -- sh -c 'echo hi from mitosis; echo 42 >"$MITO_RESULT_DIR/answer.txt"' | json "d['uuid']" 2>/dev/null)
if [ -n "$T2" ]; then pass "mito client submits task $T2"; else fail "mito client submits a task (see $RUN/mito-client.log)"; fi
if wait_task alice "$MURL" "${T2:-missing}" Finished 2>>"$RUN/mito-client.log"; then
    st=$(new alice "$MURL" tasks get "$T2" | json "d['info']['result']['exit_status']" 2>/dev/null)
    if [ "$st" = 0 ]; then pass "the mitosis worker ran it: Finished, exit_status 0 (mito client tasks get)"
    else fail "the mitosis worker ran it: Finished but exit_status ${st:-missing}"; fi
else fail "the mitosis worker ran it: not Finished in 60 s ($(tail -3 "$RUN/mitosis-worker.log"))"; fi
mkdir -p "$RUN/result2"
if new alice "$MURL" tasks artifacts download "${T2:-missing}" result -o "$RUN/result2" >/dev/null \
    && tar -xzOf "$(find "$RUN/result2" -type f | head -1)" 2>/dev/null | grep -qx 42; then
    pass "the worker's result artifact holds answer.txt (mito client tasks artifacts download)"
else fail "the worker's result artifact holds answer.txt"; fi
if new alice "$MURL" tasks artifacts download "${T2:-missing}" std-log -o "$RUN/result2" >/dev/null \
    && find "$RUN/result2" -type f -name '*std*' | head -1 | xargs -r tar -xzOf 2>/dev/null | grep -q 'hi from mitosis'; then
    pass "the worker's std-log artifact holds the task's stdout"
else fail "the worker's std-log artifact holds the task's stdout"; fi

# submit_wait DESC STATE ARGS...: submits with mito's client, waits for STATE, leaves the
# task's JSON (mito client tasks get) in $TASK.
TASK=""
submit_wait() {
    local desc=$1 want=$2; shift 2
    local u; u=$(new alice "$MURL" tasks submit -g lab "$@" | json "d['uuid']" 2>/dev/null)
    TASK=""
    if [ -n "$u" ] && wait_task alice "$MURL" "$u" "$want" 2>>"$RUN/mito-client.log"; then
        TASK=$(new alice "$MURL" tasks get "$u"); return 0
    fi
    fail "$desc: task ${u:-<not submitted>} did not reach $want ($(tail -2 "$RUN/mitosis-worker.log"))"
    return 1
}
new alice "$MURL" groups attachments upload -g lab "$RUN/input.txt" data/res.txt >/dev/null
if submit_wait "attachment resource" Finished -r attachment=data/res.txt:in.txt -- \
        sh -c 'cmp "$MITO_RESOURCE_DIR/in.txt" '"'$RUN/input.txt'"; then
    got=$(json "d['info']['result']['exit_status']" <<<"$TASK")
    if [ "$got" = 0 ]; then pass "the mitosis worker downloads an attachment resource from mito's store"
    else fail "the mitosis worker downloads an attachment resource: exit_status $got"; fi
fi
if submit_wait "failing task" Finished -- sh -c 'exit 3'; then
    got=$(json "d['info']['result']['exit_status']" <<<"$TASK")
    # exit_status is the raw wait status in mitosis: exit 3 is 3 << 8.
    if [ "$got" = 768 ]; then pass "a failing task (exit 3) is Finished with raw exit_status 768"; else fail "a failing task (exit 3): exit_status $got, expected 768"; fi
fi
if submit_wait "timeout" Cancelled --timeout 2s -- sleep 60; then
    got=$(json "d['info']['result']['msg']" <<<"$TASK")
    if [ "$got" = ExecTimeout ]; then pass "a task over its timeout is Cancelled with msg ExecTimeout"
    else fail "a task over its timeout: msg $got"; fi
fi
cat >"$RUN/new_task.json" <<'JSON'
{"group_name": "lab", "tags": [], "labels": ["downstream"], "timeout": "1m", "priority": 0,
 "task_spec": {"args": ["sh", "-c", "test -n \"$MITO_UPSTREAM_TASK_UUID\""], "envs": {}, "resources": [],
               "terminal_output": false, "watch": null}}
JSON
if submit_wait "downstream" Finished -- sh -c 'cp '"'$RUN/new_task.json'"' "$MITO_NEW_TASK"'; then
    down=$(json "d['info']['downstream_task_uuid']" <<<"$TASK")
    if [ "$down" != None ] && wait_task alice "$MURL" "$down" Finished 2>>"$RUN/mito-client.log" \
        && [ "$(new alice "$MURL" tasks get "$down" | json "d['info']['result']['exit_status']")" = 0 ]; then
        pass "a task's MITO_NEW_TASK is submitted by the mitosis worker and runs after it"
    else fail "a task's MITO_NEW_TASK: downstream ${down} did not finish with 0"; fi
fi

# mito lets a user cancel a Running task (README "Extensions"); a mitosis worker never asks
# about cancellations, so it finishes the task, and mito archives it as Cancelled anyway.
u=$(new alice "$MURL" tasks submit -g lab -- sleep 3 | json "d['uuid']" 2>/dev/null)
if [ -n "$u" ] && wait_task alice "$MURL" "$u" Running 2>>"$RUN/mito-client.log"; then
    step "alice cancels a task running on the mitosis worker" alice "$MURL" tasks cancel "$u"
    if wait_task alice "$MURL" "$u" Cancelled 2>>"$RUN/mito-client.log" \
        && [ "$(new alice "$MURL" tasks get "$u" | json "d['info']['result']['msg']")" = UserCancellation ]; then
        pass "the running task ends Cancelled with msg UserCancellation"
    else fail "the running task ends Cancelled with msg UserCancellation ($(tail -2 "$RUN/mitosis-worker.log"))"; fi
    if submit_wait "after a cancel" Finished -- true; then pass "the mitosis worker still runs tasks after the cancel"; fi
else fail "a task for the cancel check did not start running on the mitosis worker"; fi

step "alice lists the workers of lab" alice "$MURL" workers query -g lab -v
W=$(grep -o '[0-9a-f]\{8\}-[0-9a-f-]\{27\}' <<<"$OUT" | head -1)
if [ -n "$W" ]; then pass "workers query shows the mitosis worker $W"; else fail "workers query shows the mitosis worker -> $OUT"; fi
step "alice reads the worker" alice "$MURL" workers get "${W:-missing}"
step "alice stops the worker" alice "$MURL" workers cancel "${W:-missing}"
for _ in $(seq 100); do kill -0 "$OLDW" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$OLDW" 2>/dev/null; then fail "the mitosis worker exits after workers cancel (still running after 20 s)"
else pass "the mitosis worker exits after workers cancel"; fi
stop "$OLDW"

section "3. mito worker and mitosis 0.6.8 client -> mitosis 0.6.8 coordinator"
S3PORT=$(free_port); S3URL="http://127.0.0.1:$S3PORT"
mkdir -p "$RUN/s3"
"$S3S_FS" --host 127.0.0.1 --port "$S3PORT" --access-key compat_access --secret-key compat_secret "$RUN/s3" \
    >"$RUN/s3s-fs.log" 2>&1 &
PIDS+=($!)
wait_http "$S3URL/" || { fail "s3s-fs did not start: $(tail -3 "$RUN/s3s-fs.log")"; }
OPORT=$(free_port); OURL="http://127.0.0.1:$OPORT"
H=$(home_of old-coordinator)
(cd "$H" && HOME="$H" XDG_CONFIG_HOME="$H/.config" exec "$MITOSIS_BIN" coordinator --bind "127.0.0.1:$OPORT" \
    --db "postgres://postgres@127.0.0.1:$PGPORT/mitosis" --s3 "$S3URL" \
    --s3-access-key compat_access --s3-secret-key compat_secret --s3-force-path-style \
    --access-token-private-path "$RUN/private.pem" --access-token-public-path "$RUN/public.pem" \
    </dev/null >"$RUN/mitosis-coordinator.log" 2>&1) &
PIDS+=($!)
if wait_http "$OURL/health"; then pass "mitosis coordinator serves $OURL (S3 at $S3URL)"
else fail "mitosis coordinator did not start: $(tail -5 "$RUN/mitosis-coordinator.log")"; fi

step "admin creates alice" mitosis_admin "$OURL" admin users create alice alice-pw
step "alice creates group lab" alice "$OURL" groups create lab
old alice "$OURL" groups attachments upload -g lab "$RUN/input.txt" data/input.txt
old alice "$OURL" groups attachments delete -g lab data/input.txt
if grep -q 'updated in the last hour' <<<"$OUT"; then pass "mitosis also refuses to delete a fresh attachment"
else fail "mitosis also refuses to delete a fresh attachment -> $OUT"; fi
H=$(home_of new-worker)
HOME="$H" XDG_CONFIG_HOME="$H/.config" XDG_CACHE_HOME="$H/.cache" "$MITO" worker -c "$OURL" \
    -u alice -p alice-pw -g lab --polling-interval 1s </dev/null >"$RUN/mito-worker.log" 2>&1 &
NEWW=$!; PIDS+=($NEWW)
cmd="mito worker -c $OURL -u alice -p alice-pw -g lab --polling-interval 1s"
if worker_up "$RUN/mito-worker.log"; then pass "registers and runs: $cmd"
else fail "registers and runs: $cmd -> $(tail -5 "$RUN/mito-worker.log")"; fi
step "alice submits a task with the mitosis client" alice "$OURL" tasks submit -g lab --terminal -- \
    sh -c 'echo hi from mito; echo 42 >"$MITO_RESULT_DIR/answer.txt"'
T3=$(uuid_in <<<"$OUT")
# The mitosis coordinator has mitosis's API, so mito's client reads the state back.
if wait_task alice "$OURL" "${T3:-missing}" Finished 2>>"$RUN/mito-client.log"; then
    st=$(new alice "$OURL" tasks get "$T3" | json "d['info']['result']['exit_status']" 2>/dev/null)
    if [ "$st" = 0 ]; then pass "the mito worker ran it: Finished, exit_status 0"
    else fail "the mito worker ran it: Finished but exit_status ${st:-missing}"; fi
else fail "the mito worker ran it: not Finished in 60 s ($(tail -3 "$RUN/mito-worker.log"))"; fi
step "alice reads the task with the mitosis client" alice "$OURL" tasks get "${T3:-missing}"
if grep -qi 'finished' <<<"$OUT"; then pass "mitosis client sees it Finished"; else fail "mitosis client sees it Finished -> $OUT"; fi
mkdir -p "$RUN/result3"
step "alice downloads the result with the mitosis client" alice "$OURL" tasks artifacts download "${T3:-missing}" result -o "$RUN/result3"
if tar -xzOf "$(find "$RUN/result3" -type f | head -1)" 2>/dev/null | grep -qx 42; then
    pass "the mito worker's result artifact holds answer.txt"
else fail "the mito worker's result artifact holds answer.txt"; fi
# The archives a mito worker uploads have the layout a mitosis worker's have (section 2).
mkdir -p "$RUN/stdlog3"
step "alice downloads the mito worker's std-log" alice "$OURL" tasks artifacts download "${T3:-missing}" std-log -o "$RUN/stdlog3"
for kind in result std-log; do
    mine=$(find "$RUN/result3" "$RUN/stdlog3" -name "$kind.tar.gz" | head -1)
    theirs=$(find "$RUN/result2" -name "$kind.tar.gz" | head -1)
    a=$(tar -tzf "$theirs" 2>&1 | sort); b=$(tar -tzf "$mine" 2>&1 | sort)
    if [ -n "$mine" ] && [ -n "$theirs" ] && [ "$a" = "$b" ]; then pass "the $kind archive lists the same entries as a mitosis worker's: $(echo $b)"
    else fail "the $kind archive lists the same entries as a mitosis worker's: mitosis [$(echo $a)], mito [$(echo $b)]"; fi
done
step "alice submits a task with an attachment resource" alice "$OURL" tasks submit -g lab \
    -r attachment=data/input.txt:in.txt -- sh -c 'cmp "$MITO_RESOURCE_DIR/in.txt" '"'$RUN/input.txt'"
T6=$(uuid_in <<<"$OUT")
if wait_task alice "$OURL" "${T6:-missing}" Finished 2>>"$RUN/mito-client.log" \
    && [ "$(new alice "$OURL" tasks get "$T6" | json "d['info']['result']['exit_status']")" = 0 ]; then
    pass "the mito worker downloads an attachment resource through mitosis's presigned S3 URL"
else fail "the mito worker downloads an attachment resource ($(tail -2 "$RUN/mito-worker.log"))"; fi
step "alice submits a failing task with the mitosis client" alice "$OURL" tasks submit -g lab -- sh -c 'exit 3'
T5=$(uuid_in <<<"$OUT")
if wait_task alice "$OURL" "${T5:-missing}" Finished 2>>"$RUN/mito-client.log" \
    && [ "$(new alice "$OURL" tasks get "$T5" | json "d['info']['result']['exit_status']")" = 768 ]; then
    pass "the mito worker reports exit 3 as raw exit_status 768, as a mitosis worker does"
else fail "the mito worker reports exit 3 as raw exit_status 768"; fi
stop "$NEWW"

section "4. the same mitosis 0.6.8 client commands against both coordinators give the same output"
# Output is compared after removing what legitimately differs: colours, log timestamps,
# uuids, dates and the coordinator's address. In arguments, @T stands for the task
# submitted in this section on the coordinator being asked, @U for the second one and @W
# for the worker.
norm() {
    sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9T:.-]*Z *//' \
        -e 's/[0-9a-f]\{8\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{4\}-[0-9a-f]\{12\}/<uuid>/g' \
        -e 's/[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}[ T][0-9:.]*\( *[+-][0-9:]*\|Z\)\?/<time>/g' \
        -e "s#$MURL#<url>#g; s#$OURL#<url>#g"
}
MT=""; OT=""
# unordered: sorts lines, and the items of [...] and {...} lists within a line, for replies
# that mitosis keeps in hash maps and sets (their order changes from run to run).
unordered() {
    python3 -c '
import re, sys
def srt(m): return m.group(1) + ", ".join(sorted(m.group(2).split(", "))) + m.group(3)
lines = [re.sub(r"([\[{])([^\[\]{}]*)([\]}])", srt, l) for l in sys.stdin.read().splitlines()]
print("\n".join(sorted(lines)))'
}
# mirror [-k REASON] WHO ARGS...: compares the outputs, unordered (mitosis prints tags,
# labels and maps in hash order); -k marks a known, deliberate difference: printed as KNOWN
# with the reason.
KNOWN=0
mirror() {
    local sorted=unordered known=""
    [ "$1" = -k ] && { known=$2; shift 2; }
    local who=$1; shift
    local a=() b=() x
    for x in "$@"; do
        a+=("$(sed "s/@T/${MT:-none}/g; s/@U/${MU:-none}/g; s/@W/${MW:-none}/g" <<<"$x")")
        b+=("$(sed "s/@T/${OT:-none}/g; s/@U/${OU:-none}/g; s/@W/${OW:-none}/g" <<<"$x")")
    done
    old "$who" "$MURL" "${a[@]}"; local got_m; got_m=$(norm <<<"$OUT" | $sorted); MOUT=$OUT
    old "$who" "$OURL" "${b[@]}"; local got_o; got_o=$(norm <<<"$OUT" | $sorted)
    local first; first=$(grep -v 'credential not found' <<<"$got_m" | head -1 | cut -c1-70)
    if [ "$got_m" = "$got_o" ]; then pass "same output: mitosis client $* (${first:-no output})"; return; fi
    if [ -n "$known" ]; then KNOWN=$((KNOWN + 1)); printf '  KNOWN %s: mitosis client %s\n' "$known" "$*"
    else fail "different output: mitosis client $*"; fi
    diff <(echo "$got_o") <(echo "$got_m") | sed 's/^</      mitosis:/; s/^>/      mito:   /' | grep -v '^---\|^[0-9]'
}
printf 'mirror\n' >"$RUN/mirror.txt"
mirror mitosis_admin admin users create mirror mirror-pw
mirror mitosis_admin admin users create mirror2 mirror2-pw
mirror mitosis_admin admin users create mirror mirror-pw
mirror mirror groups create mgrp
mirror mirror groups create mgrp
mirror mirror groups update-user mgrp mirror2:read
mirror mirror groups get mgrp
mirror -k "mito answers 403 for a group that is missing or not yours, so non-members learn nothing" mirror groups get nosuchgroup
mirror mirror2 users groups
mirror mirror tasks submit -g mgrp -l m1 -t t1 -p 3 --timeout 5m -e K=V -- echo hi
MT=$(uuid_in <<<"$MOUT"); OT=$(uuid_in <<<"$OUT")
mirror mirror tasks get @T
mirror mirror tasks query -g mgrp -v
mirror mirror tasks query -g mgrp --count
mirror mirror tasks query -g mgrp -s ready -e '!=0'
mirror -k "mito says which role is needed" mirror2 tasks cancel @T
mirror mirror tasks change @T -p 4 -- echo changed
mirror mirror tasks update-labels @T m2
mirror mirror tasks get @T
mirror mirror tasks cancel @T
mirror mirror tasks cancel @T
mirror mirror tasks get 00000000-0000-0000-0000-000000000000
mirror mirror tasks submit -g mgrp -l watch --watch @T,ExecSpawned -r artifact=@T:result:up,attachment=k/x:x -- true
mirror mirror tasks query -g mgrp -l watch -v
mirror mirror tasks submit -g mgrp -l watch -r attachment=../x:x -- true
mirror mirror tasks submit -g mgrp -l watch --watch 00000000-0000-0000-0000-000000000000,ExecSpawned -- true
mirror mirror tasks cancel-many -g mgrp -l watch
mirror mirror groups attachments upload -g mgrp "$RUN/mirror.txt" k/mirror.txt
mirror mirror groups attachments query -g mgrp
mirror mirror groups attachments get -g mgrp k/mirror.txt
mirror -k "wording of not found" mirror groups attachments get -g mgrp k/missing.txt
mirror -k "wording of not found" mirror groups attachments download -g mgrp k/missing.txt -o "$RUN/missing.txt"
mirror mirror groups attachments delete -g mgrp k/mirror.txt
mirror -k "mito says which role is needed" mirror2 groups attachments upload -g mgrp "$RUN/mirror.txt" k/denied.txt
mirror -k "wording of not found" mirror tasks artifacts download @T result -o "$RUN"
mirror mirror workers query -g mgrp
cat >"$RUN/many.json" <<'JSON'
[{"group_name": "mgrp", "tags": [], "labels": ["many"], "timeout": "1m", "priority": 1,
  "task_spec": {"args": ["true"], "envs": {}, "resources": [], "terminal_output": false, "watch": null}},
 {"group_name": "mgrp", "tags": ["t2"], "labels": ["many"], "timeout": "2m", "priority": 2,
  "task_spec": {"args": ["false"], "envs": {}, "resources": [], "terminal_output": true, "watch": null}}]
JSON
mirror mirror tasks submit-many --file "$RUN/many.json"
mirror mirror tasks query -g mgrp -l many -v
mirror mirror tasks cancel-many -g mgrp -l many
mirror mirror tasks query -g mgrp -l many -s cancelled --count
mirror mirror groups attachments upload -g mgrp "$RUN/mirror.txt" k/a.txt
mirror mirror groups attachments upload -g mgrp "$RUN/mirror.txt" k/b.txt
mirror mirror groups attachments download-many -g mgrp -k k/ -o "$RUN/many"
mirror mirror groups attachments query -g mgrp -k k/ --count
mirror mirror groups attachments delete-list -g mgrp k/a.txt k/b.txt
mirror mitosis_admin admin users group-quota mirror 20
mirror mitosis_admin admin groups storage-quota mgrp 1GB
mirror mirror groups get mgrp
# A mitosis worker on each coordinator, then the same worker commands and the same task.
for c in M O; do
    url=$MURL; [ $c = O ] && url=$OURL
    H=$(home_of "mirror-worker-$c")
    (cd "$H" && HOME="$H" XDG_CONFIG_HOME="$H/.config" XDG_CACHE_HOME="$H/.cache" \
        exec "$MITOSIS_BIN" worker -c "$url" -u mirror -p mirror-pw -g mgrp -t w1 -l l0 --skip-redis \
        --polling-interval 1s --heartbeat-interval 5s </dev/null >"$RUN/mirror-worker-$c.log" 2>&1) &
    PIDS+=($!); eval "${c}WPID=$!"
done
if worker_up "$RUN/mirror-worker-M.log" && worker_up "$RUN/mirror-worker-O.log"; then
    pass "a mitosis worker runs on each coordinator"
else fail "a mitosis worker runs on each coordinator ($(tail -2 "$RUN"/mirror-worker-*.log))"; fi
mirror mirror workers query -g mgrp -v
MW=$(uuid_in <<<"$MOUT"); OW=$(uuid_in <<<"$OUT")
mirror mirror workers get @W
mirror mirror workers update-labels @W l1 l2
mirror mirror workers update-tags @W w1 w2
mirror mirror workers get @W
mirror mirror tasks submit -g mgrp -t w2 --terminal -- sh -c 'echo out; echo err >&2; exit 2'
MU=$(uuid_in <<<"$MOUT"); OU=$(uuid_in <<<"$OUT")
wait_task mirror "$MURL" "${MU:-missing}" Finished 2>>"$RUN/mito-client.log"
wait_task mirror "$OURL" "${OU:-missing}" Finished 2>>"$RUN/mito-client.log"
mirror mirror tasks get @U
mirror mirror tasks query -g mgrp -e '!=0' -s finished -v
mirror mirror tasks artifacts download @U std-log -o "$RUN/stdlog"
mirror mirror workers cancel @W
for p in "$MWPID" "$OWPID"; do for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done; done
if kill -0 "$MWPID" 2>/dev/null || kill -0 "$OWPID" 2>/dev/null; then fail "both mitosis workers exit after workers cancel"
else pass "both mitosis workers exit after workers cancel"; fi
# Last before mirror2 leaves: mitosis creates this task, which would change later counts.
mirror -k "mito requires Write to submit; mitosis checks nothing (architecture.md 6)" mirror2 tasks submit -g mgrp -- echo denied
mirror mirror groups remove-user mgrp mirror2
mirror mirror2 users groups
mirror mirror login mirror wrong-pw
mirror mirror2 users change-password mirror2-pw mirror2-new
mirror mirror2:mirror2-new login mirror2 mirror2-new
mirror mirror2:mirror2-new login mirror2 mirror2-pw
mirror mirror users change-password wrong-pw new-pw
mirror mirror2 admin users create nope nope-pw
mirror mitosis_admin admin users delete mirror2
mirror -k "mito says why" mirror2:mirror2-new login mirror2 mirror2-new

printf '\ncompat: %d passed, %d failed, %d known differences (logs in %s)\n' "$PASSES" "$FAILS" "$KNOWN" "$RUN"
[ "$FAILS" = 0 ]
