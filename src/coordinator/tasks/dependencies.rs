//! Dependencies: a task submitted with `after` (every listed task must end Finished with
//! exit 0) or `after_any` (every listed task must end, however) waits in Pending, holding
//! no worker, with a `task_dependencies` row per dependency. [`resolve`], run by the
//! reaper on whichever coordinator holds its lock, makes it Ready once they have all
//! ended, or archives it as Cancelled with a note naming the dependency that failed. A
//! task ends only when it is archived (a task being retried stays active), so dependents
//! see only final outcomes. Cycles cannot arise: dependencies exist before their
//! dependent is submitted.
//!
//! ```ignore
//! dependencies::record(&mut tx, &[uuid], &req)?;        // in the submit's transaction
//! let groups = dependencies::resolve(&mut tx)?;        // reaper: groups with tasks now Ready
//! ```

use crate::api::{SubmitTaskReq, TaskState};
use crate::coordinator::error::ApiError;
use postgres::GenericClient;
use std::collections::BTreeMap;
use uuid::Uuid;

/// The dependencies of a request, each once; a task named in both lists needs success.
pub fn of(req: &SubmitTaskReq) -> Vec<(Uuid, bool)> {
    let mut deps: BTreeMap<Uuid, bool> = req.after_any.iter().map(|u| (*u, true)).collect();
    for u in &req.after {
        deps.insert(*u, false);
    }
    deps.into_iter().collect()
}

/// Makes the just-inserted tasks `uuids`, made from `req`, wait for its dependencies (same
/// transaction as the insert, so no worker can claim them before). Two statements however
/// many tasks: an array's tasks share their template's dependencies.
pub fn record(tx: &mut impl GenericClient, uuids: &[Uuid], req: &SubmitTaskReq) -> Result<(), ApiError> {
    let deps = of(req);
    if deps.is_empty() || uuids.is_empty() {
        return Ok(());
    }
    let (ids, any): (Vec<Uuid>, Vec<bool>) = deps.into_iter().unzip();
    tx.execute(
        "INSERT INTO task_dependencies (task_uuid, dependency_uuid, any_outcome)
         SELECT t, d, a FROM unnest($1::uuid[]) AS t, unnest($2::uuid[], $3::bool[]) AS x(d, a)",
        &[&uuids, &ids, &any],
    )?;
    let note = format!("waits for {} dependencies", ids.len());
    tx.execute(
        "UPDATE active_tasks SET state = $2, note = $3 WHERE uuid = ANY($1)",
        &[&uuids, &TaskState::Pending.code(), &note],
    )?;
    Ok(())
}

/// The dependencies `uuid` still waits for: (must succeed, any outcome will do), each in
/// uuid order. Empty once they are resolved (their rows are gone).
pub fn waiting_for(db: &mut impl GenericClient, uuid: Uuid) -> Result<(Vec<Uuid>, Vec<Uuid>), ApiError> {
    let rows = db.query(
        "SELECT dependency_uuid, any_outcome FROM task_dependencies WHERE task_uuid = $1 ORDER BY dependency_uuid",
        &[&uuid],
    )?;
    let (any, all): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.get::<_, bool>("any_outcome"));
    let ids = |rows: Vec<&postgres::Row>| rows.into_iter().map(|r| r.get("dependency_uuid")).collect();
    Ok((ids(all), ids(any)))
}

/// The most dependency rows one pass reads; the rest wait for the next pass.
const ROWS_PER_PASS: i64 = 10_000;

/// What became of one waiting task.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Wait,
    Ready,
    /// Cannot run: the note says which dependency failed.
    Cancel(String),
}

/// One dependency as [`resolve`] reads it: whether it must succeed, and how it ended (its
/// state and exit status) if it has.
pub struct DepState {
    pub uuid: Uuid,
    pub any_outcome: bool,
    pub ended: Option<(TaskState, Option<i32>)>,
}

/// The verdict on a task from its dependencies.
pub fn verdict(deps: &[DepState]) -> Verdict {
    for d in deps {
        match d.ended {
            Some((TaskState::Finished, Some(0))) => {}
            Some((state, exit)) if !d.any_outcome => {
                let how = match (state, exit) {
                    (TaskState::Finished, Some(status)) if status & 0x7f == 0 => {
                        format!("finished with exit code {}", (status >> 8) & 0xff)
                    }
                    (TaskState::Finished, Some(status)) => format!("was killed by signal {}", status & 0x7f),
                    (TaskState::Cancelled, _) => "was cancelled".to_string(),
                    (s, _) => format!("ended {s}"),
                };
                return Verdict::Cancel(format!("dependency {} {how}", d.uuid));
            }
            _ => {}
        }
    }
    if deps.iter().all(|d| d.ended.is_some()) {
        Verdict::Ready
    } else {
        Verdict::Wait
    }
}

/// One pass over the waiting tasks: those whose dependencies all ended become Ready (or
/// are archived as Cancelled when one failed), and rows of tasks that are no longer
/// waiting (a user cancelled them) go. Returns the groups with tasks now Ready.
pub fn resolve(tx: &mut impl GenericClient) -> Result<Vec<i64>, ApiError> {
    tx.execute(
        "DELETE FROM task_dependencies d
         WHERE NOT EXISTS (SELECT 1 FROM active_tasks t WHERE t.uuid = d.task_uuid AND t.state = $1)",
        &[&TaskState::Pending.code()],
    )?;
    let rows = tx.query(
        "SELECT d.task_uuid, d.dependency_uuid, d.any_outcome, a.state, (a.result->>'exit_status')::int AS exit_status
         FROM task_dependencies d LEFT JOIN archived_tasks a ON a.uuid = d.dependency_uuid
         WHERE d.task_uuid IN (SELECT d2.task_uuid FROM task_dependencies d2
                               JOIN archived_tasks a2 ON a2.uuid = d2.dependency_uuid)
         ORDER BY d.task_uuid LIMIT $1",
        &[&ROWS_PER_PASS],
    )?;
    let mut by_task: BTreeMap<Uuid, Vec<DepState>> = BTreeMap::new();
    for r in &rows {
        let state: Option<i32> = r.get("state");
        by_task.entry(r.get("task_uuid")).or_default().push(DepState {
            uuid: r.get("dependency_uuid"),
            any_outcome: r.get("any_outcome"),
            ended: state.map(|s| (TaskState::from_code(s).unwrap_or(TaskState::Unknown), r.get("exit_status"))),
        });
    }
    if rows.len() as i64 == ROWS_PER_PASS {
        // The last task's rows may be cut off: leave it for the next pass.
        by_task.pop_last();
    }
    let (mut ready, mut groups) = (Vec::new(), Vec::new());
    for (task, deps) in by_task {
        match verdict(&deps) {
            Verdict::Wait => {}
            Verdict::Ready => ready.push(task),
            Verdict::Cancel(note) => {
                let id: Option<i64> = tx
                    .query_opt(
                        "SELECT id FROM active_tasks WHERE uuid = $1 AND state = $2 FOR UPDATE",
                        &[&task, &TaskState::Pending.code()],
                    )?
                    .map(|r| r.get("id"));
                if let Some(id) = id {
                    log::info!("task {task} cannot run: {note}");
                    super::archive_as(tx, id, TaskState::Cancelled, Some(&super::not_run()), &note)?;
                }
                tx.execute("DELETE FROM task_dependencies WHERE task_uuid = $1", &[&task])?;
            }
        }
    }
    if !ready.is_empty() {
        groups = tx
            .query(
                "UPDATE active_tasks SET state = $2, note = NULL, updated_at = now()
                 WHERE uuid = ANY($1) AND state = $3 RETURNING group_id",
                &[&ready, &TaskState::Ready.code(), &TaskState::Pending.code()],
            )?
            .iter()
            .map(|r| r.get("group_id"))
            .collect();
        tx.execute("DELETE FROM task_dependencies WHERE task_uuid = ANY($1)", &[&ready])?;
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(any_outcome: bool, ended: Option<(TaskState, Option<i32>)>) -> DepState {
        DepState { uuid: Uuid::nil(), any_outcome, ended }
    }

    #[test]
    fn verdicts() {
        let ok = Some((TaskState::Finished, Some(0)));
        let failed = Some((TaskState::Finished, Some(2 << 8)));
        assert_eq!(verdict(&[dep(false, ok), dep(false, None)]), Verdict::Wait);
        assert_eq!(verdict(&[dep(false, ok), dep(true, failed)]), Verdict::Ready);
        assert!(
            matches!(verdict(&[dep(false, failed), dep(false, None)]), Verdict::Cancel(m) if m.contains("exit code 2"))
        );
        let cancelled = Some((TaskState::Cancelled, None));
        assert!(matches!(verdict(&[dep(false, cancelled)]), Verdict::Cancel(m) if m.contains("cancelled")));
    }
}
