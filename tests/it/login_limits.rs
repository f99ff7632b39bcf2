//! Password guessing at `POST /login`: an unknown user costs as much as a wrong password
//! (timing tells nothing), and failed logins are limited per user name and per address,
//! with 429 and `Retry-After` on the wire. The windows are configured short so the tests
//! stay quick.

use crate::harness::*;
use crate::worker::Worker;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A coordinator with these `[coordinator]` settings (TOML lines) in a config file.
fn coordinator(settings: &str) -> (Coordinator, TempDir) {
    let dir = TempDir::new("login-limits");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("[coordinator]\n{settings}\n")).unwrap();
    let c = Coordinator::start_with(TestDb::new(), &["--config", path.to_str().unwrap()]);
    (c, dir)
}

/// `POST /login` over a raw socket: (status, the Retry-After header, body).
fn login(c: &Coordinator, user: &str, password: &str) -> (u16, Option<String>, String) {
    let body = serde_json::json!({"username": user, "md5_password": mito::api::md5_password(password), "retain": true})
        .to_string();
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let retry_after = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("retry-after"))
            .map(|(_, v)| v.trim().to_string())
    });
    (status, retry_after, body.to_string())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn an_unknown_user_takes_as_long_to_refuse_as_a_wrong_password() {
    let (c, _dir) = coordinator("login_failure_limit = 1000\nlogin_address_failure_limit = 1000");
    c.user("ann");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let t = Instant::now();
        assert_eq!(login(&c, "ann", "wrong").0, 401);
        known.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(login(&c, &format!("ghost{i}"), "wrong").0, 401);
        unknown.push(t.elapsed());
    }
    let (k, u) = (median(known), median(unknown));
    // The password hash dominates a refusal; without it an unknown user is refused many
    // times faster. A third leaves room for a busy machine.
    assert!(u * 3 >= k, "unknown user refused in {u:?}, wrong password in {k:?}: the timing tells who exists");
}

#[test]
fn failed_logins_block_the_user_name_with_429_and_retry_after() {
    let (c, _dir) = coordinator("login_failure_limit = 3\nlogin_address_failure_limit = 100\nlogin_failure_window = \"1m\"\nlogin_block = \"2s\"");
    c.user("ann");
    c.user("bob");
    for _ in 0..3 {
        assert_eq!(login(&c, "ann", "guess").0, 401);
    }
    // Blocked: even the right password gets 429 now, so guessing cannot go on.
    let (s, retry, body) = login(&c, "ann", "ann-pw");
    assert_eq!(s, 429, "{body}");
    let secs: u64 =
        retry.as_deref().and_then(|r| r.parse().ok()).unwrap_or_else(|| panic!("no Retry-After: {retry:?}"));
    assert!((1..=2).contains(&secs), "Retry-After {secs}");
    assert!(msg(&body).contains("too many failed logins for user ann") && msg(&body).contains("retry after"), "{body}");
    // Another user from the same address is not affected.
    assert_eq!(login(&c, "bob", "bob-pw").0, 200);
    // Unknown names are limited alike, so a 429 does not tell that a user exists.
    for _ in 0..3 {
        assert_eq!(login(&c, "nobody", "guess").0, 401);
    }
    assert_eq!(login(&c, "nobody", "guess").0, 429);
    std::thread::sleep(Duration::from_secs(secs) + Duration::from_millis(200));
    let (s, _, body) = login(&c, "ann", "ann-pw");
    assert_eq!(s, 200, "the block is over: {body}");
}

#[test]
fn failed_logins_block_the_address_across_user_names() {
    let (c, _dir) = coordinator("login_failure_limit = 100\nlogin_address_failure_limit = 4\nlogin_failure_window = \"1m\"\nlogin_block = \"1m\"");
    c.user("ann");
    for i in 0..4 {
        assert_eq!(login(&c, &format!("user{i}"), "guess").0, 401);
    }
    let (s, retry, body) = login(&c, "ann", "ann-pw");
    assert_eq!(s, 429, "{body}");
    assert!(retry.is_some(), "no Retry-After");
    assert!(msg(&body).contains("from this address"), "{body}");
}

#[test]
fn a_worker_waits_out_a_login_block_instead_of_exiting() {
    let (c, _dir) = coordinator("login_failure_limit = 2\nlogin_failure_window = \"1m\"\nlogin_block = \"2s\"");
    c.user("ann");
    for _ in 0..2 {
        assert_eq!(login(&c, "ann", "guess").0, 401);
    }
    assert_eq!(login(&c, "ann", "ann-pw").0, 429);
    let started = Instant::now();
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    assert!(w.wait_log("Worker is running", Duration::from_secs(20)), "the worker did not get in:\n{}", w.log_text());
    assert!(w.log_text().contains("Retry-After"), "the worker did not say it waited:\n{}", w.log_text());
    assert!(started.elapsed() >= Duration::from_millis(900), "it cannot have waited the block out");
}
