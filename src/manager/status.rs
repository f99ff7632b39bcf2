//! `mito manager status`: one line per recorded worker (index, pid, alive or dead, worker
//! id, current task, uptime, log), then `Total: N` with N the live ones.
//!
//! The current task comes from the coordinator (`GET /workers/{id}`, with the token the
//! worker's user saved in the credentials file) when it answers within a few seconds;
//! otherwise from local facts: a worker with child processes is busy, one without is idle.

use super::record::{self, Entry};
use super::ManagerError;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// What is known of a worker's current task.
enum Task {
    /// From the coordinator.
    Running(uuid::Uuid),
    Idle,
    /// The coordinator does not know the worker (removed, or not registered).
    Unregistered,
    /// Local facts only: it has child processes, or none.
    LocallyBusy,
    LocallyIdle,
    /// Not running.
    None,
}

impl Task {
    fn show(&self) -> String {
        match self {
            Task::Running(u) => u.to_string(),
            Task::Idle => "idle".into(),
            Task::Unregistered => "unregistered".into(),
            Task::LocallyBusy => "busy".into(),
            Task::LocallyIdle => "idle?".into(),
            Task::None => "-".into(),
        }
    }
}

pub(super) fn status(state: &Path, as_json: bool, prune: bool) -> Result<(), ManagerError> {
    let mut entries = record::load_all(state);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(3)).build();
    let mut coordinator_reachable = true;
    let now = record::now_secs();
    let mut rows = Vec::new();
    let mut total = 0;
    for entry in entries.iter_mut() {
        entry.learn_worker_id();
        let alive = entry.alive();
        total += usize::from(alive);
        let task = if !alive {
            Task::None
        } else {
            ask_coordinator(&agent, entry, &mut coordinator_reachable).unwrap_or_else(|| local_task(entry))
        };
        let uptime = alive.then(|| now.saturating_sub(entry.record.started_at));
        rows.push((entry.clone(), alive, task, uptime));
    }
    if as_json {
        let workers: Vec<_> = rows
            .iter()
            .map(|(e, alive, task, uptime)| {
                let r = &e.record;
                json!({
                    "index": r.index, "pid": r.pid, "alive": alive, "worker_id": r.worker_id,
                    "task": task.show(), "uptime_secs": uptime, "started_at": r.started_at, "log": r.log,
                })
            })
            .collect();
        println!("{}", json!({"workers": workers, "total": total}));
    } else {
        for (e, alive, task, uptime) in &rows {
            let r = &e.record;
            println!(
                "worker {} pid {} {} id {} task {} uptime {} log {}",
                r.index,
                r.pid,
                if *alive { "alive" } else { "dead" },
                r.worker_id.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                task.show(),
                uptime.map(short_duration).unwrap_or_else(|| "-".into()),
                r.log.display()
            );
        }
        println!("Total: {total}");
    }
    if prune {
        let mut pruned = 0;
        for (e, alive, _, _) in &rows {
            if !alive {
                match std::fs::remove_dir_all(&e.dir) {
                    Ok(()) => pruned += 1,
                    Err(err) => eprintln!("mito manager status: cannot remove {}: {err}", e.dir.display()),
                }
            }
        }
        if !as_json {
            println!("Pruned {pruned} dead workers");
        }
    }
    Ok(())
}

/// The worker's task as its coordinator sees it; None when it cannot be asked (no token,
/// no answer: `reachable` then stays false for the other workers of this run).
fn ask_coordinator(agent: &ureq::Agent, entry: &Entry, reachable: &mut bool) -> Option<Task> {
    let r = &entry.record;
    let id = r.worker_id?;
    if !*reachable {
        return None;
    }
    let path = r.credential_path.clone().or_else(crate::config::default_credential_path)?;
    let (_, token) = crate::credentials::load(&path, r.user.as_deref())?;
    let url = format!("{}/workers/{id}", r.coordinator);
    match agent.get(&url).set("Authorization", &format!("Bearer {token}")).call() {
        Ok(resp) => {
            let body: crate::api::WorkerQueryResp = resp.into_json().ok()?;
            Some(body.info.assigned_task_id.map(Task::Running).unwrap_or(Task::Idle))
        }
        Err(ureq::Error::Status(404, _)) => Some(Task::Unregistered),
        Err(ureq::Error::Status(..)) => None,
        Err(ureq::Error::Transport(_)) => {
            *reachable = false;
            None
        }
    }
}

fn local_task(entry: &Entry) -> Task {
    if record::descendants(entry.record.pid).is_empty() {
        Task::LocallyIdle
    } else {
        Task::LocallyBusy
    }
}

/// `3d4h`, `2h5m`, `7m12s`, `40s`.
fn short_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptimes_are_short() {
        assert_eq!(super::short_duration(40), "40s");
        assert_eq!(super::short_duration(432), "7m12s");
        assert_eq!(super::short_duration(7500), "2h5m");
        assert_eq!(super::short_duration(3 * 86_400 + 4 * 3600 + 5), "3d4h");
    }
}
