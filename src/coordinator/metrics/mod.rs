//! Prometheus metrics: the counters and histograms the coordinator keeps, and their text
//! exposition at `GET /metrics`.
//!
//! ```ignore
//! metrics::METRICS.submits.add(3);                       // anywhere, no lock
//! metrics::METRICS.request(route, 200, started.elapsed());
//! let reply = metrics::scrape(ctx);                       // text format 0.0.4
//! ```
//!
//! Everything counted on a request's path is a relaxed atomic in one static, so counting
//! costs a few nanoseconds and takes no lock. What lives in the database (tasks by group and
//! state, workers by state, tasks created per group) takes three aggregate statements, one
//! of them a pass over the queue table (tens of milliseconds with 100,000 queued tasks).
//! Scrapes do not wait for them: while anyone scrapes, the `metrics-db` thread re-reads
//! them every [`DB_CACHE`] and scrapes answer from that copy. Only a scrape that finds no
//! copy younger than [`DB_STALE`] (the first in minutes) reads the database itself.
//! The list of metrics is in the README (Metrics).

use super::error::ApiError;
use super::http::{Call, Reply};
use super::routes::Endpoint;
use super::Ctx;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod database;
mod text;
use database::database_part;
pub(crate) use database::spawn_refresher;
use text::{counter, family, gauge, histogram, sample};

/// How often the database figures are re-read while someone scrapes.
pub(crate) const DB_CACHE: Duration = Duration::from_secs(5);
/// Database figures older than this are read again by the scrape itself.
pub(crate) const DB_STALE: Duration = Duration::from_secs(15);
/// How long after the last scrape the `metrics-db` thread keeps the figures fresh.
const KEEP_FRESH: Duration = Duration::from_secs(300);

/// The database figures, rendered, with when they were read and what the read took.
struct DbPart {
    text: String,
    at: Instant,
    took: Duration,
}

/// A monotonically increasing count.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub(crate) fn inc(&self) {
        self.add(1);
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// Most buckets a histogram has (its bounds plus the overflow bucket).
const MAX_BUCKETS: usize = 16;

/// Upper bounds (seconds) of request durations: a claim or heartbeat takes about a
/// millisecond, a batch submit of thousands of tasks a second or more.
pub(crate) const REQUEST_BOUNDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of the time from submit to fetch: from an idle cluster's
/// milliseconds to a backlog of hours.
pub(crate) const LATENCY_BOUNDS: &[f64] =
    &[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0];

/// Observations in buckets (each counted once, in the first bucket whose bound holds it;
/// the exposition makes them cumulative) and their sum in microseconds.
pub(crate) struct Histogram {
    buckets: [AtomicU64; MAX_BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; MAX_BUCKETS], sum_micros: AtomicU64::new(0) }
    }

    /// Records one observation against `bounds` (at most `MAX_BUCKETS - 1` of them).
    pub(crate) fn observe(&self, bounds: &[f64], d: Duration) {
        let secs = d.as_secs_f64();
        let i = bounds.iter().position(|b| secs <= *b).unwrap_or(bounds.len()).min(MAX_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The statuses request metrics tell apart; any other falls in a last `other` slot. Every
/// status the coordinator answers with is here, so the slot stays for the unexpected.
pub(crate) const STATUSES: &[u16] = &[200, 400, 401, 403, 404, 405, 409, 411, 413, 415, 422, 429, 500, 503, 507];
const STATUS_SLOTS: usize = STATUSES.len() + 1;
/// Routes are [`Endpoint`] variants, plus a last slot for requests that matched none.
const ROUTE_SLOTS: usize = Endpoint::NAMES.len() + 1;
const UNMATCHED: &str = "unmatched";

/// Object-store transfer directions (the local store's own transfers).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Get = 0,
    Put = 1,
}
const DIRECTIONS: [&str; 2] = ["get", "put"];

/// Every counter and histogram of the process.
pub(crate) struct Metrics {
    /// Tasks accepted by `POST /tasks` and `/tasks/submit`.
    pub submits: Counter,
    /// Tasks handed to a worker by a claim (a fetch that receives the task it already held
    /// is not counted again).
    pub claims: Counter,
    /// Tasks committed by their worker (moved to the archive).
    pub commits: Counter,
    /// Time from a task's creation to the claim that handed it out (a task put back to the
    /// queue still counts from its creation).
    pub submit_to_fetch: Histogram,
    requests: [[Histogram; STATUS_SLOTS]; ROUTE_SLOTS],
    /// Checkouts that found every pooled database connection busy and waited.
    pub db_pool_waits: Counter,
    /// Time those checkouts waited, in microseconds.
    pub db_pool_wait_micros: Counter,
    /// Checkouts that gave up: every connection stayed busy past the checkout timeout.
    pub db_pool_timeouts: Counter,
    /// Connections that could not be opened (the database is unreachable).
    pub db_connect_errors: Counter,
    /// Statements that failed (any database error a handler saw).
    pub db_statement_errors: Counter,
    transfers_ok: [Counter; 2],
    transfers_failed: [Counter; 2],
    transfer_bytes: [Counter; 2],
    /// Presigned URLs handed out, by direction (S3 or the local store).
    urls_signed: [Counter; 2],
    /// Workers the reaper removed (silent, or holding a task far past its timeout).
    pub reaped_workers: Counter,
    /// Tasks the reaper put back to Ready (of removed workers, or unconfirmed claims).
    pub requeued_tasks: Counter,
    db_part: Mutex<Option<DbPart>>,
    last_scrape: Mutex<Option<Instant>>,
}

/// The process's metrics.
pub(crate) static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) const fn new() -> Metrics {
        Metrics {
            submits: Counter::new(),
            claims: Counter::new(),
            commits: Counter::new(),
            submit_to_fetch: Histogram::new(),
            requests: [const { [const { Histogram::new() }; STATUS_SLOTS] }; ROUTE_SLOTS],
            db_pool_waits: Counter::new(),
            db_pool_wait_micros: Counter::new(),
            db_pool_timeouts: Counter::new(),
            db_connect_errors: Counter::new(),
            db_statement_errors: Counter::new(),
            transfers_ok: [const { Counter::new() }; 2],
            transfers_failed: [const { Counter::new() }; 2],
            transfer_bytes: [const { Counter::new() }; 2],
            urls_signed: [const { Counter::new() }; 2],
            reaped_workers: Counter::new(),
            requeued_tasks: Counter::new(),
            db_part: Mutex::new(None),
            last_scrape: Mutex::new(None),
        }
    }

    /// Records a request: `route` is [`Endpoint::index`] (None: no route matched).
    pub(crate) fn request(&self, route: Option<usize>, status: u16, took: Duration) {
        let r = route.filter(|r| *r < Endpoint::NAMES.len()).unwrap_or(ROUTE_SLOTS - 1);
        let s = STATUSES.iter().position(|x| *x == status).unwrap_or(STATUS_SLOTS - 1);
        self.requests[r][s].observe(REQUEST_BOUNDS, took);
    }

    /// Records a finished local-store transfer.
    pub(crate) fn transfer(&self, dir: Direction, ok: bool, bytes: u64) {
        let d = dir as usize;
        if ok {
            self.transfers_ok[d].inc();
        } else {
            self.transfers_failed[d].inc();
        }
        self.transfer_bytes[d].add(bytes);
    }

    /// Records a presigned URL handed out.
    pub(crate) fn url_signed(&self, dir: Direction) {
        self.urls_signed[dir as usize].inc();
    }

    /// Requests recorded for a route (by name) and status.
    #[cfg(test)]
    fn requests_of(&self, route: &str, status: u16) -> u64 {
        let r = Endpoint::NAMES.iter().position(|n| *n == route).unwrap_or(ROUTE_SLOTS - 1);
        let s = STATUSES.iter().position(|x| *x == status).unwrap_or(STATUS_SLOTS - 1);
        self.requests[r][s].count()
    }
}

/// Text exposition format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Who may read `/metrics` on the main listener: an admin's token, or the configured
/// metrics token (compared in constant time). 401 without a token, 403 for anyone else.
pub(crate) fn authorize(ctx: &Ctx, call: &Call) -> Result<(), ApiError> {
    let Some(header) = call.header("Authorization") else {
        return Err(ApiError::Unauthenticated(
            "/metrics needs `Authorization: Bearer <token>` with an admin's token or the metrics token".into(),
        ));
    };
    let token = super::auth::bearer(call)
        .map_err(|_| ApiError::Unauthenticated(format!("expected `Bearer <token>`, not {:?}", scheme(header))))?;
    if let Some(expected) = &ctx.cfg.metrics_token {
        if super::auth::constant_time_eq(token.as_bytes(), expected.as_bytes()) {
            return Ok(());
        }
    }
    let claims = ctx.tokens.verify(&ctx.keys, &token)?;
    let mut db = ctx.pool.get()?;
    let user = super::auth::authenticate_user(&mut db, &claims, false)?;
    if user.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden("/metrics is for admins and holders of the metrics token".into()))
    }
}

/// The scheme word of an Authorization header, never the credentials.
fn scheme(header: &str) -> String {
    header.split_whitespace().next().unwrap_or("").chars().take(20).collect()
}

/// The whole exposition: process counters, then the (cached) database figures.
pub(crate) fn scrape(ctx: &Ctx) -> Reply {
    let m = &METRICS;
    let mut out = String::with_capacity(16 * 1024);
    let w = &mut out;
    family(w, "mito_build_info", "gauge", "The running build; always 1.");
    sample(w, "mito_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    counter(w, "mito_tasks_submitted_total", "Tasks accepted by this coordinator's submit routes.", m.submits.get());
    counter(w, "mito_tasks_claimed_total", "Tasks this coordinator handed to workers.", m.claims.get());
    counter(
        w,
        "mito_tasks_committed_total",
        "Tasks committed to the archive through this coordinator.",
        m.commits.get(),
    );
    family(
        w,
        "mito_submit_to_fetch_seconds",
        "histogram",
        "Time from a task's creation to the claim that handed it to a worker.",
    );
    histogram(w, "mito_submit_to_fetch_seconds", &[], LATENCY_BOUNDS, &m.submit_to_fetch);
    family(
        w,
        "mito_http_request_duration_seconds",
        "histogram",
        "API requests by route (the endpoint's name) and status, from routing to the answer sent.",
    );
    request_durations(w, m);
    let (parked, connected) = ctx.scheduler.parked_counts();
    gauge(w, "mito_parked_fetches", "Long-poll fetches waiting on this coordinator for a task.", parked as f64);
    gauge(w, "mito_workers_connected", "Workers with a long-poll fetch waiting on this coordinator.", connected as f64);
    counter(
        w,
        "mito_db_pool_waits_total",
        "Connection checkouts that found every pooled connection busy.",
        m.db_pool_waits.get(),
    );
    family(w, "mito_db_pool_wait_seconds_total", "counter", "Time checkouts spent waiting for a connection.");
    sample(w, "mito_db_pool_wait_seconds_total", &[], m.db_pool_wait_micros.get() as f64 / 1e6);
    family(w, "mito_db_errors_total", "counter", "Database failures by kind.");
    for (kind, c) in [
        ("checkout_timeout", &m.db_pool_timeouts),
        ("connect", &m.db_connect_errors),
        ("statement", &m.db_statement_errors),
    ] {
        sample(w, "mito_db_errors_total", &[("kind", kind)], c.get() as f64);
    }
    object_store(w, m);
    counter(
        w,
        "mito_reaper_workers_removed_total",
        "Workers this coordinator's reaper removed (silent, or past a task's timeout).",
        m.reaped_workers.get(),
    );
    counter(
        w,
        "mito_reaper_tasks_requeued_total",
        "Tasks this coordinator's reaper put back to Ready.",
        m.requeued_tasks.get(),
    );
    out.push_str(&database_part(ctx));
    Reply { status: 200, content_type: Some(CONTENT_TYPE), body: out.into_bytes(), headers: Vec::new() }
}

/// One histogram per route and status that has seen a request.
fn request_durations(w: &mut String, m: &Metrics) {
    let mut status_text = String::new();
    for (r, row) in m.requests.iter().enumerate() {
        let route = Endpoint::NAMES.get(r).copied().unwrap_or(UNMATCHED);
        for (s, h) in row.iter().enumerate() {
            if h.count() == 0 {
                continue;
            }
            status_text.clear();
            match STATUSES.get(s) {
                Some(code) => {
                    let _ = write!(status_text, "{code}");
                }
                None => status_text.push_str("other"),
            }
            histogram(
                w,
                "mito_http_request_duration_seconds",
                &[("route", route), ("status", &status_text)],
                REQUEST_BOUNDS,
                h,
            );
        }
    }
}

/// The local object store's transfers and bytes, and the URLs signed for either store.
fn object_store(w: &mut String, m: &Metrics) {
    family(w, "mito_object_transfers_total", "counter", "Transfers served by the local object store.");
    for (d, name) in DIRECTIONS.iter().enumerate() {
        sample(
            w,
            "mito_object_transfers_total",
            &[("direction", name), ("result", "ok")],
            m.transfers_ok[d].get() as f64,
        );
        let failed = m.transfers_failed[d].get() as f64;
        sample(w, "mito_object_transfers_total", &[("direction", name), ("result", "error")], failed);
    }
    family(w, "mito_object_bytes_total", "counter", "Bytes sent (get) and received (put) by the local object store.");
    for (d, name) in DIRECTIONS.iter().enumerate() {
        sample(w, "mito_object_bytes_total", &[("direction", name)], m.transfer_bytes[d].get() as f64);
    }
    family(w, "mito_object_urls_signed_total", "counter", "Presigned object URLs handed out (S3 or the local store).");
    for (d, name) in DIRECTIONS.iter().enumerate() {
        sample(w, "mito_object_urls_signed_total", &[("direction", name)], m.urls_signed[d].get() as f64);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::text::{escape_help, number};
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_count_every_observation() {
        let h = Histogram::new();
        for ms in [0, 3, 3, 40, 20_000] {
            h.observe(REQUEST_BOUNDS, Duration::from_millis(ms));
        }
        let mut w = String::new();
        histogram(&mut w, "x", &[("route", "Health")], REQUEST_BOUNDS, &h);
        assert!(w.contains("x_bucket{route=\"Health\",le=\"0.001\"} 1\n"), "{w}");
        assert!(w.contains("x_bucket{route=\"Health\",le=\"0.005\"} 3\n"), "{w}");
        assert!(w.contains("x_bucket{route=\"Health\",le=\"0.05\"} 4\n"), "{w}");
        assert!(w.contains("x_bucket{route=\"Health\",le=\"10\"} 4\n"), "{w}");
        assert!(w.contains("x_bucket{route=\"Health\",le=\"+Inf\"} 5\n"), "{w}");
        assert!(w.contains("x_count{route=\"Health\"} 5\n"), "{w}");
        assert!(w.contains("x_sum{route=\"Health\"} 20.046\n"), "{w}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut w = String::new();
        sample(&mut w, "m", &[("group", "a\"b\\c\nd")], 2.0);
        assert_eq!(w, "m{group=\"a\\\"b\\\\c\\nd\"} 2\n");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }

    #[test]
    fn requests_land_in_their_route_and_status() {
        let m = Metrics::new();
        let health = Endpoint::Health.index();
        m.request(Some(health), 200, Duration::from_millis(1));
        m.request(Some(health), 200, Duration::from_millis(1));
        m.request(Some(health), 299, Duration::from_millis(1));
        m.request(None, 404, Duration::from_millis(1));
        assert_eq!(m.requests_of("Health", 200), 2);
        assert_eq!(m.requests[health][STATUS_SLOTS - 1].count(), 1);
        assert_eq!(m.requests[ROUTE_SLOTS - 1][4].count(), 1);
        assert_eq!(Endpoint::NAMES[Endpoint::Metrics.index()], "Metrics");
        assert_eq!(Endpoint::NAMES[Endpoint::GroupStats("g".into()).index()], "GroupStats");
    }
}
