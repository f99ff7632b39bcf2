//! Object storage: attachments and artifacts through signed URLs, against the local store
//! and a real S3 server that checks SigV4 signatures (s3s-fs), with quotas, key checks,
//! permissions and deletes.

use crate::harness::*;
use serde_json::json;
use std::io::Read;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    S3,
}

fn coordinator(b: Backend) -> Coordinator {
    match b {
        Backend::Local => Coordinator::start(),
        Backend::S3 => with_s3(s3_server()),
    }
}

fn with_s3(s3: &S3Server) -> Coordinator {
    let flags = s3.coordinator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Coordinator::start_with(TestDb::new(), &flags)
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build()
}

/// PUTs `body` to a signed URL (Content-Length = body length); returns (status, body).
fn put(url: &str, body: &[u8]) -> (u16, String) {
    match agent().put(url).send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("PUT failed to connect: {e}"),
    }
}

/// GETs a signed URL; returns (status, bytes).
fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET failed to connect: {e}"),
    };
    let status = resp.status();
    let mut bytes = Vec::new();
    resp.into_reader().take(64 << 20).read_to_end(&mut bytes).unwrap();
    (status, bytes)
}

/// Deterministic bytes that are not all alike.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// Asks for an upload URL for an attachment; asserts 200 and returns (exist, url).
fn attachment_url(api: &Api, group: &str, key: &str, len: usize) -> (bool, String) {
    let (s, b) = api.post(&format!("/groups/{group}/attachments"), &json!({"key": key, "content_length": len}));
    assert_eq!(s, 200, "upload URL for {key}: {b}");
    let v = json(&b);
    (v["exist"].as_bool().unwrap(), v["url"].as_str().unwrap().to_string())
}

/// Uploads an attachment end to end.
fn upload_attachment(api: &Api, group: &str, key: &str, body: &[u8]) {
    let (_, url) = attachment_url(api, group, key, body.len());
    let (s, b) = put(&url, body);
    assert_eq!(s, 200, "PUT {key}: {b}");
}

fn download_url(api: &Api, path: &str) -> (String, i64) {
    let (s, b) = api.get(path);
    assert_eq!(s, 200, "GET {path}: {b}");
    let v = json(&b);
    (v["url"].as_str().unwrap().to_string(), v["size"].as_i64().unwrap())
}

/// Submits a task to `group` through the API.
fn add_task(api: &Api, group: &str) -> Uuid {
    submit(api, &task(group, &["true"], &[], 0)).parse().unwrap()
}

fn storage_used(c: &Coordinator, group: &str) -> i64 {
    c.db.connect().query_one("SELECT storage_used FROM groups WHERE group_name = $1", &[&group]).unwrap().get(0)
}

fn artifact_url(api: &Api, task: Uuid, ct: &str, len: usize) -> (u16, String) {
    let (s, b) = api.post(&format!("/tasks/{task}/artifacts"), &json!({"content_type": ct, "content_length": len}));
    if s != 200 {
        return (s, b);
    }
    (s, json(&b)["url"].as_str().unwrap().to_string())
}

fn upload_artifact(api: &Api, task: Uuid, ct: &str, body: &[u8]) {
    let (s, url) = artifact_url(api, task, ct, body.len());
    assert_eq!(s, 200, "artifact upload URL: {url}");
    let (s, b) = put(&url, body);
    assert_eq!(s, 200, "PUT artifact: {b}");
}

/// Makes uploads look older than the one-hour window.
fn backdate(c: &Coordinator) {
    let mut db = c.db.connect();
    db.batch_execute(
        "UPDATE attachments SET updated_at = now() - interval '2 hours';
         UPDATE artifacts SET updated_at = now() - interval '2 hours';",
    )
    .unwrap();
}

/// Changes one character of the URL right after `marker`.
fn tamper(url: &str, marker: &str) -> String {
    let i = url.find(marker).unwrap_or_else(|| panic!("{marker} not in {url}")) + marker.len();
    let mut b = url.as_bytes().to_vec();
    b[i] = if b[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(b).unwrap()
}

// ---------------------------------------------------------------- round trips

fn attachment_round_trip(b: Backend) {
    let c = coordinator(b);
    let bob = c.user("bob");
    let body = payload(300_000, 7);
    let (exist, url) = attachment_url(&bob, "bob", "in/data v1.bin", body.len());
    assert!(!exist);
    if let Backend::S3 = b {
        assert!(url.contains("X-Amz-Expires=3600"), "{url}");
        assert!(url.contains("X-Amz-SignedHeaders=content-length%3Bhost"), "{url}");
    }
    assert_eq!(put(&url, &body).0, 200);
    let (url, size) = download_url(&bob, "/groups/bob/download/attachments/in/data%20v1.bin");
    assert_eq!(size, 300_000);
    let (s, got) = get(&url);
    assert_eq!(s, 200);
    assert!(got == body, "downloaded bytes differ from the uploaded ones");
    let (s, m) = bob.get("/groups/bob/attachments/in/data%20v1.bin");
    assert_eq!(s, 200, "{m}");
    let m = json(&m);
    assert_eq!((m["content_type"].as_str(), m["size"].as_i64()), (Some("NoSet"), Some(300_000)));
    assert_eq!(storage_used(&c, "bob"), 300_000);
    // A second upload to the same key says so, and replaces the bytes.
    let (exist, url) = attachment_url(&bob, "bob", "in/data v1.bin", 5);
    assert!(exist);
    assert_eq!(put(&url, b"hello").0, 200);
    let (url, _) = download_url(&bob, "/groups/bob/download/attachments/in/data%20v1.bin");
    assert_eq!(get(&url), (200, b"hello".to_vec()));
}

#[test]
fn attachment_upload_then_download_returns_the_same_bytes_local() {
    attachment_round_trip(Backend::Local);
}

#[test]
fn attachment_upload_then_download_returns_the_same_bytes_s3() {
    attachment_round_trip(Backend::S3);
}

fn artifact_round_trip(b: Backend) {
    let c = coordinator(b);
    let bob = c.user("bob");
    let task = add_task(&bob, "bob");
    let body = payload(70_000, 3);
    upload_artifact(&bob, task, "result", &body);
    let (url, size) = download_url(&bob, &format!("/tasks/{task}/download/artifacts/result"));
    assert_eq!(size, 70_000);
    let (s, got) = get(&url);
    assert_eq!(s, 200);
    assert!(got == body, "downloaded bytes differ from the uploaded ones");
    // Aliases name the same artifact; a missing type is 404.
    assert_eq!(bob.get(&format!("/tasks/{task}/download/artifacts/Result")).0, 200);
    let (s, b) = bob.get(&format!("/tasks/{task}/download/artifacts/exec-log"));
    assert_eq!(s, 404, "{b}");
    assert_eq!(bob.get(&format!("/tasks/{task}/download/artifacts/bogus")).0, 400);
    assert_eq!(storage_used(&c, "bob"), 70_000);
}

#[test]
fn artifact_upload_then_download_returns_the_same_bytes_local() {
    artifact_round_trip(Backend::Local);
}

#[test]
fn artifact_upload_then_download_returns_the_same_bytes_s3() {
    artifact_round_trip(Backend::S3);
}

#[test]
fn large_objects_stream_through_the_local_store() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    // Larger than the 2 MiB request body limit of the API.
    let body = payload(9 << 20, 11);
    upload_attachment(&bob, "bob", "big.bin", &body);
    let (url, _) = download_url(&bob, "/groups/bob/download/attachments/big.bin");
    let (s, got) = get(&url);
    assert_eq!(s, 200);
    assert!(got.len() == body.len() && got == body, "9 MiB round trip differs");
}

// ---------------------------------------------------------------- URLs are what they say

fn tampered_and_expired_urls_are_refused(b: Backend) {
    let c = coordinator(b);
    let bob = c.user("bob");
    upload_attachment(&bob, "bob", "k/a.txt", b"original");
    let sig = match b {
        Backend::Local => "signature=",
        Backend::S3 => "X-Amz-Signature=",
    };
    let (_, up) = attachment_url(&bob, "bob", "k/a.txt", 4);
    assert_eq!(put(&tamper(&up, sig), b"evil").0, 403, "tampered signature accepted");
    // The same signature on another key, or a PUT URL used to read.
    assert_eq!(put(&up.replacen("k/a.txt", "k/b.txt", 1), b"evil").0, 403);
    assert_eq!(get(&up).0, 403);
    if let Backend::Local = b {
        assert_eq!(put(&up.replacen("length=4", "length=5", 1), b"evil!").0, 403);
        let later = up.replacen("expires=", "expires=9", 1);
        assert_eq!(put(&later, b"evil").0, 403, "a longer expiry was accepted");
    }
    let (down, _) = download_url(&bob, "/groups/bob/download/attachments/k/a.txt");
    assert_eq!(get(&tamper(&down, sig)).0, 403);
    assert_eq!(get(&down), (200, b"original".to_vec()), "a refused PUT changed the object");
    assert_eq!(put(&down, b"evil").0, 403, "a GET URL accepted a PUT");

    // An expired URL, otherwise valid, is refused.
    let expired = match b {
        Backend::Local => {
            let (private, public) = keys();
            let k = mito::testing::Keys::load(private, public).unwrap();
            let past = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 5;
            mito::testing::local_url(&k, &c.url, "GET", "mitosis-attachments", "bob/k/a.txt", None, past)
        }
        Backend::S3 => {
            // Signed like the coordinator signs, with a one-second lifetime.
            use rusty_s3::S3Action;
            let path = down.split('?').next().unwrap().trim_start_matches(&s3_server().url).trim_start_matches('/');
            let (bucket, key) = path.split_once('/').unwrap();
            let bucket = rusty_s3::Bucket::new(
                url::Url::parse(&s3_server().url).unwrap(),
                rusty_s3::UrlStyle::Path,
                bucket.to_string(),
                "mitosis",
            )
            .unwrap();
            let creds = rusty_s3::Credentials::new(S3_ACCESS_KEY, S3_SECRET_KEY);
            let key = mito::testing::percent_decode(key, false).unwrap();
            let fresh = bucket.get_object(Some(&creds), &key).sign(Duration::from_secs(1)).to_string();
            assert_eq!(get(&fresh).0, 200, "a fresh self-signed URL should work");
            std::thread::sleep(Duration::from_millis(2500));
            fresh
        }
    };
    assert_eq!(get(&expired).0, 403, "an expired URL was accepted");
}

#[test]
fn tampered_or_expired_urls_are_refused_local() {
    tampered_and_expired_urls_are_refused(Backend::Local);
}

#[test]
fn tampered_or_expired_urls_are_refused_s3() {
    tampered_and_expired_urls_are_refused(Backend::S3);
}

fn puts_of_another_length_are_refused(b: Backend) {
    let c = coordinator(b);
    let bob = c.user("bob");
    let (_, url) = attachment_url(&bob, "bob", "exact.bin", 10);
    let (s, _) = put(&url, &[1; 9]);
    assert!((400..500).contains(&s), "a shorter body got {s}");
    let (s, _) = put(&url, &[1; 11]);
    assert!((400..500).contains(&s), "a longer body got {s}");
    let (down, _) = download_url(&bob, "/groups/bob/download/attachments/exact.bin");
    assert_eq!(get(&down).0, 404, "a refused PUT left an object");
    assert_eq!(put(&url, &[1; 10]).0, 200);
    assert_eq!(get(&down), (200, vec![1; 10]));
}

#[test]
fn a_put_of_another_length_is_refused_local() {
    puts_of_another_length_are_refused(Backend::Local);
}

#[test]
fn a_put_of_another_length_is_refused_s3() {
    puts_of_another_length_are_refused(Backend::S3);
}

// ---------------------------------------------------------------- quota and keys

#[test]
fn exceeding_the_quota_gives_403_and_reserves_nothing() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let task = add_task(&bob, "bob");
    let (s, b) = c.admin().post("/admin/groups/bob/storage-quota", &json!({"storage_quota": "=1KB"}));
    assert_eq!((s, b.as_str()), (200, r#"{"storage_quota":1000}"#));
    attachment_url(&bob, "bob", "a", 600);
    let (s, b) = bob.post("/groups/bob/attachments", &json!({"key": "b", "content_length": 600}));
    assert_eq!((s, msg(&b).as_str()), (403, "Resource quota exceeded"));
    assert_eq!(artifact_url(&bob, task, "result", 401).0, 403);
    assert_eq!(storage_used(&c, "bob"), 600, "a refused upload was charged");
    assert_eq!(bob.get("/groups/bob/attachments/b").0, 404, "a refused upload left a row");
    assert_eq!(bob.get(&format!("/tasks/{task}/download/artifacts/result")).0, 404);
    // Re-uploading charges only the growth, and a smaller re-upload keeps the larger size.
    let (exist, _) = attachment_url(&bob, "bob", "a", 1000);
    assert!(exist);
    assert_eq!(storage_used(&c, "bob"), 1000);
    attachment_url(&bob, "bob", "a", 10);
    assert_eq!(storage_used(&c, "bob"), 1000);
    assert_eq!(json(&bob.get("/groups/bob/attachments/a").1)["size"], 1000);
    // More quota, more room.
    let (s, b) = c.admin().post("/admin/groups/bob/storage-quota", &json!({"storage_quota": "+1GiB"}));
    assert_eq!((s, b), (200, format!(r#"{{"storage_quota":{}}}"#, 1000 + (1i64 << 30))));
    assert_eq!(artifact_url(&bob, task, "result", 5000).0, 200);
    assert_eq!(storage_used(&c, "bob"), 6000);
    // A locked group takes no uploads.
    c.db.connect().execute("UPDATE groups SET state = 1 WHERE group_name = 'bob'", &[]).unwrap();
    let (s, b) = bob.post("/groups/bob/attachments", &json!({"key": "c", "content_length": 1}));
    assert_eq!((s, msg(&b).as_str()), (400, "Process request error: Group is not active"));
}

#[test]
fn traversal_and_malformed_keys_are_refused() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let long = "k".repeat(1020);
    for key in ["../x", "a/../../x", "/abs", "a//b", "./a", "a/.", "a/..", "a/", "", "x\u{1}y", long.as_str()] {
        let (s, b) = bob.post("/groups/bob/attachments", &json!({"key": key, "content_length": 1}));
        assert_eq!(s, 400, "{key:?}: {b}");
        assert!(msg(&b).contains("Invalid attachment key"), "{b}");
    }
    assert_eq!(storage_used(&c, "bob"), 0);
    let rows: i64 = c.db.connect().query_one("SELECT count(*) FROM attachments", &[]).unwrap().get(0);
    assert_eq!(rows, 0);

    // The store's own routes: no listing, no way out of the directory, signature first.
    upload_attachment(&bob, "bob", "in/x", b"data");
    for path in [
        "/objects/mitosis-attachments",
        "/objects/mitosis-attachments/",
        "/objects/mitosis-attachments/bob/",
        "/objects/mitosis-attachments/..%2F..%2F..%2Fetc%2Fpasswd",
        "/objects/mitosis-attachments/bob/../../../etc/passwd",
        "/objects/../coordinator.log",
        "/objects/mitosis-attachments/bob/in/x",
    ] {
        let (s, _) = c.anon().get(path);
        assert!(matches!(s, 400 | 403 | 404), "{path} gave {s}");
    }
    // The object sits under the data directory, and nowhere else.
    let data = c.home.path().join("data").join("objects").join("mitosis-attachments");
    let stored = data.join("d_bob").join("d_in").join("f_x");
    assert_eq!(std::fs::read(&stored).unwrap(), b"data");
    // Keys `a` and `a/b` can both exist, as in S3.
    upload_attachment(&bob, "bob", "in", b"file");
    let (url, _) = download_url(&bob, "/groups/bob/download/attachments/in");
    assert_eq!(get(&url), (200, b"file".to_vec()));
}

// ---------------------------------------------------------------- permissions

/// bob owns group lab; carol reads, dave writes, eve is not a member.
fn lab(c: &Coordinator) -> (Api, Api, Api, Api) {
    let bob = c.user("bob");
    assert_eq!(bob.post("/groups", &json!({"group_name": "lab"})).0, 200);
    let (carol, dave, eve) = (c.user("carol"), c.user("dave"), c.user("eve"));
    let (s, b) = bob.put("/groups/lab/users", &json!({"relations": {"carol": "Read", "dave": "Write"}}));
    assert_eq!(s, 200, "{b}");
    (bob, carol, dave, eve)
}

#[test]
fn attachment_routes_follow_group_roles() {
    let c = Coordinator::start();
    let (_bob, carol, dave, eve) = lab(&c);
    upload_attachment(&dave, "lab", "shared.txt", b"hi");
    backdate(&c);
    let routes: Vec<(&str, &str, Option<serde_json::Value>)> = vec![
        ("GET", "/groups/lab/attachments/shared.txt", None),
        ("GET", "/groups/lab/download/attachments/shared.txt", None),
        ("POST", "/groups/lab/attachments/query", Some(json!({"count": false}))),
        ("POST", "/groups/lab/download/attachments", Some(json!({}))),
        ("POST", "/groups/lab/download/attachments/list", Some(json!({"keys": ["shared.txt"]}))),
    ];
    for (m, p, body) in &routes {
        let call = |api: &Api| match body {
            Some(b) => api.post(p, b),
            None => http(&api.base, m, p, api.token.as_deref(), None),
        };
        assert_eq!(call(&eve).0, 403, "eve {m} {p}");
        let (s, b) = call(&carol);
        assert_eq!(s, 200, "carol {m} {p}: {b}");
    }
    // Reading members cannot change anything.
    for api in [&carol, &eve] {
        assert_eq!(api.post("/groups/lab/attachments", &json!({"key": "x", "content_length": 1})).0, 403);
        assert_eq!(api.delete("/groups/lab/attachments/shared.txt").0, 403);
        assert_eq!(api.post("/groups/lab/delete/attachments/list", &json!({"keys": ["shared.txt"]})).0, 403);
        assert_eq!(api.post("/groups/lab/delete/attachments", &json!({})).0, 403);
    }
    assert_eq!(dave.delete("/groups/lab/attachments/shared.txt").0, 200);
    // Static segments win over keys, as in mitosis.
    assert_eq!(carol.get("/groups/lab/attachments/query").0, 405);
}

#[test]
fn artifact_routes_need_membership_even_where_mitosis_checks_nothing() {
    let c = Coordinator::start();
    let (bob, carol, _dave, eve) = lab(&c);
    let task = add_task(&bob, "lab");
    upload_artifact(&bob, task, "result", b"out");
    backdate(&c);
    let single = format!("/tasks/{task}/download/artifacts/result");
    // Not a member: the task does not exist as far as eve can tell.
    let (s, b) = eve.get(&single);
    assert_eq!((s, msg(&b)), (404, format!("Task with uuid {task} not found")));
    let (s, b) = eve.post("/tasks/download/artifacts/list", &json!({"uuids": [task], "content_type": "result"}));
    assert_eq!((s, json(&b)["downloads"].clone()), (200, json!([])));
    assert_eq!(eve.post("/tasks/download/artifacts", &json!({"group_name": "lab", "content_type": "result"})).0, 403);
    assert_eq!(artifact_url(&eve, task, "result", 1).0, 404);
    assert_eq!(eve.delete(&format!("/tasks/{task}/artifacts/result")).0, 404);
    // The admin is not a member either, but the admin route deletes.
    assert_eq!(c.admin().get(&single).0, 404);
    // Read: download yes, change no.
    assert_eq!(carol.get(&single).0, 200);
    let (s, b) = carol.post("/tasks/download/artifacts/list", &json!({"uuids": [task], "content_type": "result"}));
    assert_eq!(json(&b)["downloads"].as_array().map(Vec::len), Some(1), "{s} {b}");
    let (s, b) = carol.post("/tasks/download/artifacts", &json!({"group_name": "lab", "content_type": "result"}));
    assert_eq!(json(&b)["downloads"][0]["uuid"], json!(task), "{s} {b}");
    assert_eq!(artifact_url(&carol, task, "result", 1).0, 403);
    assert_eq!(carol.delete(&format!("/tasks/{task}/artifacts/result")).0, 403);
    let (s, b) = carol.post("/tasks/delete/artifacts/list", &json!({"uuids": [task], "content_type": "result"}));
    assert_eq!((s, json(&b)["failed_uuids"].clone()), (200, json!([task])));
    assert_eq!(c.admin().delete(&format!("/admin/tasks/{task}/artifacts/result")).0, 200);
    assert_eq!(carol.get(&single).0, 404);
}

#[test]
fn workers_get_resource_urls_only_for_their_groups_and_current_task() {
    let c = Coordinator::start();
    let (bob, carol, _dave, _eve) = lab(&c);
    assert_eq!(bob.post("/groups", &json!({"group_name": "side"})).0, 200);
    let w = c.worker(&bob, &[], &["lab"]);
    // The worker only reads `side`: its tasks never run there.
    let (s, b) = bob.put(&format!("/workers/{}/groups", w.uuid), &json!({"relations": {"side": "Read"}}));
    assert_eq!(s, 200, "{b}");
    let mine = add_task(&bob, "lab");
    let side = add_task(&bob, "side");
    let elsewhere = add_task(&carol, "carol");
    upload_attachment(&bob, "lab", "in.txt", b"lab input");
    upload_attachment(&bob, "side", "in.txt", b"side input");
    upload_artifact(&bob, mine, "result", b"lab result");
    upload_artifact(&bob, side, "result", b"side result");
    upload_artifact(&carol, elsewhere, "result", b"carol result");
    let t = w.fetch().expect("the lab task");
    assert_eq!(t["uuid"], json!(mine));
    let (url, size) = download_url(&w.api, &format!("/workers/tasks/{mine}/attachments/in.txt"));
    assert_eq!((get(&url), size), ((200, b"lab input".to_vec()), 9));
    let (url, _) = download_url(&w.api, &format!("/workers/tasks/{mine}/artifacts/result"));
    assert_eq!(get(&url), (200, b"lab result".to_vec()));
    // Not its current task, a group it does not serve, a missing attachment.
    assert_eq!(w.api.get(&format!("/workers/tasks/{side}/attachments/in.txt")).0, 404);
    assert_eq!(w.api.get(&format!("/workers/tasks/{side}/artifacts/result")).0, 404);
    assert_eq!(w.api.get(&format!("/workers/tasks/{elsewhere}/artifacts/result")).0, 404);
    assert_eq!(w.api.get(&format!("/workers/tasks/{mine}/attachments/nope")).0, 404);
    // User tokens are not worker tokens, and a removed worker's token stops working.
    assert_eq!(bob.get(&format!("/workers/tasks/{mine}/artifacts/result")).0, 401);
    assert_eq!(w.api.delete("/workers").0, 200);
    let (s, b) = w.api.get(&format!("/workers/tasks/{mine}/artifacts/result"));
    assert_eq!((s, msg(&b).as_str()), (401, "Authentication error: Wrong credentials"));
}

fn worker_upload(b: Backend) {
    let c = coordinator(b);
    let bob = c.user("bob");
    let uuid = add_task(&bob, "bob");
    let w = c.worker(&bob, &[], &[]);
    let t = w.fetch().unwrap();
    let id = t["id"].as_i64().unwrap();
    assert_eq!(w.report(id, json!("Finish")).0, 200);
    let body = payload(40_000, 5);
    let (s, r) = w.report(id, json!({"Upload": {"content_type": "std-log", "content_length": body.len()}}));
    assert_eq!(s, 200, "{r}");
    let url = json(&r)["url"].as_str().unwrap().to_string();
    assert_eq!(put(&url, &body).0, 200);
    assert_eq!(storage_used(&c, "bob"), 40_000);
    // Over the quota: refused, and nothing is charged.
    c.admin().post("/admin/groups/bob/storage-quota", &json!({"storage_quota": "=50000"}));
    let (s, r) = w.report(id, json!({"Upload": {"content_type": "result", "content_length": 10_001}}));
    assert_eq!((s, msg(&r).as_str()), (403, "Resource quota exceeded"));
    assert_eq!(storage_used(&c, "bob"), 40_000);
    assert_eq!(w.report(id, json!({"Commit": {"exit_status": 0, "msg": null}})).0, 200);
    let (s, info) = bob.get(&format!("/tasks/{uuid}"));
    assert_eq!(json(&info)["artifacts"][0]["content_type"], "std-log", "{s} {info}");
    let (url, size) = download_url(&bob, &format!("/tasks/{uuid}/download/artifacts/std-log"));
    assert_eq!(size, 40_000);
    let (s, got) = get(&url);
    assert!(s == 200 && got == body, "the worker's upload did not come back intact ({s})");
}

#[test]
fn a_worker_uploads_artifacts_through_its_report_local() {
    worker_upload(Backend::Local);
}

#[test]
fn a_worker_uploads_artifacts_through_its_report_s3() {
    worker_upload(Backend::S3);
}

// ---------------------------------------------------------------- deletes

#[test]
fn deletes_free_quota_and_users_wait_an_hour_after_an_upload() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    let task = add_task(&bob, "bob");
    upload_attachment(&bob, "bob", "a.txt", &[0; 100]);
    upload_attachment(&bob, "bob", "b.txt", &[0; 20]);
    upload_artifact(&bob, task, "exec-log", &[0; 30]);
    assert_eq!(storage_used(&c, "bob"), 150);
    let (s, b) = bob.delete("/groups/bob/attachments/a.txt");
    assert_eq!(
        (s, msg(&b).as_str()),
        (400, "Process request error: Cannot delete attachment that has been updated in the last hour")
    );
    let (s, b) = bob.delete(&format!("/tasks/{task}/artifacts/exec-log"));
    assert_eq!(s, 400, "{b}");
    assert!(msg(&b).contains("last hour"), "{b}");
    assert_eq!(storage_used(&c, "bob"), 150);
    // Admins need not wait.
    let (down, _) = download_url(&bob, "/groups/bob/download/attachments/a.txt");
    assert_eq!(c.admin().delete("/admin/groups/bob/attachments/a.txt").0, 200);
    assert_eq!(storage_used(&c, "bob"), 50);
    assert_eq!(get(&down).0, 404, "the object outlived its deletion");
    assert_eq!(c.admin().delete("/admin/groups/bob/attachments/a.txt").0, 404);
    // An hour later users may delete too.
    upload_attachment(&bob, "bob", "c.txt", &[0; 5]);
    backdate(&c);
    upload_attachment(&bob, "bob", "fresh.txt", &[0; 7]);
    let (s, b) = bob.post("/groups/bob/delete/attachments/list", &json!({"keys": ["b.txt", "fresh.txt", "none"]}));
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!((v["deleted_count"].as_u64(), v["failed_keys"].clone()), (Some(1), json!(["fresh.txt", "none"])));
    let (s, b) = bob.post("/groups/bob/delete/attachments", &json!({"key": "."}));
    assert_eq!((s, json(&b)["deleted_count"].as_u64()), (200, Some(1)), "{b}");
    assert_eq!(bob.delete(&format!("/tasks/{task}/artifacts/exec-log")).0, 200);
    assert_eq!(storage_used(&c, "bob"), 7, "only fresh.txt is left");
    let (s, b) = bob.post("/groups/bob/attachments/query", &json!({"count": false}));
    assert_eq!(json(&b)["attachments"][0]["key"], "fresh.txt", "{s} {b}");
}

#[test]
fn a_failing_object_store_leaks_nothing() {
    let mut s3 = S3Server::start();
    let c = with_s3(&s3);
    let bob = c.user("bob");
    upload_attachment(&bob, "bob", "keep.bin", &[9; 64]);
    let task = add_task(&bob, "bob");
    upload_artifact(&bob, task, "result", &[8; 36]);
    backdate(&c);
    s3.stop();
    let (s, b) = bob.delete("/groups/bob/attachments/keep.bin");
    assert_eq!(s, 503, "{b}");
    assert_eq!(bob.delete(&format!("/tasks/{task}/artifacts/result")).0, 503);
    let (s, b) = bob.post("/groups/bob/delete/attachments/list", &json!({"keys": ["keep.bin"]}));
    assert_eq!((s, json(&b)["failed_keys"].clone()), (200, json!(["keep.bin"])));
    assert_eq!(storage_used(&c, "bob"), 100, "quota freed for an object still stored");
    assert_eq!(bob.get("/groups/bob/attachments/keep.bin").0, 200, "row dropped for an object still stored");
    s3.restart();
    let (url, _) = download_url(&bob, "/groups/bob/download/attachments/keep.bin");
    assert_eq!(get(&url), (200, vec![9; 64]));
    assert_eq!(bob.delete("/groups/bob/attachments/keep.bin").0, 200);
    assert_eq!(bob.delete(&format!("/tasks/{task}/artifacts/result")).0, 200);
    assert_eq!(storage_used(&c, "bob"), 0);
    assert_eq!(get(&url).0, 404);
}

#[test]
fn startup_fails_clearly_when_s3_is_unreachable() {
    let home = TempDir::new("s3-down");
    let db = TestDb::new();
    let log = home.path().join("coordinator.log");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut child = spawn_coordinator(&home, &db.url, free_port(), &["--s3", &closed], &log);
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "coordinator kept running without S3:\n{text}");
    assert!(text.contains(&format!("cannot reach S3 at {closed}")), "{text}");
}

#[test]
fn an_s3_url_that_is_not_http_is_refused_with_a_reason() {
    let home = TempDir::new("s3-scheme");
    let db = TestDb::new();
    let log = home.path().join("coordinator.log");
    let mut child = spawn_coordinator(&home, &db.url, free_port(), &["--s3", "ftp://s3.example.com"], &log);
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "coordinator started:\n{text}");
    assert!(text.contains("is not an http:// or https:// URL"), "{text}");
}

// ---------------------------------------------------------------- batches

#[test]
fn batch_downloads_list_what_exists() {
    let c = Coordinator::start();
    let bob = c.user("bob");
    for k in ["logs/1.txt", "logs/2.txt", "data.bin"] {
        upload_attachment(&bob, "bob", k, k.as_bytes());
    }
    let (s, b) = bob.post("/groups/bob/download/attachments", &json!({"key": "logs/", "limit": 5}));
    assert_eq!(s, 200, "{b}");
    let v = json(&b);
    assert_eq!(v["group_name"], "bob");
    let items = v["downloads"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["key"].as_str().unwrap()).collect::<Vec<_>>(), ["logs/1.txt", "logs/2.txt"]);
    let (st, got) = get(items[1]["url"].as_str().unwrap());
    assert_eq!((st, got), (200, b"logs/2.txt".to_vec()));
    let (s, b) = bob.post("/groups/bob/download/attachments/list", &json!({"keys": ["data.bin", "missing"]}));
    assert_eq!(json(&b)["downloads"].as_array().map(Vec::len), Some(1), "{s} {b}");
    assert_eq!(bob.post("/groups/bob/download/attachments/list", &json!({"keys": []})).0, 400);
    let (s, b) = bob.post("/groups/bob/attachments/query", &json!({"count": true, "key": "logs"}));
    assert_eq!((s, json(&b)["count"].as_u64()), (200, Some(2)));

    let t1 = add_task(&bob, "bob");
    let t2 = add_task(&bob, "bob");
    upload_artifact(&bob, t1, "std-log", b"one");
    let (s, b) = bob.post("/tasks/download/artifacts/list", &json!({"uuids": [t1, t2], "content_type": "std-log"}));
    let items = json(&b)["downloads"].clone();
    assert_eq!((s, items.as_array().map(Vec::len)), (200, Some(1)), "{b}");
    assert_eq!(get(items[0]["url"].as_str().unwrap()), (200, b"one".to_vec()));
    // The filter defaults to the caller's own group.
    let (s, b) = bob.post("/tasks/download/artifacts", &json!({"content_type": "std-log", "states": ["Ready"]}));
    assert_eq!(json(&b)["downloads"][0]["uuid"], json!(t1), "{s} {b}");
    let (s, b) = bob.post("/tasks/download/artifacts", &json!({"content_type": "std-log", "states": ["Running"]}));
    assert_eq!(json(&b)["downloads"], json!([]), "{s} {b}");
    assert_eq!(bob.post("/tasks/download/artifacts", &json!({"content_type": "std-log", "priority": ">x"})).0, 400);
    assert_eq!(bob.post("/tasks/download/artifacts", &json!({"content_type": "std-log", "tags": []})).0, 400);
}
