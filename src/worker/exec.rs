//! Running one task's process: `/usr/bin/env args...` in a process group of its own, with the
//! `MITO_*` variables, its output streamed to files, and the whole group stopped on timeout,
//! cancellation or shutdown (SIGTERM, then SIGKILL after a grace period).
//!
//! ```ignore
//! let out = exec::run(&spec, &env, deadline, &shared)?;   // blocks until the group is gone
//! println!("raw wait status {}", out.status.into_raw());
//! ```
//!
//! The worker is a child subreaper (see [`become_subreaper`]), so the task's orphaned
//! descendants are reparented to it and reaped here instead of lingering as zombies.

use super::Shared;
use crate::api::TaskSpec;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a stopped task's group gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(10);

/// What the task sees: its directories and identity.
#[derive(Debug, Clone)]
pub struct TaskEnv {
    pub uuid: Uuid,
    pub upstream: Option<Uuid>,
    pub result_dir: PathBuf,
    pub exec_dir: PathBuf,
    pub resource_dir: PathBuf,
    pub new_task: PathBuf,
    /// Where stdout/stderr go with `terminal_output`.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    TimedOut,
    Cancelled,
    /// The worker is shutting down; the shutdown path owns the group now.
    Stopped,
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub ending: Ending,
}

/// Asks the kernel to hand us the task's orphans, so that we can reap them.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        log::debug!("cannot become a child subreaper: {}", std::io::Error::last_os_error());
    }
}

/// The command line and environment of a task, as documented in the seed.
pub fn command(spec: &TaskSpec, env: &TaskEnv) -> Command {
    let mut cmd = Command::new("/usr/bin/env");
    cmd.args(&spec.args);
    cmd.envs(&spec.envs);
    // Set last, so that the task cannot override them.
    cmd.env("MITO_TASK_UUID", env.uuid.to_string())
        .env("MITO_RESULT_DIR", &env.result_dir)
        .env("MITO_EXEC_DIR", &env.exec_dir)
        .env("MITO_RESOURCE_DIR", &env.resource_dir)
        .env("MITO_NEW_TASK", &env.new_task);
    match env.upstream {
        Some(u) => cmd.env("MITO_UPSTREAM_TASK_UUID", u.to_string()),
        None => cmd.env_remove("MITO_UPSTREAM_TASK_UUID"),
    };
    cmd.stdin(Stdio::null());
    // SAFETY: setpgid and prctl are async-signal-safe and touch no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // If the worker is killed outright, its direct child goes too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Spawns the task and waits until it and its whole process group are gone.
pub fn run(spec: &TaskSpec, env: &TaskEnv, timeout: Duration, shared: &Shared) -> std::io::Result<Outcome> {
    let mut cmd = command(spec, env);
    if spec.terminal_output {
        cmd.stdout(std::fs::File::create(&env.stdout)?);
        cmd.stderr(std::fs::File::create(&env.stderr)?);
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let pid = {
        // Under the lock, so that a shutdown either sees this group or stops us spawning it.
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        if shared.stop.is_set() {
            return Ok(Outcome { status: ExitStatus::from_raw(0), ending: Ending::Stopped });
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // We reap by pid ourselves; dropping the Child neither waits nor kills.
        drop(child);
        running.pgid = Some(pid);
        pid
    };
    let deadline = Instant::now() + timeout;
    let mut status = None;
    let ending = loop {
        if status.is_none() {
            status = reap(pid, pid);
        }
        if let Some(s) = status {
            log::debug!("task {} exited with raw status {}", env.uuid, s.into_raw());
            break Ending::Finished;
        }
        if shared.stop.is_set() {
            return Ok(Outcome { status: ExitStatus::from_raw(libc::SIGKILL), ending: Ending::Stopped });
        }
        if Instant::now() >= deadline {
            log::info!("task {} reached its timeout of {}; stopping its process group", env.uuid, humantime::format_duration(timeout));
            break Ending::TimedOut;
        }
        if shared.cancel.load(Ordering::SeqCst) {
            log::info!("task {} was cancelled; stopping its process group", env.uuid);
            break Ending::Cancelled;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever ended the run, nothing of the task outlives it.
    let last = stop_group(pid, pid, GRACE, &shared.stop);
    let status = status.or(last).unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
    if !shared.stop.is_set() {
        shared.running.lock().unwrap_or_else(|p| p.into_inner()).pgid = None;
    }
    Ok(Outcome { status, ending })
}

/// Reaps the process `pid` (or any zombie of group `pgid`) without blocking; returns the
/// status of `pid` if it was reaped.
fn reap(pid: i32, pgid: i32) -> Option<ExitStatus> {
    let mut found = None;
    for target in [pid, -pgid] {
        loop {
            let mut st = 0;
            // SAFETY: waitpid with WNOHANG on our own children.
            let r = unsafe { libc::waitpid(target, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == pid {
                found = Some(ExitStatus::from_raw(st));
            }
            if target == pid {
                break;
            }
        }
    }
    found
}

/// Whether any process of group `pgid` is still alive.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// SIGTERM to the group, SIGKILL after `grace`, and waits (bounded) until the group is
/// gone, reaping it. Returns the status of `pid` if it was reaped here.
pub fn stop_group(pid: i32, pgid: i32, grace: Duration, stop: &super::Stop) -> Option<ExitStatus> {
    let mut status = reap(pid, pgid);
    if !group_alive(pgid) {
        return status;
    }
    // SAFETY: signalling the task's own process group.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let start = Instant::now();
    let mut killed = false;
    while start.elapsed() < grace + Duration::from_secs(10) {
        if let Some(s) = reap(pid, pgid) {
            status = Some(s);
        }
        if !group_alive(pgid) {
            return status;
        }
        // A stopping worker does not wait out the whole grace period.
        let patience = if stop.is_set() { grace.min(Duration::from_secs(3)) } else { grace };
        if !killed && start.elapsed() >= patience {
            log::debug!("process group {pgid} outlived SIGTERM; sending SIGKILL");
            // SAFETY: as above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::error!("process group {pgid} is still alive after SIGKILL");
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> TaskEnv {
        let d = std::env::temp_dir();
        TaskEnv {
            uuid: Uuid::nil(),
            upstream: None,
            result_dir: d.join("r"),
            exec_dir: d.join("e"),
            resource_dir: d.join("res"),
            new_task: d.join("n.json"),
            stdout: d.join("o"),
            stderr: d.join("e2"),
        }
    }

    #[test]
    fn mito_variables_override_the_specs_envs() {
        let spec = TaskSpec {
            args: vec!["true".into()],
            envs: [("MITO_TASK_UUID".to_string(), "mine".to_string()), ("A".into(), "b".into())].into(),
            resources: vec![],
            terminal_output: false,
            watch: None,
        };
        let cmd = command(&spec, &env());
        let envs: Vec<_> = cmd.get_envs().collect();
        let get = |k: &str| envs.iter().rev().find(|(n, _)| *n == k).and_then(|(_, v)| *v).map(|v| v.to_string_lossy().into_owned());
        assert_eq!(get("MITO_TASK_UUID").as_deref(), Some(Uuid::nil().to_string().as_str()));
        assert_eq!(get("A").as_deref(), Some("b"));
        assert_eq!(cmd.get_program(), "/usr/bin/env");
    }
}
