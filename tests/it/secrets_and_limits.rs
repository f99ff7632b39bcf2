//! Bounded durations and a reaper no row can stop; private files; batch downloads that
//! never overwrite one file with another; secrets in URLs kept out of the logs.

use crate::client::{client, fails, ok};
use crate::harness::*;
use crate::worker::Worker;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A duration no one means: 500,000 years, in seconds, as humantime reads "500000y".
const ABSURD_SECS: i64 = 500_000 * 31_557_600;

#[test]
fn durations_over_the_maximum_are_refused_everywhere_with_400() {
    let c = Coordinator::start();
    let ann = c.user("ann");
    let mut body = task("ann", &["true"], &[], 0);
    body["timeout"] = json!("500000y");
    let (s, b) = ann.post("/tasks", &body);
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("timeout") && msg(&b).contains("at most"), "{b}");
    let (s, b) = ann.post("/tasks/submit", &json!({"tasks": [body.clone()]}));
    assert_eq!(s, 200, "{b}");
    assert!(json(&b)["results"][0]["Err"]["msg"].as_str().unwrap_or_default().contains("at most"), "{b}");

    body["timeout"] = json!("1y");
    let uuid = submit(&ann, &body);
    let (s, b) = ann.put(&format!("/tasks/{uuid}"), &json!({"timeout": "500000y"}));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("timeout") && msg(&b).contains("at most"), "{b}");
    let (s, b) = ann.put(&format!("/tasks/{uuid}"), &json!({"timeout": "2h"}));
    assert_eq!(s, 200, "{b}");

    let (s, b) = ann.post("/workers", &json!({"tags": [], "labels": [], "groups": [], "lifetime": "500000y"}));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("lifetime") && msg(&b).contains("at most"), "{b}");
    let (s, b) = ann.post("/workers", &json!({"tags": [], "labels": [], "groups": [], "lifetime": "30d"}));
    assert_eq!(s, 200, "{b}");
    let rows: i64 =
        c.db.connect().query_one("SELECT count(*) FROM active_tasks WHERE timeout > 366 * 86400", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "nothing over the bound was stored");
}

#[test]
fn a_running_task_with_an_absurd_timeout_does_not_stop_the_reaper() {
    let c = Coordinator::start_with(TestDb::new(), &["--heartbeat-timeout", "2s"]);
    let ann = c.user("ann");
    let runner = c.worker(&ann, &[], &[]);
    submit(&ann, &task("ann", &["sleep", "1000"], &[], 0));
    let t = runner.fetch().expect("a task to run");
    // A row as an older version (or a hand edit) could leave it: the overdue check must
    // neither fail on it nor let it stop the removal of silent workers.
    let n =
        c.db.connect()
            .execute("UPDATE active_tasks SET timeout = $1 WHERE id = $2", &[&ABSURD_SECS, &t["id"].as_i64().unwrap()])
            .unwrap();
    assert_eq!(n, 1);
    let silent = c.worker(&ann, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let gone = |w: &TestWorker| ann.get(&format!("/workers/{}", w.uuid)).0 == 404;
    while Instant::now() < deadline && !(gone(&silent) && gone(&runner)) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gone(&silent) && gone(&runner), "silent workers were not reaped:\n{}", c.log_text());
    let state: i32 =
        c.db.connect()
            .query_one("SELECT state FROM active_tasks WHERE id = $1", &[&t["id"].as_i64().unwrap()])
            .unwrap()
            .get(0);
    assert_eq!(state, 1, "the task went back to Ready");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn the_local_object_store_and_the_log_file_are_private() {
    let logs = TempDir::new("private-logs");
    let log_path = logs.path().join("new-dir").join("coordinator.log");
    let log_arg = log_path.to_str().unwrap().to_string();
    let c = Coordinator::start_with(TestDb::new(), &["--file-log", "--log-path", &log_arg]);
    let ann = c.user("ann");
    let (s, b) = ann.post("/groups/ann/attachments", &json!({"key": "in/secret.txt", "content_length": 6}));
    assert_eq!(s, 200, "{b}");
    let url = json(&b)["url"].as_str().unwrap().to_string();
    let put = ureq::put(&url).set("Content-Length", "6").send_bytes(b"secret");
    assert_eq!(put.map(|r| r.status()).unwrap_or(0), 200);

    let objects = c.home.path().join("data").join("objects");
    let bucket = objects.join("mitosis-attachments");
    let file = bucket.join("d_ann").join("d_in").join("f_secret.txt");
    for d in [objects.clone(), objects.join(".tmp"), bucket.clone(), bucket.join("d_ann"), bucket.join("d_ann/d_in")] {
        assert_eq!(mode(&d), 0o700, "{} is readable by others", d.display());
    }
    assert_eq!(mode(&file), 0o600, "{} is readable by others", file.display());
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(logged.contains("shutdown secret"), "the file log: {logged}");
    assert_eq!(mode(&log_path), 0o600, "the log file holds the shutdown secret");
    assert_eq!(mode(log_path.parent().unwrap()), 0o700, "a directory made for the log");
}

#[test]
fn download_many_refuses_two_keys_with_one_file_name_before_downloading() {
    let c = Coordinator::start();
    c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    for (key, body) in [("a/data.txt", "first"), ("b/data.txt", "second"), ("c/other.txt", "third")] {
        std::fs::write(home.path().join("up.txt"), body).unwrap();
        ok(&client(&c, &home, &["groups", "attachments", "upload", "up.txt", key]));
    }
    let e = fails(&client(&c, &home, &["groups", "attachments", "download-many", "-o", "many"]), 1);
    assert!(
        e.contains("a/data.txt and b/data.txt") && e.contains("data.txt") && e.contains("nothing was downloaded"),
        "{e}"
    );
    let written: Vec<_> =
        std::fs::read_dir(home.path().join("many")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(written.is_empty(), "files were written: {written:?}");
    let e = fails(
        &client(&c, &home, &["groups", "attachments", "download-list", "a/data.txt", "b/data.txt", "-o", "list"]),
        1,
    );
    assert!(e.contains("nothing was downloaded"), "{e}");
    // Narrowed so the names differ, the batch goes through.
    let o = ok(&client(&c, &home, &["groups", "attachments", "download-many", "-k", "a/", "-o", "many"]));
    assert!(o.contains("Downloaded 1 of 1 files"), "{o}");
    assert_eq!(std::fs::read_to_string(home.path().join("many/data.txt")).unwrap(), "first");
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn s3_credentials_and_presigned_urls_stay_out_of_the_logs() {
    let home = TempDir::new("s3-redact");
    let (private, public) = keys();
    let s3 = format!("http://AKIAMITOUSER:s3-topsecret@127.0.0.1:{}", closed_port());
    let mut child = mito(home.path())
        .arg("coordinator")
        .args([
            "--db",
            "postgres://mito:db-topsecret@127.0.0.1:1/none",
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--access-token-private-path")
        .arg(private)
        .arg("--access-token-public-path")
        .arg(public)
        .args(["--s3", &s3, "--s3-access-key", "AKIAMITOUSER", "--s3-secret-key", "s3-secret-key-value"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mito coordinator");
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(status.is_some_and(|s| !s.success()), "an unreachable S3 must stop the start:\n{text}");
    assert!(text.contains("cannot reach S3"), "{text}");
    assert!(text.contains("127.0.0.1"), "the message still says where: {text}");
    for secret in ["s3-topsecret", "X-Amz-Signature", "X-Amz-Credential", "s3-secret-key-value"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}

#[test]
fn the_worker_logs_coordinator_urls_without_their_password() {
    let url = format!("http://wuser:worker-topsecret@127.0.0.1:{}", closed_port());
    let mut w = Worker::start(&url, "ann", "ann-pw", &[]);
    assert!(w.wait_log("cannot reach the coordinator", Duration::from_secs(15)), "{}", w.log_text());
    w.signal(libc::SIGTERM);
    let text = w.log_text();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("worker-topsecret"), "the password leaked:\n{text}");
}
