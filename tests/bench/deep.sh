#!/usr/bin/env bash
# `make bench-deep`: mito with deep queues. A private PostgreSQL (default settings but a
# larger max_wal_size for the load, fsync on, auto_explain loaded, off until the end) and
# a release coordinator; then, with generate_series: 100 groups of 10,000 Ready tasks each
# (1,000,000; group deep-000 has the highest priority, deep-099 the lowest), 100,000
# Pending tasks in deep-099 above its Ready ones, and an archive of 10,000,000 tasks
# (100,000 a group). It prints, measured through the HTTP API with keep-alive:
# - the claim (fetch) latency of a worker of deep-099, whose tasks sit behind 990,000
#   tasks of the other groups and 100,000 Pending ones, and of a worker of all 100 groups;
#   then the claim's plan as the coordinator ran it (auto_explain, ANALYZE);
# - `tasks query` latency with a filter and a limit, on active and archived tasks;
# - the dashboard's per-group stats latency.
# The load takes most of the time: 10 to 15 minutes on a 2-core machine (DEEP_ARCHIVE=0
# skips the archive and takes about 2). Everything started here is stopped at the end.
# MITO_BENCH_BIN measures another build (e.g. one of an earlier commit, for before/after).
# DEEP_DIR=/some/dir keeps the database there after the run, and a later run with the same
# DEEP_DIR starts from it without loading again (its coordinator applies any migration
# its build adds): the same data measured before and after a change.
set -euo pipefail
cd "$(dirname "$0")/../.."
MITO="${MITO_BENCH_BIN:-$PWD/target/release/mito}"
ARCHIVE="${DEEP_ARCHIVE:-10000000}"
SAMPLES="${DEEP_SAMPLES:-200}"
DIR="${DEEP_DIR:-$(mktemp -d /tmp/mito-bench-deep.XXXXXX)}"
mkdir -p "$DIR"
LOADED=""; [ -d "$DIR/pg" ] && LOADED=yes
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
AS_PG=(); if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS_PG=(runuser -u postgres --); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PGPORT=$(free_port); PORT=$(free_port)
COORD=""
cleanup() {
    [ -n "$COORD" ] && kill "$COORD" 2>/dev/null && wait "$COORD" 2>/dev/null || true
    "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -m fast stop >/dev/null 2>&1 || true
    [ -n "${DEEP_DIR:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT
t0=$(date +%s)
[ -n "$LOADED" ] || "${AS_PG[@]}" "$PGBIN/initdb" -A trust -U postgres -D "$DIR/pg" >/dev/null
"${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$DIR/pg" -l "$DIR/pg.log" -w start -o "-p $PGPORT -k $DIR \
    -c listen_addresses=127.0.0.1 -c max_connections=200 -c max_wal_size=8GB \
    -c session_preload_libraries=auto_explain" >/dev/null
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -q)
if [ -z "$LOADED" ]; then
    "${PSQL[@]}" -c "CREATE DATABASE mito" >/dev/null
    openssl genpkey -algorithm ed25519 -out "$DIR/private.pem" 2>/dev/null
    openssl pkey -in "$DIR/private.pem" -pubout -out "$DIR/public.pem"
fi
DB="postgres://postgres@$(python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$DIR"):$PGPORT/mito"
MITO_LOG=warn "$MITO" coordinator --bind "127.0.0.1:$PORT" --db "$DB" \
    --access-token-private-path "$DIR/private.pem" --access-token-public-path "$DIR/public.pem" \
    --data-dir "$DIR/data" 2>"$DIR/coordinator.log" &
COORD=$!
# A kept database may take a while to migrate.
for _ in $(seq 1200); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores; coordinator, PostgreSQL and load on this machine; $MITO"
if [ -n "$LOADED" ]; then
    echo "the database in $DIR is already loaded"
else
echo "loading 1,000,000 Ready + 100,000 Pending tasks and $ARCHIVE archived ones..."

# The tables' indexes are dropped for the load and built again after it, from their own
# definitions (so this follows schema.sql, whatever its indexes are).
"${PSQL[@]}" -d mito <<SQL
SET synchronous_commit = off;
SET maintenance_work_mem = '512MB';
INSERT INTO groups (group_name, creator_id, task_count)
SELECT format('deep-%s', lpad(g::text, 3, '0')), u.id, CASE WHEN g = 99 THEN 110000 ELSE 10000 END
FROM users u, generate_series(0, 99) g WHERE u.username = 'mitosis_admin';
INSERT INTO user_group (user_id, group_id, role)
SELECT g.creator_id, g.id, 2 FROM groups g WHERE g.group_name LIKE 'deep-%';
CREATE TEMP TABLE saved AS
    SELECT c.conrelid::regclass::text AS tab, c.conname::text AS name, pg_get_constraintdef(c.oid) AS def, true AS constraint_
    FROM pg_constraint c WHERE c.conrelid IN ('active_tasks'::regclass, 'archived_tasks'::regclass) AND c.contype IN ('p', 'u')
    UNION ALL
    SELECT i.indrelid::regclass::text, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), false
    FROM pg_index i WHERE i.indrelid IN ('active_tasks'::regclass, 'archived_tasks'::regclass)
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
SELECT CASE WHEN constraint_ THEN format('ALTER TABLE %s DROP CONSTRAINT %I', tab, name)
            ELSE format('DROP INDEX %s', name) END FROM saved \gexec
-- Group g (deep-000 .. deep-099) has priority 99 - g: every other group's tasks come
-- before deep-099's in the old global claim order. Every other task is tagged gpu, and
-- each carries one of 100 labels.
INSERT INTO active_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, state, timeout, priority, spec)
SELECT n, g.creator_id, g.id, (n - 1) % 10000 + 1, gen_random_uuid(),
       CASE WHEN n % 2 = 0 THEN '{gpu}'::text[] ELSE '{}'::text[] END, ARRAY['batch:' || (n % 100)],
       1, 600, 99 - ((n - 1) / 10000)::int, '{"args":["true"]}'
FROM generate_series(1, 1000000) n
JOIN groups g ON g.group_name = format('deep-%s', lpad(((n - 1) / 10000)::text, 3, '0'));
INSERT INTO active_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, state, timeout, priority, spec)
SELECT 1000000 + n, g.creator_id, g.id, 10000 + n, gen_random_uuid(), '{}', '{}', 0, 600, 50, '{"args":["true"]}'
FROM generate_series(1, 100000) n, groups g WHERE g.group_name = 'deep-099';
-- The archive keeps the active rows' ids: those of tasks long gone, below the active ones'.
-- Task n is the (n / 100)th of group n % 100, finished n / 10 seconds ago; in each group
-- every 50th is Cancelled, every 20th exited with status 1, every other one is tagged gpu.
INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at, state,
                            timeout, priority, spec, result, reporter_uuid)
SELECT -n, g.creator_id, g.id, 200000 + n / 100, gen_random_uuid(),
       CASE WHEN n / 100 % 2 = 0 THEN '{gpu}'::text[] ELSE '{}'::text[] END, ARRAY['batch:' || (n / 100 % 100)],
       now() - make_interval(secs => n / 10.0), now() - make_interval(secs => n / 10.0),
       CASE WHEN n / 100 % 50 = 0 THEN 4 ELSE 3 END, 600, 0, '{"args":["true"]}',
       jsonb_build_object('exit_status', CASE WHEN n / 100 % 20 = 7 THEN 1 ELSE 0 END, 'msg', NULL), gen_random_uuid()
FROM generate_series(1, $ARCHIVE) n
JOIN groups g ON g.group_name = format('deep-%s', lpad((n % 100)::text, 3, '0'));
SELECT CASE WHEN constraint_ THEN format('ALTER TABLE %s ADD CONSTRAINT %I %s', tab, name, def)
            ELSE def END FROM saved \gexec
DO \$\$ BEGIN PERFORM setval('active_tasks_id_seq', 2000000); END \$\$;
VACUUM ANALYZE active_tasks;
VACUUM ANALYZE archived_tasks;
SQL
echo "loaded in $(( $(date +%s) - t0 )) s"
fi
"${PSQL[@]}" -d mito -Atc "SELECT format('active_tasks %s rows, %s; archived_tasks %s rows, %s',
    (SELECT count(*) FROM active_tasks), pg_size_pretty(pg_total_relation_size('active_tasks')),
    (SELECT count(*) FROM archived_tasks), pg_size_pretty(pg_total_relation_size('archived_tasks')))"

# Measured through the API by a lean keep-alive client (Python's http.client): the
# figures include its ~0.1 ms per request.
python3 - "http://127.0.0.1:$PORT" "$SAMPLES" "$DIR/pg.log" "${PSQL[@]}" -d mito <<'PY'
import hashlib, http.client, json, re, subprocess, sys, time, urllib.parse

base, samples, pg_log, psql = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
u = urllib.parse.urlparse(base)

class Api:
    def __init__(self, token=None):
        self.c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.token = token
    def call(self, method, path, body=None):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        for attempt in range(2):
            t = time.perf_counter()
            try:
                self.c.request(method, path, None if body is None else json.dumps(body), h)
                r = self.c.getresponse()
                data = r.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # The coordinator closes a connection idle for longer than header_timeout.
                self.c.close()
                self.c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        ms = (time.perf_counter() - t) * 1000
        if r.status != 200:
            sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
        return (json.loads(data) if data else None), ms

def stats(ms):
    ms = sorted(ms)
    q = lambda p: ms[min(len(ms) - 1, int(round((len(ms) - 1) * p)))]
    return f"p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, max {ms[-1]:.2f} ms ({len(ms)} samples)"

login = {"username": "mitosis_admin", "md5_password": list(hashlib.md5(b"mitosis_admin").digest()), "retain": True}
user = Api()
user.token = user.call("POST", "/login", login)[0]["token"]

def worker(groups):
    r = user.call("POST", "/workers", {"tags": [], "labels": [], "groups": groups})[0]
    return Api(r["token"])

def claims(w, n):
    out = []
    for _ in range(n):
        task, ms = w.call("GET", "/workers/tasks")
        if task is None:
            sys.exit("the worker found no task")
        out.append(ms)
        w.call("POST", "/workers/tasks", {"id": task["id"], "op": "Finish"})
        w.call("POST", "/workers/tasks", {"id": task["id"], "op": {"Commit": {"exit_status": 0, "msg": None}}})
    return out

low = worker(["deep-099"])
claims(low, 3)
print(f"claim, worker of deep-099 (behind 990,000 tasks of other groups and 100,000 Pending): {stats(claims(low, samples))}")
every = worker([f"deep-{g:03}" for g in range(100)])
claims(every, 3)
print(f"claim, worker of all 100 groups: {stats(claims(every, samples // 2))}")

def auto_explain(on):
    sets = ["auto_explain.log_min_duration = 0", "auto_explain.log_analyze = on", "auto_explain.log_format = json"]
    for s in sets:
        cmd = "ALTER SYSTEM SET " + s if on else "ALTER SYSTEM RESET " + s.split(" =")[0]
        subprocess.run(psql + ["-c", cmd], check=True)
    subprocess.run(psql + ["-c", "SELECT pg_reload_conf()"], check=True, stdout=subprocess.DEVNULL)
    time.sleep(0.5)

def render(p, depth=0):
    if p.get("Actual Loops") == 0:
        return
    name = p["Node Type"]
    if "Index Name" in p:
        name += " using " + p["Index Name"]
    if "Relation Name" in p:
        name += " on " + p["Relation Name"]
    if "CTE Name" in p:
        name += " on " + p["CTE Name"]
    pad = "  " * depth + ("-> " if depth else "")
    print(f"  {pad}{name} (actual time={p.get('Actual Total Time')} rows={p.get('Actual Rows')} loops={p.get('Actual Loops')})")
    for k in ["Index Cond", "Filter", "Rows Removed by Filter", "One-Time Filter", "Sort Key"]:
        if p.get(k):
            v = p[k] if len(str(p[k])) < 120 else str(p[k])[:117] + "..."
            print(f"  {'  ' * depth}     {k}: {v}")
    for c in p.get("Plans", []):
        render(c, depth + 1)

auto_explain(True)
claims(low, 1)
auto_explain(False)
entries, cur = [], None
for line in open(pg_log, errors="replace"):
    if line.startswith("\t") and cur is not None:
        cur.append(line[1:])
    else:
        cur = [line[line.find("plan:") + 5:]] if "plan:" in line else None
        if cur is not None:
            entries.append(cur)
plans = [json.loads("".join(e)) for e in entries if "".join(e).strip().startswith("{")]
claim = [p for p in plans if "SKIP LOCKED" in p["Query Text"] and "FOR NO KEY UPDATE" in p["Query Text"]]
if claim:
    print(f"the claim of a worker of deep-099, as the coordinator ran it (auto_explain), {claim[-1]['Plan'].get('Actual Total Time')} ms:")
    render(claim[-1]["Plan"])
else:
    print("no plan of the claim in the PostgreSQL log")

def queries(body, n=20):
    user.call("POST", "/tasks/query", body)
    out = []
    for _ in range(n):
        r, ms = user.call("POST", "/tasks/query", body)
        out.append(ms)
    return r, out

for what, body in [
    ("tags gpu, label batch:8, limit 10", {"group_name": "deep-050", "count": False, "tags": ["gpu"], "labels": ["batch:8"], "limit": 10}),
    ("state Ready, priority >= 0, limit 100", {"group_name": "deep-050", "count": False, "states": ["Ready"], "priority": ">=0", "limit": 100}),
    ("state Cancelled (in the archive), limit 10", {"group_name": "deep-050", "count": False, "states": ["Cancelled"], "limit": 10}),
    ("exit_status 1 (in the archive), limit 10", {"group_name": "deep-050", "count": False, "exit_status": "1", "limit": 10}),
    ("no filter, limit 100, offset 20000 (into the archive)", {"group_name": "deep-050", "count": False, "limit": 100, "offset": 20000}),
]:
    r, ms = queries(body)
    print(f"tasks query, {what}: {len(r['tasks'])} tasks, {stats(ms)}")
out = []
for _ in range(50):
    out.append(user.call("GET", "/groups/deep-050/stats")[1])
print(f"GET /groups/deep-050/stats (10,000 active, 100,000 archived): {stats(out)}")
PY
echo "done in $(( $(date +%s) - t0 )) s"
