//! With Redis configured, clients get a read-only URL and the ACL users exist.

use crate::harness::*;
use std::sync::Mutex;

/// The ACL users are global to the shared redis-server: one test at a time.
pub(crate) static REDIS: Mutex<()> = Mutex::new(());

fn con(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().expect("connect with the handed-out URL")
}

#[test]
fn clients_get_a_read_and_subscribe_only_redis_url() {
    let _one = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let c = Coordinator::start_with(TestDb::new(), &["--redis", redis_url()]);
    let (s, b) = c.admin().get("/redis");
    assert_eq!(s, 200, "{b}");
    let url = json(&b)["url"].as_str().expect("a URL").to_string();
    assert!(url.starts_with("redis://mitosis_client:") && url.ends_with("/?protocol=resp3"), "{url}");
    let mut client = con(&url.replace("/?protocol=resp3", ""));
    let v: Option<String> = redis::cmd("GET").arg("task:x").query(&mut client).unwrap();
    assert_eq!(v, None);
    let err = redis::cmd("SET").arg("task:x").arg("1").query::<()>(&mut client).unwrap_err();
    assert!(err.to_string().contains("NOPERM") || err.to_string().to_lowercase().contains("permission"), "{err}");
    let err = redis::cmd("GET").arg("other").query::<Option<String>>(&mut client).unwrap_err();
    assert!(err.to_string().contains("NOPERM") || err.to_string().to_lowercase().contains("permission"), "{err}");
}

#[test]
fn given_passwords_are_used() {
    let _one = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let c = Coordinator::start_with(
        TestDb::new(),
        &["--redis", redis_url(), "--redis-client-password", "clientpw", "--redis-worker-password", "workerpw"],
    );
    let (_, b) = c.admin().get("/redis");
    assert!(json(&b)["url"].as_str().unwrap().starts_with("redis://mitosis_client:clientpw@"), "{b}");
    let hp = redis_url().rsplit('@').next().unwrap();
    let mut worker = con(&format!("redis://mitosis_worker:workerpw@{hp}"));
    redis::cmd("SET").arg("task:y").arg("11").query::<()>(&mut worker).expect("workers may write task keys");
}

#[test]
fn an_unreachable_redis_is_a_clear_startup_error() {
    let home = TempDir::new("redis-down");
    let log = home.path().join("log");
    let db = TestDb::new();
    let port = free_port();
    let mut child =
        spawn_coordinator(&home, &db.url, port, &["--redis", &format!("redis://127.0.0.1:{}", free_port())], &log);
    let status = wait_timeout(&mut child, std::time::Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cannot connect to redis"), "{text}");
}

#[test]
fn replicas_sharing_a_key_hand_out_the_same_urls() {
    let _one = REDIS.lock().unwrap_or_else(|e| e.into_inner());
    let a = Coordinator::start_with(TestDb::new(), &["--redis", redis_url()]);
    let (_, first) = a.admin().get("/redis");
    let b = Coordinator::start_with(TestDb::new(), &["--redis", redis_url()]);
    let (_, second) = b.admin().get("/redis");
    assert_eq!(first, second, "a second replica must not revoke the first one's URLs");
    let url = json(&first)["url"].as_str().unwrap().replace("/?protocol=resp3", "");
    let mut c = con(&url);
    assert!(redis::cmd("GET").arg("task:z").query::<Option<String>>(&mut c).is_ok());
}
