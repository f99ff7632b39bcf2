//! `mito worker` against a real coordinator: tasks run with the documented environment,
//! timeouts and cancels stop the whole process group, and the worker rides out coordinator
//! restarts and outages.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `mito worker` with its own HOME.
pub(crate) struct Worker {
    pub child: Child,
    pub home: TempDir,
    pub log: PathBuf,
}

impl Worker {
    /// Starts a worker for `url` logged in as `user` (password `<user>-pw`, as `Coordinator::user` makes them).
    pub(crate) fn start(url: &str, user: &str, password: &str, extra: &[&str]) -> Worker {
        let home = TempDir::new("worker");
        let log = home.path().join("worker.log");
        let child = spawn_worker(home.path(), url, user, password, extra, &log);
        Worker { child, home, log }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle`.
    pub(crate) fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The worker's id, from its "registered" log line.
    pub(crate) fn id(&self) -> String {
        assert!(
            self.wait_log("Worker is running", Duration::from_secs(30)),
            "worker did not start:\n{}",
            self.log_text()
        );
        let text = self.log_text();
        let line = text.lines().find(|l| l.contains("Worker registered with ID: ")).expect("registration line");
        line.split("ID: ").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
    }

    pub(crate) fn signal(&mut self, sig: libc::c_int) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        wait_timeout(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn_worker(home: &Path, url: &str, user: &str, password: &str, extra: &[&str], log: &Path) -> Child {
    let mut cmd = mito(home);
    cmd.arg("worker")
        .args([
            "-c",
            url,
            "-u",
            user,
            "-p",
            password,
            "--polling-interval",
            "1s",
            "--heartbeat-interval",
            "5s",
            "--retain",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
    cmd.spawn().expect("start mito worker")
}

/// Submits `args` to `group`; returns the task uuid.
pub(crate) fn submit(api: &Api, group: &str, args: &[&str], timeout: &str, terminal_output: bool) -> String {
    let body = json!({
        "group_name": group, "tags": [], "labels": [], "timeout": timeout, "priority": 0,
        "task_spec": {"args": args, "envs": {}, "resources": [], "terminal_output": terminal_output, "watch": null}
    });
    let (s, b) = api.post("/tasks", &body);
    assert_eq!(s, 200, "submit: {b}");
    json(&b)["uuid"].as_str().unwrap().to_string()
}

/// Polls the task until it is archived with a result; returns its info.
pub(crate) fn wait_committed(api: &Api, uuid: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        let (s, b) = api.get(&format!("/tasks/{uuid}"));
        if s == 200 {
            let v = json(&b);
            if !v["info"]["result"].is_null() {
                return v["info"].clone();
            }
            last = b;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("task {uuid} was not committed within {within:?}; last seen: {last}");
}

fn wait_file(path: &Path, within: Duration) -> String {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(path) {
            if t.ends_with('\n') {
                return t;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not appear", path.display());
}

/// A string unique to one test, to find its task's processes by their command line: a
/// task in a PID namespace of its own reports pids that mean nothing out here.
pub(crate) fn marker(tag: &str) -> String {
    format!("mito-mark-{tag}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// A shell loop that keeps `marker` on its command line: `sh -c LOOP marker`.
pub(crate) const LOOP: &str = "while :; do sleep 1; done";

/// Pids of live (not zombie) processes whose command line holds `marker`, from /proc.
pub(crate) fn with_marker(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if String::from_utf8_lossy(&cmd).contains(marker) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z') {
                found.push(pid);
            }
        }
    }
    found
}

/// Whether every process carrying `marker` is gone within `within`; what is left is killed
/// by pid, so that a failing test leaves nothing behind.
pub(crate) fn wait_marker_gone(marker: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut left = with_marker(marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = with_marker(marker);
    }
    for pid in &left {
        // SAFETY: killing a process our test's task started, found by its unique marker.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    left.is_empty()
}

#[test]
fn tasks_see_the_documented_environment_and_directories() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let id = w.id();
    let out = w.home.path().join("env.txt");
    let script = format!(
        "env | grep ^MITO_ | sort > {o}.tmp; for d in \"$MITO_RESULT_DIR\" \"$MITO_EXEC_DIR\" \"$MITO_RESOURCE_DIR\"; do test -d \"$d\" && echo \"DIR $d\" >> {o}.tmp; done; mv {o}.tmp {o}; exit 3",
        o = out.display()
    );
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "30s", false);
    let info = wait_committed(&alice, &uuid, Duration::from_secs(30));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(info["result"]["exit_status"], 3 << 8, "exit 3 is reported as the raw wait status");
    assert!(info["result"]["msg"].is_null(), "{info}");
    assert_eq!(info["reporter_uuid"], id.as_str());

    let env = std::fs::read_to_string(&out).unwrap();
    let root = w.home.path().join(".cache/mitosis").join(&id);
    for (k, v) in [
        ("MITO_TASK_UUID", uuid.clone()),
        ("MITO_RESULT_DIR", root.join("result").display().to_string()),
        ("MITO_EXEC_DIR", root.join("exec").display().to_string()),
        ("MITO_RESOURCE_DIR", root.join("resource").display().to_string()),
        ("MITO_NEW_TASK", root.join("new_task.json").display().to_string()),
    ] {
        assert!(env.lines().any(|l| l == format!("{k}={v}")), "missing {k}={v} in\n{env}");
    }
    assert!(!env.contains("MITO_UPSTREAM_TASK_UUID"), "{env}");
    assert_eq!(env.lines().filter(|l| l.starts_with("DIR ")).count(), 3, "all three directories exist:\n{env}");
    assert!(w.wait_log(&format!("task {uuid} committed: exit 3"), Duration::from_secs(5)), "{}", w.log_text());
}

#[test]
fn a_timed_out_task_leaves_no_process_behind() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let pids = w.home.path().join("pids");
    // A grandchild that ignores SIGTERM: only the group SIGKILL after the grace period stops it.
    let m = marker("timeout");
    let script = format!(
        "sh -c 'trap \"\" TERM; while true; do sleep 1; done' {m} & echo started > {p}; wait",
        p = pids.display()
    );
    let started = Instant::now();
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "2s", false);
    wait_file(&pids, Duration::from_secs(20));
    let info = wait_committed(&alice, &uuid, Duration::from_secs(40));
    assert_eq!(info["state"], "Cancelled", "{info}");
    assert_eq!(info["result"]["msg"], "ExecTimeout", "{info}");
    assert_eq!(info["result"]["exit_status"], libc::SIGTERM, "the shell died of the SIGTERM: {info}");
    assert!(started.elapsed() >= Duration::from_secs(10), "the grace period was honoured");
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a process of the task survived");
}

#[test]
fn a_downstream_task_runs_after_its_upstream_with_its_uuid() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let out = w.home.path().join("upstream.txt");
    let child = json!({
        "group_name": "alice", "tags": [], "labels": [], "timeout": "30s", "priority": 0,
        "task_spec": {"args": ["sh", "-c", format!("echo \"$MITO_UPSTREAM_TASK_UUID\" > {}", out.display())]}
    });
    let script = format!("cat > \"$MITO_NEW_TASK\" <<'EOF'\n{child}\nEOF");
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "30s", false);
    let info = wait_committed(&alice, &uuid, Duration::from_secs(30));
    assert!(info["result"]["msg"].is_null(), "the downstream submit worked: {info}");
    let down = info["downstream_task_uuid"].as_str().expect("a downstream task").to_string();
    let dinfo = wait_committed(&alice, &down, Duration::from_secs(30));
    assert_eq!(dinfo["upstream_task_uuid"], uuid.as_str());
    assert_eq!(wait_file(&out, Duration::from_secs(5)).trim(), uuid);
}

#[test]
fn a_cancelled_running_task_is_stopped_within_seconds() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let pids = w.home.path().join("pids");
    let m = marker("bg");
    let script = format!("sh -c '{LOOP}' {m} & echo started > {p}; wait", p = pids.display());
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "5m", false);
    wait_file(&pids, Duration::from_secs(20));
    let t0 = Instant::now();
    let (s, b) = alice.delete(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "cancel: {b}");
    let info = wait_committed(&alice, &uuid, Duration::from_secs(20));
    assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_eq!(info["state"], "Cancelled", "{info}");
    assert_eq!(info["result"]["msg"], "UserCancellation", "{info}");
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a process of the task survived the cancel");
}

#[test]
fn the_worker_carries_on_through_a_coordinator_restart() {
    let mut c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let started = w.home.path().join("started");
    let script = format!("touch {}; sleep 4", started.display());
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "1m", false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.exists(), "the task did not start:\n{}", w.log_text());
    c.stop();
    std::thread::sleep(Duration::from_secs(6));
    c.log = c.home.path().join("coordinator-2.log");
    c.child = Some(spawn_coordinator(&c.home, &c.db.url, c.port, &[], &c.log));
    assert!(c.wait_ready(Duration::from_secs(60)), "the coordinator did not come back");
    let info = wait_committed(&alice, &uuid, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(info["result"]["exit_status"], 0);
    // And it keeps serving.
    let next = submit(&alice, "alice", &["true"], "30s", false);
    assert_eq!(wait_committed(&alice, &next, Duration::from_secs(30))["state"], "Finished");
}

#[test]
fn a_worker_started_before_its_coordinator_waits_and_registers() {
    let db = TestDb::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let w = Worker::start(&url, "mitosis_admin", "mitosis_admin", &[]);
    assert!(w.wait_log("retrying in", Duration::from_secs(20)), "{}", w.log_text());
    assert!(!w.log_text().contains("registered"));
    let chome = TempDir::new("coord-late");
    let clog = chome.path().join("coordinator.log");
    let mut child = spawn_coordinator(&chome, &db.url, port, &[], &clog);
    let registered = w.wait_log("Worker is running", Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        registered,
        "worker:\n{}\ncoordinator:\n{}",
        w.log_text(),
        std::fs::read_to_string(&clog).unwrap_or_default()
    );
}

#[test]
fn sigterm_stops_the_task_group_unregisters_and_requeues() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let mut w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let id = w.id();
    let pids = w.home.path().join("pids");
    let m = marker("bg");
    let script = format!("sh -c '{LOOP}' {m} & echo started > {p}; wait", p = pids.display());
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "5m", false);
    wait_file(&pids, Duration::from_secs(20));
    let status = w.signal(libc::SIGTERM).expect("the worker exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.log_text());
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a process of the task survived the worker");
    let (s, b) = alice.get(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["info"]["state"], "Ready", "the task is requeued: {b}");
    let (s, _) = c.admin().get(&format!("/workers/{id}"));
    assert_eq!(s, 404, "the worker is unregistered");
    assert!(!w.home.path().join(".cache/mitosis").join(&id).exists(), "the working directory is removed");
}

#[test]
fn credentials_are_saved_0600_and_reused_without_a_password() {
    use std::os::unix::fs::PermissionsExt;
    let c = Coordinator::start();
    let _alice = c.user("alice");
    let mut w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    assert_eq!(w.signal(libc::SIGTERM).and_then(|s| s.code()), Some(0));
    let cred = w.home.path().join(".config/mitosis/credentials");
    let text = std::fs::read_to_string(&cred).expect("the credentials file is written");
    assert!(text.starts_with("alice:"), "{text}");
    assert_eq!(std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777, 0o600);

    // Same HOME, no password: the saved token is used.
    let log = w.home.path().join("worker2.log");
    let mut cmd = mito(w.home.path());
    cmd.args(["worker", "-c", &c.url, "-u", "alice"]).stdin(Stdio::null()).stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let mut again = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Worker is running") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(again.id() as i32, libc::SIGTERM) };
    let _ = wait_timeout(&mut again, Duration::from_secs(20));
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("Worker is running"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Another HOME, no token and no password, stdin not a terminal: a clear error.
    let other = TempDir::new("worker-nocred");
    let out = mito(other.path()).args(["worker", "-c", &c.url, "-u", "alice"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password") && err.contains("credentials"), "{err}");
}

#[test]
fn a_removed_worker_stops_its_task_and_exits() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let mut w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let id = w.id();
    let pids = w.home.path().join("pids");
    let m = marker("bg");
    let script = format!("sh -c '{LOOP}' {m} & echo started > {p}; wait", p = pids.display());
    submit(&alice, "alice", &["sh", "-c", &script], "5m", false);
    wait_file(&pids, Duration::from_secs(20));
    let (s, b) = c.admin().delete(&format!("/admin/workers/{id}?op=force"));
    assert!(s == 200 || s == 204, "force-remove: {s} {b}");
    let status = wait_timeout(&mut w.child, Duration::from_secs(30)).expect("the worker exits after a 401");
    assert_eq!(status.code(), Some(3), "a removed worker exits with its own status, so supervisors leave it stopped");
    assert!(w.log_text().contains("401"), "{}", w.log_text());
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a process of the task survived");
}

#[test]
fn worker_help_lists_every_option() {
    let home = TempDir::new("worker-help");
    let out = mito(home.path()).args(["worker", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--config <CONFIG>",
        "-c, --coordinator <COORDINATOR_ADDR>",
        "--polling-interval <POLLING_INTERVAL>",
        "--heartbeat-interval <HEARTBEAT_INTERVAL>",
        "--credential-path <CREDENTIAL_PATH>",
        "-u, --user <USER>",
        "-p, --password <PASSWORD>",
        "-g, --groups <GROUPS>...",
        "-t, --tags <TAGS>...",
        "-l, --labels <LABELS>...",
        "--log-path <LOG_PATH>",
        "--file-log",
        "--shared-log",
        "--lifetime <LIFETIME>",
        "--retain",
        "--skip-redis",
    ] {
        assert!(text.contains(opt), "missing {opt}:\n{text}");
    }
    let bad = mito(home.path()).args(["worker", "-c", "127.0.0.1:5000"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("scheme"));
}

#[test]
fn task_states_are_published_to_redis() {
    let _one = crate::redis_acl::REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let c = Coordinator::start_with(TestDb::new(), &["--redis", redis_url()]);
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    assert!(w.wait_log("publishing task states to Redis", Duration::from_secs(5)), "{}", w.log_text());
    let uuid = submit(&alice, "alice", &["true"], "30s", false);
    wait_committed(&alice, &uuid, Duration::from_secs(30));
    let mut con = redis::Client::open(redis_url()).unwrap().get_connection().unwrap();
    let state: Option<i32> = redis::cmd("GET").arg(format!("task:{uuid}")).query(&mut con).unwrap();
    assert_eq!(state, Some(19), "TaskCommitted is the last state");
    let ttl: i64 = redis::cmd("TTL").arg(format!("task:{uuid}")).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= 60, "terminal states expire after 60 s: {ttl}");
}

#[test]
fn a_watching_task_starts_only_after_the_watched_one_commits() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w1 = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let w2 = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w1.id();
    w2.id();
    let marker = w1.home.path().join("first-done");
    let out = w1.home.path().join("second.txt");
    let first = submit(&alice, "alice", &["sh", "-c", &format!("sleep 3; touch {}", marker.display())], "30s", false);
    let body = json!({
        "group_name": "alice", "tags": [], "labels": [], "timeout": "30s", "priority": 0,
        "task_spec": {
            "args": ["sh", "-c", format!("test -f {} && echo after > {}", marker.display(), out.display())],
            "watch": [first, "TaskCommitted"]
        }
    });
    let (s, b) = alice.post("/tasks", &body);
    assert_eq!(s, 200, "{b}");
    let second = json(&b)["uuid"].as_str().unwrap().to_string();
    let info = wait_committed(&alice, &second, Duration::from_secs(60));
    assert_eq!(info["result"]["exit_status"], 0, "the watched task had finished when this one ran: {info}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "after");
}

#[test]
fn a_shared_log_file_marks_each_line_with_the_worker() {
    let c = Coordinator::start();
    let _alice = c.user("alice");
    let mut w = Worker::start(&c.url, "alice", "alice-pw", &["--file-log", "--shared-log"]);
    let id = w.id();
    let dir = w.home.path().join(".cache/mitosis/worker");
    let file = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("workers.log."))
        .expect("a workers.log.<date> file");
    let text = std::fs::read_to_string(&file).unwrap();
    let prefix = format!("[worker:{id}] ");
    assert!(text.lines().any(|l| l.contains("Worker is running")), "{text}");
    assert!(text.lines().all(|l| l.starts_with(&prefix)), "{text}");
    assert_eq!(w.signal(libc::SIGTERM).and_then(|s| s.code()), Some(0));

    // Without --shared-log: one file per worker, named after it.
    let w2 = Worker::start(&c.url, "alice", "alice-pw", &["--file-log"]);
    let id2 = w2.id();
    let own = w2.home.path().join(".cache/mitosis/worker").join(format!("{id2}.log"));
    assert!(std::fs::read_to_string(&own).unwrap_or_default().contains("Worker is running"), "{}", own.display());
}

#[test]
fn a_task_cancelled_while_it_watches_never_starts() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w1 = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let w2 = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w1.id();
    w2.id();
    let first = submit(&alice, "alice", &["sleep", "60"], "2m", false);
    let ran = w1.home.path().join("ran");
    let body = json!({
        "group_name": "alice", "tags": [], "labels": [], "timeout": "30s", "priority": 0,
        "task_spec": {"args": ["touch", ran.to_str().unwrap()], "watch": [first, "TaskCommitted"]}
    });
    let (s, b) = alice.post("/tasks", &body);
    assert_eq!(s, 200, "{b}");
    let second = json(&b)["uuid"].as_str().unwrap().to_string();
    let needle = format!("waiting for task {first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(w1.log_text().contains(&needle) || w2.log_text().contains(&needle)) {
        assert!(Instant::now() < deadline, "nobody watches:\n{}\n{}", w1.log_text(), w2.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, b) = alice.delete(&format!("/tasks/{second}"));
    assert_eq!(s, 200, "{b}");
    let info = wait_committed(&alice, &second, Duration::from_secs(15));
    assert_eq!(info["state"], "Cancelled", "{info}");
    assert_eq!(info["result"]["msg"], "UserCancellation", "{info}");
    assert!(!ran.exists(), "the cancelled task ran");
    let (s, _) = alice.delete(&format!("/tasks/{first}"));
    assert_eq!(s, 200);
}

#[test]
fn a_second_signal_exits_at_once() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let mut w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let pids = w.home.path().join("pids");
    // Ignores SIGTERM, so the first signal's shutdown has to wait before SIGKILL.
    let m = marker("second");
    let script = format!("trap '' TERM; echo started > {p}; while :; do sleep 1; done; : {m}", p = pids.display());
    submit(&alice, "alice", &["sh", "-c", &script], "5m", false);
    wait_file(&pids, Duration::from_secs(20));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
    assert!(w.wait_log("stopping the running task", Duration::from_secs(5)), "{}", w.log_text());
    let t0 = Instant::now();
    let status = w.signal(libc::SIGINT).expect("exits");
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    assert_eq!(status.code(), Some(1));
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "the task survived");
}

#[test]
fn settings_come_from_the_environment_too() {
    let home = TempDir::new("worker-env");
    let out = mito(home.path()).arg("worker").env("MITO_COORDINATOR_ADDR", "localhost:5000").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MITO_COORDINATOR_ADDR") && err.contains("scheme"), "{err}");
    let out = mito(home.path()).arg("worker").env("MITO_POLLING_INTERVAL", "often").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MITO_POLLING_INTERVAL"));
}
