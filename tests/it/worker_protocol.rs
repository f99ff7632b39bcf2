//! The worker's side of the protocol, byte for byte, against a scripted stand-in for a
//! mitosis-style coordinator and its object store (no long-poll, presigned URLs): resources
//! are in place before the run, archives have the documented layout, the report ops come
//! in the documented order, and signatures never reach the log.

use crate::harness::*;
use crate::worker::Worker;
use flate2::read::GzDecoder;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    tasks: VecDeque<Value>,
    /// Every `op` reported, in order.
    ops: Vec<Value>,
    /// PUT bodies by content type, with the Content-Length header sent.
    uploads: BTreeMap<String, (Vec<u8>, Option<u64>)>,
    attachments: BTreeMap<String, Vec<u8>>,
    unregistered: bool,
}

struct Fake {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const SIG: &str = "X-Amz-Signature=topsecret";

impl Fake {
    fn start() -> Fake {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind the fake coordinator");
        let port = server.server_addr().to_ip().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, base) = (state.clone(), stop.clone(), url.clone());
        std::thread::Builder::new()
            .name("fake-coordinator".into())
            .spawn(move || {
                while !sp.load(Ordering::SeqCst) {
                    if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) {
                        serve(req, &st, &base);
                    }
                }
            })
            .unwrap();
        Fake { url, state, stop }
    }

    fn ops_until_commit(&self, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ops = self.state.lock().unwrap().ops.clone();
            if ops.iter().any(|o| o.get("Commit").is_some()) {
                return ops;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no commit within {within:?}; ops so far: {:?}", self.state.lock().unwrap().ops);
    }
}

fn serve(mut req: tiny_http::Request, st: &Mutex<State>, base: &str) {
    let mut body = Vec::new();
    let _ = req.as_reader().read_to_end(&mut body);
    let path = req.url().to_string();
    let method = req.method().as_str().to_string();
    let auth = req.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string());
    let length =
        req.headers().iter().find(|h| h.field.equiv("Content-Length")).and_then(|h| h.value.as_str().parse().ok());
    let mut s = st.lock().unwrap();
    let (status, reply): (u16, Vec<u8>) = match (method.as_str(), path.split('?').next().unwrap()) {
        ("GET", "/auth") if auth.as_deref() == Some("Bearer usertoken") => (200, b"alice".to_vec()),
        ("GET", "/auth") => (401, br#"{"msg":"Invalid token"}"#.to_vec()),
        ("POST", "/login") => (200, br#"{"token":"usertoken"}"#.to_vec()),
        ("POST", "/workers") => {
            let id = uuid::Uuid::new_v4();
            (200, json!({"worker_id": id, "token": "workertoken", "redis_url": null}).to_string().into_bytes())
        }
        ("DELETE", "/workers") => {
            s.unregistered = true;
            (200, b"null".to_vec())
        }
        ("POST", "/workers/heartbeat") => (200, b"null".to_vec()),
        // Like mitosis: no long-poll, the answer comes at once.
        ("GET", "/workers/tasks") => {
            (200, s.tasks.pop_front().map(|t| t.to_string()).unwrap_or("null".into()).into_bytes())
        }
        ("POST", "/workers/tasks") => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let op = v["op"].clone();
            s.ops.push(op.clone());
            match op.get("Upload") {
                Some(u) => {
                    let ct = u["content_type"].as_str().unwrap_or("?");
                    (200, json!({"url": format!("{base}/store/{ct}?{SIG}")}).to_string().into_bytes())
                }
                None => (200, br#"{"url":null}"#.to_vec()),
            }
        }
        ("PUT", p) if p.starts_with("/store/") => {
            s.uploads.insert(p["/store/".len()..].to_string(), (body, length));
            (200, Vec::new())
        }
        ("GET", p) if p.contains("/attachments/") => {
            let key = p.split("/attachments/").nth(1).unwrap().to_string();
            match s.attachments.get(&key) {
                Some(b) => {
                    (200, json!({"url": format!("{base}/blob/{key}?{SIG}"), "size": b.len()}).to_string().into_bytes())
                }
                None => (404, br#"{"msg":"Attachment not found"}"#.to_vec()),
            }
        }
        ("GET", p) if p.starts_with("/blob/") => match s.attachments.get(&p["/blob/".len()..]) {
            Some(b) => (200, b.clone()),
            None => (404, Vec::new()),
        },
        _ => (404, br#"{"msg":"no such route"}"#.to_vec()),
    };
    drop(s);
    let _ = req.respond(tiny_http::Response::from_data(reply).with_status_code(status));
}

fn task(id: i64, timeout: &str, spec: Value) -> (String, Value) {
    let uuid = uuid::Uuid::new_v4().to_string();
    (uuid.clone(), json!({"id": id, "uuid": uuid, "timeout": timeout, "upstream_task_uuid": null, "spec": spec}))
}

fn entries(gz: &[u8]) -> BTreeMap<String, String> {
    let mut a = tar::Archive::new(GzDecoder::new(gz));
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        out.insert(name, s);
    }
    out
}

#[test]
fn resources_arrive_before_the_run_and_a_timed_out_task_keeps_its_output() {
    let fake = Fake::start();
    fake.state.lock().unwrap().attachments.insert("data/in.txt".into(), b"payload-123\n".to_vec());
    let script =
        "cat \"$MITO_RESOURCE_DIR/in/x.txt\"; cp \"$MITO_RESOURCE_DIR/in/x.txt\" \"$MITO_RESULT_DIR/copy.txt\"; \
                  echo to-stderr >&2; exec sleep 60";
    let (_uuid, t) = task(
        7,
        "2s",
        json!({
            "args": ["sh", "-c", script],
            "resources": [{"remote_file": {"Attachment": {"key": "data/in.txt"}}, "local_path": "in/x.txt"}],
            "terminal_output": true
        }),
    );
    fake.state.lock().unwrap().tasks.push_back(t);
    let w = Worker::start(&fake.url, "alice", "pw", &[]);
    let ops = fake.ops_until_commit(Duration::from_secs(40));

    let names: Vec<String> = ops
        .iter()
        .map(|o| match o {
            Value::String(s) => s.clone(),
            Value::Object(m) => m.keys().next().unwrap().clone(),
            _ => "?".into(),
        })
        .collect();
    assert_eq!(names, ["Cancel", "Upload", "Upload", "Commit"], "{ops:?}");
    assert_eq!(ops[3]["Commit"], json!({"exit_status": libc::SIGTERM, "msg": "ExecTimeout"}));
    assert_eq!(ops[1]["Upload"]["content_type"], "result");
    assert_eq!(ops[2]["Upload"]["content_type"], "std-log");

    let s = fake.state.lock().unwrap();
    let (result, len) = &s.uploads["result"];
    assert_eq!(*len, Some(result.len() as u64), "the PUT carries Content-Length");
    assert_eq!(ops[1]["Upload"]["content_length"], result.len());
    let r = entries(result);
    assert_eq!(r.get("result/copy.txt").map(String::as_str), Some("payload-123\n"), "{r:?}");
    let std = entries(&s.uploads["std-log"].0);
    assert_eq!(
        std.get("std-log/stdout.log").map(String::as_str),
        Some("payload-123\n"),
        "partial output is kept: {std:?}"
    );
    assert_eq!(std.get("std-log/stderr.log").map(String::as_str), Some("to-stderr\n"));
    drop(s);
    assert!(!w.log_text().contains("topsecret"), "a URL signature reached the log:\n{}", w.log_text());
    assert!(w.wait_log("ExecTimeout", Duration::from_secs(5)), "{}", w.log_text());
}

#[test]
fn a_missing_resource_cancels_the_task_without_running_it() {
    let fake = Fake::start();
    let marker = TempDir::new("worker-noresource");
    let ran = marker.path().join("ran");
    let (_uuid, t) = task(
        9,
        "30s",
        json!({
            "args": ["touch", ran.to_str().unwrap()],
            "resources": [{"remote_file": {"Attachment": {"key": "nope"}}, "local_path": "x"}]
        }),
    );
    fake.state.lock().unwrap().tasks.push_back(t);
    let mut w = Worker::start(&fake.url, "alice", "pw", &[]);
    let ops = fake.ops_until_commit(Duration::from_secs(30));
    assert_eq!(ops, vec![json!("Cancel"), json!({"Commit": {"exit_status": 0, "msg": "ResourceNotFound"}})]);
    assert!(!ran.exists(), "the task must not run without its resources");
    // The worker stays up and, on SIGTERM, unregisters.
    assert_eq!(w.signal(libc::SIGTERM).and_then(|s| s.code()), Some(0), "{}", w.log_text());
    assert!(fake.state.lock().unwrap().unregistered);
}
