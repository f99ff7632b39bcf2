//! Workflows in the dashboard, in a real headless Chromium against a real coordinator and
//! worker: an array with a retry policy submitted from the form and followed on its array
//! page, a dependent task seen waiting then running, mistakes in the form named before
//! anything is sent, and the API answers those pages read (`POST /tasks/summary`, a task's
//! policy and dependencies).

use crate::harness::*;
use crate::webdriver::Browser;
use crate::worker::{submit, wait_committed, Worker};
use mito::api::{RetryOn, RetryPolicy, SubmitTaskReq, TaskSpec, TasksSubmitReq};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn log_in(b: &Browser, c: &Coordinator, user: &str) {
    b.goto(&format!("{}/ui/", c.url));
    b.type_into("#login-user", user);
    b.type_into("#login-pass", &format!("{user}-pw"));
    b.click("#login-submit");
    b.find("#task-table");
}

/// Makes the page record the body of every request it sends (`window.__sent`), so a test
/// can compare it with what the CLI sends.
fn record_requests(b: &Browser) {
    b.eval(
        "window.__sent = []; const f = window.fetch;
         window.fetch = (url, o) => { window.__sent.push([String(url), (o && o.method) || 'GET', (o && o.body) || null]);
                                     return f(url, o); };
         return true;",
        json!([]),
    );
}

/// The recorded requests (url, method, body as JSON or Null).
fn sent(b: &Browser) -> Vec<(String, String, Value)> {
    let v = b.eval("return window.__sent;", json!([]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let body = r[2].as_str().map(|s| serde_json::from_str(s).unwrap()).unwrap_or(Value::Null);
            (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string(), body)
        })
        .collect()
}

fn location(b: &Browser) -> String {
    b.eval("return location.hash;", json!([])).as_str().unwrap().to_string()
}

fn no_sideways_scroll(b: &Browser) -> bool {
    b.eval("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([])) == json!(true)
}

/// Keeps a screenshot with the dashboard tests' others (target/tmp/dashboard/), for a person
/// to look at.
fn save_screenshot(b: &Browser, name: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}: not a PNG");
    std::fs::write(dir.join(name), png).unwrap();
}

fn array_tasks(api: &Api, group: &str, id: &str) -> Vec<Value> {
    let (s, body) = api.post(
        "/tasks/query",
        &json!({"group_name": group, "labels": [format!("array:{id}")], "limit": 1000, "count": false}),
    );
    assert_eq!(s, 200, "{body}");
    json(&body)["tasks"].as_array().unwrap().clone()
}

#[test]
fn an_array_with_a_cap_and_retries_from_the_form_is_followed_to_five_finished_on_its_page() {
    let c = Coordinator::start();
    let ada = c.user("ada");
    let dir = TempDir::new("dash-array");
    let b = Browser::start(1280, 900);
    log_in(&b, &c, "ada");
    b.click("a[href='#/submit']");
    // Each index fails its first run and succeeds on its retry.
    let script = format!(
        "m={}/ran-{{i}}; if [ -e $m ]; then echo index {{i}} done; else touch $m; exit 3; fi",
        dir.path().display()
    );
    b.type_into("#s-cmd", &format!("sh -c '{script}'"));
    b.type_into("#s-labels", "sweep,sweep,b-first");
    b.type_into("#s-retries", "2");
    b.click("#s-retry-timeout");
    b.type_into("#s-backoff", "200ms");
    b.type_into("#s-array", "0-4%2");
    b.click("#s-array-subst");
    // The form at a phone's width: no sideways scrolling.
    b.set_window(390, 844);
    assert!(no_sideways_scroll(&b), "the submit form scrolls sideways at 390 px");
    save_screenshot(&b, "submit-workflows-390.png");
    b.set_window(1280, 900);
    record_requests(&b);
    b.click("#s-submit");
    b.find("#array-states");
    let hash = location(&b);
    let id = hash.strip_prefix("#/array/ada/").unwrap_or_else(|| panic!("not the array page: {hash}")).to_string();
    assert_eq!(id.len(), 36, "{hash}");

    // The request is the one `tasks submit --array 0-4%2 --array-subst --retries 2
    // --retry-on failure,lost --retry-backoff 200ms -l sweep,sweep,b-first -- sh -c ...` sends.
    let posts: Vec<_> = sent(&b).into_iter().filter(|(url, _, _)| url == "/tasks" || url == "/tasks/submit").collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, "/tasks/submit");
    let mut array = mito::api::array::parse("0-4%2").unwrap();
    array.subst = true;
    let cli = TasksSubmitReq {
        tasks: vec![SubmitTaskReq {
            group_name: "ada".into(),
            tags: BTreeSet::new(),
            labels: ["sweep", "b-first"].into_iter().map(String::from).collect(),
            timeout: Duration::from_secs(600),
            priority: 0,
            task_spec: TaskSpec {
                args: vec!["sh".into(), "-c".into(), script.clone()],
                envs: BTreeMap::new(),
                resources: Vec::new(),
                terminal_output: true,
                watch: None,
            },
            retries: Some(RetryPolicy {
                max: 2,
                on: [RetryOn::Failure, RetryOn::Lost].into_iter().collect(),
                backoff: Duration::from_millis(200),
            }),
            after: Vec::new(),
            after_any: Vec::new(),
        }],
        array: Some(array),
    };
    assert_eq!(posts[0].2, serde_json::to_value(&cli).unwrap());

    // Five tasks, {i} replaced, each with the policy while it waits.
    let tasks = array_tasks(&ada, "ada", &id);
    assert_eq!(tasks.len(), 5);
    let indices: BTreeSet<String> =
        tasks.iter().map(|t| t["spec"]["envs"]["MITO_ARRAY_INDEX"].as_str().unwrap().to_string()).collect();
    assert_eq!(indices, (0..5).map(|i| i.to_string()).collect());
    let first = tasks[0]["uuid"].as_str().unwrap().to_string();
    let (_, body) = ada.get(&format!("/tasks/{first}"));
    assert_eq!(json(&body)["retries"], json!({"max": 2, "on": ["failure", "lost"], "backoff": "200ms"}), "{body}");
    b.wait_text("#array-states", Duration::from_secs(10), |t| t.contains("Ready: 5") && t.contains("total: 5"));
    assert!(b.text("#array-rows").contains(&first));

    // A task's page links back to its array and shows its policy.
    b.click(&format!("#array-rows a[href='#/task/{first}']"));
    let retries = b.wait_text("#task-retries", Duration::from_secs(10), |t| !t.is_empty());
    assert!(retries.contains("up to 2 more attempts on failure, lost") && retries.contains("200ms"), "{retries}");
    assert!(b.text("#task-page").contains(&format!("array:{id}")));
    b.click("#task-array");
    b.find("#array-states");
    assert_eq!(location(&b), hash);

    let w = Worker::start(&c.url, "ada", "ada-pw", &[]);
    w.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !b.text("#array-states").contains("Finished: 5") {
        assert!(Instant::now() < deadline, "page: {}\nworker log:\n{}", b.text("main"), w.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    let results = b.wait_text("#array-results", Duration::from_secs(10), |t| t.contains("exit status 0"));
    let row = b.text("#array-results tr[data-exit='0']");
    save_screenshot(&b, "array-1280.png");
    assert!(row.ends_with('5'), "five ended with exit 0: {results}");
    assert!(b.text("#array-progress").contains("5 of 5 tasks ended"));
    // Every task failed once and was retried: the form's policy is the one that ran.
    for t in array_tasks(&ada, "ada", &id) {
        let (_, body) = ada.get(&format!("/tasks/{}", t["uuid"].as_str().unwrap()));
        let task = json(&body);
        let outcomes: Vec<&str> =
            task["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, ["failure", "success"], "{body}");
    }
    b.set_window(390, 844);
    b.wait_text("#array-rows", Duration::from_secs(10), |t| t.contains("Finished"));
    assert!(no_sideways_scroll(&b), "the array page scrolls sideways at 390 px");
    save_screenshot(&b, "array-390.png");

    // The task list filters by the array and links to its summary.
    b.set_window(1280, 900);
    b.click("#array-in-list");
    b.wait_text("#task-rows", Duration::from_secs(10), |t| t.matches("Finished").count() == 5);
    assert_eq!(b.eval("return document.querySelector('#f-array').value;", json!([])), json!(id));
    b.click("#f-array-summary");
    b.find("#array-states");
    assert_eq!(location(&b), hash);
}

#[test]
fn a_dependent_task_from_the_form_waits_for_its_dependency_then_runs() {
    let c = Coordinator::start();
    let eve = c.user("eve");
    let _w = Worker::start(&c.url, "eve", "eve-pw", &[]);
    // The dependency runs until the test lets it end.
    let dir = TempDir::new("dash-deps");
    let go = dir.path().join("go");
    let wait_for_go = format!("while [ ! -e {} ]; do sleep 0.2; done", go.display());
    let first = submit(&eve, "eve", &["sh", "-c", &wait_for_go], "2m", false);
    let b = Browser::start(1280, 900);
    log_in(&b, &c, "eve");

    // A dependency that does not exist: the coordinator refuses, the page says so.
    b.click("a[href='#/submit']");
    b.type_into("#s-cmd", "echo after-the-first");
    let nobody = "6d1f0a4e-1111-4222-8333-944455556666";
    b.type_into("#s-after", nobody);
    b.click("#s-submit");
    let error = b.wait_text("#s-error", Duration::from_secs(10), |t| !t.is_empty());
    assert!(error.starts_with("The coordinator refused the task: 400"), "{error}");
    assert_eq!(location(&b), "#/submit");
    let (_, body) = eve.post("/tasks/query", &json!({"count": true}));
    assert_eq!(json(&body)["count"], 1, "a refused task was stored: {body}");

    b.type_into("#s-after", &first.to_uppercase());
    b.click("#s-submit");
    let state = b.wait_text("#task-state", Duration::from_secs(10), |t| !t.is_empty());
    let uuid = location(&b).trim_start_matches("#/task/").to_string();
    assert_eq!(state, "Pending");
    let deps = b.text("#task-deps");
    assert!(deps.contains(&first) && deps.contains("must finish with exit 0"), "{deps}");
    assert!(b.text("#task-note").contains("waits for 1 dependencies"));
    save_screenshot(&b, "task-waiting-1280.png");
    let (_, body) = eve.get(&format!("/tasks/{uuid}"));
    assert_eq!(json(&body)["after"], json!([first]), "{body}");
    // Still waiting a few refreshes later, while its dependency runs.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(b.text("#task-state"), "Pending");
    std::fs::write(&go, "").unwrap();

    // It leaves Pending only once its dependency has ended, and then runs to the end.
    let mut seen = vec![state];
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last().map(String::as_str) != Some("Finished") {
        assert!(Instant::now() < deadline, "states seen: {seen:?}");
        let t = b.text("#task-state");
        if !t.is_empty() && seen.last() != Some(&t) {
            if seen.len() == 1 {
                let (_, body) = eve.get(&format!("/tasks/{first}"));
                assert_eq!(json(&body)["info"]["state"], "Finished", "started before its dependency ended: {body}");
            }
            seen.push(t);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert_eq!(seen.first().map(String::as_str), Some("Pending"), "{seen:?}");
    let info = wait_committed(&eve, &uuid, Duration::from_secs(10));
    assert_eq!(info["result"]["exit_status"], 0, "{info}");
    // Once resolved, the dependency is no longer listed as waited for.
    assert!(b.wait_text("#task-page", Duration::from_secs(10), |t| !t.contains("Waits for")).contains("Finished"));
}

#[test]
fn mistakes_in_the_form_are_named_and_nothing_is_sent_and_hostile_values_stay_text() {
    let c = Coordinator::start();
    let ivy = c.user("ivy");
    let b = Browser::start(1280, 900);
    log_in(&b, &c, "ivy");
    b.click("a[href='#/submit']");
    b.type_into("#s-cmd", "echo {i}");
    record_requests(&b);
    let cases: &[(&str, &str, &str)] = &[
        ("#s-array", "5-1", "the array is empty or malformed: the end 1 is before the start 5"),
        ("#s-array", "0-9:x", "is not START-END[:STEP][%K]"),
        ("#s-array", "0-10000", "the array has 10001 indices; at most 10000"),
        ("#s-array", "0-9%0", "%K must be at least 1"),
        ("#s-retries", "many", "retries \"many\" is not a whole number from 0 to 100"),
        ("#s-backoff", "2h", "backoff 2h is over the maximum of 1h"),
        ("#s-backoff", "soon", "backoff \"soon\" is not a duration"),
        ("#s-after", "not-a-uuid", "after: \"not-a-uuid\" is not a task uuid"),
    ];
    for (field, value, message) in cases {
        // Each case starts from a form whose other fields are valid.
        set_value(&b, "#s-array", "0-2");
        set_value(&b, "#s-retries", "1");
        set_value(&b, "#s-backoff", "1s");
        set_value(&b, "#s-after", "");
        b.type_into(field, value);
        b.click("#s-submit");
        let shown = b.wait_text("#s-error", Duration::from_secs(5), |t| t.contains(message));
        assert!(!shown.is_empty());
        let invalid = b.eval("return document.activeElement.getAttribute('aria-invalid');", json!([]));
        assert_eq!(invalid, json!("true"), "{field}: the field at fault is not marked and focused");
        assert_eq!(location(&b), "#/submit");
    }
    for field in ["#s-array", "#s-retries", "#s-backoff", "#s-after"] {
        set_value(&b, field, "");
    }
    b.click("#s-array-subst");
    b.click("#s-submit");
    b.wait_text("#s-error", Duration::from_secs(5), |t| t.contains("replacing {i} needs an array"));
    assert!(sent(&b).iter().all(|(_, m, _)| m == "GET"), "the form sent something: {:?}", sent(&b));
    let (_, body) = ivy.post("/tasks/query", &json!({"count": true}));
    assert_eq!(json(&body)["count"], 0, "{body}");

    // Values that look like markup, in an array submitted from the form, shown as text.
    let payload = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
    b.type_into("#s-cmd", &format!("echo '{payload}' {{i}}"));
    b.type_into("#s-labels", payload);
    b.type_into("#s-array", "1-3");
    b.click("#s-submit");
    b.wait_text("#array-states", Duration::from_secs(10), |t| t.contains("Ready: 3"));
    b.wait_text("#array-rows", Duration::from_secs(10), |t| t.contains("Ready"));
    let row = b.text("#array-rows tr");
    let uuid = b.eval("return document.querySelector('#array-rows tr').dataset.uuid;", json!([]));
    assert!(row.starts_with('1'), "index 1 first: {row}");
    b.click(&format!("#array-rows a[href='#/task/{}']", uuid.as_str().unwrap()));
    let args = b.wait_text("#task-args", Duration::from_secs(10), |t| !t.is_empty());
    assert_eq!(args, format!("echo '{}' 1", payload.replace('\'', "'\\''")));
    assert!(b.text("#task-labels").contains(payload));
    // An address with markup where the group is: shown as text, refused by the API.
    b.goto(&format!("{}/ui/#/array/{}/{}", c.url, urlencode(payload), "6d1f0a4e-1111-4222-8333-944455556666"));
    b.wait_text("#status", Duration::from_secs(10), |t| !t.is_empty());
    assert!(b.text("main").contains(payload));
    let injected = b.eval(
        "return [window.__xss === undefined, document.querySelectorAll('main img, main script').length];",
        json!([]),
    );
    assert_eq!(injected, json!([true, 0]), "markup from a value reached the DOM");
}

fn set_value(b: &Browser, css: &str, value: &str) {
    b.eval("document.querySelector(arguments[0]).value = arguments[1]; return true;", json!([css, value]));
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|c| if c.is_ascii_alphanumeric() { (c as char).to_string() } else { format!("%{c:02X}") }).collect()
}

#[test]
fn the_summary_counts_an_arrays_tasks_and_a_task_shows_its_policy_and_what_it_waits_for() {
    let c = Coordinator::start();
    let ann = c.user("ann");
    let bob = c.user("bob");
    let template = json!({
        "group_name": "ann", "tags": [], "labels": [], "timeout": "1m", "priority": 0,
        "task_spec": {"args": ["true"], "envs": {}, "resources": [], "terminal_output": false, "watch": null},
        "retries": {"max": 1, "on": ["timeout"]}
    });
    let (s, body) = ann.post("/tasks/submit", &json!({"tasks": [template], "array": {"start": 0, "end": 3}}));
    assert_eq!(s, 200, "{body}");
    let id = json(&body)["array_id"].as_str().unwrap().to_string();
    let filter = json!({"labels": [format!("array:{id}")]});
    let w = c.worker(&ann, &[], &[]);
    // Two succeed, one fails, one stays Ready (the policy retries timeouts only).
    for exit in [0, 256, 0] {
        let t = w.fetch().expect("a task");
        w.complete(&t, exit);
    }
    let (s, body) = ann.post("/tasks/summary", &filter);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        json(&body),
        json!({"group_name": "ann", "count": 4, "states": {"Ready": 1, "Finished": 3},
               "results": [{"exit_status": 0, "msg": null, "count": 2}, {"exit_status": 256, "msg": null, "count": 1}]})
    );
    // As the query route: Read in the group, or nothing.
    let (s, body) = bob.post("/tasks/summary", &json!({"group_name": "ann"}));
    assert_eq!(s, 403, "{body}");
    let (s, body) = ann.post("/tasks/summary", &json!({"states": []}));
    assert_eq!(s, 400, "{body}");

    // A waiting task lists what it waits for, and its policy; one with neither has no such keys.
    let ready = array_tasks(&ann, "ann", &id).into_iter().find(|t| t["state"] == "Ready").unwrap();
    let ready = ready["uuid"].as_str().unwrap().to_string();
    // Every task of an array carries its template's policy.
    let (_, body) = ann.get(&format!("/tasks/{ready}"));
    assert_eq!(json(&body)["retries"], json!({"max": 1, "on": ["timeout"], "backoff": "0s"}), "{body}");
    // And its dependencies: the whole array waits, or is refused for a task it may not read.
    let template = |after: &str| {
        json!({"tasks": [{"group_name": "ann", "tags": [], "labels": [], "timeout": "1m", "priority": 0,
                          "task_spec": {"args": ["true"], "envs": {}, "resources": [], "terminal_output": false,
                                        "watch": null},
                          "after": [after]}],
               "array": {"start": 1, "end": 3}})
    };
    let (s, body) = ann.post("/tasks/submit", &template("6d1f0a4e-1111-4222-8333-944455556666"));
    assert_eq!(s, 400, "{body}");
    let (s, body) = ann.post("/tasks/submit", &template(&ready));
    assert_eq!(s, 200, "{body}");
    let second = json(&body)["array_id"].as_str().unwrap().to_string();
    let waiting = array_tasks(&ann, "ann", &second);
    assert_eq!(waiting.len(), 3);
    assert!(waiting.iter().all(|t| t["state"] == "Pending" && t["note"] == "waits for 1 dependencies"), "{waiting:?}");
    assert!(w.fetch().is_some_and(|t| t["uuid"] == ready.as_str()), "a waiting task of the array was handed out");
    let plain = submit(&ann, "ann", &["true"], "1m", false);
    let waiting = json!({
        "group_name": "ann", "tags": [], "labels": [], "timeout": "1m", "priority": 0,
        "task_spec": {"args": ["true"], "envs": {}, "resources": [], "terminal_output": false, "watch": null},
        "retries": {"max": 3, "on": ["failure", "lost"], "backoff": "30s"},
        "after": [ready], "after_any": [plain]
    });
    let (s, body) = ann.post("/tasks", &waiting);
    assert_eq!(s, 200, "{body}");
    let (_, body) = ann.get(&format!("/tasks/{}", json(&body)["uuid"].as_str().unwrap()));
    let t = json(&body);
    assert_eq!(t["after"], json!([ready]), "{t}");
    assert_eq!(t["after_any"], json!([plain]), "{t}");
    assert_eq!(t["retries"], json!({"max": 3, "on": ["failure", "lost"], "backoff": "30s"}), "{t}");
    let (_, body) = ann.get(&format!("/tasks/{plain}"));
    let t = json(&body);
    for key in ["retries", "after", "after_any", "attempts"] {
        assert!(t.get(key).is_none(), "{key} in a mitosis-shaped answer: {t}");
    }
}
