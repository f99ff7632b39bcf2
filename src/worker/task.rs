//! One task from fetch to commit: resources, watch, run, report, archives, downstream task,
//! commit, cleanup; with the commit message mitosis uses on each path.
//!
//! ```ignore
//! task::handle(&ctx, fetched);   // returns once the task is committed (or the worker stops)
//! ```
//!
//! Report sequences: `Finish` (or `Cancel` on timeout / user cancel), uploads, `Submit`?,
//! `Commit`. A resource or watch failure: `Cancel`, `Commit{0, reason}`.

use super::artifacts::{self, FetchError, UploadError};
use super::exec::{self, Ending, TaskEnv};
use super::net::CallError;
use super::Ctx;
use crate::api::{
    ReportTaskOp, ReportTaskReq, SubmitTaskReq, TaskExecState as S, TaskQueryResp, TaskResultMessage as Msg,
    TaskResultSpec, TaskState, WorkerTaskResp,
};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Resource fetch and watch share this window, counted from the fetch.
const PREPARE_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Archiving and uploading get this long.
const UPLOAD_WINDOW: Duration = Duration::from_secs(600);

/// Runs one task to its commit. Returns Err only for 401 or a stop.
pub fn handle(ctx: &Ctx, task: WorkerTaskResp) -> Result<(), CallError> {
    let started = Instant::now();
    ctx.shared.begin(task.uuid);
    let r = handle_inner(ctx, &task, started);
    ctx.shared.end();
    // When the worker is stopping, its exit removes the whole working directory; cleaning
    // up here would recreate it, racing that removal.
    if !ctx.shared.stop.is_set() {
        if let Err(e) = ctx.dirs.reset() {
            log::error!("cannot clean the working directory between tasks: {e}");
        }
    }
    r
}

fn handle_inner(ctx: &Ctx, task: &WorkerTaskResp, started: Instant) -> Result<(), CallError> {
    let uuid = task.uuid;
    log::info!("task {uuid} started (timeout {})", humantime::format_duration(task.timeout));
    // Arguments may carry secrets, so only at debug.
    log::debug!("task {uuid} runs {:?}", task.spec.args);
    if let Err(e) = ctx.dirs.reset() {
        log::error!("cannot prepare the working directory for task {uuid}: {e}");
    }
    if let Some(msg) = prepare(ctx, task, started + PREPARE_WINDOW)? {
        return give_up(ctx, task, msg, started);
    }

    if ctx.shared.cancel.load(std::sync::atomic::Ordering::SeqCst) {
        log::info!("task {uuid} was cancelled before it started");
        return give_up(ctx, task, Msg::UserCancellation, started);
    }
    ctx.states.announce_for(uuid, S::ExecPending, Some(task.timeout + Duration::from_secs(60)));
    let env = TaskEnv {
        uuid,
        upstream: task.upstream_task_uuid,
        result_dir: ctx.dirs.result.clone(),
        exec_dir: ctx.dirs.exec.clone(),
        resource_dir: ctx.dirs.resource.clone(),
        new_task: ctx.dirs.new_task.clone(),
        stdout: ctx.dirs.std.join("stdout.log"),
        stderr: ctx.dirs.std.join("stderr.log"),
        worker_env: ctx.env.clone(),
    };
    ctx.states.announce(uuid, S::ExecSpawned);
    let outcome = match exec::run(&task.spec, &env, task.timeout, &ctx.shared, &ctx.confine) {
        Ok(o) => o,
        Err(e) => {
            log::error!("task {uuid}: cannot start /usr/bin/env: {e}");
            report(ctx, task.id, ReportTaskOp::Cancel)?;
            // What `env` itself reports when it cannot run a program.
            return commit(ctx, task, 127 << 8, None, started);
        }
    };
    let raw = outcome.status.into_raw();
    let (op, mut msg, state) = match outcome.ending {
        Ending::Stopped => return Err(CallError::Stopped),
        Ending::Finished => (ReportTaskOp::Finish, None, S::ExecFinished),
        Ending::TimedOut => (ReportTaskOp::Cancel, Some(Msg::ExecTimeout), S::ExecTimeout),
        Ending::Cancelled => (ReportTaskOp::Cancel, Some(Msg::UserCancellation), S::ExecFinished),
    };
    ctx.states.announce(uuid, state);
    ctx.states.announce(uuid, S::UploadResult);
    let finished = matches!(op, ReportTaskOp::Finish);
    report(ctx, task.id, op)?;
    ctx.states.announce(uuid, if finished { S::UploadFinishedResult } else { S::UploadCancelledResult });

    if !upload_output(ctx, task)? {
        msg = Some(Msg::UploadResultTimeout);
    }
    if outcome.ending != Ending::Cancelled && !submit_downstream(ctx, task)? && msg.is_none() {
        msg = Some(Msg::SubmitNewTaskFailed);
    }
    commit(ctx, task, raw, msg, started)
}

/// Fetches the task's resources and waits for the task it watches, both by `prepare_deadline`.
/// Returns why the task cannot run, if it cannot.
fn prepare(ctx: &Ctx, task: &WorkerTaskResp, prepare_deadline: Instant) -> Result<Option<Msg>, CallError> {
    let uuid = task.uuid;
    if !task.spec.resources.is_empty() {
        ctx.states.announce(uuid, S::FetchResource);
        let fetched =
            artifacts::fetch_resources(&ctx.net, uuid, &task.spec.resources, &ctx.dirs.resource, prepare_deadline);
        let failed = match fetched {
            Ok(()) => None,
            Err(FetchError::NotFound(m)) => Some((Msg::ResourceNotFound, S::FetchResourceNotFound, m)),
            Err(FetchError::Forbidden(m)) => Some((Msg::ResourceForbidden, S::FetchResourceForbidden, m)),
            Err(FetchError::Timeout(m)) => Some((Msg::FetchResourceTimeout, S::FetchResourceTimeout, m)),
            Err(FetchError::Fatal(e)) => return Err(e),
        };
        if let Some((msg, state, why)) = failed {
            log::warn!("task {uuid}: a resource could not be fetched ({why})");
            ctx.states.announce(uuid, state);
            return Ok(Some(msg));
        }
    }
    if let Some((watched, target)) = task.spec.watch {
        ctx.states.announce(uuid, S::Watch);
        if !watch(ctx, watched, target, prepare_deadline)? {
            ctx.states.announce(uuid, S::WatchTimeout);
            return Ok(Some(Msg::WatchTimeout));
        }
    }
    Ok(None)
}

/// Packs and uploads what the task produced, within `UPLOAD_WINDOW`. Returns false when the
/// window ran out before all of it was uploaded.
fn upload_output(ctx: &Ctx, task: &WorkerTaskResp) -> Result<bool, CallError> {
    let uuid = task.uuid;
    let upload_deadline = Instant::now() + UPLOAD_WINDOW;
    let uploaded = match artifacts::pack(&ctx.dirs, task.spec.terminal_output) {
        Ok(packed) => artifacts::upload(&ctx.net, task.id, &packed, upload_deadline),
        Err(e) => {
            log::error!("task {uuid}: cannot pack its output: {e}");
            Ok(())
        }
    };
    match uploaded {
        Ok(()) => ctx.states.announce(uuid, S::UploadResultFinished),
        Err(UploadError::Timeout) => {
            log::warn!(
                "task {uuid}: uploading its output took longer than {}s; committing without the rest",
                UPLOAD_WINDOW.as_secs()
            );
            ctx.states.announce(uuid, S::UploadResultTimeout);
            return Ok(false);
        }
        Err(UploadError::Fatal(e)) => return Err(e),
    }
    Ok(true)
}

/// The early-failure sequence: `Cancel`, then `Commit{0, msg}`.
fn give_up(ctx: &Ctx, task: &WorkerTaskResp, msg: Msg, started: Instant) -> Result<(), CallError> {
    report(ctx, task.id, ReportTaskOp::Cancel)?;
    commit(ctx, task, 0, Some(msg), started)
}

fn commit(ctx: &Ctx, task: &WorkerTaskResp, raw: i32, msg: Option<Msg>, started: Instant) -> Result<(), CallError> {
    report(ctx, task.id, ReportTaskOp::Commit(TaskResultSpec { exit_status: raw, msg }))?;
    ctx.states.announce(task.uuid, S::TaskCommitted);
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
pub fn describe_status(raw: i32) -> String {
    let s = std::process::ExitStatus::from_raw(raw);
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("raw status {raw}"),
    }
}

/// Sends one report op, retried on connection errors and 5xx. A 404 (the task was taken
/// from this worker) and other refusals are logged and otherwise ignored.
fn report(ctx: &Ctx, id: i64, op: ReportTaskOp) -> Result<(), CallError> {
    let name = op_name(&op);
    let req = ReportTaskReq { id, op };
    match ctx.net.call(&format!("reporting {name} for task id {id}"), None, || {
        ctx.net.request("POST", "/workers/tasks").send_json(&req)
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
fn submit_downstream(ctx: &Ctx, task: &WorkerTaskResp) -> Result<bool, CallError> {
    let path = &ctx.dirs.new_task;
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
    match ctx
        .net
        .call("submitting the downstream task", None, || ctx.net.request("POST", "/workers/tasks").send_json(&body))
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
fn watch(ctx: &Ctx, watched: Uuid, target: S, deadline: Instant) -> Result<bool, CallError> {
    log::info!("waiting for task {watched} to reach {target}");
    loop {
        if ctx.states.current(watched).is_some_and(|s| reaches(s, target)) {
            return Ok(true);
        }
        let path = format!("/workers/tasks/{watched}");
        match ctx.net.call_json::<TaskQueryResp>("checking a watched task", Some(deadline), || {
            ctx.net.request("GET", &path).call()
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
        if ctx.shared.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(true);
        }
        if ctx.shared.stop.sleep(WATCH_POLL) {
            return Err(CallError::Stopped);
        }
    }
}

const WATCH_POLL: Duration = Duration::from_secs(2);

/// Whether execution state `s` counts as having reached `target` (mitosis' matrix).
pub fn reaches(s: S, target: S) -> bool {
    use S::*;
    let rank = |x: S| -> i32 {
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
fn state_reaches(state: TaskState, committed: bool, target: S) -> bool {
    if committed {
        return reaches(S::TaskCommitted, target);
    }
    match state {
        TaskState::Running => target == S::FetchResource,
        TaskState::Finished => reaches(S::UploadFinishedResult, target),
        TaskState::Cancelled => reaches(S::UploadCancelledResult, target) || target == S::ExecTimeout,
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
        assert!(reaches(S::TaskCommitted, S::ExecSpawned));
        assert!(reaches(S::ExecSpawned, S::ExecSpawned));
        assert!(!reaches(S::ExecPending, S::ExecSpawned));
        assert!(!reaches(S::TaskCommitted, S::WorkerExited));
        assert!(reaches(S::FetchResourceNotFound, S::FetchResourceNotFound));
        assert!(!reaches(S::TaskCommitted, S::FetchResourceNotFound));
        assert!(state_reaches(TaskState::Finished, false, S::ExecFinished));
        assert!(!state_reaches(TaskState::Finished, false, S::TaskCommitted));
        assert!(state_reaches(TaskState::Finished, true, S::TaskCommitted));
        assert!(!state_reaches(TaskState::Ready, false, S::ExecPending));
    }
}
