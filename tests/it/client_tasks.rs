//! `mito client tasks ...` and `workers ...` against a real coordinator; a test worker (the
//! harness's, speaking the worker API) runs the tasks where a result is needed.

use crate::client::{client, err, fails, ok, ok_json, out};
use crate::harness::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A coordinator, user `ann` (API handle) and a client home logged in as ann, keeping the
/// API handle's token valid (--retain).
fn setup() -> (Coordinator, Api, TempDir) {
    let c = Coordinator::start();
    let ann = c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    (c, ann, home)
}

fn submitted_uuid(text: &str) -> String {
    // "Task submitted with id N in group G and a global uuid U"
    text.lines()
        .find(|l| l.starts_with("Task submitted"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no submission line in {text}"))
        .to_string()
}

#[test]
fn submit_get_query_change_label_and_cancel() {
    let (c, _ann, home) = setup();
    ok(&client(&c, &home, &["groups", "create", "lab"]));
    let o = ok(&client(
        &c,
        &home,
        &[
            "tasks",
            "submit",
            "-g",
            "lab",
            "-t",
            "t1",
            "-l",
            "x,y",
            "--timeout",
            "1h",
            "-p",
            "3",
            "-e",
            "A=1,B=2",
            "--terminal",
            "-r",
            "attachment=data/in.txt:in.txt",
            "--",
            "echo",
            "Hello, Mitosis!",
        ],
    ));
    assert!(o.starts_with("Task submitted with id 1 in group lab and a global uuid "), "{o}");
    let u = submitted_uuid(&o);

    let t = ok_json(&client(&c, &home, &["--json", "tasks", "get", &u]));
    let info = &t["info"];
    assert_eq!(info["spec"]["args"], serde_json::json!(["echo", "Hello, Mitosis!"]));
    assert_eq!(info["spec"]["envs"], serde_json::json!({"A": "1", "B": "2"}));
    assert_eq!(info["spec"]["resources"][0]["remote_file"]["Attachment"]["key"], "data/in.txt");
    assert_eq!(info["spec"]["terminal_output"], true);
    assert_eq!(info["tags"], serde_json::json!(["t1"]));
    assert_eq!(info["timeout"], 3600);
    assert_eq!(info["priority"], 3);
    let text = ok(&client(&c, &home, &["tasks", "get", &u]));
    assert!(
        text.contains("State: Ready")
            && text.contains("Command: echo 'Hello, Mitosis!'")
            && text.contains("Artifacts: None"),
        "{text}"
    );

    let q = ok_json(&client(&c, &home, &["tasks", "query", "-g", "lab", "-l", "x", "--json"]));
    assert_eq!(q["tasks"][0]["uuid"], u.as_str());
    let text = ok(&client(&c, &home, &["tasks", "query", "-g", "lab", "-s", "Ready,pending"]));
    assert!(text.starts_with("Found 1 tasks in group lab") && text.contains(&u), "{text}");
    let q = ok_json(&client(&c, &home, &["--json", "tasks", "query", "-g", "lab", "-s", "running", "--count"]));
    assert_eq!(q["count"], 0);
    let text = ok(&client(&c, &home, &["tasks", "query", "-g", "lab", "-v"]));
    assert!(text.contains("Created by user ann as the #1 task in group lab"), "{text}");

    // A change keeps what it does not mention (the resources survive a new command).
    ok(&client(&c, &home, &["tasks", "change", &u, "-p", "5", "--", "echo", "changed"]));
    let info = ok_json(&client(&c, &home, &["--json", "tasks", "get", &u]))["info"].clone();
    assert_eq!(info["priority"], 5);
    assert_eq!(info["spec"]["args"], serde_json::json!(["echo", "changed"]));
    assert_eq!(info["spec"]["resources"].as_array().unwrap().len(), 1);
    assert_eq!(info["spec"]["envs"]["A"], "1");
    fails(&client(&c, &home, &["tasks", "change", &u]), 2);

    ok(&client(&c, &home, &["tasks", "update-labels", &u, "a", "b"]));
    let info = ok_json(&client(&c, &home, &["--json", "tasks", "get", &u]))["info"].clone();
    assert_eq!(info["labels"], serde_json::json!(["a", "b"]));

    assert!(ok(&client(&c, &home, &["tasks", "cancel", &u])).contains("cancelled"));
    let info = ok_json(&client(&c, &home, &["--json", "tasks", "get", &u]))["info"].clone();
    assert_eq!(info["state"], "Cancelled");
    let e = fails(&client(&c, &home, &["tasks", "cancel", &u]), 1);
    assert!(e.contains("404"), "{e}");
    let e = fails(&client(&c, &home, &["tasks", "get", "123e4567-e89b-12d3-a456-426614174000"]), 1);
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn batch_submit_and_cancel() {
    let (c, _ann, home) = setup();
    let file = home.path().join("tasks.json");
    std::fs::write(
        &file,
        serde_json::json!([
            {"group_name": "ann", "tags": [], "labels": ["batch"], "timeout": "10m", "priority": 0, "task_spec": {"args": ["true"]}},
            {"group_name": "nosuchgroup", "tags": [], "labels": [], "timeout": "10m", "priority": 0, "task_spec": {"args": ["true"]}},
            {"group_name": "ann", "tags": [], "labels": ["batch"], "timeout": "10m", "priority": 0, "task_spec": {"args": ["true"]}}
        ])
        .to_string(),
    )
    .unwrap();
    let o = client(&c, &home, &["tasks", "submit-many", "-f", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "one item failed: {}", out(&o));
    assert!(out(&o).contains("Batch submission completed: 2 succeeded, 1 failed"), "{}", out(&o));
    let q = ok_json(&client(&c, &home, &["--json", "tasks", "query", "-l", "batch"]));
    let uuids: Vec<String> =
        q["tasks"].as_array().unwrap().iter().map(|t| t["uuid"].as_str().unwrap().to_string()).collect();
    assert_eq!(uuids.len(), 2);
    let r = ok_json(&client(&c, &home, &["--json", "tasks", "cancel-list", &uuids.join(",")]));
    assert_eq!(r["cancelled_count"], 2);
    for _ in 0..3 {
        ok(&client(&c, &home, &["tasks", "submit", "-l", "many", "--", "true"]));
    }
    let text = ok(&client(&c, &home, &["tasks", "cancel-many", "-l", "many"]));
    assert!(text.contains("Cancelled 3 tasks in group ann"), "{text}");
    let r = ok_json(&client(&c, &home, &["--json", "tasks", "cancel-many", "-l", "many"]));
    assert_eq!(r["cancelled_count"], 0);
}

#[test]
fn wait_exit_status_says_whether_tasks_succeeded() {
    let (c, ann, home) = setup();
    let w = c.worker(&ann, &[], &[]);
    let good = submitted_uuid(&ok(&client(&c, &home, &["tasks", "submit", "--", "true"])));
    let t = w.fetch().expect("a task");
    w.complete(&t, 0);
    let text = ok(&client(&c, &home, &["tasks", "wait", &good]));
    assert!(text.contains(&format!("Task {good} succeeded")), "{text}");
    let v = ok_json(&client(&c, &home, &["--json", "tasks", "wait", &good]));
    assert_eq!(v["succeeded"], true);
    assert_eq!(v["tasks"][0]["uuid"], good.as_str());

    let bad = submitted_uuid(&ok(&client(&c, &home, &["tasks", "submit", "--", "false"])));
    let t = w.fetch().expect("a task");
    w.complete(&t, 256);
    let o = client(&c, &home, &["tasks", "wait", &good, &bad]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(out(&o).contains("exit code 1"), "{}", out(&o));

    // Nobody runs this one: the wait runs out of time.
    let idle = submitted_uuid(&ok(&client(&c, &home, &["tasks", "submit", "--", "true"])));
    let start = Instant::now();
    let o = client(&c, &home, &["tasks", "wait", &idle, "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(124), "{}", err(&o));
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(err(&o).contains("timed out"), "{}", err(&o));
    // A cancelled task did not succeed.
    ok(&client(&c, &home, &["tasks", "cancel", &idle]));
    let o = client(&c, &home, &["tasks", "wait", &idle]);
    assert_eq!(o.status.code(), Some(3));
    assert!(out(&o).contains("UserCancellation"), "{}", out(&o));
}

#[test]
fn submit_wait_returns_when_the_task_is_done() {
    let (c, ann, home) = setup();
    let w = c.worker(&ann, &[], &[]);
    let child = mito(home.path())
        .args(["client", "-c", &c.url, "tasks", "submit", "--wait", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let task = loop {
        if let Some(t) = w.fetch() {
            break t;
        }
        assert!(Instant::now() < deadline, "the task never arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    w.complete(&task, 0);
    let o = child.wait_with_output().unwrap();
    let text = ok(&o);
    assert!(text.contains("Task submitted") && text.contains("succeeded"), "{text}");
}

#[test]
fn workers_can_be_found_changed_and_stopped() {
    let (c, ann, home) = setup();
    ok(&client(&c, &home, &["groups", "create", "lab"]));
    let w = c.worker(&ann, &["gpu"], &[]);
    let q = ok_json(&client(&c, &home, &["--json", "workers", "query"]));
    assert_eq!(q["count"], 1);
    assert_eq!(q["workers"][0]["worker_id"], w.uuid.as_str());
    let text = ok(&client(&c, &home, &["workers", "query", "-t", "gpu"]));
    assert!(text.starts_with("Found 1 workers in group ann") && text.contains(&w.uuid), "{text}");
    let q = ok_json(&client(&c, &home, &["--json", "workers", "query", "-t", "cpu", "--count"]));
    assert_eq!(q["count"], 0);

    ok(&client(&c, &home, &["workers", "update-tags", &w.uuid, "a", "b"]));
    ok(&client(&c, &home, &["workers", "update-labels", &w.uuid, "rack1"]));
    ok(&client(&c, &home, &["workers", "update-roles", &w.uuid, "lab:write"]));
    let g = ok_json(&client(&c, &home, &["--json", "workers", "get", &w.uuid]));
    assert_eq!(g["info"]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(g["info"]["labels"], serde_json::json!(["rack1"]));
    assert_eq!(g["groups"]["lab"], "Write");
    let text = ok(&client(&c, &home, &["workers", "get", &w.uuid]));
    assert!(text.contains("State: Normal") && text.contains("lab (Write)"), "{text}");
    ok(&client(&c, &home, &["workers", "remove-roles", &w.uuid, "lab"]));
    let g = ok_json(&client(&c, &home, &["--json", "workers", "get", &w.uuid]));
    assert!(g["groups"].get("lab").is_none(), "{g}");

    ok(&client(&c, &home, &["workers", "cancel", &w.uuid]));
    let e = fails(&client(&c, &home, &["workers", "get", &w.uuid]), 1);
    assert!(e.contains("404"), "{e}");

    let w1 = c.worker(&ann, &["x"], &[]);
    let w2 = c.worker(&ann, &["y"], &[]);
    let r = ok_json(&client(&c, &home, &["--json", "workers", "cancel-list", &w1.uuid, "-f"]));
    assert_eq!(r["shutdown_count"], 1);
    let text = ok(&client(&c, &home, &["workers", "cancel-many", "-t", "y", "--force"]));
    assert!(text.contains("Shutdown 1 workers in group ann"), "{text}");
    fails(&client(&c, &home, &["workers", "get", &w2.uuid]), 1);

    // The admin can stop anyone's worker.
    let w3 = c.worker(&ann, &[], &[]);
    let admin = crate::client::admin_home(&c);
    ok(&client(&c, &admin, &["admin", "workers", "cancel", &w3.uuid, "--force"]));
    fails(&client(&c, &home, &["workers", "get", &w3.uuid]), 1);
}
