//! The whole system as a user meets it: the real `mito client` submits, the real
//! `mito worker` runs the task and uploads what it produced, and the client reads it back,
//! with the local object store and with an S3 server that checks signatures.

use crate::client::client;
use crate::harness::*;
use crate::worker::Worker;
use std::time::Duration;

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run_end_to_end(c: Coordinator) {
    c.user("ann");
    let home = TempDir::new("e2e-client");
    let login = client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain", "auth"]);
    assert!(login.status.success(), "{}", out(&login));
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    w.id();
    let script = "echo out-line; echo err-line >&2; echo 42 > \"$MITO_RESULT_DIR/answer.txt\"; \
                  mkdir -p \"$MITO_EXEC_DIR\" && echo trace > \"$MITO_EXEC_DIR/trace.log\"";
    let o = client(&c, &home, &["tasks", "submit", "--terminal", "--wait", "-l", "e2e", "--", "sh", "-c", script]);
    assert!(o.status.success(), "submit --wait: {}\nworker log:\n{}", out(&o), w.log_text());
    let text = out(&o);
    let uuid = text
        .split_whitespace()
        .find(|t| t.len() == 36 && t.chars().filter(|c| *c == '-').count() == 4)
        .unwrap_or_else(|| panic!("no uuid in {text}"))
        .to_string();
    let logs = client(&c, &home, &["tasks", "logs", &uuid]);
    assert!(logs.status.success(), "{}", out(&logs));
    assert_eq!(String::from_utf8_lossy(&logs.stdout).trim(), "out-line");
    assert_eq!(String::from_utf8_lossy(&logs.stderr).trim(), "err-line");
    let dest = home.path().join("result.tar.gz");
    let dl = client(&c, &home, &["tasks", "artifacts", "download", &uuid, "result", "-o", dest.to_str().unwrap()]);
    assert!(dl.status.success(), "{}", out(&dl));
    let bytes = std::fs::read(&dest).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut found = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "result/answer.txt" {
            std::io::Read::read_to_string(&mut e, &mut found).unwrap();
        }
    }
    assert_eq!(found.trim(), "42");
    let get = client(&c, &home, &["--json", "tasks", "get", &uuid]);
    let v = json(&String::from_utf8_lossy(&get.stdout));
    let kinds: Vec<&str> =
        v["artifacts"].as_array().unwrap().iter().map(|a| a["content_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["result", "exec-log", "std-log"], "{v}");
    assert_eq!(v["info"]["result"]["exit_status"], 0);
    assert!(w.wait_log(&uuid, Duration::from_secs(5)), "one log line per task:\n{}", w.log_text());
}

#[test]
fn client_and_worker_run_a_task_end_to_end_with_the_local_store() {
    run_end_to_end(Coordinator::start());
}

#[test]
fn client_and_worker_run_a_task_end_to_end_with_s3() {
    let flags = s3_server().coordinator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    run_end_to_end(Coordinator::start_with(TestDb::new(), &flags));
}
