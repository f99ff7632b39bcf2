//! The HTTP layer under hostile clients, over raw sockets: huge or ambiguous body lengths,
//! endless header lines, slow and idle clients, too many connections, file descriptors
//! running out, and object transfers that stall or misbehave.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A coordinator with `toml` in its `[coordinator]` table (plus `flags`); the returned
/// directory holds the config file and must outlive the coordinator.
fn start(toml: &str, flags: &[&str]) -> (Coordinator, TempDir) {
    let dir = TempDir::new("httpcfg");
    let path = dir.path().join("coordinator.toml");
    std::fs::write(&path, format!("[coordinator]\n{toml}\n")).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(flags);
    (Coordinator::start_with(TestDb::new(), &args), dir)
}

fn connect(c: &Coordinator) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", c.port)).expect("connect to the coordinator");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A response as read from the wire.
#[derive(Debug, Default)]
struct Wire {
    status: u16,
    head: String,
    body: String,
}

impl Wire {
    fn closes(&self) -> bool {
        self.head.to_ascii_lowercase().contains("connection: close")
    }
}

/// Reads one response (head, then Content-Length bytes of body). None when the
/// connection ends (EOF, reset) or stays silent for the socket's read timeout first.
fn read_response(s: &mut TcpStream) -> Option<Wire> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    s.read_exact(&mut body).ok()?;
    Some(Wire { status, head, body: String::from_utf8_lossy(&body).to_string() })
}

/// Whether the server ends the connection (EOF or reset) within the read timeout.
fn ends(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Sends raw bytes on a fresh connection and reads the answer.
fn exchange(c: &Coordinator, raw: &[u8]) -> (Option<Wire>, TcpStream) {
    let mut s = connect(c);
    let _ = s.write_all(raw);
    let w = read_response(&mut s);
    (w, s)
}

/// GET /health on a fresh connection; the status and how long it took.
fn timed_health(c: &Coordinator) -> (u16, Duration) {
    let t = Instant::now();
    let (w, _) = exchange(c, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    (w.map_or(0, |w| w.status), t.elapsed())
}

fn login_body() -> String {
    serde_json::json!({"username": "mitosis_admin", "md5_password": mito::api::md5_password("mitosis_admin"), "retain": true})
        .to_string()
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// How many threads of each name the process has, e.g. `http-conn ×3, main ×1`.
fn thread_names(pid: u32) -> String {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        *names.entry(name.trim().to_string()).or_default() += 1;
    }
    names.iter().map(|(n, c)| format!("{n} ×{c}")).collect::<Vec<_>>().join(", ")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

fn alive(c: &mut Coordinator) -> bool {
    matches!(c.child.as_mut().unwrap().try_wait(), Ok(None))
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a pointer to a live struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn a_huge_content_length_is_refused_unread_and_kills_nothing() {
    let (mut c, _cfg) = start("", &["--http-threads", "2"]);
    // More requests than handler threads: a request that took its thread down (or the
    // process) would show.
    for len in ["10000000000000", "18446744073709551615", "10000000000000", "18446744073709551615"] {
        let raw = format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        );
        let (w, mut s) = exchange(&c, raw.as_bytes());
        let w = w.unwrap_or_else(|| panic!("no answer to Content-Length {len}:\n{}", c.log_text()));
        assert_eq!(w.status, 413, "{w:?}");
        assert!(w.body.contains("2097152"), "the message names the limit: {w:?}");
        assert!(w.closes(), "the connection is closed, not drained: {w:?}");
        assert!(ends(&mut s), "the server closes the connection");
    }
    assert!(alive(&mut c), "the coordinator died:\n{}", c.log_text());
    let (s, t) = timed_health(&c);
    assert_eq!(s, 200, "{}", c.log_text());
    assert!(t < Duration::from_secs(1), "{t:?}");
}

#[test]
fn ambiguous_or_invalid_body_framing_is_refused() {
    let (c, _cfg) = start("", &[]);
    let body = login_body();
    let n = body.len();
    let chunked = format!("{n:x}\r\n{body}\r\n0\r\n\r\n");
    let cases: Vec<(String, u16)> = vec![
        // The same length twice: a proxy may still take either header.
        (format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}"), 400),
        (format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nContent-Length: 5\r\n\r\n{body}"), 400),
        (format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked}"), 400),
        (format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"), 400),
        ("GET /health HTTP/1.1\r\nContent-Length: 100000000000000000000\r\n\r\n".into(), 400),
        ("GET /health HTTP/1.1\r\nContent-Length: +0\r\n\r\n".into(), 400),
        ("GET /health HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(), 501),
    ];
    for (raw, want) in cases {
        let (w, mut s) = exchange(&c, raw.as_bytes());
        let w = w.unwrap_or_else(|| panic!("no answer to {raw:?}"));
        assert_eq!(w.status, want, "{raw:?} -> {w:?}");
        assert!(!w.body.is_empty() && w.closes(), "{w:?}");
        assert!(ends(&mut s), "the connection is closed after {raw:?}");
    }
    // Unambiguous framing still works, chunked included.
    let raw = format!(
        "POST /login HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
    );
    assert_eq!(exchange(&c, raw.as_bytes()).0.map(|w| w.status), Some(200));
    let raw = format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n{body}");
    assert_eq!(exchange(&c, raw.as_bytes()).0.map(|w| w.status), Some(200));
}

#[test]
fn oversized_request_lines_and_headers_are_refused() {
    let (mut c, _cfg) = start("", &[]);
    let long = "a".repeat(9000);
    let (w, mut s) = exchange(&c, format!("GET /{long} HTTP/1.1\r\n\r\n").as_bytes());
    let w = w.expect("an answer to a long request line");
    assert_eq!(w.status, 414, "{w:?}");
    assert!(w.body.contains("8192") && w.closes(), "{w:?}");
    assert!(ends(&mut s));

    let (w, _) = exchange(&c, format!("GET /health HTTP/1.1\r\nX-Long: {long}\r\n\r\n").as_bytes());
    let w = w.expect("an answer to a long header line");
    assert_eq!(w.status, 431, "{w:?}");
    assert!(w.body.contains("8192") && w.body.contains("65536"), "{w:?}");

    // Each line is short; all of them together are not.
    let many: String = (0..20).map(|i| format!("X-H{i}: {}\r\n", "b".repeat(4000))).collect();
    let (w, _) = exchange(&c, format!("GET /health HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(w.map(|w| w.status), Some(431));

    // A header line that never ends costs the server nothing: it stops reading at the cap.
    let pid = c.child.as_ref().unwrap().id();
    let before = rss_kib(pid);
    let mut s = connect(&c);
    let chunk = vec![b'z'; 64 * 1024];
    let _ = s.write_all(b"GET /health HTTP/1.1\r\nX-Endless: ");
    for _ in 0..256 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    assert!(ends(&mut s), "the connection is closed");
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(grown < 4096, "RSS grew by {grown} KiB");
    assert!(alive(&mut c));
    assert_eq!(timed_health(&c).0, 200);
}

#[test]
fn slow_clients_hold_no_handler_thread_and_time_out() {
    let (c, _cfg) = start("header_timeout = \"1s\"\nbody_timeout = \"1s\"\n", &["--http-threads", "2"]);
    // Bodies declared and barely started, and headers begun and never finished.
    let mut slow_bodies: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&c);
            s.write_all(b"POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
                .unwrap();
            s
        })
        .collect();
    let mut slow_headers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&c);
            s.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let (s, t) = timed_health(&c);
        assert_eq!(s, 200);
        assert!(t < Duration::from_secs(1), "/health took {t:?} with slow clients around");
    }
    login_within_a_second(&c);

    // The server gives up on them after the timeouts instead of waiting forever.
    for s in &mut slow_headers {
        let w = read_response(s).expect("a 408 once the header time is up");
        assert_eq!(w.status, 408, "{w:?}");
        assert!(ends(s));
    }
    for s in &mut slow_bodies {
        assert!(ends(s), "a stalled body ends its connection");
    }
    // An idle keep-alive connection is closed quietly after the header timeout.
    let mut idle = connect(&c);
    idle.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).map(|w| w.status), Some(200));
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no response is sent on an idle connection: {:?}", String::from_utf8_lossy(&rest));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn connections_beyond_the_cap_get_503_and_running_out_of_fds_does_not_deafen() {
    let (mut c, _cfg) = start("max_connections = 16\n", &[]);
    let idle: Vec<TcpStream> = (0..16).map(|_| connect(&c)).collect();
    // Accepting the idle ones may lag behind under load: a connection that still fit in
    // waits silently for its request, so ask again until the cap shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (w, mut s) = loop {
        let mut s = connect(&c);
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        if let Some(w) = read_response(&mut s) {
            break (w, s);
        }
        assert!(Instant::now() < deadline, "a connection over the cap is never answered");
    };
    assert_eq!(w.status, 503, "{w:?}");
    assert!(w.body.contains("too many open connections") && w.closes(), "{w:?}");
    assert!(ends(&mut s));
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(3);
    while timed_health(&c).0 != 200 {
        assert!(Instant::now() < deadline, "the coordinator does not serve again after the idle connections left");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Now let file descriptors run out: the process keeps only a few to spare.
    let pid = c.child.as_ref().unwrap().id();
    let used = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let lim = libc::rlimit { rlim_cur: used + 12, rlim_max: used + 12 };
    // SAFETY: prlimit on our own child, with a pointer to a live struct.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let hogs: Vec<TcpStream> = (0..30).filter_map(|_| TcpStream::connect(("127.0.0.1", c.port)).ok()).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Running out shows in accept(), or in duplicating the accepted socket.
    while !["cannot accept a connection", "cannot set up a connection"].iter().any(|m| c.log_text().contains(m)) {
        assert!(
            Instant::now() < deadline,
            "accept never ran out of file descriptors ({used} in use before, {} now, {} connected):\n{}",
            std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
            hogs.len(),
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(5);
    while timed_health(&c).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the coordinator went deaf after file descriptors ran out:\n{}",
            c.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(&mut c));
}

#[test]
fn a_thousand_idle_connections_and_slow_bodies_leave_the_api_responsive() {
    let have = raise_nofile();
    // This process holds one fd per connection; the coordinator two.
    let conns: usize = if have >= 2600 { 1000 } else { (have as usize).saturating_sub(100) / 2 };
    let http_threads = 4;
    let (c, _cfg) = start("", &["--http-threads", "4"]);
    let pid = c.child.as_ref().unwrap().id();
    let admin = c.admin();
    let base_threads = threads_of(pid);

    let idle: Vec<TcpStream> = (0..conns).map(|_| connect(&c)).collect();
    let slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&c);
            s.write_all(b"POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let (s, t) = timed_health(&c);
    assert_eq!(s, 200);
    assert!(t < Duration::from_secs(1), "/health took {t:?}");
    let t = Instant::now();
    let (s, b) = admin.post("/tasks", &task("mitosis_admin", &["true"], &[], 0));
    assert_eq!(s, 200, "{b}");
    assert!(t.elapsed() < Duration::from_secs(1), "a submit took {:?}", t.elapsed());

    // The documented budget: one thread per open connection, the handler threads, and a
    // fixed few (README: Connection budget).
    let threads = threads_of(pid);
    let open = conns + slow.len() + 2;
    assert!(
        threads <= open + http_threads + 24,
        "{threads} threads for {open} connections and {http_threads} handlers (idle: {base_threads})"
    );
    assert!(threads >= conns, "one thread per connection was expected, found {threads}");
    drop(idle);
    drop(slow);
}

#[test]
fn object_transfer_slots_come_back_and_stalled_uploads_time_out() {
    let (c, _cfg) = start("body_timeout = \"1s\"\n", &[]);
    let bob = c.user("bob");
    let strip = |url: &str| -> String {
        let rest = url.split_once("://").unwrap().1;
        format!("/{}", rest.split_once('/').unwrap().1)
    };
    let (s, b) = bob.post("/groups/bob/attachments", &serde_json::json!({"key": "a.bin", "content_length": 5}));
    assert_eq!(s, 200, "{b}");
    let put = strip(json(&b)["url"].as_str().unwrap());
    let raw = format!("PUT {put} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(exchange(&c, raw.as_bytes()).0.map(|w| w.status), Some(200));
    let (s, b) = bob.get("/groups/bob/download/attachments/a.bin");
    assert_eq!(s, 200, "{b}");
    let get = strip(json(&b)["url"].as_str().unwrap());

    // More misbehaving downloads than there are transfer slots (64).
    for _ in 0..70 {
        let raw = format!("GET {get} HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        let (w, _) = exchange(&c, raw.as_bytes());
        let w = w.expect("an answer");
        assert_eq!((w.status, w.body.as_str()), (200, "hello"), "{w:?}");
    }
    let raw = format!("GET {get} HTTP/1.1\r\n\r\n");
    let (w, _) = exchange(&c, raw.as_bytes());
    assert_eq!(w.map(|w| (w.status, w.body)), Some((200, "hello".to_string())));

    // An upload that stalls gives its thread and slot back after body_timeout.
    let len = 3 << 20;
    let (s, b) = bob.post("/groups/bob/attachments", &serde_json::json!({"key": "big.bin", "content_length": len}));
    assert_eq!(s, 200, "{b}");
    let put = strip(json(&b)["url"].as_str().unwrap());
    let mut s = connect(&c);
    s.write_all(format!("PUT {put} HTTP/1.1\r\nContent-Length: {len}\r\n\r\n0123456789").as_bytes()).unwrap();
    let t = Instant::now();
    let w = read_response(&mut s).expect("an answer once the upload stalls");
    assert_eq!(w.status, 400, "{w:?}");
    assert!(w.body.contains("broke off"), "{w:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn a_request_that_closes_its_connection_keeps_its_place_under_the_cap_until_answered() {
    let (c, _cfg) = start("max_connections = 8\nheader_timeout = \"1s\"\n", &[]);
    let ann = c.user("ann");
    let w = c.worker(&ann, &[], &[]);
    let token = w.api.token.clone().unwrap();
    // Long-polls that close their connection once answered: while they wait, they are
    // open connections (before, their connection threads ended at once and any number of
    // them could queue up).
    let pid = c.child.as_ref().unwrap().id();
    let sockets = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                    .count()
            })
            .unwrap_or(0)
    };
    // The connections of the calls above close as their clients drop them, or at the
    // latest after header_timeout: only then does the count below start from idle.
    std::thread::sleep(Duration::from_millis(1500));
    let before = sockets();
    let parked: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(&c);
            let raw = format!(
                "GET /workers/tasks?wait=5 HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(raw.as_bytes()).unwrap();
            s
        })
        .collect();
    // Until the accept loop has taken all eight (slow on a loaded machine), a probe could
    // still find room; each accepted connection holds two descriptors.
    let deadline = Instant::now() + Duration::from_secs(3);
    while sockets() < before + 16 {
        assert!(Instant::now() < deadline, "the eight long-polls were not accepted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = connect(&c);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let w = read_response(&mut s).expect("a connection over the cap is answered at once");
    assert_eq!(w.status, 503, "{w:?}");
    for mut p in parked {
        let w = read_response(&mut p).expect("the long-poll is answered");
        assert_eq!((w.status, w.body.as_str()), (200, "null"));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while timed_health(&c).0 != 200 {
        assert!(Instant::now() < deadline, "the cap was not freed after the long-polls ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A keep-alive long-poll may outlast header_timeout: the header clock of the next
    // request starts only once it is answered.
    let mut s = connect(&c);
    let raw = format!("GET /workers/tasks?wait=2 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(raw.as_bytes()).unwrap();
    let w = read_response(&mut s).expect("the long-poll is answered");
    assert_eq!((w.status, w.closes()), (200, false), "{w:?}");
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).map(|w| w.status), Some(200));
}

#[test]
fn many_large_bodies_read_ahead_stay_within_the_memory_budget() {
    const BODY: usize = 512 * 1024;
    const BUDGET_KIB: u64 = 1024;
    const CLIENTS: usize = 48;
    let (c, _cfg) = start(
        &format!("body_limit = {BODY}\nbody_memory_limit = {}\nbody_timeout = \"1500ms\"\n", BUDGET_KIB * 1024),
        &[],
    );
    let pid = c.child.as_ref().unwrap().id();
    for _ in 0..3 {
        assert_eq!(timed_health(&c).0, 200);
    }
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib(pid);

    // Each client announces a large body and sends all of it but the last 12 KiB, then
    // stalls. Without a shared budget every connection thread would buffer its ~500 KiB
    // (24 MiB in all); with it only what fits in 1 MiB is read, the rest stays in the
    // kernel's socket buffers until the waiting connections get 503.
    // Every sixth client sends a chunked body (one chunk), whose reservation has to grow
    // as it arrives.
    let sent = vec![b' '; BODY - 12 * 1024];
    let mut clients = Vec::new();
    let mut writers = Vec::new();
    for i in 0..CLIENTS {
        let s = connect(&c);
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(4))).unwrap();
        let head = if i % 6 == 5 {
            format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{BODY:x}\r\n")
        } else {
            format!("POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n")
        };
        let sent = sent.clone();
        // The server reads nothing of a waiting body, so a write may block: one thread each.
        writers.push(std::thread::spawn(move || {
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&sent);
            w
        }));
        clients.push(s);
    }

    let start_flood = Instant::now();
    let mut peak = 0;
    let mut slowest_health = Duration::ZERO;
    while start_flood.elapsed() < Duration::from_millis(1300) {
        peak = peak.max(rss_kib(pid));
        let (s, t) = timed_health(&c);
        assert_eq!(s, 200, "/health during the flood");
        slowest_health = slowest_health.max(t);
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = peak.saturating_sub(base);
    assert!(
        grown < BUDGET_KIB + 8 * 1024,
        "RSS grew by {grown} KiB (from {base} KiB) with a read-ahead budget of {BUDGET_KIB} KiB"
    );
    assert!(slowest_health < Duration::from_secs(1), "/health took {slowest_health:?} during the flood");

    // The clients that found no room are told to come back later, and closed; the one or
    // two that got room stall and get 408 after body_timeout.
    let mut busy = 0;
    for s in &mut clients {
        match read_response(s) {
            // One that got room and then stalled.
            Some(w) if w.status == 408 => assert!(w.body.contains("body"), "{w:?}"),
            Some(w) => {
                assert_eq!(w.status, 503, "{w:?}");
                assert!(w.head.to_ascii_lowercase().contains("retry-after: 1"), "{w:?}");
                assert!(w.body.contains("try again"), "{w:?}");
                assert!(w.closes(), "{w:?}");
                busy += 1;
            }
            None => {}
        }
        assert!(ends(s), "the connection ends");
        peak = peak.max(rss_kib(pid));
    }
    assert!(busy >= CLIENTS - 8, "only {busy} of {CLIENTS} clients got 503 with a budget for one body");
    let grown = peak.saturating_sub(base);
    assert!(grown < BUDGET_KIB + 8 * 1024, "RSS grew by {grown} KiB");
    drop(clients);
    for w in writers {
        drop(w.join().unwrap());
    }

    // The reservations came back: a body is read again at once.
    login_within_a_second(&c);
}

/// A login with a body, over a raw socket, answered 200 within a second.
fn login_within_a_second(c: &Coordinator) {
    let body = login_body();
    let raw = format!(
        "POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    assert_eq!(exchange(c, raw.as_bytes()).0.map(|w| w.status), Some(200));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn parked_long_polls_hold_no_connection_thread_and_are_all_answered() {
    const N: usize = 200;
    let http_threads = 4;
    let (c, _cfg) = start("", &["--http-threads", "4"]);
    let pid = c.child.as_ref().unwrap().id();
    let (admin, ann) = (c.admin(), c.user("ann"));
    let workers: Vec<TestWorker> = (0..N).map(|_| c.worker(&ann, &[], &[])).collect();
    let mut polls: Vec<TcpStream> = workers
        .iter()
        .map(|w| {
            let mut s = connect(&c);
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let token = w.api.token.as_deref().unwrap();
            s.write_all(
                format!("GET /workers/tasks?wait=60 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    let parked = || {
        let (s, b) = admin.get("/metrics");
        assert_eq!(s, 200, "{b}");
        let line = b.lines().find(|l| l.starts_with("mito_parked_fetches ")).expect("the parked gauge");
        line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() as usize
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while parked() < N {
        assert!(Instant::now() < deadline, "only {} of {N} long polls parked", parked());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A parked long poll waits in the scheduler's list, not on a thread of its own
    // (before, each held its connection's thread: over N threads here). The threads that
    // read the N requests at once linger 5 s in the pool before they end.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let threads = threads_of(pid);
        if threads <= http_threads + 40 {
            break;
        }
        assert!(Instant::now() < deadline, "{threads} threads with {N} long polls parked: {}", thread_names(pid));
        std::thread::sleep(Duration::from_millis(200));
    }

    // One batch of N tasks reaches every one of them, a distinct task each.
    let tasks: Vec<serde_json::Value> = (0..N).map(|_| task("ann", &["true"], &[], 0)).collect();
    let (s, b) = ann.post("/tasks/submit", &serde_json::json!({ "tasks": tasks }));
    assert_eq!(s, 200, "{b}");
    let mut got = std::collections::HashSet::new();
    for p in &mut polls {
        let w = read_response(p).expect("the long poll is answered");
        assert_eq!(w.status, 200, "{w:?}");
        got.insert(json(&w.body)["uuid"].as_str().expect("a task").to_string());
    }
    assert_eq!(got.len(), N, "each parked fetch got its own task");

    // Each connection carries on after its parked request (on whichever thread is free).
    for (p, w) in polls.iter_mut().zip(&workers) {
        let token = w.api.token.as_deref().unwrap();
        p.write_all(
            format!("POST /workers/heartbeat HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let w = read_response(p).expect("the next request on the connection is answered");
        assert_eq!(w.status, 200, "{w:?}");
    }
}

/// Writes `raw` in pieces of `size` bytes, each sent on its own (no delay merges them).
fn write_in_pieces(s: &mut TcpStream, raw: &[u8], size: usize) {
    for piece in raw.chunks(size) {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn request_lines_end_at_crlf_however_the_bytes_arrive() {
    let (c, _cfg) = start("", &[]);
    // A lone LF belongs to its header line (a line ends only at CRLF): here it is inside a
    // value, so the request is whole and valid; if it ended the line, `b` would be a
    // malformed header (400). Sent a byte at a time, then in pieces that split each CRLF.
    let raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: a\nb\r\n\r\n";
    for size in [1, 3, 7, raw.len()] {
        let mut s = connect(&c);
        write_in_pieces(&mut s, raw, size);
        let w = read_response(&mut s).expect("an answer");
        assert_eq!(w.status, 200, "pieces of {size}: {w:?}");
        assert_eq!(w.body, r#"{"status":"ok"}"#);
    }
    // A request line of exactly `max_line` (8 KiB) bytes is read, one byte more is refused,
    // also when its CR and LF arrive apart.
    let line = |len: usize| format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
    for (len, status) in [(8192, 404), (8193, 414)] {
        let raw = format!("{}\r\nHost: x\r\n\r\n", line(len));
        assert_eq!(exchange(&c, raw.as_bytes()).0.map(|w| w.status), Some(status), "a line of {len} bytes");
        let mut s = connect(&c);
        s.write_all(&raw.as_bytes()[..len + 1]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let _ = s.write_all(&raw.as_bytes()[len + 1..]);
        assert_eq!(read_response(&mut s).map(|w| w.status), Some(status), "a line of {len} bytes, CR apart");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (c, _cfg) = start("", &[]);
    let body = login_body();
    let login = format!(
        "POST /login HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Three requests in one write: the second has a body, the third closes the connection.
    let raw = format!("GET /health HTTP/1.1\r\n\r\n{login}GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n");
    let mut s = connect(&c);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let statuses: Vec<u16> = (0..3).filter_map(|_| read_response(&mut s).map(|w| w.status)).collect();
    assert_eq!(statuses, [200, 200, 404]);
    assert!(ends(&mut s));
}

#[test]
fn a_response_head_has_its_headers_in_a_fixed_order() {
    let (c, _cfg) = start("", &[]);
    for version in ["1.1", "1.0"] {
        let raw = format!("GET /health HTTP/{version}\r\nHost: x\r\n\r\n");
        let w = exchange(&c, raw.as_bytes()).0.expect("an answer");
        let lines: Vec<&str> = w.head.trim_end().split("\r\n").collect();
        let date = lines[2].strip_prefix("Date: ").expect("Date third");
        // An IMF-fixdate: `Thu, 03 Dec 2026 09:00:00 GMT`.
        assert!(date.len() == 29 && date.ends_with(" GMT") && date.as_bytes()[3] == b',', "{date:?}");
        assert_eq!(
            [&lines[..2], &lines[3..]].concat(),
            [
                format!("HTTP/{version} 200 OK").as_str(),
                "Server: tiny-http (Rust)",
                "Content-Type: application/json",
                "Access-Control-Allow-Origin: *",
                "Content-Length: 15",
            ],
            "{w:?}"
        );
        assert_eq!(w.body, r#"{"status":"ok"}"#);
    }
    // The status line of an error, and its body after the head.
    let w = exchange(&c, b"GET /tasks/not-a-uuid HTTP/1.1\r\n\r\n").0.expect("an answer");
    assert!(w.head.starts_with("HTTP/1.1 400 Bad Request\r\nServer: tiny-http (Rust)\r\nDate: "), "{w:?}");
    assert!(w.body.starts_with("Invalid URL: "), "{w:?}");
}
