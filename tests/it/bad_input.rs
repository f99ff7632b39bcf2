//! Bad requests get the status the peer gives, never a 500 or a crash.

use crate::harness::*;
use serde_json::json;

#[test]
fn malformed_and_mistyped_bodies() {
    let c = Coordinator::start();
    let a = c.admin();
    let (s, b) = a.post_raw("/groups", "application/json", "{");
    assert_eq!(s, 400);
    assert!(b.starts_with("Failed to parse the request body as JSON"), "{b}");
    let (s, b) = a.post_raw("/groups", "application/json", r#"{"group_name": 5}"#);
    assert_eq!(s, 422);
    assert!(b.starts_with("Failed to deserialize the JSON body into the target type"), "{b}");
    assert_eq!(a.post_raw("/groups", "application/json", "{}").0, 422, "missing field");
    assert_eq!(a.post_raw("/groups", "application/json", "").0, 400, "empty body");
    let (s, b) = a.post_raw("/groups", "text/plain", r#"{"group_name":"x"}"#);
    assert_eq!((s, b.as_str()), (415, "Expected request with `Content-Type: application/json`"));
    let body = json!({"username": "x", "md5_password": [1, 2, 3], "admin": false});
    assert_eq!(a.post("/admin/users", &body).0, 422, "md5 of the wrong length");
    let body = json!({"username": "x", "md5_password": mito::api::md5_password("x"), "admin": "yes"});
    assert_eq!(a.post("/admin/users", &body).0, 422, "wrong type");
    assert_eq!(
        a.post_raw(
            "/login",
            "application/json",
            r#"{"username":"a","md5_password":[300,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}"#
        )
        .0,
        422
    );
    assert_eq!(a.get("/auth").0, 200, "still serving");
}

#[test]
fn oversized_bodies_are_413() {
    let c = Coordinator::start();
    let huge = format!(r#"{{"group_name":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let (s, _) = c.admin().post_raw("/groups", "application/json", &huge);
    assert_eq!(s, 413);
    assert_eq!(c.anon().get("/health").0, 200);
}

#[test]
fn unknown_routes_wrong_methods_and_trailing_slashes() {
    let c = Coordinator::start();
    let a = c.admin();
    for p in ["/nope", "/groups/", "/health/", "/users/groups/x/y", "//health", "/admin"] {
        assert_eq!(a.get(p), (404, String::new()), "{p}");
    }
    for (m, p) in [
        ("POST", "/health"),
        ("GET", "/login"),
        ("DELETE", "/groups"),
        ("PUT", "/auth"),
        ("GET", "/admin/shutdown"),
        ("POST", "/groups/x"),
    ] {
        let (s, b) = http(&a.base, m, p, a.token.as_deref(), None);
        assert_eq!((s, b.as_str()), (405, ""), "{m} {p}");
    }
}

#[test]
fn a_bad_token_wins_over_a_bad_body() {
    let c = Coordinator::start();
    let (s, _) = c.as_token("garbage").post_raw("/groups", "application/json", "{");
    assert_eq!(s, 401);
}

#[test]
fn names_outside_the_alphabet_in_paths_are_handled() {
    let c = Coordinator::start();
    let a = c.admin();
    for p in ["/groups/a%20b", "/groups/%C3%A9", &format!("/groups/{}", "x".repeat(300))] {
        let (s, _) = a.get(p);
        assert_eq!(s, 403, "{p}");
    }
    let (s, b) = a.get("/groups/%zz");
    assert_eq!(s, 400, "{b}");
    let (s, b) = a.post("/admin/users/%00/state", &json!({"state": "Active"}));
    assert_eq!(s, 400, "a NUL cannot be stored: {b}");
    let (s, b) = a.post(
        "/admin/users",
        &json!({"username": "a\u{0}b", "md5_password": mito::api::md5_password("x"), "admin": false}),
    );
    assert_eq!(s, 400, "{b}");
}

#[test]
fn many_concurrent_requests_are_all_answered() {
    let c = Coordinator::start();
    let a = c.admin();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || (0..25).map(|_| a.get("/users/groups").0).collect::<Vec<_>>())
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|s| *s == 200));
    }
}

#[test]
fn a_removed_worker_or_revoked_user_hears_401_before_a_bad_body_on_the_one_statement_routes() {
    // Submit, report and fetch check their caller inside their own statement; a bad
    // request never reaches it, and the caller must still hear about its token first.
    let c = Coordinator::start();
    let bob = c.user("bob");
    let w = c.worker(&bob, &[], &[]);
    assert_eq!(w.api.delete("/workers").0, 200);
    assert_eq!(w.api.post_raw("/workers/tasks", "application/json", "{").0, 401);
    assert_eq!(w.api.post("/workers/tasks", &json!({"id": 1})).0, 401);
    let new = json!({"new_md5_password": mito::api::md5_password("other")});
    assert_eq!(c.admin().post("/admin/users/bob/password", &new).0, 200);
    assert_eq!(bob.post_raw("/tasks", "application/json", "{").0, 401);
    assert_eq!(bob.post("/tasks/submit", &json!({"tasks": []})).0, 401);
    let mut bad = task("bob", &["true"], &[], 0);
    bad["timeout"] = json!("0s");
    assert_eq!(bob.post("/tasks", &bad).0, 401);
}
