//! `mito bench`: measures a coordinator the way workers and users load it.
//!
//! ```text
//! mito bench -c http://127.0.0.1:5000 -u mitosis_admin -p mitosis_admin --coordinator-pid 1234
//! ```
//!
//! Three measurements, each repeated and reported as medians:
//! - batch submit: one `POST /tasks/submit` of `--batch` tasks, in tasks per second, then
//!   an array of `--array` indices in one request, in milliseconds;
//! - submit → fetch latency with `--idle-workers` workers parked in long-poll fetches
//!   (or polling every `--poll` against a coordinator without long-poll);
//! - end to end: `--workers` workers fetch, report Finish and Commit `--tasks` no-op tasks.
//!
//! It works in a fresh group with a unique tag, so no other worker takes its tasks, and
//! unregisters its workers at the end. With `--coordinator-pid`, it also reads the
//! coordinator's memory, CPU time and context switches (Linux /proc); with `--db`, the
//! statements and transactions it asks of PostgreSQL per task. Figures that hold on any
//! machine: the end-to-end rate as a share of `--db-ceiling` (what `pgbench -N` commits
//! per second on the same server), `--instructions` (the coordinator's instructions per
//! task under callgrind), and `--against` (another coordinator measured in turn with this
//! one, as ratios).

mod callgrind;
mod error;
mod figures;
mod http;
mod options;
mod pgstats;
mod procstat;

use crate::api::{md5_password, RegisterWorkerResp, SubmitTaskResp, TasksSubmitResp, UserLoginResp, WorkerTaskResp};
use crate::opts::{help_text, parse_mode};
use callgrind::Callgrind;
use error::BenchError;
use figures::{comparison, figure, median, share_of_ceiling, Figures};
use http::{Http, Wire};
use options::{parse_opts, print_sql, Opts, PRINT_SQL, SPECS};
use pgstats::PgStats;
use procstat::{rss_kib, threads, ProcDelta, ProcSample};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entry point of `mito bench`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito bench", SPECS, false, || {
        help_text(
            "Measure a coordinator: batch submit, submit-to-fetch latency, end-to-end throughput",
            "mito bench [OPTIONS]",
            &SPECS[..SPECS.len() - 1],
            "",
        )
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(name) = args.extra(PRINT_SQL.long).flatten() {
        return print_sql(name);
    }
    let outcome = parse_opts(&args).and_then(|o| if o.against.is_some() { compare(&o) } else { run(&o).map(drop) });
    match outcome {
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

/// One bench run against `o.base`: what it measured, also printed as it goes.
fn run(o: &Opts) -> Result<Figures, BenchError> {
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
    let mut f = Figures::default();
    if o.instructions > 0 {
        instructions_run(&b, o)?;
        return Ok(f);
    }
    if let Some(k) = rss_kib(o.pid) {
        f.rss_idle_mb = Some(k as f64 / 1024.0);
        println!("coordinator resident memory, idle: {:.1} MB", k as f64 / 1024.0);
    }
    if o.batch > 0 {
        batch_run(&b, o, &mut f)?;
    }
    if o.array > 0 {
        array_run(&b, o, &mut f)?;
    }
    if o.samples > 0 {
        latency_run(&b, o, &mut f)?;
    }
    if o.tasks > 0 {
        end_to_end_run(&b, o, &mut f)?;
    }
    Ok(f)
}

/// `--against`: both coordinators, in turn, `--rounds` times; then the ratios.
fn compare(o: &Opts) -> Result<(), BenchError> {
    let other = Opts {
        base: o.against.clone().unwrap_or_default(),
        pid: o.against_pid,
        poll: o.against_poll,
        db: o.against_db.clone(),
        ..o.clone()
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=o.rounds {
        println!("\n== round {round} of {}: {}", o.rounds, o.label);
        a.push(run(o)?);
        println!("\n== round {round} of {}: {}", o.rounds, o.against_label);
        b.push(run(&other)?);
    }
    println!("\n{}", comparison(&o.label, &a, &o.against_label, &b));
    Ok(())
}

/// Batch submit; the tasks are then cancelled so they do not feed the later runs.
fn batch_run(b: &Bench, o: &Opts, f: &mut Figures) -> Result<(), BenchError> {
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
    f.batch_tasks_per_sec = median(rates);
    println!("batch submit of {} tasks: median {:.0} tasks/s", o.batch, f.batch_tasks_per_sec.unwrap_or(0.0));
    Ok(())
}

/// An array of `--array` indices in one request (the goal for the most one request may
/// hold: under a second); the tasks are cancelled as after the batch runs.
fn array_run(b: &Bench, o: &Opts, f: &mut Figures) -> Result<(), BenchError> {
    let n = o.array;
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
        if ok != n {
            return Err(BenchError::PartialBatch { ok, of: n });
        }
        times.push(dt * 1000.0);
        b.http.call("POST", "/tasks/cancel", &b.token, Some(&json!({"group_name": b.group})))?;
    }
    f.array_ms = median(times);
    println!(
        "array submit of {n} indices in one request: median {:.0} ms (goal: under 1 s)",
        f.array_ms.unwrap_or(0.0)
    );
    Ok(())
}

/// Submit → fetch latency with parked workers; with `--coordinator-pid`, also the
/// coordinator's threads and resident memory while they are parked.
fn latency_run(b: &Bench, o: &Opts, f: &mut Figures) -> Result<(), BenchError> {
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
    let (p50, p90, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.9), percentile(&mut lat, 0.99));
    (f.latency_p50_ms, f.latency_p90_ms) = (Some(p50), Some(p90));
    println!(
        "submit -> fetch latency with {} idle {} workers: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms ({} samples; the submit's own answer: p50 {:.2} ms)",
        o.idle,
        match o.poll {
            Some(_) => "polling".to_string(),
            None => format!("long-polling (wait={}s)", o.idle_wait),
        },
        p50,
        p90,
        p99,
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

/// What one end-to-end run took.
struct EndToEnd {
    secs: f64,
    /// What the coordinator spent from the workers' start to the last Commit.
    spent: Option<ProcDelta>,
    peak_kib: u64,
}

/// Submits `tasks` tasks in one batch, then `--workers` workers fetch, Finish and Commit
/// them all; the workers are unregistered after.
fn end_to_end_once(b: &Bench, o: &Opts, tasks: usize) -> Result<EndToEnd, BenchError> {
    let body = b.tasks(tasks);
    let r: TasksSubmitResp = parse(&b.http.call("POST", "/tasks/submit", &b.token, Some(&body))?)?;
    if r.results.iter().any(|r| r.is_err()) {
        return Err(BenchError::SubmitFailed);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<SimWorker> = (0..o.workers).map(|_| b.sim_worker(&o.base)).collect::<Result<_, _>>()?;
    let tokens: Vec<String> = workers.iter().map(|w| w.token.clone()).collect();
    let mut peak_kib = 0u64;
    let t0 = Instant::now();
    let before = ProcSample::take(o.pid);
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let done = done.clone();
            std::thread::spawn(move || -> Result<(), BenchError> {
                while done.load(Ordering::SeqCst) < tasks {
                    if let Some(t) = w.fetch(BUSY_WAIT_SECS)? {
                        w.finish(t.id)?;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(())
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < tasks {
        std::thread::sleep(Duration::from_millis(50));
        peak_kib = peak_kib.max(rss_kib(o.pid).unwrap_or(0));
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(BenchError::TooSlow);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let spent = before.zip(ProcSample::take(o.pid)).and_then(|(a, z)| a.until(&z));
    for h in handles {
        h.join().map_err(|_| BenchError::Panicked("worker"))??;
    }
    for wt in &tokens {
        let _ = b.http.call("DELETE", "/workers", wt, None);
    }
    Ok(EndToEnd { secs, spent, peak_kib })
}

/// End to end with `workers` workers, `--repeat` times; with `--db`, the statements and
/// transactions of all repetitions together.
fn end_to_end_run(b: &Bench, o: &Opts, f: &mut Figures) -> Result<(), BenchError> {
    let mut stats = o.db.as_deref().map(PgStats::connect).transpose()?;
    let mut transactions_before = 0;
    if let Some(s) = stats.as_mut() {
        // Earlier runs' transactions are reported up to SETTLE late; let them in first.
        std::thread::sleep(pgstats::SETTLE);
        transactions_before = s.transactions()?;
        s.reset_statements()?;
    }
    let per_task = |x: f64| x / o.tasks as f64;
    let (mut rates, mut cpu, mut system, mut switches) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0u64;
    for _ in 0..o.repeat {
        let run = end_to_end_once(b, o, o.tasks)?;
        rates.push(o.tasks as f64 / run.secs);
        peak = peak.max(run.peak_kib);
        if let Some(d) = run.spent {
            cpu.push(per_task(d.cpu_secs * 1e6));
            system.push(per_task(d.system_secs * 1e6));
            switches.push(per_task(d.switches as f64));
        }
    }
    f.end_to_end_tasks_per_sec = median(rates);
    (f.cpu_us_per_task, f.system_us_per_task, f.switches_per_task) = (median(cpu), median(system), median(switches));
    let rate = f.end_to_end_tasks_per_sec.unwrap_or(0.0);
    println!("end to end with {} workers: median {:.0} tasks/s ({} tasks per run)", o.workers, rate, o.tasks);
    if let Some(ceiling) = o.db_ceiling {
        println!(
            "  = {} of the database's own ceiling ({} transactions/s in pgbench -N on the same PostgreSQL)",
            share_of_ceiling(rate, ceiling),
            figure(ceiling)
        );
    }
    if let (Some(c), Some(s)) = (f.cpu_us_per_task, f.system_us_per_task) {
        println!("coordinator CPU time per task end to end: median {c:.0} us (of it system: {s:.0} us)");
    }
    if let Some(n) = f.switches_per_task {
        println!(
            "coordinator context switches per task end to end (voluntary + involuntary, all threads): median {n:.1}"
        );
    }
    if let Some(mut s) = stats {
        let statements = s.statements()?;
        std::thread::sleep(pgstats::SETTLE);
        let transactions = s.transactions()?.saturating_sub(transactions_before);
        let all = (o.tasks * o.repeat) as f64;
        f.statements_per_task = Some(statements as f64 / all);
        f.transactions_per_task = Some(transactions as f64 / all);
        println!(
            "PostgreSQL per task end to end: {:.2} statements (pg_stat_statements), {:.2} transactions (pg_stat_database), over {} tasks",
            statements as f64 / all,
            transactions as f64 / all,
            o.tasks * o.repeat
        );
    }
    if o.pid.is_some() {
        f.rss_peak_mb = Some(peak as f64 / 1024.0);
        println!("coordinator resident memory, peak under load: {:.1} MB", peak as f64 / 1024.0);
        if let Some(k) = rss_kib(o.pid) {
            println!("coordinator resident memory, after: {:.1} MB", k as f64 / 1024.0);
        }
    }
    Ok(())
}

/// `--instructions N`: the coordinator's instructions for N and for 5N tasks end to end
/// (submit, fetch, Finish, Commit); the difference over 4N is the cost of a task.
fn instructions_run(b: &Bench, o: &Opts) -> Result<(), BenchError> {
    let (Some(pid), Some(dir)) = (o.pid, o.callgrind_dir.clone()) else { return Ok(()) };
    let n = o.instructions;
    let cg = Callgrind { pid, dir };
    let t0 = Instant::now();
    cg.zero()?;
    end_to_end_once(b, o, n)?;
    let small = cg.dump()?;
    end_to_end_once(b, o, 5 * n)?;
    let large = cg.dump()?;
    let (small_total, large_total) = (Callgrind::total(&small)?, Callgrind::total(&large)?);
    let per = callgrind::per_task(small_total, large_total, n, 5 * n).ok_or_else(|| BenchError::Tool {
        tool: "callgrind",
        reason: format!(
            "the {}-task run counted fewer instructions ({large_total}) than the {n}-task run ({small_total})",
            5 * n
        ),
    })?;
    println!(
        "coordinator instructions per task: {} (callgrind, end to end: ({} - {}) / {} tasks)",
        figure(per),
        figure(large_total as f64),
        figure(small_total as f64),
        4 * n
    );
    let profile = cg.dir.join("callgrind-annotate.txt");
    Callgrind::annotate(&large, &profile)?;
    println!("  per-function profile of the {}-task run: {} (dump: {})", 5 * n, profile.display(), large.display());
    println!("  took {:.0} s under valgrind", t0.elapsed().as_secs_f64());
    Ok(())
}
