//! Fault injection with the real binaries, a real PostgreSQL and a real S3 server: kill -9
//! of a busy worker and of a coordinator under load, PostgreSQL stopped under load, the S3
//! server stopped while a task uploads, a full disk under the local object store, and an
//! opt-in soak (`make soak`) mixing kills under steady load.
//!
//! Every scenario checks that each accepted task ended exactly once: archived once, no
//! longer active, finished with its exit status, and its result archive downloadable with
//! what the task wrote. A task may *run* twice after a kill (its first run was lost with its
//! worker); that is counted and reported, never archived twice.
//!
//! kill -9 of one of two idle long-polling workers is
//! `reliability::tasks_submitted_after_an_idle_worker_is_killed_finish_within_seconds`.

use crate::harness::*;
use crate::worker::{marker, wait_committed, wait_marker_gone, with_marker, Worker};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A task that appends its uuid to `runs` (one line per run) and leaves it in
/// `result/out.txt`, then runs `then`.
fn recorded(runs: &Path, then: &str) -> Vec<String> {
    let script = format!(
        "echo \"$MITO_TASK_UUID\" >> '{}'; echo \"$MITO_TASK_UUID\" > \"$MITO_RESULT_DIR/out.txt\"; {then}",
        runs.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

fn submit_args(api: &Api, group: &str, args: &[String]) -> (u16, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let body = serde_json::json!({
        "group_name": group, "tags": [], "labels": [], "timeout": "5m", "priority": 0,
        "task_spec": {"args": args, "envs": {}, "resources": [], "terminal_output": false, "watch": null}
    });
    api.post("/tasks", &body)
}

fn submit_ok(api: &Api, group: &str, args: &[String]) -> String {
    let (s, b) = submit_args(api, group, args);
    assert_eq!(s, 200, "submit: {b}");
    json(&b)["uuid"].as_str().unwrap().to_string()
}

/// How many times each task ran, from the `runs` file.
fn runs_of(runs: &Path) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for l in std::fs::read_to_string(runs).unwrap_or_default().lines() {
        *n.entry(l.trim().to_string()).or_insert(0) += 1;
    }
    n
}

/// One file of a task's downloaded result archive.
fn result_file(api: &Api, uuid: &str, name: &str) -> Result<Vec<u8>, String> {
    let (s, b) = api.get(&format!("/tasks/{uuid}/download/artifacts/result"));
    if s != 200 {
        return Err(format!("no result URL ({s}): {b}"));
    }
    let url = json(&b)["url"].as_str().unwrap_or_default().to_string();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let resp = agent.get(&url).call().map_err(|e| format!("GET {url}: {e}"))?;
    let mut gz = Vec::new();
    resp.into_reader().take(64 << 20).read_to_end(&mut gz).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for e in archive.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        if e.path().map(|p| p == Path::new("result").join(name)).unwrap_or(false) {
            let mut body = Vec::new();
            e.read_to_end(&mut body).map_err(|e| e.to_string())?;
            return Ok(body);
        }
    }
    Err(format!("result/{name} is not in the archive of {uuid}"))
}

/// Checks that every task in `uuids` ended exactly once: committed (waiting up to
/// `within`), archived once, no longer active, exit 0, and its `result/out.txt` holds its
/// uuid. Returns the submit→commit times the database recorded.
fn assert_each_ended_once(db_url: &str, api: &Api, uuids: &[String], within: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + within;
    for u in uuids {
        let info =
            wait_committed(api, u, deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)));
        assert_eq!(info["state"], "Finished", "{info}");
        assert_eq!(info["result"]["exit_status"], 0, "{info}");
    }
    let mut db = postgres::Client::connect(db_url, postgres::NoTls).expect("connect to the database");
    let rows = db
        .query(
            "SELECT t.u,
                    (SELECT count(*) FROM archived_tasks WHERE uuid::text = t.u),
                    (SELECT count(*) FROM active_tasks WHERE uuid::text = t.u),
                    (SELECT extract(epoch FROM updated_at - created_at)::float8 FROM archived_tasks WHERE uuid::text = t.u)
             FROM unnest($1::text[]) AS t(u)",
            &[&uuids],
        )
        .unwrap();
    let mut took = Vec::new();
    for r in rows {
        let (u, archived, active): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((archived, active), (1, 0), "task {u}: archived {archived} times, active {active} times");
        took.push(Duration::from_secs_f64(r.get::<_, f64>(3).max(0.0)));
    }
    for u in uuids {
        let out = result_file(api, u, "out.txt").unwrap_or_else(|e| panic!("task {u}: {e}"));
        assert_eq!(String::from_utf8_lossy(&out).trim(), u, "task {u}: its result archive holds another task's output");
    }
    took
}

/// One submission of a load generator.
#[derive(Debug, Clone)]
struct Submitted {
    uuid: Option<String>,
    status: u16,
    took: Duration,
    at: Instant,
    body: String,
}

/// Submits `args` every `every`, round robin over `apis`, until `stop`.
fn load(
    apis: Vec<Api>,
    group: &str,
    args: Vec<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Submitted>> {
    let group = group.to_string();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            let (status, body) = submit_args(&apis[i % apis.len()], &group, &args);
            i += 1;
            let uuid = (status == 200).then(|| json(&body)["uuid"].as_str().unwrap().to_string());
            out.push(Submitted { uuid, status, took: at.elapsed(), at, body });
            std::thread::sleep(every.saturating_sub(at.elapsed()));
        }
        out
    })
}

fn accepted(subs: &[Submitted]) -> Vec<String> {
    subs.iter().filter_map(|s| s.uuid.clone()).collect()
}

/// Restarts a killed coordinator on its port and database, with a new log file.
fn restart(c: &mut Coordinator, extra: &[&str], n: usize) {
    if let Some(mut old) = c.child.take() {
        let _ = old.kill();
        let _ = old.wait();
    }
    c.log = c.home.path().join(format!("coordinator-{n}.log"));
    c.child = Some(spawn_coordinator(&c.home, &c.db.url, c.port, extra, &c.log));
    assert!(c.wait_ready(Duration::from_secs(60)), "the coordinator did not come back:\n{}", c.log_text());
}

fn p(quantile: f64, v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() as f64 * quantile).ceil() as usize).clamp(1, v.len()) - 1]
}

// ---------------------------------------------------------------- a private PostgreSQL

/// A PostgreSQL server of one test's own, which the test may stop and start again (the
/// harness's server is shared by every test).
struct PgServer {
    dir: TempDir,
    port: u16,
    url: String,
    pid: Option<u32>,
}

impl PgServer {
    fn start() -> PgServer {
        let dir = TempDir::new("pg-private");
        let ids = postgres_ids();
        if let Some((uid, gid)) = ids {
            let c = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
            // SAFETY: chown on a directory we just created.
            unsafe { libc::chown(c.as_ptr(), uid, gid) };
        }
        let mut init = Command::new(find_pg_bin("initdb"));
        init.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(dir.path().join("data"));
        init.stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some((uid, gid)) = ids {
            std::os::unix::process::CommandExt::uid(&mut init, uid);
            std::os::unix::process::CommandExt::gid(&mut init, gid);
        }
        let out = init.output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = PgServer { dir, port: 0, url: String::new(), pid: None };
        for _ in 0..5 {
            pg.port = free_port();
            pg.url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
            if pg.launch() {
                return pg;
            }
        }
        panic!("the private PostgreSQL did not come up");
    }

    /// Starts the server on `self.port`; true once it accepts connections.
    fn launch(&mut self) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let (dir, port) = (self.dir.path().to_path_buf(), self.port);
        // Spawned from a thread that lives until the server exits: PR_SET_PDEATHSIG fires
        // when the spawning thread ends.
        std::thread::spawn(move || {
            let mut cmd = Command::new(find_pg_bin("postgres"));
            cmd.arg("-D").arg(dir.join("data")).args(["-p", &port.to_string(), "-k"]).arg(&dir).args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("postgres.log"));
            cmd.stderr(log.map(Stdio::from).unwrap_or(Stdio::null()));
            if let Some((uid, gid)) = postgres_ids() {
                std::os::unix::process::CommandExt::uid(&mut cmd, uid);
                std::os::unix::process::CommandExt::gid(&mut cmd, gid);
            }
            die_with_parent(&mut cmd, libc::SIGINT);
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Some(child.id()));
                    let _ = child.wait();
                }
                Err(_) => {
                    let _ = tx.send(None);
                }
            }
        });
        let Some(pid) = rx.recv().unwrap() else {
            return false;
        };
        self.pid = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if postgres::Client::connect(&self.url, postgres::NoTls).is_ok() {
                return true;
            }
            // SAFETY: signal 0 only checks that our child still exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        false
    }

    /// A fast shutdown (what `pg_ctl stop -m fast` sends): open connections are closed.
    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: signalling the server we started, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            // The spawning thread reaps it, so the pid stops existing once it exited.
            while Instant::now() < deadline && unsafe { libc::kill(pid as i32, 0) } == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn restart(&mut self) {
        assert!(self.launch(), "the private PostgreSQL did not come back on port {}", self.port);
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- scenarios

/// kill -9 of a worker in the middle of a task: its task processes die with it, the
/// reaper puts the task back once `heartbeat_timeout` passed, and another worker runs it
/// to the end. It is archived once, by the second worker, with that run's artifacts.
#[test]
fn a_task_whose_worker_is_killed_finishes_on_another_worker() {
    let c = Coordinator::start_with(TestDb::new(), &["--heartbeat-timeout", "5s"]);
    let a = c.user("ann");
    let dir = TempDir::new("faults-worker");
    let (runs, started) = (dir.path().join("runs"), dir.path().join("started"));
    let m = marker("killed-worker");
    // The first run hangs; the second one (on the other worker) ends at once.
    let then =
        format!("if [ -e '{s}' ]; then exit 0; fi; touch '{s}'; while :; do sleep 1; done", s = started.display());
    let mut args = recorded(&runs, &then);
    args.push(m.clone());
    let mut victim = Worker::start(&c.url, "ann", "ann-pw", &["--heartbeat-interval", "1s"]);
    victim.id();
    let u = submit_ok(&a, "ann", &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.exists(), "the task did not start:\n{}", victim.log_text());
    assert!(!with_marker(&m).is_empty(), "the task's processes carry the marker");
    let killed = Instant::now();
    victim.signal(libc::SIGKILL).expect("the worker dies");
    assert!(wait_marker_gone(&m, Duration::from_secs(5)), "a process of the task outlived its worker's kill -9");
    let survivor = Worker::start(&c.url, "ann", "ann-pw", &["--heartbeat-interval", "1s"]);
    let survivor_id = survivor.id();
    let info = wait_committed(&a, &u, Duration::from_secs(60));
    let took = killed.elapsed();
    assert_eq!(info["reporter_uuid"], survivor_id.as_str(), "{info}");
    assert_each_ended_once(&c.db.url, &a, std::slice::from_ref(&u), Duration::from_secs(10));
    assert_eq!(runs_of(&runs).get(&u), Some(&2), "one lost run, one that finished");
    assert!(c.log_text().contains("sent no heartbeat for 5s; removing it and requeueing its task"), "{}", c.log_text());
    assert!(took < Duration::from_secs(20), "finished elsewhere {took:?} after the kill");
    assert!(wait_marker_gone(&m, Duration::from_secs(5)));
    eprintln!(
        "measured: killed worker's task finished elsewhere {:.1}s after the kill (heartbeat_timeout 5s)",
        took.as_secs_f64()
    );
}

/// kill -9 of one of two coordinators on one database under load, workers on both: the
/// other one keeps taking and finishing tasks meanwhile, the killed one restarted on its
/// port carries on, and every accepted task is archived exactly once.
#[test]
fn a_coordinator_killed_under_load_loses_nothing() {
    // Coordinators sharing a database share an object store too (each one's local store
    // would hold only what was uploaded through it).
    let flags = s3_server().coordinator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c1 = Coordinator::start_with(TestDb::new(), &flags);
    let c2 = Coordinator::start_with(TestDb::from_url(&c1.db.url), &flags);
    let a1 = c1.user("ann");
    let a2 = c2.as_token(&c2.login("ann", "ann-pw"));
    let dir = TempDir::new("faults-coord");
    let runs = dir.path().join("runs");
    let workers: Vec<Worker> =
        [&c1.url, &c1.url, &c2.url, &c2.url].iter().map(|u| Worker::start(u, "ann", "ann-pw", &[])).collect();
    for w in &workers {
        w.id();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let gen =
        load(vec![a1.clone(), a2.clone()], "ann", recorded(&runs, "true"), Duration::from_millis(100), stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    c1.signal(libc::SIGKILL).expect("the coordinator dies");
    // Meanwhile the other one takes and finishes tasks on its own workers.
    let during = submit_ok(&a2, "ann", &recorded(&runs, "true"));
    let info = wait_committed(&a2, &during, Duration::from_secs(20));
    let served = killed.elapsed();
    assert_eq!(info["state"], "Finished", "{info}");
    std::thread::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed()));
    restart(&mut c1, &flags, 2);
    let down = killed.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let subs = gen.join().unwrap();
    let mut uuids = accepted(&subs);
    uuids.push(during);
    let refused = subs.iter().filter(|s| s.status != 200).count();
    assert!(
        subs.iter().all(|s| s.status == 200 || s.status == 0),
        "only the killed coordinator's refusals: {:?}",
        subs.iter().find(|s| s.status != 200 && s.status != 0)
    );
    let after = subs.iter().filter(|s| s.at > killed + down && s.status == 200).count();
    assert!(after > 0, "the restarted coordinator takes submissions again");
    let took = assert_each_ended_once(&c1.db.url, &a2, &uuids, Duration::from_secs(60));
    let reruns = runs_of(&runs).values().filter(|n| **n > 1).count();
    eprintln!(
        "measured: coordinator kill -9: {} tasks accepted, {refused} submissions to the dead one refused, the other finished a task {:.1}s after the kill, down {:.1}s, {reruns} ran twice, 0 archived twice, p99 submit->finish {:.1}s",
        uuids.len(),
        served.as_secs_f64(),
        down.as_secs_f64(),
        p(0.99, &took).as_secs_f64()
    );
}

/// PostgreSQL stopped for 10 s under load: the coordinator answers 503 meanwhile (never 500,
/// never a hang), comes back by itself, and every submit it accepted is archived.
#[test]
fn postgres_stopped_under_load_costs_503s_and_loses_nothing() {
    let mut pg = PgServer::start();
    let c = Coordinator::start_with(TestDb::from_url(&pg.url), &[]);
    let a = c.user("ann");
    let dir = TempDir::new("faults-pg");
    let runs = dir.path().join("runs");
    let workers: Vec<Worker> = (0..2).map(|_| Worker::start(&c.url, "ann", "ann-pw", &[])).collect();
    for w in &workers {
        w.id();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let gen = load(vec![a.clone()], "ann", recorded(&runs, "true"), Duration::from_millis(200), stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let down_at = Instant::now();
    pg.stop();
    // Reads as well as writes answer 503 while it is down.
    std::thread::sleep(Duration::from_secs(2));
    let (s, b) = a.get("/tasks/00000000-0000-4000-8000-000000000000");
    assert_eq!(s, 503, "{b}");
    assert!(msg(&b).contains("retry later"), "{b}");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed()));
    pg.restart();
    let up_at = Instant::now();
    // Recovers by itself: keep the load on until submissions go through again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && submit_args(&a, "ann", &recorded(&runs, "true")).0 != 200 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = up_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let subs = gen.join().unwrap();
    let bad: Vec<&Submitted> = subs.iter().filter(|s| s.status != 200 && s.status != 503).collect();
    assert!(bad.is_empty(), "only 200 or 503 (no 500, no broken connection): {bad:?}\n{}", c.log_text());
    let unavailable: Vec<&Submitted> = subs.iter().filter(|s| s.status == 503).collect();
    assert!(!unavailable.is_empty(), "the outage was seen");
    assert!(unavailable.iter().all(|s| msg(&s.body).contains("retry later")), "{:?}", unavailable[0]);
    let slowest = subs.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(slowest < Duration::from_secs(12), "no request hung: the slowest took {slowest:?}");
    assert!(recovered < Duration::from_secs(15), "recovered {recovered:?} after PostgreSQL came back");
    assert!(subs.iter().any(|s| s.at > up_at && s.status == 200), "submissions go through again");
    let uuids = accepted(&subs);
    assert_each_ended_once(&pg.url, &a, &uuids, Duration::from_secs(60));
    assert!(c.log_text().contains("unreachable"), "the coordinator's log names the outage:\n{}", c.log_text());
    // So do the workers' retry lines, with the coordinator's reason.
    let why = "failed (HTTP status 503: Service unavailable: the database is unreachable";
    assert!(workers.iter().any(|w| w.log_text().contains(why)), "{}", workers[0].log_text());
    let mut db = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let left: i64 = db.query_one("SELECT count(*) FROM active_tasks", &[]).unwrap().get(0);
    assert_eq!(left, 0, "nothing is stuck active");
    let _ = pg.log_text();
    eprintln!(
        "measured: PostgreSQL down {:.1}s: {} submissions, {} accepted, {} answered 503 (slowest answer {:.2}s), submissions accepted again {:.1}s after it came back",
        (up_at - down_at).as_secs_f64(),
        subs.len(),
        uuids.len(),
        unavailable.len(),
        slowest.as_secs_f64(),
        recovered.as_secs_f64()
    );
}

/// The S3 server stopped while a task uploads its result: the worker retries, and once the
/// server is back the archive is there and downloadable, byte for byte.
#[test]
fn an_s3_outage_during_an_upload_is_retried() {
    let mut s3 = S3Server::start();
    let flags = s3.coordinator_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Coordinator::start_with(TestDb::new(), &flags);
    let a = c.user("ann");
    let dir = TempDir::new("faults-s3");
    let (runs, go, copy) = (dir.path().join("runs"), dir.path().join("go"), dir.path().join("data.bin"));
    let then = format!(
        "head -c 300000 /dev/urandom > \"$MITO_RESULT_DIR/data.bin\"; cp \"$MITO_RESULT_DIR/data.bin\" '{}'; while [ ! -e '{}' ]; do sleep 0.1; done",
        copy.display(),
        go.display()
    );
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    w.id();
    let u = submit_ok(&a, "ann", &recorded(&runs, &then));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !copy.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.stop();
    let down_at = Instant::now();
    std::fs::write(&go, "").unwrap();
    assert!(w.wait_log("uploading result.tar.gz", Duration::from_secs(20)), "the upload is retried:\n{}", w.log_text());
    std::thread::sleep(Duration::from_secs(3));
    s3.restart();
    let up_at = Instant::now();
    let info = wait_committed(&a, &u, Duration::from_secs(60));
    assert!(info["result"]["msg"].is_null(), "{info}");
    let committed = up_at.elapsed();
    assert_each_ended_once(&c.db.url, &a, std::slice::from_ref(&u), Duration::from_secs(10));
    let data = result_file(&a, &u, "data.bin").unwrap();
    assert!(data == std::fs::read(&copy).unwrap(), "the uploaded archive holds what the task wrote");
    let retries =
        w.log_text().lines().filter(|l| l.contains("uploading result.tar.gz") && l.contains("retrying")).count();
    assert!(retries >= 1, "{}", w.log_text());
    eprintln!(
        "measured: S3 down {:.1}s during an upload: {retries} retries logged, committed {:.1}s after S3 came back",
        (up_at - down_at).as_secs_f64(),
        committed.as_secs_f64()
    );
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped; None where this
/// process may not mount (not root, or no CAP_SYS_ADMIN in a container).
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Files left in the local store's temp directory (a half-written upload would be there).
/// The worker keeps retrying, so a file may exist for the instant an attempt writes it:
/// only one still there after `within` counts as left.
fn temp_files_left(data: &Path, within: Duration) -> Vec<PathBuf> {
    let list = || -> Vec<PathBuf> {
        std::fs::read_dir(data.join("objects/.tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + within;
    let mut left = list();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = list();
    }
    left
}

/// The coordinator's disk for its local object store is full: the upload fails with a
/// clear error (507, "out of disk space") that the worker logs and retries, no part of it
/// is visible (the object answers 404, no temp file is left), and once space is freed the
/// upload goes through and the task is archived once with its artifacts.
#[test]
fn a_full_disk_under_the_local_store_fails_uploads_clearly() {
    let Some(disk) = Tmpfs::mount("2m") else {
        eprintln!("skipped: this process cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let data = disk.0.path().to_path_buf();
    let c = Coordinator::start_with(TestDb::new(), &["--data-dir", data.to_str().unwrap()]);
    let a = c.user("ann");
    // Fill the disk but for ~100 kB; the task's archive (incompressible) needs 400 kB.
    let filler = data.join("filler");
    let free = {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let p = std::ffi::CString::new(data.to_str().unwrap()).unwrap();
        // SAFETY: statvfs into a zeroed struct, with a valid C string.
        assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    std::fs::write(&filler, vec![7u8; (free - 100_000) as usize]).unwrap();
    let dir = TempDir::new("faults-disk");
    let (runs, copy) = (dir.path().join("runs"), dir.path().join("data.bin"));
    let then = format!(
        "head -c 400000 /dev/urandom > \"$MITO_RESULT_DIR/data.bin\"; cp \"$MITO_RESULT_DIR/data.bin\" '{}'",
        copy.display()
    );
    let w = Worker::start(&c.url, "ann", "ann-pw", &[]);
    w.id();
    let u = submit_ok(&a, "ann", &recorded(&runs, &then));
    assert!(
        w.wait_log("out of disk space", Duration::from_secs(30)),
        "the worker's log says why the upload failed:\n{}\ncoordinator:\n{}",
        w.log_text(),
        c.log_text()
    );
    assert!(c.log_text().contains("No space left on device"), "{}", c.log_text());
    // Nothing half-written: the object is not there at all, and no temp file is left.
    let (s, b) = a.get(&format!("/tasks/{u}/download/artifacts/result"));
    assert_eq!(s, 200, "{b}");
    let url = json(&b)["url"].as_str().unwrap().to_string();
    let got = ureq::get(&url).call();
    assert!(
        matches!(got, Err(ureq::Error::Status(404, _))),
        "a failed upload is not visible: {:?}",
        got.map(|r| r.status())
    );
    let left = temp_files_left(&data, Duration::from_secs(3));
    assert!(left.is_empty(), "temp files left: {left:?}");
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let info = wait_committed(&a, &u, Duration::from_secs(60));
    assert!(info["result"]["msg"].is_null(), "{info}");
    assert_each_ended_once(&c.db.url, &a, std::slice::from_ref(&u), Duration::from_secs(10));
    assert!(result_file(&a, &u, "data.bin").unwrap() == std::fs::read(&copy).unwrap());
    assert!(temp_files_left(&data, Duration::from_secs(3)).is_empty());
    drop(c);
    eprintln!(
        "measured: full disk: upload refused with 507, committed {:.1}s after space was freed",
        freed.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- soak

/// `make soak`: steady load on two coordinators on one database with three workers each,
/// while every few seconds a random worker is killed -9 (and replaced) and, now and then, a
/// coordinator is killed -9 and restarted. `MITO_SOAK_SECS` sets the length (default 600).
/// Reports tasks submitted, finished, run twice and archived twice (must be 0), and p99
/// submit→finish.
#[test]
#[ignore = "ten minutes; run with `make soak`"]
fn soak_random_kills_under_steady_load() {
    let secs: u64 =
        std::env::var("MITO_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600).clamp(10, 24 * 3600);
    // A killed worker's task comes back at heartbeat_timeout: short here, so it costs seconds.
    // One object store for both coordinators, as for any coordinators sharing a database.
    let mut flags = s3_server().coordinator_flags();
    flags.extend(["--heartbeat-timeout".to_string(), "10s".to_string()]);
    let extra: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut coords = vec![Coordinator::start_with(TestDb::new(), &extra)];
    coords.push(Coordinator::start_with(TestDb::from_url(&coords[0].db.url), &extra));
    let apis: Vec<Api> = {
        coords[0].user("ann");
        coords.iter().map(|c| c.as_token(&c.login("ann", "ann-pw"))).collect()
    };
    let urls: Vec<String> = coords.iter().map(|c| c.url.clone()).collect();
    let dir = TempDir::new("soak");
    let runs = dir.path().join("runs");
    let wargs = ["--heartbeat-interval", "2s"];
    // (worker, the coordinator it talks to)
    let mut workers: Vec<(Worker, usize)> =
        (0..6).map(|i| (Worker::start(&urls[i % 2], "ann", "ann-pw", &wargs), i % 2)).collect();
    for (w, _) in &workers {
        w.id();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let gen =
        load(apis.clone(), "ann", recorded(&runs, "sleep 0.$(( $$ % 10 ))"), Duration::from_millis(100), stop.clone());
    let started = Instant::now();
    let mut rng = uuid::Uuid::new_v4().as_u128();
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u128) as usize
    };
    let (mut worker_kills, mut coord_kills) = (0, 0);
    let mut restarts = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(2 + next(4) as u64));
        if next(5) == 0 {
            // The second coordinator: the first holds the harness's database handle.
            let c = &mut coords[1];
            c.signal(libc::SIGKILL);
            coord_kills += 1;
            std::thread::sleep(Duration::from_secs(1 + next(3) as u64));
            restarts += 1;
            restart(c, &extra, restarts + 1);
        } else {
            let (mut w, on) = workers.swap_remove(next(workers.len()));
            w.signal(libc::SIGKILL);
            worker_kills += 1;
            workers.push((Worker::start(&urls[on], "ann", "ann-pw", &wargs), on));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let subs = gen.join().unwrap();
    let uuids = accepted(&subs);
    let odd: Vec<&Submitted> = subs.iter().filter(|s| s.status != 200 && s.status != 0).collect();
    assert!(odd.is_empty(), "refusals other than a dead coordinator's: {odd:?}");
    let took = assert_each_ended_once(&coords[0].db.url, &apis[0], &uuids, Duration::from_secs(120));
    let reruns = runs_of(&runs).values().filter(|n| **n > 1).count();
    eprintln!(
        "soak: {secs}s, {worker_kills} worker kills, {coord_kills} coordinator kills; {} submissions, {} accepted, {} finished, {reruns} ran twice, 0 archived twice; submit->finish p50 {:.2}s p99 {:.2}s max {:.2}s",
        subs.len(),
        uuids.len(),
        took.len(),
        p(0.5, &took).as_secs_f64(),
        p(0.99, &took).as_secs_f64(),
        p(1.0, &took).as_secs_f64()
    );
}
