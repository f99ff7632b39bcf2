//! Handing tasks to workers: the claim, parked long-poll fetches, and the wake-ups that
//! answer them.
//!
//! The claim is one SQL statement: the best Ready task the worker may run (its group role
//! is Write or Admin, the task's tags are a subset of the worker's), highest priority
//! first, then oldest, taken with `FOR UPDATE SKIP LOCKED` so no task goes out twice.
//!
//! A fetch with `?wait=N` that finds nothing is parked: the dispatcher thread owns the
//! request (no handler thread waits) and retries the claim when a task becomes ready in
//! one of the worker's groups — signalled directly by this coordinator's handlers, and by
//! other coordinators through PostgreSQL `NOTIFY` — or answers `null` at the deadline.
//!
//! ```ignore
//! if let Some(task) = scheduler::claim(&mut db, worker_id)? { /* answer it */ }
//! ctx.scheduler.task_ready(group_id); // after committing a newly Ready task
//! ```

use super::error::ApiError;
use super::server::{respond, Reply};
use super::Ctx;
use crate::api::WorkerTaskResp;
use crossbeam_channel::{unbounded, Receiver, Sender};
use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The NOTIFY channel coordinators share.
pub const CHANNEL: &str = "mito_tasks";

/// A fetch waiting for a task.
pub struct Parked {
    pub req: tiny_http::Request,
    pub worker_id: i64,
    pub deadline: Instant,
    groups: Vec<i64>,
}

impl Parked {
    pub fn new(req: tiny_http::Request, worker_id: i64, deadline: Instant) -> Parked {
        Parked { req, worker_id, deadline, groups: Vec::new() }
    }
}

enum Event {
    Park(Parked),
    /// Tasks may have become ready in this group.
    Group(i64),
    /// This worker's tags or groups changed.
    Worker(i64),
    /// Anything may have changed (e.g. notifications were missed).
    All,
}

/// The handle handlers use to park fetches and announce ready tasks.
pub struct Scheduler {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    /// Identifies this coordinator in NOTIFY payloads, so it skips its own.
    pub instance: String,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl Scheduler {
    pub fn new() -> Scheduler {
        let (tx, rx) = unbounded();
        Scheduler { tx, rx, instance: Uuid::new_v4().simple().to_string() }
    }

    pub fn park(&self, p: Parked) {
        if let Err(e) = self.tx.send(Event::Park(p)) {
            if let Event::Park(p) = e.0 {
                respond(p.req, Reply::null());
            }
        }
    }

    /// Wakes parked fetches of workers serving `group_id` (call after the commit).
    pub fn task_ready(&self, group_id: i64) {
        let _ = self.tx.send(Event::Group(group_id));
    }

    /// Wakes the parked fetch of a worker whose tags or groups changed.
    pub fn worker_changed(&self, worker_id: i64) {
        let _ = self.tx.send(Event::Worker(worker_id));
    }

    /// Queues a NOTIFY (sent at commit) telling other coordinators about ready tasks.
    pub fn notify_group(&self, tx: &mut impl GenericClient, group_id: i64) -> Result<(), ApiError> {
        let payload = format!("{}|g:{group_id}", self.instance);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        Ok(())
    }

    /// Queues a NOTIFY about a worker's changed tags or groups.
    pub fn notify_worker(&self, tx: &mut impl GenericClient, worker_id: i64) -> Result<(), ApiError> {
        let payload = format!("{}|w:{worker_id}", self.instance);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        Ok(())
    }
}

const REDELIVER: &str = "SELECT t.id, t.uuid, t.timeout, t.upstream_task_uuid, t.spec
     FROM workers w JOIN active_tasks t ON t.id = w.assigned_task_id AND t.assigned_worker = w.id
     WHERE w.id = $1 AND t.state = 2";

const CLAIM: &str = "WITH cand AS (
        SELECT t.id FROM active_tasks t
        WHERE t.state = 1
          AND t.group_id IN (SELECT gw.group_id FROM group_worker gw WHERE gw.worker_id = $1 AND gw.role >= 1)
          AND t.tags <@ (SELECT w.tags FROM workers w WHERE w.id = $1 AND w.state = 0)
        ORDER BY t.priority DESC, t.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE active_tasks t SET state = 2, assigned_worker = $1, updated_at = now()
        FROM cand WHERE t.id = cand.id
        RETURNING t.id, t.uuid, t.timeout, t.upstream_task_uuid, t.spec
    ), assign AS (
        UPDATE workers SET assigned_task_id = (SELECT id FROM claimed)
        WHERE id = $1 AND EXISTS (SELECT 1 FROM claimed)
    )
    SELECT * FROM claimed";

fn to_resp(r: &postgres::Row) -> Result<WorkerTaskResp, ApiError> {
    let timeout: i64 = r.get(2);
    Ok(WorkerTaskResp {
        id: r.get(0),
        uuid: r.get(1),
        timeout: Duration::from_secs(timeout.max(0) as u64),
        upstream_task_uuid: r.get(3),
        spec: serde_json::from_value(r.get(4))
            .map_err(|e| ApiError::Internal(format!("stored task spec does not parse: {e}")))?,
    })
}

/// Gives the worker its task: the one it holds but evidently never received (a fetch
/// while holding a Running task means the answer was lost), else the best Ready task.
pub fn claim(db: &mut super::db::Conn, worker_id: i64) -> Result<Option<WorkerTaskResp>, ApiError> {
    // A claim can be replayed (redelivery), so it need not wait for the disk.
    let row = db.replayable(|db| {
        let redeliver = db.prepared(REDELIVER)?;
        if let Some(r) = db.query_opt(&redeliver, &[&worker_id])? {
            return Ok(Some(r));
        }
        let claim = db.prepared(CLAIM)?;
        Ok(db.query_opt(&claim, &[&worker_id])?)
    })?;
    row.as_ref().map(to_resp).transpose()
}

fn worker_groups(db: &mut postgres::Client, worker_id: i64) -> Result<Vec<i64>, ApiError> {
    Ok(db
        .query("SELECT group_id FROM group_worker WHERE worker_id = $1 AND role >= 1", &[&worker_id])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Starts the dispatcher and the LISTEN thread.
pub fn spawn(ctx: Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    let c = ctx.clone();
    match std::thread::Builder::new().name("dispatcher".into()).spawn(move || dispatcher(&c)) {
        Ok(h) => handles.push(h),
        Err(e) => log::error!("cannot start the dispatcher thread: {e}"),
    }
    match std::thread::Builder::new().name("listener".into()).spawn(move || listener(&ctx)) {
        Ok(h) => handles.push(h),
        Err(e) => log::error!("cannot start the listener thread: {e}"),
    }
    handles
}

/// Tries to answer one parked fetch; gives it back if there is still nothing for it.
fn try_answer(ctx: &Ctx, p: Parked) -> Option<Parked> {
    let mut db = match ctx.pool.get() {
        Ok(db) => db,
        Err(_) => return Some(p),
    };
    match claim(&mut db, p.worker_id) {
        Ok(Some(task)) => {
            respond(p.req, Reply::json(&task));
            None
        }
        Ok(None) => Some(p),
        Err(e) => {
            log::warn!("claim for a parked fetch failed: {e:?}");
            Some(p)
        }
    }
}

fn dispatcher(ctx: &Ctx) {
    let rx = ctx.scheduler.rx.clone();
    let mut parked: Vec<Parked> = Vec::new();
    while !ctx.shutdown.is_set() {
        let now = Instant::now();
        let next = parked.iter().map(|p| p.deadline).min().unwrap_or(now + Duration::from_millis(500));
        let wait = next.saturating_duration_since(now).min(Duration::from_millis(500));
        match rx.recv_timeout(wait) {
            Ok(Event::Park(mut p)) => {
                if let Some(mut back) = try_answer(ctx, p) {
                    if let Ok(mut db) = ctx.pool.get() {
                        back.groups = worker_groups(&mut db, back.worker_id).unwrap_or_default();
                    }
                    p = back;
                    parked.push(p);
                }
            }
            Ok(ev) => {
                let mut keep = Vec::with_capacity(parked.len());
                for p in parked.drain(..) {
                    let interested = match &ev {
                        Event::Group(g) => p.groups.contains(g),
                        Event::Worker(w) => p.worker_id == *w,
                        _ => true,
                    };
                    if interested {
                        if let Some(mut back) = try_answer(ctx, p) {
                            // A worker event may mean its groups changed: reload them.
                            if matches!(ev, Event::Worker(_)) {
                                if let Ok(mut db) = ctx.pool.get() {
                                    back.groups = worker_groups(&mut db, back.worker_id).unwrap_or_default();
                                }
                            }
                            keep.push(back);
                        }
                    } else {
                        keep.push(p);
                    }
                }
                parked = keep;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let (expired, waiting): (Vec<Parked>, Vec<Parked>) = parked.into_iter().partition(|p| p.deadline <= now);
        parked = waiting;
        for p in expired {
            respond(p.req, Reply::null());
        }
    }
    for p in parked {
        respond(p.req, Reply::null());
    }
}

/// Forwards other coordinators' NOTIFYs to the dispatcher.
fn listener(ctx: &Ctx) {
    let mut delay = Duration::from_millis(200);
    while !ctx.shutdown.is_set() {
        let mut client = match super::db::connect(&ctx.cfg.db_url) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("LISTEN connection failed: {e}; retrying in {delay:?}");
                sleep_unless(ctx, delay);
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            log::warn!("LISTEN failed: {e}");
            sleep_unless(ctx, delay);
            continue;
        }
        delay = Duration::from_millis(200);
        // Whatever happened while we were not listening.
        let _ = ctx.scheduler.tx.send(Event::All);
        loop {
            if ctx.shutdown.is_set() {
                return;
            }
            let next = client.notifications().timeout_iter(Duration::from_millis(500)).next();
            match next {
                Ok(Some(n)) => {
                    if let Some(ev) = parse_payload(n.payload(), &ctx.scheduler.instance) {
                        let _ = ctx.scheduler.tx.send(ev);
                    }
                }
                Ok(None) => {
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    log::warn!("LISTEN connection lost: {e}");
                    break;
                }
            }
        }
    }
}

fn sleep_unless(ctx: &Ctx, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !ctx.shutdown.is_set() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn parse_payload(payload: &str, me: &str) -> Option<Event> {
    let (from, what) = payload.split_once('|')?;
    if from == me {
        return None;
    }
    match what.split_once(':') {
        Some(("g", id)) => id.parse().ok().map(Event::Group),
        Some(("w", id)) => id.parse().ok().map(Event::Worker),
        _ => Some(Event::All),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_from_others_become_events() {
        assert!(matches!(parse_payload("a|g:5", "b"), Some(Event::Group(5))));
        assert!(matches!(parse_payload("a|w:7", "b"), Some(Event::Worker(7))));
        assert!(matches!(parse_payload("a|all", "b"), Some(Event::All)));
        assert!(parse_payload("b|g:5", "b").is_none());
        assert!(parse_payload("garbage", "b").is_none());
    }
}
