//! `mito client` moving files: attachments (smart key forms, batches, progress bar) and
//! artifacts (upload, download, batches, `tasks logs`), through the coordinator's presigned
//! URLs; a harness test worker uploads the std-log a real worker would.

use crate::client::{admin_home, client, err, fails, ok, ok_json, out};
use crate::harness::*;
use std::path::Path;

/// A coordinator with the local store, or with the S3 server (which checks signatures).
fn setup(s3: bool) -> (Coordinator, Api, TempDir) {
    let c = if s3 {
        let flags = s3_server().coordinator_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Coordinator::start_with(TestDb::new(), &flags)
    } else {
        Coordinator::start()
    };
    let ann = c.user("ann");
    let home = TempDir::new("client");
    ok(&client(&c, &home, &["-u", "ann", "-p", "ann-pw", "--retain"]));
    (c, ann, home)
}

/// `n` bytes that are not all alike, so a truncated or shuffled copy shows.
fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7919) % 251) as u8).collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn attachments_upload_download_and_smart_keys(s3: bool) {
    let (c, _ann, home) = setup(s3);
    let data = content(3_000_000);
    std::fs::write(home.path().join("data.bin"), &data).unwrap();
    std::fs::write(home.path().join("small.txt"), b"small").unwrap();

    let o = client(&c, &home, &["groups", "attachments", "upload", "data.bin", "inputs/", "--pb"]);
    assert!(ok(&o).contains("Attachment uploaded successfully: inputs/data.bin in group ann"), "{}", out(&o));
    assert!(err(&o).contains("ETA") && err(&o).contains("3.0 MB"), "no progress bar: {}", err(&o));
    let o = ok(&client(&c, &home, &["groups", "attachments", "upload", "data.bin", "inputs/data.bin"]));
    assert!(o.contains("already exists"), "{o}");
    ok(&client(&c, &home, &["groups", "create", "lab"]));
    let v = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "upload", "-s", "data.bin", "lab/x/"]));
    assert_eq!(
        (v["group_name"].as_str(), v["key"].as_str(), v["size"].as_u64()),
        (Some("lab"), Some("x/data.bin"), Some(3_000_000))
    );
    let v = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "upload", "--smart", "small.txt", "lab"]));
    assert_eq!((v["group_name"].as_str(), v["key"].as_str()), (Some("lab"), Some("small.txt")));
    let e = fails(&client(&c, &home, &["groups", "attachments", "upload", "."]), 1);
    assert!(e.contains("directory"), "{e}");

    let m = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "get", "inputs/data.bin"]));
    assert_eq!(m["size"], 3_000_000);
    assert!(
        ok(&client(&c, &home, &["groups", "attachments", "get", "-s", "lab/x/data.bin"])).contains("Size: 3000000B")
    );

    // Default destination: the full key; with --smart, the file name; -o a file or a directory.
    let o = ok(&client(&c, &home, &["groups", "attachments", "download", "inputs/data.bin"]));
    assert!(o.contains("Attachment of size 3000000B downloaded to inputs/data.bin"), "{o}");
    assert_eq!(read(&home.path().join("inputs/data.bin")), data);
    std::fs::remove_file(home.path().join("data.bin")).unwrap();
    ok(&client(&c, &home, &["groups", "attachments", "download", "-s", "lab/x/data.bin"]));
    assert_eq!(read(&home.path().join("data.bin")), data);
    ok(&client(&c, &home, &["groups", "attachments", "download", "-g", "lab", "x/data.bin", "-o", "out.bin"]));
    assert_eq!(read(&home.path().join("out.bin")), data);
    std::fs::create_dir(home.path().join("dir")).unwrap();
    ok(&client(&c, &home, &["groups", "attachments", "download", "-s", "lab/small.txt", "-o", "dir"]));
    assert_eq!(read(&home.path().join("dir/small.txt")), b"small");
    let o = ok(&client(&c, &home, &["groups", "attachments", "download", "inputs/data.bin", "--no-download"]));
    assert!(o.starts_with("Attachment URL: http"), "{o}");
    let e = fails(&client(&c, &home, &["groups", "attachments", "download", "nosuch.bin"]), 1);
    assert!(e.contains("404"), "{e}");
    assert!(!home.path().join("nosuch.bin").exists());

    let q = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "query", "-g", "lab"]));
    assert_eq!(q["count"], 2);
    let q = ok_json(&client(
        &c,
        &home,
        &["--json", "groups", "attachments", "query", "-g", "lab", "-k", "data", "--count"],
    ));
    assert_eq!(q["count"], 1);
    let text = ok(&client(&c, &home, &["groups", "attachments", "query"]));
    assert!(text.starts_with("Found 1 attachments in group ann") && text.contains("inputs/data.bin"), "{text}");
}

fn attachment_batches_and_deletes(s3: bool) {
    let (c, _ann, home) = setup(s3);
    ok(&client(&c, &home, &["groups", "create", "lab"]));
    for (name, body) in [("a.txt", "alpha"), ("b.txt", "beta"), ("c.txt", "gamma")] {
        std::fs::write(home.path().join(name), body).unwrap();
        ok(&client(&c, &home, &["groups", "attachments", "upload", "-g", "lab", name, &format!("set/{name}")]));
    }
    let o = ok(&client(
        &c,
        &home,
        &["groups", "attachments", "download-many", "-g", "lab", "-o", "many", "--concurrent", "2", "--pb"],
    ));
    assert!(o.contains("Downloaded 3 of 3 files"), "{o}");
    assert_eq!(read(&home.path().join("many/b.txt")), b"beta");
    let v = ok_json(&client(
        &c,
        &home,
        &["--json", "groups", "attachments", "download-list", "-g", "lab", "set/a.txt", "set/c.txt", "-o", "list"],
    ));
    assert_eq!(v["downloads"].as_array().unwrap().len(), 2);
    assert_eq!(read(&home.path().join("list/c.txt")), b"gamma");
    let o =
        ok(&client(&c, &home, &["groups", "attachments", "download-list", "-g", "lab", "set/a.txt", "--no-download"]));
    assert!(o.starts_with("Attachment set/a.txt: http"), "{o}");

    // Fresh uploads are kept for an hour; the admin may delete them anyway.
    let e = fails(&client(&c, &home, &["groups", "attachments", "delete", "-s", "lab/set/a.txt"]), 1);
    assert!(e.contains("400"), "{e}");
    let v = ok_json(&client(
        &c,
        &home,
        &["--json", "groups", "attachments", "delete-list", "-g", "lab", "set/a.txt", "set/b.txt"],
    ));
    assert_eq!(v["deleted_count"], 0);
    assert_eq!(v["failed_keys"].as_array().unwrap().len(), 2);
    let v = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "delete-many", "-g", "lab"]));
    assert_eq!(v["deleted_count"], 0);
    let admin = admin_home(&c);
    ok(&client(&c, &admin, &["admin", "groups", "attachments", "delete", "-s", "lab/set/a.txt"]));
    let q = ok_json(&client(&c, &home, &["--json", "groups", "attachments", "query", "-g", "lab"]));
    assert_eq!(q["count"], 2);
}

/// A std-log archive as the worker makes it: std-log/stdout.log and std-log/stderr.log.
pub fn std_log(stdout: &str, stderr: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut t = tar::Builder::new(gz);
    for (name, body) in [("std-log/stdout.log", stdout), ("std-log/stderr.log", stderr)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

pub fn put(url: &str, body: &[u8]) {
    let r = ureq::put(url).set("Content-Length", &body.len().to_string()).send_bytes(body);
    assert!(r.is_ok(), "PUT to the presigned URL: {r:?}");
}

fn artifacts_and_logs(s3: bool) {
    let (c, ann, home) = setup(s3);
    let w = c.worker(&ann, &[], &[]);
    let o = ok(&client(&c, &home, &["tasks", "submit", "--terminal", "--", "sh", "-c", "echo out; echo err >&2"]));
    let u = o.trim().rsplit(' ').next().unwrap().to_string();
    let task = w.fetch().expect("a task");
    let id = task["id"].as_i64().unwrap();
    assert_eq!(w.report(id, serde_json::json!("Finish")).0, 200);
    let archive = std_log("out\n", "err\n");
    let (s, b) =
        w.report(id, serde_json::json!({"Upload": {"content_type": "std-log", "content_length": archive.len()}}));
    assert_eq!(s, 200, "{b}");
    put(json(&b)["url"].as_str().unwrap(), &archive);
    assert_eq!(w.report(id, serde_json::json!({"Commit": {"exit_status": 0, "msg": null}})).0, 200);

    let o = client(&c, &home, &["tasks", "logs", &u]);
    assert_eq!(ok(&o), "out\n");
    assert_eq!(err(&o), "err\n");
    let v = ok_json(&client(&c, &home, &["--json", "tasks", "logs", &u]));
    assert_eq!((v["stdout"].as_str(), v["stderr"].as_str()), (Some("out\n"), Some("err\n")));
    assert_eq!(ok(&client(&c, &home, &["tasks", "logs", &u, "--stderr"])), "");

    ok(&client(&c, &home, &["tasks", "artifacts", "download", &u, "std"]));
    assert_eq!(read(&home.path().join("std-log.tar.gz")), archive);

    // A user upload of a result, then every way to get it back.
    let data = content(1_500_000);
    std::fs::write(home.path().join("res.tgz"), &data).unwrap();
    let o = ok(&client(&c, &home, &["tasks", "artifacts", "upload", "res.tgz", &u, "result"]));
    assert!(o.contains("uploaded successfully"), "{o}");
    std::fs::create_dir(home.path().join("d")).unwrap();
    let v = ok_json(&client(&c, &home, &["--json", "tasks", "artifacts", "download", &u, "result", "-o", "d"]));
    assert_eq!(v["size"], 1_500_000);
    assert_eq!(read(&home.path().join("d/result.tar.gz")), data);
    ok(&client(&c, &home, &["tasks", "artifacts", "download-list", "result", &u, "-o", "l"]));
    assert_eq!(read(&home.path().join(format!("l/{u}.tar.gz"))), data);
    let o = ok(&client(
        &c,
        &home,
        &["tasks", "artifacts", "download-many", "result", "-s", "finished", "-o", "m", "--concurrent", "3"],
    ));
    assert!(o.contains("Downloaded 1 of 1 files"), "{o}");
    assert_eq!(read(&home.path().join(format!("m/{u}.tar.gz"))), data);
    let text = ok(&client(&c, &home, &["tasks", "get", &u]));
    assert!(text.contains("Artifacts: result.tar.gz of size 1500000B") && text.contains("std-log.tar.gz"), "{text}");

    // Recent artifacts are kept from users, not from the admin.
    fails(&client(&c, &home, &["tasks", "artifacts", "delete", &u, "result"]), 1);
    let v = ok_json(&client(&c, &home, &["--json", "tasks", "artifacts", "delete-list", "result", &u]));
    assert_eq!(v["deleted_count"], 0);
    let admin = admin_home(&c);
    ok(&client(&c, &admin, &["admin", "tasks", "artifacts", "delete", &u, "result"]));
    let e = fails(&client(&c, &home, &["tasks", "artifacts", "download", &u, "result"]), 1);
    assert!(e.contains("404"), "{e}");

    // A task without captured output says how to get some.
    let o = ok(&client(&c, &home, &["tasks", "submit", "--", "true"]));
    let plain = o.trim().rsplit(' ').next().unwrap().to_string();
    let e = fails(&client(&c, &home, &["tasks", "logs", &plain]), 1);
    assert!(e.contains("--terminal"), "{e}");
}

#[test]
fn attachments_upload_download_and_smart_keys_local() {
    attachments_upload_download_and_smart_keys(false);
}

#[test]
fn attachments_upload_download_and_smart_keys_s3() {
    attachments_upload_download_and_smart_keys(true);
}

#[test]
fn attachment_batches_and_deletes_local() {
    attachment_batches_and_deletes(false);
}

#[test]
fn attachment_batches_and_deletes_s3() {
    attachment_batches_and_deletes(true);
}

#[test]
fn artifacts_and_logs_local() {
    artifacts_and_logs(false);
}

#[test]
fn artifacts_and_logs_s3() {
    artifacts_and_logs(true);
}
