//! Deep queues: the claim, `tasks query` and the per-state counts read a group's own rows
//! through its indexes, so their cost does not grow with other groups' queues, with tasks
//! waiting in Pending, or with the archive. Plans are checked with EXPLAIN; speed itself
//! is shown by `make bench-deep`.

use crate::harness::*;
use serde_json::json;

/// The row id of group `name`.
fn group_id(db: &mut postgres::Client, name: &str) -> i64 {
    db.query_one("SELECT id FROM groups WHERE group_name = $1", &[&name]).unwrap().get(0)
}

/// EXPLAIN ANALYZE of the claim for `worker`, as the queue connections plan it, in a
/// transaction rolled back (so nothing is claimed).
fn explain_claim(c: &Coordinator, worker: &TestWorker) -> String {
    let mut db = c.db.connect();
    db.batch_execute(mito::testing::QUEUE_SETUP).unwrap();
    db.batch_execute(&format!("PREPARE claim(uuid, float8) AS {}", *mito::testing::CLAIM)).unwrap();
    let mut tx = db.transaction().unwrap();
    let plan: Vec<String> = tx
        .query(&format!("EXPLAIN (ANALYZE, TIMING OFF) EXECUTE claim('{}', 10)", worker.uuid), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().unwrap();
    plan.join("\n")
}

/// The most rows any scan of `table` in `plan` (EXPLAIN ANALYZE text) read: the rows it
/// returned, over all its loops, plus those its filter dropped.
pub(crate) fn most_rows_read(plan: &str, table: &str) -> u64 {
    let on_table = format!(" on {table} ");
    let mut most = 0;
    let mut current: Option<u64> = None;
    for line in plan.lines() {
        if line.contains("->") || !line.starts_with(' ') {
            most = most.max(current.take().unwrap_or(0));
            if line.contains("Scan") && line.contains(&on_table) {
                let count = |key: &str| -> u64 {
                    line.split(key).nth(1).and_then(|r| r.split([' ', ')']).next()).map_or(0, |n| n.parse().unwrap())
                };
                current = Some(count("actual rows=") * count(" loops="));
            }
        } else if let (Some(n), Some(removed)) = (current.as_mut(), line.split("Rows Removed by Filter: ").nth(1)) {
            *n += removed.trim().parse::<u64>().unwrap();
        }
    }
    most.max(current.unwrap_or(0))
}

/// Whether a Sort in `plan` (EXPLAIN text) sorts rows of `active_tasks` from a scan that no
/// Limit stops, that is, a sort of the queue rather than of a head per group. Primary key
/// lookups (one row) do not count.
pub(crate) fn sorts_the_queue(plan: &str) -> bool {
    // (indentation, line) of every plan node, in order.
    let nodes: Vec<(usize, &str)> = plan
        .lines()
        .filter(|l| l.contains("->") || !l.starts_with(' '))
        .map(|l| (l.find("->").unwrap_or(0), l))
        .collect();
    nodes.iter().enumerate().any(|(i, (depth, line))| {
        if !(line.contains("Scan") && line.contains(" on active_tasks") && !line.contains("active_tasks_pkey")) {
            return false;
        }
        // Walk up through the ancestors: the nearest earlier node less indented, each time.
        let mut depth = *depth;
        for (d, ancestor) in nodes[..i].iter().rev() {
            if *d < depth {
                depth = *d;
                if ancestor.contains("Limit") {
                    return false;
                }
                if ancestor.contains("Sort") {
                    return true;
                }
            }
        }
        false
    })
}

#[test]
fn a_worker_of_a_low_priority_group_claims_without_walking_past_other_groups_tasks() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let b = c.user("bob");
    let tasks: Vec<_> = (0..3000).map(|_| task("ann", &["true"], &[], 5)).collect();
    assert_eq!(a.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    let mine = submit(&b, &task("bob", &["true"], &[], 0));
    let w = c.worker(&b, &[], &[]);
    let plan = explain_claim(&c, &w);
    eprintln!("claim behind another group's 3000 tasks:\n{plan}");
    assert!(plan.contains("Index Scan using active_tasks_group_ready"), "{plan}");
    assert!(!plan.contains("Bitmap") && !sorts_the_queue(&plan), "{plan}");
    assert!(!plan.contains("JIT"), "the claim is never compiled: {plan}");
    assert!(most_rows_read(&plan, "active_tasks") < 10, "the claim read other groups' rows:\n{plan}");
    assert_eq!(w.fetch().expect("bob's task")["uuid"], mine.as_str());
}

#[test]
fn the_claim_does_not_walk_past_tasks_waiting_in_pending() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let blocker = submit(&a, &task("ann", &["true"], &["elsewhere"], 9));
    let mut waiting = task("ann", &["true"], &[], 5);
    waiting["after"] = json!([blocker]);
    let tasks: Vec<_> = (0..500).map(|_| waiting.clone()).collect();
    let (s, body) = a.post("/tasks/submit", &json!({ "tasks": tasks }));
    assert_eq!(s, 200, "{body}");
    let ready = submit(&a, &task("ann", &["true"], &[], 0));
    let w = c.worker(&a, &[], &[]);
    let plan = explain_claim(&c, &w);
    eprintln!("claim behind 500 Pending tasks of higher priority:\n{plan}");
    assert!(plan.contains("Index Scan using active_tasks_group_ready"), "{plan}");
    assert!(most_rows_read(&plan, "active_tasks") < 10, "the claim read the Pending rows:\n{plan}");
    assert_eq!(w.fetch().expect("the Ready task")["uuid"], ready.as_str());
}

#[test]
fn a_worker_of_several_groups_takes_the_best_task_across_them_with_tags_and_caps_applied() {
    let c = Coordinator::start();
    let a = c.user("ann");
    for g in ["hi", "mid", "lo"] {
        assert_eq!(a.post("/groups", &json!({"group_name": g})).0, 200);
    }
    // The best task of "hi" needs a tag this worker lacks, the next is in a capped array
    // that another worker holds at its cap; both must be passed over for the other groups.
    submit(&a, &task("hi", &["true"], &["gpu"], 9));
    let array = json!({"tasks": [task("hi", &["true"], &[], 8)], "array": {"start": 0, "end": 9, "max_running": 1}});
    assert_eq!(a.post("/tasks/submit", &array).0, 200);
    let holder = c.worker(&a, &[], &["hi"]);
    assert_eq!(holder.fetch().expect("the array's first task")["spec"]["envs"]["MITO_ARRAY_INDEX"], "0");
    let lo_old = submit(&a, &task("lo", &["true"], &[], 3));
    let mid = submit(&a, &task("mid", &["true"], &[], 3));
    let lo_best = submit(&a, &task("lo", &["true"], &[], 4));
    let hi_low = submit(&a, &task("hi", &["true"], &[], 1));
    let w = c.worker(&a, &[], &["hi", "mid", "lo"]);
    let mut order = Vec::new();
    while let Some(t) = w.fetch() {
        order.push(t["uuid"].as_str().unwrap().to_string());
        w.complete(&t, 0);
    }
    // Priority first, then age across groups (lo_old was submitted before mid).
    assert_eq!(order, vec![lo_best, lo_old, mid, hi_low], "the worker took them in claim order");
}

/// EXPLAIN ANALYZE of a page of 10 of `tasks query` with `filter` in the group with row id
/// `group`, under the settings it runs with.
fn explain_page(db: &mut postgres::Client, group: i64, filter: &mito::api::TaskFilter) -> String {
    let (setup, sql, params) = mito::testing::tasks_page_statement(group, filter, 10, 0);
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
    let mut tx = db.transaction().unwrap();
    tx.batch_execute(setup).unwrap();
    let plan: Vec<String> =
        tx.query(&format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}"), &params).unwrap().iter().map(|r| r.get(0)).collect();
    tx.rollback().unwrap();
    plan.join("\n")
}

#[test]
fn tasks_query_reads_a_page_of_a_deep_group_in_index_order_and_stops_at_its_limit() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let b = c.user("bob");
    for (api, group) in [(&a, "ann"), (&b, "bob")] {
        let tasks: Vec<_> = (0..3000).map(|i| task(group, &["true"], &[], i % 3)).collect();
        assert_eq!(api.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    }
    // Some of ann's tasks archived, so both halves of the union have rows.
    let (s, body) = a.post("/tasks/cancel", &json!({"group_name": "ann", "priority": "2"}));
    assert_eq!(s, 200, "{body}");
    let mut db = c.db.connect();
    db.batch_execute("ANALYZE active_tasks; ANALYZE archived_tasks").unwrap();
    let ann = group_id(&mut db, "ann");
    let filter: mito::api::TaskFilter =
        serde_json::from_value(json!({"states": ["Ready", "Cancelled"], "priority": ">=0"})).unwrap();
    let plan = explain_page(&mut db, ann, &filter);
    eprintln!("a page of 10 from a group of 3000:\n{plan}");
    // Each half walks its table in id order (the group's index, or at this size perhaps
    // the primary key) and stops after the page: no node reads the group's thousands of
    // rows, and only the page's rows are sorted.
    assert!(!plan.contains("Seq Scan on active_tasks") && !plan.contains("Seq Scan on archived_tasks"), "{plan}");
    assert!(!plan.contains("Bitmap"), "{plan}");
    assert!(most_rows_read(&plan, "active_tasks") <= 10, "{plan}");
    assert!(most_rows_read(&plan, "archived_tasks") <= 10, "{plan}");
    // One state the archive does not hold: one probe of its (group, state, id) index, not
    // a pass over the group's archived tasks.
    let ready: mito::api::TaskFilter = serde_json::from_value(json!({"states": ["Ready"]})).unwrap();
    let plan = explain_page(&mut db, ann, &ready);
    assert_eq!(most_rows_read(&plan, "archived_tasks"), 0, "{plan}");
    // And the page is the one a sort of everything would give: active first, by id.
    let (s, body) = a.post("/tasks/query", &json!({"group_name": "ann", "count": false, "limit": 10, "offset": 1995}));
    assert_eq!(s, 200, "{body}");
    let got: Vec<(String, i64)> = json(&body)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["state"].as_str().unwrap().to_string(), t["task_id"].as_i64().unwrap()))
        .collect();
    let want: Vec<(String, i64)> = db
        .query(
            "SELECT s, task_id FROM (SELECT 'Ready' AS s, task_id, true AS a, id FROM active_tasks WHERE group_id = $1
                                     UNION ALL SELECT 'Cancelled', task_id, false, id FROM archived_tasks WHERE group_id = $1) x
             ORDER BY a DESC, id LIMIT 10 OFFSET 1995",
            &[&ann],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_per_state_counts_of_a_group_read_its_index_not_the_other_groups_rows() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let b = c.user("bob");
    let tasks: Vec<_> = (0..5000).map(|_| task("bob", &["true"], &[], 0)).collect();
    assert_eq!(b.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    let tasks: Vec<_> = (0..50).map(|_| task("ann", &["true"], &[], 0)).collect();
    assert_eq!(a.post("/tasks/submit", &json!({ "tasks": tasks })).0, 200);
    let w = c.worker(&a, &[], &[]);
    w.fetch().expect("one of ann's tasks");
    let mut db = c.db.connect();
    // The reaper vacuums the queue as it churns; here it has only had inserts.
    db.batch_execute("VACUUM ANALYZE active_tasks").unwrap();
    let ann = group_id(&mut db, "ann");
    let plan: Vec<String> = db
        .query(&format!("EXPLAIN {}", mito::testing::STATE_COUNTS), &[&ann, &60i32])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Only Scan using active_tasks_group on active_tasks"), "{plan}");
    let (s, body) = a.get("/groups/ann/stats");
    assert_eq!(s, 200, "{body}");
    let v = json(&body);
    assert_eq!((v["states"]["Ready"].clone(), v["states"]["Running"].clone()), (json!(49), json!(1)), "{v}");
}
