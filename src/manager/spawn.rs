//! `mito manager spawn COUNT`: starts COUNT detached workers, records each, and waits a
//! little for them to register so their ids can be shown.

use super::launch::Launch;
use super::record::{self, Entry, Record};
use super::ManagerError;
use crate::private_files;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long `spawn` waits for its workers to register before it leaves them be.
const REGISTER_WAIT: Duration = Duration::from_secs(20);

pub(super) fn spawn(state: &Path, count: usize, launch: &Launch) -> Result<(), ManagerError> {
    let workers_dir = state.join("workers");
    private_files::create_dir_all(&workers_dir)
        .map_err(|e| ManagerError::State(format!("cannot create {}: {e}", workers_dir.display())))?;
    let indices = free_indices(&record::load_all(state), count);
    // Every worker's settings are checked before the first one starts.
    for &i in &indices {
        launch.config(i)?;
    }
    let mut started: Vec<(Entry, Child)> = Vec::new();
    for &i in &indices {
        match start_one(&workers_dir, i, launch) {
            Ok(s) => started.push(s),
            Err(e) => {
                eprintln!("mito manager spawn: {e}");
                break;
            }
        }
    }
    let deadline = Instant::now() + REGISTER_WAIT;
    let mut exited: Vec<(usize, String)> = Vec::new();
    loop {
        for (entry, child) in started.iter_mut() {
            if entry.record.worker_id.is_some() || exited.iter().any(|(i, _)| *i == entry.record.index) {
                continue;
            }
            entry.learn_worker_id();
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((entry.record.index, status.to_string()));
            }
        }
        let waiting = started
            .iter()
            .filter(|(e, _)| e.record.worker_id.is_none() && !exited.iter().any(|(i, _)| *i == e.record.index))
            .count();
        if waiting == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut alive = 0;
    for (entry, _) in &started {
        let r = &entry.record;
        if let Some((_, status)) = exited.iter().find(|(i, _)| *i == r.index) {
            eprintln!("worker {} (pid {}) exited at once ({status}); its log {}:", r.index, r.pid, r.log.display());
            eprintln!("{}", log_tail(&r.log));
            continue;
        }
        alive += 1;
        let id = r.worker_id.map(|u| u.to_string()).unwrap_or_else(|| "not registered yet".into());
        println!("worker {} pid {} id {id} log {}", r.index, r.pid, r.log.display());
    }
    println!("Spawned {alive} workers in total");
    if alive < count {
        return Err(ManagerError::Start(format!(
            "{} of {count} workers did not start; see their logs above",
            count - alive
        )));
    }
    Ok(())
}

/// The `count` lowest indices that no live recorded worker holds.
fn free_indices(entries: &[Entry], count: usize) -> Vec<usize> {
    let taken: Vec<usize> = entries.iter().filter(|e| e.alive()).map(|e| e.record.index).collect();
    (0..).filter(|i| !taken.contains(i)).take(count).collect()
}

fn start_one(workers_dir: &Path, index: usize, launch: &Launch) -> Result<(Entry, Child), ManagerError> {
    let (cfg, _) = launch.config(index)?;
    let name = format!("w{index}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = workers_dir.join(name);
    let cache = dir.join("cache");
    let log = dir.join("worker.log");
    let state_err =
        |what: &Path, e: std::io::Error| ManagerError::State(format!("cannot create {}: {e}", what.display()));
    private_files::create_dir_all(&cache).map_err(|e| state_err(&cache, e))?;
    let out = private_files::append(&log).map_err(|e| state_err(&log, e))?;
    let err = out.try_clone().map_err(|e| state_err(&log, e))?;
    let mut cmd = launch.command(index, &cache, false);
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    let mut child = cmd.spawn().map_err(|e| ManagerError::Start(format!("cannot start worker {index}: {e}")))?;
    let pid = child.id() as i32;
    // Our own unreaped child: its pid cannot be reused yet, so this is its start time.
    let start_time = proc_start_of_child(pid);
    launch.hand_over(&mut child);
    let entry = Entry {
        dir,
        record: Record {
            index,
            pid,
            start_time,
            started_at: record::now_secs(),
            worker_id: None,
            log,
            cache,
            coordinator: cfg.coordinator_addr,
            user: cfg.user,
            credential_path: cfg.credential_path,
        },
    };
    entry.save()?;
    Ok((entry, child))
}

/// The start time of a child not yet reaped, zombie or not.
fn proc_start_of_child(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().nth(19).and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// The last lines of a log, for a worker that died at once.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: usize, alive: bool) -> Entry {
        let me = std::process::id() as i32;
        let start = record::proc_start(me).unwrap();
        Entry {
            dir: "/nonexistent".into(),
            record: Record {
                index,
                pid: me,
                start_time: if alive { start } else { start + 1 },
                started_at: 0,
                worker_id: None,
                log: "/nonexistent/log".into(),
                cache: "/nonexistent/cache".into(),
                coordinator: "http://127.0.0.1:5000".into(),
                user: None,
                credential_path: None,
            },
        }
    }

    #[test]
    fn new_workers_take_the_lowest_indices_no_live_worker_holds() {
        let entries = [entry(0, true), entry(1, false), entry(2, true)];
        assert_eq!(free_indices(&entries, 3), vec![1, 3, 4]);
        assert_eq!(free_indices(&[], 2), vec![0, 1]);
    }
}
