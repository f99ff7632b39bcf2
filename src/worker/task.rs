//! One task from fetch to commit: resources, watch, run, report, archives, downstream task,
//! commit, cleanup; with the commit message mitosis uses on each path.
//!
//! ```ignore
//! task::handle(&runner, fetched);   // returns once the task is committed (or the worker stops)
//! ```
//!
//! Report sequences: `Finish` (or `Cancel` on timeout / user cancel), uploads, `Submit`?,
//! `Commit`. A resource or watch failure: `Cancel`, `Commit{0, reason}`.

use super::artifacts::{self, FetchError, UploadError};
use super::exec::{self, Ending, TaskEnv};
use super::net::CallError;
use super::TaskRunner;
use crate::api::{
    ReportTaskOp, ReportTaskReq, SubmitTaskReq, TaskExecState, TaskQueryResp, TaskResultMessage, TaskResultSpec,
    TaskState, WorkerTaskResp,
};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Resource fetch and watch share this window, counted from the fetch.
const PREPARE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Archiving and uploading get this long.
const UPLOAD_WINDOW: Duration = Duration::from_secs(600);

/// Runs one task to its commit. Returns Err only for 401 or a stop.
pub(super) fn handle(runner: &TaskRunner, task: WorkerTaskResp) -> Result<(), CallError> {
    let started = Instant::now();
    runner.shared.begin(task.uuid);
    let r = handle_inner(runner, &task, started);
    runner.shared.end();
    // When the worker is stopping, its exit removes the whole working directory; cleaning
    // up here would recreate it, racing that removal.
    if !runner.shared.shutdown.is_set() {
        if let Err(e) = runner.dirs.reset() {
            log::error!("cannot clean the working directory between tasks: {e}");
        }
    }
    r
}

fn handle_inner(runner: &TaskRunner, task: &WorkerTaskResp, started: Instant) -> Result<(), CallError> {
    let uuid = task.uuid;
    log::info!("task {uuid} started (timeout {})", humantime::format_duration(task.timeout));
    // Arguments may carry secrets, so only at debug.
    log::debug!("task {uuid} runs {:?}", task.spec.args);
    if let Err(e) = runner.dirs.reset() {
        log::error!("cannot prepare the working directory for task {uuid}: {e}");
    }
    if let Some(msg) = prepare(runner, task, started + PREPARE_WINDOW)? {
        return give_up(runner, task, msg, started);
    }

    if runner.shared.cancel.load(std::sync::atomic::Ordering::SeqCst) {
        log::info!("task {uuid} was cancelled before it started");
        return give_up(runner, task, TaskResultMessage::UserCancellation, started);
    }
    runner.states.publish_for(uuid, TaskExecState::ExecPending, Some(task.timeout + Duration::from_secs(60)));
    let env = TaskEnv {
        uuid,
        upstream: task.upstream_task_uuid,
        result_dir: runner.dirs.result.clone(),
        exec_dir: runner.dirs.exec.clone(),
        resource_dir: runner.dirs.resource.clone(),
        new_task: runner.dirs.new_task.clone(),
        stdout: runner.dirs.std.join("stdout.log"),
        stderr: runner.dirs.std.join("stderr.log"),
        worker_env: runner.env.clone(),
    };
    runner.states.publish(uuid, TaskExecState::ExecSpawned);
    let shipper = task
        .spec
        .terminal_output
        .then(|| super::live_log::Shipper::start(runner.net.clone(), uuid, env.stdout.clone(), env.stderr.clone()));
    let ran = exec::run(&task.spec, &env, task.timeout, &runner.shared, &runner.confine);
    if let Some(s) = shipper {
        s.finish();
    }
    let outcome = match ran {
        Ok(o) => o,
        Err(e) => {
            log::error!("task {uuid}: cannot start /usr/bin/env: {e}");
            report(runner, task.id, ReportTaskOp::Cancel)?;
            // What `env` itself reports when it cannot run a program.
            return commit(runner, task, 127 << 8, None, started);
        }
    };
    let raw = outcome.status.into_raw();
    let (op, mut msg, state) = match outcome.ending {
        Ending::Stopped => return Err(CallError::Stopped),
        Ending::Finished => (ReportTaskOp::Finish, None, TaskExecState::ExecFinished),
        Ending::TimedOut => (ReportTaskOp::Cancel, Some(TaskResultMessage::ExecTimeout), TaskExecState::ExecTimeout),
        Ending::Cancelled => {
            (ReportTaskOp::Cancel, Some(TaskResultMessage::UserCancellation), TaskExecState::ExecFinished)
        }
    };
    runner.states.publish(uuid, state);
    runner.states.publish(uuid, TaskExecState::UploadResult);
    let finished = matches!(op, ReportTaskOp::Finish);
    report(runner, task.id, op)?;
    runner.states.publish(
        uuid,
        if finished { TaskExecState::UploadFinishedResult } else { TaskExecState::UploadCancelledResult },
    );

    if !upload_output(runner, task)? {
        msg = Some(TaskResultMessage::UploadResultTimeout);
    }
    if outcome.ending != Ending::Cancelled && !submit_downstream(runner, task)? && msg.is_none() {
        msg = Some(TaskResultMessage::SubmitNewTaskFailed);
    }
    commit(runner, task, raw, msg, started)
}

/// Fetches the task's resources and waits for the task it watches, both by `prepare_deadline`.
/// Returns why the task cannot run, if it cannot.
fn prepare(
    runner: &TaskRunner,
    task: &WorkerTaskResp,
    prepare_deadline: Instant,
) -> Result<Option<TaskResultMessage>, CallError> {
    let uuid = task.uuid;
    if !task.spec.resources.is_empty() {
        runner.states.publish(uuid, TaskExecState::FetchResource);
        let fetched = artifacts::fetch_resources(
            &runner.net,
            uuid,
            &task.spec.resources,
            &runner.dirs.resource,
            prepare_deadline,
        );
        let failed = match fetched {
            Ok(()) => None,
            Err(FetchError::NotFound(m)) => {
                Some((TaskResultMessage::ResourceNotFound, TaskExecState::FetchResourceNotFound, m))
            }
            Err(FetchError::Forbidden(m)) => {
                Some((TaskResultMessage::ResourceForbidden, TaskExecState::FetchResourceForbidden, m))
            }
            Err(FetchError::Timeout(m)) => {
                Some((TaskResultMessage::FetchResourceTimeout, TaskExecState::FetchResourceTimeout, m))
            }
            Err(FetchError::Fatal(e)) => return Err(e),
        };
        if let Some((msg, state, why)) = failed {
            log::warn!("task {uuid}: a resource could not be fetched ({why})");
            runner.states.publish(uuid, state);
            return Ok(Some(msg));
        }
    }
    if let Some((watched, target)) = task.spec.watch {
        runner.states.publish(uuid, TaskExecState::Watch);
        if !watch(runner, watched, target, prepare_deadline)? {
            runner.states.publish(uuid, TaskExecState::WatchTimeout);
            return Ok(Some(TaskResultMessage::WatchTimeout));
        }
    }
    Ok(None)
}

/// Packs and uploads what the task produced, within `UPLOAD_WINDOW`. Returns false when the
/// window ran out before all of it was uploaded.
fn upload_output(runner: &TaskRunner, task: &WorkerTaskResp) -> Result<bool, CallError> {
    let uuid = task.uuid;
    let upload_deadline = Instant::now() + UPLOAD_WINDOW;
    let uploaded = match artifacts::pack(&runner.dirs, task.spec.terminal_output) {
        Ok(packed) => artifacts::upload(&runner.net, task.id, &packed, upload_deadline),
        Err(e) => {
            log::error!("task {uuid}: cannot pack its output: {e}");
            Ok(())
        }
    };
    match uploaded {
        Ok(()) => runner.states.publish(uuid, TaskExecState::UploadResultFinished),
        Err(UploadError::Timeout) => {
            log::warn!(
                "task {uuid}: uploading its output took longer than {}s; committing without the rest",
                UPLOAD_WINDOW.as_secs()
            );
            runner.states.publish(uuid, TaskExecState::UploadResultTimeout);
            return Ok(false);
        }
        Err(UploadError::Fatal(e)) => return Err(e),
    }
    Ok(true)
}

/// The early-failure sequence: `Cancel`, then `Commit{0, msg}`.
fn give_up(
    runner: &TaskRunner,
    task: &WorkerTaskResp,
    msg: TaskResultMessage,
    started: Instant,
) -> Result<(), CallError> {
    report(runner, task.id, ReportTaskOp::Cancel)?;
    commit(runner, task, 0, Some(msg), started)
}

fn commit(
    runner: &TaskRunner,
    task: &WorkerTaskResp,
    raw: i32,
    msg: Option<TaskResultMessage>,
    started: Instant,
) -> Result<(), CallError> {
    report(runner, task.id, ReportTaskOp::Commit(TaskResultSpec { exit_status: raw, msg }))?;
    runner.states.publish(task.uuid, TaskExecState::TaskCommitted);
    log::info!(
        "task {} committed: {}{} after {:.1}s",
        task.uuid,
        describe_status(raw),
        msg.map(|m| format!(" ({m})")).unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A raw wait status in words, for the per-task log line.
pub(super) fn describe_status(raw: i32) -> String {
    let s = std::process::ExitStatus::from_raw(raw);
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("raw status {raw}"),
    }
}

/// Sends one report op, retried on connection errors and 5xx. A 404 (the task was taken
/// from this worker) and other refusals are logged and otherwise ignored.
fn report(runner: &TaskRunner, id: i64, op: ReportTaskOp) -> Result<(), CallError> {
    let name = op_name(&op);
    let req = ReportTaskReq { id, op };
    match runner.net.call(&format!("reporting {name} for task id {id}"), None, || {
        runner.net.request("POST", "/workers/tasks").send_json(&req)
    }) {
        Ok(_) => Ok(()),
        Err(e @ (CallError::Unauthorized | CallError::Stopped)) => Err(e),
        Err(CallError::Status(404, m)) => {
            log::warn!("reporting {name} for task id {id}: the task is no longer this worker's ({m})");
            Ok(())
        }
        Err(e) => {
            log::error!("reporting {name} for task id {id} failed: {e}");
            Ok(())
        }
    }
}

fn op_name(op: &ReportTaskOp) -> &'static str {
    match op {
        ReportTaskOp::Finish => "Finish",
        ReportTaskOp::Cancel => "Cancel",
        ReportTaskOp::Submit(_) => "Submit",
        ReportTaskOp::Commit(_) => "Commit",
        ReportTaskOp::Upload { .. } => "Upload",
    }
}

/// Submits the task written to `MITO_NEW_TASK`, if any. Ok(false) means it failed.
fn submit_downstream(runner: &TaskRunner, task: &WorkerTaskResp) -> Result<bool, CallError> {
    let path = &runner.dirs.new_task;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => {
            log::warn!("task {}: cannot read {}: {e}", task.uuid, path.display());
            return Ok(false);
        }
    };
    let _ = std::fs::remove_file(path);
    if text.trim().is_empty() {
        return Ok(true);
    }
    let req: SubmitTaskReq = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("task {}: MITO_NEW_TASK does not hold a task submission: {e}", task.uuid);
            return Ok(false);
        }
    };
    let body = ReportTaskReq { id: task.id, op: ReportTaskOp::Submit(Box::new(req)) };
    match runner
        .net
        .call("submitting the downstream task", None, || runner.net.request("POST", "/workers/tasks").send_json(&body))
    {
        Ok(_) => {
            log::info!("task {}: downstream task submitted", task.uuid);
            Ok(true)
        }
        Err(e @ (CallError::Unauthorized | CallError::Stopped)) => Err(e),
        Err(e) => {
            log::warn!("task {}: the downstream task was refused: {e}", task.uuid);
            Ok(false)
        }
    }
}

/// Waits until the watched task reaches `target`; false when the window closes first.
/// Evidence: the state published in Redis (when there is Redis) and the coordinator's view.
fn watch(runner: &TaskRunner, watched: Uuid, target: TaskExecState, deadline: Instant) -> Result<bool, CallError> {
    log::info!("waiting for task {watched} to reach {target}");
    loop {
        if runner.states.current(watched).is_some_and(|s| reaches(s, target)) {
            return Ok(true);
        }
        let path = format!("/workers/tasks/{watched}");
        match runner.net.call_json::<TaskQueryResp>("checking a watched task", Some(deadline), || {
            runner.net.request("GET", &path).call()
        }) {
            Ok(r) if state_reaches(r.info.state, r.info.result.is_some(), target) => return Ok(true),
            Ok(_) => {}
            Err(e @ (CallError::Unauthorized | CallError::Stopped)) => return Err(e),
            Err(CallError::Timeout(_)) => return Ok(false),
            Err(e) => log::warn!("checking watched task {watched}: {e}"),
        }
        if Instant::now() + WATCH_POLL >= deadline {
            return Ok(false);
        }
        // A cancelled task stops waiting; the caller sees the flag before spawning.
        if runner.shared.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(true);
        }
        if runner.shared.shutdown.sleep(WATCH_POLL) {
            return Err(CallError::Stopped);
        }
    }
}

const WATCH_POLL: Duration = Duration::from_secs(2);

/// Whether execution state `s` counts as having reached `target` (mitosis' matrix).
pub(super) fn reaches(s: TaskExecState, target: TaskExecState) -> bool {
    use TaskExecState::*;
    let rank = |x: TaskExecState| -> i32 {
        match x {
            FetchResource => 1,
            FetchResourceFinished => 2,
            Watch => 3,
            WatchFinished => 4,
            ExecPending => 5,
            ExecSpawned => 6,
            ExecFinished | ExecTimeout => 7,
            UploadResult => 8,
            UploadFinishedResult | UploadCancelledResult => 9,
            UploadResultFinished | UploadResultTimeout => 10,
            TaskCommitted => 11,
            _ => -1,
        }
    };
    match target {
        WorkerExited | Unknown => false,
        FetchResourceError | FetchResourceTimeout | FetchResourceNotFound | FetchResourceForbidden | WatchTimeout => {
            s == target
        }
        Watch => rank(s) >= rank(Watch) || s == WatchTimeout,
        ExecTimeout | UploadCancelledResult | UploadResultTimeout => s == target || s == TaskCommitted,
        _ => rank(target) > 0 && rank(s) >= rank(target),
    }
}

/// The coordinator's task state read as an execution state: a Running task has at least
/// started fetching; a Finished or Cancelled one got as far as its report; one with a
/// result is committed.
fn state_reaches(state: TaskState, committed: bool, target: TaskExecState) -> bool {
    if committed {
        return reaches(TaskExecState::TaskCommitted, target);
    }
    match state {
        TaskState::Running => target == TaskExecState::FetchResource,
        TaskState::Finished => reaches(TaskExecState::UploadFinishedResult, target),
        TaskState::Cancelled => {
            reaches(TaskExecState::UploadCancelledResult, target) || target == TaskExecState::ExecTimeout
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_statuses_read_as_exit_codes_or_signals() {
        assert_eq!(describe_status(0), "exit 0");
        assert_eq!(describe_status(256), "exit 1");
        assert_eq!(describe_status(15), "killed by signal 15");
    }

    #[test]
    fn reach_follows_the_order_of_execution() {
        assert!(reaches(TaskExecState::TaskCommitted, TaskExecState::ExecSpawned));
        assert!(reaches(TaskExecState::ExecSpawned, TaskExecState::ExecSpawned));
        assert!(!reaches(TaskExecState::ExecPending, TaskExecState::ExecSpawned));
        assert!(!reaches(TaskExecState::TaskCommitted, TaskExecState::WorkerExited));
        assert!(reaches(TaskExecState::FetchResourceNotFound, TaskExecState::FetchResourceNotFound));
        assert!(!reaches(TaskExecState::TaskCommitted, TaskExecState::FetchResourceNotFound));
        assert!(state_reaches(TaskState::Finished, false, TaskExecState::ExecFinished));
        assert!(!state_reaches(TaskState::Finished, false, TaskExecState::TaskCommitted));
        assert!(state_reaches(TaskState::Finished, true, TaskExecState::TaskCommitted));
        assert!(!state_reaches(TaskState::Ready, false, TaskExecState::ExecPending));
    }
}
