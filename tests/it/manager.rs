//! `mito manager` against a real coordinator: workers it spawns are recorded by pid and
//! start time, `status` shows them with their worker ids and tasks, `kill` stops exactly
//! them (never a process that merely looks like a worker, never a recycled pid), `run`
//! restarts a worker that dies and stops all on SIGTERM, and `{i}` gives each worker its
//! own settings. The password never appears on a worker's command line.

use crate::harness::*;
use crate::worker::{marker, submit, wait_marker_gone, with_marker, LOOP};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Flags that make a manager's workers work for `alice` of the coordinator at `url`.
fn worker_flags(url: &str) -> Vec<String> {
    ["-c", url, "-u", "alice", "-p", "alice-pw", "--polling-interval", "1s", "--heartbeat-interval", "5s", "--retain"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Stops every worker recorded in a state directory when a test ends, passed or not:
/// spawned workers are detached and would otherwise outlive the test process.
struct KillOnDrop(PathBuf, PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = manager(&self.0, &self.1, &["kill", "--force", "--timeout", "5s"]);
    }
}

fn manager(home: &Path, state: &Path, args: &[&str]) -> Output {
    let mut cmd = mito(home);
    cmd.arg("manager").args(&args[..1]).arg("--state-dir").arg(state).args(&args[1..]);
    cmd.stdin(Stdio::null()).output().expect("run mito manager")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn status(home: &Path, state: &Path) -> Value {
    let o = manager(home, state, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    json(&text(&o).0)
}

/// Polls `status --json` until `done` holds for it.
fn status_until(home: &Path, state: &Path, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(home, state);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn cmdline(pid: i64) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ")
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with('Z')
}

/// A process the manager did not start whose command line says "mito worker".
fn decoy() -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", LOOP, "mito worker --decoy"]).stdin(Stdio::null());
    die_with_parent(&mut cmd, libc::SIGKILL);
    cmd.spawn().unwrap()
}

fn task_with_tags(api: &Api, args: &[&str], tags: &[&str]) -> String {
    let body = json!({
        "group_name": "alice", "tags": tags, "labels": [], "timeout": "5m", "priority": 0,
        "task_spec": {"args": args, "envs": {}, "resources": [], "terminal_output": false, "watch": null}
    });
    let (s, b) = api.post("/tasks", &body);
    assert_eq!(s, 200, "submit: {b}");
    json(&b)["uuid"].as_str().unwrap().to_string()
}

fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn spawned_workers_are_listed_run_tasks_and_are_killed_by_record_not_by_name() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let home = TempDir::new("manager");
    let state = home.path().join("state");
    let _cleanup = KillOnDrop(home.path().to_path_buf(), state.clone());
    let mut args = vec!["spawn", "3"];
    let flags = worker_flags(&c.url);
    args.extend(flags.iter().map(String::as_str));
    let o = manager(home.path(), &state, &args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("Spawned 3 workers in total"), "{out}");

    let s = status_until(home.path(), &state, Duration::from_secs(30), |s| {
        s["workers"].as_array().unwrap().iter().all(|w| w["worker_id"].is_string())
    });
    let workers = s["workers"].as_array().unwrap().clone();
    assert_eq!(workers.len(), 3, "{s}");
    assert_eq!(s["total"], 3, "{s}");
    let mut ids = Vec::new();
    for w in &workers {
        assert_eq!(w["alive"], true, "{s}");
        let id = w["worker_id"].as_str().expect("every worker has registered").to_string();
        assert_eq!(alice.get(&format!("/workers/{id}")).0, 200, "{id} is registered");
        let pid = w["pid"].as_i64().unwrap();
        let cmd = cmdline(pid);
        assert!(cmd.contains("worker") && !cmd.contains("alice-pw"), "worker {pid} shows {cmd:?}");
        ids.push(id);
    }
    let plain = text(&manager(home.path(), &state, &["status"])).0;
    assert!(plain.lines().any(|l| l == "Total: 3"), "{plain}");
    for id in &ids {
        assert!(plain.contains(id.as_str()), "{plain}");
    }

    let m = marker("manager");
    let uuid = submit(&alice, "alice", &["sh", "-c", LOOP, &m], "5m", false);
    assert!(wait_for(Duration::from_secs(20), || !with_marker(&m).is_empty()), "the task did not start");
    for pid in with_marker(&m) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&env).contains("alice-pw"), "the task's environment holds the password");
        assert!(!cmdline(i64::from(pid)).contains("alice-pw"));
    }
    let s = status_until(home.path(), &state, Duration::from_secs(10), |s| {
        s["workers"].as_array().unwrap().iter().any(|w| w["task"] == uuid.as_str())
    });
    assert!(s["workers"].as_array().unwrap().iter().any(|w| w["task"] == uuid.as_str()), "status shows the task: {s}");

    let mut decoy = decoy();
    let o = manager(home.path(), &state, &["kill"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("All mito workers have been killed"), "{out}");
    for id in &ids {
        assert_eq!(alice.get(&format!("/workers/{id}")).0, 404, "{id} is unregistered");
    }
    let (st, b) = alice.get(&format!("/tasks/{uuid}"));
    assert_eq!(st, 200, "{b}");
    assert_eq!(json(&b)["info"]["state"], "Ready", "the running task is requeued: {b}");
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a task process outlived its worker");
    assert!(decoy.try_wait().unwrap().is_none(), "the decoy named \"mito worker\" was killed");
    let _ = decoy.kill();
    let _ = decoy.wait();

    let s = status(home.path(), &state);
    assert_eq!(s["total"], 0, "{s}");
    assert!(s["workers"].as_array().unwrap().iter().all(|w| w["alive"] == false), "{s}");
    let o = manager(home.path(), &state, &["kill"]);
    assert!(text(&o).0.contains("No mito workers found to kill"), "{:?}", text(&o));
    let o = manager(home.path(), &state, &["status", "--prune"]);
    assert!(text(&o).0.contains("Total: 0"), "{:?}", text(&o));
    assert_eq!(status(home.path(), &state)["workers"].as_array().unwrap().len(), 0);
}

#[test]
fn a_recorded_pid_now_held_by_another_process_is_not_signalled() {
    let c = Coordinator::start();
    let _alice = c.user("alice");
    let home = TempDir::new("manager");
    let state = home.path().join("state");
    let _cleanup = KillOnDrop(home.path().to_path_buf(), state.clone());
    let mut args = vec!["spawn", "1"];
    let flags = worker_flags(&c.url);
    args.extend(flags.iter().map(String::as_str));
    let o = manager(home.path(), &state, &args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&manager(home.path(), &state, &["kill"])).0.contains("All mito workers have been killed"));

    // The worker is gone; pretend the kernel gave its pid to an unrelated process.
    let mut other = decoy();
    let record: PathBuf = std::fs::read_dir(state.join("workers")).unwrap().next().unwrap().unwrap().path();
    let file = record.join("record.json");
    let mut r = json(&std::fs::read_to_string(&file).unwrap());
    r["pid"] = json!(other.id());
    std::fs::write(&file, r.to_string()).unwrap();

    let s = status(home.path(), &state);
    assert_eq!(s["workers"][0]["pid"], other.id(), "{s}");
    assert_eq!(s["workers"][0]["alive"], false, "a pid with another start time is not the worker: {s}");
    let o = manager(home.path(), &state, &["kill", "--force", "--timeout", "1s"]);
    assert!(text(&o).0.contains("No mito workers found to kill"), "{:?}", text(&o));
    let o = manager(home.path(), &state, &["kill", &other.id().to_string()]);
    assert_ne!(o.status.code(), Some(0), "naming the pid does not make it a worker: {:?}", text(&o));
    std::thread::sleep(Duration::from_millis(300));
    assert!(other.try_wait().unwrap().is_none(), "the unrelated process was signalled");
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn index_placeholders_reach_each_workers_tasks() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let home = TempDir::new("manager");
    let state = home.path().join("state");
    let _cleanup = KillOnDrop(home.path().to_path_buf(), state.clone());
    let mut args = vec!["spawn", "2", "--tags", "dev{i}", "--env", "DEVICE=gpu{i},x"];
    let flags = worker_flags(&c.url);
    args.extend(flags.iter().map(String::as_str));
    let o = manager(home.path(), &state, &args);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let out = home.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for i in 0..2 {
        let file = out.join(format!("dev{i}"));
        let script = format!("printf %s \"$DEVICE\" > {}", file.display());
        task_with_tags(&alice, &["sh", "-c", &script], &[&format!("dev{i}")]);
    }
    for i in 0..2 {
        let file = out.join(format!("dev{i}"));
        assert!(wait_for(Duration::from_secs(30), || file.exists()), "the task tagged dev{i} did not run");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("gpu{i},x"));
    }
    let o = manager(home.path(), &state, &["kill"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// The pid of worker `index` from the supervisor's "started worker" lines, the `nth` start.
fn started_pid(log: &str, index: usize, nth: usize) -> Option<i32> {
    let needle = format!("started worker {index} (pid ");
    log.lines().filter_map(|l| l.split(&needle).nth(1)).nth(nth)?.trim_end_matches(')').parse().ok()
}

#[test]
fn run_restarts_a_killed_worker_and_stops_all_on_sigterm() {
    let c = Coordinator::start();
    let _alice = c.user("alice");
    let home = TempDir::new("manager");
    let state = home.path().join("state");
    let log = home.path().join("run.log");
    let mut cmd = mito(home.path());
    cmd.args(["manager", "run", "2", "--state-dir"]).arg(&state).args(worker_flags(&c.url));
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    die_with_parent(&mut cmd, libc::SIGKILL);
    let mut sup = cmd.spawn().unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let registered = |index: usize| {
        read()
            .lines()
            .filter(|l| l.starts_with(&format!("[{index}] ")) && l.contains("Worker registered with ID"))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || registered(0) == 1 && registered(1) == 1),
        "two workers did not register:\n{}",
        read()
    );
    let first = started_pid(&read(), 0, 0).expect("worker 0's pid");
    let other = started_pid(&read(), 1, 0).expect("worker 1's pid");
    for pid in [first, other] {
        let cmd = cmdline(i64::from(pid));
        assert!(cmd.contains("worker") && !cmd.contains("alice-pw"), "worker {pid} shows {cmd:?}");
    }
    // SAFETY: killing the supervisor's worker, whose pid its log just gave.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let killed = Instant::now();
    assert!(wait_for(Duration::from_secs(15), || registered(0) == 2), "worker 0 was not restarted:\n{}", read());
    let second = started_pid(&read(), 0, 1).expect("worker 0's new pid");
    assert!(killed.elapsed() < Duration::from_secs(10), "the restart took {:?}", killed.elapsed());
    assert_ne!(second, first);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut sup, Duration::from_secs(40)).expect("the supervisor stops after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", read());
    assert!(!alive(second) && !alive(other), "a worker outlived its supervisor:\n{}", read());
    let text = read();
    assert!(text.contains("[0] ") && text.contains("[1] ") && text.contains("unregistered"), "{text}");
}

#[test]
fn mistakes_are_refused_before_anything_starts() {
    let home = TempDir::new("manager");
    let state = home.path().join("state");
    let o = manager(home.path(), &state, &["spawn", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("Cannot spawn 0 workers"), "{:?}", text(&o));
    let o = manager(home.path(), &state, &["spawn", "2", "--lifetime", "forever"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("lifetime"), "{:?}", text(&o));
    assert!(!state.join("workers").exists() || std::fs::read_dir(state.join("workers")).unwrap().next().is_none());
    let o = mito(home.path()).args(["manager"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = manager(home.path(), &state, &["status"]);
    assert_eq!(text(&o).0, "Total: 0\n");
}
