//! The claim: the statements that hand a worker its task, and what a fetch that found
//! nothing parks with.

use super::{ParkAs, WorkerToken};
use crate::api::{GroupWorkerRole, TaskSpec, TaskState, WorkerState, WorkerTaskResp};
use crate::coordinator::error::ApiError;
use crate::coordinator::Ctx;
use postgres::types::Json;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The claim, in one statement that also authenticates the worker: the best Ready task
/// the worker may run, unless it holds a Running task (see `WORKER`). Runs on the queue
/// pool ([`super::super::db::QUEUE_SETUP`]). Kept lean: its executor setup is a good part of its
/// cost, so everything a successful claim does not need is left to `WORKER`.
///
/// It reads each of the worker's groups apart, on the `active_tasks_group_ready` index
/// (Ready rows by group, in claim order: priority, then age), so a worker of one group
/// never walks past the tasks of others, nor past tasks waiting in Pending. `heads` is the
/// first task each group offers the worker (tags and array caps applied), best first;
/// `cand` then locks, group by group in that order, the first such task nobody else is
/// claiming (SKIP LOCKED) and stops at the first group that has one. Only the task taken
/// is locked: locking every group's head would make concurrent claims skip tasks nobody
/// takes. Under concurrent claims the order across groups is as exact as SKIP LOCKED
/// lets it be within one; alone, a claim takes exactly the best task.
///
/// The enum codes are written into the text (from [`crate::api`]'s one list of codes)
/// rather than bound, so the statement PostgreSQL plans is the one tuned with EXPLAIN: it
/// is prepared once per connection and soon runs on a generic plan, where `state = $n`
/// would lose the row estimate of that one state and could not match a partial index
/// whose predicate names it. The text is built once.
pub static CLAIM: LazyLock<String> = LazyLock::new(|| {
    // A Ready task of group `{g}` this worker may run now; the same test in both steps.
    let eligible = |g: &str| {
        format!(
            "t.group_id = {g} AND t.assigned_worker IS NULL AND t.state = {ready}
              AND t.tags <@ (SELECT tags FROM w)
              AND (t.array_id IS NULL
                   OR NOT EXISTS (SELECT 1 FROM task_arrays a WHERE a.id = t.array_id AND a.running >= a.max_running))",
            ready = TaskState::Ready.code(),
        )
    };
    format!(
        "WITH w AS (SELECT id, tags, assigned_task_id, confirms_claims FROM workers WHERE worker_id = $1 AND state = {normal}
               FOR NO KEY UPDATE),
    heads AS (
        SELECT gw.group_id, head.priority, head.id FROM group_worker gw
        CROSS JOIN LATERAL (
            SELECT t.priority, t.id FROM active_tasks t
            WHERE {eligible_head}
            ORDER BY t.priority DESC, t.id
            LIMIT 1
        ) head
        WHERE gw.worker_id = (SELECT id FROM w) AND gw.role >= {write}
          AND NOT EXISTS (SELECT 1 FROM active_tasks h WHERE h.id = (SELECT assigned_task_id FROM w) AND h.state = {running})
        ORDER BY head.priority DESC, head.id
    ),
    cand AS (
        SELECT taken.id FROM heads
        CROSS JOIN LATERAL (
            SELECT t.id FROM active_tasks t
            WHERE {eligible_cand}
            ORDER BY t.priority DESC, t.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) taken
        LIMIT 1
    ), claimed AS (
        UPDATE active_tasks t SET state = {running}, assigned_worker = (SELECT id FROM w), updated_at = now(), started_at = now(),
            claim_deadline = CASE WHEN (SELECT confirms_claims FROM w) THEN now() + make_interval(secs => $2) END
        FROM cand WHERE t.id = cand.id
        RETURNING t.id, t.uuid, t.timeout, t.upstream_task_uuid, t.spec,
            extract(epoch FROM now() - t.created_at)::float8 AS waited
    ), assign AS (
        UPDATE workers SET assigned_task_id = claimed.id FROM claimed WHERE workers.id = (SELECT id FROM w)
    )
    SELECT * FROM claimed",
        normal = WorkerState::Normal.code(),
        running = TaskState::Running.code(),
        write = GroupWorkerRole::Write.code(),
        eligible_head = eligible("gw.group_id"),
        eligible_cand = eligible("heads.group_id"),
    )
});

/// When the claim found nothing: whether the worker exists (no row: it was removed), the
/// Running task it holds but evidently never received (a fetch while holding one means
/// the answer was lost), and what it may run, for parking. Codes written in as for
/// [`CLAIM`], which shares its plan concerns.
static WORKER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.id, t.uuid, t.timeout, t.upstream_task_uuid, t.spec, w.id AS worker_row, w.tags AS worker_tags,
           ARRAY(SELECT gw.group_id FROM group_worker gw WHERE gw.worker_id = w.id AND gw.role >= {write}) AS worker_groups
    FROM workers w
    LEFT JOIN active_tasks t ON t.id = w.assigned_task_id AND t.assigned_worker = w.id AND t.state = {running}
    WHERE w.worker_id = $1",
        write = GroupWorkerRole::Write.code(),
        running = TaskState::Running.code(),
    )
});

/// What a fetch found.
pub(crate) enum Claimed {
    Task(WorkerTaskResp),
    /// Nothing to run now; park with this if the worker is willing to wait.
    Nothing(ParkAs),
}

/// The task in a row of [`CLAIM`] or [`WORKER`].
fn task(r: &postgres::Row) -> Result<WorkerTaskResp, ApiError> {
    let timeout: i64 = r.get("timeout");
    Ok(WorkerTaskResp {
        id: r.get("id"),
        uuid: r.get("uuid"),
        timeout: Duration::from_secs(timeout.max(0) as u64),
        upstream_task_uuid: r.get("upstream_task_uuid"),
        // Straight from the column's bytes to the spec, with no JSON value in between.
        spec: r
            .try_get::<_, Json<TaskSpec>>("spec")
            .map_err(|e| ApiError::Internal(format!("stored task spec does not parse: {e}")))?
            .0,
    })
}

/// Gives the worker its task, or says what to park with. `WrongCredentials` when the
/// worker no longer exists.
pub(crate) fn claim(
    ctx: &Ctx,
    db: &mut super::super::db::Conn,
    worker: WorkerToken,
    deadline: Instant,
) -> Result<Claimed, ApiError> {
    let seq = ctx.scheduler.wake_seq();
    let st = db.prepared(CLAIM.as_str())?;
    let lease = ctx.cfg.claim_lease.as_secs_f64();
    if let Some(r) = db.query_opt(&st, &[&worker.uuid, &lease])? {
        let m = &super::super::metrics::METRICS;
        m.claims.inc();
        // The database's clock at both ends, so coordinators' clocks do not matter.
        let waited: f64 = r.get("waited");
        m.submit_to_fetch
            .observe(super::super::metrics::LATENCY_BOUNDS, Duration::from_secs_f64(waited.clamp(0.0, 1e9)));
        return Ok(Claimed::Task(task(&r)?));
    }
    let st = db.prepared(WORKER.as_str())?;
    let r = db.query_opt(&st, &[&worker.uuid])?.ok_or(ApiError::WrongCredentials)?;
    if r.get::<_, Option<i64>>("id").is_some() {
        return Ok(Claimed::Task(task(&r)?));
    }
    Ok(Claimed::Nothing(ParkAs {
        worker,
        worker_id: r.get("worker_row"),
        deadline,
        tags: r.get("worker_tags"),
        groups: r.get("worker_groups"),
        seq,
    }))
}
