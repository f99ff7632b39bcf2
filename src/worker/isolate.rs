//! Keeping the worker's secrets and processes out of a task's reach.
//!
//! ```ignore
//! isolate::harden();                         // not dumpable: /proc/<worker>/environ, mem closed
//! isolate::scrub_password_copies();          // -p / MITO_PASSWORD overwritten in memory
//! let user = isolate::TaskUser::lookup("nobody")?;
//! isolate::kill_descendants(Duration::from_secs(5));   // after every task
//! ```
//!
//! What a task could otherwise reach: the worker's environment (inherited, and readable in
//! `/proc/<worker>/environ` by the same uid), its command line (`/proc/<worker>/cmdline` is
//! world-readable), its memory, the credentials file, and — through `setsid` or a
//! double fork — a life after its own end. Everything here runs in the worker before a
//! fork; the code that runs between fork and exec lives in `exec.rs`.

use super::error::WorkerError;
use std::ffi::CString;
use std::time::{Duration, Instant};

/// Marks the worker not dumpable: a process of the same uid can no longer ptrace it or
/// read its `/proc/<pid>/environ`, `mem` or `fd`. Exec resets this for the task itself.
pub(super) fn harden() {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        log::warn!("cannot mark the worker non-dumpable: {}", std::io::Error::last_os_error());
    }
}

/// The password's copies that the kernel shows to others: the argument of `-p` /
/// `--password` in `/proc/<pid>/cmdline` (world-readable) and `MITO_PASSWORD=` in
/// `/proc/<pid>/environ`. Both live in the initial stack; overwriting them in place changes
/// what /proc shows. The value has been copied into the configuration by then.
pub(crate) fn scrub_password_copies() {
    argv::scrub();
    // SAFETY: `environ` is the process's NULL-terminated array of NUL-terminated strings;
    // we only overwrite bytes inside one string, keeping its length and terminator. No
    // other thread changes the environment (the worker never calls setenv).
    unsafe {
        let mut p = libc_environ();
        while !p.is_null() && !(*p).is_null() {
            scrub_after_prefix(*p, b"MITO_PASSWORD=");
            p = p.add(1);
        }
    }
}

extern "C" {
    static mut environ: *mut *mut libc::c_char;
}

/// The C library's `environ`.
///
/// # Safety
/// No other thread may change the environment while the caller walks the array.
unsafe fn libc_environ() -> *mut *mut libc::c_char {
    // SAFETY: reading the pointer value; the caller walks it.
    unsafe { std::ptr::addr_of!(environ).read() }
}

/// Overwrites with `*` what follows `prefix` in the C string `s`, if it starts with `prefix`.
///
/// # Safety
/// `s` must point to a writable NUL-terminated string.
unsafe fn scrub_after_prefix(s: *mut libc::c_char, prefix: &[u8]) -> bool {
    // SAFETY: per the contract, `s` is NUL-terminated; we stop at the NUL.
    unsafe {
        for (i, b) in prefix.iter().enumerate() {
            if *s.add(i) as u8 != *b {
                return false;
            }
        }
        let mut q = s.add(prefix.len());
        while *q != 0 {
            *q = b'*' as libc::c_char;
            q = q.add(1);
        }
    }
    true
}

/// The process's own argv, captured at start-up the way the standard library does it on
/// glibc (which passes argc/argv to `.init_array` functions).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod argv {
    use std::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

    static ARGC: AtomicIsize = AtomicIsize::new(0);
    static ARGV: AtomicPtr<*mut libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

    #[used]
    #[link_section = ".init_array.00099"]
    static CAPTURE: extern "C" fn(libc::c_int, *mut *mut libc::c_char, *mut *mut libc::c_char) = capture;

    extern "C" fn capture(argc: libc::c_int, argv: *mut *mut libc::c_char, _envp: *mut *mut libc::c_char) {
        ARGC.store(argc as isize, Ordering::Relaxed);
        ARGV.store(argv, Ordering::Relaxed);
    }

    /// Overwrites the value of `-p`, `-pVALUE`, `--password VALUE` and `--password=VALUE`.
    pub(super) fn scrub() {
        let argc = ARGC.load(Ordering::Relaxed);
        let argv = ARGV.load(Ordering::Relaxed);
        if argv.is_null() {
            return;
        }
        let mut next_is_value = false;
        for i in 1..argc {
            // SAFETY: argv holds argc valid, writable, NUL-terminated strings (the kernel's
            // copy on the initial stack); we only overwrite bytes before each terminator.
            unsafe {
                let a = *argv.offset(i);
                if a.is_null() {
                    break;
                }
                if next_is_value {
                    super::scrub_after_prefix(a, b"");
                    next_is_value = false;
                    continue;
                }
                let arg = std::ffi::CStr::from_ptr(a).to_bytes();
                if arg == b"--" {
                    break;
                }
                if arg == b"-p" || arg == b"--password" {
                    next_is_value = true;
                } else if !super::scrub_after_prefix(a, b"--password=") && arg.starts_with(b"-p") {
                    super::scrub_after_prefix(a, b"-p");
                }
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod argv {
    pub fn scrub() {}
}

/// The user a task runs as, resolved before any fork (getpwnam is not async-signal-safe).
#[derive(Debug, Clone)]
pub(crate) struct TaskUser {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: String,
    pub groups: Vec<libc::gid_t>,
}

impl TaskUser {
    /// Looks `name` up in the user database; also accepts a numeric uid.
    pub(crate) fn lookup(name: &str) -> Result<TaskUser, WorkerError> {
        let cname = CString::new(name).map_err(|_| WorkerError::RunAsNul { name: name.to_string() })?;
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: getpwnam_r/getpwuid_r fill `pwd` with pointers into `buf`, which outlives them.
        let (uid, gid, home) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            let mut rc = libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out);
            if out.is_null() {
                if let Ok(uid) = name.parse::<libc::uid_t>() {
                    rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out);
                }
            }
            if out.is_null() {
                let source = (rc != 0).then(|| std::io::Error::from_raw_os_error(rc));
                return Err(WorkerError::NoSuchUser { name: name.to_string(), source });
            }
            let home = if pwd.pw_dir.is_null() {
                "/".to_string()
            } else {
                std::ffi::CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned()
            };
            (pwd.pw_uid, pwd.pw_gid, home)
        };
        if uid == 0 {
            return Err(WorkerError::RunAsRoot { name: name.to_string() });
        }
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most that many.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc < 0 {
            groups = vec![gid];
        } else {
            groups.truncate(n.max(0) as usize);
        }
        Ok(TaskUser { name: name.to_string(), uid, gid, home, groups })
    }
}

/// Whether the worker runs with uid 0.
pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Every process below the worker, from /proc (pid, parent pid).
fn descendants(of: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        parent.push((pid, ppid));
    }
    let mut found = vec![of];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Kills and reaps every process below the worker: what escaped a task's process group
/// (setsid, double fork) is either still a descendant or was reparented to the worker, a
/// child subreaper. Called when no task runs, so every descendant is a leftover. Repeats
/// until none is left (a process may fork while we look), within `within`.
pub(super) fn kill_descendants(within: Duration) -> usize {
    let me = std::process::id() as i32;
    let start = Instant::now();
    let mut killed = 0;
    loop {
        let left = descendants(me);
        reap_all();
        if left.is_empty() {
            return killed;
        }
        for pid in &left {
            // SAFETY: signalling a process below us, found just now in /proc.
            if unsafe { libc::kill(*pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        if start.elapsed() >= within {
            log::error!("{} processes left by a task are still alive after SIGKILL: {left:?}", left.len());
            return killed;
        }
        std::thread::sleep(Duration::from_millis(20));
        reap_all();
    }
}

/// Sends SIGKILL once to every process below the worker, without waiting for them.
pub(super) fn kill_descendants_once() {
    for pid in descendants(std::process::id() as i32) {
        // SAFETY: signalling a process below us, found just now in /proc.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Reaps every child that has exited, without blocking.
pub(super) fn reap_all() {
    loop {
        let mut st = 0;
        // SAFETY: non-blocking waitpid on our own children.
        if unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// A cgroup v2 of the worker's own, below the worker's cgroup, that each task joins
/// between fork and exec. Whatever the task starts stays in it whatever session or parent
/// it ends up with, and `cgroup.kill` kills it all at once (Linux 5.14+). Used only where
/// the hierarchy is writable (root, or a delegated subtree); otherwise the /proc sweep
/// is what remains.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    dir: std::path::PathBuf,
    /// `<dir>/cgroup.procs`, ready for the child to open without allocating.
    pub procs: CString,
}

impl TaskCgroup {
    /// Creates `mito-worker-<pid>` below the worker's cgroup, after removing such
    /// directories left by workers that are gone. None when there is no writable cgroup v2
    /// with `cgroup.kill`.
    pub(crate) fn create() -> Option<TaskCgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        // Fields: id parent major:minor root mount-point options ... - fstype source ...
        let mount = mounts.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))?
        })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let own = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim().trim_start_matches('/').to_string();
        let parent = std::path::Path::new(&mount).join(own);
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix("mito-worker-").and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    // Empty by now (its tasks died with their worker); rmdir fails otherwise.
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let dir = parent.join(format!("mito-worker-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() && !dir.is_dir() {
            return None;
        }
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()?;
        log::debug!("the task runs in cgroup {}", dir.display());
        Some(TaskCgroup { dir, procs })
    }

    /// Kills every process in the cgroup and waits (bounded) until it is empty.
    pub(crate) fn kill_all(&self, within: Duration) {
        let empty =
            || std::fs::read_to_string(self.dir.join("cgroup.procs")).map(|t| t.trim().is_empty()).unwrap_or(true);
        if empty() {
            return;
        }
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            log::warn!("cannot kill the task's cgroup {}: {e}", self.dir.display());
            return;
        }
        let start = Instant::now();
        while !empty() && start.elapsed() < within {
            reap_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        reap_all();
    }

    /// Removes the cgroup (empty by then).
    pub(crate) fn remove(&self) {
        self.kill_all(Duration::from_secs(1));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Reads the password from the first line of `path` (at most 4 KiB).
pub(super) fn read_password_file(path: &std::path::Path) -> Result<String, WorkerError> {
    let f =
        std::fs::File::open(path).map_err(|source| WorkerError::PasswordFile { path: path.to_path_buf(), source })?;
    first_line(f, &format!("the password file {}", path.display()))
}

/// Reads the password from the first line of stdin (at most 4 KiB).
pub(crate) fn read_password_stdin() -> Result<String, WorkerError> {
    first_line(std::io::stdin().lock(), "stdin (--password-stdin)")
}

fn first_line(r: impl std::io::Read, what: &str) -> Result<String, WorkerError> {
    use std::io::Read;
    const MAX: u64 = 4096;
    let from = || what.to_string();
    let mut buf = Vec::new();
    r.take(MAX + 1).read_to_end(&mut buf).map_err(|source| WorkerError::PasswordRead { from: from(), source })?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if buf.len() as u64 > MAX && line.len() as u64 >= MAX {
        return Err(WorkerError::PasswordTooLong { from: from(), max: MAX });
    }
    let s = String::from_utf8(line.to_vec()).map_err(|_| WorkerError::PasswordNotUtf8 { from: from() })?;
    if s.is_empty() {
        return Err(WorkerError::PasswordEmpty { from: from() });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_the_first_line_bounded() {
        assert_eq!(first_line(&b"s3cret\nrest"[..], "x").unwrap(), "s3cret");
        assert_eq!(first_line(&b"s3cret\r\n"[..], "x").unwrap(), "s3cret");
        assert!(matches!(first_line(&b"\n"[..], "x"), Err(WorkerError::PasswordEmpty { .. })));
        let e = first_line(&vec![b'a'; 5000][..], "stdin").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the password in stdin is longer than 4096 bytes; put the password alone on the first line"
        );
    }

    #[test]
    fn scrubbing_keeps_the_length_and_the_prefix() {
        let mut s = *b"MITO_PASSWORD=abc\0";
        // SAFETY: a local NUL-terminated buffer.
        assert!(unsafe { scrub_after_prefix(s.as_mut_ptr().cast(), b"MITO_PASSWORD=") });
        assert_eq!(&s, b"MITO_PASSWORD=***\0");
        let mut t = *b"MITO_USER=abc\0";
        // SAFETY: as above.
        assert!(!unsafe { scrub_after_prefix(t.as_mut_ptr().cast(), b"MITO_PASSWORD=") });
    }
}
