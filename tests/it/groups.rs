//! Groups and membership, with the permission matrix of model.md §6.

use crate::harness::*;
use serde_json::json;

#[test]
fn creating_a_group_makes_the_creator_admin() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let (s, b) = bob.post("/groups", &json!({"group_name": "lab"}));
    assert_eq!((s, b.as_str()), (200, ""));
    let (s, b) = bob.get("/users/groups");
    assert_eq!(s, 200);
    assert_eq!(json(&b)["groups"], json!({"bob": "Admin", "lab": "Admin"}));
    let (s, b) = bob.get("/groups/lab");
    assert_eq!(s, 200, "{b}");
    let g = json(&b);
    assert_eq!(g["group_name"], "lab");
    assert_eq!(g["creator_username"], "bob");
    assert_eq!(g["state"], "Active");
    assert_eq!(g["task_count"], 0);
    assert_eq!(g["storage_quota"], 16_000_000_000i64);
    assert_eq!(g["storage_used"], 0);
    assert_eq!(g["worker_count"], 0);
    assert_eq!(g["users_in_group"], json!({"bob": "Admin"}));
    let ts = g["created_at"].as_str().unwrap();
    assert!(mito::api::time::parse_timestamp(ts).is_some(), "{ts}");
    assert!(ts.ends_with(" +00:00:00"), "{ts}");
}

#[test]
fn group_names_are_checked_and_share_the_user_namespace() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    for bad in ["", "has space", "slash/y", "ümlaut", &"x".repeat(256)] {
        let (s, b) = bob.post("/groups", &json!({"group_name": bad}));
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert!(msg(&b).contains("Invalid group name"), "{b}");
    }
    let (s, b) = bob.post("/groups", &json!({"group_name": "mitosis_admin"}));
    assert_eq!((s, msg(&b).as_str()), (409, "User or group with same name mitosis_admin already exists"));
    assert_eq!(bob.post("/groups", &json!({"group_name": "lab"})).0, 200);
    assert_eq!(bob.post("/groups", &json!({"group_name": "lab"})).0, 409);
    // A user cannot be created under a group's name either.
    let body = json!({"username": "lab", "md5_password": mito::api::md5_password("x"), "admin": false});
    assert_eq!(c.admin().post("/admin/users", &body).0, 409);
}

#[test]
fn the_group_quota_limits_creation_and_admins_can_raise_it() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    for i in 1..8 {
        assert_eq!(bob.post("/groups", &json!({"group_name": format!("g{i}")})).0, 200, "group {i}");
    }
    let (s, b) = bob.post("/groups", &json!({"group_name": "g8"}));
    assert_eq!((s, msg(&b).as_str()), (403, "Resource quota exceeded"));
    let (s, b) = c.admin().post("/admin/users/bob/group-quota", &json!({"group_quota": "+1"}));
    assert_eq!((s, b.as_str()), (200, r#"{"group_quota":9}"#));
    assert_eq!(bob.post("/groups", &json!({"group_name": "g8"})).0, 200);
}

#[test]
fn only_members_see_a_group_and_only_admins_see_its_members() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let reader = c.user("reader");
    let outsider = c.user("outsider");
    bob.post("/groups", &json!({"group_name": "lab"}));
    assert_eq!(bob.put("/groups/lab/users", &json!({"relations": {"reader": "read"}})).0, 200);
    let (s, b) = reader.get("/groups/lab");
    assert_eq!(s, 200);
    assert_eq!(json(&b)["users_in_group"], serde_json::Value::Null);
    let (s1, b1) = outsider.get("/groups/lab");
    let (s2, b2) = outsider.get("/groups/no-such-group");
    assert_eq!((s1, s2), (403, 403), "{b1} {b2}");
    assert!(msg(&b1).contains("not a member of group lab"), "{b1}");
    // Nothing tells an outsider whether the group exists.
    assert_eq!(msg(&b1).replace("lab", "X"), msg(&b2).replace("no-such-group", "X"));
}

/// Read / Write / Admin / outsider against each membership route.
#[test]
fn membership_changes_need_the_admin_role() {
    let c = Coordinator::start();
    let owner = c.user("owner");
    let reader = c.user("reader");
    let writer = c.user("writer");
    let outsider = c.user("outsider");
    c.user("target");
    owner.post("/groups", &json!({"group_name": "lab"}));
    assert_eq!(owner.put("/groups/lab/users", &json!({"relations": {"reader": "Read", "writer": "WRITE"}})).0, 200);
    for (who, api) in [("reader", &reader), ("writer", &writer), ("outsider", &outsider)] {
        assert_eq!(api.put("/groups/lab/users", &json!({"relations": {"target": "Read"}})).0, 403, "{who} PUT");
        assert_eq!(api.delete("/groups/lab/users?users=reader").0, 403, "{who} DELETE");
        assert_eq!(api.post("/groups/lab/users/remove", &json!({"users": ["reader"]})).0, 403, "{who} remove");
    }
    let (_, b) = owner.get("/groups/lab");
    assert_eq!(json(&b)["users_in_group"], json!({"owner": "Admin", "reader": "Read", "writer": "Write"}));
    // Upsert changes roles; removal by query and by body.
    assert_eq!(owner.put("/groups/lab/users", &json!({"relations": {"reader": "admin", "target": "read"}})).0, 200);
    let (_, b) = reader.get("/users/groups");
    assert_eq!(json(&b)["groups"]["lab"], "Admin");
    assert_eq!(owner.delete("/groups/lab/users?users=target&users=writer").0, 200);
    assert_eq!(owner.post("/groups/lab/users/remove", &json!({"users": ["reader"]})).0, 200);
    let (_, b) = owner.get("/groups/lab");
    assert_eq!(json(&b)["users_in_group"], json!({"owner": "Admin"}));
    assert_eq!(writer.get("/groups/lab").0, 403, "a removed member loses access");
}

#[test]
fn membership_bad_input() {
    let c = Coordinator::start();
    let owner = c.user("owner");
    owner.post("/groups", &json!({"group_name": "lab"}));
    let (s, b) = owner.put("/groups/lab/users", &json!({"relations": {}}));
    assert_eq!(s, 400, "{b}");
    let (s, b) = owner.put("/groups/lab/users", &json!({"relations": {"ghost": "Read"}}));
    assert_eq!(s, 400);
    assert!(msg(&b).contains("Some users do not exist") && msg(&b).contains("ghost"), "{b}");
    let (s, _) = owner.put("/groups/lab/users", &json!({"relations": {"owner": "Owner"}}));
    assert_eq!(s, 422, "unknown role");
    assert_eq!(owner.delete("/groups/lab/users").0, 400, "empty set");
    assert_eq!(owner.post("/groups/lab/users/remove", &json!({"users": []})).0, 400);
    let (s, b) = owner.delete("/groups/lab/users?users=owner");
    assert_eq!(s, 400, "the last admin cannot leave: {b}");
    assert!(msg(&b).contains("no Admin left"), "{b}");
    let (s, _) = owner.put("/groups/lab/users", &json!({"relations": {"owner": "Write"}}));
    assert_eq!(s, 400, "nor be demoted");
    let (_, b) = owner.get("/groups/lab");
    assert_eq!(json(&b)["users_in_group"], json!({"owner": "Admin"}), "a refused change leaves nothing behind");
}
