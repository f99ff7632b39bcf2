//! `mito bench`: measures a coordinator the way workers and users load it.
//!
//! ```text
//! mito bench -c http://127.0.0.1:5000 -u mitosis_admin -p mitosis_admin --coordinator-pid 1234
//! ```
//!
//! Three measurements, each repeated and reported as medians:
//! - batch submit: one `POST /tasks/submit` of `--batch` tasks, in tasks per second;
//! - submit → fetch latency with `--idle-workers` workers parked in long-poll fetches
//!   (or polling every `--poll` against a coordinator without long-poll);
//! - end to end: `--workers` workers fetch, report Finish and Commit `--tasks` no-op tasks.
//!
//! It works in a fresh group with a unique tag, so no other worker takes its tasks, and
//! unregisters its workers at the end. With `--coordinator-pid`, it also samples the
//! coordinator's resident memory (Linux /proc).

use crate::api::{md5_password, RegisterWorkerResp, SubmitTaskResp, TasksSubmitResp, UserLoginResp, WorkerTaskResp};
use crate::cli::{help_text, parse_mode, OptSpec};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPECS: &[OptSpec] = &[
    OptSpec { long: "coordinator", short: Some('c'), key: None, metavar: Some("URL"), help: "The coordinator (default http://127.0.0.1:5000)", list: false },
    OptSpec { long: "user", short: Some('u'), key: None, metavar: Some("USER"), help: "A user who may create a group (default mitosis_admin)", list: false },
    OptSpec { long: "password", short: Some('p'), key: None, metavar: Some("PASSWORD"), help: "Its password (default mitosis_admin)", list: false },
    OptSpec { long: "batch", short: None, key: None, metavar: Some("N"), help: "Tasks per batch submit (default 5000)", list: false },
    OptSpec { long: "tasks", short: None, key: None, metavar: Some("N"), help: "Tasks in the end-to-end run (default 10000)", list: false },
    OptSpec { long: "workers", short: None, key: None, metavar: Some("N"), help: "Workers in the end-to-end run (default 16)", list: false },
    OptSpec { long: "idle-workers", short: None, key: None, metavar: Some("N"), help: "Parked workers in the latency run (default 4)", list: false },
    OptSpec { long: "samples", short: None, key: None, metavar: Some("N"), help: "Latency samples (default 200)", list: false },
    OptSpec { long: "repeat", short: None, key: None, metavar: Some("N"), help: "Repetitions of the throughput runs (default 3)", list: false },
    OptSpec { long: "poll", short: None, key: None, metavar: Some("DURATION"), help: "Poll at this interval instead of long-polling (for coordinators without it)", list: false },
    OptSpec { long: "coordinator-pid", short: None, key: None, metavar: Some("PID"), help: "Sample this process's resident memory", list: false },
];

struct Opts {
    base: String,
    user: String,
    password: String,
    batch: usize,
    tasks: usize,
    workers: usize,
    idle: usize,
    samples: usize,
    repeat: usize,
    poll: Option<Duration>,
    pid: Option<u32>,
}

fn num(args: &crate::cli::ParsedArgs, name: &str, default: usize) -> Result<usize, String> {
    match args.extra(name).flatten() {
        None => Ok(default),
        Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("--{name} {v:?}: expected a positive number")),
    }
}

/// Entry point of `mito bench`; returns the exit status.
pub fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito bench", SPECS, false, || {
        help_text("Measure a coordinator: batch submit, submit-to-fetch latency, end-to-end throughput", "mito bench [OPTIONS]", SPECS, "")
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let opts = (|| -> Result<Opts, String> {
        Ok(Opts {
            base: args.extra("coordinator").flatten().unwrap_or("http://127.0.0.1:5000").trim_end_matches('/').to_string(),
            user: args.extra("user").flatten().unwrap_or("mitosis_admin").to_string(),
            password: args.extra("password").flatten().unwrap_or("mitosis_admin").to_string(),
            batch: num(&args, "batch", 5000)?,
            tasks: num(&args, "tasks", 10_000)?,
            workers: num(&args, "workers", 16)?,
            idle: num(&args, "idle-workers", 4)?,
            samples: num(&args, "samples", 200)?,
            repeat: num(&args, "repeat", 3)?,
            poll: args
                .extra("poll")
                .flatten()
                .map(|p| humantime::parse_duration(p).map_err(|e| format!("--poll {p:?}: {e}")))
                .transpose()?,
            pid: args.extra("coordinator-pid").flatten().map(|p| p.parse().map_err(|_| format!("--coordinator-pid {p:?}"))).transpose()?,
        })
    })();
    match opts.and_then(|o| run(&o)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mito bench: {e}");
            1
        }
    }
}

struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(base: &str) -> Http {
        Http { agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build(), base: base.to_string() }
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<&serde_json::Value>) -> Result<String, String> {
        let req = self.agent.request(method, &format!("{}{path}", self.base)).set("Authorization", &format!("Bearer {token}"));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => r.into_string().map_err(|e| e.to_string()),
            Err(ureq::Error::Status(code, r)) => Err(format!("{method} {path}: {code} {}", r.into_string().unwrap_or_default())),
            Err(e) => Err(format!("{method} {path}: {e}")),
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_str(s).map_err(|e| format!("unexpected answer {s:?}: {e}"))
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Bench {
    http: Http,
    token: String,
    group: String,
    tag: String,
    poll: Option<Duration>,
}

impl Bench {
    fn tasks(&self, n: usize) -> serde_json::Value {
        let t = json!({"group_name": self.group, "tags": [self.tag], "labels": [], "timeout": "1m", "priority": 0, "task_spec": {"args": ["true"]}});
        json!({ "tasks": vec![t; n] })
    }

    fn worker(&self) -> Result<String, String> {
        let body = json!({"tags": [self.tag], "labels": ["mito-bench"], "groups": [self.group]});
        let r: RegisterWorkerResp = parse(&self.http.call("POST", "/workers", &self.token, Some(&body))?)?;
        Ok(r.token)
    }

    /// One fetch: long-poll, or poll until `until`.
    fn fetch(&self, http: &Http, token: &str, until: Instant) -> Result<Option<WorkerTaskResp>, String> {
        loop {
            let path = if self.poll.is_some() { "/workers/tasks".to_string() } else { "/workers/tasks?wait=2".to_string() };
            let t: Option<WorkerTaskResp> = parse(&http.call("GET", &path, token, None)?)?;
            if t.is_some() || Instant::now() >= until {
                return Ok(t);
            }
            if let Some(p) = self.poll {
                std::thread::sleep(p);
            }
        }
    }

    fn finish(&self, http: &Http, token: &str, id: i64) -> Result<(), String> {
        http.call("POST", "/workers/tasks", token, Some(&json!({"id": id, "op": "Finish"})))?;
        http.call("POST", "/workers/tasks", token, Some(&json!({"id": id, "op": {"Commit": {"exit_status": 0, "msg": null}}})))?;
        Ok(())
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let http = Http::new(&o.base);
    let login = json!({"username": o.user, "md5_password": md5_password(&o.password), "retain": true});
    let resp = http.agent.post(&format!("{}/login", o.base)).send_json(&login).map_err(|e| format!("login as {}: {e}", o.user))?;
    let token = parse::<UserLoginResp>(&resp.into_string().map_err(|e| e.to_string())?)?.token;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let group = format!("bench-{}", &id[..12]);
    http.call("POST", "/groups", &token, Some(&json!({"group_name": group})))
        .map_err(|e| format!("{e} (the bench needs a user who may create one more group)"))?;
    let b = Bench { http, token, group, tag: format!("bench-{}", &id[..12]), poll: o.poll };
    println!("mito bench against {} (group {})", o.base, b.group);
    if let Some(k) = rss_kib(o.pid) {
        println!("coordinator resident memory, idle: {:.1} MB", k as f64 / 1024.0);
    }

    // 1. Batch submit; the tasks are then cancelled so they do not feed the later runs.
    let mut rates = Vec::new();
    for _ in 0..o.repeat {
        let body = b.tasks(o.batch);
        let t0 = Instant::now();
        let r: TasksSubmitResp = parse(&b.http.call("POST", "/tasks/submit", &b.token, Some(&body))?)?;
        let dt = t0.elapsed().as_secs_f64();
        let ok = r.results.iter().filter(|r| r.is_ok()).count();
        if ok != o.batch {
            return Err(format!("batch submit: only {ok} of {} succeeded", o.batch));
        }
        rates.push(o.batch as f64 / dt);
        b.http.call("POST", "/tasks/cancel", &b.token, Some(&json!({"group_name": b.group})))?;
    }
    println!("batch submit of {} tasks: median {:.0} tasks/s", o.batch, median(&mut rates));

    // 2. Submit → fetch latency with parked workers.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, uuid::Uuid)>();
    let mut idle = Vec::new();
    for _ in 0..o.idle {
        let wt = b.worker()?;
        let (stop, tx, base, poll, tag, group) = (stop.clone(), tx.clone(), o.base.clone(), o.poll, b.tag.clone(), b.group.clone());
        let bb = Bench { http: Http::new(&base), token: String::new(), group, tag, poll };
        idle.push((
            wt.clone(),
            std::thread::spawn(move || -> Result<(), String> {
                let http = Http::new(&base);
                while !stop.load(Ordering::SeqCst) {
                    if let Some(t) = bb.fetch(&http, &wt, Instant::now())? {
                        let _ = tx.send((Instant::now(), t.uuid));
                        bb.finish(&http, &wt, t.id)?;
                    }
                }
                Ok(())
            }),
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let one = json!({"group_name": b.group, "tags": [b.tag], "labels": [], "timeout": "1m", "priority": 0, "task_spec": {"args": ["true"]}});
    let mut lat = Vec::new();
    for _ in 0..o.samples {
        let t0 = Instant::now();
        let r: SubmitTaskResp = parse(&b.http.call("POST", "/tasks", &b.token, Some(&one))?)?;
        let (at, uuid) = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "a submitted task was never fetched".to_string())?;
        if uuid != r.uuid {
            return Err("latency run: fetched another task than the one submitted".into());
        }
        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    for (wt, h) in idle {
        h.join().map_err(|_| "a worker thread panicked".to_string())??;
        let _ = b.http.call("DELETE", "/workers", &wt, None);
    }
    println!(
        "submit -> fetch latency with {} idle {} workers: p50 {:.2} ms, p90 {:.2} ms ({} samples)",
        o.idle,
        if o.poll.is_some() { "polling" } else { "long-polling" },
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.9),
        o.samples
    );

    // 3. End to end with `workers` workers.
    let mut e2e = Vec::new();
    let mut peak = 0u64;
    for _ in 0..o.repeat {
        let body = b.tasks(o.tasks);
        let r: TasksSubmitResp = parse(&b.http.call("POST", "/tasks/submit", &b.token, Some(&body))?)?;
        if r.results.iter().any(|r| r.is_err()) {
            return Err("end-to-end run: submit failed".into());
        }
        let done = Arc::new(AtomicUsize::new(0));
        let tokens: Vec<String> = (0..o.workers).map(|_| b.worker()).collect::<Result<_, _>>()?;
        let t0 = Instant::now();
        let handles: Vec<_> = tokens
            .iter()
            .cloned()
            .map(|wt| {
                let (done, base, poll, tag, group, total) = (done.clone(), o.base.clone(), o.poll, b.tag.clone(), b.group.clone(), o.tasks);
                std::thread::spawn(move || -> Result<(), String> {
                    let bb = Bench { http: Http::new(&base), token: String::new(), group, tag, poll };
                    let http = Http::new(&base);
                    while done.load(Ordering::SeqCst) < total {
                        match bb.fetch(&http, &wt, Instant::now())? {
                            Some(t) => {
                                bb.finish(&http, &wt, t.id)?;
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            None => {
                                if poll.is_none() {
                                    continue;
                                }
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        while done.load(Ordering::SeqCst) < o.tasks {
            std::thread::sleep(Duration::from_millis(50));
            peak = peak.max(rss_kib(o.pid).unwrap_or(0));
            if t0.elapsed() > Duration::from_secs(600) {
                return Err("end-to-end run took more than 10 minutes".into());
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        for h in handles {
            h.join().map_err(|_| "a worker thread panicked".to_string())??;
        }
        for wt in &tokens {
            let _ = b.http.call("DELETE", "/workers", wt, None);
        }
        e2e.push(o.tasks as f64 / dt);
    }
    println!("end to end with {} workers: median {:.0} tasks/s ({} tasks per run)", o.workers, median(&mut e2e), o.tasks);
    if o.pid.is_some() {
        println!("coordinator resident memory, peak under load: {:.1} MB", peak as f64 / 1024.0);
        if let Some(k) = rss_kib(o.pid) {
            println!("coordinator resident memory, after: {:.1} MB", k as f64 / 1024.0);
        }
    }
    Ok(())
}
