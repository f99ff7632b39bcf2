//! The dashboard at `/ui/` in a real headless Chromium, against a real coordinator and
//! worker: logging in, submitting from the form, watching a task move without reloading,
//! reading its output, cancelling, what another group's member sees, and values that look
//! like HTML shown as text.

use crate::harness::*;
use crate::webdriver::Browser;
use crate::worker::{submit, wait_committed, Worker};
use serde_json::json;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn log_in(b: &Browser, c: &Coordinator, user: &str) {
    b.goto(&format!("{}/ui/", c.url));
    b.type_into("#login-user", user);
    b.type_into("#login-pass", &format!("{user}-pw"));
    b.click("#login-submit");
    b.find("#task-table");
}

/// Where screenshots go: a folder under cargo's target directory for test output.
fn artifact_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Checks that a PNG is `width` pixels wide and shows more than a blank page: its pixels
/// (after zlib) hold many distinct byte values, where a one-colour image holds a few.
fn assert_png_not_blank(png: &[u8], width: u32, what: &str) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{what}: not a PNG");
    let (mut w, mut idat, mut off) = (0u32, Vec::new(), 8);
    while off + 8 <= png.len() {
        let len = u32::from_be_bytes(png[off..off + 4].try_into().unwrap()) as usize;
        let kind = &png[off + 4..off + 8];
        let data = &png[off + 8..off + 8 + len];
        if kind == b"IHDR" {
            w = u32::from_be_bytes(data[..4].try_into().unwrap());
        } else if kind == b"IDAT" {
            idat.extend_from_slice(data);
        }
        off += 12 + len;
    }
    assert_eq!(w, width, "{what}: screenshot width");
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
    let mut seen = [false; 256];
    raw.iter().for_each(|b| seen[*b as usize] = true);
    let distinct = seen.iter().filter(|s| **s).count();
    assert!(distinct > 40, "{what}: the screenshot looks blank ({distinct} distinct byte values)");
}

#[test]
fn a_user_submits_from_the_form_watches_it_run_reads_its_output_and_cancels_another() {
    let c = Coordinator::start();
    let dora = c.user("dora");
    let b = Browser::start(1280, 900);
    log_in(&b, &c, "dora");

    // Submit from the form with no worker yet, so the task is seen waiting first.
    b.click("a[href='#/submit']");
    b.type_into("#s-cmd", "sh -c 'echo hello-from-the-task; sleep 8'");
    b.type_into("#s-labels", "from-ui");
    b.click("#s-submit");
    b.find("#task-page");
    let state = b.wait_text("#task-state", Duration::from_secs(10), |t| t == "Ready");
    let url: String = b.eval("return location.hash;", json!([])).as_str().unwrap().to_string();
    let uuid = url.trim_start_matches("#/task/").to_string();
    assert_eq!(uuid.len(), 36, "{url}");
    let (s, body) = dora.get(&format!("/tasks/{uuid}"));
    assert_eq!(s, 200, "{body}");
    let info = json(&body)["info"].clone();
    assert_eq!(info["spec"]["args"], json!(["sh", "-c", "echo hello-from-the-task; sleep 8"]));
    assert_eq!(info["labels"], json!(["from-ui"]));
    assert_eq!(info["spec"]["terminal_output"], true);

    // The page follows the task without a reload: record every state it shows.
    let marker: String = b.eval("window.__sameDocument = 'yes'; return 'ok';", json!([])).as_str().unwrap().into();
    assert_eq!(marker, "ok");
    let w = Worker::start(&c.url, "dora", "dora-pw", &[]);
    w.id();
    let mut seen = vec![state];
    let mut live_while_running = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.last().map(String::as_str) != Some("Finished") {
        assert!(Instant::now() < deadline, "states seen: {seen:?}\nworker log:\n{}", w.log_text());
        let t = b.text("#task-state");
        if t == "Running" && b.text("#live-stdout").contains("hello-from-the-task") {
            live_while_running = true;
        }
        if !t.is_empty() && seen.last() != Some(&t) {
            seen.push(t);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(seen, ["Ready", "Running", "Finished"]);
    assert!(live_while_running, "the running task's output never showed live");
    assert_eq!(b.eval("return window.__sameDocument;", json!([])), json!("yes"), "the page was reloaded");
    let out = b.wait_text("#std-log", Duration::from_secs(10), |t| t.contains("hello-from-the-task"));
    assert!(out.contains("stdout"), "the output names its file: {out}");
    assert!(b.text("#task-result").starts_with("exit 0"), "{}", b.text("#task-result"));

    // Screenshots at desktop and phone widths.
    let wide = b.screenshot();
    std::fs::write(artifact_path("task-1280.png"), &wide).unwrap();
    assert_png_not_blank(&wide, 1280, "1280 px");
    b.click("a[href='#/tasks']");
    b.wait_text("#task-rows", Duration::from_secs(10), |t| t.contains(&uuid));
    b.wait_text("#state-counts", Duration::from_secs(10), |t| t.contains("Finished: 1"));
    let list = b.screenshot();
    std::fs::write(artifact_path("tasks-1280.png"), &list).unwrap();
    assert_png_not_blank(&list, 1280, "tasks at 1280 px");
    b.set_window(390, 844);
    let narrow = b.screenshot();
    std::fs::write(artifact_path("tasks-390.png"), &narrow).unwrap();
    // Device pixels may be scaled; the window is at most 390 CSS pixels wide.
    let narrow_width = u32::from_be_bytes(narrow[16..20].try_into().unwrap());
    assert!((300..=390 * 2).contains(&narrow_width), "phone-width screenshot is {narrow_width} px");
    assert_png_not_blank(&narrow, narrow_width, "390 px");
    let overflow = b.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([]));
    assert_eq!(overflow, json!(true), "the tasks page scrolls sideways at phone width");
    b.set_window(1280, 900);

    // Cancel a running task from its page.
    let long = submit(&dora, "dora", &["sleep", "60"], "5m", false);
    b.goto(&format!("{}/ui/#/task/{long}", c.url));
    b.wait_text("#task-state", Duration::from_secs(20), |t| t == "Running");
    b.accept_dialogs();
    b.click("#task-cancel");
    b.wait_text("#task-state", Duration::from_secs(30), |t| t == "Cancelled");
    let info = wait_committed(&dora, &long, Duration::from_secs(10));
    assert_eq!(info["state"], "Cancelled", "{info}");
}

#[test]
fn a_non_member_sees_nothing_of_another_group_and_html_in_values_stays_text() {
    let c = Coordinator::start();
    let ivy = c.user("ivy");
    c.user("mallory");
    let payload = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
    let body = json!({
        "group_name": "ivy", "tags": [], "labels": [payload], "timeout": "1m", "priority": 0,
        "task_spec": {"args": ["echo", payload], "envs": {"HTML": payload}, "resources": [],
                      "terminal_output": false, "watch": null}
    });
    let (s, b) = ivy.post("/tasks", &body);
    assert_eq!(s, 200, "{b}");
    let uuid = json(&b)["uuid"].as_str().unwrap().to_string();

    let b = Browser::start(1280, 900);
    log_in(&b, &c, "ivy");
    b.wait_text("#task-rows", Duration::from_secs(10), |t| t.contains(&uuid) && t.contains(payload));
    b.click(&format!("a[href='#/task/{uuid}']"));
    let args = b.wait_text("#task-args", Duration::from_secs(10), |t| !t.is_empty());
    assert_eq!(args, format!("echo '{}'", payload.replace('\'', "'\\''")));
    assert!(b.text("#task-labels").contains(payload));
    assert!(b.text("#task-page").contains(&format!("HTML={payload}")));
    let injected = b.eval(
        "return [window.__xss === undefined, document.querySelectorAll('main img, main script').length];",
        json!([]),
    );
    assert_eq!(injected, json!([true, 0]), "markup from the task reached the DOM");

    // Another user: the group is not offered, the task is not listed, its page is refused.
    b.click("#logout");
    b.find("#login-form");
    log_in(&b, &c, "mallory");
    let groups = b.eval("return [...document.querySelectorAll('#f-group option')].map(o => o.value);", json!([]));
    assert_eq!(groups, json!(["mallory"]));
    b.wait_text("#task-rows", Duration::from_secs(10), |t| t.contains("No tasks match."));
    b.goto(&format!("{}/ui/#/task/{uuid}", c.url));
    let status = b.wait_text("#status", Duration::from_secs(10), |t| {
        t.contains("Permission denied") || t.contains(&format!("{uuid} not found"))
    });
    assert!(!b.text("main").contains(payload), "another group's task shown to mallory: {status}");
    // The token lives in the tab's session storage, never in the address.
    let url = b.eval("return location.href;", json!([]));
    assert!(!url.as_str().unwrap().contains("ey"), "{url}");
}

#[test]
fn the_dashboard_is_served_with_a_strict_policy() {
    let c = Coordinator::start();
    for path in ["/ui/", "/ui", "/ui/app.js", "/ui/app.css", "/ui/md5.js"] {
        let (s, _, headers) = http_with_headers(&c.url, path);
        assert_eq!(s, 200, "{path}");
        let csp = headers.get("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers.get("x-content-type-options").map(String::as_str), Some("nosniff"), "{path}");
    }
    assert_eq!(http_with_headers(&c.url, "/ui/missing.js").0, 404);
    let (s, body) = http(&c.url, "POST", "/ui/", None, Some("{}"));
    assert_eq!(s, 405, "{body}");
}

fn http_with_headers(base: &str, path: &str) -> (u16, String, std::collections::HashMap<String, String>) {
    match ureq::get(&format!("{base}{path}")).timeout(Duration::from_secs(10)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let headers = r
                .headers_names()
                .into_iter()
                .map(|n| (n.to_lowercase(), r.header(&n).unwrap_or("").to_string()))
                .collect();
            (status, r.into_string().unwrap_or_default(), headers)
        }
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn the_workers_and_group_pages_show_the_worker_and_upload_an_attachment() {
    let c = Coordinator::start();
    let gus = c.user("gus");
    let w = Worker::start(&c.url, "gus", "gus-pw", &[]);
    let id = w.id();
    let b = Browser::start(1280, 900);
    log_in(&b, &c, "gus");
    b.click("a[href='#/workers']");
    b.wait_text("#worker-rows", Duration::from_secs(10), |t| t.contains(&id) && t.contains("idle"));
    b.click(&format!("a[href='#/worker/{id}']"));
    let page = b.wait_text("#worker-page", Duration::from_secs(10), |t| t.contains("Groups and roles"));
    assert!(page.contains("gus: Write") || page.contains("gus: Admin"), "{page}");

    let home = TempDir::new("dashboard-upload");
    let file = home.path().join("hello.txt");
    let content = "hello from the browser\n".repeat(1000);
    std::fs::write(&file, &content).unwrap();
    b.goto(&format!("{}/ui/#/group/gus", c.url));
    b.wait_text("#attachment-rows", Duration::from_secs(10), |t| t.contains("No attachments."));
    b.choose_file("#att-file", &file);
    b.type_into("#att-key", "data/hello.txt");
    b.click("#att-upload button[type=submit]");
    b.wait_text("#attachment-rows", Duration::from_secs(20), |t| t.contains("data/hello.txt"));
    let (s, body) = gus.get("/groups/gus/attachments/data/hello.txt");
    assert_eq!(s, 200, "{body}");
    assert_eq!(json(&body)["size"], content.len(), "{body}");
    assert!(b.text("main").contains("of"), "the storage line shows used of quota");
    let width = b.eval("return document.querySelector('.bar > span').style.width;", json!([]));
    assert!(width.as_str().is_some_and(|w| w.ends_with('%')), "{width}");
}

#[test]
fn a_retried_tasks_page_downloads_each_attempts_own_output() {
    let c = Coordinator::start();
    let dora = c.user("dora");
    let dir = TempDir::new("ui-attempts");
    let runs = dir.path().join("runs");
    // The first run fails, the second succeeds; each prints its own line.
    let script =
        format!("echo run >> '{r}'; n=$(wc -l < '{r}'); echo \"output of run $n\"; [ $n -ge 2 ]", r = runs.display());
    let (s, b) = dora.post(
        "/tasks",
        &json!({"group_name": "dora", "tags": [], "labels": [], "timeout": "1m", "priority": 0,
            "task_spec": {"args": ["sh", "-c", script], "terminal_output": true},
            "retries": {"max": 2, "on": ["failure"], "backoff": "0s"}}),
    );
    assert_eq!(s, 200, "{b}");
    let uuid = json(&b)["uuid"].as_str().unwrap().to_string();
    let w = Worker::start(&c.url, "dora", "dora-pw", &[]);
    let info = wait_committed(&dora, &uuid, Duration::from_secs(60));
    assert_eq!(info["state"], "Finished", "{info}\n{}", w.log_text());

    let b = Browser::start(1280, 900);
    log_in(&b, &c, "dora");
    b.goto(&format!("{}/ui/#/task/{uuid}", c.url));
    b.find("#attempts button[data-attempt-artifact='2:std-log']");
    // A download is an <a download> the page clicks: record where it points instead.
    b.eval(
        "window.__hrefs = []; HTMLAnchorElement.prototype.click = function () { window.__hrefs.push(this.href); };",
        json!([]),
    );
    for k in 1..=2 {
        b.click(&format!("#attempts button[data-attempt-artifact='{k}:std-log']"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let href = loop {
            let v = b.eval("return window.__hrefs.length ? window.__hrefs.shift() : null;", json!([]));
            if let Some(h) = v.as_str() {
                break h.to_string();
            }
            assert!(Instant::now() < deadline, "attempt {k}'s download never started");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut gz = Vec::new();
        ureq::get(&href).call().expect("the download URL works").into_reader().read_to_end(&mut gz).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
        assert!(text.contains(&format!("output of run {k}")), "attempt {k}'s std-log: {text}");
        let other = 3 - k;
        assert!(!text.contains(&format!("output of run {other}")), "attempt {k}'s std-log: {text}");
    }
}
