//! Dependencies: a task submitted with `after` (every listed task must end Finished with
//! exit 0) or `after_any` (every listed task must end, however) waits in Pending, holding
//! no worker, with a `task_dependencies` row per dependency. It is settled (made Ready once
//! its dependencies have all ended, or archived as Cancelled with a note naming the one
//! that failed) in the transaction that archives its last dependency: the commit, the
//! cancellation or the coordinator's own archiving calls [`release_dependents`] with the
//! uuids it archived, so a dependent is Ready the moment that transaction commits. The
//! reaper's [`resolve`] settles whatever that missed (a dependent submitted while its
//! dependency was being committed, more dependents than one transaction settles), on
//! whichever coordinator holds its lock. A task ends only when it is archived (a task
//! being retried stays active), so dependents see only final outcomes. Cycles cannot
//! arise: dependencies exist before their dependent is submitted.
//!
//! ```ignore
//! dependencies::record(&mut tx, &[uuid], &req)?;              // in the submit's transaction
//! let groups = dependencies::release_dependents(&mut tx, &[archived_uuid])?; // wake them after commit
//! let groups = dependencies::resolve(&mut tx)?;               // reaper: the rest
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

/// Settles the just-submitted waiting tasks `uuids` whose dependencies have already
/// ended, in the submit's transaction, so they need not wait for the reaper. Their insert
/// has already told the group's workers of Ready tasks.
pub fn settle_submitted(tx: &mut impl GenericClient, uuids: &[Uuid]) -> Result<(), ApiError> {
    for chunk in uuids.chunks(TASKS_PER_SETTLE) {
        settle(tx, chunk)?;
    }
    Ok(())
}

/// The most waiting tasks one [`settle`] call reads; with at most
/// [`crate::coordinator::limits::MAX_DEPENDENCIES`] rows each, a bounded read.
const TASKS_PER_SETTLE: usize = 100;
/// The most waiting tasks one transaction settles, cascades included; the rest wait for
/// the reaper's next pass.
const TASKS_PER_TRANSACTION: usize = 1000;

/// What became of one waiting task.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Wait,
    Ready,
    /// Cannot run: the note says which dependency failed.
    Cancel(String),
}

/// One dependency as [`settle`] reads it: whether it must succeed, and how it ended (its
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

/// What one [`settle`] did: the groups of tasks it made Ready, and the uuids of tasks it
/// archived as Cancelled (whose own dependents must be settled in turn).
#[derive(Default)]
struct Settled {
    groups: Vec<i64>,
    cancelled: Vec<Uuid>,
}

/// Settles the waiting tasks among `candidates` (at most [`TASKS_PER_SETTLE`]). Each is
/// locked first, in id order, so two transactions ending two dependencies of one task
/// take turns: the second reads what the first committed, and one of them makes the task
/// Ready.
fn settle(tx: &mut impl GenericClient, candidates: &[Uuid]) -> Result<Settled, ApiError> {
    let locked: Vec<(i64, Uuid)> = tx
        .query(
            "SELECT id, uuid FROM active_tasks WHERE uuid = ANY($1) AND state = $2 ORDER BY id FOR UPDATE",
            &[&candidates, &TaskState::Pending.code()],
        )?
        .iter()
        .map(|r| (r.get("id"), r.get("uuid")))
        .collect();
    let mut out = Settled::default();
    if locked.is_empty() {
        return Ok(out);
    }
    let uuids: Vec<Uuid> = locked.iter().map(|(_, u)| *u).collect();
    let rows = tx.query(
        "SELECT d.task_uuid, d.dependency_uuid, d.any_outcome, a.state, (a.result->>'exit_status')::int AS exit_status
         FROM task_dependencies d LEFT JOIN archived_tasks a ON a.uuid = d.dependency_uuid
         WHERE d.task_uuid = ANY($1)",
        &[&uuids],
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
    let mut ready = Vec::new();
    for (id, task) in locked {
        // A Pending task without rows is waiting out a retry backoff or is a downstream
        // task: not this module's to release.
        let Some(deps) = by_task.get(&task) else { continue };
        match verdict(deps) {
            Verdict::Wait => {}
            Verdict::Ready => ready.push(task),
            Verdict::Cancel(note) => {
                log::info!("task {task} cannot run: {note}");
                super::archive_as(tx, id, TaskState::Cancelled, Some(&super::not_run()), &note)?;
                tx.execute("DELETE FROM task_dependencies WHERE task_uuid = $1", &[&task])?;
                out.cancelled.push(task);
            }
        }
    }
    if !ready.is_empty() {
        out.groups = tx
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
    Ok(out)
}

/// Settles the tasks waiting on any of `ended`, tasks this transaction has just archived,
/// and in turn the dependents of those it had to cancel, up to [`TASKS_PER_TRANSACTION`]
/// tasks. Returns the groups with tasks now Ready, for the caller to notify inside the
/// transaction and wake after its commit.
pub fn release_dependents(tx: &mut impl GenericClient, ended: &[Uuid]) -> Result<Vec<i64>, ApiError> {
    let mut groups = Vec::new();
    let mut frontier: Vec<Uuid> = ended.to_vec();
    let mut budget = TASKS_PER_TRANSACTION;
    while !frontier.is_empty() && budget > 0 {
        let waiting: Vec<Uuid> = tx
            .query(
                "SELECT DISTINCT task_uuid FROM task_dependencies WHERE dependency_uuid = ANY($1) LIMIT $2",
                &[&frontier, &(budget as i64)],
            )?
            .iter()
            .map(|r| r.get("task_uuid"))
            .collect();
        budget -= waiting.len();
        let mut next = Vec::new();
        for chunk in waiting.chunks(TASKS_PER_SETTLE) {
            let s = settle(tx, chunk)?;
            groups.extend(s.groups);
            next.extend(s.cancelled);
        }
        frontier = next;
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// The reaper's pass over the waiting tasks: those with an ended dependency that no
/// transaction settled are settled now (and the dependents of those cancelled in turn),
/// and rows of tasks that are no longer waiting (a user cancelled them) go. Returns the
/// groups with tasks now Ready.
pub fn resolve(tx: &mut impl GenericClient) -> Result<Vec<i64>, ApiError> {
    tx.execute(
        "DELETE FROM task_dependencies d
         WHERE NOT EXISTS (SELECT 1 FROM active_tasks t WHERE t.uuid = d.task_uuid AND t.state = $1)",
        &[&TaskState::Pending.code()],
    )?;
    let waiting: Vec<Uuid> = tx
        .query(
            "SELECT DISTINCT d.task_uuid FROM task_dependencies d JOIN archived_tasks a ON a.uuid = d.dependency_uuid
             LIMIT $1",
            &[&(TASKS_PER_TRANSACTION as i64)],
        )?
        .iter()
        .map(|r| r.get("task_uuid"))
        .collect();
    let (mut groups, mut cancelled) = (Vec::new(), Vec::new());
    for chunk in waiting.chunks(TASKS_PER_SETTLE) {
        let s = settle(tx, chunk)?;
        groups.extend(s.groups);
        cancelled.extend(s.cancelled);
    }
    groups.extend(release_dependents(tx, &cancelled)?);
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
