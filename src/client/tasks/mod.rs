//! `tasks ...`: submit, query, change and cancel tasks; and, beyond mitosis, `tasks wait`
//! (block until tasks are done; the exit status says whether they all succeeded) and
//! `tasks logs` (print a task's captured stdout and stderr). Artifacts are in artifacts.rs.
//!
//! ```text
//! tasks submit -g lab -t gpu --timeout 1h -- python train.py
//! tasks submit --terminal --wait -- sh -c 'echo hi'     # waits, exit status = success
//! tasks wait 7f0c... 1a2b... --timeout 30m
//! ```

mod manage;
mod show;
mod submit;
mod wait;

use super::args::{Args, Command, Group};
use super::{artifacts, CommandResult, Error, Session};
use std::time::Duration;

const TASKS: Group = Group {
    name: "tasks",
    about: "Submit, query, wait for and manage tasks and their artifacts",
    commands: &[
        Command::cmd("submit", "Submit a task", &submit::SUBMIT, submit::submit),
        Command::cmd("submit-many", "Submit the tasks of a JSON file", &submit::SUBMIT_MANY, submit::submit_many),
        Command::cmd("get", "Show a task", &show::GET, show::get),
        Command::cmd("query", "Find tasks", &show::QUERY, show::query),
        Command::cmd(
            "wait",
            "Wait until tasks are done; the exit status says whether all succeeded",
            &wait::WAIT,
            wait::wait_cmd,
        ),
        Command::cmd("logs", "Print a task's captured stdout and stderr", &wait::LOGS, wait::logs),
        Command::cmd("cancel", "Cancel a task that has not started", &manage::CANCEL, manage::cancel),
        Command::cmd("cancel-many", "Cancel the tasks that match a filter", &manage::CANCEL_MANY, manage::cancel_many),
        Command::cmd("cancel-list", "Cancel the listed tasks", &manage::CANCEL_LIST, manage::cancel_list),
        Command::cmd("update-labels", "Replace a task's labels", &manage::UPDATE_LABELS, manage::update_labels),
        Command::cmd("change", "Change a task that has not started", &submit::CHANGE, submit::change),
        Command::group("artifacts", "Files tasks produced (result, exec-log, std-log)", artifacts::run),
    ],
    aliases: &[],
};

pub(super) fn run(s: &mut Session, words: &[String]) -> CommandResult {
    TASKS.run(s, words)
}

pub(super) fn duration_arg(a: &Args, flag: &str, s: &str) -> Result<Duration, Error> {
    humantime::parse_duration(s.trim())
        .map_err(|_| a.usage(format!("{flag} {s:?} is not a duration (e.g. 90s, 10m, 2h)")))
}
