//! Retries and dependencies with the real binaries: tasks submitted with `mito client`,
//! run by `mito worker`.

use crate::client::{client, fails, ok};
use crate::harness::submit as submit_api;
use crate::harness::*;
use crate::worker::{wait_committed, Worker};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// A coordinator whose reaper looks every second (its tick follows the claim lease),
/// user `ann`, and a client home logged in as ann.
fn setup() -> (Coordinator, Api, TempDir) {
    setup_with(&["--claim-lease", "4s"])
}

fn setup_with(flags: &[&str]) -> (Coordinator, Api, TempDir) {
    let c = Coordinator::start_with(TestDb::new(), flags);
    let ann = c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    (c, ann, home)
}

/// Submits with the CLI; returns the uuid.
fn submit(c: &Coordinator, home: &TempDir, flags: &[&str], script: &str) -> String {
    let mut args = vec!["tasks", "submit"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let text = ok(&client(c, home, &args));
    text.lines()
        .find(|l| l.starts_with("Task submitted"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no submission line in {text}"))
        .to_string()
}

fn get(api: &Api, uuid: &str) -> Value {
    let (s, b) = api.get(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "{b}");
    json(&b)
}

/// The outcomes of a task's attempts, in order.
fn outcomes(task: &Value) -> Vec<String> {
    task["attempts"]
        .as_array()
        .map_or(Vec::new(), |a| a.iter().map(|x| x["outcome"].as_str().unwrap().to_string()).collect())
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_task_failing_twice_then_succeeding_ends_finished_after_three_attempts() {
    let (c, ann, home) = setup();
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let worker_id = w.id();
    let dir = TempDir::new("retries");
    let runs = dir.path().join("runs");
    // Each run appends a line; the third one succeeds.
    let script = format!("echo run >> '{r}'; [ $(wc -l < '{r}') -ge 3 ]", r = runs.display());
    let u = submit(&c, &home, &["--retries", "4", "--retry-on", "failure", "--retry-backoff", "200ms"], &script);
    let info = wait_committed(&ann, &u, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(info["result"]["exit_status"], 0, "{info}");
    assert_eq!(lines(&runs).len(), 3, "three runs");
    let t = get(&ann, &u);
    assert_eq!(outcomes(&t), ["failure", "failure", "success"], "{t}");
    for a in t["attempts"].as_array().unwrap() {
        assert_eq!(a["worker"], worker_id.as_str(), "{a}");
        assert!(!a["started_at"].is_null(), "{a}");
    }
    assert_eq!(t["attempts"][0]["result"]["exit_status"], 256, "{t}");
    let shown = ok(&client(&c, &home, &["tasks", "get", &u]));
    assert!(shown.contains("Attempt 1: failure") && shown.contains("Attempt 3: success"), "{shown}");
    // A task without a policy has no attempts field at all (mitosis clients see the
    // answer they know).
    let plain = submit(&c, &home, &[], "exit 1");
    wait_committed(&ann, &plain, Duration::from_secs(30));
    assert!(get(&ann, &plain).get("attempts").is_none());
}

#[test]
fn retries_run_out_and_the_last_failure_is_the_outcome() {
    let (c, ann, home) = setup();
    let _w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let u = submit(&c, &home, &["--retries", "1"], "exit 3");
    let info = wait_committed(&ann, &u, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished");
    assert_eq!(info["result"]["exit_status"], 3 << 8);
    assert_eq!(outcomes(&get(&ann, &u)), ["failure", "failure"]);
    // Bounds are checked at submit.
    let o = client(&c, &home, &["tasks", "submit", "--retries", "101", "--", "true"]);
    assert!(fails(&o, 1).contains("at most 100"));
    let o = client(&c, &home, &["tasks", "submit", "--retries", "1", "--retry-on", "sometimes", "--", "true"]);
    assert!(fails(&o, 2).contains("sometimes"));
}

#[test]
fn retry_on_lost_reruns_a_task_whose_worker_was_killed() {
    // Its workers beat every second, well within the timeout.
    let (c, ann, home) = setup_with(&["--heartbeat-timeout", "4s"]);
    let dir = TempDir::new("retries-lost");
    let started = dir.path().join("started");
    // The first run hangs; the second ends at once.
    let script =
        format!("if [ -e '{s}' ]; then exit 0; fi; touch '{s}'; while :; do sleep 1; done", s = started.display());
    let mut victim = Worker::start(&c.url, "ann", "ann-pw", &["--heartbeat-interval", "1s"]);
    let victim_id = victim.id();
    let u = submit(&c, &home, &["--retries", "2", "--retry-on", "lost", "--retry-backoff", "1s"], &script);
    wait_for("the first run starts", Duration::from_secs(30), || started.exists());
    victim.signal(libc::SIGKILL).expect("the worker dies");
    let survivor = Worker::start(&c.url, "ann", "ann-pw", &["--heartbeat-interval", "1s"]);
    let survivor_id = survivor.id();
    let info = wait_committed(&ann, &u, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(info["reporter_uuid"], survivor_id.as_str());
    let t = get(&ann, &u);
    assert_eq!(outcomes(&t), ["lost", "success"], "{t}");
    assert_eq!(t["attempts"][0]["worker"], victim_id.as_str());
    assert_eq!(t["attempts"][1]["worker"], survivor_id.as_str());
}

#[test]
fn cancelling_a_task_stops_its_retries() {
    let (c, ann, home) = setup();
    let _w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let dir = TempDir::new("retries-cancel");
    let runs = dir.path().join("runs");
    let script = format!("echo run >> '{}'; exit 1", runs.display());
    let u = submit(&c, &home, &["--retries", "5", "--retry-backoff", "3s"], &script);
    wait_for("a first attempt", Duration::from_secs(30), || outcomes(&get(&ann, &u)).len() == 1);
    let t = get(&ann, &u);
    assert_eq!(t["info"]["state"], "Pending", "waits out its backoff: {t}");
    assert!(t["info"]["note"].as_str().unwrap().contains("retry 1 of 5"), "{t}");
    ok(&client(&c, &home, &["tasks", "cancel", &u]));
    std::thread::sleep(Duration::from_secs(8));
    let t = get(&ann, &u);
    assert_eq!(t["info"]["state"], "Cancelled", "{t}");
    assert_eq!(lines(&runs).len(), 1, "no run after the cancel");
    assert_eq!(outcomes(&t), ["failure"]);
}

#[test]
fn a_chain_runs_in_order_and_a_failed_first_step_cancels_the_rest() {
    let (c, ann, home) = setup();
    // Two workers: without the dependencies, B and C would run beside A.
    let _w1 = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let _w2 = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let dir = TempDir::new("chain");
    let log = dir.path().join("log");
    let step = |name: &str, pause: &str| format!("sleep {pause}; echo {name} >> '{}'", log.display());
    let a = submit(&c, &home, &[], &step("A", "2"));
    let b = submit(&c, &home, &["--after", &a], &step("B", "1"));
    let cc = submit(&c, &home, &["--after", &b], &step("C", "0"));
    assert_eq!(get(&ann, &cc)["info"]["state"], "Pending");
    let info = wait_committed(&ann, &cc, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished");
    assert_eq!(lines(&log), ["A", "B", "C"], "{}", c.log_text());

    // A failed first step: the rest are cancelled, each naming the dependency that failed.
    let a = submit(&c, &home, &[], "sleep 1; exit 4");
    let b = submit(&c, &home, &["--after", &a], "true");
    let cc = submit(&c, &home, &["--after", &b], "true");
    let b_info = wait_committed(&ann, &b, Duration::from_secs(60));
    let c_info = wait_committed(&ann, &cc, Duration::from_secs(60));
    assert_eq!(b_info["state"], "Cancelled", "{b_info}");
    assert_eq!(c_info["state"], "Cancelled", "{c_info}");
    let note = b_info["note"].as_str().unwrap();
    assert!(note.contains(&a) && note.contains("exit code 4"), "{note}");
    assert!(c_info["note"].as_str().unwrap().contains(&b), "{c_info}");
    let shown = ok(&client(&c, &home, &["tasks", "get", &b]));
    assert!(shown.contains(&format!("Note: dependency {a}")), "{shown}");

    // A dependency that does not exist, or that the submitter may not read, is refused.
    let o = client(&c, &home, &["tasks", "submit", "--after", "00000000-0000-0000-0000-000000000001", "--", "true"]);
    assert!(fails(&o, 1).contains("no such task"));
    let bob = c.user("bob");
    let (s, body) = bob.post(
        "/tasks",
        &serde_json::json!({"group_name": "bob", "tags": [], "labels": [], "timeout": "1m", "priority": 0,
            "task_spec": {"args": ["true"]}, "after": [a]}),
    );
    assert_eq!(s, 400, "{body}");
}

#[test]
fn after_any_runs_after_a_failure() {
    let (c, ann, home) = setup();
    let _w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let a = submit(&c, &home, &[], "sleep 1; exit 1");
    let b = submit(&c, &home, &["--after-any", &a], "true");
    let strict = submit(&c, &home, &["--after", &a], "true");
    let info = wait_committed(&ann, &b, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(info["result"]["exit_status"], 0);
    assert_eq!(wait_committed(&ann, &strict, Duration::from_secs(60))["state"], "Cancelled");
    // Dependents see only a retried task's final outcome: B waits through A2's failed
    // first attempt and runs after its success.
    let dir = TempDir::new("after-retried");
    let runs = dir.path().join("runs");
    let script = format!("echo run >> '{r}'; [ $(wc -l < '{r}') -ge 2 ]", r = runs.display());
    let a2 = submit(&c, &home, &["--retries", "1", "--retry-backoff", "1s"], &script);
    let b2 = submit(&c, &home, &["--after", &a2], "true");
    let info = wait_committed(&ann, &b2, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(outcomes(&get(&ann, &a2)), ["failure", "success"]);
}

#[test]
fn the_claim_walks_the_ready_index_past_tasks_waiting_for_dependencies() {
    // Waiting tasks sit in the claim's index (they have no worker) ahead of a later Ready
    // one; the claim still takes the index in order and filters them out.
    let c = Coordinator::start();
    let a = c.user("ann");
    let w = c.worker(&a, &[], &[]);
    let blocker = submit_api(&a, &task("ann", &["true"], &["elsewhere"], 0));
    let mut waiting = task("ann", &["true"], &[], 0);
    waiting["after"] = serde_json::json!([blocker]);
    let tasks: Vec<_> = (0..2000).map(|_| waiting.clone()).collect();
    let (s, b) = a.post("/tasks/submit", &serde_json::json!({ "tasks": tasks }));
    assert_eq!(s, 200, "{b}");
    let ready = submit_api(&a, &task("ann", &["true"], &[], 0));
    let mut db = c.db.connect();
    let pending: i64 = db.query_one("SELECT count(*) FROM active_tasks WHERE state = 0", &[]).unwrap().get(0);
    assert_eq!(pending, 2000);
    db.batch_execute(mito::testing::QUEUE_SETUP).unwrap();
    db.batch_execute(&format!("PREPARE claim(uuid, float8) AS {}", *mito::testing::CLAIM)).unwrap();
    let mut tx = db.transaction().unwrap();
    let plan: Vec<String> = tx
        .query(&format!("EXPLAIN (ANALYZE, TIMING OFF) EXECUTE claim('{}', 10)", w.uuid), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using active_tasks_group_ready"), "{plan}");
    assert!(!crate::deep_queues::sorts_the_queue(&plan) && !plan.contains("Bitmap"), "{plan}");
    eprintln!("claim past 2000 waiting tasks:\n{plan}");
    tx.rollback().unwrap();
    let got = w.fetch().expect("the Ready task is claimed");
    assert_eq!(got["uuid"], ready.as_str());
}
