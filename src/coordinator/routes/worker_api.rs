//! The routes workers call with their own token: heartbeat, fetch, report, unregister.

use crate::api::{
    ReportTaskOp, ReportTaskReq, ReportTaskResp, SubmitTaskReq, TaskQueryResp, TaskResultMessage, TaskResultSpec,
    TaskState, UserState, WorkerState,
};
use crate::coordinator::auth::AuthWorker;
use crate::coordinator::error::ApiError;
use crate::coordinator::scheduler;
use crate::coordinator::server::{Call, Reply};
use crate::coordinator::{tasks, workers, Ctx};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a fetch handler decided.
pub enum Fetch {
    Now(Reply),
    /// Nothing yet: hand the request to the dispatcher until this deadline.
    Park(Instant),
}

/// The longest long-poll a worker may ask for.
pub const MAX_WAIT_SECS: u64 = 60;

/// `GET /workers/tasks[?wait=N]`.
pub fn fetch(ctx: &Ctx, call: &Call, worker: &AuthWorker) -> Result<Fetch, ApiError> {
    let wait = match call.query_one("wait")? {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=MAX_WAIT_SECS).contains(&n) => Some(Duration::from_secs(n)),
            _ => return Err(ApiError::BadQuery(format!("wait={s:?}: expected whole seconds from 1 to {MAX_WAIT_SECS}"))),
        },
    };
    let mut db = ctx.pool.get()?;
    match scheduler::claim(&mut db, worker.id)? {
        Some(task) => Ok(Fetch::Now(Reply::json(&task))),
        None => match wait {
            Some(w) if !ctx.shutdown.is_set() => Ok(Fetch::Park(Instant::now() + w)),
            _ => Ok(Fetch::Now(Reply::null())),
        },
    }
}

/// `POST /workers/heartbeat[?cancellations=true]`.
pub fn heartbeat(ctx: &Ctx, call: &Call, worker: &AuthWorker) -> Result<Reply, ApiError> {
    let want_cancels = matches!(call.query_one("cancellations")?.as_deref(), Some("true" | "1"));
    let mut db = ctx.pool.get()?;
    let cancel: Vec<Uuid> = db.replayable(|db| {
        let beat = db.prepared("UPDATE workers SET last_heartbeat = now() WHERE id = $1")?;
        db.execute(&beat, &[&worker.id])?;
        if !want_cancels {
            return Ok(Vec::new());
        }
        let q = db.prepared("SELECT uuid FROM active_tasks WHERE assigned_worker = $1 AND cancel_requested")?;
        Ok(db.query(&q, &[&worker.id])?.iter().map(|r| r.get(0)).collect())
    })?;
    if want_cancels {
        Ok(Reply::json(&serde_json::json!({ "cancel": cancel })))
    } else {
        Ok(Reply::null())
    }
}

/// `DELETE /workers`: the worker leaves; its task goes back to Ready.
pub fn unregister(ctx: &Ctx, worker: &AuthWorker) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let groups = workers::remove(&mut tx, &[worker.id])?;
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    tx.commit()?;
    for g in groups {
        ctx.scheduler.task_ready(g);
    }
    log::info!("worker {} unregistered", worker.uuid);
    Ok(Reply::null())
}

/// `GET /workers/tasks/{uuid}`: a task in one of the worker's groups.
pub fn get_task(ctx: &Ctx, worker: &AuthWorker, uuid: Uuid) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let missing = || ApiError::NotFound(format!("Task with uuid {uuid}"));
    let found = tasks::find(&mut *db, uuid)?.ok_or_else(missing)?;
    let serves = db
        .query_opt("SELECT 1 FROM group_worker WHERE worker_id = $1 AND group_id = $2", &[&worker.id, &found.group_id])?
        .is_some();
    if !serves {
        return Err(missing());
    }
    let artifacts = tasks::artifacts(&mut *db, uuid)?;
    Ok(Reply::json(&TaskQueryResp { info: found.info, artifacts }))
}

struct Assigned {
    id: i64,
    uuid: Uuid,
    group_id: i64,
    state: TaskState,
    creator_id: i64,
    cancel_requested: bool,
    downstream: Option<Uuid>,
}

/// `POST /workers/tasks`: Finish, Cancel, Upload, Submit or Commit the worker's task.
pub fn report(ctx: &Ctx, call: &Call, worker: &AuthWorker) -> Result<Reply, ApiError> {
    let req: ReportTaskReq = call.json()?;
    let mut db = ctx.pool.get()?;
    let not_found = || ApiError::NotFound(format!("Task {}", req.id));
    if let ReportTaskOp::Finish | ReportTaskOp::Cancel = req.op {
        let state = if matches!(req.op, ReportTaskOp::Finish) { TaskState::Finished } else { TaskState::Cancelled };
        let update = db.prepared(
            "UPDATE active_tasks SET state = $3, updated_at = now() WHERE id = $1 AND assigned_worker = $2",
        )?;
        // Replayable: the worker reports again if this is lost.
        let n = db.replayable(|db| Ok(db.execute(&update, &[&req.id, &worker.id, &state.code()])?))?;
        if n == 0 {
            return Err(not_found());
        }
        return Ok(Reply::json(&ReportTaskResp { url: None }));
    }
    let select = db.prepared(
        "SELECT id, uuid, group_id, state, creator_id, cancel_requested, downstream_task_uuid
         FROM active_tasks WHERE id = $1 AND assigned_worker = $2 FOR UPDATE",
    )?;
    let archive = db.prepared(ARCHIVE)?;
    let mut tx = db.transaction()?;
    let row = tx.query_opt(&select, &[&req.id, &worker.id])?.ok_or_else(not_found)?;
    let t = Assigned {
        id: row.get(0),
        uuid: row.get(1),
        group_id: row.get(2),
        state: TaskState::from_code(row.get(3)).unwrap_or(TaskState::Unknown),
        creator_id: row.get(4),
        cancel_requested: row.get(5),
        downstream: row.get(6),
    };
    let done = matches!(t.state, TaskState::Finished | TaskState::Cancelled);
    match req.op {
        ReportTaskOp::Finish | ReportTaskOp::Cancel => Err(ApiError::Internal("handled above".into())),
        ReportTaskOp::Upload { content_type, content_length } => {
            let (_, url) = super::artifacts::reserve_upload(
                ctx, &mut tx, call, t.uuid, t.group_id, content_type, content_length,
            )?;
            tx.commit()?;
            Ok(Reply::json(&ReportTaskResp { url: Some(url) }))
        }
        ReportTaskOp::Submit(sub) => {
            if !done {
                return Err(ApiError::bad("Task can not spawn new tasks: report Finish or Cancel first"));
            }
            submit_downstream(&mut tx, worker, &t, &sub)?;
            tx.commit()?;
            Ok(Reply::json(&ReportTaskResp { url: None }))
        }
        ReportTaskOp::Commit(result) => {
            if !done {
                return Err(ApiError::bad("Task can not be marked as done: report Finish or Cancel first"));
            }
            let woken = commit(ctx, &mut tx, &archive, worker, &t, result)?;
            tx.commit()?;
            if let Some(g) = woken {
                ctx.scheduler.task_ready(g);
            }
            Ok(Reply::json(&ReportTaskResp { url: None }))
        }
    }
}

fn submit_downstream(
    tx: &mut postgres::Transaction,
    worker: &AuthWorker,
    t: &Assigned,
    sub: &SubmitTaskReq,
) -> Result<(), ApiError> {
    let creator = tx.query_opt("SELECT state FROM users WHERE id = $1", &[&t.creator_id])?.ok_or(ApiError::WrongCredentials)?;
    if UserState::from_code(creator.get(0)) != Some(UserState::Active) {
        return Err(ApiError::Forbidden("the task's creator is no longer active".into()));
    }
    let group: String = tx.query_one("SELECT group_name FROM groups WHERE id = $1", &[&t.group_id])?.get(0);
    if sub.group_name != group {
        return Err(ApiError::bad(format!(
            "Group name mismatch: a downstream task must be in its upstream task's group {group}, not {}",
            sub.group_name
        )));
    }
    let role = tx.query_opt("SELECT role FROM group_worker WHERE worker_id = $1 AND group_id = $2", &[&worker.id, &t.group_id])?;
    if role.map(|r| r.get::<_, i32>(0)).unwrap_or(-1) < crate::api::GroupWorkerRole::Write.code() {
        return Err(ApiError::Forbidden(format!("this worker does not have the Write role in group {group}")));
    }
    tasks::validate_submit(sub).map_err(ApiError::bad)?;
    let made = tasks::insert(tx, t.creator_id, t.group_id, &[sub], TaskState::Pending, Some(t.uuid))?;
    let (_, new_uuid) = made.first().copied().ok_or_else(|| ApiError::Internal("no downstream task made".into()))?;
    tx.execute("UPDATE active_tasks SET downstream_task_uuid = $2 WHERE id = $1", &[&t.id, &new_uuid])?;
    Ok(())
}

/// Archives the task with its result, frees the worker (removing it if it was asked to
/// stop after this task) and readies the downstream task. Returns a group to wake.
/// Moves the task to the archive with its result and frees the worker, in one statement.
const ARCHIVE: &str = "WITH moved AS (DELETE FROM active_tasks WHERE id = $1 RETURNING *),
    archived AS (
        INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at,
                                    state, assigned_worker, timeout, priority, spec, result,
                                    upstream_task_uuid, downstream_task_uuid, reporter_uuid)
        SELECT id, creator_id, group_id, task_id, uuid, tags, labels, created_at, now(),
               $2, assigned_worker, timeout, priority, spec, $3, upstream_task_uuid, downstream_task_uuid, $4
        FROM moved
        RETURNING id
    )
    UPDATE workers SET assigned_task_id = NULL, updated_at = now() WHERE id = $5";

fn commit(
    ctx: &Ctx,
    tx: &mut postgres::Transaction,
    archive: &postgres::Statement,
    worker: &AuthWorker,
    t: &Assigned,
    result: TaskResultSpec,
) -> Result<Option<i64>, ApiError> {
    let (state, result) = if t.cancel_requested {
        (TaskState::Cancelled, TaskResultSpec { exit_status: result.exit_status, msg: Some(TaskResultMessage::UserCancellation) })
    } else {
        (t.state, result)
    };
    let result = serde_json::to_value(result).map_err(|e| ApiError::Internal(format!("serialize result: {e}")))?;
    tx.execute(archive, &[&t.id, &state.code(), &result, &worker.uuid, &worker.id])?;
    if worker.state == WorkerState::GracefulShutdown {
        workers::remove(tx, &[worker.id])?;
        log::info!("worker {} stopped after its last task, as asked", worker.uuid);
    }
    let mut woken = None;
    if let Some(d) = t.downstream {
        let row = tx.query_opt(
            "UPDATE active_tasks SET state = $2, updated_at = now() WHERE uuid = $1 AND state = $3 RETURNING group_id",
            &[&d, &TaskState::Ready.code(), &TaskState::Pending.code()],
        )?;
        if let Some(r) = row {
            let g: i64 = r.get(0);
            ctx.scheduler.notify_group(tx, g)?;
            woken = Some(g);
        }
    }
    Ok(woken)
}
