//! `mito manager kill [--force] [IDS...]`: SIGTERM to exactly the recorded workers that
//! still run (all, or those named by pid or worker id), then a wait for each to stop the
//! way a worker stops (task stopped and requeued, unregistered). With `--force`, whatever
//! is left when the wait ends gets SIGKILL, the worker's task processes with it.
//!
//! A process is signalled only while its pid and start time match a record, so a pid the
//! kernel has since given to another process is never touched, and neither is any process
//! the manager did not start, whatever its command line says.

use super::record::{self, Entry};
use super::ManagerError;
use std::path::Path;
use std::time::{Duration, Instant};

pub(super) fn kill(state: &Path, ids: &[String], timeout: Duration, force: bool) -> Result<(), ManagerError> {
    let entries: Vec<Entry> = record::load_all(state).into_iter().filter(Entry::alive).collect();
    let mut unknown = Vec::new();
    let chosen: Vec<Entry> = if ids.is_empty() {
        entries
    } else {
        for id in ids {
            if !entries.iter().any(|e| names(e, id)) {
                unknown.push(id.clone());
            }
        }
        entries.into_iter().filter(|e| ids.iter().any(|id| names(e, id))).collect()
    };
    for id in &unknown {
        eprintln!("mito manager kill: no running worker recorded here has pid or worker id {id:?}");
    }
    if chosen.is_empty() {
        println!("No mito workers found to kill");
        return if unknown.is_empty() { Ok(()) } else { Err(ManagerError::NotFound("nothing was stopped".into())) };
    }
    for e in &chosen {
        record::signal_verified(e.record.pid, e.record.start_time, libc::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while chosen.iter().any(Entry::alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut left: Vec<&Entry> = chosen.iter().filter(|e| e.alive()).collect();
    if force && !left.is_empty() {
        for e in &left {
            // The task processes first, while the worker still holds them as its
            // descendants: once it is gone they would be anyone's orphans.
            let below = record::descendants(e.record.pid);
            record::signal_verified(e.record.pid, e.record.start_time, libc::SIGKILL);
            for (pid, start) in below {
                record::signal_verified(pid, start, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while left.iter().any(|e| e.alive()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        left.retain(|e| e.alive());
    }
    for e in &chosen {
        let r = &e.record;
        let id = r.worker_id.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        let how = if left.iter().any(|l| l.record.pid == r.pid) { "still running" } else { "stopped" };
        println!("worker {} pid {} id {id}: {how}", r.index, r.pid);
    }
    if !left.is_empty() {
        let secs = timeout.as_secs();
        return Err(ManagerError::StillRunning(format!(
            "{} workers did not stop within {secs}s; wait longer (--timeout) or add --force to SIGKILL them",
            left.len()
        )));
    }
    if ids.is_empty() {
        println!("All mito workers have been killed");
    } else {
        println!("Killed {} mito workers", chosen.len());
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ManagerError::NotFound(format!("{} of the named workers were not found", unknown.len())))
    }
}

/// Whether `id` names this worker: its pid, or its worker id.
fn names(e: &Entry, id: &str) -> bool {
    let r = &e.record;
    id.parse::<i32>().is_ok_and(|p| p == r.pid) || r.worker_id.is_some_and(|w| w.to_string() == id.to_lowercase())
}
