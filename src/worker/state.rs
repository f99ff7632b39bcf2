//! Live execution states in Redis, as mitosis publishes them: `SET task:{uuid} <code>` (with
//! an expiry where one applies) and `PUBLISH task:{uuid} <code>`, so clients can follow a
//! task and other tasks can `watch` it.
//!
//! ```ignore
//! let states = StatePublisher::connect(Some("redis://mitosis_worker:pw@127.0.0.1/"));
//! states.publish(task_uuid, TaskExecState::ExecSpawned);
//! ```
//!
//! Redis is optional: without it, or when it fails, states are not published (one warning).

use crate::api::TaskExecState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use uuid::Uuid;

/// Publishes task execution states to Redis (or drops them when there is none).
pub(crate) struct StatePublisher {
    conn: Option<Mutex<redis::Connection>>,
    warned: AtomicBool,
}

impl StatePublisher {
    /// No Redis at all.
    pub(crate) fn none() -> StatePublisher {
        StatePublisher { conn: None, warned: AtomicBool::new(false) }
    }

    /// Connects to `url`; on failure logs a warning and carries on without Redis.
    pub(crate) fn connect(url: &str) -> StatePublisher {
        let conn = redis::Client::open(url).and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)));
        match conn {
            Ok(c) => {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
                log::info!("publishing task states to Redis");
                StatePublisher { conn: Some(Mutex::new(c)), warned: AtomicBool::new(false) }
            }
            Err(e) => {
                log::warn!(
                    "cannot connect to the coordinator's Redis ({}); task states will not be published",
                    e.kind_str()
                );
                StatePublisher::none()
            }
        }
    }

    /// Sets and publishes `state` for `task`, with the expiry mitosis uses for it.
    pub(crate) fn publish(&self, task: Uuid, state: TaskExecState) {
        self.publish_for(task, state, expiry(state));
    }

    /// Like `publish` with an explicit expiry (None: the key does not expire).
    pub(crate) fn publish_for(&self, task: Uuid, state: TaskExecState, ex: Option<Duration>) {
        let Some(conn) = &self.conn else { return };
        let key = format!("task:{task}");
        let code = state.code();
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut pipe = redis::pipe();
        match ex {
            Some(d) => pipe.cmd("SET").arg(&key).arg(code).arg("EX").arg(d.as_secs().max(1)).ignore(),
            None => pipe.cmd("SET").arg(&key).arg(code).ignore(),
        };
        pipe.cmd("PUBLISH").arg(&key).arg(code).ignore();
        if let Err(e) = pipe.query::<()>(&mut *c) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!("publishing task states to Redis failed ({}); later failures are not logged", e.kind_str());
            }
        }
    }

    /// The state last published for `task`, if Redis has one.
    pub(crate) fn current(&self, task: Uuid) -> Option<TaskExecState> {
        let conn = self.conn.as_ref()?;
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        let v: Option<i32> = redis::cmd("GET").arg(format!("task:{task}")).query(&mut *c).ok()?;
        v.and_then(TaskExecState::from_code)
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// The error without the URL (it carries the password).
    fn kind_str(&self) -> String {
        format!("{:?}: {}", self.kind(), self.detail().unwrap_or("no detail"))
    }
}

/// The expiry mitosis gives each state.
fn expiry(state: TaskExecState) -> Option<Duration> {
    use TaskExecState::*;
    let s = match state {
        FetchResource => 360,
        ExecFinished | UploadResult | UploadFinishedResult | UploadCancelledResult | ExecTimeout => 660,
        ExecSpawned | Watch | FetchResourceForbidden => return None,
        _ => 60,
    };
    Some(Duration::from_secs(s))
}
