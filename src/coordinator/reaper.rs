//! The reaper: removes workers whose heartbeat is overdue and workers whose task ran past
//! its timeout plus a 60 s grace; their tasks go back to Ready.
//!
//! One reaper acts at a time across coordinators: the one holding a PostgreSQL advisory
//! lock on its own connection. For heartbeats the clock of a new leader starts at its
//! election, so a coordinator outage does not count against workers that could not reach
//! it. A task's timeout needs no such allowance: the worker enforces it itself.
//!
//! ```ignore
//! let handle = reaper::spawn(ctx.clone()); // runs until shutdown
//! ```

use super::metrics::METRICS;
use super::{workers, Ctx};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The advisory lock whose holder is the reaper (the tests hold it to keep every
/// coordinator from reaping).
pub const LOCK: i64 = 0x6d69_746f_0002;
/// Grace past a task's timeout before the coordinator steps in (the worker enforces the
/// timeout itself; this catches workers that cannot).
const TASK_GRACE_SECS: i64 = 60;

pub(crate) fn spawn(ctx: Arc<Ctx>) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || super::supervised(&ctx, "reaper", || run(&ctx)))
        .map_err(|e| log::error!("cannot start the reaper thread: {e}"))
        .ok()
}

fn tick(ctx: &Ctx) -> Duration {
    // Often enough that an unconfirmed claim is put back soon after its lease ends.
    (ctx.cfg.heartbeat_timeout / 4)
        .min(ctx.cfg.claim_lease / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(5))
}

fn run(ctx: &Ctx) {
    let mut leader: Option<(postgres::Client, SystemTime)> = None;
    let (mut next_reap, mut next_vacuum) = (Instant::now(), Instant::now());
    // The wall-clock minute last sampled for the stats.
    let mut sampled: Option<u64> = None;
    while !ctx.shutdown.is_set() {
        let now = Instant::now();
        let due = next_reap.min(next_vacuum);
        if now < due {
            std::thread::sleep(Duration::from_millis(100).min(due - now));
            continue;
        }
        if leader.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            leader = None;
        }
        if leader.is_none() {
            leader = elect(ctx);
        }
        let Some((conn, since)) = leader.as_mut() else {
            // Not the leader: try again at the next tick.
            next_reap = now + tick(ctx);
            next_vacuum = next_reap;
            continue;
        };
        if now >= next_reap {
            next_reap = now + tick(ctx);
            if let Err(e) = reap(ctx, *since) {
                log::warn!("reaping failed (will retry): {e:?}");
            }
        }
        if now >= next_vacuum {
            next_vacuum = now + VACUUM_EVERY;
            vacuum_queue(conn);
            let minute = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60);
            if sampled != Some(minute) {
                if let Err(e) = super::routes::forget_committed_logs(conn) {
                    log::warn!("dropping the live output of committed tasks failed (will retry): {e:?}");
                }
                match super::stats::sample_queues(conn) {
                    Ok(()) => sampled = Some(minute),
                    Err(e) => log::warn!("sampling the Ready queues failed (will retry): {e}"),
                }
            }
        }
    }
}

/// How often the leader looks at the queue table's dead rows.
const VACUUM_EVERY: Duration = Duration::from_secs(1);
/// Dead rows in `active_tasks` worth a VACUUM.
const VACUUM_DEAD_ROWS: i64 = 1000;

/// Every claim and archive leaves a dead row version in `active_tasks`, and the claim's
/// index scan walks over their index entries until they are vacuumed; a busy queue would
/// otherwise wait up to autovacuum's minute with its claims getting slower (measured: a
/// burst of 15,000 cancelled tasks halved end-to-end throughput). At 2,000 tasks/s a
/// second is 2,000 dead rows. VACUUM of this small, hot table takes milliseconds and does
/// not block the queue.
fn vacuum_queue(conn: &mut postgres::Client) {
    let dead = conn
        .query_opt("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'active_tasks'", &[])
        .ok()
        .flatten()
        .map(|r| r.get::<_, i64>("n_dead_tup"))
        .unwrap_or(0);
    if dead >= VACUUM_DEAD_ROWS {
        let t0 = Instant::now();
        match conn.batch_execute("VACUUM active_tasks") {
            Ok(()) => log::debug!("vacuumed active_tasks ({dead} dead rows) in {:?}", t0.elapsed()),
            Err(e) => log::warn!("VACUUM active_tasks failed: {e}"),
        }
    }
}

/// Tries to become the reaper; holds the lock for as long as the connection lives.
fn elect(ctx: &Ctx) -> Option<(postgres::Client, SystemTime)> {
    let mut c = super::db::connect(&ctx.cfg.db_url).ok()?;
    let got: bool = c.query_one("SELECT pg_try_advisory_lock($1) AS got", &[&LOCK]).ok()?.get("got");
    if !got {
        return None;
    }
    let since: SystemTime = c.query_one("SELECT now()", &[]).ok()?.get("now");
    log::info!("this coordinator now reaps lost workers and overdue tasks");
    Some((c, since))
}

/// The longest timeout the overdue check reads from a row: no accepted timeout is longer,
/// and a row from before that bound (or written by hand) must not push the deadline past
/// PostgreSQL's timestamp range, which would fail the statement for every row.
const MAX_TIMEOUT_SECS: i64 = crate::api::time::MAX_DURATION.as_secs() as i64;

/// One pass: silent workers and workers holding a task past its timeout are removed.
/// Each step runs on its own: a failing statement is logged and the others still run, so
/// one bad row cannot stop the reaper's work on every other.
fn reap(ctx: &Ctx, since: SystemTime) -> Result<(), super::error::ApiError> {
    let mut db = ctx.pool.get()?;
    if let Err(e) = expire_claims(ctx, &mut db, since) {
        log::warn!("putting back unconfirmed claims failed (will retry): {e:?}");
    }
    if let Err(e) = release_waiting(ctx, &mut db) {
        log::warn!("releasing tasks whose retry delay or dependencies are over failed (will retry): {e:?}");
    }
    // Bounded like every configured duration; the clamp keeps the interval in range anyway.
    let timeout = ctx.cfg.heartbeat_timeout.as_secs_f64().min(MAX_TIMEOUT_SECS as f64);
    let silent: Vec<(i64, uuid::Uuid)> = match db.query(
        "SELECT id, worker_id FROM workers WHERE greatest(last_heartbeat, $1) < now() - make_interval(secs => $2)",
        &[&since, &timeout],
    ) {
        Ok(rows) => rows.iter().map(|r| (r.get("id"), r.get("worker_id"))).collect(),
        Err(e) => {
            log::warn!("looking for silent workers failed (will retry): {e}");
            Vec::new()
        }
    };
    let overdue: Vec<(i64, uuid::Uuid)> = match db.query(
        "SELECT w.id, w.worker_id FROM active_tasks t JOIN workers w ON w.id = t.assigned_worker
         WHERE t.state = $3
           AND t.updated_at + make_interval(secs => least(greatest(t.timeout, 0), $2) + $1) < now()",
        &[&TASK_GRACE_SECS, &MAX_TIMEOUT_SECS, &crate::api::TaskState::Running.code()],
    ) {
        Ok(rows) => rows.iter().map(|r| (r.get("id"), r.get("worker_id"))).collect(),
        Err(e) => {
            log::warn!("looking for overdue tasks failed (will retry): {e}");
            Vec::new()
        }
    };
    if silent.is_empty() && overdue.is_empty() {
        return Ok(());
    }
    for (_, u) in &silent {
        log::warn!(
            "worker {u} sent no heartbeat for {:?}; removing it and requeueing its task",
            ctx.cfg.heartbeat_timeout
        );
    }
    for (_, u) in &overdue {
        log::warn!(
            "worker {u} holds a task past its timeout plus {TASK_GRACE_SECS}s; removing it and requeueing the task"
        );
    }
    let mut ids: Vec<i64> = silent.iter().chain(overdue.iter()).map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    if let Err(e) = remove(ctx, &mut db, &ids) {
        // One worker whose removal fails must not keep the others: try them one by one.
        log::warn!("removing {} workers at once failed ({e:?}); removing them one at a time", ids.len());
        for id in &ids {
            if let Err(e) = remove(ctx, &mut db, std::slice::from_ref(id)) {
                log::warn!("removing worker row {id} failed (will retry): {e:?}");
            }
        }
    }
    Ok(())
}

/// Puts back tasks whose claim was not confirmed within the lease: the fetch that took them
/// was answered to a worker that never got the answer (it died, or its connection did).
/// The worker stays registered (it may be alive and fetch again); a task a user asked to
/// cancel meanwhile is archived as cancelled instead. The lease clock is PostgreSQL's, so
/// coordinators' clocks do not matter; as for heartbeats, a new leader gives every lease
/// a full term from its election, so a coordinator outage that kept workers from
/// confirming does not take their tasks away.
fn expire_claims(ctx: &Ctx, db: &mut super::db::Conn, since: SystemTime) -> Result<(), super::error::ApiError> {
    let lease = ctx.cfg.claim_lease.as_secs_f64().min(MAX_TIMEOUT_SECS as f64);
    let mut tx = db.transaction()?;
    let rows = tx.query(
        "SELECT id, uuid, group_id, cancel_requested FROM active_tasks
         WHERE claim_deadline < now() AND state = $1 AND $2::timestamptz + make_interval(secs => $3) < now()
         FOR UPDATE SKIP LOCKED",
        &[&crate::api::TaskState::Running.code(), &since, &lease],
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    let (mut requeue, mut cancel) = (Vec::new(), Vec::new());
    let mut groups: Vec<i64> = Vec::new();
    for r in &rows {
        let (id, uuid, group, cancelled): (i64, uuid::Uuid, i64, bool) =
            (r.get("id"), r.get("uuid"), r.get("group_id"), r.get("cancel_requested"));
        log::warn!("task {uuid} was handed out but not confirmed within {:?}; putting it back", ctx.cfg.claim_lease);
        if cancelled {
            cancel.push(id);
        } else {
            requeue.push(id);
            groups.push(group);
        }
    }
    let all: Vec<i64> = requeue.iter().chain(cancel.iter()).copied().collect();
    // Tasks with a retry policy record the lost attempt and follow their policy.
    let (retried, retried_groups) = super::tasks::retry::lost(&mut tx, &requeue)?;
    requeue.retain(|id| !retried.contains(id));
    groups.extend(retried_groups);
    tx.execute("UPDATE workers SET assigned_task_id = NULL WHERE assigned_task_id = ANY($1)", &[&all])?;
    if !cancel.is_empty() {
        let gone = super::tasks::archive_cancelled(&mut tx, &cancel, &[crate::api::TaskState::Running.code()])?;
        groups.extend(super::tasks::dependencies::release_dependents(&mut tx, &gone)?);
    }
    tx.execute(
        "UPDATE active_tasks SET state = $2, assigned_worker = NULL, claim_deadline = NULL, updated_at = now()
         WHERE id = ANY($1)",
        &[&requeue, &crate::api::TaskState::Ready.code()],
    )?;
    groups.sort_unstable();
    groups.dedup();
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    tx.commit()?;
    METRICS.requeued_tasks.add(requeue.len() as u64);
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
    Ok(())
}

/// Makes Ready the tasks whose retry delay is over and those whose dependencies have
/// all ended (cancelling those whose dependencies failed), and wakes their groups.
fn release_waiting(ctx: &Ctx, db: &mut super::db::Conn) -> Result<(), super::error::ApiError> {
    let mut tx = db.transaction()?;
    let mut groups = super::tasks::retry::promote_due(&mut tx)?;
    groups.extend(super::tasks::dependencies::resolve(&mut tx)?);
    groups.sort_unstable();
    groups.dedup();
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    tx.commit()?;
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
    Ok(())
}

/// Removes workers in one transaction and wakes the groups whose tasks went back to Ready.
fn remove(ctx: &Ctx, db: &mut super::db::Conn, ids: &[i64]) -> Result<(), super::error::ApiError> {
    let mut tx = db.transaction()?;
    let (groups, requeued) = workers::remove_counted(&mut tx, ids)?;
    for g in &groups {
        ctx.scheduler.notify_group(&mut tx, *g)?;
    }
    // Their fetches may still be parked somewhere: answered with 401 now.
    ctx.scheduler.notify_workers(&mut tx, ids)?;
    tx.commit()?;
    METRICS.reaped_workers.add(ids.len() as u64);
    METRICS.requeued_tasks.add(requeued as u64);
    for g in groups {
        ctx.scheduler.wake_group(g);
    }
    ctx.scheduler.wake_workers(ids);
    Ok(())
}
