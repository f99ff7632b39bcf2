//! https: workers and clients reach a coordinator, and everyone reaches S3, through
//! TLS-terminating proxies whose certificate a test CA signed, trusted through `ca_file`
//! (`--ca-file`, `MITO_CA_FILE`); a certificate nobody vouches for is refused with a
//! message that says what to set.

use crate::harness::*;
use crate::worker::spawn_worker;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A coordinator whose S3 service is reached through an https proxy (trusted with
/// `--ca-file`), and an https proxy in front of the coordinator itself.
struct HttpsSetup {
    c: Coordinator,
    coordinator_proxy: TlsProxy,
    s3_proxy: TlsProxy,
}

fn https_setup() -> HttpsSetup {
    let s3 = s3_server();
    let s3_proxy = TlsProxy::start(s3.port);
    let mut flags = s3.coordinator_flags();
    let at = flags.iter().position(|f| f == "--s3").unwrap();
    flags[at + 1] = s3_proxy.url.clone();
    flags.extend(["--ca-file".into(), test_ca().ca.to_string_lossy().into_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Coordinator::start_with(TestDb::new(), &flags);
    let coordinator_proxy = TlsProxy::start(c.port);
    HttpsSetup { c, coordinator_proxy, s3_proxy }
}

/// `mito client -c <url> ARGS` in `home`.
fn client(home: &TempDir, url: &str, args: &[&str]) -> Command {
    let mut cmd = mito(home.path());
    cmd.arg("client").args(["-c", url]).args(args).stdin(Stdio::null());
    cmd
}

fn ca() -> &'static str {
    test_ca().ca.to_str().unwrap()
}

#[test]
fn a_worker_and_a_client_run_a_task_over_https_to_the_coordinator_and_s3() {
    let s = https_setup();
    let ann = s.c.user("ann");
    let home = TempDir::new("tls-client");
    let log = home.path().join("worker.log");
    let url = &s.coordinator_proxy.url;
    let mut worker = spawn_worker(home.path(), url, "ann", "ann-pw", &["--ca-file", ca()], &log);
    let script = "echo 42 > \"$MITO_RESULT_DIR/answer.txt\"; echo out-line";
    let o = client(&home, url, &["--ca-file", ca(), "-u", "ann", "-p", "ann-pw", "--retain"])
        .args(["tasks", "submit", "--terminal", "--wait", "-l", "tls", "--", "sh", "-c", script])
        .output()
        .unwrap();
    let worker_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(o.status.success(), "submit --wait over https: {}\nworker log:\n{}", text(&o), worker_log());
    let uuid = text(&o)
        .split_whitespace()
        .find(|t| t.len() == 36 && t.chars().filter(|c| *c == '-').count() == 4)
        .unwrap_or_else(|| panic!("no uuid in {}", text(&o)))
        .to_string();
    // The worker uploaded its archives to the https S3 endpoint (the only address the
    // presigned URLs name); the client reads them back from there.
    let dest = home.path().join("result.tar.gz");
    let dl = client(&home, url, &["--ca-file", ca(), "tasks", "artifacts", "download", &uuid, "result", "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(dl.status.success(), "{}", text(&dl));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&dest).unwrap()));
    let mut answer = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "result/answer.txt" {
            std::io::Read::read_to_string(&mut e, &mut answer).unwrap();
        }
    }
    assert_eq!(answer.trim(), "42");
    let logs = client(&home, url, &["--ca-file", ca(), "tasks", "logs", &uuid]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&logs.stdout).trim(), "out-line", "{}", text(&logs));
    let q = client(&home, url, &["--ca-file", ca(), "--json", "tasks", "query", "-l", "tls"]).output().unwrap();
    assert!(q.status.success(), "{}", text(&q));
    assert!(String::from_utf8_lossy(&q.stdout).contains(&uuid), "{}", text(&q));
    let upload = ann.get(&format!("/tasks/{uuid}/download/artifacts/result")).1;
    assert!(upload.contains(&s.s3_proxy.url), "download URLs name the https endpoint: {upload}");
    assert!(s.coordinator_proxy.handshakes.load(Ordering::SeqCst) >= 3, "worker and client went through TLS");
    assert!(s.s3_proxy.handshakes.load(Ordering::SeqCst) >= 3, "coordinator, worker and client went through TLS");
    let _ = worker.kill();
    let _ = worker.wait();
}

/// Asserts that `out` says the proxy's certificate is not trusted and names the fix.
fn assert_untrusted(out: &str, proxy: &TlsProxy) {
    let origin = format!("the certificate of {} is not trusted", proxy.url);
    assert!(out.contains(&origin), "expected {origin:?} in:\n{out}");
    assert!(out.contains("ca_file / --ca-file / MITO_CA_FILE"), "the message names the fix:\n{out}");
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused_with_a_clear_message() {
    let s = https_setup();
    s.c.user("bob");
    let home = TempDir::new("tls-refused");
    let url = &s.coordinator_proxy.url;
    let other = test_ca().other_ca.to_str().unwrap();
    for extra in [&["--ca-file", other][..], &[]] {
        let o = client(&home, url, extra).args(["-u", "bob", "-p", "bob-pw", "auth"]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert_untrusted(&text(&o), &s.coordinator_proxy);
    }
    // The worker stops at once instead of retrying a certificate that will not change.
    let log = home.path().join("worker.log");
    let mut w = spawn_worker(home.path(), url, "bob", "bob-pw", &["--ca-file", other], &log);
    let status = wait_timeout(&mut w, Duration::from_secs(30));
    let _ = w.kill();
    let worker_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "the worker exits non-zero: {status:?}\n{worker_log}");
    assert_untrusted(&worker_log, &s.coordinator_proxy);
    // A coordinator that cannot trust its S3 endpoint does not start.
    let chome = TempDir::new("tls-coord");
    let clog = chome.path().join("coordinator.log");
    let mut flags = s3_server().coordinator_flags();
    let at = flags.iter().position(|f| f == "--s3").unwrap();
    flags[at + 1] = s.s3_proxy.url.clone();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let db = TestDb::new();
    let mut coord = spawn_coordinator(&chome, &db.url, free_port(), &flags, &clog);
    let status = wait_timeout(&mut coord, Duration::from_secs(60));
    let _ = coord.kill();
    let coord_log = std::fs::read_to_string(&clog).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "the coordinator exits non-zero: {status:?}\n{coord_log}");
    assert_untrusted(&coord_log, &s.s3_proxy);
}

#[test]
fn the_ca_file_comes_from_mito_ca_file_or_a_config_file() {
    let s = https_setup();
    s.c.user("cid");
    let home = TempDir::new("tls-env");
    let url = &s.coordinator_proxy.url;
    let o = client(&home, url, &["-u", "cid", "-p", "cid-pw", "--retain", "auth"])
        .env("MITO_CA_FILE", ca())
        .output()
        .unwrap();
    assert!(o.status.success(), "MITO_CA_FILE: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("cid"), "{}", text(&o));
    // In a file, a relative path resolves against the file's directory.
    let conf = TempDir::new("tls-conf");
    std::fs::copy(ca(), conf.path().join("ca.pem")).unwrap();
    let file = conf.path().join("mito.toml");
    std::fs::write(&file, format!("[client]\ncoordinator_addr = \"{url}\"\nca_file = \"ca.pem\"\n")).unwrap();
    let o = mito(home.path()).arg("client").arg("--config").arg(&file).args(["auth"]).output().unwrap();
    assert!(o.status.success(), "ca_file in [client]: {}", text(&o));
}

#[test]
fn the_system_store_is_trusted_and_a_host_without_one_falls_back_and_says_so() {
    let s = https_setup();
    s.c.user("dee");
    let home = TempDir::new("tls-system");
    let url = &s.coordinator_proxy.url;
    // SSL_CERT_FILE and SSL_CERT_DIR stand in for the system store: no ca_file needed.
    let empty_dir = TempDir::new("tls-no-certs");
    let o = client(&home, url, &["-u", "dee", "-p", "dee-pw", "--retain", "auth"])
        .env("SSL_CERT_FILE", ca())
        .env("SSL_CERT_DIR", empty_dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "system store: {}", text(&o));
    // An empty store: the built-in roots stand in, with a warning, and ca_file still works.
    let empty = home.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let o = client(&home, url, &["--ca-file", ca(), "auth"])
        .env("SSL_CERT_FILE", &empty)
        .env("SSL_CERT_DIR", empty_dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no CA certificates found in this system's store"), "{}", text(&o));
}

#[test]
fn an_unusable_ca_file_stops_every_role_at_start() {
    let home = TempDir::new("tls-bad");
    let bad = home.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let missing = Path::new("/nonexistent/ca.pem");
    for (file, says) in [(bad.as_path(), "holds no certificate"), (missing, "cannot read the CA file")] {
        let path = file.to_str().unwrap();
        let o = client(&home, "https://127.0.0.1:9", &["--ca-file", path, "auth"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says) && text(&o).contains(path), "{}", text(&o));
        let o = mito(home.path())
            .args(["worker", "-c", "https://127.0.0.1:9", "-u", "x", "-p", "y", "--ca-file", path])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success() && text(&o).contains(says), "{}", text(&o));
        let log = home.path().join("coordinator.log");
        let _ = std::fs::remove_file(&log);
        let db = TestDb::new();
        let mut coord = spawn_coordinator(&home, &db.url, free_port(), &["--ca-file", path], &log);
        let status = wait_timeout(&mut coord, Duration::from_secs(60));
        let _ = coord.kill();
        let clog = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.is_some_and(|s| !s.success()) && clog.contains(says), "{status:?}\n{clog}");
    }
}

#[test]
fn local_store_urls_are_https_behind_a_proxy_that_says_so() {
    let c = Coordinator::start();
    let token = c.login("mitosis_admin", "mitosis_admin");
    let body = r#"{"key": "k.txt", "content_length": 3}"#;
    let ask = |proto: Option<&str>| {
        let (s, b) = http_raw(
            &c.url,
            "POST",
            "/groups/mitosis_admin/attachments",
            &[
                ("Authorization", Some(format!("Bearer {token}"))),
                ("Host", Some("mito.example.org".into())),
                ("X-Forwarded-Proto", proto.map(str::to_string)),
            ],
            Some(("application/json", body)),
        );
        assert_eq!(s, 200, "{b}");
        json(&b)["url"].as_str().unwrap().to_string()
    };
    assert!(ask(Some("https")).starts_with("https://mito.example.org/objects/"), "{}", ask(Some("https")));
    assert!(ask(None).starts_with("http://mito.example.org/objects/"), "{}", ask(None));
}
