//! Login, tokens and their revocation, password changes.

use crate::harness::*;
use serde_json::json;

fn login_body(user: &str, pw: &str, retain: bool) -> serde_json::Value {
    json!({"username": user, "md5_password": mito::api::md5_password(pw), "retain": retain})
}

fn token_of(body: &str) -> String {
    json(body)["token"].as_str().expect("a token").to_string()
}

#[test]
fn login_and_auth_return_the_username() {
    let c = Coordinator::start();
    let (s, b) = c.anon().post("/login", &login_body("mitosis_admin", "mitosis_admin", false));
    assert_eq!(s, 200, "{b}");
    let t = token_of(&b);
    let (s, b) = c.as_token(&t).get("/auth");
    assert_eq!((s, b.as_str()), (200, "mitosis_admin"));
    // The scheme is case-insensitive, as the peer's.
    let (s, _) = http_raw(&c.url, "GET", "/auth", &[("Authorization", Some(format!("bearer {t}")))], None);
    assert_eq!(s, 200);
}

#[test]
fn wrong_or_unknown_credentials_are_401() {
    let c = Coordinator::start();
    let (s, b) = c.anon().post("/login", &login_body("mitosis_admin", "nope", false));
    assert_eq!((s, msg(&b).as_str()), (401, "Authentication error: Wrong credentials"));
    let (s, _) = c.anon().post("/login", &login_body("ghost", "x", false));
    assert_eq!(s, 401);
}

#[test]
fn a_login_without_retain_revokes_older_tokens_and_with_retain_keeps_them() {
    let c = Coordinator::start();
    c.user("ann");
    let first = token_of(&c.anon().post("/login", &login_body("ann", "ann-pw", false)).1);
    let kept = token_of(&c.anon().post("/login", &login_body("ann", "ann-pw", true)).1);
    assert_eq!(c.as_token(&first).get("/auth").0, 200, "retain keeps other sessions");
    assert_eq!(c.as_token(&kept).get("/auth").0, 200);
    let fresh = token_of(&c.anon().post("/login", &login_body("ann", "ann-pw", false)).1);
    let (s, b) = c.as_token(&first).get("/auth");
    assert_eq!((s, msg(&b).as_str()), (401, "Authentication error: Wrong credentials"));
    assert_eq!(c.as_token(&kept).get("/auth").0, 401);
    assert_eq!(c.as_token(&fresh).get("/auth").0, 200);
}

#[test]
fn garbled_foreign_and_missing_tokens() {
    let c = Coordinator::start();
    let (s, b) = c.as_token("garbage").get("/auth");
    assert_eq!((s, msg(&b).as_str()), (401, "Authentication error: Invalid token"));
    let mut t = c.admin_token.clone();
    t.insert(10, 'A');
    assert_eq!(c.as_token(&t).get("/auth").0, 401);
    assert_eq!(c.as_token("").get("/auth").0, 401);
    let (s, b) = c.anon().get("/auth");
    assert_eq!((s, b.as_str()), (400, "Header of type `authorization` was missing"));
    let (s, _) = http_raw(&c.url, "GET", "/auth", &[("Authorization", Some("Basic abc".into()))], None);
    assert_eq!(s, 400);
}

#[test]
fn expired_tokens_are_refused() {
    let c = Coordinator::start_with(TestDb::new(), &["--access-token-expires-in", "1s"]);
    let t = c.login("mitosis_admin", "mitosis_admin");
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (s, _) = c.as_token(&t).get("/auth");
    assert_eq!(s, 401);
}

#[test]
fn changing_ones_password_returns_a_new_token_and_revokes_the_old() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let body = json!({"old_md5_password": mito::api::md5_password("bob-pw"), "new_md5_password": mito::api::md5_password("new-pw")});
    let (s, b) = bob.post("/users/bob/password", &body);
    assert_eq!(s, 200, "{b}");
    let fresh = token_of(&b);
    assert_eq!(bob.get("/auth").0, 401, "the old token is revoked");
    assert_eq!(c.as_token(&fresh).get("/auth").1, "bob");
    assert_eq!(c.anon().post("/login", &login_body("bob", "new-pw", true)).0, 200);
    assert_eq!(c.anon().post("/login", &login_body("bob", "bob-pw", true)).0, 401);
}

#[test]
fn changing_someone_elses_password_or_with_a_wrong_old_one_is_401() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    c.user("carol");
    let body = json!({"old_md5_password": mito::api::md5_password("carol-pw"), "new_md5_password": mito::api::md5_password("x")});
    assert_eq!(bob.post("/users/carol/password", &body).0, 401);
    let body =
        json!({"old_md5_password": mito::api::md5_password("wrong"), "new_md5_password": mito::api::md5_password("x")});
    assert_eq!(bob.post("/users/bob/password", &body).0, 401);
    assert_eq!(bob.get("/auth").0, 200, "a failed change revokes nothing");
}

#[test]
fn locked_and_deleted_users_cannot_log_in_or_call() {
    let c = Coordinator::start();
    let dan = c.user("dan");
    let (s, b) = c.admin().post("/admin/users/dan/state", &json!({"state": "Locked"}));
    assert_eq!((s, json(&b)["state"].as_str()), (200, Some("Locked")));
    assert_eq!(dan.get("/users/groups").0, 403);
    assert_eq!(c.anon().post("/login", &login_body("dan", "dan-pw", true)).0, 403);
    c.admin().post("/admin/users/dan/state", &json!({"state": "Active"}));
    assert_eq!(dan.get("/users/groups").0, 200);
    let (s, b) = c.admin().delete("/admin/users/dan");
    assert_eq!((s, b.as_str()), (200, r#"{"state":"Deleted"}"#));
    assert_eq!(dan.get("/users/groups").0, 403);
    assert_eq!(c.anon().post("/login", &login_body("dan", "dan-pw", true)).0, 403);
}

#[test]
fn health_and_redis_answer() {
    let c = Coordinator::start();
    assert_eq!(c.anon().get("/health"), (200, r#"{"status":"ok"}"#.to_string()));
    assert_eq!(c.admin().get("/redis"), (200, r#"{"url":null}"#.to_string()));
    assert_eq!(c.anon().get("/redis").0, 400);
}
