//! Faults that should cost seconds: a worker signed out while it starts, a worker stopped
//! while its fetch is parked, a fetch whose worker is gone.

use crate::harness::*;
use crate::worker::Worker;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request as the proxy read it.
struct ProxiedRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(s: &mut TcpStream) -> Option<ProxiedRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 64 << 10 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len.min(1 << 20) {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(ProxiedRequest {
        method,
        path,
        headers,
        body,
    })
}

/// A proxy in front of a coordinator that runs `before` ahead of the first `limit`
/// registrations (`POST /workers`), to stage what another process does at that moment.
struct Proxy {
    url: String,
    stop: Arc<AtomicBool>,
    pub registrations: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: &str, limit: usize, before: impl Fn() + Send + Sync + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let registrations = Arc::new(AtomicUsize::new(0));
        let (st, regs, up, before) = (
            stop.clone(),
            registrations.clone(),
            upstream.to_string(),
            Arc::new(before),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (regs, up, before) = (regs.clone(), up.clone(), before.clone());
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let Some(r) = read_request(&mut s) else {
                        return;
                    };
                    if r.method == "POST"
                        && r.path == "/workers"
                        && regs.fetch_add(1, Ordering::SeqCst) < limit
                    {
                        before();
                    }
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(40))
                        .build();
                    let mut req = agent.request(&r.method, &format!("{up}{}", r.path));
                    for (k, v) in &r.headers {
                        if k == "authorization" || k == "content-type" {
                            req = req.set(k, v);
                        }
                    }
                    let resp = match req.send_bytes(&r.body) {
                        Ok(x) | Err(ureq::Error::Status(_, x)) => x,
                        Err(_) => return,
                    };
                    let status = resp.status();
                    let mut body = Vec::new();
                    let _ = resp.into_reader().take(10 << 20).read_to_end(&mut body);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body);
                });
            }
        });
        Proxy {
            url,
            stop,
            registrations,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A login that draws a new signature, signing out every token `user` had.
fn sign_out(url: &str, user: &str) -> String {
    let body = json!({"username": user, "md5_password": mito::api::md5_password(&format!("{user}-pw")), "retain": false});
    let (s, b) = http(url, "POST", "/login", None, Some(&body.to_string()));
    assert_eq!(s, 200, "{b}");
    json(&b)["token"].as_str().unwrap().to_string()
}

#[test]
fn a_worker_signed_out_while_registering_logs_in_again() {
    let c = Coordinator::start();
    c.user("alice");
    let up = c.url.clone();
    let proxy = Proxy::start(&c.url, 2, move || {
        sign_out(&up, "alice");
    });
    let w = Worker::start(&proxy.url, "alice", "alice-pw", &[]);
    w.id();
    assert!(
        proxy.registrations.load(Ordering::SeqCst) >= 3,
        "two refusals, then a registration:\n{}",
        w.log_text()
    );
    assert!(
        w.log_text().contains("signed out"),
        "the refusal is logged:\n{}",
        w.log_text()
    );
}

#[test]
fn a_worker_without_a_password_takes_the_token_the_other_login_saved() {
    let c = Coordinator::start();
    c.user("alice");
    let home = TempDir::new("worker-nopw");
    let cred = home.path().join(".config/mitosis/credentials");
    std::fs::create_dir_all(cred.parent().unwrap()).unwrap();
    std::fs::write(&cred, format!("alice:{}", c.login("alice", "alice-pw"))).unwrap();
    // The other login is a client that saves its token in the shared credentials file.
    let (up, file) = (c.url.clone(), cred.clone());
    let proxy = Proxy::start(&c.url, 1, move || {
        let t = sign_out(&up, "alice");
        std::fs::write(&file, format!("alice:{t}")).unwrap();
    });
    let log = home.path().join("worker.log");
    let mut cmd = mito(home.path());
    cmd.args([
        "worker",
        "-c",
        &proxy.url,
        "-u",
        "alice",
        "--polling-interval",
        "1s",
    ])
    .stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    while !text().contains("Worker is running")
        && Instant::now() < deadline
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text().contains("Worker is running"), "{}", text());

    // The entry it was refused with is still there and it has no password: it says so and
    // exits, instead of trying the same token forever.
    let proxy = Proxy::start(&c.url, 1, {
        let up = c.url.clone();
        move || {
            sign_out(&up, "alice");
        }
    });
    let out = mito(home.path())
        .args([
            "worker",
            "-c",
            &proxy.url,
            "-u",
            "alice",
            "--polling-interval",
            "1s",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--password"), "{err}");
}

#[test]
fn a_worker_with_a_wrong_password_exits_at_once() {
    let c = Coordinator::start();
    c.user("alice");
    let home = TempDir::new("worker-badpw");
    let start = Instant::now();
    let out = mito(home.path())
        .args([
            "worker",
            "-c",
            &c.url,
            "-u",
            "alice",
            "-p",
            "wrong",
            "--polling-interval",
            "1s",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("check the user name and password"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15));
}

/// A long-poll fetch in the background; yields (status, body, when it returned).
fn parked_fetch(
    base: &str,
    token: &str,
    wait_secs: u32,
) -> std::thread::JoinHandle<(u16, String, Instant)> {
    let (base, token) = (base.to_string(), token.to_string());
    std::thread::spawn(move || {
        let (s, b) = http(
            &base,
            "GET",
            &format!("/workers/tasks?wait={wait_secs}"),
            Some(&token),
            None,
        );
        (s, b, Instant::now())
    })
}

#[test]
fn a_stopped_worker_hears_it_in_its_parked_fetch_on_every_coordinator() {
    let c = Coordinator::start();
    let c2 = Coordinator::start_with(TestDb::from_url(&c.db.url), &[]);
    let a = c.user("ann");
    let admin = c.admin();
    // (coordinator the fetch parks on, how the worker is stopped through the first one)
    let cases: [(&Coordinator, &str); 4] = [
        (&c, "graceful"),
        (&c, "force"),
        (&c2, "graceful"),
        (&c2, "force"),
    ];
    for (parked_on, op) in cases {
        let w = c.worker(&a, &[], &[]);
        let token = w.api.token.clone().unwrap();
        let fetch = parked_fetch(&parked_on.url, &token, 20);
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!fetch.is_finished(), "the fetch parks");
        let stopped = Instant::now();
        let path = if op == "graceful" {
            format!("/workers/{}?op={op}", w.uuid)
        } else {
            format!("/admin/workers/{}?op={op}", w.uuid)
        };
        let api = if op == "graceful" { &a } else { &admin };
        assert_eq!(api.delete(&path).0, 200, "{op}");
        let (s, b, at) = fetch.join().unwrap();
        let took = at.saturating_duration_since(stopped);
        let same = std::ptr::eq(parked_on, &c);
        assert_eq!(
            s, 401,
            "a stopped worker's fetch says it is gone ({op}, same coordinator: {same}): {b}"
        );
        assert!(took < Duration::from_secs(3), "answered within seconds, not at the deadline ({op}, same coordinator: {same}): {took:?}");
    }
}
