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

/// The stdout a std-log archive holds.
fn stdout_in(archive: &Path) -> String {
    let bytes = std::fs::read(archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut found = String::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "std-log/stdout.log" {
            std::io::Read::read_to_string(&mut e, &mut found).unwrap();
        }
    }
    found
}

fn storage_used(c: &Coordinator, group: &str) -> i64 {
    c.db.connect().query_one("SELECT storage_used FROM groups WHERE group_name = $1", &[&group]).unwrap().get(0)
}

/// A task that fails twice, then succeeds, each run printing its own line: every attempt
/// keeps its std-log, downloadable by attempt; the plain download is the last attempt's;
/// the group is charged for all three, and deleting the artifact deletes all three.
fn each_attempt_keeps_its_own_artifacts(c: Coordinator) {
    let ann = c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let dir = TempDir::new("attempt-artifacts");
    let runs = dir.path().join("runs");
    let script =
        format!("echo run >> '{r}'; n=$(wc -l < '{r}'); echo \"this is run $n\"; [ $n -ge 3 ]", r = runs.display());
    let flags = ["--terminal", "--retries", "4", "--retry-on", "failure", "--retry-backoff", "200ms"];
    let u = submit(&c, &home, &flags, &script);
    let info = wait_committed(&ann, &u, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}\n{}", w.log_text());
    let t = get(&ann, &u);
    assert_eq!(outcomes(&t), ["failure", "failure", "success"], "{t}");
    let mut charged = 0;
    for a in t["attempts"].as_array().unwrap() {
        let kinds: Vec<&str> =
            a["artifacts"].as_array().unwrap().iter().map(|x| x["content_type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["std-log"], "{a}");
        charged += a["artifacts"][0]["size"].as_i64().unwrap();
    }
    // The mitosis field lists the newest of each type, once.
    assert_eq!(t["artifacts"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t["artifacts"][0]["size"], t["attempts"][2]["artifacts"][0]["size"], "{t}");
    assert_eq!(storage_used(&c, "ann"), charged, "each attempt's artifact is charged");

    let out = TempDir::new("attempt-downloads");
    let mut urls = Vec::new();
    for k in 1..=3 {
        let n = k.to_string();
        let to = out.path().to_str().unwrap();
        ok(&client(&c, &home, &["tasks", "artifacts", "download", &u, "std-log", "--attempt", &n, "-o", to]));
        let text = stdout_in(&out.path().join(format!("std-log-attempt-{k}.tar.gz")));
        assert_eq!(text.trim(), format!("this is run {k}"), "attempt {k}");
        let (s, b) = ann.get(&format!("/tasks/{u}/attempts/{k}/download/artifacts/std-log"));
        assert_eq!(s, 200, "{b}");
        urls.push(json(&b)["url"].as_str().unwrap().to_string());
    }
    let plain = out.path().join("plain.tar.gz");
    ok(&client(&c, &home, &["tasks", "artifacts", "download", &u, "std-log", "-o", plain.to_str().unwrap()]));
    assert_eq!(stdout_in(&plain).trim(), "this is run 3", "the plain download is the last attempt's");
    let shown = ok(&client(&c, &home, &["tasks", "get", &u]));
    assert_eq!(shown.matches("    Artifact: std-log.tar.gz").count(), 3, "{shown}");
    // No such attempt, or not an attempt number.
    let o = client(&c, &home, &["tasks", "artifacts", "download", &u, "std-log", "--attempt", "4"]);
    assert!(fails(&o, 1).contains("attempt 4"));
    assert_eq!(ann.get(&format!("/tasks/{u}/attempts/0/download/artifacts/std-log")).0, 400);
    assert_eq!(ann.get(&format!("/tasks/{u}/attempts/x/download/artifacts/std-log")).0, 400);

    // Deleting the artifact deletes every attempt's object and gives all the space back.
    let (s, b) = c.admin().delete(&format!("/admin/tasks/{u}/artifacts/std-log"));
    assert_eq!(s, 200, "{b}");
    assert_eq!(storage_used(&c, "ann"), 0);
    for (k, url) in urls.iter().enumerate() {
        let status = match ureq::get(url).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("GET attempt {}: {e}", k + 1),
        };
        assert_eq!(status, 404, "attempt {}'s object outlived the delete", k + 1);
    }
    assert!(get(&ann, &u)["attempts"][0].get("artifacts").is_none());
}

#[test]
fn each_attempt_keeps_its_own_artifacts_local() {
    each_attempt_keeps_its_own_artifacts(Coordinator::start());
}

#[test]
fn each_attempt_keeps_its_own_artifacts_s3() {
    let flags = s3_server().coordinator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    each_attempt_keeps_its_own_artifacts(Coordinator::start_with(TestDb::new(), &flags));
}

/// A coordinator that never reaps: the test holds the reaper's advisory lock on its
/// database, taken before the coordinator starts, so whatever releases a dependent can
/// only be the transaction that ended its dependency. The lock goes with the returned
/// connection.
fn setup_without_reaper() -> (Coordinator, Api, TempDir, postgres::Client) {
    let db = TestDb::new();
    let mut lock = db.connect();
    let got: bool = lock.query_one("SELECT pg_try_advisory_lock($1)", &[&mito::testing::REAPER_LOCK]).unwrap().get(0);
    assert!(got, "the reaper lock of a fresh database is free");
    let c = Coordinator::start_with(db, &[]);
    let ann = c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    (c, ann, home, lock)
}

#[test]
fn dependents_start_in_the_transaction_that_ends_their_dependency() {
    let (c, ann, home, _reaper_lock) = setup_without_reaper();
    let _w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let dir = TempDir::new("chain-now");
    let log = dir.path().join("log");
    let step = |name: &str| format!("echo {name} >> '{}'", log.display());
    // A chain: each commit releases the next step.
    let a = submit(&c, &home, &[], &format!("sleep 1; {}", step("A")));
    let b = submit(&c, &home, &["--after", &a], &step("B"));
    let cc = submit(&c, &home, &["--after", &b], &step("C"));
    let info = wait_committed(&ann, &cc, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}");
    assert_eq!(lines(&log), ["A", "B", "C"]);
    // A dependency that has already ended: settled at submit.
    let late = submit(&c, &home, &["--after", &a], &step("late"));
    assert_eq!(wait_committed(&ann, &late, Duration::from_secs(60))["state"], "Finished");

    // A failure cancels the whole chain behind it at once.
    let f = submit(&c, &home, &[], "exit 4");
    let g = submit(&c, &home, &["--after", &f], "true");
    let h = submit(&c, &home, &["--after", &g], "true");
    assert_eq!(wait_committed(&ann, &g, Duration::from_secs(60))["state"], "Cancelled");
    let h_info = wait_committed(&ann, &h, Duration::from_secs(60));
    assert_eq!(h_info["state"], "Cancelled");
    assert!(h_info["note"].as_str().unwrap().contains(&g), "{h_info}");

    // A user's cancellation of a task nobody runs (no worker has its tag) releases the
    // task waiting for it in any outcome.
    let stuck = submit(&c, &home, &["-t", "nowhere"], "true");
    let after_any = submit(&c, &home, &["--after-any", &stuck], &step("after-any"));
    assert_eq!(get(&ann, &after_any)["info"]["state"], "Pending");
    ok(&client(&c, &home, &["tasks", "cancel", &stuck]));
    assert_eq!(wait_committed(&ann, &after_any, Duration::from_secs(60))["state"], "Finished");
    assert_eq!(lines(&log), ["A", "B", "C", "late", "after-any"]);
    assert!(!c.log_text().contains("now reaps"), "a coordinator reaped:\n{}", c.log_text());
}
