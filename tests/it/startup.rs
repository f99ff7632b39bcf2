//! Startup and shutdown: database retries, concurrent migration, signals, admin shutdown,
//! file logging.

use crate::harness::*;
use std::time::Duration;

#[test]
fn two_coordinators_on_one_empty_database_both_come_up() {
    let db = TestDb::new();
    let home_a = TempDir::new("twin");
    let home_b = TempDir::new("twin");
    let (pa, pb) = (free_port(), free_port());
    let la = home_a.path().join("log");
    let lb = home_b.path().join("log");
    let mut a = spawn_coordinator(&home_a, &db.url, pa, &[], &la);
    let mut b = spawn_coordinator(&home_b, &db.url, pb, &[], &lb);
    let ready = |port: u16| {
        (0..600).any(|_| {
            let ok = http(&format!("http://127.0.0.1:{port}"), "GET", "/health", None, None).0 == 200;
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        })
    };
    let (ra, rb) = (ready(pa), ready(pb));
    let _ = (a.kill(), b.kill());
    let _ = (a.wait(), b.wait());
    let logs = format!(
        "{}\n---\n{}",
        std::fs::read_to_string(&la).unwrap_or_default(),
        std::fs::read_to_string(&lb).unwrap_or_default()
    );
    assert!(ra && rb, "both must come up:\n{logs}");
    let mut c = db.connect();
    let versions: i64 = c.query_one("SELECT count(*) FROM schema_version", &[]).unwrap().get(0);
    let admins: i64 = c.query_one("SELECT count(*) FROM users WHERE username = 'mitosis_admin'", &[]).unwrap().get(0);
    assert_eq!(admins, 1);
    assert!(versions >= 1);
    assert_eq!(logs.matches("applying schema migration 1").count(), 1, "{logs}");
}

#[test]
fn a_restart_keeps_the_state_and_does_not_recreate_the_admin() {
    let mut c = Coordinator::start();
    let bob = c.user("bob");
    assert_eq!(bob.post("/groups", &serde_json::json!({"group_name": "keepme"})).0, 200);
    c.stop();
    let db = std::mem::replace(&mut c.db, TestDb::from_url(""));
    let c2 = Coordinator::start_with(db, &["--admin-password", "changed"]);
    // The admin keeps its original password: bootstrap skips an existing admin.
    let body = serde_json::json!({"username": "mitosis_admin", "md5_password": mito::api::md5_password("changed")});
    assert_eq!(c2.anon().post("/login", &body).0, 401);
    let bob2 = c2.as_token(&c2.login("bob", "bob-pw"));
    let (s, b) = bob2.get("/groups/keepme");
    assert_eq!(s, 200, "{b}");
}

#[test]
fn the_coordinator_waits_for_its_database_and_then_comes_up() {
    let admin = TestDb::new();
    // A database that does not exist yet: connecting fails until it is created.
    let missing = format!("{}_later", admin.url);
    let name = missing.rsplit('/').next().unwrap().to_string();
    let home = TempDir::new("wait");
    let port = free_port();
    let log = home.path().join("log");
    let mut child = spawn_coordinator(&home, &missing, port, &[], &log);
    std::thread::sleep(Duration::from_millis(1500));
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(http(&url, "GET", "/health", None, None).0, 0, "must not serve before the database is there");
    assert!(child.try_wait().unwrap().is_none(), "must keep retrying, not exit");
    admin.connect().batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let up = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        http(&url, "GET", "/health", None, None).0 == 200
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = admin.connect().batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    assert!(up, "did not come up after the database appeared:\n{text}");
    assert!(text.contains("attempt 1") && text.contains("attempt 2"), "each attempt is logged:\n{text}");
}

#[test]
fn sigterm_and_sigint_stop_it_with_status_0() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut c = Coordinator::start();
        let status = c.signal(sig).expect("exits within 20 s");
        assert_eq!(status.code(), Some(0), "signal {sig}: {}", c.log_text());
        assert_eq!(c.anon().get("/health").0, 0, "still serving after signal {sig}");
    }
}

#[test]
fn admin_shutdown_needs_the_logged_secret_and_exits_0() {
    let mut c = Coordinator::start();
    let (s, b) = c.admin().post("/admin/shutdown", &serde_json::json!({"secret": "wrong"}));
    assert_eq!(s, 403, "{b}");
    let user = c.user("eve");
    let log = c.log_text();
    let secret = log
        .lines()
        .find_map(|l| l.split("shutdown secret (for `mito client admin shutdown`): ").nth(1))
        .expect("the secret is logged")
        .trim()
        .to_string();
    assert_eq!(user.post("/admin/shutdown", &serde_json::json!({"secret": secret})).0, 403, "non-admins cannot");
    let (s, b) = c.admin().post("/admin/shutdown", &serde_json::json!({"secret": secret}));
    assert_eq!(s, 200, "{b}");
    let status = wait_timeout(c.child.as_mut().unwrap(), Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn file_log_writes_the_given_path() {
    let home = TempDir::new("flog");
    let path = home.path().join("sub/coordinator.log");
    let c = Coordinator::start_with(TestDb::new(), &["--file-log", "--log-path", path.to_str().unwrap()]);
    assert_eq!(c.anon().get("/health").0, 200);
    let text = std::fs::read_to_string(&path).expect("log file exists");
    assert!(text.contains("coordinator listening"), "{text}");
    assert!(!text.contains("mitosis_admin\""), "no secrets: {text}");
}

#[test]
fn file_log_without_a_path_rotates_daily_under_the_cache_dir() {
    let c = Coordinator::start_with(TestDb::new(), &["--file-log"]);
    let dir = c.home.path().join(".cache/mitosis/coordinator");
    let today = &mito::api::time::format_timestamp(std::time::SystemTime::now())[..10];
    let file = dir.join(format!("127.0.0.1:{}.log.{today}", c.port));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(text.contains("coordinator listening"), "{text}");
}

#[test]
fn a_lost_database_connection_is_replaced() {
    let c = Coordinator::start();
    let admin = c.admin();
    assert_eq!(admin.get("/users/groups").0, 200);
    c.db.connect()
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mito-coordinator' AND datname = current_database()")
        .unwrap();
    // One request may fail while the pool notices (503, never a 500 or a crash); the
    // other pooled connections are probed and replaced before they are used.
    let statuses: Vec<u16> = (0..20).map(|_| admin.get("/users/groups").0).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 503).count() <= 1, "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 200, "{statuses:?}");
    assert_eq!(c.anon().get("/health").0, 200);
}
