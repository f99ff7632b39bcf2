//! Asking the coordinator for the next task: a long poll (`GET /workers/tasks?wait=N`, a mito
//! extension) that returns as soon as a task is ready; against a coordinator that answers
//! `null` at once (mitosis), the worker waits `polling_interval` between asks instead.
//!
//! ```ignore
//! if let Some(task) = fetch::next(&net, polling_interval)? { /* run it */ }
//! ```

use super::net::{CallError, Net};
use crate::api::WorkerTaskResp;
use std::time::{Duration, Instant};

/// How long one long poll may be held by the coordinator.
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// The next task, or None after a poll that found nothing (the pause is already taken).
pub(super) fn next(net: &Net, polling_interval: Duration) -> Result<Option<WorkerTaskResp>, CallError> {
    let asked = Instant::now();
    let path = format!("/workers/tasks?wait={}", WAIT.as_secs());
    let task: Option<serde_json::Value> = net.call_json("fetching a task", None, || {
        net.request("GET", &path).timeout(WAIT + Duration::from_secs(30)).call()
    })?;
    match task {
        None | Some(serde_json::Value::Null) => {
            if asked.elapsed() < WAIT / 2 {
                log::debug!("no task; next fetch in {}", humantime::format_duration(polling_interval));
                if net.shutdown.sleep(polling_interval) {
                    return Err(CallError::Stopped);
                }
            }
            Ok(None)
        }
        Some(v) => {
            let id = v.get("id").and_then(|i| i.as_i64());
            serde_json::from_value(v).map(Some).map_err(|e| {
                CallError::Bad(format!("the coordinator sent a task this worker cannot read (id {id:?}): {e}"))
            })
        }
    }
}
