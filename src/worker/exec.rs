//! Running one task's process: `/usr/bin/env args...` in a process group of its own, with the
//! `MITO_*` variables, its output streamed to files, and the whole group stopped on timeout,
//! cancellation or shutdown (SIGTERM, then SIGKILL after a grace period).
//!
//! ```ignore
//! let out = exec::run(&spec, &env, deadline, &shared, &confine)?;   // blocks until the group is gone
//! println!("raw wait status {}", out.status.into_raw());
//! ```
//!
//! The worker is a child subreaper (see [`become_subreaper`]), so the task's orphaned
//! descendants are reparented to it, and killed and reaped after the task. As root, the
//! task also runs under a small init in a PID namespace of its own (see `child`), and,
//! where a cgroup v2 is writable, in a cgroup of its own.

use super::isolate::{TaskCgroup, TaskUser};
use super::Shared;
use crate::api::TaskSpec;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a stopped task's group gets between SIGTERM and SIGKILL.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// What the task sees: its directories and identity.
#[derive(Debug, Clone)]
pub(super) struct TaskEnv {
    pub uuid: Uuid,
    pub upstream: Option<Uuid>,
    pub result_dir: PathBuf,
    pub exec_dir: PathBuf,
    pub resource_dir: PathBuf,
    pub new_task: PathBuf,
    /// Where stdout/stderr go with `terminal_output`.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The worker's `--env` settings, applied before the task's own `envs`.
    pub worker_env: Vec<(String, String)>,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    Finished,
    TimedOut,
    Cancelled,
    /// The worker is shutting down; the shutdown path owns the group now.
    Stopped,
}

#[derive(Debug)]
pub(super) struct Outcome {
    pub status: ExitStatus,
    pub ending: Ending,
}

/// Asks the kernel to hand us the task's orphans, so that we can reap them.
pub(super) fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        log::debug!("cannot become a child subreaper: {}", std::io::Error::last_os_error());
    }
}

/// How a task is confined, decided once at start-up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Confine {
    /// Switch to this user before exec (the worker runs as root).
    pub user: Option<TaskUser>,
    /// Run the task under a small init in a PID namespace of its own (needs root).
    pub pid_namespace: bool,
    /// Each task gets a cgroup of its own (a writable cgroup v2 with `cgroup.kill` was found).
    pub cgroup: bool,
}

/// The command line and environment of a task, as the README documents them.
pub(super) fn command(spec: &TaskSpec, env: &TaskEnv, confine: &Confine, cgroup: Option<&TaskCgroup>) -> Command {
    let mut cmd = Command::new("/usr/bin/env");
    cmd.args(&spec.args);
    // The worker's own settings (MITO_USER, MITO_PASSWORD, MITO_PASSWORD_FILE, ...) are
    // its owner's, not the task's: none of them is inherited.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MITO_") {
            cmd.env_remove(k);
        }
    }
    if let Some(u) = &confine.user {
        cmd.env("HOME", &u.home).env("USER", &u.name).env("LOGNAME", &u.name);
        // The worker's own directory is not the task user's: start in the task's exec dir.
        cmd.current_dir(&env.exec_dir);
    }
    cmd.envs(env.worker_env.iter().map(|(k, v)| (k, v)));
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
    let ids = confine.user.as_ref().map(|u| (u.uid, u.gid, u.groups.clone()));
    let pid_namespace = confine.pid_namespace;
    let procs = cgroup.map(|c| c.procs.clone());
    let init_grace = GRACE.saturating_sub(Duration::from_secs(2));
    // SAFETY: the closure runs between fork and exec, so it only makes async-signal-safe
    // calls and allocates nothing (`ids` was built before the fork); see `child::setup`.
    unsafe {
        cmd.pre_exec(move || {
            child::setup(
                pid_namespace,
                ids.as_ref().map(|(u, g, gs)| (*u, *g, gs.as_slice())),
                procs.as_deref(),
                init_grace,
            )
        });
    }
    cmd
}

/// What runs in the forked child before exec. Everything here must be async-signal-safe:
/// raw syscalls only, no allocation, no locks, no logging.
mod child {
    use std::io::Error;
    use std::time::Duration;

    type Ids<'a> = (libc::uid_t, libc::gid_t, &'a [libc::gid_t]);

    /// In the spawned child C: a process group of its own, death with the worker, then —
    /// when it can — a PID namespace. With one, C forks T (pid 1 of the namespace), T forks
    /// U, and only U returns here to exec the task. When U ends, T asks what is left in the
    /// namespace to stop, waits up to `grace`, and exits; the kernel then kills whatever
    /// remains in the namespace, setsid or not. C outlives T and exits with U's status, so
    /// the worker sees the task's own status. If the worker dies, C dies (parent-death
    /// signal), T dies with C, and the namespace with T.
    pub(super) fn setup(
        pid_namespace: bool,
        ids: Option<Ids>,
        cgroup_procs: Option<&std::ffi::CStr>,
        grace: Duration,
    ) -> std::io::Result<()> {
        // SAFETY (whole function): raw syscalls on our own process and on local buffers.
        unsafe {
            if libc::setpgid(0, 0) != 0 {
                return Err(Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(path) = cgroup_procs {
                // Writing "0" moves the writer; its descendants are born inside. A failure
                // only loses this backstop, so it is not an error.
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            if !pid_namespace || libc::unshare(libc::CLONE_NEWPID) != 0 {
                // No namespace: the worker's /proc sweep after the task is the backstop.
                drop_privileges(ids)?;
                return Ok(());
            }
            let mut fds = [0 as libc::c_int; 2];
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(Error::last_os_error());
            }
            let t = libc::fork();
            if t < 0 {
                return Err(Error::last_os_error());
            }
            if t == 0 {
                init(fds, ids, grace)
            } else {
                proxy(t, fds)
            }
        }
    }

    /// Gives up root for the task user: groups, then gid, then uid (in that order, since
    /// each step needs the privilege the next one drops). Re-arms the parent-death signal,
    /// which a credential change clears.
    ///
    /// # Safety
    /// Only between fork and exec in the child: async-signal-safe calls, no allocation.
    unsafe fn drop_privileges(ids: Option<Ids>) -> std::io::Result<()> {
        let Some((uid, gid, groups)) = ids else {
            return Ok(());
        };
        // SAFETY: `groups` was allocated before the fork and is only read.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        Ok(())
    }

    /// Closes every descriptor from 3 up except `keep`. Among them is the pipe on which the
    /// standard library learns that exec happened: only U may hold it, or `spawn` would
    /// wait for C and T to end.
    ///
    /// # Safety
    /// Only between fork and exec in the child: async-signal-safe calls, no allocation.
    unsafe fn close_all_but(keep: libc::c_int) {
        // SAFETY: close_range on our own descriptor table.
        unsafe {
            if keep > 3 {
                libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
            }
            libc::syscall(libc::SYS_close_range, (keep.max(2) + 1) as u32, u32::MAX, 0u32);
        }
    }

    /// The worker's handlers would write into its signal pipe from here: back to default.
    /// For T, pid 1 of its namespace, default means these signals are ignored.
    ///
    /// # Safety
    /// Only between fork and exec in the child: async-signal-safe calls, no allocation.
    unsafe fn default_signals() {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: signal(2) with SIG_DFL.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }

    fn now() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime into a local struct.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// T: pid 1 of the namespace. Never returns to the caller except in U.
    ///
    /// # Safety
    /// Only between fork and exec in the child: async-signal-safe calls, no allocation.
    unsafe fn init(fds: [libc::c_int; 2], ids: Option<Ids>, grace: Duration) -> std::io::Result<()> {
        // SAFETY (whole function): raw syscalls; `fds` are ours.
        unsafe {
            libc::close(fds[0]);
            default_signals();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let u = libc::fork();
            if u < 0 {
                libc::_exit(127);
            }
            if u == 0 {
                libc::close(fds[1]);
                drop_privileges(ids)?;
                return Ok(());
            }
            close_all_but(fds[1]);
            let mut status = 0;
            loop {
                let mut st = 0;
                let r = libc::waitpid(-1, &mut st, 0);
                if r == u {
                    status = st;
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            libc::write(fds[1], (&status as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>());
            // What the task left behind gets SIGTERM and, like a group, a grace period.
            libc::kill(-1, libc::SIGTERM);
            let until = now() + grace;
            while now() < until {
                let mut st = 0;
                let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if r < 0 {
                    break; // ECHILD: the namespace is empty.
                }
                if r == 0 {
                    let pause = libc::timespec { tv_sec: 0, tv_nsec: 20_000_000 };
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
            }
            // pid 1 leaving kills everything else in the namespace.
            libc::_exit(0)
        }
    }

    /// C: waits for T, then ends the way U ended. Ignores the termination signals sent to
    /// the task's group so that it outlives T (only SIGKILL ends it early, and then T and
    /// the namespace go with it).
    ///
    /// # Safety
    /// Only between fork and exec in the child: async-signal-safe calls, no allocation.
    unsafe fn proxy(t: libc::pid_t, fds: [libc::c_int; 2]) -> std::io::Result<()> {
        // SAFETY (whole function): raw syscalls; `fds` are ours.
        unsafe {
            libc::close(fds[1]);
            close_all_but(fds[0]);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut status: libc::c_int = 0;
            let n = loop {
                let n =
                    libc::read(fds[0], (&mut status as *mut libc::c_int).cast(), std::mem::size_of::<libc::c_int>());
                if n >= 0 || *libc::__errno_location() != libc::EINTR {
                    break n;
                }
            };
            loop {
                let mut st = 0;
                let r = libc::waitpid(t, &mut st, 0);
                if r == t || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            if n != std::mem::size_of::<libc::c_int>() as isize {
                libc::_exit(127);
            }
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                libc::signal(sig, libc::SIG_DFL);
                libc::kill(libc::getpid(), sig);
                libc::_exit(128 + sig);
            }
            libc::_exit(libc::WEXITSTATUS(status))
        }
    }
}

/// Spawns the task and waits until it and its whole process group are gone.
pub(super) fn run(
    spec: &TaskSpec,
    env: &TaskEnv,
    timeout: Duration,
    shared: &Shared,
    confine: &Confine,
) -> std::io::Result<Outcome> {
    let cgroup = if confine.cgroup { TaskCgroup::create().map(std::sync::Arc::new) } else { None };
    let mut cmd = command(spec, env, confine, cgroup.as_deref());
    if spec.terminal_output {
        let private = |p: &std::path::Path| {
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(p)
        };
        cmd.stdout(private(&env.stdout)?);
        cmd.stderr(private(&env.stderr)?);
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let pid = {
        // Under the lock, so that a shutdown either sees this group or stops us spawning it.
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        if shared.shutdown.is_set() {
            return Ok(Outcome { status: ExitStatus::from_raw(0), ending: Ending::Stopped });
        }
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // We reap by pid ourselves; dropping the Child neither waits nor kills.
        drop(child);
        running.pgid = Some(pid);
        running.cgroup = cgroup.clone();
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
        if shared.shutdown.is_set() {
            return Ok(Outcome { status: ExitStatus::from_raw(libc::SIGKILL), ending: Ending::Stopped });
        }
        if Instant::now() >= deadline {
            log::info!(
                "task {} reached its timeout of {}; stopping its process group",
                env.uuid,
                humantime::format_duration(timeout)
            );
            break Ending::TimedOut;
        }
        if shared.cancel.load(Ordering::SeqCst) {
            log::info!("task {} was cancelled; stopping its process group", env.uuid);
            break Ending::Cancelled;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever ended the run, nothing of the task outlives it: first its group, then
    // anything that left the group (setsid, double fork) and so is still below us.
    let last = stop_group(pid, pid, GRACE, &shared.shutdown);
    if let Some(cg) = &cgroup {
        cg.remove();
    }
    let strays = super::isolate::kill_descendants(Duration::from_secs(5));
    if strays > 0 {
        log::info!("task {}: killed {strays} processes that had left its process group", env.uuid);
    }
    let status = status.or(last).unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
    if !shared.shutdown.is_set() {
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        running.pgid = None;
        running.cgroup = None;
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
pub(super) fn stop_group(pid: i32, pgid: i32, grace: Duration, shutdown: &super::Shutdown) -> Option<ExitStatus> {
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
        let patience = if shutdown.is_set() { grace.min(Duration::from_secs(3)) } else { grace };
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
            worker_env: vec![("A".into(), "worker".into()), ("B".into(), "worker".into())],
        }
    }

    #[test]
    fn mito_variables_override_the_specs_envs_which_override_the_workers() {
        let spec = TaskSpec {
            args: vec!["true".into()],
            envs: [("MITO_TASK_UUID".to_string(), "mine".to_string()), ("A".into(), "b".into())].into(),
            resources: vec![],
            terminal_output: false,
            watch: None,
        };
        let cmd = command(&spec, &env(), &Confine::default(), None);
        let envs: Vec<_> = cmd.get_envs().collect();
        let get = |k: &str| {
            envs.iter().rev().find(|(n, _)| *n == k).and_then(|(_, v)| *v).map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("MITO_TASK_UUID").as_deref(), Some(Uuid::nil().to_string().as_str()));
        assert_eq!(get("A").as_deref(), Some("b"));
        assert_eq!(get("B").as_deref(), Some("worker"));
        assert_eq!(cmd.get_program(), "/usr/bin/env");
    }
}
