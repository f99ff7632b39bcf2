//! The heartbeat thread: tells the coordinator this worker is alive, every
//! `heartbeat_interval` when idle and every 2 s while a task runs, and learns from the answer
//! (`?cancellations=true`, a mito extension) whether a user cancelled the running task.
//!
//! ```ignore
//! let handle = heartbeat::spawn(shared.clone(), net.clone(), cfg.heartbeat_interval);
//! ```
//!
//! A failed heartbeat is retried sooner (with backoff), never more often than the cadence
//! would allow anyway; a 401 ends the worker.

use super::net::{Backoff, CallError, Net};
use super::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The cadence while a task runs, so that a cancel reaches it within seconds.
pub(super) const BUSY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(serde::Deserialize)]
struct Cancellations {
    #[serde(default)]
    cancel: Vec<Uuid>,
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    net: Arc<Net>,
    idle: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("heartbeat".into()).spawn(move || run(&shared, &net, idle))
}

fn run(shared: &Shared, net: &Net, idle: Duration) {
    let mut last = Instant::now();
    let mut retry: Option<Duration> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), net.retry_cap);
    // The task the last good heartbeat was sent with: a new one is confirmed at once, since
    // the coordinator puts back a task its worker does not confirm within the claim lease.
    let mut confirmed: Option<Uuid> = None;
    loop {
        let current = shared.current_task();
        let busy = current.is_some();
        let fresh = busy && current != confirmed && retry.is_none();
        let due = if fresh { Duration::ZERO } else { retry.unwrap_or(if busy { BUSY_INTERVAL } else { idle }) };
        let waited = last.elapsed();
        if waited < due {
            // Short slices, so a task starting is confirmed and switches to the busy
            // cadence promptly.
            if shared.shutdown.sleep((due - waited).min(Duration::from_millis(100))) {
                return;
            }
            continue;
        }
        last = Instant::now();
        match beat(shared, net) {
            Ok(()) => {
                confirmed = current;
                retry = None;
                backoff.reset();
            }
            Err(CallError::Unauthorized) => shared.force_exit(
                "the coordinator rejected the heartbeat with 401 (this worker was removed or its lifetime ended)",
            ),
            Err(CallError::Stopped) => return,
            Err(e) => {
                let d = backoff.next_delay();
                log::warn!("heartbeat failed ({e}); next try in {:.1}s", d.as_secs_f64());
                retry = Some(d);
            }
        }
    }
}

/// One heartbeat, not retried here (the loop does that on its own schedule).
fn beat(shared: &Shared, net: &Net) -> Result<(), CallError> {
    if shared.shutdown.is_set() {
        return Err(CallError::Stopped);
    }
    let resp = net.request("POST", "/workers/heartbeat?cancellations=true").timeout(Duration::from_secs(30)).call();
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(401, _)) => return Err(CallError::Unauthorized),
        Err(e) => return Err(CallError::Bad(super::net::explain(e))),
    };
    let body = resp.into_string().unwrap_or_default();
    // A coordinator without the extension answers `null`.
    if let Ok(Cancellations { cancel }) = serde_json::from_str::<Cancellations>(&body) {
        if let Some(current) = shared.current_task() {
            if cancel.contains(&current) && !shared.cancel.swap(true, Ordering::SeqCst) {
                log::info!("task {current} was cancelled by a user");
            }
        }
    }
    log::debug!("heartbeat sent");
    Ok(())
}
