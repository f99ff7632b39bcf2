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
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len.min(1 << 20) {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(ProxiedRequest { method, path, headers, body })
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
        let (st, regs, up, before) = (stop.clone(), registrations.clone(), upstream.to_string(), Arc::new(before));
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
                    if r.method == "POST" && r.path == "/workers" && regs.fetch_add(1, Ordering::SeqCst) < limit {
                        before();
                    }
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(40)).build();
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
                    let head =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body);
                });
            }
        });
        Proxy { url, stop, registrations }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A login that draws a new signature, signing out every token `user` had.
fn sign_out(url: &str, user: &str) -> String {
    let body =
        json!({"username": user, "md5_password": mito::api::md5_password(&format!("{user}-pw")), "retain": false});
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
    assert!(proxy.registrations.load(Ordering::SeqCst) >= 3, "two refusals, then a registration:\n{}", w.log_text());
    assert!(w.log_text().contains("signed out"), "the refusal is logged:\n{}", w.log_text());
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
    cmd.args(["worker", "-c", &proxy.url, "-u", "alice", "--polling-interval", "1s"])
        .stdin(std::process::Stdio::null());
    cmd.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    while !text().contains("Worker is running") && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
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
        .args(["worker", "-c", &proxy.url, "-u", "alice", "--polling-interval", "1s"])
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
        .args(["worker", "-c", &c.url, "-u", "alice", "-p", "wrong", "--polling-interval", "1s"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("check the user name and password"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15));
}

/// A long-poll fetch in the background; yields (status, body, when it returned).
fn parked_fetch(base: &str, token: &str, wait_secs: u32) -> std::thread::JoinHandle<(u16, String, Instant)> {
    let (base, token) = (base.to_string(), token.to_string());
    std::thread::spawn(move || {
        let (s, b) = http(&base, "GET", &format!("/workers/tasks?wait={wait_secs}"), Some(&token), None);
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
    let cases: [(&Coordinator, &str); 4] = [(&c, "graceful"), (&c, "force"), (&c2, "graceful"), (&c2, "force")];
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
        assert_eq!(s, 401, "a stopped worker's fetch says it is gone ({op}, same coordinator: {same}): {b}");
        assert!(
            took < Duration::from_secs(3),
            "answered within seconds, not at the deadline ({op}, same coordinator: {same}): {took:?}"
        );
    }
}

/// Registers a worker as `user`; with `confirms`, as a mito worker that confirms its claims.
fn register(c: &Coordinator, user: &Api, confirms: bool) -> TestWorker {
    let body = json!({"tags": [], "labels": [], "groups": []}).to_string();
    let headers = [
        ("Authorization", user.token.as_ref().map(|t| format!("Bearer {t}"))),
        (mito::api::CONFIRMS_CLAIMS_HEADER, confirms.then(|| "true".to_string())),
    ];
    let (s, b) = http_raw(&c.url, "POST", "/workers", &headers, Some(("application/json", &body)));
    assert_eq!(s, 200, "register: {b}");
    let v = json(&b);
    TestWorker {
        uuid: v["worker_id"].as_str().unwrap().to_string(),
        api: Api { base: c.url.clone(), token: Some(v["token"].as_str().unwrap().to_string()) },
    }
}

fn state(api: &Api, uuid: &str) -> String {
    let (s, b) = api.get(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "{b}");
    json(&b)["info"]["state"].as_str().unwrap().to_string()
}

/// Polls until the task is in `want`; false if `within` ran out.
fn wait_state(api: &Api, uuid: &str, want: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if state(api, uuid) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A worker that dies while its long-poll is parked closes its connection: the next task
/// is not claimed for it (here or on another coordinator, woken through NOTIFY), it stays
/// Ready and the next worker gets it. These workers do not confirm claims, so no lease
/// would put the task back: only the check of the connection keeps it.
#[test]
fn a_parked_fetch_whose_worker_hung_up_gets_no_task() {
    let c = Coordinator::start();
    let c2 = Coordinator::start_with(TestDb::from_url(&c.db.url), &[]);
    let a = c.user("ann");
    for parked_on in [&c, &c2] {
        let dead = register(&c, &a, false);
        let mut s = TcpStream::connect(("127.0.0.1", parked_on.port)).unwrap();
        let req = format!(
            "GET /workers/tasks?wait=20 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
            dead.api.token.as_ref().unwrap()
        );
        s.write_all(req.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        drop(s);
        std::thread::sleep(Duration::from_millis(200));
        let u = submit(&a, &task("ann", &["true"], &[], 0));
        std::thread::sleep(Duration::from_millis(800));
        let same = std::ptr::eq(parked_on, &c);
        assert_eq!(state(&a, &u), "Ready", "not claimed for the hung-up fetch (same coordinator: {same})");
        let alive = c.worker(&a, &[], &[]);
        let t = alive.fetch().expect("the next worker gets the task");
        assert_eq!(t["uuid"].as_str(), Some(u.as_str()));
        alive.complete(&t, 0);
    }
}

/// A task handed to a worker that confirms claims, but never confirmed (the answer went
/// to a worker that died on the way), is Ready again once the lease ends. A confirmed
/// claim, and a claim of a worker that never confirms (mitosis), are kept.
#[test]
fn an_unconfirmed_claim_goes_back_to_ready_when_its_lease_ends() {
    let c = Coordinator::start_with(TestDb::new(), &["--claim-lease", "2s"]);
    let a = c.user("ann");
    let lost = submit(&a, &task("ann", &["true"], &[], 0));
    let leased = register(&c, &a, true);
    let handed = Instant::now();
    assert_eq!(leased.fetch().unwrap()["uuid"].as_str(), Some(lost.as_str()));
    let confirmed = submit(&a, &task("ann", &["true"], &[], 0));
    let confirming = register(&c, &a, true);
    let t_confirmed = confirming.fetch().unwrap();
    assert_eq!(confirming.api.post("/workers/heartbeat", &json!(null)).0, 200);
    let old = submit(&a, &task("ann", &["true"], &[], 0));
    let mitosis = register(&c, &a, false);
    let t_old = mitosis.fetch().unwrap();
    assert_eq!(state(&a, &lost), "Running");
    assert!(wait_state(&a, &lost, "Ready", Duration::from_secs(8)), "the unconfirmed claim is put back");
    let took = handed.elapsed();
    assert!(took >= Duration::from_secs(2), "not before the lease ends: {took:?}");
    assert_eq!(state(&a, &confirmed), "Running", "a confirmed claim is kept");
    assert_eq!(state(&a, &old), "Running", "a worker that never confirms keeps today's behaviour");
    let next = c.worker(&a, &[], &[]);
    let t = next.fetch().expect("another worker gets the task");
    assert_eq!(t["uuid"].as_str(), Some(lost.as_str()));
    next.complete(&t, 0);
    assert_eq!(leased.fetch(), None, "the worker that lost it may fetch again");
    confirming.complete(&t_confirmed, 0);
    mitosis.complete(&t_old, 0);
}

/// The mito worker confirms a task as soon as it starts it, so even a short lease never
/// takes a running task away from it.
#[test]
fn the_mito_worker_confirms_its_task_at_once() {
    let c = Coordinator::start_with(TestDb::new(), &["--claim-lease", "1s"]);
    let a = c.user("ann");
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    w.id();
    let u = crate::worker::submit(&a, "ann", &["sleep", "3"], "1m", false);
    let info = crate::worker::wait_committed(&a, &u, Duration::from_secs(30));
    assert_eq!(info["state"], "Finished", "{info}\n{}", w.log_text());
    assert!(!c.log_text().contains("not confirmed"), "{}", c.log_text());
}

/// kill -9 of one of two idle long-polling workers: new tasks all finish on the other
/// within seconds (before, one could be claimed for the dead worker's parked fetch and sit
/// Running until heartbeat_timeout).
#[test]
fn tasks_submitted_after_an_idle_worker_is_killed_finish_within_seconds() {
    let c = Coordinator::start();
    let a = c.user("ann");
    let mut victim = Worker::start(&c.url, "ann", "ann-pw", &[]);
    let survivor = Worker::start(&c.url, "ann", "ann-pw", &[]);
    victim.id();
    survivor.id();
    // Both are parked in their long-poll by now.
    std::thread::sleep(Duration::from_millis(500));
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let started = Instant::now();
    let uuids: Vec<String> = (0..4).map(|_| crate::worker::submit(&a, "ann", &["true"], "1m", false)).collect();
    for u in &uuids {
        let info = crate::worker::wait_committed(&a, u, Duration::from_secs(15));
        assert_eq!(info["state"], "Finished", "{info}");
    }
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}

/// A coordinator outage longer than the lease keeps workers from confirming; the
/// coordinator that comes back gives each lease a full term, so a worker that confirms
/// right after the restart keeps its task (it would otherwise run twice).
#[test]
fn a_coordinator_outage_does_not_count_against_a_lease() {
    let mut c = Coordinator::start_with(TestDb::new(), &["--claim-lease", "2s"]);
    let a = c.user("ann");
    let u = submit(&a, &task("ann", &["true"], &[], 0));
    let w = register(&c, &a, true);
    let t = w.fetch().unwrap();
    c.stop();
    std::thread::sleep(Duration::from_millis(3000));
    let db = std::mem::replace(&mut c.db, TestDb::from_url(""));
    let c2 = Coordinator::start_with(db, &["--claim-lease", "2s"]);
    let w = TestWorker { uuid: w.uuid, api: Api { base: c2.url.clone(), token: w.api.token } };
    assert_eq!(w.api.post("/workers/heartbeat", &json!(null)).0, 200);
    let a = c2.as_token(&c2.login("ann", "ann-pw"));
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(state(&a, &u), "Running", "confirmed after the restart, the claim is kept\n{}", c2.log_text());
    w.complete(&t, 0);
}

/// The login again after a sign-out keeps the signature, even for a worker that logs in
/// without `--retain`: signing out the other login in turn would have two workers started
/// together take turns signing each other out.
#[test]
fn logging_in_again_does_not_sign_out_the_other_login() {
    let c = Coordinator::start();
    c.user("alice");
    let other = Arc::new(std::sync::Mutex::new(String::new()));
    let (up, o) = (c.url.clone(), other.clone());
    let proxy = Proxy::start(&c.url, 1, move || {
        *o.lock().unwrap() = sign_out(&up, "alice");
    });
    let home = TempDir::new("worker-noretain");
    let log = home.path().join("worker.log");
    let mut cmd = mito(home.path());
    cmd.args(["worker", "-c", &proxy.url, "-u", "alice", "-p", "alice-pw", "--polling-interval", "1s"]);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !text().contains("Worker is running") && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text().contains("Worker is running"), "{}", text());
    let token = other.lock().unwrap().clone();
    let (s, b) = http(&c.url, "GET", "/auth", Some(&token), None);
    assert_eq!((s, b.trim()), (200, "alice"), "the login that signed the worker out is still valid");
}

/// A claim racing the removal of its worker must not leave the task Running on a worker
/// that no longer exists: nothing would ever requeue it (a mitosis worker holds no lease).
/// The test takes the worker's row as a removal does, lets a fetch run into that lock,
/// then removes the worker the way `workers::remove` does.
#[test]
fn a_claim_racing_its_workers_removal_leaves_the_task_ready() {
    let c = Coordinator::start();
    let u = c.user("rita");
    let w = register(&c, &u, false);
    let uuid = submit(&u, &task("rita", &["true"], &[], 0));
    let worker_id = uuid::Uuid::parse_str(&w.uuid).unwrap();
    let mut db = c.db.connect();
    let mut tx = db.transaction().unwrap();
    let id: i64 = tx.query_one("SELECT id FROM workers WHERE worker_id = $1 FOR UPDATE", &[&worker_id]).unwrap().get(0);
    let api = w.api.clone();
    let fetch = std::thread::spawn(move || api.get("/workers/tasks"));
    let mut watcher = c.db.connect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the fetch never waited for the worker's row");
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.execute("UPDATE active_tasks SET state = 1, assigned_worker = NULL WHERE assigned_worker = $1", &[&id]).unwrap();
    tx.execute("DELETE FROM workers WHERE id = $1", &[&id]).unwrap();
    tx.commit().unwrap();
    let (s, b) = fetch.join().unwrap();
    let task_uuid = uuid::Uuid::parse_str(&uuid).unwrap();
    let row = db.query_one("SELECT state, assigned_worker FROM active_tasks WHERE uuid = $1", &[&task_uuid]).unwrap();
    let (st, assigned): (i32, Option<i64>) = (row.get(0), row.get(1));
    assert_eq!((st, assigned), (1, None), "the task went to a removed worker (fetch answered {s} {b})");
}
