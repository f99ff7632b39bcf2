//! Which worker gets which task, and when: priority, tags, groups, long-poll, replicas.

use crate::harness::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[test]
fn fetch_takes_the_highest_priority_first_then_the_oldest() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let low = submit(&a, &task("ann", &["true"], &[], 0));
    let high1 = submit(&a, &task("ann", &["true"], &[], 5));
    let high2 = submit(&a, &task("ann", &["true"], &[], 5));
    let neg = submit(&a, &task("ann", &["true"], &[], -3));
    let w = c.worker(&a, &[], &[]);
    let mut order = Vec::new();
    while let Some(t) = w.fetch() {
        order.push(t["uuid"].as_str().unwrap().to_string());
        w.complete(&t, 0);
    }
    assert_eq!(order, vec![high1, high2, low, neg]);
}

#[test]
fn tasks_go_only_to_workers_whose_tags_cover_them_and_whose_group_role_is_write() {
    let c = Coordinator::start();
    let a = c.user("ann");
    a.post("/groups", &json!({"group_name": "lab"}));
    let gpu_task = submit(&a, &task("lab", &["true"], &["gpu"], 0));
    let plain_task = submit(&a, &task("lab", &["true"], &[], 0));
    let reader = c.worker(&a, &["gpu", "big"], &["lab:read"]);
    let plain = c.worker(&a, &[], &["lab"]);
    let gpu = c.worker(&a, &["gpu", "big"], &["lab:write"]);
    assert!(reader.fetch().is_none(), "a Read role never gets tasks");
    let t = plain.fetch().expect("the untagged task");
    assert_eq!(t["uuid"], plain_task.as_str());
    assert!(plain.fetch().is_some(), "same task again until committed (redelivery)");
    plain.complete(&t, 0);
    assert!(plain.fetch().is_none(), "a worker without the gpu tag never gets the gpu task");
    let t = gpu.fetch().expect("the gpu task");
    assert_eq!(t["uuid"], gpu_task.as_str());
    // A worker of another group sees nothing.
    let b = c.user("bob");
    let other = c.worker(&b, &["gpu", "big"], &[]);
    submit(&a, &task("lab", &["true"], &[], 0));
    assert!(other.fetch().is_none());
}

#[test]
fn a_change_of_worker_tags_or_groups_takes_effect_at_the_next_fetch() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let w = c.worker(&a, &["cpu"], &[]);
    let t = submit(&a, &task("ann", &["true"], &["gpu"], 0));
    assert!(w.fetch().is_none());
    assert_eq!(a.put(&format!("/workers/{}/tags", w.uuid), &json!({"tags": ["gpu", "cpu"]})).0, 200);
    assert_eq!(w.fetch().expect("now eligible")["uuid"], t.as_str());
    // Groups too: drop the worker's Write role and it stops getting the group's tasks.
    a.post("/groups", &json!({"group_name": "lab"}));
    let w2 = c.worker(&a, &[], &["lab"]);
    assert_eq!(a.put(&format!("/workers/{}/groups", w2.uuid), &json!({"relations": {"lab": "Read"}})).0, 200);
    submit(&a, &task("lab", &["true"], &[], 0));
    assert!(w2.fetch().is_none());
    assert_eq!(a.put(&format!("/workers/{}/groups", w2.uuid), &json!({"relations": {"lab": "Write"}})).0, 200);
    assert!(w2.fetch().is_some());
}

#[test]
fn long_poll_answers_null_at_the_deadline_and_at_once_with_a_task() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let w = c.worker(&a, &[], &[]);
    let t0 = Instant::now();
    let (s, b) = w.api.get("/workers/tasks?wait=1");
    assert_eq!((s, b.as_str()), (200, "null"));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    let api = w.api.clone();
    let h = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = api.get("/workers/tasks?wait=20");
        (t0.elapsed(), r)
    });
    std::thread::sleep(Duration::from_millis(300));
    let uuid = submit(&a, &task("ann", &["true"], &[], 0));
    let (took, (s, b)) = h.join().unwrap();
    assert_eq!(s, 200);
    assert_eq!(json(&b)["uuid"], uuid.as_str());
    assert!(took < Duration::from_secs(3), "woken by the submit, not the deadline: {took:?}");
    for bad in ["0", "61", "soon", "-1"] {
        assert_eq!(w.api.get(&format!("/workers/tasks?wait={bad}")).0, 400, "wait={bad}");
    }
}

#[test]
fn a_parked_fetch_is_woken_by_a_submit_on_another_coordinator() {
    let a = Coordinator::start();
    let b = Coordinator::start_with(TestDb::from_url(&a.db.url), &[]);
    let ann_a = a.user("ann");
    let ann_b = b.as_token(&b.login("ann", "ann-pw"));
    let w = a.worker(&ann_a, &[], &[]);
    let api = w.api.clone();
    let h = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = api.get("/workers/tasks?wait=30");
        (t0.elapsed(), r)
    });
    std::thread::sleep(Duration::from_millis(500));
    let uuid = submit(&ann_b, &task("ann", &["true"], &[], 0));
    let (took, (s, body)) = h.join().unwrap();
    assert_eq!(s, 200);
    assert_eq!(json(&body)["uuid"], uuid.as_str(), "{body}");
    assert!(took < Duration::from_secs(5), "woken through NOTIFY, not the deadline: {took:?}");
}

#[test]
fn two_coordinators_eight_workers_two_thousand_tasks_each_claimed_and_archived_once() {
    let a = Coordinator::start();
    let b = Coordinator::start_with(TestDb::from_url(&a.db.url), &[]);
    let ann = a.user("ann");
    let mut workers = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 { &a } else { &b };
        let user = c.as_token(&c.login("ann", "ann-pw"));
        workers.push(c.worker(&user, &[], &[]));
    }
    for _ in 0..2 {
        let tasks: Vec<_> = (0..1000).map(|i| task("ann", &["true", &i.to_string()], &[], i % 7)).collect();
        let (s, body) = ann.post("/tasks/submit", &json!({ "tasks": tasks }));
        assert_eq!(s, 200, "{body}");
        assert!(json(&body)["results"].as_array().unwrap().iter().all(|r| r.get("Ok").is_some()));
    }
    let handles: Vec<_> = workers
        .into_iter()
        .map(|w| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while Instant::now() < deadline {
                    let (s, b) = w.api.get("/workers/tasks?wait=1");
                    assert_eq!(s, 200, "{b}");
                    let t = json(&b);
                    if t.is_null() {
                        break;
                    }
                    got.push(t["uuid"].as_str().unwrap().to_string());
                    w.complete(&t, 0);
                }
                got
            })
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for h in handles {
        for u in h.join().unwrap() {
            *seen.entry(u).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 2000, "every task claimed");
    assert!(seen.values().all(|n| *n == 1), "no task claimed twice");
    let mut db = a.db.connect();
    let archived: i64 = db.query_one("SELECT count(DISTINCT uuid) FROM archived_tasks", &[]).unwrap().get(0);
    let rows: i64 = db.query_one("SELECT count(*) FROM archived_tasks", &[]).unwrap().get(0);
    let active: i64 = db.query_one("SELECT count(*) FROM active_tasks", &[]).unwrap().get(0);
    assert_eq!((archived, rows, active), (2000, 2000, 0));
}

#[test]
fn the_claim_walks_the_ready_index_even_when_statistics_are_stale() {
    // Right after a burst of submissions the planner's statistics still describe a tiny
    // queue; the queue connections' settings must keep it on the ordered index walk (a
    // bitmap scan plus a sort of every Ready task grows with the queue).
    let c = Coordinator::start();
    let a = c.user("ann");
    let w = c.worker(&a, &[], &[]);
    let tasks: Vec<_> = (0..5000).map(|i| task("ann", &["true"], &[], i % 3)).collect();
    assert_eq!(a.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    let mut db = c.db.connect();
    db.batch_execute(mito::testing::QUEUE_SETUP).unwrap();
    db.batch_execute(&format!("PREPARE claim(uuid, float8) AS {}", *mito::testing::CLAIM)).unwrap();
    let mut tx = db.transaction().unwrap();
    let plan: Vec<String> =
        tx.query(&format!("EXPLAIN EXECUTE claim('{}', 10)", w.uuid), &[]).unwrap().iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Scan using active_tasks_group_ready"), "{plan}");
    assert!(!crate::deep_queues::sorts_the_queue(&plan) && !plan.contains("Bitmap"), "{plan}");
    tx.rollback().unwrap();
    let first = w.fetch().expect("the claim works");
    let (s, b) = a.get(&format!("/tasks/{}", first["uuid"].as_str().unwrap()));
    assert_eq!((s, json(&b)["info"]["task_id"].clone()), (200, json!(3)), "priority 2 first, then the oldest");
}

#[test]
fn one_submit_wakes_one_of_many_parked_workers_and_each_later_one_the_next() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for _ in 0..5 {
        let w = c.worker(&a, &[], &[]);
        let tx = tx.clone();
        handles.push(std::thread::spawn(move || {
            let t0 = Instant::now();
            let (s, b) = w.api.get("/workers/tasks?wait=6");
            let _ = tx.send((t0.elapsed(), s, json(&b)));
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let uuid = submit(&a, &task("ann", &["true"], &[], 0));
        let (took, s, t) = rx.recv_timeout(Duration::from_secs(3)).expect("a parked worker is woken");
        assert_eq!(s, 200);
        assert_eq!(t["uuid"], uuid.as_str(), "the worker gets the task just submitted");
        assert!(took < Duration::from_secs(5), "woken, not timed out: {took:?}");
        // Nobody else was answered: the others are still parked.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
    // The two left answer null at their deadline.
    for _ in 0..2 {
        let (took, s, t) = rx.recv_timeout(Duration::from_secs(10)).expect("the deadline answers");
        assert_eq!((s, t.is_null()), (200, true));
        assert!(took >= Duration::from_secs(5), "{took:?}");
    }
    for h in handles {
        h.join().unwrap();
    }
}
