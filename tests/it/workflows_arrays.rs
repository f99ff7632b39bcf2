//! Task arrays and live logs: many tasks from one template, a cap on how many of them run
//! at once, and a running task's output followed as it is written.

use crate::client::client;
use crate::harness::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Logs `ann` in with the client and submits an array; returns the array id.
fn submit_array(c: &Coordinator, home: &TempDir, extra: &[&str]) -> String {
    let login = client(c, home, &["-u", "ann", "-p", "ann-pw", "--retain", "auth"]);
    assert!(login.status.success(), "{}", out(&login));
    let mut args = vec!["--json", "tasks", "submit"];
    args.extend_from_slice(extra);
    let o = client(c, home, &args);
    assert!(o.status.success(), "submit --array: {}", out(&o));
    let v = json(&String::from_utf8_lossy(&o.stdout));
    v["array_id"].as_str().unwrap_or_else(|| panic!("no array id in {v}")).to_string()
}

fn running_in_array(a: &Api, array: &str) -> usize {
    let (s, b) =
        a.post("/tasks/query", &json!({"labels": [format!("array:{array}")], "states": ["Running"], "count": true}));
    assert_eq!(s, 200, "{b}");
    json(&b)["count"].as_u64().unwrap() as usize
}

#[test]
fn an_array_capped_at_five_never_runs_more_than_five_and_runs_every_index_once() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let home = TempDir::new("array-cap");
    let id = submit_array(&c, &home, &["--array", "0-99%5", "--array-subst", "--", "echo", "index-{i}"]);
    let workers: Vec<TestWorker> = (0..8).map(|_| c.worker(&a, &[], &[])).collect();
    let mut seen = Vec::new();
    let mut max_running = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < 100 && Instant::now() < deadline {
        let held: Vec<(&TestWorker, serde_json::Value)> =
            workers.iter().filter_map(|w| w.fetch().map(|t| (w, t))).collect();
        max_running = max_running.max(held.len()).max(running_in_array(&a, &id));
        assert!(!held.is_empty(), "no worker got a task with {} of 100 done", seen.len());
        for (w, t) in held {
            let envs = &t["spec"]["envs"];
            let index = envs["MITO_ARRAY_INDEX"].as_str().unwrap().to_string();
            assert_eq!(envs["MITO_ARRAY_ID"], id.as_str());
            assert_eq!(t["spec"]["args"], json!(["echo", format!("index-{index}")]), "{{i}} substituted");
            seen.push(index.parse::<u64>().unwrap());
            w.complete(&t, 0);
        }
    }
    assert!(max_running <= 5, "{max_running} of the array ran at once with %5");
    assert_eq!(max_running, 5, "the cap is reached: five run at once");
    assert_eq!(seen.len(), 100, "every index ran exactly once: {seen:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), (0..100).collect::<BTreeSet<_>>());
    let get = client(&c, &home, &["--json", "tasks", "get", "--array", &id]);
    assert!(get.status.success(), "{}", out(&get));
    let v = json(&String::from_utf8_lossy(&get.stdout));
    assert_eq!(v["tasks"], 100, "{v}");
    assert_eq!(v["states"]["Finished"], 100, "{v}");
    let wait = client(&c, &home, &["tasks", "wait", "--array", &id, "--timeout", "10s"]);
    assert!(wait.status.success(), "{}", out(&wait));
}

#[test]
fn a_parked_fetch_gets_the_next_array_task_when_a_running_one_ends() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let home = TempDir::new("array-wake");
    submit_array(&c, &home, &["--array", "0-3%1", "--", "true"]);
    let first = c.worker(&a, &[], &[]);
    let second = c.worker(&a, &[], &[]);
    let t = first.fetch().expect("the first index");
    assert!(second.fetch().is_none(), "the cap of 1 is taken");
    let parked = std::thread::spawn(move || {
        let start = Instant::now();
        let (s, b) = second.api.get("/workers/tasks?wait=20");
        (s, b, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    first.complete(&t, 0);
    let (s, b, waited) = parked.join().unwrap();
    assert_eq!(s, 200, "{b}");
    assert!(!json(&b).is_null(), "the parked fetch got the next index");
    assert!(waited < Duration::from_secs(5), "woken by the commit, not its deadline: {waited:?}");
}

#[test]
fn ten_thousand_indices_submit_in_one_request_and_the_array_is_queried_and_cancelled_whole() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let home = TempDir::new("array-big");
    let body = json!({"tasks": [task("ann", &["true"], &[], 0)], "array": {"start": 0, "end": 9999}});
    let start = Instant::now();
    let (s, b) = a.post("/tasks/submit", &body);
    eprintln!("10,000 array tasks in one request: {:?}", start.elapsed());
    assert_eq!((s, json(&b)["results"].as_array().map(Vec::len)), (200, Some(10_000)));
    let start = Instant::now();
    let id = submit_array(&c, &home, &["--array", "0-9999", "--", "true"]);
    let took = start.elapsed();
    eprintln!("10,000 array tasks submitted (with the client's login) in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let q = client(&c, &home, &["--json", "tasks", "query", "--array", &id, "--count"]);
    assert!(q.status.success(), "{}", out(&q));
    assert_eq!(json(&String::from_utf8_lossy(&q.stdout))["count"], 10_000);
    let too_many = client(&c, &home, &["tasks", "submit", "--array", "0-10000", "--", "true"]);
    assert_eq!(too_many.status.code(), Some(2), "{}", out(&too_many));
    assert!(out(&too_many).contains("at most 10000"), "{}", out(&too_many));
    // One of them running: cancel stops it too.
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().expect("a task");
    let cancel = client(&c, &home, &["tasks", "cancel", "--array", &id]);
    assert!(cancel.status.success(), "{}", out(&cancel));
    assert!(out(&cancel).contains("Cancelled 10000 tasks"), "{}", out(&cancel));
    assert!(t["uuid"].is_string());
    let (s, b) =
        a.post("/tasks/query", &json!({"labels": [format!("array:{id}")], "states": ["Ready"], "count": true}));
    assert_eq!((s, json(&b)["count"].as_u64()), (200, Some(0)), "{b}");
}

/// Logs `ann` in and submits one task with `--terminal`; returns its uuid.
fn submit_terminal(c: &Coordinator, home: &TempDir, script: &str) -> String {
    let login = client(c, home, &["-u", "ann", "-p", "ann-pw", "--retain", "auth"]);
    assert!(login.status.success(), "{}", out(&login));
    let o = client(c, home, &["--json", "tasks", "submit", "--terminal", "--", "sh", "-c", script]);
    assert!(o.status.success(), "{}", out(&o));
    json(&String::from_utf8_lossy(&o.stdout))["uuid"].as_str().unwrap().to_string()
}

fn wait_running(a: &Api, uuid: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let (_, b) = a.get(&format!("/tasks/{uuid}"));
        if json(&b)["info"]["state"] == "Running" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("task {uuid} never started");
}

/// Starts `tasks logs --follow`; its stdout lines (with when they came) and its stderr
/// arrive on channels.
fn follow(
    c: &Coordinator,
    home: &TempDir,
    uuid: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<(String, Instant)>) {
    use std::io::BufRead;
    let mut child = mito(home.path())
        .args(["client", "-c", &c.url, "tasks", "logs", "--follow", uuid])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((format!("out: {line}"), Instant::now()));
        }
    });
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send((format!("err: {line}"), Instant::now()));
        }
    });
    (child, rx)
}

#[test]
fn logs_follow_shows_a_running_tasks_output_within_two_seconds_and_exits_with_its_code() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let home = TempDir::new("follow");
    let w = crate::worker::Worker::start(&c.url, "ann", "ann-pw", &[]);
    w.id();
    let uuid = submit_terminal(&c, &home, "echo first-line; echo to-stderr >&2; sleep 6; echo last-line; exit 7");
    wait_running(&a, &uuid);
    let started = Instant::now();
    let (mut child, rx) = follow(&c, &home, &uuid);
    let (line, at) = rx.recv_timeout(Duration::from_secs(10)).expect("a line from the follower");
    assert!(line == "out: first-line" || line == "err: to-stderr", "{line}");
    assert!(at - started < Duration::from_secs(2), "the first line took {:?}", at - started);
    let (_, b) = a.get(&format!("/tasks/{uuid}"));
    assert_eq!(json(&b)["info"]["state"], "Running", "shown while the task still runs");
    let status = wait_timeout(&mut child, Duration::from_secs(60)).expect("the follower ends with the task");
    let lines: Vec<String> = rx.try_iter().map(|(l, _)| l).chain([line]).collect();
    assert!(lines.contains(&"out: last-line".to_string()), "{lines:?}\nworker:\n{}", w.log_text());
    assert!(lines.contains(&"err: to-stderr".to_string()), "{lines:?}");
    assert_eq!(status.code(), Some(7), "the task's exit code: {lines:?}");
}

#[test]
fn logs_follow_on_a_worker_that_ships_nothing_says_so_and_prints_the_artifact() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let home = TempDir::new("follow-mitosis");
    let uuid = submit_terminal(&c, &home, "echo never-run");
    // A worker speaking only the mitosis API: it never ships output.
    let w = c.worker(&a, &[], &[]);
    let task = w.fetch().expect("the task");
    let (mut child, rx) = follow(&c, &home, &uuid);
    let (line, _) = rx.recv_timeout(Duration::from_secs(15)).expect("the follower says something");
    assert!(line.starts_with("err: live output is not available"), "{line}");
    let id = task["id"].as_i64().unwrap();
    assert_eq!(w.report(id, json!("Finish")).0, 200);
    let archive = crate::client_files::std_log("from-the-artifact\n", "");
    let (s, b) = w.report(id, json!({"Upload": {"content_type": "std-log", "content_length": archive.len()}}));
    assert_eq!(s, 200, "{b}");
    crate::client_files::put(json(&b)["url"].as_str().unwrap(), &archive);
    assert_eq!(w.report(id, json!({"Commit": {"exit_status": 2 << 8, "msg": null}})).0, 200);
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("the follower ends");
    let lines: Vec<String> = rx.try_iter().map(|(l, _)| l).collect();
    assert!(lines.contains(&"out: from-the-artifact".to_string()), "{lines:?}");
    assert_eq!(status.code(), Some(2), "{lines:?}");
}

#[test]
fn the_claim_keeps_its_ready_index_walk_past_a_capped_array() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let body = json!({"tasks": [task("ann", &["true"], &[], 0)], "array": {"start": 0, "end": 4999, "max_running": 1}});
    let (s, b) = a.post("/tasks/submit", &body);
    assert_eq!(s, 200, "{b}");
    let plain = submit(&a, &task("ann", &["true"], &[], 0));
    let first = c.worker(&a, &[], &[]);
    let second = c.worker(&a, &[], &[]);
    assert!(first.fetch().expect("an array task")["spec"]["envs"]["MITO_ARRAY_INDEX"] == "0");
    let mut db = c.db.connect();
    db.batch_execute(mito::testing::QUEUE_SETUP).unwrap();
    db.batch_execute(&format!("PREPARE claim(uuid, float8) AS {}", *mito::testing::CLAIM)).unwrap();
    let mut tx = db.transaction().unwrap();
    let plan: Vec<String> = tx
        .query(&format!("EXPLAIN ANALYZE EXECUTE claim('{}', 10)", second.uuid), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    eprintln!("{plan}");
    assert!(plan.contains("Index Scan using active_tasks_group_ready"), "{plan}");
    assert!(!crate::deep_queues::sorts_the_queue(&plan) && !plan.contains("Bitmap"), "{plan}");
    tx.rollback().unwrap();
    let t = second.fetch().expect("the task behind the array at its cap");
    assert_eq!(t["uuid"], plain.as_str(), "the capped array's other tasks are skipped");
}

#[test]
fn live_output_is_shipped_only_by_the_tasks_worker_read_only_by_its_group_and_bounded() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let bob = c.user("bob");
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let mine = c.worker(&a, &[], &[]);
    let other = c.worker(&a, &[], &[]);
    assert_eq!(mine.fetch().expect("the task")["uuid"], uuid.as_str());
    let ship = |w: &TestWorker, offset: u64, body: &str| {
        w.api.post_raw(
            &format!("/workers/tasks/{uuid}/log?stream=stdout&offset={offset}"),
            "application/octet-stream",
            body,
        )
    };
    assert_eq!(ship(&other, 0, "x").0, 404, "only the task's own worker ships its output");
    assert_eq!(ship(&mine, 0, "hello ").0, 200);
    assert_eq!(ship(&mine, 0, "hello ").0, 200, "a chunk sent again adds nothing");
    assert_eq!(ship(&mine, 6, "world\n").0, 200);
    assert_eq!(ship(&mine, 0, &"y".repeat(64 * 1024 + 1)).0, 400, "at most 64 KiB a call");
    let (s, b) = mine.api.post_raw(&format!("/workers/tasks/{uuid}/log?stream=stdin&offset=0"), "text/plain", "x");
    assert_eq!(s, 400, "{b}");
    let (s, b) = a.get(&format!("/tasks/{uuid}/log"));
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!((v["live"].clone(), v["ended"].clone()), (json!(true), json!(false)), "{v}");
    assert_eq!(v["stdout"]["data"], "hello world\n", "{v}");
    assert_eq!(v["stdout"]["next_offset"], 12, "{v}");
    let (s, b) = a.get(&format!("/tasks/{uuid}/log?stdout=6"));
    assert_eq!((s, json(&b)["stdout"]["data"].clone()), (200, json!("world\n")));
    assert_eq!(a.get(&format!("/tasks/{uuid}/log?wait=11")).0, 400, "waits are bounded");
    let (s, b) = bob.get(&format!("/tasks/{uuid}/log"));
    assert!(s == 403 || s == 404, "a user outside the group reads nothing: {s} {b}");
    // More than the kept MiB: the oldest bytes go, and a reader from 0 is told.
    let mut offset = 12;
    for _ in 0..17 {
        assert_eq!(ship(&mine, offset, &"z".repeat(64 * 1024)).0, 200);
        offset += 64 * 1024;
    }
    let v = json(&a.get(&format!("/tasks/{uuid}/log")).1);
    assert_eq!(v["stdout"]["offset"], offset - (1 << 20), "only the newest MiB is kept");
    assert_eq!(v["stdout"]["next_offset"], offset);
}
