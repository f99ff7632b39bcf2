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
//!
//! Exit statuses (a supervisor such as `mito manager run` restarts on the others):
//! 0 stopped by SIGINT/SIGTERM, 1 a failure (or a second signal), 2 a command-line or
//! configuration mistake, [`EXIT_REMOVED`] the coordinator no longer accepts this worker.

// ureq's error type is large; it only travels one call up, on the retry path.
#![allow(clippy::result_large_err)]

mod artifacts;
mod error;
mod exec;
mod fetch;
mod heartbeat;
mod isolate;
mod login;
mod net;
mod register;
mod serve;
mod shared;
mod shutdown;
mod state;
mod task;

pub(crate) use error::WorkerError;
pub(crate) use isolate::{read_password_stdin, scrub_password_copies};
pub(crate) use serve::TaskRunner;

/// The exit status of a worker the coordinator answered 401: it was removed, or its
/// lifetime ended. Starting it again would undo the removal, so supervisors do not.
pub(crate) const EXIT_REMOVED: i32 = 3;
pub(crate) use shared::{Shared, Shutdown};

use crate::config::worker::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_POLLING_INTERVAL};
use crate::config::{cache_dir, concat_str, Layers, WorkerConfig, DEFAULT_COORDINATOR_ADDR};
use crate::logging::{self, FileTarget};
use crate::opts::{help_text, parse_mode, OptSpec};
use artifacts::Dirs;
use net::Net;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const ABOUT: &str = "Run a mitosis worker";

/// The worker's options; `mito manager` takes them too and passes them on.
pub(crate) const SPECS: &[OptSpec] = &[
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
    OptSpec::repeated("env", Some('e'), "env", "NAME=VALUE", "Set this variable in every task's environment (repeat for more; a task's own envs win)"),
    OptSpec::value("ca-file", None, "ca_file", "CA_FILE", "A PEM file of CA certificates to trust besides the system's, for https coordinators and object storage"),
];

const FOOTER: &str = "\
Every option can also be set in the [worker] table of a config file (keys as in
config.example.toml, e.g. polling_interval) or as an environment variable MITO_<KEY>
(MITO_COORDINATOR_ADDR). Later sources win: defaults, ~/.config/mitosis/config.toml,
--config (or ./config.toml), environment, command line. Lists take commas or repeats.

Each task runs as `/usr/bin/env ARGS...` in a process group of its own, with
MITO_TASK_UUID, MITO_RESULT_DIR, MITO_EXEC_DIR, MITO_RESOURCE_DIR, MITO_NEW_TASK and,
for a downstream task, MITO_UPSTREAM_TASK_UUID; the worker's own MITO_* variables are
removed, --env settings added. Working files live under $XDG_CACHE_HOME/mitosis/<worker id>/ (mode 0700).
Started as root, the worker runs each task in a PID namespace of its own (nothing of it
survives it, or the worker) and, with --run-as, as that user.";

/// Entry point of `mito worker`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
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

/// Where the log file goes: none without file_log; with shared_log, a daily file (the last 3 kept)
/// and shared by the workers of this machine; else one file per worker, or exactly log_path.
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
pub(crate) fn run(mut cfg: WorkerConfig) -> Result<(), WorkerError> {
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
    let tls = crate::tls::Tls::new(cfg.ca_file.as_deref(), |m| log::warn!("{m}")).map_err(WorkerError::CaFile)?;
    let agent = net::agent(&tls);
    let shutdown = Arc::new(Shutdown::new());
    let shared = Arc::new(Shared::new(shutdown.clone()));

    shutdown::spawn_signal_thread(shared.clone())?;
    let retry_cap = cfg.polling_interval.min(Duration::from_secs(30));

    let Some((user, reg)) = register::log_in_and_register(&agent, &cfg, &shutdown, retry_cap)? else {
        return Ok(());
    };
    let id = reg.worker_id;
    let net = Arc::new(Net::new(agent, &cfg.coordinator_addr, reg.token.clone(), shutdown.clone(), retry_cap));
    let _ = shared.net.set(net.clone());
    let top = cache_dir().map(|d| d.join("mitosis")).ok_or(WorkerError::NoCacheDir)?;
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
        .map_err(|source| WorkerError::CacheDir { path: top.clone(), source })
        .and_then(|()| dirs.check_reachable());
    if let Err(e) = checked {
        let _ = net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call();
        return Err(e);
    }
    if let Err(e) = dirs.reset() {
        let _ = net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call();
        return Err(WorkerError::WorkDir(e));
    }
    let states = match (&reg.redis_url, cfg.skip_redis) {
        (Some(url), false) => state::StatePublisher::connect(url),
        _ => state::StatePublisher::none(),
    };
    heartbeat::spawn(shared.clone(), net.clone(), cfg.heartbeat_interval)
        .map_err(|source| WorkerError::Thread { name: "heartbeat", source })?;
    log::info!("Worker is running");
    let runner = TaskRunner { shared: shared.clone(), net, dirs, states, confine, env: cfg.env };
    serve::serve(&runner, cfg.polling_interval);
    // Only a stop gets here; the thread that stopped us finishes the exit.
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// How tasks are confined: as root, in a PID namespace and (with `run_as`) as that user.
fn confinement(cfg: &WorkerConfig) -> Result<exec::Confine, WorkerError> {
    let root = isolate::is_root();
    let user = match &cfg.run_as {
        Some(_) if !root => return Err(WorkerError::RunAsNeedsRoot),
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
