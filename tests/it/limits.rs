//! Bounds on the work one request may ask for, and typed tokens.

use crate::harness::*;
use serde_json::json;

#[test]
fn delete_and_download_lists_are_bounded() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let keys: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let (s, b) = alice.post("/groups/alice/delete/attachments/list", &json!({"keys": keys}));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("1001 items") && msg(&b).contains("at most 1000"), "{b}");
    let (s, b) = alice.post("/groups/alice/download/attachments/list", &json!({"keys": keys}));
    assert_eq!(s, 400, "{b}");
    let uuids: Vec<String> = (0..1001).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for path in ["/tasks/delete/artifacts/list", "/tasks/download/artifacts/list"] {
        let (s, b) = alice.post(path, &json!({"uuids": uuids, "content_type": "result"}));
        assert_eq!(s, 400, "{path}: {b}");
        assert!(msg(&b).contains("at most 1000"), "{b}");
    }
    // At the bound the list is served (none of these exist).
    let (s, b) =
        alice.post("/tasks/delete/artifacts/list", &json!({"uuids": &uuids[..1000], "content_type": "result"}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["failed_uuids"].as_array().unwrap().len(), 1000);
    let (s, b) = alice.post("/groups/alice/delete/attachments", &json!({"key": "", "limit": 1001}));
    assert_eq!(s, 400, "a delete by filter pages 1000 at most: {b}");
}

#[test]
fn task_queries_have_a_default_and_a_maximum_limit() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let tasks: Vec<_> = (0..1001).map(|_| task("alice", &["true"], &[], 0)).collect();
    let (s, b) = alice.post("/tasks/submit", &json!({"tasks": tasks}));
    assert_eq!(s, 200, "{b}");
    let (s, b) = alice.post("/tasks/query", &json!({"group_name": "alice", "count": false}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(json(&b)["tasks"].as_array().unwrap().len(), 1000, "the default page");
    let (s, b) = alice.post("/tasks/query", &json!({"group_name": "alice", "count": false, "offset": 1000}));
    assert_eq!((s, json(&b)["tasks"].as_array().unwrap().len()), (200, 1), "the next page");
    let (s, b) = alice.post("/tasks/query", &json!({"group_name": "alice", "count": false, "limit": 10_001}));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("10000") && msg(&b).contains("offset"), "{b}");
    let (s, b) = alice.post("/tasks/query", &json!({"group_name": "alice", "count": true}));
    assert_eq!((s, json(&b)["count"].as_u64()), (200, Some(1001)), "counting is not paged: {b}");
    let (s, b) = alice.post("/groups/alice/attachments/query", &json!({"count": false, "limit": 10_001}));
    assert_eq!(s, 400, "attachment queries are capped the same way: {b}");
}

#[test]
fn a_task_spec_is_at_most_one_mebibyte() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let spec = |n: usize| {
        json!({"group_name": "alice", "tags": [], "labels": [], "timeout": "10m", "priority": 0,
               "task_spec": {"args": ["true"], "envs": {"BIG": "x".repeat(n)}}})
    };
    let (s, b) = alice.post("/tasks", &spec(1 << 20));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("1 MiB") && msg(&b).contains("attachment"), "{b}");
    let (s, b) = alice.post("/tasks/submit", &json!({"tasks": [spec(1 << 20), spec(10)]}));
    assert_eq!(s, 200, "{b}");
    let results = json(&b)["results"].clone();
    assert!(results[0].get("Err").is_some() && results[1].get("Ok").is_some(), "{results}");
    assert_eq!(alice.post("/tasks", &spec(1000 * 1000)).0, 200, "just under the bound");
    // A worker's downstream task is bounded the same way.
    let w = c.worker(&alice, &[], &[]);
    let t = w.fetch().unwrap();
    let id = t["id"].as_i64().unwrap();
    assert_eq!(w.report(id, json!("Finish")).0, 200);
    let (s, b) = w.report(id, json!({"Submit": spec(1 << 20)}));
    assert_eq!(s, 400, "{b}");
}

#[test]
fn a_user_named_like_a_worker_cannot_act_as_it() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = c.worker(&alice, &[], &[]);
    // A user named like the worker (made directly: such names are refused now, below).
    let (s, b) = c.admin().post(
        "/admin/users",
        &json!({"username": "twin", "md5_password": mito::api::md5_password("pw"), "admin": false}),
    );
    assert_eq!(s, 200, "{b}");
    c.db.connect().execute("UPDATE users SET username = $1 WHERE username = 'twin'", &[&w.uuid]).unwrap();
    let twin = c.as_token(&c.login(&w.uuid, "pw"));
    assert_eq!(twin.get("/users/groups").0, 200, "the token is a good user token");
    assert_eq!(twin.get("/workers/tasks").0, 401, "but it is not the worker's");
    assert_eq!(twin.post("/workers/heartbeat", &serde_json::Value::Null).0, 401);
    assert_eq!(twin.delete("/workers").0, 401);
    assert_eq!(w.api.get("/workers/tasks").0, 200, "the worker's own token works");
    assert_eq!(w.api.get("/users/groups").0, 401, "and is no user's");
    let body = json!({"username": uuid::Uuid::new_v4().to_string(), "md5_password": mito::api::md5_password("pw"), "admin": false});
    let (s, b) = c.admin().post("/admin/users", &body);
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("UUID"), "{b}");
}
