//! The permission matrix of every route that names a group, a task or a worker: an
//! outsider, a Read, a Write and an Admin member of group `lab`, the worker of another
//! group, and a site admin who is no member of `lab`, each with the exact status.
//! Outsiders learn nothing about tasks and workers they cannot see (404, as for ones that
//! do not exist); a worker's token opens no user route (401).

use crate::harness::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

struct World {
    c: Coordinator,
    owner: Api,
    /// outsider, reader, writer, admin, the outsider's worker (serving only the
    /// outsider's group), and the site admin.
    roles: Vec<(&'static str, Api)>,
}

/// Statuses in the order of [`World::roles`].
type Row = [u16; 6];

fn world() -> World {
    let c = Coordinator::start();
    let owner = c.user("owner");
    owner.post("/groups", &json!({"group_name": "lab"}));
    let outsider = c.user("outsider");
    let foreign = c.worker(&outsider, &[], &[]);
    let mut roles = vec![("outsider", outsider)];
    for (name, role) in [("reader", "Read"), ("writer", "Write"), ("admin", "Admin")] {
        let api = c.user(name);
        assert_eq!(owner.put("/groups/lab/users", &json!({"relations": {name: role}})).0, 200);
        roles.push((name, api));
    }
    roles.push(("worker of another group", foreign.api));
    roles.push(("site admin", c.admin()));
    World { c, owner, roles }
}

fn check(w: &World, what: &str, expected: Row, call: impl Fn(&World, &Api) -> (u16, String)) {
    for ((who, api), want) in w.roles.iter().zip(expected) {
        let (s, b) = call(w, api);
        assert_eq!(s, want, "{what} as {who}: {b}");
    }
}

fn lab_task(w: &World) -> String {
    submit(&w.owner, &task("lab", &["true"], &[], 0))
}

fn lab_worker(w: &World) -> TestWorker {
    w.c.worker(&w.owner, &[], &["lab:admin"])
}

/// A task of `lab` with a result artifact (its row only), an hour old.
fn lab_task_with_artifact(w: &World) -> String {
    let t = lab_task(w);
    w.c.db
        .connect()
        .execute(
            "INSERT INTO artifacts (task_id, content_type, size, updated_at)
             VALUES ($1::text::uuid, 0, 1, now() - interval '2 hours')",
            &[&t],
        )
        .unwrap();
    t
}

/// A task of `lab` with a result artifact of its first attempt (its row only).
fn lab_task_with_attempt_artifact(w: &World) -> String {
    let t = lab_task(w);
    w.c.db
        .connect()
        .execute("INSERT INTO artifacts (task_id, content_type, attempt, size) VALUES ($1::text::uuid, 0, 1, 1)", &[&t])
        .unwrap();
    t
}

/// A fresh attachment of `lab` (its row only: the routes checked here sign URLs and read
/// rows; an hour old, so deletes may take it).
fn lab_attachment(w: &World) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let key = format!("k{}", N.fetch_add(1, Ordering::Relaxed));
    w.c.db
        .connect()
        .execute(
            "INSERT INTO attachments (group_id, key, size, updated_at)
             SELECT id, $1, 1, now() - interval '2 hours' FROM groups WHERE group_name = 'lab'",
            &[&key],
        )
        .unwrap();
    key
}

#[test]
fn task_routes() {
    let w = world();
    check(&w, "POST /tasks", [403, 403, 200, 200, 401, 403], |_, a| a.post("/tasks", &task("lab", &["true"], &[], 0)));
    check(&w, "GET /tasks/{uuid}", [404, 200, 200, 200, 401, 404], |w, a| a.get(&format!("/tasks/{}", lab_task(w))));
    check(&w, "PUT /tasks/{uuid}", [404, 403, 200, 200, 401, 404], |w, a| {
        a.put(&format!("/tasks/{}", lab_task(w)), &json!({"priority": 1, "timeout": null}))
    });
    check(&w, "PUT /tasks/{uuid}/labels", [404, 403, 200, 200, 401, 404], |w, a| {
        a.put(&format!("/tasks/{}/labels", lab_task(w)), &json!({"labels": ["l"]}))
    });
    check(&w, "DELETE /tasks/{uuid}", [404, 403, 200, 200, 401, 404], |w, a| {
        a.delete(&format!("/tasks/{}", lab_task(w)))
    });
    check(&w, "POST /tasks/query", [403, 200, 200, 200, 401, 403], |_, a| {
        a.post("/tasks/query", &json!({"group_name": "lab", "count": true}))
    });
    check(&w, "POST /tasks/cancel", [403, 403, 200, 200, 401, 403], |_, a| {
        a.post("/tasks/cancel", &json!({"group_name": "lab"}))
    });
    check(&w, "POST /tasks/{uuid}/artifacts", [404, 403, 200, 200, 401, 404], |w, a| {
        a.post(&format!("/tasks/{}/artifacts", lab_task(w)), &json!({"content_type": "result", "content_length": 1}))
    });
    check(&w, "GET /tasks/{uuid}/download/artifacts/{ct}", [404, 200, 200, 200, 401, 404], |w, a| {
        a.get(&format!("/tasks/{}/download/artifacts/result", lab_task_with_artifact(w)))
    });
    check(&w, "GET /tasks/{uuid}/attempts/{n}/download/artifacts/{ct}", [404, 200, 200, 200, 401, 404], |w, a| {
        a.get(&format!("/tasks/{}/attempts/1/download/artifacts/result", lab_task_with_attempt_artifact(w)))
    });
    check(&w, "DELETE /tasks/{uuid}/artifacts/{ct}", [404, 403, 200, 200, 401, 404], |w, a| {
        a.delete(&format!("/tasks/{}/artifacts/result", lab_task_with_artifact(w)))
    });
    // Batch routes answer 200 and say per item what happened (a worker's token: 401).
    for ((who, api), want) in w.roles.iter().zip([0, 0, 1, 1, -1, 0]) {
        let (s, b) = api.post("/tasks/cancel/list", &json!({"uuids": [lab_task(&w)]}));
        let got = if s == 200 {
            json(&b)["cancelled_count"].as_i64().unwrap()
        } else {
            assert_eq!(s, 401, "{b}");
            -1
        };
        assert_eq!(got, want, "cancel/list as {who}: {b}");
        let (s, b) = api.post("/tasks/submit", &json!({"tasks": [task("lab", &["true"], &[], 0)]}));
        let got = if s == 200 {
            i64::from(json(&b)["results"][0].get("Ok").is_some())
        } else {
            assert_eq!(s, 401, "{b}");
            -1
        };
        assert_eq!(got, want, "tasks/submit as {who}: {b}");
    }
    // Nothing tells an outsider whether a task exists.
    let outsider = &w.roles[0].1;
    let (s1, b1) = outsider.get(&format!("/tasks/{}", lab_task(&w)));
    let ghost = uuid::Uuid::new_v4();
    let (s2, b2) = outsider.get(&format!("/tasks/{ghost}"));
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(msg(&b1).split(' ').take(3).collect::<Vec<_>>(), msg(&b2).split(' ').take(3).collect::<Vec<_>>());
}

#[test]
fn worker_routes() {
    let w = world();
    check(&w, "POST /workers", [403, 403, 200, 200, 401, 403], |_, a| {
        a.post("/workers", &json!({"tags": [], "labels": [], "groups": ["lab"]}))
    });
    check(&w, "GET /workers/{uuid}", [404, 200, 200, 200, 401, 404], |w, a| {
        a.get(&format!("/workers/{}", lab_worker(w).uuid))
    });
    check(&w, "PUT /workers/{uuid}/tags", [404, 403, 200, 200, 401, 404], |w, a| {
        a.put(&format!("/workers/{}/tags", lab_worker(w).uuid), &json!({"tags": ["t"]}))
    });
    check(&w, "PUT /workers/{uuid}/labels", [404, 403, 200, 200, 401, 404], |w, a| {
        a.put(&format!("/workers/{}/labels", lab_worker(w).uuid), &json!({"labels": ["t"]}))
    });
    check(&w, "PUT /workers/{uuid}/groups", [404, 403, 403, 200, 401, 404], |w, a| {
        a.put(&format!("/workers/{}/groups", lab_worker(w).uuid), &json!({"relations": {"lab": "Write"}}))
    });
    check(&w, "DELETE /workers/{uuid}/groups", [404, 403, 403, 200, 401, 404], |w, a| {
        a.delete(&format!("/workers/{}/groups?groups=lab", lab_worker(w).uuid))
    });
    check(&w, "DELETE /workers/{uuid}/groups/remove", [404, 403, 403, 200, 401, 404], |w, a| {
        let u = lab_worker(w).uuid;
        http(
            &a.base,
            "DELETE",
            &format!("/workers/{u}/groups/remove"),
            a.token.as_deref(),
            Some(&json!({"groups": ["lab"]}).to_string()),
        )
    });
    check(&w, "DELETE /workers/{uuid}", [404, 403, 403, 200, 401, 404], |w, a| {
        a.delete(&format!("/workers/{}", lab_worker(w).uuid))
    });
    check(&w, "POST /workers/query", [403, 200, 200, 200, 401, 403], |_, a| {
        a.post("/workers/query", &json!({"group_name": "lab", "count": true}))
    });
    check(&w, "POST /workers/shutdown", [403, 403, 403, 200, 401, 403], |_, a| {
        a.post("/workers/shutdown", &json!({"group_name": "lab", "op": "Graceful"}))
    });
    for ((who, api), want) in w.roles.iter().zip([0, 0, 0, 1, -1, 0]) {
        let (s, b) = api.post("/workers/shutdown/list", &json!({"uuids": [lab_worker(&w).uuid], "op": "Force"}));
        let got = if s == 200 {
            json(&b)["shutdown_count"].as_i64().unwrap()
        } else {
            assert_eq!(s, 401, "{b}");
            -1
        };
        assert_eq!(got, want, "shutdown/list as {who}: {b}");
    }
    check(&w, "DELETE /admin/workers/{uuid}", [403, 403, 403, 403, 401, 200], |w, a| {
        a.delete(&format!("/admin/workers/{}", lab_worker(w).uuid))
    });
    // Attaching one's own worker (Admin on it through one's personal group) to lab takes
    // Write in lab, on every route that attaches.
    check(&w, "PUT /workers/{own uuid}/groups to lab", [403, 403, 200, 200, 401, 403], |_, a| {
        let (s, b) = a.post("/workers", &json!({"tags": [], "labels": [], "groups": []}));
        if s != 200 {
            return (s, b);
        }
        let own = json(&b)["worker_id"].as_str().unwrap().to_string();
        a.put(&format!("/workers/{own}/groups"), &json!({"relations": {"lab": "Write"}}))
    });
    check(&w, "POST /workers naming lab", [403, 403, 200, 200, 401, 403], |_, a| {
        a.post("/workers", &json!({"tags": [], "labels": [], "groups": ["lab:admin"]}))
    });
}

#[test]
fn group_and_attachment_routes() {
    let w = world();
    w.c.user("extra");
    check(&w, "GET /groups/{g}", [403, 200, 200, 200, 401, 403], |_, a| a.get("/groups/lab"));
    // The dashboard's chart: site admins may read any group's, as they may see every task.
    check(&w, "GET /groups/{g}/stats", [403, 200, 200, 200, 401, 200], |_, a| a.get("/groups/lab/stats"));
    check(&w, "PUT /groups/{g}/users", [403, 403, 403, 200, 401, 403], |_, a| {
        a.put("/groups/lab/users", &json!({"relations": {"extra": "Read"}}))
    });
    check(&w, "DELETE /groups/{g}/users", [403, 403, 403, 200, 401, 403], |_, a| {
        a.delete("/groups/lab/users?users=extra")
    });
    check(&w, "POST /groups/{g}/users/remove", [403, 403, 403, 200, 401, 403], |_, a| {
        a.post("/groups/lab/users/remove", &json!({"users": ["extra"]}))
    });
    check(&w, "POST /groups/{g}/attachments", [403, 403, 200, 200, 401, 403], |_, a| {
        a.post("/groups/lab/attachments", &json!({"key": "up", "content_length": 1}))
    });
    check(&w, "POST /groups/{g}/attachments/query", [403, 200, 200, 200, 401, 403], |_, a| {
        a.post("/groups/lab/attachments/query", &json!({"count": false}))
    });
    check(&w, "GET /groups/{g}/attachments/{key}", [403, 200, 200, 200, 401, 403], |w, a| {
        a.get(&format!("/groups/lab/attachments/{}", lab_attachment(w)))
    });
    check(&w, "GET /groups/{g}/download/attachments/{key}", [403, 200, 200, 200, 401, 403], |w, a| {
        a.get(&format!("/groups/lab/download/attachments/{}", lab_attachment(w)))
    });
    check(&w, "POST /groups/{g}/download/attachments", [403, 200, 200, 200, 401, 403], |_, a| {
        a.post("/groups/lab/download/attachments", &json!({}))
    });
    check(&w, "POST /groups/{g}/download/attachments/list", [403, 200, 200, 200, 401, 403], |w, a| {
        a.post("/groups/lab/download/attachments/list", &json!({"keys": [lab_attachment(w)]}))
    });
    check(&w, "DELETE /groups/{g}/attachments/{key}", [403, 403, 200, 200, 401, 403], |w, a| {
        a.delete(&format!("/groups/lab/attachments/{}", lab_attachment(w)))
    });
    check(&w, "POST /groups/{g}/delete/attachments", [403, 403, 200, 200, 401, 403], |w, a| {
        a.post("/groups/lab/delete/attachments", &json!({"key": lab_attachment(w)}))
    });
    check(&w, "POST /groups/{g}/delete/attachments/list", [403, 403, 200, 200, 401, 403], |w, a| {
        a.post("/groups/lab/delete/attachments/list", &json!({"keys": [lab_attachment(w)]}))
    });
    check(&w, "POST /admin/groups/{g}/storage-quota", [403, 403, 403, 403, 401, 200], |_, a| {
        a.post("/admin/groups/lab/storage-quota", &json!({"storage_quota": "+1"}))
    });
    check(&w, "DELETE /admin/groups/{g}/attachments/{key}", [403, 403, 403, 403, 401, 200], |w, a| {
        a.delete(&format!("/admin/groups/lab/attachments/{}", lab_attachment(w)))
    });
    check(&w, "POST /tasks/download/artifacts", [403, 200, 200, 200, 401, 403], |_, a| {
        a.post("/tasks/download/artifacts", &json!({"group_name": "lab", "content_type": "result"}))
    });
    check(&w, "POST /tasks/delete/artifacts", [403, 403, 200, 200, 401, 403], |_, a| {
        a.post("/tasks/delete/artifacts", &json!({"group_name": "lab", "content_type": "result"}))
    });
    // Routes for a worker's own task: a user's token is no worker's (401), and the worker
    // of another group learns nothing of lab's tasks (404).
    check(&w, "GET /workers/tasks/{uuid}", [401, 401, 401, 401, 404, 401], |w, a| {
        a.get(&format!("/workers/tasks/{}", lab_task(w)))
    });
    check(&w, "GET /workers/tasks/{uuid}/artifacts/{ct}", [401, 401, 401, 401, 404, 401], |w, a| {
        a.get(&format!("/workers/tasks/{}/artifacts/result", lab_task(w)))
    });
    check(&w, "GET /workers/tasks/{uuid}/attachments/{key}", [401, 401, 401, 401, 404, 401], |w, a| {
        a.get(&format!("/workers/tasks/{}/attachments/{}", lab_task(w), lab_attachment(w)))
    });
}

#[test]
fn tokens_of_one_kind_do_not_open_the_other_kinds_routes() {
    let w = world();
    let worker = lab_worker(&w);
    assert_eq!(worker.api.get("/users/groups").0, 401, "a worker token on a user route");
    assert_eq!(worker.api.post("/tasks", &task("lab", &["true"], &[], 0)).0, 401);
    assert_eq!(w.owner.get("/workers/tasks").0, 401, "a user token on a worker route");
    assert_eq!(w.owner.post("/workers/heartbeat", &Value::Null).0, 401);
    assert_eq!(w.c.anon().get("/workers/tasks").0, 400);
    let other_group_task = submit(&w.roles[0].1, &task("outsider", &["true"], &[], 0));
    // (The outsider's own worker, serving the outsider's group, takes it off the queue
    // first or not at all; either way this worker must not see it.)
    let (s, _) = worker.api.get(&format!("/workers/tasks/{other_group_task}"));
    assert_eq!(s, 404, "a worker reads only tasks of groups it serves");
    let own = lab_task(&w);
    assert_eq!(worker.api.get(&format!("/workers/tasks/{own}")).0, 200);
}

#[test]
fn task_and_worker_routes_reject_bad_input() {
    let w = world();
    let a = &w.owner;
    assert_eq!(a.get("/tasks/not-a-uuid").0, 400);
    assert_eq!(a.get("/workers/not-a-uuid").0, 400);
    assert_eq!(a.get("/tasks/query").0, 405);
    assert_eq!(a.get("/workers/heartbeat").0, 405);
    assert_eq!(http(&a.base, "PATCH", "/tasks", a.token.as_deref(), None).0, 405);
    let (s, b) = a.post("/workers", &json!({"tags": [], "labels": [], "groups": ["lab:owner"]}));
    assert_eq!(s, 400, "{b}");
    assert_eq!(a.post("/workers", &json!({"tags": [], "groups": []})).0, 422, "labels are required");
    let wk = lab_worker(&w);
    assert_eq!(a.put(&format!("/workers/{}/tags", wk.uuid), &json!({"tags": []})).0, 400);
    // A group that does not exist is refused like one the caller has no role in.
    assert_eq!(a.put(&format!("/workers/{}/groups", wk.uuid), &json!({"relations": {"ghost": "Read"}})).0, 403);
    assert_eq!(a.put(&format!("/workers/{}/groups", wk.uuid), &json!({"relations": {}})).0, 400);
    assert_eq!(a.delete(&format!("/workers/{}/groups", wk.uuid)).0, 400);
    assert_eq!(a.post("/workers/query", &json!({"count": false, "tags": []})).0, 400);
    assert_eq!(a.post("/workers/shutdown", &json!({})).0, 422, "op is required");
    assert_eq!(a.post("/workers/shutdown/list", &json!({"uuids": [], "op": "Force"})).0, 400);
    assert_eq!(wk.report(1, json!("Explode")).0, 422);
    assert_eq!(wk.report(999_999, json!("Finish")).0, 404);
    assert_eq!(wk.api.post_raw("/workers/tasks", "application/json", "{").0, 400);
}
