//! The permission matrix of the task and worker routes: an outsider, a Read, a Write and
//! an Admin member of group `lab`, against every route. Outsiders learn nothing about
//! tasks and workers they cannot see (404, as for ones that do not exist).

use crate::harness::*;
use serde_json::{json, Value};

struct World {
    c: Coordinator,
    owner: Api,
    roles: Vec<(&'static str, Api)>,
}

fn world() -> World {
    let c = Coordinator::start();
    let owner = c.user("owner");
    owner.post("/groups", &json!({"group_name": "lab"}));
    let mut roles = vec![("outsider", c.user("outsider"))];
    for (name, role) in [("reader", "Read"), ("writer", "Write"), ("admin", "Admin")] {
        let api = c.user(name);
        assert_eq!(owner.put("/groups/lab/users", &json!({"relations": {name: role}})).0, 200);
        roles.push((name, api));
    }
    World { c, owner, roles }
}

fn check(w: &World, what: &str, expected: [u16; 4], call: impl Fn(&World, &Api) -> (u16, String)) {
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

#[test]
fn task_routes() {
    let w = world();
    check(&w, "POST /tasks", [403, 403, 200, 200], |_, a| a.post("/tasks", &task("lab", &["true"], &[], 0)));
    check(&w, "GET /tasks/{uuid}", [404, 200, 200, 200], |w, a| a.get(&format!("/tasks/{}", lab_task(w))));
    check(&w, "PUT /tasks/{uuid}", [404, 403, 200, 200], |w, a| {
        a.put(&format!("/tasks/{}", lab_task(w)), &json!({"priority": 1, "timeout": null}))
    });
    check(&w, "PUT /tasks/{uuid}/labels", [404, 403, 200, 200], |w, a| {
        a.put(&format!("/tasks/{}/labels", lab_task(w)), &json!({"labels": ["l"]}))
    });
    check(&w, "DELETE /tasks/{uuid}", [404, 403, 200, 200], |w, a| a.delete(&format!("/tasks/{}", lab_task(w))));
    check(&w, "POST /tasks/query", [403, 200, 200, 200], |_, a| a.post("/tasks/query", &json!({"group_name": "lab", "count": true})));
    check(&w, "POST /tasks/cancel", [403, 403, 200, 200], |_, a| a.post("/tasks/cancel", &json!({"group_name": "lab"})));
    for ((who, api), want) in w.roles.iter().zip([0, 0, 1, 1]) {
        let (_, b) = api.post("/tasks/cancel/list", &json!({"uuids": [lab_task(&w)]}));
        assert_eq!(json(&b)["cancelled_count"], want, "cancel/list as {who}: {b}");
        let (_, b) = api.post("/tasks/submit", &json!({"tasks": [task("lab", &["true"], &[], 0)]}));
        assert_eq!(json(&b)["results"][0].get("Ok").is_some(), want == 1, "tasks/submit as {who}: {b}");
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
    check(&w, "POST /workers", [403, 403, 200, 200], |_, a| {
        a.post("/workers", &json!({"tags": [], "labels": [], "groups": ["lab"]}))
    });
    check(&w, "GET /workers/{uuid}", [404, 200, 200, 200], |w, a| a.get(&format!("/workers/{}", lab_worker(w).uuid)));
    check(&w, "PUT /workers/{uuid}/tags", [404, 403, 200, 200], |w, a| {
        a.put(&format!("/workers/{}/tags", lab_worker(w).uuid), &json!({"tags": ["t"]}))
    });
    check(&w, "PUT /workers/{uuid}/labels", [404, 403, 200, 200], |w, a| {
        a.put(&format!("/workers/{}/labels", lab_worker(w).uuid), &json!({"labels": ["t"]}))
    });
    check(&w, "PUT /workers/{uuid}/groups", [404, 403, 403, 200], |w, a| {
        a.put(&format!("/workers/{}/groups", lab_worker(w).uuid), &json!({"relations": {"lab": "Write"}}))
    });
    check(&w, "DELETE /workers/{uuid}/groups", [404, 403, 403, 200], |w, a| {
        a.delete(&format!("/workers/{}/groups?groups=lab", lab_worker(w).uuid))
    });
    check(&w, "DELETE /workers/{uuid}/groups/remove", [404, 403, 403, 200], |w, a| {
        let u = lab_worker(w).uuid;
        http(&a.base, "DELETE", &format!("/workers/{u}/groups/remove"), a.token.as_deref(), Some(&json!({"groups": ["lab"]}).to_string()))
    });
    check(&w, "DELETE /workers/{uuid}", [404, 403, 403, 200], |w, a| a.delete(&format!("/workers/{}", lab_worker(w).uuid)));
    check(&w, "POST /workers/query", [403, 200, 200, 200], |_, a| a.post("/workers/query", &json!({"group_name": "lab", "count": true})));
    check(&w, "POST /workers/shutdown", [403, 403, 403, 200], |_, a| {
        a.post("/workers/shutdown", &json!({"group_name": "lab", "op": "Graceful"}))
    });
    for ((who, api), want) in w.roles.iter().zip([0, 0, 0, 1]) {
        let (_, b) = api.post("/workers/shutdown/list", &json!({"uuids": [lab_worker(&w).uuid], "op": "Force"}));
        assert_eq!(json(&b)["shutdown_count"], want, "shutdown/list as {who}: {b}");
    }
    let (s, _) = w.roles[2].1.delete(&format!("/admin/workers/{}", lab_worker(&w).uuid));
    assert_eq!(s, 403, "the admin route is for admins");
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
    assert_eq!(a.put(&format!("/workers/{}/groups", wk.uuid), &json!({"relations": {"ghost": "Read"}})).0, 400);
    assert_eq!(a.put(&format!("/workers/{}/groups", wk.uuid), &json!({"relations": {}})).0, 400);
    assert_eq!(a.delete(&format!("/workers/{}/groups", wk.uuid)).0, 400);
    assert_eq!(a.post("/workers/query", &json!({"count": false, "tags": []})).0, 400);
    assert_eq!(a.post("/workers/shutdown", &json!({})).0, 422, "op is required");
    assert_eq!(a.post("/workers/shutdown/list", &json!({"uuids": [], "op": "Force"})).0, 400);
    assert_eq!(wk.report(1, json!("Explode")).0, 422);
    assert_eq!(wk.report(999_999, json!("Finish")).0, 404);
    assert_eq!(wk.api.post_raw("/workers/tasks", "application/json", "{").0, 400);
}
