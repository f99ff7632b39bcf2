//! The main loop: fetch a task, run it to its commit, and again, until a stop or a 401.

use super::artifacts::Dirs;
use super::net::{CallError, Net};
use super::shared::Shared;
use super::{exec, fetch, isolate, state, task};
use std::sync::Arc;
use std::time::Duration;

/// What the task loop needs to run one task after another.
pub(crate) struct TaskRunner {
    pub shared: Arc<Shared>,
    pub net: Arc<Net>,
    pub dirs: Dirs,
    pub states: state::StatePublisher,
    pub confine: exec::Confine,
    /// `--env` settings for every task.
    pub env: Vec<(String, String)>,
}

pub(super) fn serve(runner: &TaskRunner, polling_interval: Duration) {
    while !runner.shared.shutdown.is_set() {
        isolate::reap_all();
        let outcome = match fetch::next(&runner.net, polling_interval) {
            Ok(Some(t)) => task::handle(runner, t),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {}
            Err(CallError::Stopped) => return,
            Err(CallError::Unauthorized) => {
                runner.shared.force_exit("the coordinator answered 401 (this worker was removed or its lifetime ended)")
            }
            Err(e) => {
                log::error!("fetching a task: {e}; next try in {}", humantime::format_duration(polling_interval));
                if runner.shared.shutdown.sleep(polling_interval) {
                    return;
                }
            }
        }
    }
}
