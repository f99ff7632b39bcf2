//! Admin routes and who may call them.

use crate::harness::*;
use serde_json::json;

#[test]
fn only_admins_reach_admin_routes() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let routes: Vec<(&str, String, serde_json::Value)> = vec![
        (
            "POST",
            "/admin/users".into(),
            json!({"username": "x", "md5_password": mito::api::md5_password("x"), "admin": false}),
        ),
        ("DELETE", "/admin/users/bob".into(), json!(null)),
        ("POST", "/admin/users/bob/password".into(), json!({"new_md5_password": mito::api::md5_password("x")})),
        ("POST", "/admin/users/bob/group-quota".into(), json!({"group_quota": "+1"})),
        ("POST", "/admin/users/bob/state".into(), json!({"state": "Locked"})),
        ("POST", "/admin/groups/bob/storage-quota".into(), json!({"storage_quota": "1GB"})),
        ("POST", "/admin/shutdown".into(), json!({"secret": "x"})),
    ];
    for (m, p, body) in &routes {
        let b = if body.is_null() { None } else { Some(body.to_string()) };
        let (s, text) = http(&bob.base, m, p, bob.token.as_deref(), b.as_deref());
        assert_eq!((s, msg(&text).as_str()), (403, "Authentication error: Permission denied"), "{m} {p}");
        let (s, _) = http(&bob.base, m, p, None, b.as_deref());
        assert_eq!(s, 400, "{m} {p} without a token");
    }
    assert_eq!(bob.get("/auth").0, 200, "none of that changed bob");
}

#[test]
fn admins_create_users_with_personal_groups() {
    let c = Coordinator::start();
    let body = json!({"username": "root2", "md5_password": mito::api::md5_password("pw"), "admin": true});
    assert_eq!(c.admin().post("/admin/users", &body), (200, String::new()));
    let t = c.login("root2", "pw");
    let (s, b) = c.as_token(&t).get("/users/groups");
    assert_eq!((s, json(&b)["groups"].clone()), (200, json!({"root2": "Admin"})));
    assert_eq!(
        c.as_token(&t).post("/admin/users/root2/state", &json!({"state": "Active"})).0,
        200,
        "new admin is an admin"
    );
    for bad in ["", "a b", "a/b", &"n".repeat(256)] {
        let body = json!({"username": bad, "md5_password": mito::api::md5_password("pw"), "admin": false});
        let (s, b) = c.admin().post("/admin/users", &body);
        assert_eq!(s, 400, "{bad:?}");
        assert!(msg(&b).starts_with("Process request error: Invalid username"), "{b}");
    }
    assert_eq!(c.admin().post("/admin/users", &body).0, 409);
}

#[test]
fn admin_password_change_signs_the_user_out() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let (s, b) =
        c.admin().post("/admin/users/bob/password", &json!({"new_md5_password": mito::api::md5_password("reset")}));
    assert_eq!((s, b.as_str()), (200, ""));
    assert_eq!(bob.get("/auth").0, 401);
    c.login("bob", "reset");
    let (s, b) =
        c.admin().post("/admin/users/nobody/password", &json!({"new_md5_password": mito::api::md5_password("x")}));
    assert_eq!((s, msg(&b).as_str()), (404, "User or group with name nobody not found"));
}

#[test]
fn quotas_parse_their_strings_and_refuse_garbage() {
    let c = Coordinator::start();
    c.user("bob");
    let a = c.admin();
    let q = |v: &str| a.post("/admin/groups/bob/storage-quota", &json!({"storage_quota": v}));
    assert_eq!(q("10GB"), (200, r#"{"storage_quota":10000000000}"#.into()));
    assert_eq!(q("+1GiB"), (200, r#"{"storage_quota":11073741824}"#.into()));
    assert_eq!(q("-500MB"), (200, r#"{"storage_quota":10573741824}"#.into()));
    assert_eq!(q("=2048"), (200, r#"{"storage_quota":2048}"#.into()));
    assert_eq!(q("-1TB"), (200, r#"{"storage_quota":0}"#.into()), "saturates at zero");
    for bad in ["lots", "", "+", "1XB"] {
        let (s, b) = q(bad);
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert!(msg(&b).contains("size") || msg(&b).contains("empty"), "{b}");
    }
    let (s, _) = a.post("/admin/groups/nogroup/storage-quota", &json!({"storage_quota": "1GB"}));
    assert_eq!(s, 404);
    let g = |v: &str| a.post("/admin/users/bob/group-quota", &json!({"group_quota": v}));
    assert_eq!(g("=3"), (200, r#"{"group_quota":3}"#.into()));
    assert_eq!(g("-10"), (200, r#"{"group_quota":0}"#.into()));
    assert_eq!(g("5"), (200, r#"{"group_quota":5}"#.into()));
    assert_eq!(g("many").0, 400);
    assert_eq!(a.post("/admin/users/ghost/group-quota", &json!({"group_quota": "1"})).0, 404);
    let (_, b) = c.as_token(&c.login("bob", "bob-pw")).get("/groups/bob");
    assert_eq!(json(&b)["storage_quota"], 0);
}

#[test]
fn user_state_changes_and_unknown_users() {
    let c = Coordinator::start();
    c.user("bob");
    let (s, b) = c.admin().post("/admin/users/bob/state", &json!({"state": "Locked"}));
    assert_eq!((s, b.as_str()), (200, r#"{"state":"Locked"}"#));
    assert_eq!(c.admin().post("/admin/users/bob/state", &json!({"state": "Frozen"})).0, 422);
    assert_eq!(c.admin().post("/admin/users/ghost/state", &json!({"state": "Active"})).0, 404);
    assert_eq!(c.admin().delete("/admin/users/ghost").0, 404);
}
