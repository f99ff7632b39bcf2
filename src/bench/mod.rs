//! `mito bench`: measures a coordinator the way workers and users load it.
//!
//! ```text
//! mito bench -c http://127.0.0.1:5000 -u mitosis_admin -p mitosis_admin --coordinator-pid 1234
//! ```
//!
//! Three measurements, each repeated and reported as medians:
//! - batch submit: one `POST /tasks/submit` of `--batch` tasks, in tasks per second, then
//!   an array of 10,000 indices in one request, in milliseconds;
//! - submit → fetch latency with `--idle-workers` workers parked in long-poll fetches
//!   (or polling every `--poll` against a coordinator without long-poll);
//! - end to end: `--workers` workers fetch, report Finish and Commit `--tasks` no-op tasks.
//!
//! It works in a fresh group with a unique tag, so no other worker takes its tasks, and
//! unregisters its workers at the end. With `--coordinator-pid`, it also samples the
//! coordinator's resident memory (Linux /proc).

mod error;
mod http;

use crate::api::{md5_password, RegisterWorkerResp, SubmitTaskResp, TasksSubmitResp, UserLoginResp, WorkerTaskResp};
use crate::config::coordinator::{DEFAULT_ADMIN_PASSWORD, DEFAULT_ADMIN_USER};
use crate::config::{concat_str, DEFAULT_COORDINATOR_ADDR};
use crate::opts::{help_text, parse_mode, OptSpec};
use error::BenchError;
use http::{Http, Wire};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SPECS: &[OptSpec] = &[
    OptSpec::opt(
        "coordinator",
        Some('c'),
        "URL",
        concat_str!("The coordinator (default ", DEFAULT_COORDINATOR_ADDR, ")"),
    ),
    OptSpec::opt(
        "user",
        Some('u'),
        "USER",
        concat_str!("A user who may create a group (default ", DEFAULT_ADMIN_USER, ")"),
    ),
    OptSpec::opt("password", Some('p'), "PASSWORD", concat_str!("Its password (default ", DEFAULT_ADMIN_PASSWORD, ")")),
    OptSpec::opt("batch", None, "N", "Tasks per batch submit (default 5000; 0 skips this run)"),
    OptSpec::opt("tasks", None, "N", "Tasks in the end-to-end run (default 10000; 0 skips this run)"),
    OptSpec::opt("workers", None, "N", "Workers in the end-to-end run (default 16)"),
    OptSpec::opt("idle-workers", None, "N", "Parked workers in the latency run (default 4)"),
    OptSpec::opt("idle-wait", None, "SECS", "Their long polls' wait, 1 to 60 (default 30, as mito's worker asks)"),
    OptSpec::opt("samples", None, "N", "Latency samples (default 200; 0 skips this run)"),
    OptSpec::opt("repeat", None, "N", "Repetitions of the throughput runs (default 3)"),
    OptSpec::opt(
        "poll",
        None,
        "DURATION",
        "Poll at this interval instead of long-polling (for coordinators without it)",
    ),
    OptSpec::opt("coordinator-pid", None, "PID", "Sample this process's resident memory"),
];

struct Opts {
    base: String,
    user: String,
    password: String,
    batch: usize,
    tasks: usize,
    workers: usize,
    idle: usize,
    idle_wait: u64,
    samples: usize,
    repeat: usize,
    poll: Option<Duration>,
    pid: Option<u32>,
}

fn flag_error(name: &str, value: &str, expected: impl std::fmt::Display) -> BenchError {
    BenchError::Flag { flag: format!("--{name}"), value: value.to_string(), expected: expected.to_string() }
}

fn num(args: &crate::opts::ParsedArgs, name: &str, default: usize) -> Result<usize, BenchError> {
    match args.extra(name).flatten() {
        None => Ok(default),
        Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| flag_error(name, v, "expected a positive number")),
    }
}

/// A count where 0 means "skip this run".
fn count(args: &crate::opts::ParsedArgs, name: &str, default: usize) -> Result<usize, BenchError> {
    match args.extra(name).flatten() {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| flag_error(name, v, "expected a number (0 skips this run)")),
    }
}

/// Entry point of `mito bench`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito bench", SPECS, false, || {
        help_text(
            "Measure a coordinator: batch submit, submit-to-fetch latency, end-to-end throughput",
            "mito bench [OPTIONS]",
            SPECS,
            "",
        )
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let opts = (|| -> Result<Opts, BenchError> {
        Ok(Opts {
            base: args
                .extra("coordinator")
                .flatten()
                .unwrap_or(DEFAULT_COORDINATOR_ADDR)
                .trim_end_matches('/')
                .to_string(),
            user: args.extra("user").flatten().unwrap_or(DEFAULT_ADMIN_USER).to_string(),
            password: args.extra("password").flatten().unwrap_or(DEFAULT_ADMIN_PASSWORD).to_string(),
            batch: count(&args, "batch", 5000)?,
            tasks: count(&args, "tasks", 10_000)?,
            workers: num(&args, "workers", 16)?,
            idle: match num(&args, "idle-workers", 4)? {
                n if n > MAX_IDLE_WORKERS => {
                    let v = n.to_string();
                    return Err(flag_error("idle-workers", &v, format_args!("at most {MAX_IDLE_WORKERS}")));
                }
                n => n,
            },
            idle_wait: match num(&args, "idle-wait", 30)? {
                n @ 1..=60 => n as u64,
                n => return Err(flag_error("idle-wait", &n.to_string(), "expected 1 to 60 seconds")),
            },
            samples: count(&args, "samples", 200)?,
            repeat: num(&args, "repeat", 3)?,
            poll: args
                .extra("poll")
                .flatten()
                .map(|p| humantime::parse_duration(p).map_err(|e| flag_error("poll", p, e)))
                .transpose()?,
            pid: args
                .extra("coordinator-pid")
                .flatten()
                .map(|p| p.parse().map_err(|_| flag_error("coordinator-pid", p, "expected a process id")))
                .transpose()?,
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

/// A worker as the coordinator sees it: fetch, Finish, Commit, over a [`Wire`].
struct SimWorker {
    wire: Wire,
    token: String,
    poll: Option<Duration>,
}

impl SimWorker {
    /// One fetch: a long poll of up to `wait` seconds, or (polling) one request and a pause
    /// if empty.
    fn fetch(&mut self, wait: u64) -> Result<Option<WorkerTaskResp>, BenchError> {
        let path =
            if self.poll.is_some() { "/workers/tasks".to_string() } else { format!("/workers/tasks?wait={wait}") };
        let body = self.wire.call("GET", &path, &self.token, None)?;
        let t: Option<WorkerTaskResp> = serde_json::from_slice(&body).map_err(|source| BenchError::Unexpected {
            what: "fetch answer",
            body: String::from_utf8_lossy(&body).into_owned(),
            source,
        })?;
        if let (None, Some(p)) = (&t, self.poll) {
            std::thread::sleep(p);
        }
        Ok(t)
    }

    /// Reports the task finished, then commits it with exit status 0.
    fn finish(&mut self, id: i64) -> Result<(), BenchError> {
        let finish = format!(r#"{{"id":{id},"op":"Finish"}}"#);
        self.wire.call("POST", "/workers/tasks", &self.token, Some(finish.as_bytes()))?;
        let commit = format!(r#"{{"id":{id},"op":{{"Commit":{{"exit_status":0,"msg":null}}}}}}"#);
        self.wire.call("POST", "/workers/tasks", &self.token, Some(commit.as_bytes()))?;
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, BenchError> {
    serde_json::from_str(s).map_err(|source| BenchError::Unexpected { what: "answer", body: s.to_string(), source })
}

/// The process's thread count, from /proc (Linux).
fn threads(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) the process has used, from /proc (Linux).
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
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

/// Each idle worker is a thread and a connection here and a connection at the coordinator.
const MAX_IDLE_WORKERS: usize = 100_000;

/// The end-to-end run's fetches nearly always find a task at once.
const BUSY_WAIT_SECS: u64 = 2;

/// Raises this process's open-file limit to its hard limit: every idle worker holds a
/// connection, and the usual soft limit of 1024 would end the run early.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
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

    fn worker(&self) -> Result<String, BenchError> {
        let body = json!({"tags": [self.tag], "labels": ["mito-bench"], "groups": [self.group]});
        let r: RegisterWorkerResp = parse(&self.http.call("POST", "/workers", &self.token, Some(&body))?)?;
        Ok(r.token)
    }

    /// Registers a worker and connects it.
    fn sim_worker(&self, base: &str) -> Result<SimWorker, BenchError> {
        Ok(SimWorker { wire: Wire::new(base)?, token: self.worker()?, poll: self.poll })
    }
}

fn run(o: &Opts) -> Result<(), BenchError> {
    raise_fd_limit();
    let http = Http::new(&o.base)?;
    let login = json!({"username": o.user, "md5_password": md5_password(&o.password), "retain": true});
    let resp = http
        .call("POST", "/login", "", Some(&login))
        .map_err(|e| BenchError::Login { user: o.user.clone(), source: Box::new(e) })?;
    let token = parse::<UserLoginResp>(&resp)?.token;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let group = format!("bench-{}", &id[..12]);
    http.call("POST", "/groups", &token, Some(&json!({"group_name": group})))
        .map_err(|e| BenchError::CreateGroup(Box::new(e)))?;
    let b = Bench { http, token, group, tag: format!("bench-{}", &id[..12]), poll: o.poll };
    println!("mito bench against {} (group {})", o.base, b.group);
    if let Some(k) = rss_kib(o.pid) {
        println!("coordinator resident memory, idle: {:.1} MB", k as f64 / 1024.0);
    }

    if o.batch > 0 {
        batch_run(&b, o)?;
    }
    if o.samples > 0 {
        latency_run(&b, o)?;
    }
    if o.tasks > 0 {
        end_to_end_run(&b, o)?;
    }
    Ok(())
}

/// Batch submit; the tasks are then cancelled so they do not feed the later runs.
fn batch_run(b: &Bench, o: &Opts) -> Result<(), BenchError> {
    let mut rates = Vec::new();
    for _ in 0..o.repeat {
        // The clock runs from sending the request to receiving the whole answer.
        let body = serde_json::to_vec(&b.tasks(o.batch)).map_err(BenchError::Encode)?;
        let t0 = Instant::now();
        let answer = b.http.send("POST", "/tasks/submit", &b.token, Some(&body))?;
        let dt = t0.elapsed().as_secs_f64();
        let r: TasksSubmitResp = parse(&String::from_utf8_lossy(&answer))?;
        let ok = r.results.iter().filter(|r| r.is_ok()).count();
        if ok != o.batch {
            return Err(BenchError::PartialBatch { ok, of: o.batch });
        }
        rates.push(o.batch as f64 / dt);
        b.http.call("POST", "/tasks/cancel", &b.token, Some(&json!({"group_name": b.group})))?;
    }
    println!("batch submit of {} tasks: median {:.0} tasks/s", o.batch, median(&mut rates));
    array_run(b, o)
}

/// An array of the most indices one request may hold (the goal: under a second); the
/// tasks are cancelled as after the batch runs.
fn array_run(b: &Bench, o: &Opts) -> Result<(), BenchError> {
    let n = crate::api::array::MAX_ARRAY_TASKS;
    let mut times = Vec::new();
    for _ in 0..o.repeat {
        let mut body = b.tasks(1);
        body["array"] = json!({"start": 0, "end": n - 1});
        let body = serde_json::to_vec(&body).map_err(BenchError::Encode)?;
        let t0 = Instant::now();
        let answer = b.http.send("POST", "/tasks/submit", &b.token, Some(&body))?;
        let dt = t0.elapsed().as_secs_f64();
        let r: TasksSubmitResp = parse(&String::from_utf8_lossy(&answer))?;
        let ok = r.results.iter().filter(|r| r.is_ok()).count();
        if ok as u64 != n {
            return Err(BenchError::PartialBatch { ok, of: n as usize });
        }
        times.push(dt * 1000.0);
        b.http.call("POST", "/tasks/cancel", &b.token, Some(&json!({"group_name": b.group})))?;
    }
    println!("array submit of {n} indices in one request: median {:.0} ms (goal: under 1 s)", median(&mut times));
    Ok(())
}

/// Submit → fetch latency with parked workers; with `--coordinator-pid`, also the
/// coordinator's threads and resident memory while they are parked.
fn latency_run(b: &Bench, o: &Opts) -> Result<(), BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, uuid::Uuid)>();
    let mut idle = Vec::new();
    for _ in 0..o.idle {
        let mut w = b.sim_worker(&o.base)?;
        let token = w.token.clone();
        let (stop, tx, wait) = (stop.clone(), tx.clone(), o.idle_wait);
        // Thousands of these threads only wait on their socket: a small stack will do.
        let spawned = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || -> Result<(), BenchError> {
            while !stop.load(Ordering::SeqCst) {
                if let Some(t) = w.fetch(wait)? {
                    let _ = tx.send((Instant::now(), t.uuid));
                    w.finish(t.id)?;
                }
            }
            Ok(())
        });
        let handle =
            spawned.map_err(|source| BenchError::Io { call: "starting an idle worker's thread".into(), source })?;
        idle.push((token, handle));
    }
    // Every idle worker has sent its fetch and is parked (a fetch that finds nothing parks
    // within milliseconds; registering thousands of workers took longer than that).
    std::thread::sleep(Duration::from_millis(300 + o.idle as u64 / 10));
    let parked_before = (threads(o.pid), rss_kib(o.pid));
    let one = json!({"group_name": b.group, "tags": [b.tag], "labels": [], "timeout": "1m", "priority": 0, "task_spec": {"args": ["true"]}});
    let one = serde_json::to_vec(&one).map_err(BenchError::Encode)?;
    let (mut lat, mut submit) = (Vec::new(), Vec::new());
    for _ in 0..o.samples {
        let t0 = Instant::now();
        let body = b.http.send("POST", "/tasks", &b.token, Some(&one))?;
        submit.push(t0.elapsed().as_secs_f64() * 1000.0);
        let r: SubmitTaskResp = parse(&String::from_utf8_lossy(&body))?;
        let (at, uuid) = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| BenchError::NeverFetched)?;
        if uuid != r.uuid {
            return Err(BenchError::WrongTask);
        }
        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    let parked_after = (threads(o.pid), rss_kib(o.pid));
    // Each idle worker stops after one more task: one each ends their long polls now
    // instead of at their deadline.
    stop.store(true, Ordering::SeqCst);
    let mut left = o.idle;
    while left > 0 {
        let n = left.min(5000);
        b.http.call("POST", "/tasks/submit", &b.token, Some(&b.tasks(n)))?;
        left -= n;
    }
    for (wt, h) in idle {
        h.join().map_err(|_| BenchError::Panicked("worker"))??;
        let _ = b.http.call("DELETE", "/workers", &wt, None);
    }
    b.http.call("POST", "/tasks/cancel", &b.token, Some(&json!({"group_name": b.group})))?;
    println!(
        "submit -> fetch latency with {} idle {} workers: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms ({} samples; the submit's own answer: p50 {:.2} ms)",
        o.idle,
        match o.poll {
            Some(_) => "polling".to_string(),
            None => format!("long-polling (wait={}s)", o.idle_wait),
        },
        percentile(&mut lat, 0.5),
        percentile(&mut lat, 0.9),
        percentile(&mut lat, 0.99),
        o.samples,
        percentile(&mut submit, 0.5),
    );
    if o.pid.is_some() {
        let most = |a: Option<u64>, b: Option<u64>| a.max(b).unwrap_or(0);
        println!(
            "coordinator with {} idle workers parked: {} threads, {:.1} MB resident (the larger of before and after the samples)",
            o.idle,
            most(parked_before.0, parked_after.0),
            most(parked_before.1, parked_after.1) as f64 / 1024.0,
        );
    }
    Ok(())
}

/// End to end with `workers` workers.
fn end_to_end_run(b: &Bench, o: &Opts) -> Result<(), BenchError> {
    let mut e2e = Vec::new();
    let mut cpu = Vec::new();
    let mut peak = 0u64;
    for _ in 0..o.repeat {
        let body = b.tasks(o.tasks);
        let r: TasksSubmitResp = parse(&b.http.call("POST", "/tasks/submit", &b.token, Some(&body))?)?;
        if r.results.iter().any(|r| r.is_err()) {
            return Err(BenchError::SubmitFailed);
        }
        let done = Arc::new(AtomicUsize::new(0));
        let workers: Vec<SimWorker> = (0..o.workers).map(|_| b.sim_worker(&o.base)).collect::<Result<_, _>>()?;
        let tokens: Vec<String> = workers.iter().map(|w| w.token.clone()).collect();
        let t0 = Instant::now();
        let cpu0 = cpu_secs(o.pid);
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut w| {
                let (done, total) = (done.clone(), o.tasks);
                std::thread::spawn(move || -> Result<(), BenchError> {
                    while done.load(Ordering::SeqCst) < total {
                        if let Some(t) = w.fetch(BUSY_WAIT_SECS)? {
                            w.finish(t.id)?;
                            done.fetch_add(1, Ordering::SeqCst);
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
                return Err(BenchError::TooSlow);
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if let (Some(a), Some(z)) = (cpu0, cpu_secs(o.pid)) {
            cpu.push((z - a) / o.tasks as f64 * 1e6);
        }
        for h in handles {
            h.join().map_err(|_| BenchError::Panicked("worker"))??;
        }
        for wt in &tokens {
            let _ = b.http.call("DELETE", "/workers", wt, None);
        }
        e2e.push(o.tasks as f64 / dt);
    }
    println!(
        "end to end with {} workers: median {:.0} tasks/s ({} tasks per run)",
        o.workers,
        median(&mut e2e),
        o.tasks
    );
    if !cpu.is_empty() {
        println!("coordinator CPU time per task end to end: median {:.0} us", median(&mut cpu));
    }
    if o.pid.is_some() {
        println!("coordinator resident memory, peak under load: {:.1} MB", peak as f64 / 1024.0);
        if let Some(k) = rss_kib(o.pid) {
            println!("coordinator resident memory, after: {:.1} MB", k as f64 / 1024.0);
        }
    }
    Ok(())
}
