//! What the worker's threads share: the shutdown flag every sleeper waits on, and the task that
//! is running (so the heartbeat can report it and a shutdown can stop it).

use super::isolate;
use super::net::Net;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use uuid::Uuid;

/// The worker's shutdown signal: a one-shot flag that also wakes every sleeper at once
/// (the coordinator's `Shutdown` is the same flag without the sleeps).
pub(crate) struct Shutdown {
    flag: AtomicBool,
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        let (tx, rx) = bounded(1);
        Shutdown { flag: AtomicBool::new(false), tx: Mutex::new(Some(tx)), rx }
    }

    pub(crate) fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // Dropping the sender wakes every `sleep`.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`; true if the stop came first.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        if self.is_set() {
            return true;
        }
        let _ = self.rx.recv_timeout(d);
        self.is_set()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

/// The running task, as the other threads need to see it.
#[derive(Default)]
pub(crate) struct Running {
    pub uuid: Option<Uuid>,
    /// The task's process group while it exists.
    pub pgid: Option<i32>,
    /// The task's cgroup, if it has one.
    pub cgroup: Option<Arc<isolate::TaskCgroup>>,
}

/// State shared by every thread of the worker.
pub(crate) struct Shared {
    pub shutdown: Arc<Shutdown>,
    pub running: Mutex<Running>,
    /// Set by the heartbeat when a user cancelled the running task.
    pub cancel: AtomicBool,
    pub(super) exiting: AtomicBool,
    /// Known once registered: for unregistering and removing the working directory.
    pub(super) net: OnceLock<Arc<Net>>,
    pub(super) root: OnceLock<PathBuf>,
}

impl Shared {
    pub(super) fn new(shutdown: Arc<Shutdown>) -> Shared {
        Shared {
            shutdown,
            running: Mutex::new(Running::default()),
            cancel: AtomicBool::new(false),
            exiting: AtomicBool::new(false),
            net: OnceLock::new(),
            root: OnceLock::new(),
        }
    }

    pub(crate) fn current_task(&self) -> Option<Uuid> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid
    }

    pub(super) fn begin(&self, uuid: Uuid) {
        self.cancel.store(false, Ordering::SeqCst);
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid = Some(uuid);
    }

    pub(super) fn end(&self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).uuid = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wakes_sleepers_at_once() {
        let shutdown = Arc::new(Shutdown::new());
        let s = shutdown.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            assert!(s.sleep(Duration::from_secs(30)));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        shutdown.trigger();
        assert!(t.join().unwrap() < Duration::from_secs(5));
        assert!(shutdown.sleep(Duration::from_secs(30)), "an already-stopped sleep returns at once");
    }
}
