//! Task routes: submit, batch submit, get, query filters, change, labels, batch cancel.

use crate::harness::*;
use serde_json::json;

fn query(api: &Api, body: serde_json::Value) -> serde_json::Value {
    let (s, b) = api.post("/tasks/query", &body);
    assert_eq!(s, 200, "{body}: {b}");
    json(&b)
}

fn uuids(v: &serde_json::Value) -> Vec<String> {
    v["tasks"].as_array().unwrap().iter().map(|t| t["uuid"].as_str().unwrap().to_string()).collect()
}

#[test]
fn submit_numbers_tasks_per_group_and_get_returns_them() {
    let c = Coordinator::start();
    let a = c.user("ann");
    a.post("/groups", &json!({"group_name": "lab"}));
    let mut body = task("lab", &["echo", "hi"], &["t1"], 3);
    body["labels"] = json!(["x"]);
    body["timeout"] = json!("1h 30m");
    body["task_spec"]["envs"] = json!({"A": "1"});
    let (s, b) = a.post("/tasks", &body);
    assert_eq!(s, 200, "{b}");
    let r = json(&b);
    assert_eq!(r["task_id"], 1);
    let (_, b2) = a.post("/tasks", &task("lab", &["true"], &[], 0));
    assert_eq!(json(&b2)["task_id"], 2);
    assert_eq!(json(&a.post("/tasks", &task("ann", &["true"], &[], 0)).1)["task_id"], 1, "per group");
    let (s, b) = a.get(&format!("/tasks/{}", r["uuid"].as_str().unwrap()));
    assert_eq!(s, 200);
    let info = &json(&b)["info"];
    assert_eq!(info["creator_username"], "ann");
    assert_eq!(info["group_name"], "lab");
    assert_eq!(info["state"], "Ready");
    assert_eq!(info["timeout"], 5400, "seconds in queries");
    assert_eq!(info["priority"], 3);
    assert_eq!(info["tags"], json!(["t1"]));
    assert_eq!(info["labels"], json!(["x"]));
    assert_eq!(
        info["spec"],
        json!({"args": ["echo", "hi"], "envs": {"A": "1"}, "resources": [], "terminal_output": false, "watch": null})
    );
    assert_eq!(info["result"], serde_json::Value::Null);
    assert_eq!(json(&b)["artifacts"], json!([]));
}

#[test]
fn tags_and_labels_keep_every_character_through_single_and_batch_submits() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let odd = ["a,b", "q\"uote", "back\\slash", "{brace}", " space ", "NULL", "", "ünï ✓", "x'y"];
    let mut body = task("ann", &["true"], &odd, 0);
    body["labels"] = json!(odd);
    let mut batch = vec![body.clone(), task("ann", &["true"], &[], 0)];
    batch[1]["labels"] = json!(["only a label"]);
    let (s, b) = a.post("/tasks", &body);
    assert_eq!(s, 200, "{b}");
    let single = json(&b)["uuid"].as_str().unwrap().to_string();
    let (s, b) = a.post("/tasks/submit", &json!({ "tasks": batch }));
    assert_eq!(s, 200, "{b}");
    let results = json(&b)["results"].clone();
    let mut want: Vec<&str> = odd.to_vec();
    want.sort();
    for uuid in [single.as_str(), results[0]["Ok"]["uuid"].as_str().unwrap()] {
        let info = json(&a.get(&format!("/tasks/{uuid}")).1)["info"].clone();
        let mut tags: Vec<String> = serde_json::from_value(info["tags"].clone()).unwrap();
        let mut labels: Vec<String> = serde_json::from_value(info["labels"].clone()).unwrap();
        tags.sort();
        labels.sort();
        assert_eq!(tags, want);
        assert_eq!(labels, want);
    }
    let info = json(&a.get(&format!("/tasks/{}", results[1]["Ok"]["uuid"].as_str().unwrap())).1)["info"].clone();
    assert_eq!((info["tags"].clone(), info["labels"].clone()), (json!([]), json!(["only a label"])));
}

#[test]
fn submit_checks_the_spec() {
    let c = Coordinator::start();
    let a = c.user("ann");
    for path in ["/abs", "../up", "a/../../b"] {
        let mut body = task("ann", &["true"], &[], 0);
        body["task_spec"]["resources"] = json!([{"remote_file": {"Attachment": {"key": "k"}}, "local_path": path}]);
        let (s, b) = a.post("/tasks", &body);
        assert_eq!(s, 400, "{path}: {b}");
    }
    let mut body = task("ann", &["true"], &[], 0);
    body["timeout"] = json!("10");
    assert_eq!(a.post("/tasks", &body).0, 422, "a bare number is not a duration");
    body["timeout"] = json!("0s");
    assert_eq!(a.post("/tasks", &body).0, 400);
    let mut body = task("ann", &["true"], &[], 0);
    body.as_object_mut().unwrap().remove("priority");
    assert_eq!(a.post("/tasks", &body).0, 422);
}

#[test]
fn batch_submit_answers_per_item() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let mut bad = task("ann", &["true"], &[], 0);
    bad["task_spec"]["resources"] = json!([{"remote_file": {"Attachment": {"key": "k"}}, "local_path": "/x"}]);
    let body = json!({"tasks": [task("ann", &["true"], &[], 0), task("nogroup", &["true"], &[], 0), bad, task("ann", &["true"], &[], 1)]});
    let (s, b) = a.post("/tasks/submit", &body);
    assert_eq!(s, 200, "{b}");
    let r = json(&b)["results"].as_array().unwrap().clone();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0]["Ok"]["task_id"], 1);
    assert!(r[1]["Err"]["msg"].as_str().unwrap().contains("nogroup"), "{b}");
    assert!(r[2]["Err"]["msg"].as_str().unwrap().contains("relative"), "{b}");
    assert_eq!(r[3]["Ok"]["task_id"], 2);
    assert_eq!(a.post("/tasks/submit", &json!({"tasks": []})).0, 400);
    let many: Vec<_> = (0..10_001)
        .map(|_| json!({"group_name":"ann","tags":[],"labels":[],"timeout":"1m","priority":0,"task_spec":{"args":[]}}))
        .collect();
    let (s, _) = a.post("/tasks/submit", &json!({"tasks": many}));
    assert!(s == 400 || s == 413, "{s}");
}

#[test]
fn query_filters_combine_and_compare_exit_status_as_a_number() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let b = c.user("bob");
    a.put("/groups/ann/users", &json!({"relations": {"bob": "Write"}}));
    let mut t1 = task("ann", &["true"], &["gpu"], 1);
    t1["labels"] = json!(["exp1", "run"]);
    let u1 = submit(&a, &t1);
    let u2 = submit(&a, &task("ann", &["true"], &[], 5));
    let u3 = submit(&b, &task("ann", &["true"], &[], 9));
    let w = c.worker(&a, &["gpu"], &[]);
    // Run u3 (exit 256) and u2 (exit 9), leave u1 Ready.
    let t = w.fetch().unwrap();
    assert_eq!(t["uuid"], u3.as_str());
    w.complete(&t, 256);
    let t = w.fetch().unwrap();
    assert_eq!(t["uuid"], u2.as_str());
    w.complete(&t, 9);
    let all = query(&a, json!({"count": false}));
    assert_eq!(all["count"], 3);
    assert_eq!(all["group_name"], "ann");
    assert_eq!(uuids(&query(&a, json!({"count": false, "tags": ["gpu"]}))), vec![u1.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "labels": ["run"]}))), vec![u1.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "states": ["Ready"]}))), vec![u1.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "creator_usernames": ["bob"]}))), vec![u3.clone()]);
    assert_eq!(
        uuids(&query(&a, json!({"count": false, "exit_status": ">100"}))),
        vec![u3.clone()],
        "256 > 100 numerically"
    );
    assert_eq!(uuids(&query(&a, json!({"count": false, "exit_status": "<100"}))), vec![u2.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "exit_status": "!=256"}))), vec![u2.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "priority": ">=5"}))).len(), 2);
    assert_eq!(uuids(&query(&a, json!({"count": false, "priority": "1"}))), vec![u1.clone()]);
    assert_eq!(uuids(&query(&a, json!({"count": false, "reporter_uuid": w.uuid}))).len(), 2);
    assert_eq!(query(&a, json!({"count": true, "states": ["Finished"]}))["count"], 2);
    assert_eq!(query(&a, json!({"count": true}))["tasks"], json!([]));
    // limit and offset apply to the combined active + archived result.
    let page1 = uuids(&query(&a, json!({"count": false, "limit": 2})));
    let page2 = uuids(&query(&a, json!({"count": false, "limit": 2, "offset": 2})));
    assert_eq!(page1.len(), 2);
    assert_eq!(page2.len(), 1);
    assert!(!page1.contains(&page2[0]));
    for bad in [
        json!({"count": false, "tags": []}),
        json!({"count": false, "states": []}),
        json!({"count": false, "priority": "~1"}),
        json!({"count": false, "exit_status": ">x"}),
    ] {
        assert_eq!(a.post("/tasks/query", &bad).0, 400, "{bad}");
    }
    assert_eq!(a.post("/tasks/query", &json!({})).0, 422, "count is required");
    assert_eq!(a.post("/tasks/query", &json!({"count": false, "states": ["ready"]})).0, 422, "exact case only");
}

#[test]
fn change_applies_to_ready_tasks_only() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let u = submit(&a, &task("ann", &["true"], &[], 0));
    assert_eq!(a.put(&format!("/tasks/{u}"), &json!({"timeout": null})).0, 400, "no change");
    let (s, b) = a.put(
        &format!("/tasks/{u}"),
        &json!({"priority": 7, "timeout": "2m", "tags": ["x"], "task_spec": {"args": ["echo", "new"]}}),
    );
    assert_eq!(s, 200, "{b}");
    let (_, b) = a.get(&format!("/tasks/{u}"));
    let info = &json(&b)["info"];
    assert_eq!((info["priority"].as_i64(), info["timeout"].as_i64()), (Some(7), Some(120)));
    assert_eq!(info["tags"], json!(["x"]));
    assert_eq!(info["spec"]["args"], json!(["echo", "new"]));
    let w = c.worker(&a, &["x"], &[]);
    w.fetch().unwrap();
    assert_eq!(a.put(&format!("/tasks/{u}"), &json!({"priority": 1, "timeout": null})).0, 404, "running");
}

/// SDKs send only the fields they change (pynetmito leaves `timeout` out): every field of
/// a change may be missing or null, and the task keeps what it had.
#[test]
fn change_keeps_the_fields_it_does_not_name() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let mut body = task("ann", &["echo", "old"], &["t"], 3);
    body["timeout"] = json!("90s");
    let u = submit(&a, &body);
    let info = |a: &Api| json(&a.get(&format!("/tasks/{u}")).1)["info"].clone();
    let (s, b) = a.put(&format!("/tasks/{u}"), &json!({"priority": 5}));
    assert_eq!(s, 200, "no timeout key: {b}");
    let i = info(&a);
    assert_eq!((i["priority"].as_i64(), i["timeout"].as_i64()), (Some(5), Some(90)), "{i}");
    assert_eq!((i["tags"].clone(), i["spec"]["args"].clone()), (json!(["t"]), json!(["echo", "old"])));
    for (change, field, want) in [
        (json!({"tags": ["x"]}), "tags", json!(["x"])),
        (json!({"timeout": "2m", "priority": null, "tags": null, "task_spec": null}), "timeout", json!(120)),
        (json!({"task_spec": {"args": ["echo", "new"]}}), "spec", json!({"args": ["echo", "new"]})),
    ] {
        let (s, b) = a.put(&format!("/tasks/{u}"), &change);
        assert_eq!(s, 200, "{change}: {b}");
        let i = info(&a);
        let got = if field == "spec" { json!({"args": i["spec"]["args"]}) } else { i[field].clone() };
        assert_eq!(got, want, "{change}");
        assert_eq!(i["priority"], 5, "priority kept after {change}");
    }
    let i = info(&a);
    assert_eq!((i["timeout"].as_i64(), i["tags"].clone()), (Some(120), json!(["x"])), "earlier changes kept");
    let (s, b) = a.put(&format!("/tasks/{u}"), &json!({}));
    assert_eq!(s, 400, "an empty change says so: {b}");
    assert!(msg(&b).contains("No change"), "{b}");
}

#[test]
fn labels_change_on_active_and_archived_tasks() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let u = submit(&a, &task("ann", &["true"], &[], 0));
    assert_eq!(a.put(&format!("/tasks/{u}/labels"), &json!({"labels": ["a", "b"]})).0, 200);
    a.delete(&format!("/tasks/{u}"));
    assert_eq!(a.put(&format!("/tasks/{u}/labels"), &json!({"labels": ["done"]})).0, 200);
    let (_, b) = a.get(&format!("/tasks/{u}"));
    assert_eq!(json(&b)["info"]["labels"], json!(["done"]));
    assert_eq!(a.put(&format!("/tasks/{u}/labels"), &json!({"labels": []})).0, 200, "empty is allowed");
}

#[test]
fn batch_cancel_by_filter_and_by_list() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let keep = submit(&a, &task("ann", &["true"], &["keep"], 0));
    let x1 = submit(&a, &task("ann", &["true"], &["x"], 0));
    let x2 = submit(&a, &task("ann", &["true"], &["x"], 0));
    let (s, b) = a.post("/tasks/cancel", &json!({"tags": ["x"], "states": ["Running", "Ready"]}));
    assert_eq!((s, json(&b)["cancelled_count"].as_u64()), (200, Some(2)), "{b}");
    let other = c.user("bob");
    let theirs = submit(&other, &task("bob", &["true"], &[], 0));
    let ghost = uuid_v4();
    let (s, b) = a.post("/tasks/cancel/list", &json!({"uuids": [keep, x1, theirs, ghost]}));
    assert_eq!(s, 200);
    let r = json(&b);
    assert_eq!(r["cancelled_count"], 1);
    let failed: Vec<&str> = r["failed_uuids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(failed, vec![x1.as_str(), theirs.as_str(), ghost.as_str()]);
    assert_eq!(a.post("/tasks/cancel/list", &json!({"uuids": []})).0, 400);
    let _ = x2;
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}
