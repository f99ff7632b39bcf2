//! Leaving: the first SIGINT or SIGTERM stops the running task's process group, unregisters
//! and exits 0 (on a thread of its own, so a second signal is still heard and exits at once);
//! a 401 from the coordinator ends the worker the same way, without unregistering.

use super::error::WorkerError;
use super::shared::Shared;
use super::{exec, isolate, net};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Shared {
    /// Stops everything and ends the process. With `unregister`, tells the coordinator
    /// first (which requeues the running task). Only the first caller does the work.
    fn exit(&self, code: i32, unregister: bool) -> ! {
        if self.exiting.swap(true, Ordering::SeqCst) {
            // Someone else is already on the way out; wait for them (bounded).
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(code);
        }
        let pgid = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // Under the lock: a task spawned after this sees the flag and does not start.
            self.shutdown.trigger();
            running.pgid
        };
        if let Some(pgid) = pgid {
            log::info!("stopping the running task's process group {pgid}");
            exec::stop_group(pgid, pgid, exec::GRACE, &self.shutdown);
        }
        // And whatever of it left the group.
        let cgroup = self.running.lock().unwrap_or_else(|p| p.into_inner()).cgroup.take();
        if let Some(cg) = cgroup {
            cg.remove();
        }
        isolate::kill_descendants(Duration::from_secs(3));
        if unregister {
            if let Some(net) = self.net.get() {
                match net.request("DELETE", "/workers").timeout(Duration::from_secs(3)).call() {
                    Ok(_) => log::info!("unregistered from the coordinator"),
                    Err(e) => log::warn!(
                        "could not unregister ({}); the coordinator will drop this worker when its heartbeat times out",
                        net::describe(&e)
                    ),
                }
            }
        }
        if let Some(root) = self.root.get() {
            let _ = std::fs::remove_dir_all(root);
        }
        log::info!("worker stopped");
        log::logger().flush();
        std::process::exit(code)
    }

    /// The coordinator no longer accepts this worker: stop the task and exit with
    /// [`super::EXIT_REMOVED`].
    pub(crate) fn force_exit(&self, why: &str) -> ! {
        log::warn!("{why}; exiting");
        self.exit(super::EXIT_REMOVED, false)
    }
}

pub(super) fn spawn_signal_thread(shared: Arc<Shared>) -> Result<(), WorkerError> {
    let signals = crate::signal::listen();
    std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || {
            let Ok(first) = signals.recv() else { return };
            log::info!(
                "received {}; stopping the task, unregistering and exiting (send it again to exit at once)",
                crate::signal::name(first)
            );
            let s = shared.clone();
            let spawned = std::thread::Builder::new().name("shutdown".into()).spawn(move || s.exit(0, true));
            if spawned.is_err() {
                shared.exit(0, true);
            }
            if let Ok(second) = signals.recv() {
                log::warn!("received {} again; exiting at once", crate::signal::name(second));
                if let Some(pgid) = shared.running.lock().unwrap_or_else(|p| p.into_inner()).pgid {
                    // SAFETY: killing the task's own process group.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                // One pass, no waiting: this exit is meant to be immediate.
                isolate::kill_descendants_once();
                std::process::exit(1);
            }
        })
        .map(|_| ())
        .map_err(|source| WorkerError::Thread { name: "signal", source })
}
