//! What a task can reach on its worker: none of the worker's secrets (environment, command
//! line, memory, credentials file), and no life after its own end — whether it ends, is
//! cancelled, times out or its worker is killed with SIGKILL — even from a new session.
//! These tests run as root, which is what makes the PID namespace and `run_as` available.

use crate::harness::*;
use crate::worker::{marker, submit, wait_committed, wait_marker_gone, with_marker, Worker, LOOP};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A directory every user may write, for a task running as another uid to leave notes in.
fn shared_dir(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Starts a worker with the given environment and arguments (no `-u`/`-p` of its own).
fn spawn(home: &Path, url: &str, env: &[(&str, &str)], args: &[&str], log: &Path) -> Child {
    let mut cmd = mito(home);
    cmd.arg("worker")
        .args(["-c", url, "--polling-interval", "1s", "--heartbeat-interval", "5s", "--retain"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().expect("start mito worker")
}

fn wait_for(path: &Path, lines: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(path) {
            if t.lines().count() >= lines && t.ends_with('\n') {
                return t;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} did not get {lines} lines", path.display());
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

#[test]
fn a_task_sees_none_of_the_workers_secrets() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let home = TempDir::new("iso-env");
    let log = home.path().join("worker.log");
    // The password both in the environment and on the command line, as older setups do.
    let child = spawn(
        home.path(),
        &c.url,
        &[("MITO_USER", "alice"), ("MITO_PASSWORD", "alice-pw"), ("MITO_LIFETIME", "1d")],
        &["-p", "alice-pw"],
        &log,
    );
    let w = Worker { child, home, log };
    let out = shared_dir("iso-env-out");
    let o = out.path().display().to_string();
    let pid = w.child.id();
    w.id();
    let script = format!(
        "env > {o}/env; cat /proc/{pid}/environ > {o}/environ 2>/dev/null; cat /proc/{pid}/cmdline > {o}/cmdline; echo done > {o}/done"
    );
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "30s", false);
    wait_committed(&alice, &uuid, Duration::from_secs(30));
    wait_for(&out.path().join("done"), 1, Duration::from_secs(5));
    let env = read(&out.path().join("env"));
    assert!(env.contains("MITO_TASK_UUID="), "the task's own variables are there:\n{env}");
    for name in ["MITO_USER=", "MITO_PASSWORD=", "MITO_LIFETIME=", "MITO_LOG="] {
        assert!(!env.lines().any(|l| l.starts_with(name)), "{name} reached the task:\n{env}");
    }
    assert!(!env.contains("alice-pw"), "{env}");
    let environ = read(&out.path().join("environ"));
    assert!(!environ.contains("alice-pw"), "the worker's environ shows the password: {environ:?}");
    let cmdline = read(&out.path().join("cmdline"));
    assert!(cmdline.contains("worker"), "the command line was read: {cmdline:?}");
    assert!(!cmdline.contains("alice-pw"), "the worker's command line shows the password: {cmdline:?}");
}

#[test]
fn a_task_run_as_another_user_cannot_read_the_token_or_the_workers_memory() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let home = TempDir::new("iso-runas");
    let log = home.path().join("worker.log");
    let pwfile = home.path().join("pw");
    std::fs::write(&pwfile, "alice-pw\n").unwrap();
    let pw = pwfile.display().to_string();
    let child =
        spawn(home.path(), &c.url, &[("MITO_RUN_AS", "nobody")], &["-u", "alice", "--password-file", &pw], &log);
    let w = Worker { child, home, log };
    let pid = w.child.id();
    w.id();
    let cred = w.home.path().join(".config/mitosis/credentials");
    let token = std::fs::read_to_string(&cred).expect("the worker saved its token");
    let token = token.split_once(':').unwrap().1.trim().to_string();
    let dir = std::fs::metadata(cred.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir, 0o700, "the credentials directory is private");
    let out = shared_dir("iso-runas-out");
    let o = out.path().display().to_string();
    let script = format!(
        "id -u > {o}/uid; cat {cred} > {o}/cred 2>&1; echo \"cred $?\" >> {o}/codes; \
         cat /proc/{pid}/environ > {o}/environ 2>&1; echo \"environ $?\" >> {o}/codes; \
         head -c 4096 /proc/{pid}/mem > {o}/mem 2>&1; echo \"mem $?\" >> {o}/codes; \
         ls \"$MITO_RESULT_DIR\" >/dev/null && echo hi > \"$MITO_RESULT_DIR/out\" && echo \"write $?\" >> {o}/codes; \
         pwd > {o}/pwd; echo done > {o}/done",
        cred = cred.display()
    );
    let uuid = submit(&alice, "alice", &["sh", "-c", &script], "30s", false);
    let info = wait_committed(&alice, &uuid, Duration::from_secs(30));
    assert_eq!(info["result"]["exit_status"], 0, "{info}");
    wait_for(&out.path().join("done"), 1, Duration::from_secs(5));
    assert_eq!(read(&out.path().join("uid")).trim(), "65534", "the task runs as nobody");
    let codes = read(&out.path().join("codes"));
    for what in ["cred", "environ", "mem"] {
        assert!(
            codes.lines().any(|l| l.starts_with(what) && l != format!("{what} 0")),
            "{what} was readable:\n{codes}"
        );
    }
    assert!(codes.lines().any(|l| l == "write 0"), "the task can write its result dir:\n{codes}");
    for f in ["cred", "environ", "mem"] {
        let text = read(&out.path().join(f));
        assert!(!text.contains(&token) && !text.contains("alice-pw"), "{f}: {text}");
    }
    assert!(read(&out.path().join("pwd")).trim().ends_with("/exec"), "the task starts in its exec dir");
    let root = w.home.path().join(".cache/mitosis");
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o711);
}

#[test]
fn the_worker_cache_is_private() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    let id = w.id();
    let uuid = submit(&alice, "alice", &["sh", "-c", "echo x > \"$MITO_RESULT_DIR/r\"; sleep 1"], "30s", true);
    let root = w.home.path().join(".cache/mitosis");
    let mine = root.join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mine.join("std/stdout.log").exists() {
        assert!(Instant::now() < deadline, "the task did not start:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in [&root, &mine, &mine.join("result"), &mine.join("exec"), &mine.join("resource"), &mine.join("std")] {
        assert_eq!(std::fs::metadata(d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
    assert_eq!(std::fs::metadata(mine.join("std/stdout.log")).unwrap().permissions().mode() & 0o777, 0o600);
    wait_committed(&alice, &uuid, Duration::from_secs(30));
}

/// Waits until no process carries `marker`.
fn assert_none_left(marker: &str, what: &str) {
    assert!(wait_marker_gone(marker, Duration::from_secs(8)), "{what}: a process of the task is still alive");
}

/// A task that starts two escapees, one in a new session and one double-forked into a new
/// session, each carrying `marker` on its command line, then runs `then`.
fn escaping_task(marker: &str, pids: &Path, then: &str) -> Vec<String> {
    let p = pids.display();
    let body = format!("echo $$ >> {p}; {LOOP}");
    let script = format!(
        "setsid sh -c '{body}' {marker} & (setsid sh -c '{body}' {marker}-2 &) ; \
         while [ \"$(cat {p} 2>/dev/null | wc -l)\" -lt 2 ]; do sleep 0.05; done; {then}"
    );
    vec!["sh".into(), "-c".into(), script]
}

fn submit_args(api: &Api, args: &[String], timeout: &str) -> String {
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    submit(api, "alice", &args, timeout, false)
}

/// A coordinator, user alice and her registered worker, and a task of hers whose two
/// escapees carry a marker made from `tag`, write their pids to `pids` and then run
/// `then`. The coordinator is returned so that it lives as long as the test.
struct Escape {
    _c: Coordinator,
    alice: Api,
    w: Worker,
    m: String,
    pids: std::path::PathBuf,
    uuid: String,
}

fn escaping_task_running(tag: &str, then: &str, timeout: &str) -> Escape {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = Worker::start(&c.url, "alice", "alice-pw", &[]);
    w.id();
    let m = marker(tag);
    let pids = w.home.path().join("pids");
    let uuid = submit_args(&alice, &escaping_task(&m, &pids, then), timeout);
    Escape { _c: c, alice, w, m, pids, uuid }
}

#[test]
fn nothing_of_a_task_survives_its_end() {
    let e = escaping_task_running("end", "exit 0", "30s");
    let info = wait_committed(&e.alice, &e.uuid, Duration::from_secs(30));
    assert_eq!(info["result"]["exit_status"], 0, "{info}");
    assert_eq!(read(&e.pids).lines().count(), 2, "both escapees started");
    assert_none_left(&e.m, "after the task ended");
}

#[test]
fn nothing_of_a_task_survives_a_cancel() {
    let e = escaping_task_running("cancel", "sleep 300", "5m");
    wait_for(&e.pids, 2, Duration::from_secs(20));
    let (s, b) = e.alice.delete(&format!("/tasks/{}", e.uuid));
    assert_eq!(s, 200, "{b}");
    let info = wait_committed(&e.alice, &e.uuid, Duration::from_secs(20));
    assert_eq!(info["result"]["msg"], "UserCancellation", "{info}");
    assert_none_left(&e.m, "after the cancel");
}

#[test]
fn nothing_of_a_task_survives_its_timeout() {
    let e = escaping_task_running("timeout", "sleep 300", "3s");
    wait_for(&e.pids, 2, Duration::from_secs(20));
    let info = wait_committed(&e.alice, &e.uuid, Duration::from_secs(30));
    assert_eq!(info["result"]["msg"], "ExecTimeout", "{info}");
    assert_none_left(&e.m, "after the timeout");
}

#[test]
fn nothing_of_a_task_survives_a_sigkilled_worker() {
    let mut e = escaping_task_running("kill9", "sleep 300", "5m");
    wait_for(&e.pids, 2, Duration::from_secs(20));
    let main = with_marker(&e.m);
    assert!(main.len() >= 2, "the escapees run: {main:?}");
    e.w.signal(libc::SIGKILL).expect("the worker dies");
    assert_none_left(&e.m, "after the worker was killed with SIGKILL");
}

#[test]
fn without_root_escapees_are_still_swept_at_the_task_end() {
    use std::os::unix::process::CommandExt;
    let c = Coordinator::start();
    let alice = c.user("alice");
    // A worker that is not root: no PID namespace, no cgroup; the /proc sweep remains.
    let home = TempDir::new("iso-nonroot");
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let log = home.path().join("worker.log");
    let mut cmd = mito(home.path());
    cmd.arg("worker")
        .args([
            "-c",
            &c.url,
            "-u",
            "alice",
            "-p",
            "alice-pw",
            "--polling-interval",
            "1s",
            "--heartbeat-interval",
            "5s",
            "--retain",
        ])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let w = Worker { child: cmd.spawn().unwrap(), home, log };
    w.id();
    let notes = shared_dir("iso-nonroot-out");
    let m = marker("nonroot");
    let pids = notes.path().join("pids");
    let uuid = submit_args(&alice, &escaping_task(&m, &pids, "exit 0"), "30s");
    let info = wait_committed(&alice, &uuid, Duration::from_secs(30));
    assert_eq!(info["result"]["exit_status"], 0, "{info}");
    assert_eq!(read(&pids).lines().count(), 2, "both escapees started");
    assert_none_left(&m, "after the task of a worker that is not root ended");
    assert!(w.log_text().contains("processes that had left its process group"), "{}", w.log_text());
}

#[test]
fn run_as_needs_root_and_an_existing_user() {
    let home = TempDir::new("iso-runas-bad");
    // (flags after `worker -c <closed port>`, exit status, what stderr must name)
    let cases: [(&[&str], i32, &[&str]); 4] = [
        (&["-u", "alice", "-p", "x", "--run-as", "no-such-user-here"], 1, &["no-such-user-here", "run_as"]),
        (&["-u", "alice", "--password-file", "/nonexistent/pw"], 1, &["/nonexistent/pw"]),
        (&["-p", "x", "--password-stdin"], 2, &["password one way only"]),
        (&["-u", "alice", "--password-stdin"], 1, &["holds no password"]),
    ];
    for (flags, status, needles) in cases {
        let out = mito(home.path())
            .args(["worker", "-c", "http://127.0.0.1:9"])
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{flags:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{flags:?} should name {n:?}: {err}");
        }
    }
}
