//! Workers in the database: removal (with their tasks requeued), graceful shutdown, and
//! reading rows as wire types.
//!
//! ```ignore
//! let groups = workers::remove(&mut tx, &[worker_id])?; // their tasks go back to Ready
//! ```

use super::error::ApiError;
use super::tasks;
use crate::api::{GroupWorkerRole, TaskState, Timestamp, WorkerQueryInfo, WorkerShutdownOp, WorkerState};
use postgres::GenericClient;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Columns for [`info`], from `workers w JOIN users u LEFT JOIN active_tasks t`.
pub(crate) const INFO_SELECT: &str =
    "SELECT w.worker_id, u.username, w.tags, w.labels, w.created_at, w.updated_at, w.state, \
     w.last_heartbeat, t.uuid AS assigned_task_id, w.id \
     FROM workers w JOIN users u ON u.id = w.creator_id LEFT JOIN active_tasks t ON t.id = w.assigned_task_id";

pub(crate) fn info(r: &postgres::Row) -> WorkerQueryInfo {
    WorkerQueryInfo {
        worker_id: r.get("worker_id"),
        creator_username: r.get("username"),
        tags: r.get("tags"),
        labels: r.get("labels"),
        created_at: Timestamp(r.get("created_at")),
        updated_at: Timestamp(r.get("updated_at")),
        state: WorkerState::from_code(r.get("state")).unwrap_or(WorkerState::Normal),
        last_heartbeat: Timestamp(r.get("last_heartbeat")),
        assigned_task_id: r.get("assigned_task_id"),
    }
}

/// The groups a worker serves, with their roles.
pub(crate) fn groups(
    db: &mut impl GenericClient,
    worker_id: i64,
) -> Result<BTreeMap<String, GroupWorkerRole>, ApiError> {
    Ok(db
        .query(
            "SELECT g.group_name, gw.role FROM group_worker gw JOIN groups g ON g.id = gw.group_id WHERE gw.worker_id = $1",
            &[&worker_id],
        )?
        .iter()
        .filter_map(|r| GroupWorkerRole::from_code(r.get("role")).map(|role| (r.get::<_, String>("group_name"), role)))
        .collect())
}

/// Removes workers. Their tasks go back to Ready (to run elsewhere), except tasks a user
/// asked to cancel, which are archived as cancelled (and the tasks waiting for them
/// settled). Returns the groups with tasks Ready now, for the wake-up after commit.
pub(crate) fn remove(tx: &mut impl GenericClient, ids: &[i64]) -> Result<Vec<i64>, ApiError> {
    remove_counted(tx, ids).map(|(groups, _)| groups)
}

/// [`remove`], also saying how many tasks went back to Ready.
pub(crate) fn remove_counted(tx: &mut impl GenericClient, ids: &[i64]) -> Result<(Vec<i64>, usize), ApiError> {
    if ids.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // The workers' rows first: a claim locks its worker's row before it takes a task, so
    // a claim in flight either finishes first (and its task is requeued below) or waits
    // and then finds no worker. Taking the rows last would let a claim commit a task to
    // a worker this transaction is deleting, where nothing would ever requeue it.
    tx.query("SELECT id FROM workers WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids])?;
    let cancelled: Vec<i64> = tx
        .query("SELECT id FROM active_tasks WHERE assigned_worker = ANY($1) AND cancel_requested", &[&ids])?
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let mut released = Vec::new();
    if !cancelled.is_empty() {
        let states = [TaskState::Running.code(), TaskState::Finished.code(), TaskState::Cancelled.code()];
        let gone = tasks::archive_cancelled(tx, &cancelled, &states)?;
        released = tasks::dependencies::release_dependents(tx, &gone)?;
    }
    // Tasks with a retry policy record the lost attempt and follow their policy.
    let held: Vec<i64> = tx
        .query("SELECT id FROM active_tasks WHERE assigned_worker = ANY($1)", &[&ids])?
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let (retried, retried_groups) = tasks::retry::lost(tx, &held)?;
    let requeued: Vec<i64> = tx
        .query(
            "UPDATE active_tasks SET state = $2, assigned_worker = NULL, updated_at = now()
             WHERE assigned_worker = ANY($1) RETURNING group_id",
            &[&ids, &TaskState::Ready.code()],
        )?
        .iter()
        .map(|r| r.get("group_id"))
        .collect();
    tx.execute("DELETE FROM workers WHERE id = ANY($1)", &[&ids])?;
    let count = requeued.len() + retried.len();
    let mut groups = requeued;
    groups.extend(retried_groups);
    groups.extend(released);
    groups.sort_unstable();
    groups.dedup();
    Ok((groups, count))
}

/// Stops workers: Force removes them now; Graceful removes idle ones and marks busy ones
/// to be removed when they commit their task. Returns (how many, groups to wake).
pub(crate) fn shutdown(
    tx: &mut impl GenericClient,
    ids: &[i64],
    op: WorkerShutdownOp,
) -> Result<(u64, Vec<i64>), ApiError> {
    if ids.is_empty() {
        return Ok((0, Vec::new()));
    }
    match op {
        WorkerShutdownOp::Force => {
            let n = tx.query_one("SELECT count(*) FROM workers WHERE id = ANY($1)", &[&ids])?.get::<_, i64>("count");
            Ok((n as u64, remove(tx, ids)?))
        }
        WorkerShutdownOp::Graceful => {
            let idle: Vec<i64> = tx
                .query("SELECT id FROM workers WHERE id = ANY($1) AND assigned_task_id IS NULL", &[&ids])?
                .iter()
                .map(|r| r.get("id"))
                .collect();
            let marked = tx.execute(
                "UPDATE workers SET state = $2, updated_at = now() WHERE id = ANY($1) AND assigned_task_id IS NOT NULL",
                &[&ids, &WorkerState::GracefulShutdown.code()],
            )?;
            let groups = remove(tx, &idle)?;
            Ok((idle.len() as u64 + marked, groups))
        }
    }
}

/// Looks a worker up by uuid.
pub(crate) fn id_of(db: &mut impl GenericClient, uuid: Uuid) -> Result<Option<i64>, ApiError> {
    Ok(db.query_opt("SELECT id FROM workers WHERE worker_id = $1", &[&uuid])?.map(|r| r.get("id")))
}
