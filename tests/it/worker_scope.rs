//! What a worker may reach is what the members who attached it may reach: attaching needs
//! Write in the group, a worker fetching resources sees only its current task's group, a
//! member who leaves takes their workers along, and a task spawns a bounded number of
//! follow-up tasks.

use crate::harness::*;
use serde_json::json;

/// `owner` Admin of `lab`, `writer` Write and `reader` Read in it, `mallory` outside it.
struct Lab {
    c: Coordinator,
    owner: Api,
    writer: Api,
    reader: Api,
    mallory: Api,
}

fn lab() -> Lab {
    let c = Coordinator::start();
    let owner = c.user("owner");
    assert_eq!(owner.post("/groups", &json!({"group_name": "lab"})).0, 200);
    let (writer, reader, mallory) = (c.user("writer"), c.user("reader"), c.user("mallory"));
    let (s, b) = owner.put("/groups/lab/users", &json!({"relations": {"writer": "Write", "reader": "Read"}}));
    assert_eq!(s, 200, "{b}");
    Lab { c, owner, writer, reader, mallory }
}

fn worker_groups(api: &Api, worker: &TestWorker) -> serde_json::Value {
    let (s, b) = api.get(&format!("/workers/{}", worker.uuid));
    assert_eq!(s, 200, "{b}");
    json(&b)["groups"].clone()
}

#[test]
fn attaching_ones_own_worker_to_a_group_needs_write_in_that_group() {
    let l = lab();
    let secret = submit(
        &l.owner,
        &json!({
            "group_name": "lab", "tags": [], "labels": [], "timeout": "10m", "priority": 0,
            "task_spec": {"args": ["true"], "envs": {"TOKEN": "lab-secret"}}
        }),
    );
    // Mallory manages her own worker (Admin through her personal group) but has no role in lab.
    let own = l.c.worker(&l.mallory, &[], &[]);
    let (s, b) = l.mallory.put(&format!("/workers/{}/groups", own.uuid), &json!({"relations": {"lab": "Write"}}));
    assert_eq!(s, 403, "an outsider attached her worker to lab: {b}");
    // A group that does not exist is refused in the same words, so names cannot be probed.
    let (s2, b2) =
        l.mallory.put(&format!("/workers/{}/groups", own.uuid), &json!({"relations": {"no-such-group": "Write"}}));
    assert_eq!(s2, 403, "{b2}");
    assert_eq!(msg(&b).replace("lab", "X"), msg(&b2).replace("no-such-group", "X"));
    assert!(own.fetch().is_none(), "the worker must not receive lab's task {secret}");
    assert_eq!(own.api.get(&format!("/workers/tasks/{secret}")).0, 404);
    assert!(!worker_groups(&l.mallory, &own).as_object().unwrap().contains_key("lab"));

    // A Read member may not attach either; a Write member may, as at registration.
    let rw = l.c.worker(&l.reader, &[], &[]);
    let (s, b) = l.reader.put(&format!("/workers/{}/groups", rw.uuid), &json!({"relations": {"lab": "Admin"}}));
    assert_eq!(s, 403, "{b}");
    assert!(msg(&b).contains("Read"), "the message says which role the caller has: {b}");
    let (s, b) = l.reader.post("/workers", &json!({"tags": [], "labels": [], "groups": ["lab"]}));
    assert_eq!(s, 403, "registration refuses the same way: {b}");
    let ww = l.c.worker(&l.writer, &[], &[]);
    let (s, b) = l.writer.put(&format!("/workers/{}/groups", ww.uuid), &json!({"relations": {"lab": "Write"}}));
    assert_eq!(s, 200, "{b}");
    assert_eq!(ww.fetch().expect("lab's task")["uuid"], secret.as_str());
}

#[test]
fn removing_groups_from_a_worker_does_not_tell_which_groups_exist() {
    let l = lab();
    let own = l.c.worker(&l.mallory, &[], &[]);
    let path = |g: &str| format!("/workers/{}/groups?groups={g}", own.uuid);
    let (s1, b1) = l.mallory.delete(&path("lab"));
    let (s2, b2) = l.mallory.delete(&path("no-such-group"));
    assert_eq!((s1, s2), (400, 400), "{b1} / {b2}");
    assert_eq!(msg(&b1).replace("lab", "X"), msg(&b2).replace("no-such-group", "X"));
}

#[test]
fn a_shared_worker_hands_out_artifacts_only_of_its_current_tasks_group() {
    let c = Coordinator::start();
    let (alice, bob) = (c.user("alice"), c.user("bob"));
    // Bob serves both his group and alice's: she made him a Write member of hers.
    assert_eq!(alice.put("/groups/alice/users", &json!({"relations": {"bob": "Write"}})).0, 200);
    let shared = c.worker(&bob, &[], &["alice"]);
    // Bob's task holds a result; alice's task names it as a resource.
    let bobs = submit(&bob, &task("bob", &["true"], &[], 0));
    c.db.connect()
        .execute("INSERT INTO artifacts (task_id, content_type, size) VALUES ($1::text::uuid, 0, 5)", &[&bobs])
        .unwrap();
    let alices = submit(&alice, &task("alice", &["true"], &[], 9));
    let t = shared.fetch().expect("alice's task, by priority");
    assert_eq!(t["uuid"], alices.as_str());
    let (s, b) = shared.api.get(&format!("/workers/tasks/{bobs}/artifacts/result"));
    assert_eq!(s, 404, "while running alice's task the worker fetched bob's result: {b}");
    shared.complete(&t, 0);
    let t = shared.fetch().expect("bob's task");
    assert_eq!(t["uuid"], bobs.as_str());
    let (s, b) = shared.api.get(&format!("/workers/tasks/{bobs}/artifacts/result"));
    assert_eq!(s, 200, "a task of bob's group reads bob's artifacts: {b}");
    shared.complete(&t, 0);
    let (s, _) = shared.api.get(&format!("/workers/tasks/{bobs}/artifacts/result"));
    assert_eq!(s, 404, "with no task in hand, nothing");
}

#[test]
fn a_removed_or_demoted_member_takes_the_workers_they_attached_along() {
    let l = lab();
    let w = l.c.worker(&l.writer, &[], &["lab"]);
    let owners = l.c.worker(&l.owner, &[], &["lab"]);
    assert!(worker_groups(&l.writer, &w).as_object().unwrap().contains_key("lab"));
    let (s, b) = l.owner.delete("/groups/lab/users?users=writer");
    assert_eq!(s, 200, "{b}");
    let t = submit(&l.owner, &task("lab", &["true"], &[], 0));
    assert!(w.fetch().is_none(), "a removed member's worker still fetched lab's task");
    let groups = worker_groups(&l.writer, &w);
    assert!(!groups.as_object().unwrap().contains_key("lab"), "{groups}");
    assert!(groups.as_object().unwrap().contains_key("writer"), "its owner's own group stays: {groups}");
    assert_eq!(owners.fetch().expect("the owner's worker is untouched")["uuid"], t.as_str());

    // Made Write again, they must attach it again; lowered to Read, it leaves again.
    assert_eq!(l.owner.put("/groups/lab/users", &json!({"relations": {"writer": "Write"}})).0, 200);
    assert_eq!(l.writer.put(&format!("/workers/{}/groups", w.uuid), &json!({"relations": {"lab": "Write"}})).0, 200);
    assert_eq!(l.owner.put("/groups/lab/users", &json!({"relations": {"writer": "Read"}})).0, 200);
    assert!(!worker_groups(&l.writer, &w).as_object().unwrap().contains_key("lab"));

    // The owner re-vouches for the worker: it stays when its creator leaves.
    assert_eq!(l.owner.put("/groups/lab/users", &json!({"relations": {"writer": "Admin"}})).0, 200);
    assert_eq!(l.writer.put(&format!("/workers/{}/groups", w.uuid), &json!({"relations": {"lab": "Admin"}})).0, 200);
    let (s, b) = l.owner.put(&format!("/workers/{}/groups", w.uuid), &json!({"relations": {"lab": "Admin"}}));
    assert_eq!(s, 200, "the lab Admin manages the worker through lab now: {b}");
    assert_eq!(l.owner.delete("/groups/lab/users?users=writer").0, 200);
    assert!(worker_groups(&l.owner, &w).as_object().unwrap().contains_key("lab"));
}

#[test]
fn a_deleted_users_workers_leave_every_group() {
    let l = lab();
    let w = l.c.worker(&l.writer, &[], &["lab"]);
    let (s, b) = l.c.admin().delete("/admin/users/writer");
    assert_eq!(s, 200, "{b}");
    submit(&l.owner, &task("lab", &["true"], &[], 0));
    assert!(w.fetch().is_none(), "a deleted user's worker still fetched lab's task");
    let n: i64 = l.c.db.connect()
        .query_one("SELECT count(*) FROM group_worker gw JOIN workers w ON w.id = gw.worker_id WHERE w.worker_id = $1::text::uuid", &[&w.uuid])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "no group keeps the deleted user's worker");
}

#[test]
fn a_task_spawns_only_a_few_pending_downstream_tasks() {
    let c = Coordinator::start();
    let alice = c.user("alice");
    let w = c.worker(&alice, &[], &[]);
    submit(&alice, &task("alice", &["true"], &[], 0));
    let t = w.fetch().unwrap();
    let id = t["id"].as_i64().unwrap();
    assert_eq!(w.report(id, json!("Finish")).0, 200);
    let sub = json!({"Submit": task("alice", &["next"], &[], 0)});
    for i in 0..4 {
        let (s, b) = w.report(id, sub.clone());
        assert_eq!(s, 200, "downstream {i}: {b}");
    }
    let (s, b) = w.report(id, sub);
    assert_eq!(s, 400, "a fifth downstream task: {b}");
    assert!(msg(&b).contains("at most") || msg(&b).contains("most one task"), "{b}");
    let pending: i64 =
        c.db.connect()
            .query_one(
                "SELECT count(*) FROM active_tasks WHERE upstream_task_uuid = $1::text::uuid",
                &[&t["uuid"].as_str().unwrap()],
            )
            .unwrap()
            .get(0);
    assert_eq!(pending, 4);
    let (s, b) = w.report(id, json!({"Commit": {"exit_status": 0, "msg": null}}));
    assert_eq!(s, 200, "{b}");
}

#[test]
fn upgrading_drops_links_no_member_vouched_for() {
    let mut l = lab();
    let legit = l.c.worker(&l.writer, &[], &["lab"]);
    let hijack = l.c.worker(&l.mallory, &[], &[]);
    l.c.stop();
    // The database as the previous release left it, with a link made through the route
    // that once checked nothing.
    let mut db = l.c.db.connect();
    db.batch_execute(
        "DELETE FROM schema_version WHERE version = 3;
         DROP INDEX active_tasks_upstream;
         ALTER TABLE group_worker DROP COLUMN vouched_by;",
    )
    .unwrap();
    db.execute(
        "INSERT INTO group_worker (group_id, worker_id, role)
         SELECT g.id, w.id, 1 FROM groups g, workers w WHERE g.group_name = 'lab' AND w.worker_id = $1::text::uuid",
        &[&hijack.uuid],
    )
    .unwrap();
    let c = Coordinator::start_with(TestDb::from_url(&l.c.db.url), &[]);
    let owner = c.as_token(&c.login("owner", "owner-pw"));
    let (s, b) = owner.post("/workers/query", &json!({"group_name": "lab", "count": false}));
    assert_eq!(s, 200, "{b}");
    let ids: Vec<String> =
        json(&b)["workers"].as_array().unwrap().iter().map(|w| w["worker_id"].as_str().unwrap().to_string()).collect();
    assert!(ids.contains(&legit.uuid), "the writer's worker stays in lab: {b}");
    assert!(!ids.contains(&hijack.uuid), "mallory's link to lab is gone: {b}");
}
