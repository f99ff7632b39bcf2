//! Handing tasks to workers: the claim, parked long-poll fetches, and the wake-ups that
//! answer them.
//!
//! The claim is one SQL statement: the best Ready task the worker may run (its group role
//! is Write or Admin, the task's tags are a subset of the worker's), highest priority
//! first, then oldest, taken with `FOR UPDATE SKIP LOCKED` so no task goes out twice.
//!
//! A fetch with `?wait=N` that finds nothing is parked: its request waits in a list, and
//! no thread waits with it. When tasks become ready in one of the worker's groups, the
//! parked fetch is claimed for again and answered. The handler that made them ready does
//! that right after sending its own answer (no other thread has to wake up on the way);
//! the dispatcher thread does it for wake-ups from elsewhere (other coordinators, through
//! PostgreSQL `NOTIFY`; the reaper) and answers `null` at each fetch's deadline.
//!
//! A task handed out may never arrive: the worker may have died while its fetch was
//! parked. Before claiming for a parked fetch its connection is checked ([`super::peer`]);
//! and a worker that confirms its claims (it said so when registering) gets its task
//! with a lease (`claim_deadline`, `$2` seconds in [`CLAIM`]) that its next heartbeat or
//! report clears, and that the reaper enforces.
//!
//! Two words, two reaches: to *notify* is to send a PostgreSQL `NOTIFY` (queued in the
//! transaction, sent at commit) that tells the other coordinators (`notify_group`,
//! `notify_worker(s)`); to *wake* is to queue an in-process wake-up ([`Wake`]) for this
//! coordinator's parked fetches (`wake_group`, `wake_worker(s)`), which `deliver_wakes`
//! then claims for. A change does both: notify inside its transaction, wake after commit.
//!
//! ```ignore
//! match scheduler::claim(ctx, &mut db, worker_token, deadline)? {
//!     Claimed::Task(task) => { /* answer it */ }
//!     Claimed::Nothing(how) => ctx.scheduler.park(request, how),
//! }
//! ctx.scheduler.wake_group(group_id); // after committing a newly Ready task
//! ctx.scheduler.deliver_wakes(ctx);   // after answering the request
//! ```

use super::auth::WorkerToken;
use super::error::ApiError;
use super::http::{respond, Reply};
use super::Ctx;
use crossbeam_channel::{bounded, Receiver, Sender};
use postgres::fallible_iterator::FallibleIterator;
use postgres::GenericClient;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod claim;
mod parked;
pub use claim::CLAIM;
pub(crate) use claim::{claim, Claimed};

/// The NOTIFY channel coordinators share.
pub(crate) const CHANNEL: &str = "mito_tasks";

/// Past this many workers changed at once, one wake-up for every parked fetch is cheaper
/// than one notification per worker.
const MAX_WORKER_WAKES: usize = 64;

/// How early a fetch may be answered `null`, so the dispatcher answers the deadlines
/// that fall close together in one wake-up.
const DEADLINE_SLACK: Duration = Duration::from_millis(10);

/// What a fetch that found nothing parks with: the worker, its deadline, and what it may
/// run (read right after the claim that found nothing), so a wake-up finds the fetches it
/// concerns without asking the database.
pub(crate) struct ParkAs {
    pub worker: WorkerToken,
    worker_id: i64,
    pub deadline: Instant,
    groups: Vec<i64>,
    tags: Vec<String>,
    /// [`Scheduler::wake_seq`] before the claim that found nothing: if it moved since, a
    /// task may have become ready in between, and the fetch gets another look.
    seq: u64,
}

/// A fetch waiting for a task.
pub(crate) struct Parked {
    req: tiny_http::Request,
    how: ParkAs,
    /// When the request was taken up, and its route, for the request metrics.
    since: Instant,
    route: Option<usize>,
}

impl Parked {
    /// Answers the fetch and counts the request.
    fn answer(self, reply: Reply) {
        let status = reply.status;
        respond(self.req, reply);
        super::metrics::METRICS.request(self.route, status, self.since.elapsed());
    }
}

/// What may have changed for parked fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wake {
    /// Tasks may have become ready in this group.
    Group(i64),
    /// This worker's tags or groups changed (or its fetch needs another look).
    Worker(i64),
    /// Anything may have changed (e.g. notifications were missed).
    All,
}

/// Parked fetches and the wake-ups not yet delivered to them.
pub(crate) struct Scheduler {
    parked: Mutex<parked::ParkedSet>,
    pending: Mutex<Vec<Wake>>,
    /// Set when the dispatcher has stopped: nobody would answer a fetch parked now.
    closed: AtomicBool,
    /// Rouses the dispatcher: a wake-up is pending.
    kick_tx: Sender<()>,
    kick_rx: Receiver<()>,
    /// Counts wake-ups (ready tasks, changed workers), to close the gap between a
    /// fetch finding nothing and its parking.
    seq: AtomicU64,
    /// Identifies this coordinator in NOTIFY payloads, so it skips its own.
    pub instance: String,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves the lists whole: keep using them.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    pub(crate) fn new() -> Scheduler {
        let (kick_tx, kick_rx) = bounded(1);
        Scheduler {
            parked: Mutex::new(parked::ParkedSet::default()),
            pending: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            kick_tx,
            kick_rx,
            seq: AtomicU64::new(0),
            instance: Uuid::new_v4().simple().to_string(),
        }
    }

    /// Read before a claim; handed back in [`ParkAs`].
    pub(crate) fn wake_seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Records a change that may let parked fetches run something, and queues its wake-up.
    fn wake(&self, w: Wake) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.queue_wake(w);
    }

    /// Queues a wake-up without counting a change (a fetch that needs another look).
    fn queue_wake(&self, w: Wake) {
        let mut pending = locked(&self.pending);
        if !pending.contains(&w) {
            pending.push(w);
        }
        drop(pending);
        let _ = self.kick_tx.try_send(());
    }

    /// Parks a fetch that found nothing. If a wake-up came since its claim
    /// looked, it gets another look at once.
    pub(crate) fn park(&self, req: tiny_http::Request, how: ParkAs, since: Instant, route: Option<usize>) {
        self.repark(Parked { req, how, since, route });
    }

    /// Parked fetches, and the distinct workers they come from.
    pub(crate) fn parked_counts(&self) -> (usize, usize) {
        let parked = locked(&self.parked);
        (parked.len(), parked.workers())
    }

    fn repark(&self, p: Parked) {
        let (worker_id, seq) = (p.how.worker_id, p.how.seq);
        locked(&self.parked).insert(p);
        // No need to rouse the dispatcher for the deadline: waits are at least a second,
        // and it looks at the deadlines at least every 500 ms.
        if self.closed.load(Ordering::SeqCst) {
            self.answer_all_null();
        } else if self.wake_seq() != seq {
            self.queue_wake(Wake::Worker(worker_id));
        }
    }

    /// Wakes parked fetches of workers serving `group_id` (call after the commit).
    pub(crate) fn wake_group(&self, group_id: i64) {
        self.wake(Wake::Group(group_id));
    }

    /// Wakes the parked fetch of a worker whose tags or groups changed.
    pub(crate) fn wake_worker(&self, worker_id: i64) {
        self.wake(Wake::Worker(worker_id));
    }

    /// Wakes the parked fetches of workers that were removed or stopped, so they hear it
    /// now (the claim answers 401) instead of at their deadline or next heartbeat.
    pub(crate) fn wake_workers(&self, ids: &[i64]) {
        if ids.len() > MAX_WORKER_WAKES {
            self.wake(Wake::All);
        } else {
            for id in ids {
                self.wake(Wake::Worker(*id));
            }
        }
    }

    fn answer_all_null(&self) {
        let all = locked(&self.parked).take_all();
        for p in all {
            p.answer(Reply::null());
        }
    }

    /// Claims for the parked fetches that pending wake-ups concern, answering those that
    /// get a task. Handlers call this after answering their own request; the dispatcher
    /// for the rest.
    pub(crate) fn deliver_wakes(&self, ctx: &Ctx) {
        let wakes = std::mem::take(&mut *locked(&self.pending));
        if wakes.is_empty() {
            return;
        }
        // Workers with the same groups and tags (a class) may run the same tasks: once a
        // claim for one of them finds nothing, the others are not asked (with a thousand
        // idle workers, one submit costs a few claims, not a thousand).
        let mut exhausted = HashSet::new();
        let mut classes = Vec::new();
        for w in &wakes {
            match w {
                Wake::Worker(id) => loop {
                    let next = locked(&self.parked).take_of_worker(*id, &exhausted);
                    let Some(p) = next else { break };
                    self.answer_or_repark(ctx, p, &mut exhausted);
                },
                Wake::Group(g) => classes.extend(locked(&self.parked).classes(Some(*g))),
                Wake::All => classes.extend(locked(&self.parked).classes(None)),
            }
        }
        for class in classes {
            while !exhausted.contains(&class) {
                let next = locked(&self.parked).take_oldest(&class);
                let Some(p) = next else { break };
                self.answer_or_repark(ctx, p, &mut exhausted);
            }
        }
    }

    /// Claims for `p`; parks it again (and marks its class exhausted) if nothing is there.
    fn answer_or_repark(&self, ctx: &Ctx, p: Parked, exhausted: &mut HashSet<parked::Class>) {
        if let Some(back) = try_answer(ctx, p) {
            exhausted.insert(parked::class_of(&back.how.groups, &back.how.tags));
            // Claimed for while out of the list, it may have missed a wake-up.
            self.repark(back);
        }
    }

    /// Queues a NOTIFY (sent at commit) telling other coordinators about ready tasks.
    pub(crate) fn notify_group(&self, tx: &mut impl GenericClient, group_id: i64) -> Result<(), ApiError> {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &self.group_payload(group_id)])?;
        Ok(())
    }

    /// The NOTIFY payload telling of ready tasks in `group_id`.
    fn group_payload(&self, group_id: i64) -> String {
        format!("{}{group_id}", self.group_payload_prefix())
    }

    /// That payload without the group id, for SQL that appends it.
    pub(crate) fn group_payload_prefix(&self) -> String {
        format!("{}|g:", self.instance)
    }

    /// Queues NOTIFYs about removed or stopped workers (one for all of them past
    /// [`MAX_WORKER_WAKES`]), for their fetches parked on other coordinators.
    pub(crate) fn notify_workers(&self, tx: &mut impl GenericClient, ids: &[i64]) -> Result<(), ApiError> {
        if ids.len() > MAX_WORKER_WAKES {
            let payload = format!("{}|all", self.instance);
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
            return Ok(());
        }
        for id in ids {
            self.notify_worker(tx, *id)?;
        }
        Ok(())
    }

    /// Queues a NOTIFY about a worker's changed tags or groups.
    pub(crate) fn notify_worker(&self, tx: &mut impl GenericClient, worker_id: i64) -> Result<(), ApiError> {
        let payload = format!("{}|w:{worker_id}", self.instance);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
        Ok(())
    }
}

/// Starts the dispatcher and the LISTEN thread.
pub(crate) fn spawn(ctx: Arc<Ctx>) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    let c = ctx.clone();
    match std::thread::Builder::new()
        .name("dispatcher".into())
        .spawn(move || super::supervised(&c, "dispatcher", || dispatcher(&c)))
    {
        Ok(h) => handles.push(h),
        Err(e) => log::error!("cannot start the dispatcher thread: {e}"),
    }
    match std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || super::supervised(&ctx, "listener", || listener(&ctx)))
    {
        Ok(h) => handles.push(h),
        Err(e) => log::error!("cannot start the listener thread: {e}"),
    }
    handles
}

/// Tries to answer one parked fetch; gives it back (with what it may run refreshed) if
/// there is still nothing for it.
fn try_answer(ctx: &Ctx, p: Parked) -> Option<Parked> {
    // A task claimed for a worker that hung up would sit Running until it is reaped: a
    // fetch whose connection is closed is dropped unclaimed.
    if super::peer::gone(&p.req) {
        log::debug!("a parked fetch's worker hung up; dropping the fetch");
        p.answer(Reply::null());
        return None;
    }
    let mut db = match ctx.queue_pool.get() {
        Ok(db) => db,
        Err(_) => return Some(p),
    };
    match claim(ctx, &mut db, p.how.worker, p.how.deadline) {
        Ok(Claimed::Task(task)) => {
            p.answer(Reply::json(&task));
            None
        }
        Ok(Claimed::Nothing(how)) => Some(Parked { how, ..p }),
        Err(ApiError::WrongCredentials) => {
            p.answer(ApiError::WrongCredentials.reply());
            None
        }
        Err(e) => {
            log::warn!("claim for a parked fetch failed: {e:?}");
            Some(p)
        }
    }
}

/// Delivers wake-ups nobody else delivered, and answers `null` to fetches whose wait is over.
fn dispatcher(ctx: &Ctx) {
    let s = &ctx.scheduler;
    while !ctx.shutdown.is_set() {
        let now = Instant::now();
        let next = locked(&s.parked).next_deadline();
        let wait = next
            .map_or(Duration::from_millis(500), |d| d.saturating_duration_since(now))
            .min(Duration::from_millis(500));
        match s.kick_rx.recv_timeout(wait) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        s.deliver_wakes(ctx);
        // Deadlines a little ahead are answered with these: with thousands of long polls
        // spread over their wait, one wake-up per deadline would be hundreds a second.
        let expired = locked(&s.parked).take_expired(Instant::now() + DEADLINE_SLACK);
        for p in expired {
            p.answer(Reply::null());
        }
    }
    s.closed.store(true, Ordering::SeqCst);
    s.answer_all_null();
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
        ctx.scheduler.wake(Wake::All);
        loop {
            if ctx.shutdown.is_set() {
                return;
            }
            let next = client.notifications().timeout_iter(Duration::from_millis(500)).next();
            match next {
                Ok(Some(n)) => {
                    if let Some(w) = parse_payload(n.payload(), &ctx.scheduler.instance) {
                        ctx.scheduler.wake(w);
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

fn parse_payload(payload: &str, me: &str) -> Option<Wake> {
    let (from, what) = payload.split_once('|')?;
    if from == me {
        return None;
    }
    match what.split_once(':') {
        Some(("g", id)) => id.parse().ok().map(Wake::Group),
        Some(("w", id)) => id.parse().ok().map(Wake::Worker),
        _ => Some(Wake::All),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_from_others_become_events() {
        assert_eq!(parse_payload("a|g:5", "b"), Some(Wake::Group(5)));
        assert_eq!(parse_payload("a|w:7", "b"), Some(Wake::Worker(7)));
        assert_eq!(parse_payload("a|all", "b"), Some(Wake::All));
        assert!(parse_payload("b|g:5", "b").is_none());
        assert!(parse_payload("garbage", "b").is_none());
    }
}
