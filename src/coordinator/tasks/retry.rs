//! Retries: what happens when an attempt of a task with a retry policy ends.
//!
//! Every ended attempt of such a task is recorded in `task_attempts`. When the outcome is
//! one the policy retries on and attempts remain, the task keeps its row and uuid and
//! goes back to the queue: Ready at once when the delay is zero, else Pending with
//! `not_before`, which [`promote_due`] (run by the reaper) turns into Ready. Otherwise the
//! caller does what it does for any task (archive it, or requeue it when its worker was
//! lost and the policy does not count losses), so watchers and dependents see only the
//! final outcome.
//!
//! ```ignore
//! match retry::end_attempt(&mut tx, task_id, Outcome::Failure, Some(&result))? {
//!     Decision::Retry { group_id, ready_now } => { /* wake the group if ready_now */ }
//!     Decision::Keep => { /* archive as usual */ }
//! }
//! ```

use crate::api::{RetryOn, RetryPolicy, TaskAttempt, TaskResultSpec, TaskState, Timestamp};
use crate::coordinator::error::ApiError;
use crate::coordinator::limits::MAX_RETRY_BACKOFF;
use postgres::GenericClient;
use std::time::Duration;
use uuid::Uuid;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Timeout,
    Lost,
    Cancelled,
    /// Anything else the worker reported (a resource or watch failure): never retried.
    Other,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Lost => "lost",
            Outcome::Cancelled => "cancelled",
            Outcome::Other => "other",
        }
    }

    fn retried_as(self) -> Option<RetryOn> {
        match self {
            Outcome::Failure => Some(RetryOn::Failure),
            Outcome::Timeout => Some(RetryOn::Timeout),
            Outcome::Lost => Some(RetryOn::Lost),
            _ => None,
        }
    }

    /// The outcome of a committed attempt: its state, result and whether a user cancelled it.
    pub fn of_commit(state: TaskState, result: &TaskResultSpec, cancel_requested: bool) -> Outcome {
        use crate::api::TaskResultMessage as M;
        match (state, result.msg) {
            _ if cancel_requested => Outcome::Cancelled,
            (TaskState::Finished, _) if result.exit_status == 0 => Outcome::Success,
            (TaskState::Finished, _) => Outcome::Failure,
            (_, Some(M::ExecTimeout)) => Outcome::Timeout,
            (_, Some(M::UserCancellation)) => Outcome::Cancelled,
            _ => Outcome::Other,
        }
    }
}

/// What the caller does next.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// The task went back to the queue (Ready now when `ready_now`, else after a delay);
    /// its worker no longer holds it.
    Retry { group_id: i64, ready_now: bool },
    /// No retry: handle the task as if it had no policy.
    Keep,
}

/// The delay before retry number `n` (1 for the first): `base` doubled per earlier retry,
/// capped at [`MAX_RETRY_BACKOFF`], of which the upper half is spread by `jitter` (0 to 1)
/// so that tasks failing together do not all come back together.
pub fn backoff(base: Duration, n: u32, jitter: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = doubled.min(MAX_RETRY_BACKOFF);
    d / 2 + d.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

fn jitter() -> f64 {
    (Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Records the end of the current attempt of active task `id` (which the caller has
/// locked) and, if its policy says so, puts it back in the queue. Tasks without a policy
/// are left alone ([`Decision::Keep`], nothing recorded).
pub fn end_attempt(
    tx: &mut impl GenericClient,
    id: i64,
    outcome: Outcome,
    result: Option<&serde_json::Value>,
) -> Result<Decision, ApiError> {
    let Some(row) = tx.query_opt(
        "SELECT t.uuid, t.group_id, t.retry_policy, t.started_at, t.cancel_requested, w.worker_id
         FROM active_tasks t LEFT JOIN workers w ON w.id = t.assigned_worker
         WHERE t.id = $1 AND t.retry_policy IS NOT NULL",
        &[&id],
    )?
    else {
        return Ok(Decision::Keep);
    };
    let (uuid, group_id): (Uuid, i64) = (row.get("uuid"), row.get("group_id"));
    let policy: RetryPolicy = serde_json::from_value(row.get("retry_policy"))
        .map_err(|e| ApiError::Internal(format!("stored retry policy of task {uuid} does not parse: {e}")))?;
    let cancelled: bool = row.get("cancel_requested");
    let earlier: Vec<String> = tx
        .query("SELECT outcome FROM task_attempts WHERE task_uuid = $1", &[&uuid])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let attempt = earlier.len() as i32 + 1;
    tx.execute(
        "INSERT INTO task_attempts (task_uuid, attempt, outcome, worker, started_at, result)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &uuid,
            &attempt,
            &outcome.as_str(),
            &row.get::<_, Option<Uuid>>("worker_id"),
            &row.get::<_, Option<std::time::SystemTime>>("started_at"),
            &result,
        ],
    )?;
    let Some(on) = outcome.retried_as().filter(|o| policy.on.contains(o) && !cancelled) else {
        return Ok(Decision::Keep);
    };
    // Only outcomes the policy counts use up its retries (a lost worker it does not
    // count is requeued as for any task).
    let counted =
        1 + earlier.iter().filter(|o| RetryOn::parse(o).is_some_and(|o| policy.on.contains(&o))).count() as u32;
    if counted > policy.max {
        return Ok(Decision::Keep);
    }
    let delay = backoff(policy.backoff, counted, jitter());
    let ready_now = delay.is_zero();
    let state = if ready_now { TaskState::Ready } else { TaskState::Pending };
    // Said while the task waits; the attempts list keeps the history.
    let note = (!ready_now).then(|| {
        format!(
            "attempt {attempt} ended: {}; retry {counted} of {} waits {}",
            on.as_str(),
            policy.max,
            humantime::format_duration(round(delay))
        )
    });
    tx.execute(
        "UPDATE active_tasks SET state = $2, assigned_worker = NULL, claim_deadline = NULL, started_at = NULL,
            result = NULL, updated_at = now(), note = $3,
            not_before = CASE WHEN $4::float8 > 0 THEN now() + make_interval(secs => $4) END
         WHERE id = $1",
        &[&id, &state.code(), &note, &delay.as_secs_f64()],
    )?;
    tx.execute("UPDATE workers SET assigned_task_id = NULL, updated_at = now() WHERE assigned_task_id = $1", &[&id])?;
    Ok(Decision::Retry { group_id, ready_now })
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// The tasks among active tasks `ids` whose worker was lost: each with a policy gets its
/// attempt recorded and is retried or, when its policy counts losses and none are left,
/// archived as Cancelled (and the tasks waiting for it settled). Returns the ids handled
/// (the caller must not requeue them) and the groups with tasks Ready now.
pub fn lost(tx: &mut impl GenericClient, ids: &[i64]) -> Result<(Vec<i64>, Vec<i64>), ApiError> {
    let with_policy: Vec<(i64, bool)> = tx
        .query(
            "SELECT id, retry_policy FROM active_tasks WHERE id = ANY($1) AND retry_policy IS NOT NULL AND NOT cancel_requested",
            &[&ids],
        )?
        .iter()
        .map(|r| {
            let counts_losses = serde_json::from_value::<RetryPolicy>(r.get("retry_policy"))
                .map(|p| p.on.contains(&RetryOn::Lost))
                .unwrap_or(false);
            (r.get("id"), counts_losses)
        })
        .collect();
    let (mut handled, mut groups) = (Vec::new(), Vec::new());
    for (id, counts_losses) in with_policy {
        match end_attempt(tx, id, Outcome::Lost, None)? {
            Decision::Retry { group_id, ready_now } => {
                handled.push(id);
                if ready_now {
                    groups.push(group_id);
                }
            }
            Decision::Keep if counts_losses => {
                let note = "its worker was lost and no retries are left";
                let gone = super::archive_as(tx, id, TaskState::Cancelled, Some(&super::not_run()), note)?;
                groups.extend(super::dependencies::release_dependents(tx, gone.as_slice())?);
                handled.push(id);
            }
            Decision::Keep => {}
        }
    }
    groups.sort_unstable();
    groups.dedup();
    Ok((handled, groups))
}

/// Makes Ready the tasks whose retry delay is over; returns their groups.
pub fn promote_due(tx: &mut impl GenericClient) -> Result<Vec<i64>, ApiError> {
    let mut groups: Vec<i64> = tx
        .query(
            "UPDATE active_tasks SET state = $1, not_before = NULL, note = NULL, updated_at = now()
             WHERE not_before <= now() AND state = $2 AND assigned_worker IS NULL
             RETURNING group_id",
            &[&TaskState::Ready.code(), &TaskState::Pending.code()],
        )?
        .iter()
        .map(|r| r.get("group_id"))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// The ended attempts of a task, oldest first, each with the artifacts it uploaded (none
/// for a task without a policy).
pub fn attempts(db: &mut impl GenericClient, uuid: Uuid) -> Result<Vec<TaskAttempt>, ApiError> {
    let mut artifacts = super::attempt_artifacts(db, uuid)?;
    let rows = db.query(
        "SELECT attempt, outcome, worker, started_at, ended_at, result FROM task_attempts
         WHERE task_uuid = $1 ORDER BY attempt",
        &[&uuid],
    )?;
    rows.iter()
        .map(|r| {
            let result: Option<serde_json::Value> = r.get("result");
            let attempt: i32 = r.get("attempt");
            Ok(TaskAttempt {
                attempt,
                outcome: r.get("outcome"),
                worker: r.get("worker"),
                started_at: r.get::<_, Option<std::time::SystemTime>>("started_at").map(Timestamp),
                ended_at: Timestamp(r.get("ended_at")),
                result: result
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| ApiError::Internal(format!("stored attempt result does not parse: {e}")))?,
                artifacts: artifacts.remove(&attempt).unwrap_or_default(),
            })
        })
        .collect()
}

/// The retry policy of the active task `id`, if it has one.
pub fn policy(db: &mut impl GenericClient, id: i64) -> Result<Option<RetryPolicy>, ApiError> {
    let Some(row) =
        db.query_opt("SELECT retry_policy FROM active_tasks WHERE id = $1 AND retry_policy IS NOT NULL", &[&id])?
    else {
        return Ok(None);
    };
    serde_json::from_value(row.get("retry_policy"))
        .map(Some)
        .map_err(|e| ApiError::Internal(format!("stored retry policy of task {id} does not parse: {e}")))
}

/// Checks a submitted policy against the bounds.
pub fn validate(policy: &RetryPolicy) -> Result<(), ApiError> {
    use crate::coordinator::limits::MAX_RETRIES;
    if policy.max > MAX_RETRIES {
        return Err(ApiError::bad(format!("retries.max is {}; at most {MAX_RETRIES}", policy.max)));
    }
    if policy.backoff > MAX_RETRY_BACKOFF {
        return Err(ApiError::bad(format!(
            "retries.backoff is {}; at most {}",
            humantime::format_duration(policy.backoff),
            humantime::format_duration(MAX_RETRY_BACKOFF)
        )));
    }
    if policy.on.is_empty() {
        return Err(ApiError::bad("retries.on is empty: name failure, timeout or lost (or leave it out for all)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(30), 1, 1.0), s(30));
        assert_eq!(backoff(s(30), 1, 0.0), s(15));
        assert_eq!(backoff(s(30), 3, 1.0), s(120));
        assert_eq!(backoff(s(30), 100, 1.0), MAX_RETRY_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 5, 0.7), Duration::ZERO);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn outcomes_of_commits() {
        let r = |exit_status, msg| TaskResultSpec { exit_status, msg };
        use crate::api::TaskResultMessage as M;
        assert_eq!(Outcome::of_commit(TaskState::Finished, &r(0, None), false), Outcome::Success);
        assert_eq!(Outcome::of_commit(TaskState::Finished, &r(3, None), false), Outcome::Failure);
        assert_eq!(Outcome::of_commit(TaskState::Finished, &r(3, None), true), Outcome::Cancelled);
        assert_eq!(Outcome::of_commit(TaskState::Cancelled, &r(0, Some(M::ExecTimeout)), false), Outcome::Timeout);
        assert_eq!(Outcome::of_commit(TaskState::Cancelled, &r(0, Some(M::WatchTimeout)), false), Outcome::Other);
    }
}
