//! What the manager knows about the workers it started: one record per worker in the state
//! directory, and the `/proc` facts that tell whether a recorded process is still that worker.
//!
//! ```text
//! <state dir>/workers/w0-1a2b3c4d/record.json   pid, start time, index, worker id, ...
//!                                 worker.log    the worker's stdout and stderr
//!                                 cache/        its $XDG_CACHE_HOME
//! ```
//!
//! A pid alone names a process only until it exits: the kernel hands the number out again.
//! So every record keeps the process's start time (field 22 of `/proc/<pid>/stat`, in
//! clock ticks since boot), and a recorded process counts as alive only while a process
//! with that pid and that start time exists. Nothing is ever signalled otherwise.

use super::ManagerError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// One worker the manager started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// `{i}` of this worker: the lowest index no live recorded worker had at its start.
    pub index: usize,
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` when it was started.
    pub start_time: u64,
    /// Unix seconds at its start.
    pub started_at: u64,
    /// Learned from its log once it has registered.
    pub worker_id: Option<Uuid>,
    pub log: PathBuf,
    pub cache: PathBuf,
    /// Where to ask about it, and as whom (the token is the one the worker saved).
    pub coordinator: String,
    pub user: Option<String>,
    pub credential_path: Option<PathBuf>,
}

/// A record and the directory it lives in.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub dir: PathBuf,
    pub record: Record,
}

impl Entry {
    /// Whether the recorded process still runs (same pid, same start time, not a zombie).
    pub(super) fn alive(&self) -> bool {
        proc_start(self.record.pid) == Some(self.record.start_time)
    }

    /// Writes the record through a temp file renamed into place, 0600.
    pub(super) fn save(&self) -> Result<(), ManagerError> {
        let text = serde_json::to_string_pretty(&self.record).expect("a record serializes");
        let tmp = self.dir.join("record.json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = crate::private_files::create_new(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join("record.json"))
        };
        write()
            .map_err(|e| ManagerError::State(format!("cannot write {}: {e}", self.dir.join("record.json").display())))
    }

    /// Learns the worker id from the log, once the worker has registered; saves it.
    pub(super) fn learn_worker_id(&mut self) {
        if self.record.worker_id.is_some() {
            return;
        }
        if let Some(id) = registered_id(&self.record.log) {
            self.record.worker_id = Some(id);
            if let Err(e) = self.save() {
                eprintln!("mito manager: {e}");
            }
        }
    }
}

/// `$XDG_STATE_HOME/mitosis/manager` (else `~/.local/state/mitosis/manager`), or `given`.
pub(super) fn state_dir(given: Option<&str>) -> Result<PathBuf, ManagerError> {
    if let Some(g) = given {
        return Ok(PathBuf::from(g));
    }
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        _ => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/state"),
            None => {
                return Err(ManagerError::State(
                    "cannot find a state directory: set $XDG_STATE_HOME or $HOME, or pass --state-dir".into(),
                ))
            }
        },
    };
    Ok(base.join("mitosis").join("manager"))
}

/// Every record under `state`, in index order; unreadable ones are reported and skipped.
pub(super) fn load_all(state: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(state.join("workers")) else { return out };
    for d in dirs.flatten() {
        let dir = d.path();
        let file = dir.join("record.json");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        match serde_json::from_str::<Record>(&text) {
            Ok(record) => out.push(Entry { dir, record }),
            Err(e) => eprintln!("mito manager: ignoring {}: {e}", file.display()),
        }
    }
    out.sort_by_key(|e| (e.record.index, e.record.started_at));
    out
}

/// The worker id in a worker's log: its "Worker registered with ID: <uuid>" line, in the
/// first 256 KiB (registration is among the first things a worker logs).
pub(super) fn registered_id(log: &Path) -> Option<Uuid> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(log).ok()?.take(256 * 1024).read_to_end(&mut buf).ok()?;
    String::from_utf8_lossy(&buf).lines().find_map(id_in_line)
}

/// The uuid of a "Worker registered with ID: <uuid>" log line.
pub(super) fn id_in_line(line: &str) -> Option<Uuid> {
    let rest = line.split("Worker registered with ID: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a live process; None if there is no such
/// process or it is a zombie (it has exited, only its exit status is left).
pub(super) fn proc_start(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, start, _ppid) = parse_stat(&stat)?;
    (state != 'Z' && state != 'X').then_some(start)
}

/// State (field 3), start time (field 22) and parent pid (field 4) from a `stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields count from its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start, ppid))
}

/// Every live descendant of `pid` with its start time, children before grandchildren.
pub(super) fn descendants(pid: i32) -> Vec<(i32, u64)> {
    let mut all: Vec<(i32, i32, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            if let Some((state, start, ppid)) = parse_stat(&stat) {
                if state != 'Z' && state != 'X' {
                    all.push((p, ppid, start));
                }
            }
        }
    }
    let mut found: Vec<(i32, u64)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, start) in &all {
            if *ppid == parent && !found.iter().any(|(f, _)| f == p) {
                found.push((*p, *start));
                frontier.push(*p);
            }
        }
    }
    found
}

/// Sends `sig` to `pid` only if it is still the process that started at `start`.
/// Returns whether the signal was sent.
pub(super) fn signal_verified(pid: i32, start: u64, sig: libc::c_int) -> bool {
    if proc_start(pid) != Some(start) {
        return false;
    }
    // SAFETY: kill(2) on a pid just checked to be the recorded process; the window between
    // the check and the call is far shorter than the time the kernel takes to reuse a pid.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Seconds since the Unix epoch.
pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(parse_stat(line), Some(('S', 987654, 1)));
        let me = std::process::id() as i32;
        assert!(proc_start(me).is_some());
        assert_eq!(proc_start(0), None);
    }

    #[test]
    fn the_worker_id_comes_from_the_registration_line() {
        let id = Uuid::new_v4();
        let line = format!("05:00:01 [INFO] Worker registered with ID: {id} (as user alice)");
        assert_eq!(id_in_line(&line), Some(id));
        assert_eq!(id_in_line("Worker registered with ID: nonsense"), None);
        assert_eq!(id_in_line("Worker is running"), None);
    }

    #[test]
    fn descendants_of_this_process_include_a_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(std::process::id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.iter().any(|(p, _)| *p == child.id() as i32), "{found:?}");
    }
}
