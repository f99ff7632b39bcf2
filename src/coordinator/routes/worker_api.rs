//! The routes workers call with their own token: heartbeat, fetch, report, unregister.

use crate::api::{
    ReportTaskOp, ReportTaskReq, ReportTaskResp, SubmitTaskReq, TaskQueryResp, TaskResultMessage, TaskResultSpec,
    TaskState, UserState, WorkerState,
};
use crate::coordinator::auth::{self, AuthWorker, WorkerToken};
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{Call, Reply};
use crate::coordinator::limits::MAX_DOWNSTREAM_PER_TASK;
use crate::coordinator::scheduler::{self, Claimed, ParkAs};
use crate::coordinator::{tasks, workers, Ctx};
use postgres::types::{Json, ToSql};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a fetch handler decided.
pub(crate) enum Fetch {
    Now(Reply),
    /// Nothing yet: hand the request to the dispatcher.
    Park(ParkAs),
}

/// The longest long-poll a worker may ask for.
pub(crate) const MAX_WAIT_SECS: u64 = 60;

/// `GET /workers/tasks[?wait=N]`.
pub(crate) fn fetch(ctx: &Ctx, call: &Call, worker: WorkerToken) -> Result<Fetch, ApiError> {
    let wait = match call.query_one("wait")? {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(n) if (1..=MAX_WAIT_SECS).contains(&n) => Some(Duration::from_secs(n)),
            _ => {
                return Err(ApiError::BadQuery(format!("wait={s:?}: expected whole seconds from 1 to {MAX_WAIT_SECS}")))
            }
        },
    };
    let mut db = ctx.queue_pool.get()?;
    let deadline = Instant::now() + wait.unwrap_or_default();
    match scheduler::claim(ctx, &mut db, worker, deadline)? {
        Claimed::Task(task) => Ok(Fetch::Now(Reply::json(&task))),
        Claimed::Nothing(how) if wait.is_some() && !ctx.shutdown.is_set() => Ok(Fetch::Park(how)),
        Claimed::Nothing(_) => Ok(Fetch::Now(Reply::null())),
    }
}

/// A heartbeat in one statement that also authenticates the worker (on the queue pool: the
/// next heartbeat repeats it). It confirms the worker's claim: a worker that heartbeats
/// while holding a task has it (see [`scheduler::CLAIM`]'s lease).
const HEARTBEAT: &str = "WITH w AS (UPDATE workers SET last_heartbeat = now() WHERE worker_id = $1 RETURNING id, assigned_task_id),
    confirmed AS (
        UPDATE active_tasks SET claim_deadline = NULL
        WHERE id = (SELECT assigned_task_id FROM w) AND assigned_worker = (SELECT id FROM w) AND claim_deadline IS NOT NULL
    )
    SELECT ARRAY(SELECT t.uuid FROM active_tasks t WHERE t.assigned_worker = w.id AND t.cancel_requested) AS cancel
    FROM w";

/// `POST /workers/heartbeat[?cancellations=true]`.
pub(crate) fn heartbeat(ctx: &Ctx, call: &Call, worker: WorkerToken) -> Result<Reply, ApiError> {
    let want_cancels = matches!(call.query_one("cancellations")?.as_deref(), Some("true" | "1"));
    let mut db = ctx.queue_pool.get()?;
    let st = db.prepared(HEARTBEAT)?;
    let row = db.query_opt(&st, &[&worker.uuid])?.ok_or(ApiError::WrongCredentials)?;
    if want_cancels {
        let cancel: Vec<Uuid> = row.get("cancel");
        Ok(Reply::json(&serde_json::json!({ "cancel": cancel })))
    } else {
        Ok(Reply::null())
    }
}

/// `DELETE /workers`: the worker leaves; its task goes back to Ready.
pub(crate) fn unregister(ctx: &Ctx, worker: &AuthWorker) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let mut tx = db.transaction()?;
    let groups = workers::remove(&mut tx, &[worker.id])?;
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    tx.commit()?;
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
    log::info!("worker {} unregistered", worker.uuid);
    Ok(Reply::null())
}

/// `GET /workers/tasks/{uuid}`: a task in one of the worker's groups.
pub(crate) fn get_task(ctx: &Ctx, worker: &AuthWorker, uuid: Uuid) -> Result<Reply, ApiError> {
    let mut db = ctx.pool.get()?;
    let missing = || ApiError::NotFound(format!("Task with uuid {uuid}"));
    let found = tasks::find(&mut *db, uuid)?.ok_or_else(missing)?;
    let serves = db
        .query_opt("SELECT 1 FROM group_worker WHERE worker_id = $1 AND group_id = $2", &[&worker.id, &found.group_id])?
        .is_some();
    if !serves {
        return Err(missing());
    }
    let mut info = found.info;
    // A reported attempt of a task with a retry policy may still be retried: until its
    // commit decides, a watcher sees it running, so it reacts only to the final outcome.
    if found.active && matches!(info.state, TaskState::Finished | TaskState::Cancelled) {
        let retried =
            db.query_opt("SELECT 1 FROM active_tasks WHERE id = $1 AND retry_policy IS NOT NULL", &[&found.id])?;
        if retried.is_some() {
            info.state = TaskState::Running;
        }
    }
    let artifacts = tasks::artifacts(&mut *db, uuid)?;
    Ok(Reply::json(&TaskQueryResp {
        info,
        artifacts,
        attempts: Vec::new(),
        retries: None,
        after: Vec::new(),
        after_any: Vec::new(),
    }))
}

struct Assigned {
    uuid: Uuid,
    group_id: i64,
    state: TaskState,
    creator_id: i64,
    id: i64,
}

/// `POST /workers/tasks`: Finish, Cancel, Upload, Submit or Commit the worker's task.
pub(crate) fn report(ctx: &Ctx, call: &Call, token: WorkerToken) -> Result<Reply, ApiError> {
    let req: ReportTaskReq = call.json()?;
    match req.op {
        ReportTaskOp::Finish => finish(ctx, token, req.id, TaskState::Finished),
        ReportTaskOp::Cancel => finish(ctx, token, req.id, TaskState::Cancelled),
        ReportTaskOp::Commit(result) => commit(ctx, token, req.id, result),
        op @ (ReportTaskOp::Upload { .. } | ReportTaskOp::Submit(_)) => {
            let mut db = ctx.pool.get()?;
            let worker = auth::authenticate_worker(&mut db, token)?;
            upload_or_submit(ctx, call, &mut db, &worker, req.id, op)
        }
    }
}

fn task_not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("Task {id}"))
}

/// Finish or Cancel in one statement that also authenticates the worker (on the queue
/// pool: the worker reports again if this is lost).
const FINISH: &str = "WITH w AS (SELECT id FROM workers WHERE worker_id = $1),
    done AS (
        UPDATE active_tasks SET state = $3, updated_at = now(), claim_deadline = NULL
        WHERE id = $2 AND assigned_worker = (SELECT id FROM w)
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM done) AS finished FROM w";

fn finish(ctx: &Ctx, worker: WorkerToken, id: i64, state: TaskState) -> Result<Reply, ApiError> {
    let mut db = ctx.queue_pool.get()?;
    let st = db.prepared(FINISH)?;
    let row = db.query_opt(&st, &[&worker.uuid, &id, &state.code()])?.ok_or(ApiError::WrongCredentials)?;
    if !row.get::<_, bool>("finished") {
        return Err(task_not_found(id));
    }
    Ok(Reply::json(&ReportTaskResp { url: None }))
}

/// The archive of the task a commit statement's `moved` CTE took out of `active_tasks`:
/// Cancelled with `$6` (the result saying `UserCancellation`) if a user asked, else in its
/// own state with `$5`; `$1` is the reporting worker, `$4` the Cancelled state.
macro_rules! archive_moved {
    () => {
        "archived AS (
        INSERT INTO archived_tasks (id, creator_id, group_id, task_id, uuid, tags, labels, created_at, updated_at,
                                    state, assigned_worker, timeout, priority, spec, result,
                                    upstream_task_uuid, downstream_task_uuid, reporter_uuid, note)
        SELECT id, creator_id, group_id, task_id, uuid, tags, labels, created_at, now(),
               CASE WHEN cancel_requested THEN $4::int ELSE state END, assigned_worker, timeout, priority, spec,
               CASE WHEN cancel_requested THEN $6::jsonb ELSE $5::jsonb END,
               upstream_task_uuid, downstream_task_uuid, $1, note
        FROM moved
    )"
    };
}

/// Commit of the common case, in one statement that also authenticates the worker: a task
/// with no downstream task, no retry policy and no task waiting for it, of a worker not
/// asked to stop, moves to the archive with its result (Cancelled with `UserCancellation`
/// if a user asked) and the worker is freed. This commit waits for the disk: it is the
/// task's result. Anything else (and every error) takes [`COMMIT`].
const COMMIT_PLAIN: &str = concat!(
    "WITH w AS (SELECT id FROM workers WHERE worker_id = $1 AND state <> $7),
    moved AS (
        DELETE FROM active_tasks t
        WHERE t.id = $2 AND t.assigned_worker = (SELECT id FROM w) AND t.state = ANY($3)
          AND t.downstream_task_uuid IS NULL AND t.retry_policy IS NULL
          AND NOT EXISTS (SELECT 1 FROM task_dependencies d WHERE d.dependency_uuid = t.uuid)
        RETURNING t.*
    ), ",
    archive_moved!(),
    "
    UPDATE workers SET assigned_task_id = NULL, updated_at = now()
    WHERE id = (SELECT id FROM w) AND EXISTS (SELECT 1 FROM moved)
    RETURNING id"
);

/// Commit in general, as [`COMMIT_PLAIN`] and besides: a worker asked to stop after this
/// task is removed, and a downstream task waiting on this one becomes Ready, with a NOTIFY
/// to the other coordinators. `moved` is the archived task's uuid, whose dependents the
/// caller then settles in the same transaction.
const COMMIT: &str = concat!(
    "WITH w AS (SELECT id FROM workers WHERE worker_id = $1),
    moved AS (
        DELETE FROM active_tasks t
        WHERE t.id = $2 AND t.assigned_worker = (SELECT id FROM w) AND t.state = ANY($3)
        RETURNING t.*
    ), ",
    archive_moved!(),
    ", freed AS (
        UPDATE workers SET assigned_task_id = NULL, updated_at = now()
        WHERE id = (SELECT id FROM w) AND state <> $7 AND EXISTS (SELECT 1 FROM moved)
    ), stopped AS (
        DELETE FROM workers WHERE id = (SELECT id FROM w) AND state = $7 AND EXISTS (SELECT 1 FROM moved)
        RETURNING id
    ), readied AS (
        UPDATE active_tasks d SET state = $8, updated_at = now()
        FROM moved WHERE d.uuid = moved.downstream_task_uuid AND d.state = $9
        RETURNING d.group_id
    ), notified AS (
        SELECT pg_notify($10, $11::text || d.group_id) FROM readied d
    )
    SELECT w.id AS worker_row, (SELECT uuid FROM moved) AS moved, EXISTS (SELECT 1 FROM stopped) AS stopped,
           (SELECT group_id FROM readied) AS readied_group, (SELECT count(*) FROM notified) AS notified
    FROM w"
);

/// For a committed task with a retry policy: records the attempt and, when the policy
/// says so, puts the task back in the queue and frees (or removes, if it was asked to
/// stop) the worker. `None`: not such a task, or no retry (commit as usual, the attempt
/// recorded in the same transaction). `Some(group)`: retried; the group has a task Ready
/// now.
fn retry_instead(
    ctx: &Ctx,
    tx: &mut postgres::Transaction,
    worker: WorkerToken,
    id: i64,
    spec: &TaskResultSpec,
    result: &serde_json::Value,
) -> Result<Option<Option<i64>>, ApiError> {
    let row = tx.query_opt(
        "SELECT t.state, t.cancel_requested, w.id AS worker_row, w.state AS worker_state
         FROM active_tasks t JOIN workers w ON w.id = t.assigned_worker
         WHERE t.id = $1 AND w.worker_id = $2 AND t.retry_policy IS NOT NULL AND t.state = ANY($3)
         FOR UPDATE OF t",
        &[&id, &worker.uuid, &&[TaskState::Finished.code(), TaskState::Cancelled.code()][..]],
    )?;
    let Some(row) = row else { return Ok(None) };
    let state = TaskState::from_code(row.get("state")).unwrap_or(TaskState::Unknown);
    let outcome = tasks::retry::Outcome::of_commit(state, spec, row.get("cancel_requested"));
    match tasks::retry::end_attempt(tx, id, outcome, Some(result))? {
        tasks::retry::Decision::Keep => Ok(None),
        tasks::retry::Decision::Retry { group_id, ready_now } => {
            let worker_row: i64 = row.get("worker_row");
            if row.get::<_, i32>("worker_state") == WorkerState::GracefulShutdown.code() {
                workers::remove(tx, &[worker_row])?;
                log::info!("worker {} stopped after its last task, as asked", worker.uuid);
            }
            if ready_now {
                ctx.scheduler.notify_group(tx, group_id)?;
                return Ok(Some(Some(group_id)));
            }
            Ok(Some(None))
        }
    }
}

fn commit(ctx: &Ctx, worker: WorkerToken, id: i64, result: TaskResultSpec) -> Result<Reply, ApiError> {
    let json =
        |r: &TaskResultSpec| serde_json::to_value(r).map_err(|e| ApiError::Internal(format!("serialize result: {e}")));
    let cancelled = TaskResultSpec { exit_status: result.exit_status, msg: Some(TaskResultMessage::UserCancellation) };
    let result_spec = result;
    // Serialized straight into the statement's message, with no JSON value in between.
    let (result, cancelled) = (Json(&result_spec), Json(&cancelled));
    let done = [TaskState::Finished.code(), TaskState::Cancelled.code()];
    let (cancelled_code, graceful) = (TaskState::Cancelled.code(), WorkerState::GracefulShutdown.code());
    let mut db = ctx.pool.get()?;
    let plain = db.prepared(COMMIT_PLAIN)?;
    let params: [&(dyn ToSql + Sync); 7] =
        [&worker.uuid, &id, &&done[..], &cancelled_code, &result, &cancelled, &graceful];
    if db.query_opt(&plain, &params)?.is_some() {
        crate::coordinator::metrics::METRICS.commits.inc();
        return Ok(Reply::json(&ReportTaskResp { url: None }));
    }
    let general = db.prepared(COMMIT)?;
    let notify = ctx.scheduler.group_payload_prefix();
    let more: [&(dyn ToSql + Sync); 4] =
        [&TaskState::Ready.code(), &TaskState::Pending.code(), &scheduler::CHANNEL, &notify];
    let all: Vec<&(dyn ToSql + Sync)> = params.iter().chain(more.iter()).copied().collect();
    let mut tx = db.transaction()?;
    // A task with a retry policy records its attempt, and may go back to the queue
    // instead of the archive.
    if let Some(retried) = retry_instead(ctx, &mut tx, worker, id, &result_spec, &json(&result_spec)?)? {
        tx.commit()?;
        if let Some(g) = retried {
            ctx.scheduler.wake_group(g);
        }
        crate::coordinator::metrics::METRICS.commits.inc();
        return Ok(Reply::json(&ReportTaskResp { url: None }));
    }
    let row = tx.query_opt(&general, &all)?.ok_or(ApiError::WrongCredentials)?;
    let (worker_id, moved, stopped, readied): (i64, Option<Uuid>, bool, Option<i64>) =
        (row.get("worker_row"), row.get("moved"), row.get("stopped"), row.get("readied_group"));
    // Tasks waiting for this one are settled before it is committed, so they are Ready
    // (or cancelled) the moment it is archived, not at the reaper's next pass.
    let mut wake = match moved {
        Some(uuid) => tasks::dependencies::release_dependents(&mut tx, &[uuid])?,
        None => Vec::new(),
    };
    for g in &wake {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    tx.commit()?;
    if moved.is_none() {
        let state =
            db.query_opt("SELECT state FROM active_tasks WHERE id = $1 AND assigned_worker = $2", &[&id, &worker_id])?;
        return Err(match state {
            None => task_not_found(id),
            Some(_) => ApiError::bad("Task can not be marked as done: report Finish or Cancel first"),
        });
    }
    crate::coordinator::metrics::METRICS.commits.inc();
    if stopped {
        log::info!("worker {} stopped after its last task, as asked", worker.uuid);
    }
    wake.extend(readied);
    wake.sort_unstable();
    wake.dedup();
    for g in wake {
        ctx.scheduler.wake_group(g);
    }
    Ok(Reply::json(&ReportTaskResp { url: None }))
}

/// Upload and Submit: rarer reports that need the task's row locked for a while.
fn upload_or_submit(
    ctx: &Ctx,
    call: &Call,
    db: &mut crate::coordinator::db::Conn,
    worker: &AuthWorker,
    id: i64,
    op: ReportTaskOp,
) -> Result<Reply, ApiError> {
    let mut tx = db.transaction()?;
    let row = tx
        .query_opt(
            "SELECT id, uuid, group_id, state, creator_id FROM active_tasks WHERE id = $1 AND assigned_worker = $2 FOR UPDATE",
            &[&id, &worker.id],
        )?
        .ok_or_else(|| task_not_found(id))?;
    let t = Assigned {
        id: row.get("id"),
        uuid: row.get("uuid"),
        group_id: row.get("group_id"),
        state: TaskState::from_code(row.get("state")).unwrap_or(TaskState::Unknown),
        creator_id: row.get("creator_id"),
    };
    let done = matches!(t.state, TaskState::Finished | TaskState::Cancelled);
    match op {
        ReportTaskOp::Upload { content_type, content_length } => {
            let (_, url) =
                super::artifacts::reserve_upload(ctx, &mut tx, call, t.uuid, t.group_id, content_type, content_length)?;
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
        _ => Err(ApiError::Internal("only Upload and Submit take this path".into())),
    }
}

fn submit_downstream(
    tx: &mut postgres::Transaction,
    worker: &AuthWorker,
    t: &Assigned,
    sub: &SubmitTaskReq,
) -> Result<(), ApiError> {
    let creator =
        tx.query_opt("SELECT state FROM users WHERE id = $1", &[&t.creator_id])?.ok_or(ApiError::WrongCredentials)?;
    if UserState::from_code(creator.get("state")) != Some(UserState::Active) {
        return Err(ApiError::Forbidden("the task's creator is no longer active".into()));
    }
    let group: String = tx.query_one("SELECT group_name FROM groups WHERE id = $1", &[&t.group_id])?.get("group_name");
    if sub.group_name != group {
        return Err(ApiError::bad(format!(
            "Group name mismatch: a downstream task must be in its upstream task's group {group}, not {}",
            sub.group_name
        )));
    }
    let role = tx.query_opt(
        "SELECT role FROM group_worker WHERE worker_id = $1 AND group_id = $2",
        &[&worker.id, &t.group_id],
    )?;
    if role.map(|r| r.get::<_, i32>("role")).unwrap_or(-1) < crate::api::GroupWorkerRole::Write.code() {
        return Err(ApiError::Forbidden(format!("this worker does not have the Write role in group {group}")));
    }
    tasks::validate_submit(sub)?;
    if tasks::is_extended(sub) {
        return Err(ApiError::bad(
            "a downstream task cannot carry retries or dependencies: it already waits for its upstream task",
        ));
    }
    // Each Submit of a finished task would otherwise add one more Pending task, kept for
    // ever: only the last is linked, and nothing but its upstream's commit readies any.
    let pending: i64 = tx
        .query_one(
            "SELECT count(*) FROM active_tasks WHERE upstream_task_uuid = $1 AND state = $2",
            &[&t.uuid, &TaskState::Pending.code()],
        )?
        .get("count");
    if pending >= MAX_DOWNSTREAM_PER_TASK {
        return Err(ApiError::bad(format!(
            "task {} already has {pending} pending downstream tasks, the most one task may create; \
             a task spawns one follow-up task",
            t.uuid
        )));
    }
    let (_, new_uuid) = tasks::insert_downstream(tx, t.creator_id, t.group_id, sub, t.uuid)?;
    tx.execute("UPDATE active_tasks SET downstream_task_uuid = $2 WHERE id = $1", &[&t.id, &new_uuid])?;
    Ok(())
}
