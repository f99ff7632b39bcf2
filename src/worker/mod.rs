//! `mito worker`: registers with a coordinator, then fetches tasks one at a time, runs each
//! as a process group of its own, uploads what it produced and commits it.
//!
//! ```text
//! mito worker -c http://127.0.0.1:5000 -u alice -p secret --groups team:write --tags gpu
//! ```
//!
//! Threads: `main` (fetch, run, report), `heartbeat`, `signals` and, on the first SIGINT or
//! SIGTERM, `shutdown` (stops the task's process group, unregisters, exits 0; a second signal
//! exits at once). Connection errors and 5xx answers are retried with backoff everywhere;
//! the worker gives up only on a 401 (it was removed, or its lifetime ended) or a signal.

// ureq's error type is large; it only travels one call up, on the retry path.
#![allow(clippy::result_large_err)]

mod artifacts;
mod exec;
mod fetch;
mod heartbeat;
mod isolate;
mod login;
mod net;
mod state;
mod task;

use crate::api::{RegisterWorkerReq, RegisterWorkerResp};
use crate::config::worker::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_POLLING_INTERVAL};
use crate::config::{cache_dir, concat_str, Layers, WorkerConfig, DEFAULT_COORDINATOR_ADDR};
use crate::logging::{self, FileTarget};
use crate::opts::{help_text, parse_mode, OptSpec};
use artifacts::Dirs;
use crossbeam_channel::{bounded, Receiver, Sender};
use login::CredError;
use net::{Backoff, CallError, Net};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

const ABOUT: &str = "Run a mitosis worker";

const SPECS: &[OptSpec] = &[
    OptSpec::value("coordinator", Some('c'), "coordinator_addr", "COORDINATOR_ADDR", concat_str!("The address of the coordinator (default ", DEFAULT_COORDINATOR_ADDR, ")")),
    OptSpec::value("polling-interval", None, "polling_interval", "POLLING_INTERVAL", concat_str!("The interval to poll tasks when the coordinator has no long-poll, and the longest pause between retries (default ", DEFAULT_POLLING_INTERVAL, ")")),
    OptSpec::value("heartbeat-interval", None, "heartbeat_interval", "HEARTBEAT_INTERVAL", concat_str!("The interval to send heartbeat while idle (default ", DEFAULT_HEARTBEAT_INTERVAL, "; every 2s while a task runs)")),
    OptSpec::value("credential-path", None, "credential_path", "CREDENTIAL_PATH", "The path of the user credential file (default ~/.config/mitosis/credentials)"),
    OptSpec::value("user", Some('u'), "user", "USER", "The username of the user"),
    OptSpec::value("password", Some('p'), "password", "PASSWORD", "The password of the user (visible to local users while it is being read; prefer --password-file or --password-stdin)"),
    OptSpec::value("password-file", None, "password_file", "PASSWORD_FILE", "Read the password from the first line of this file"),
    OptSpec::switch("password-stdin", None, "password_stdin", "Read the password from the first line of stdin"),
    OptSpec::value("run-as", None, "run_as", "RUN_AS", "Run tasks as this user (the worker must start as root)"),
    OptSpec::list("groups", Some('g'), "groups", "GROUPS", "The groups allowed to submit tasks to this worker, as name or name:read|write|admin"),
    OptSpec::list("tags", Some('t'), "tags", "TAGS", "The tags of this worker"),
    OptSpec::list("labels", Some('l'), "labels", "LABELS", "The labels of this worker"),
    OptSpec::value("log-path", None, "log_path", "LOG_PATH", "The log file path. If not specified, then the default rolling log file path would be used. If specified, then the log file would be exactly at the path specified"),
    OptSpec::switch("file-log", None, "file_log", "Enable logging to file"),
    OptSpec::switch("shared-log", None, "shared_log", "Log to a daily file shared by the workers of this machine, each line marked with the worker's id"),
    OptSpec::value("lifetime", None, "lifetime", "LIFETIME", "The lifetime of the worker to alive (e.g., 7d, 1year)"),
    OptSpec::switch("retain", None, "retain", "Keep the user's other tokens valid when logging in"),
    OptSpec::switch("skip-redis", None, "skip_redis", "Do not publish task states to Redis"),
];

const FOOTER: &str = "\
Every option can also be set in the [worker] table of a config file (keys as in
config.example.toml, e.g. polling_interval) or as an environment variable MITO_<KEY>
(MITO_COORDINATOR_ADDR). Later sources win: defaults, ~/.config/mitosis/config.toml,
--config (or ./config.toml), environment, command line. Lists take commas or repeats.

Each task runs as `/usr/bin/env ARGS...` in a process group of its own, with
MITO_TASK_UUID, MITO_RESULT_DIR, MITO_EXEC_DIR, MITO_RESOURCE_DIR, MITO_NEW_TASK and,
for a downstream task, MITO_UPSTREAM_TASK_UUID; the worker's own MITO_* variables are
removed. Working files live under $XDG_CACHE_HOME/mitosis/<worker id>/ (mode 0700).
Started as root, the worker runs each task in a PID namespace of its own (nothing of it
survives it, or the worker) and, with --run-as, as that user.";

/// A one-shot stop flag that also wakes every sleeper at once.
pub struct Stop {
    flag: AtomicBool,
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Stop {
    pub fn new() -> Stop {
        let (tx, rx) = bounded(1);
        Stop { flag: AtomicBool::new(false), tx: Mutex::new(Some(tx)), rx }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Dropping the sender wakes every `sleep`.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`; true if the stop came first.
    pub fn sleep(&self, d: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let _ = self.rx.recv_timeout(d);
        self.is_set()
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// The running task, as the other threads need to see it.
#[derive(Default)]
pub struct Running {
    pub uuid: Option<Uuid>,
    /// The task's process group while it exists.
    pub pgid: Option<i32>,
    /// The task's cgroup, if it has one.
    pub cgroup: Option<Arc<isolate::TaskCgroup>>,
}

/// State shared by every thread of the worker.
pub struct Shared {
    pub stop: Arc<Stop>,
    pub running: Mutex<Running>,
    /// Set by the heartbeat when a user cancelled the running task.
    pub cancel: AtomicBool,
    exiting: AtomicBool,
    /// Known once registered: for unregistering and removing the working directory.
    net: OnceLock<Arc<Net>>,
    root: OnceLock<PathBuf>,
}

impl Shared {
    fn new(stop: Arc<Stop>) -> Shared {
        Shared {
            stop,
            running: Mutex::new(Running::default()),
            cancel: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            net: OnceLock::new(),
            root: OnceLock::new(),
        }
    }

    pub fn current_task(&self) -> Option<Uuid> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid
    }

    fn begin(&self, uuid: Uuid) {
        self.cancel.store(false, Ordering::SeqCst);
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid = Some(uuid);
    }

    fn end(&self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid = None;
    }

    /// Stops everything and ends the process. With `unregister`, tells the coordinator
    /// first (which requeues the running task). Only the first caller does the work.
    fn exit(&self, code: i32, unregister: bool) -> ! {
        if self.exiting.swap(true, Ordering::SeqCst) {
            // Someone else is already on the way out; wait for them (bounded).
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(code);
        }
        let pgid = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // Under the lock: a task spawned after this sees the flag and does not start.
            self.stop.trigger();
            running.pgid
        };
        if let Some(pgid) = pgid {
            log::info!("stopping the running task's process group {pgid}");
            exec::stop_group(pgid, pgid, exec::GRACE, &self.stop);
        }
        // And whatever of it left the group.
        let cgroup = self.running.lock().unwrap_or_else(|p| p.into_inner()).cgroup.take();
        if let Some(cg) = cgroup {
            cg.remove();
        }
        isolate::kill_descendants(Duration::from_secs(3));
        if unregister {
            if let Some(net) = self.net.get() {
                match net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call() {
                    Ok(_) => log::info!("unregistered from the coordinator"),
                    Err(e) => log::warn!(
                        "could not unregister ({}); the coordinator will drop this worker when its heartbeat times out",
                        net::describe(&e)
                    ),
                }
            }
        }
        if let Some(root) = self.root.get() {
            let _ = std::fs::remove_dir_all(root);
        }
        log::info!("worker stopped");
        log::logger().flush();
        std::process::exit(code)
    }

    /// The coordinator no longer accepts this worker: stop the task and exit.
    pub fn force_exit(&self, why: &str) -> ! {
        log::warn!("{why}; exiting");
        self.exit(0, false)
    }
}

/// What the task loop needs.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub net: Arc<Net>,
    pub dirs: Dirs,
    pub states: state::Announcer,
    pub confine: exec::Confine,
}

/// Entry point of `mito worker`; returns the exit status.
pub fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito worker", SPECS, false, || {
        help_text(ABOUT, "mito worker [OPTIONS]", SPECS, FOOTER)
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cfg = match Layers::load("worker", WorkerConfig::KEYS, args.config.as_deref(), args.values)
        .and_then(|l| WorkerConfig::from_layers(&l).map(|c| (c, l.warnings)))
    {
        Ok(c) => c,
        Err(e) => return crate::opts::config_error("mito worker", &e),
    };
    let (cfg, warnings) = cfg;
    if let Err(e) = logging::init_late() {
        eprintln!("mito worker: {e}");
        return 1;
    }
    crate::opts::run_logged(&warnings, || run(cfg))
}

/// Where the log file goes, as worker_client.md §1.11 has it.
fn log_target(cfg: &WorkerConfig, id: Uuid) -> Option<(FileTarget, Option<String>)> {
    if !cfg.file_log {
        return None;
    }
    let default_dir = cache_dir().map(|d| d.join("mitosis").join("worker"));
    if cfg.shared_log {
        let (dir, prefix) = match &cfg.log_path {
            Some(p) => (
                p.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")),
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "workers.log".into()),
            ),
            None => (default_dir?, "workers.log".to_string()),
        };
        Some((FileTarget::DailyKeep { dir, prefix, keep: 3 }, Some(format!("[worker:{id}] "))))
    } else {
        let path = match &cfg.log_path {
            Some(p) => p.clone(),
            None => default_dir?.join(format!("{id}.log")),
        };
        Some((FileTarget::Exact(path), None))
    }
}

/// Registers, then serves tasks until a signal or a 401 ends the process.
pub fn run(mut cfg: WorkerConfig) -> Result<(), String> {
    exec::become_subreaper();
    // Before anything else: a task of the same uid must not read our memory or environ.
    isolate::harden();
    isolate::scrub_password_copies();
    if let Some(path) = &cfg.password_file {
        cfg.password = Some(isolate::read_password_file(path)?);
    } else if cfg.password_stdin {
        cfg.password = Some(isolate::read_password_stdin()?);
    }
    let confine = confinement(&cfg)?;
    let stop = Arc::new(Stop::new());
    let shared = Arc::new(Shared::new(stop.clone()));

    spawn_signal_thread(shared.clone())?;
    let retry_cap = cfg.polling_interval.min(Duration::from_secs(30));

    // Another login of the same user (a client, a worker starting beside this one) signs
    // out the token this one just got or loaded: the registration is then refused with
    // 401, and the answer is to log in again (or take the token that login saved), after a
    // pause so two such workers do not keep signing each other out. Only a wrong password
    // (or none to log in with) ends the start.
    let mut backoff = Backoff::new(Duration::from_millis(200), retry_cap.max(Duration::from_secs(1)));
    let mut refused: Option<String> = None;
    let (user, reg) = loop {
        let Some((user, user_token)) = obtain_credentials(&cfg, &stop, retry_cap, refused.as_deref())? else {
            return Ok(());
        };
        match register(&cfg, &user_token, &stop, retry_cap)? {
            Registered::Yes(reg) => break (user, reg),
            Registered::Stopped => return Ok(()),
            Registered::SignedOut => {
                let d = backoff.next_delay();
                log::warn!(
                    "registration refused with 401: the token of {user} was signed out (another login of the same user?); \
                     logging in again in {:.1}s",
                    d.as_secs_f64()
                );
                if stop.sleep(d) {
                    return Ok(());
                }
                refused = Some(user_token);
            }
        }
    };
    let id = reg.worker_id;
    let net = Arc::new(Net::new(&cfg.coordinator_addr, reg.token.clone(), stop.clone(), retry_cap));
    let _ = shared.net.set(net.clone());
    let top = cache_dir()
        .map(|d| d.join("mitosis"))
        .ok_or("cannot find a cache directory for the working files: set $XDG_CACHE_HOME or $HOME")?;
    let root = top.join(id.to_string());
    let _ = shared.root.set(root.clone());
    if let Some((target, prefix)) = log_target(&cfg, id) {
        if let Err(e) = logging::attach_file(target, prefix) {
            log::error!("{e}; logging to stderr only");
        }
    }
    log::info!("Worker registered with ID: {id} (as user {user})");
    let dirs = Dirs::new(root, confine.user.as_ref().map(|u| (u.uid, u.gid)));
    let checked = dirs
        .restrict(&top)
        .map_err(|e| format!("cannot create {} with mode 0700: {e}", top.display()))
        .and_then(|()| dirs.check_reachable());
    if let Err(e) = checked {
        let _ = net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call();
        return Err(e);
    }
    if let Err(e) = dirs.reset() {
        let _ = net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call();
        return Err(format!("cannot prepare the working directory: {e}"));
    }
    let states = match (&reg.redis_url, cfg.skip_redis) {
        (Some(url), false) => state::Announcer::connect(url),
        _ => state::Announcer::none(),
    };
    heartbeat::spawn(shared.clone(), net.clone(), cfg.heartbeat_interval)
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))?;
    log::info!("Worker is running");
    let ctx = Ctx { shared: shared.clone(), net, dirs, states, confine };
    serve(&ctx, cfg.polling_interval);
    // Only a stop gets here; the thread that stopped us finishes the exit.
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// How tasks are confined: as root, in a PID namespace and (with `run_as`) as that user.
fn confinement(cfg: &WorkerConfig) -> Result<exec::Confine, String> {
    let root = isolate::is_root();
    let user = match &cfg.run_as {
        Some(_) if !root => {
            return Err("run_as needs the worker to start as root (it switches to that user for each task); \
                 start it as root or leave run_as out"
                .into())
        }
        Some(name) => Some(isolate::TaskUser::lookup(name)?),
        None => None,
    };
    if root && user.is_none() {
        log::warn!("the worker runs as root and so do its tasks; set run_as to run them as an unprivileged user");
    }
    // Probe once: a cgroup made and removed here means each task can have one.
    let cgroup = isolate::TaskCgroup::create().map(|c| c.remove()).is_some();
    if cgroup {
        log::info!("each task runs in a cgroup of its own, killed as a whole when the task ends");
    }
    Ok(exec::Confine { user, pid_namespace: root, cgroup })
}

fn serve(ctx: &Ctx, polling_interval: Duration) {
    while !ctx.shared.stop.is_set() {
        isolate::reap_all();
        let outcome = match fetch::next(&ctx.net, polling_interval) {
            Ok(Some(t)) => task::handle(ctx, t),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            Err(CallError::Stopped) => return,
            Err(CallError::Unauthorized) => {
                ctx.shared.force_exit("the coordinator answered 401 (this worker was removed or its lifetime ended)")
            }
            Err(e) => {
                log::error!("fetching a task: {e}; next try in {}", humantime::format_duration(polling_interval));
                if ctx.shared.stop.sleep(polling_interval) {
                    return;
                }
            }
        }
    }
}

fn spawn_signal_thread(shared: Arc<Shared>) -> Result<(), String> {
    let signals = crate::signal::listen();
    std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || {
            let Ok(first) = signals.recv() else { return };
            log::info!(
                "received {}; stopping the task, unregistering and exiting (send it again to exit at once)",
                crate::signal::name(first)
            );
            let s = shared.clone();
            let spawned = std::thread::Builder::new().name("shutdown".into()).spawn(move || s.exit(0, true));
            if spawned.is_err() {
                shared.exit(0, true);
            }
            if let Ok(second) = signals.recv() {
                log::warn!("received {} again; exiting at once", crate::signal::name(second));
                if let Some(pgid) = shared.running.lock().unwrap_or_else(|p| p.into_inner()).pgid {
                    // SAFETY: killing the task's own process group.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                // One pass, no waiting: this exit is meant to be immediate.
                isolate::kill_descendants_once();
                std::process::exit(1);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

/// The user's token: cached and still valid, or from a fresh login; retried while the
/// coordinator is unreachable. None when stopped by a signal. `refused`: a token the
/// coordinator just refused, not worth trying again.
fn obtain_credentials(
    cfg: &WorkerConfig,
    stop: &Stop,
    cap: Duration,
    refused: Option<&str>,
) -> Result<Option<(String, String)>, String> {
    let path = match &cfg.credential_path {
        Some(p) => p.clone(),
        None => login::default_path().ok_or("cannot find the credentials file: set credential_path or $HOME")?,
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), cap);
    // After a sign-out, log in again keeping the current signature: signing the others out
    // once was the point of a login without `retain`; doing it again would sign out the
    // login that just signed this one out (two workers starting together would take turns).
    let retain = cfg.retain || refused.is_some();
    loop {
        match login::obtain(&cfg.coordinator_addr, &path, cfg.user.as_deref(), cfg.password.as_deref(), retain, refused)
        {
            Ok(c) => return Ok(Some(c)),
            Err(CredError::Fatal(m)) => return Err(m),
            Err(CredError::Unreachable(m)) => {
                let d = backoff.next_delay();
                log::warn!("{m}; retrying in {:.1}s", d.as_secs_f64());
                if stop.sleep(d) {
                    return Ok(None);
                }
            }
            // The coordinator is limiting failed logins for this user or address; the
            // password may well be right, so wait as asked instead of giving up.
            Err(CredError::RateLimited(wait, m)) => {
                log::warn!("{m}; retrying after {:.0}s as the coordinator asks (Retry-After)", wait.as_secs_f64());
                if stop.sleep(wait) {
                    return Ok(None);
                }
            }
        }
    }
}

/// How a registration ended, when it did not fail for good.
enum Registered {
    Yes(RegisterWorkerResp),
    /// Stopped by a signal.
    Stopped,
    /// 401: the user token is no longer valid.
    SignedOut,
}

fn register(cfg: &WorkerConfig, user_token: &str, stop: &Arc<Stop>, cap: Duration) -> Result<Registered, String> {
    let net = Net::new(&cfg.coordinator_addr, user_token.to_string(), stop.clone(), cap);
    let body = RegisterWorkerReq {
        tags: cfg.tags.iter().cloned().collect(),
        labels: cfg.labels.iter().cloned().collect(),
        groups: cfg.groups.iter().cloned().collect(),
        lifetime: cfg.lifetime,
    };
    match net.call_json("registering", None, || {
        net.request("POST", "/workers").set(crate::api::CONFIRMS_CLAIMS_HEADER, "true").send_json(&body)
    }) {
        Ok(r) => Ok(Registered::Yes(r)),
        Err(CallError::Stopped) => Ok(Registered::Stopped),
        Err(CallError::Unauthorized) => Ok(Registered::SignedOut),
        Err(e) => Err(format!("registration refused: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_tags_and_labels_take_commas_and_repeats() {
        let mut p = lexopt::Parser::from_args([
            "-g",
            "a,b:write",
            "--groups",
            "c:admin",
            "-t",
            "gpu",
            "-l",
            "x,y",
            "--lifetime",
            "1year",
        ]);
        let crate::opts::Parsed::Run(args) = crate::opts::parse_opts(&mut p, "mito worker", SPECS, false).unwrap()
        else {
            panic!("expected options")
        };
        let l = Layers::load("worker", WorkerConfig::KEYS, None, args.values).unwrap();
        let cfg = WorkerConfig::from_layers(&l).unwrap();
        assert_eq!(cfg.groups, vec!["a", "b:write", "c:admin"]);
        assert_eq!(cfg.tags, vec!["gpu"]);
        assert_eq!(cfg.labels, vec!["x", "y"]);
        assert!(cfg.lifetime.unwrap() > Duration::from_secs(364 * 86_400));
    }

    #[test]
    fn stop_wakes_sleepers_at_once() {
        let stop = Arc::new(Stop::new());
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            assert!(s.sleep(Duration::from_secs(30)));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.trigger();
        assert!(t.join().unwrap() < Duration::from_secs(5));
        assert!(stop.sleep(Duration::from_secs(30)), "an already-stopped sleep returns at once");
    }

    #[test]
    fn log_files_follow_file_log_shared_log_and_log_path() {
        let mut cfg = WorkerConfig::from_layers(&Layers::default()).unwrap();
        let id = Uuid::nil();
        assert!(log_target(&cfg, id).is_none());
        cfg.file_log = true;
        cfg.log_path = Some("/var/log/mito/w.log".into());
        assert!(
            matches!(log_target(&cfg, id), Some((FileTarget::Exact(p), None)) if p == std::path::Path::new("/var/log/mito/w.log"))
        );
        cfg.shared_log = true;
        match log_target(&cfg, id) {
            Some((FileTarget::DailyKeep { dir, prefix, keep }, Some(line))) => {
                assert_eq!((dir, prefix.as_str(), keep), (PathBuf::from("/var/log/mito"), "w.log", 3));
                assert_eq!(line, format!("[worker:{id}] "));
            }
            other => panic!("{other:?}"),
        }
    }
}
