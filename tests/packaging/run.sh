#!/usr/bin/env bash
# `make package-test`: what an operator gets from `make dist` and `make deb`, checked as
# root on a throwaway machine (it installs and purges the package):
#   1. the static binary alone in an empty root (a chroot in a fresh mount and PID
#      namespace) prints its version, runs a coordinator against a private PostgreSQL on
#      127.0.0.1 and a worker that runs a task;
#   2. lintian finds no errors in the .deb;
#   3. `dpkg -i` installs the files with their owners and modes, creates the user and the
#      keys; `systemd-analyze verify` accepts the installed units; their ExecStartPre and
#      ExecStart lines, read from the installed files and run as systemd would (user
#      mito, specifiers, credentials), start a coordinator and a worker that run a task;
#   4. `dpkg --remove` keeps keys, configuration and data; `dpkg --purge` deletes them.
# Everything started here is stopped by pid, and the temp directory removed, on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=x86_64-unknown-linux-musl
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
BIN="$PWD/target/$TARGET/release/mito"
DEB="$PWD/dist/mito_${VERSION}-1_amd64.deb"

[ "$(id -u)" = 0 ] || { echo "package-test: run as root (it installs the package)" >&2; exit 1; }
[ -x "$BIN" ] && [ -f "$DEB" ] || { echo "package-test: run make deb first" >&2; exit 1; }
if dpkg-query -W -f '${Status}' mito 2>/dev/null | grep -q 'ok installed'; then
    echo "package-test: a mito package is already installed here; this test needs a machine without it" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/mito-package-test.XXXXXX)
chmod 0755 "$WORK"
PIDS=()
INSTALLED=""
FAILED=0

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    if [ -n "$INSTALLED" ]; then dpkg --purge mito >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

pass() { printf 'PASS  %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*"
    FAILED=1
}
# check DESCRIPTION COMMAND...: runs the command, PASS or FAIL by its status.
check() {
    local what=$1
    shift
    if "$@" >"$WORK/check.out" 2>&1; then pass "$what"; else
        fail "$what"
        sed 's/^/      /' "$WORK/check.out" | tail -n 20
    fi
}
# Stops at once: what follows needs this step.
must() {
    local before=$FAILED
    FAILED=0
    check "$@"
    [ "$FAILED" = 0 ] && FAILED=$before && return 0
    { echo "package-test: cannot go on after this failure" >&2; dump_logs; exit 1; }
}
dump_logs() {
    local f
    for f in "$WORK"/*.log; do
        [ -f "$f" ] || continue
        echo "---- $f (last lines)"
        tail -n 30 "$f"
    done
}

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

# Whether GET /health on 127.0.0.1:$1 answers 200 (bash's /dev/tcp: no curl needed).
healthy() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    IFS= read -r -t 5 line <&3 || line=""
    exec 3>&-
    [[ $line == *" 200 "* ]]
}
wait_healthy() {
    local i
    for i in $(seq 1 300); do
        healthy "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# The client: the same static binary, run on the host, with its own config directory.
client() {
    env -i PATH=/usr/bin:/bin HOME="$WORK/client" "$BIN" client "$@"
}

# Waits up to 30 s for a line matching $2 in file $1.
wait_for_line() {
    local i
    for i in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Submits a task to $1's coordinator as alice, waits for it, prints its stdout log.
run_task() {
    local url=$1 uuid
    shift
    uuid=$(client -c "$url" -u alice -p alice-pw --json tasks submit --terminal -- "$@" |
        sed -n 's/.*"uuid" *: *"\([0-9a-f-]*\)".*/\1/p')
    [ -n "$uuid" ] || { echo "no task uuid from the submit"; return 1; }
    client -c "$url" -u alice -p alice-pw tasks wait "$uuid" --timeout 60s >/dev/null
    client -c "$url" -u alice -p alice-pw tasks logs "$uuid"
}

# ---- a private PostgreSQL on a free port of 127.0.0.1, as the postgres user
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PG="$WORK/pg"
mkdir -p "$PG" && chown postgres: "$PG"
AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups)
must "initdb" "${AS_POSTGRES[@]}" "$PGBIN/initdb" -A trust -U postgres -E UTF8 --no-sync -D "$PG/data"
PGPORT=$(free_port)
"${AS_POSTGRES[@]}" "$PGBIN/postgres" -D "$PG/data" -p "$PGPORT" -k "$PG" \
    -c listen_addresses=127.0.0.1 -c fsync=off >"$WORK/postgres.log" 2>&1 &
PIDS+=($!)
pg_up() {
    local i
    for i in $(seq 1 100); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -U postgres && return 0
        sleep 0.1
    done
    return 1
}
must "PostgreSQL up on 127.0.0.1:$PGPORT" pg_up
psql_admin() {
    local sql
    for sql in "$@"; do
        "$PGBIN/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "$sql" || return 1
    done
}
must "databases for both parts" psql_admin "CREATE ROLE mito LOGIN" "CREATE DATABASE mito_root" "CREATE DATABASE mito OWNER mito"

# ---- 1. the static binary alone in an empty root
desc=$(file -b "$BIN")
check "file: static ($desc)" grep -qE 'statically linked|static-pie linked' <<<"$desc"
size=$(stat -c %s "$BIN")
check "size $size bytes <= 10 MB" test "$size" -le $((10 * 1024 * 1024))

ROOT="$WORK/root"
mkdir -p "$ROOT/proc" "$ROOT/keys" "$ROOT/data" "$ROOT/cache" "$ROOT/usr/bin"
cp "$BIN" "$ROOT/mito"
# Tasks run as `/usr/bin/env ARGS`; the root has no env (nor a shell), so that name is the
# mito binary itself: the task `--version` runs `mito --version`.
ln "$ROOT/mito" "$ROOT/usr/bin/env"
# A task's stdin is /dev/null, which every container provides: a device node, not a file.
mkdir -p "$ROOT/dev" && mknod -m 0666 "$ROOT/dev/null" c 1 3
# Keys and the worker's password are data, made outside.
openssl genpkey -algorithm ed25519 -out "$ROOT/keys/private.pem" 2>/dev/null
openssl pkey -in "$ROOT/keys/private.pem" -pubout -out "$ROOT/keys/public.pem"
echo alice-pw >"$ROOT/alice-password"
check "the root holds no library or program from the host" \
    test -z "$(find "$ROOT" -type f ! -path "$ROOT/mito" ! -path "$ROOT/usr/bin/env" ! -path "$ROOT/keys/*" ! -path "$ROOT/alice-password")"

# A fresh mount and PID namespace (with its own /proc, gone with it) chrooted into $ROOT;
# the process inside dies when `unshare` does. It replaces the calling (sub)shell.
UNSHARE=$(command -v unshare)
CHROOT=$(command -v chroot)
in_root() {
    exec env -i HOME=/ XDG_CACHE_HOME=/cache MITO_LOG=info \
        "$UNSHARE" --mount --pid --fork --kill-child --mount-proc="$ROOT/proc" "$CHROOT" "$ROOT" /mito "$@"
}
check "mito --version in the empty root" grep -qx "mito $VERSION" <(in_root --version)

CPORT=$(free_port)
CURL="http://127.0.0.1:$CPORT"
in_root coordinator --bind "127.0.0.1:$CPORT" --db "postgres://postgres@127.0.0.1:$PGPORT/mito_root" \
    --access-token-private-path /keys/private.pem --access-token-public-path /keys/public.pem \
    --data-dir /data >"$WORK/root-coordinator.log" 2>&1 &
CPID=$!
PIDS+=("$CPID")
must "a coordinator in the empty root serves $CURL" wait_healthy "$CPORT"
must "create user alice" client -c "$CURL" -u mitosis_admin -p mitosis_admin admin users create alice alice-pw
in_root worker -c "$CURL" -u alice \
    --password-file /alice-password --credential-path /cache/credentials --polling-interval 1s \
    >"$WORK/root-worker.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
# A worker's login signs alice's other sessions out: the client logs in after it.
must "the worker in the empty root registers" wait_for_line "$WORK/root-worker.log" "Worker is running"
check "a worker in the empty root runs a task (mito --version)" grep -q "mito $VERSION" <(run_task "$CURL" --version)
stop_pid "$WPID"
stop_pid "$CPID"

# ---- 2. lintian
if command -v lintian >/dev/null; then
    check "lintian: no errors" lintian --fail-on error "$DEB"
    sed 's/^/      /' "$WORK/check.out"
else
    fail "lintian is not installed"
fi

# ---- 3. dpkg -i
INSTALLED=1
must "dpkg -i $(basename "$DEB")" dpkg -i "$DEB"

# owner:group mode path
while read -r owner mode path; do
    got=$(stat -c '%U:%G %a' "$path" 2>&1 || true)
    check "$path is $owner $mode" test "$got" = "$owner $mode"
done <<'EOF'
root:root 755 /usr/bin/mito
root:root 755 /etc/mito
root:root 644 /etc/mito/config.toml
mito:mito 600 /etc/mito/private.pem
mito:mito 644 /etc/mito/public.pem
mito:mito 700 /var/lib/mito
root:root 644 /lib/systemd/system/mito-coordinator.service
root:root 644 /lib/systemd/system/mito-worker@.service
root:root 644 /usr/share/doc/mito/copyright
root:root 644 /usr/share/doc/mito/changelog.Debian.gz
EOF
check "/etc/mito/config.toml is a conffile" grep -q /etc/mito/config.toml <(dpkg-query -W -f '${Conffiles}' mito)
check "the installed binary is the static one" cmp /usr/bin/mito "$BIN"
check "postinst made a system user mito" \
    test "$(getent passwd mito | awk -F: '$3 < 1000 {print $6}')" = /var/lib/mito
check "postinst made a key pair" cmp <(openssl pkey -in /etc/mito/private.pem -pubout) /etc/mito/public.pem
check "no unit is enabled" test -z "$(find /etc/systemd/system -name 'mito*' 2>/dev/null)"
units=(/lib/systemd/system/mito-coordinator.service /lib/systemd/system/mito-worker@.service)
# verify exits 0 on unknown keys and unparsable values too (it ignores them, as systemd
# would): any message at all is a failure.
verify_silently() {
    local out
    out=$(systemd-analyze verify "$@" 2>&1) || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
}
check "systemd-analyze verify on both units, without a message" verify_silently "${units[@]}"

# Prints installed unit $1's $2= line (ExecStart, ExecStartPre) for instance $3, its
# specifiers expanded as systemd would: %i (instance), %C (cache root), %d (the
# credentials directory, $CREDS, made here as LoadCredential= would).
unit_lines() {
    local unit=$1 key=$2 instance=$3
    sed -n "s/^$key=//p" "/lib/systemd/system/$unit" |
        sed -e "s|%i|$instance|g" -e "s|%C|/var/cache|g" -e "s|%d|$CREDS|g"
}
unit_env() {
    sed -n 's/^Environment=//p' "/lib/systemd/system/$1" | sed -e "s|%i|$2|g" -e "s|%C|/var/cache|g"
}
in_subshell() { ("$@"); }

# Runs a command of installed unit $1 (instance $2) as systemd would: as its User=, in its
# WorkingDirectory=, with its Environment= (plus EXTRA_ENV), after making its
# CacheDirectory= the way systemd does (owned by the user, 0700).
as_unit() {
    local unit=$1 instance=$2 dir user wd
    shift 2
    user=$(sed -n 's/^User=//p' "/lib/systemd/system/$unit")
    for dir in $(sed -n 's/^CacheDirectory=//p' "/lib/systemd/system/$unit" | sed "s|%i|$instance|g"); do
        mkdir -p "/var/cache/$dir" && chown "$user:" "/var/cache/$dir" && chmod 0700 "/var/cache/$dir"
    done
    wd=$(sed -n 's/^WorkingDirectory=//p' "/lib/systemd/system/$unit" | sed -e "s|%i|$instance|g" -e "s|%C|/var/cache|g")
    local envs=()
    mapfile -t envs < <(unit_env "$unit" "$instance")
    cd "${wd:-/}"
    exec env -i PATH=/usr/bin:/bin HOME=/var/lib/mito MITO_LOG=info "${envs[@]}" "${EXTRA_ENV[@]}" \
        setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs -- "$@"
}

CPORT=$(free_port)
CURL="http://127.0.0.1:$CPORT"
# The installed config reaches PostgreSQL over /var/run/postgresql; this test's server is
# on 127.0.0.1, and the coordinator's port is a free one: an environment override, as an
# operator's `systemctl edit` with Environment= would be.
EXTRA_ENV=(MITO_DB_URL="postgres://mito@127.0.0.1:$PGPORT/mito" MITO_BIND="127.0.0.1:$CPORT")
CREDS="$WORK/credentials/mito-coordinator.service"
read -r -a pre <<<"$(unit_lines mito-coordinator.service ExecStartPre "")"
read -r -a start <<<"$(unit_lines mito-coordinator.service ExecStart "")"
must "ExecStartPre (${pre[*]}) passes as user mito" in_subshell as_unit mito-coordinator.service "" "${pre[@]}"
sed 's/^/      /' "$WORK/check.out"
(as_unit mito-coordinator.service "" "${start[@]}") >"$WORK/coordinator.log" 2>&1 &
CPID=$!
PIDS+=("$CPID")
must "ExecStart (${start[*]}) serves $CURL" wait_healthy "$CPORT"
check "the coordinator runs as mito" test "$(stat -c %U "/proc/$CPID")" = mito
must "create user alice" client -c "$CURL" -u mitosis_admin -p mitosis_admin admin users create alice alice-pw

# The worker's password where the unit's LoadCredential= takes it from, root-only; the
# credentials directory as systemd makes it: owned by the unit's user, read-only.
install -m 0600 /dev/null /etc/mito/worker-password
echo alice-pw >/etc/mito/worker-password
src=$(sed -n 's/^LoadCredential=password://p' /lib/systemd/system/mito-worker@.service)
CREDS="$WORK/credentials/mito-worker@1.service"
mkdir -p "$CREDS" && install -m 0400 -o mito -g mito "$src" "$CREDS/password" && chown mito: "$CREDS" && chmod 0500 "$CREDS"
read -r -a wstart <<<"$(unit_lines mito-worker@.service ExecStart 1)"
EXTRA_ENV=(MITO_COORDINATOR_ADDR="$CURL" MITO_USER=alice MITO_POLLING_INTERVAL=1s)
(as_unit mito-worker@.service 1 "${wstart[@]}") >"$WORK/worker.log" 2>&1 &
WPID=$!
PIDS+=("$WPID")
must "the worker registers" wait_for_line "$WORK/worker.log" "Worker is running"
check "ExecStart (${wstart[*]}) runs a task as user mito" grep -qx mito <(run_task "$CURL" id -un)
check "the worker's password is not on its command line" bash -c 'test -r "/proc/$0/cmdline" && ! grep -q alice-pw "/proc/$0/cmdline"' "$WPID"
check "the worker runs as mito" test "$(stat -c %U "/proc/$WPID")" = mito
check "the worker keeps its token in its own cache directory" \
    test "$(stat -c '%U %a' /var/cache/mito/worker-1/credentials 2>&1)" = "mito 600"
check "the task's output is in the coordinator's store under /var/lib/mito" \
    test -n "$(find /var/lib/mito/objects -type f -name '*std-log*' 2>/dev/null)"
stop_pid "$WPID"
stop_pid "$CPID"

# ---- 4. remove, then purge
must "dpkg --remove mito" dpkg --remove mito
check "remove: the binary and units are gone" \
    test ! -e /usr/bin/mito -a ! -e /lib/systemd/system/mito-coordinator.service -a ! -e /lib/systemd/system/mito-worker@.service
check "remove: keys, configuration and data stay" \
    test -f /etc/mito/private.pem -a -f /etc/mito/public.pem -a -f /etc/mito/config.toml -a -d /var/lib/mito/objects
must "dpkg --purge mito" dpkg --purge mito
INSTALLED=""
check "purge: /etc/mito, /var/lib/mito and /var/cache/mito are gone" \
    test ! -e /etc/mito -a ! -e /var/lib/mito -a ! -e /var/cache/mito
check "purge: the system user mito stays (README: Install)" getent passwd mito
check "purge: dpkg forgot the package" bash -c '! dpkg-query -W mito 2>/dev/null | grep -q .'

if [ "$FAILED" != 0 ]; then
    dump_logs
    echo "package-test: FAILED"
    exit 1
fi
echo "package-test: all passed"
