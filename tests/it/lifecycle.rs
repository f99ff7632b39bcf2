//! Task and worker lifecycles: commit, downstream tasks, cancellation of running tasks,
//! heartbeats and the reaper, shutdowns, lifetimes, restarts.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn state_of(api: &Api, uuid: &str) -> serde_json::Value {
    let (s, b) = api.get(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "{b}");
    json(&b)["info"].clone()
}

#[test]
fn a_committed_task_is_archived_with_its_result_and_reporter() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["false"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().unwrap();
    assert_eq!(state_of(&a, &uuid)["state"], "Running");
    let id = t["id"].as_i64().unwrap();
    let (s, b) = w.report(id, json!({"Commit": {"exit_status": 256, "msg": null}}));
    assert_eq!(s, 400, "commit before Finish/Cancel: {b}");
    w.complete(&t, 256);
    let info = state_of(&a, &uuid);
    assert_eq!(info["state"], "Finished");
    assert_eq!(info["result"], json!({"exit_status": 256, "msg": null}));
    assert_eq!(info["reporter_uuid"], w.uuid.as_str());
    assert_eq!(w.report(id, json!("Finish")).0, 404, "no longer the worker's task");
    let (_, b) = a.get(&format!("/workers/{}", w.uuid));
    assert_eq!(json(&b)["info"]["assigned_task_id"], serde_json::Value::Null);
}

#[test]
fn a_downstream_task_becomes_ready_when_its_upstream_commits() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let up = submit(&a, &task("ann", &["true"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().unwrap();
    let id = t["id"].as_i64().unwrap();
    let child = task("ann", &["echo", "child"], &[], 0);
    assert_eq!(w.report(id, json!({"Submit": child})).0, 400, "only after Finish or Cancel");
    assert_eq!(w.report(id, json!("Finish")).0, 200);
    let (s, b) = w.report(id, json!({"Submit": task("other", &["x"], &[], 0)}));
    assert_eq!(s, 400, "group mismatch: {b}");
    assert!(msg(&b).contains("Group name mismatch"), "{b}");
    assert_eq!(w.report(id, json!({"Submit": child})).0, 200);
    let down = state_of(&a, &up)["downstream_task_uuid"].as_str().unwrap().to_string();
    let d = state_of(&a, &down);
    assert_eq!(d["state"], "Pending");
    assert_eq!(d["upstream_task_uuid"], up.as_str());
    assert!(w.fetch().is_none(), "pending tasks are not handed out");
    assert_eq!(w.report(id, json!({"Commit": {"exit_status": 0, "msg": null}})).0, 200);
    let t2 = w.fetch().expect("the downstream task is ready now");
    assert_eq!(t2["uuid"], down.as_str());
    assert_eq!(t2["upstream_task_uuid"], up.as_str());
    assert_eq!(t2["spec"]["args"], json!(["echo", "child"]));
}

#[test]
fn cancelling_a_running_task_reaches_its_worker() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["sleep", "100"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().unwrap();
    let hb = |w: &TestWorker| json(&w.api.post("/workers/heartbeat?cancellations=true", &json!(null)).1);
    assert_eq!(hb(&w), json!({"cancel": []}));
    let t0 = Instant::now();
    assert_eq!(a.delete(&format!("/tasks/{uuid}")).0, 200);
    assert_eq!(hb(&w), json!({"cancel": [uuid]}), "the next heartbeat says so");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Plain heartbeats (mitosis workers) are undisturbed.
    assert_eq!(w.api.post("/workers/heartbeat", &json!(null)), (200, "null".into()));
    let id = t["id"].as_i64().unwrap();
    assert_eq!(w.report(id, json!("Cancel")).0, 200);
    assert_eq!(w.report(id, json!({"Commit": {"exit_status": 15, "msg": "UserCancellation"}})).0, 200);
    let info = state_of(&a, &uuid);
    assert_eq!(info["state"], "Cancelled");
    assert_eq!(info["result"]["msg"], "UserCancellation");
}

#[test]
fn a_worker_that_ignores_the_cancellation_still_ends_the_task_cancelled() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().unwrap();
    assert_eq!(a.delete(&format!("/tasks/{uuid}")).0, 200);
    w.complete(&t, 0);
    let info = state_of(&a, &uuid);
    assert_eq!((info["state"].as_str(), info["result"]["msg"].as_str()), (Some("Cancelled"), Some("UserCancellation")));
}

#[test]
fn ready_and_pending_tasks_are_cancelled_at_once() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    assert_eq!(a.delete(&format!("/tasks/{uuid}")).0, 200);
    let info = state_of(&a, &uuid);
    assert_eq!(info["state"], "Cancelled");
    assert_eq!(info["result"], json!({"exit_status": 0, "msg": "UserCancellation"}));
    assert_eq!(a.delete(&format!("/tasks/{uuid}")).0, 404, "archived tasks cannot be cancelled");
    let w = c.worker(&a, &[], &[]);
    assert!(w.fetch().is_none());
}

#[test]
fn a_worker_that_stops_heartbeating_is_removed_and_its_task_requeued() {
    let c = Coordinator::start_with(TestDb::new(), &["--heartbeat-timeout", "2s"]);
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let silent = c.worker(&a, &[], &[]);
    assert_eq!(silent.fetch().unwrap()["uuid"], uuid.as_str());
    let alive = c.worker(&a, &[], &[]);
    let t0 = Instant::now();
    let mut requeued = false;
    while t0.elapsed() < Duration::from_secs(15) {
        alive.api.post("/workers/heartbeat", &json!(null));
        if state_of(&a, &uuid)["state"] == "Ready" {
            requeued = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(requeued, "the task went back to Ready");
    assert!(t0.elapsed() >= Duration::from_millis(1500), "not before the timeout: {:?}", t0.elapsed());
    assert_eq!(silent.api.get("/workers/tasks").0, 401, "the silent worker is gone");
    assert_eq!(alive.fetch().expect("another worker runs it")["uuid"], uuid.as_str());
}

#[test]
fn unregistering_requeues_the_task() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    w.fetch().unwrap();
    assert_eq!(w.api.delete("/workers"), (200, "null".into()));
    assert_eq!(state_of(&a, &uuid)["state"], "Ready");
    assert_eq!(w.api.post("/workers/heartbeat", &json!(null)).0, 401);
}

#[test]
fn graceful_shutdown_waits_for_the_commit_and_force_does_not() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let idle = c.worker(&a, &[], &[]);
    assert_eq!(a.delete(&format!("/workers/{}", idle.uuid)).0, 200);
    assert_eq!(idle.api.get("/workers/tasks").0, 401, "an idle worker goes at once");

    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let busy = c.worker(&a, &[], &[]);
    let t = busy.fetch().unwrap();
    assert_eq!(a.delete(&format!("/workers/{}?op=graceful", busy.uuid)).0, 200);
    let (_, b) = a.get(&format!("/workers/{}", busy.uuid));
    assert_eq!(json(&b)["info"]["state"], "GracefulShutdown");
    busy.complete(&t, 0);
    assert_eq!(busy.api.get("/workers/tasks").0, 401, "gone after its commit");
    assert_eq!(state_of(&a, &uuid)["state"], "Finished");

    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let forced = c.worker(&a, &[], &[]);
    forced.fetch().unwrap();
    assert_eq!(a.delete(&format!("/workers/{}?op=Force", forced.uuid)).0, 200);
    assert_eq!(forced.api.get("/workers/tasks").0, 401);
    assert_eq!(state_of(&a, &uuid)["state"], "Ready", "a forced worker's task runs again");
    let admin_victim = c.worker(&a, &[], &[]);
    assert_eq!(c.admin().delete(&format!("/admin/workers/{}?op=force", admin_victim.uuid)).0, 200);
    assert_eq!(admin_victim.api.get("/workers/tasks").0, 401);
    assert_eq!(c.admin().delete(&format!("/admin/workers/{}", admin_victim.uuid)).0, 404);
    assert_eq!(a.delete(&format!("/workers/{}?op=sideways", forced.uuid)).0, 400);
}

#[test]
fn a_worker_token_dies_with_its_lifetime() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let (s, b) = a.post("/workers", &json!({"tags": [], "labels": [], "groups": [], "lifetime": "1s"}));
    assert_eq!(s, 200, "{b}");
    let w = c.as_token(json(&b)["token"].as_str().unwrap());
    assert_eq!(w.post("/workers/heartbeat", &json!(null)).0, 200);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(w.post("/workers/heartbeat", &json!(null)).0, 401);
    let (s, _) = a.post("/workers", &json!({"tags": [], "labels": [], "groups": [], "lifetime": "soon"}));
    assert_eq!(s, 422);
}

#[test]
fn a_coordinator_restart_loses_nothing() {
    let mut c = Coordinator::start();
    let a = c.user("ann");
    let running = submit(&a, &task("ann", &["true"], &[], 0));
    let waiting = submit(&a, &task("ann", &["true"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let t = w.fetch().unwrap();
    assert_eq!(t["uuid"], running.as_str());
    c.signal(libc::SIGTERM);
    let c2 = Coordinator::start_with(TestDb::from_url(&c.db.url), &[]);
    let w2 = TestWorker { uuid: w.uuid.clone(), api: Api { base: c2.url.clone(), token: w.api.token.clone() } };
    w2.complete(&t, 0);
    let a2 = c2.as_token(&c2.login("ann", "ann-pw"));
    assert_eq!(state_of(&a2, &running)["state"], "Finished");
    assert_eq!(w2.fetch().unwrap()["uuid"], waiting.as_str());
}

#[test]
fn a_task_running_past_its_timeout_and_grace_has_its_worker_removed() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let mut body = task("ann", &["sleep", "1000"], &[], 0);
    body["timeout"] = json!("1s");
    let uuid = submit(&a, &body);
    let w = c.worker(&a, &[], &[]);
    w.fetch().unwrap();
    // Pretend it started 62 s ago: past its 1 s timeout and the 60 s grace.
    c.db.connect().execute("UPDATE active_tasks SET updated_at = now() - interval '62 seconds'", &[]).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) && state_of(&a, &uuid)["state"] != "Ready" {
        w.api.post("/workers/heartbeat", &json!(null));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(state_of(&a, &uuid)["state"], "Ready");
    assert_eq!(w.api.get("/workers/tasks").0, 401);
}

#[test]
fn the_reaper_vacuums_the_queue_table_after_churn() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let tasks: Vec<_> = (0..1500).map(|_| task("ann", &["true"], &[], 0)).collect();
    assert_eq!(a.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    assert_eq!(a.post("/tasks/cancel", &json!({})).0, 200);
    let mut db = c.db.connect();
    let t0 = Instant::now();
    let mut vacuumed = false;
    while t0.elapsed() < Duration::from_secs(30) && !vacuumed {
        std::thread::sleep(Duration::from_millis(500));
        vacuumed = db
            .query_one("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'active_tasks'", &[])
            .unwrap()
            .get(0);
    }
    assert!(vacuumed, "1,500 dead rows in active_tasks and no VACUUM within 30 s");
}
