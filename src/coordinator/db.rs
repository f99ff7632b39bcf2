//! PostgreSQL: the connection pool, startup connection with retries, and the schema.
//!
//! ```ignore
//! # use mito::coordinator::db::Pool;
//! let pool = Pool::new("postgres://localhost/mito", 4);
//! let mut conn = pool.get().unwrap();      // a pooled postgres::Client
//! conn.query_one("SELECT 1", &[]).unwrap();
//! ```
//!
//! The pool is a bounded channel of connection slots; a slot whose connection broke is
//! reconnected on its next checkout, so a database restart costs failed requests (503), not
//! a coordinator restart.

use super::error::ApiError;
use crossbeam_channel::{bounded, Receiver, Sender};
use postgres::{Client, NoTls};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a request waits for a free connection before answering 503.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Session settings of the queue pool, whose connections serve only the workers' claims,
/// Finish reports and heartbeats:
/// - those can all be replayed (a lost claim is redelivered, a worker reports again, the
///   next heartbeat repeats this one), so their commits need not wait for the disk;
/// - the claim must walk the Ready index in claim order whatever the statistics say. Just
///   after a burst of submissions, stale statistics make the planner believe the queue is
///   tiny and choose a bitmap scan plus a sort of every Ready task instead (measured: 4 ms
///   a claim with 10,000 queued, growing with the queue). Sorting and sequential and bitmap
///   scans are therefore priced out on these connections; every statement on them has an
///   index that serves it. (The claim still sorts the heads of the worker's groups, a row
///   per group, which no index can order.)
/// - no JIT compilation: these statements read a few rows, yet the prices above (and the
///   claim's estimate for every group's head) put their cost over `jit_above_cost`, and a
///   compiled claim was measured at 2.5 s of compiling for 0.3 ms of work, on every run.
pub const QUEUE_SETUP: &str = "SET synchronous_commit = off; SET enable_sort = off; \
     SET enable_seqscan = off; SET enable_bitmapscan = off; SET jit = off";

/// Lock id for schema migration (any constant shared by all coordinators).
const MIGRATION_LOCK: i64 = 0x6d69_746f_0001;

/// Opens one connection, bounding the connect time.
pub(crate) fn connect(url: &str) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("mito-coordinator");
    }
    config.connect(NoTls)
}

/// Hides the password of a database URL or `key=value` connection string, for logs and
/// error messages.
pub(crate) fn redact(url: &str) -> String {
    crate::redact::conninfo(url)
}

/// Connects, retrying with capped exponential backoff while the database is unreachable.
/// Gives up only when `stop` says so (a shutdown signal); each attempt is logged.
pub(crate) fn connect_with_retry(url: &str, stop: impl Fn() -> bool) -> Option<Client> {
    let mut delay = Duration::from_millis(250);
    for attempt in 1.. {
        match connect(url) {
            Ok(c) => {
                if attempt > 1 {
                    log::info!("connected to the database after {attempt} attempts");
                }
                return Some(c);
            }
            Err(e) => {
                log::warn!(
                    "database {} unreachable (attempt {attempt}): {}; retrying in {delay:?}",
                    redact(url),
                    crate::redact::text(&e.to_string())
                );
            }
        }
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if stop() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    None
}

/// A fixed number of connection slots; empty slots connect lazily.
///
/// When one connection turns out to be dead (the server restarted, or an operator
/// terminated it), the pool's epoch advances and every other pooled connection is probed
/// once before its next use, so one failed request is all a database restart costs.
pub(crate) struct Pool {
    url: String,
    /// Run on every new connection (session settings).
    setup: &'static str,
    tx: Sender<Slot>,
    rx: Receiver<Slot>,
    epoch: AtomicU64,
}

/// A pooled connection, its prepared statements, and the epoch at which it was last
/// known to work.
type Slot = Option<(Client, Statements, u64)>;

/// Statements prepared on one connection, by the address and length of their SQL text (hot
/// paths prepare once per connection instead of once per call, saving a round trip each
/// time). A connection prepares a handful of statements, so a list beats a map, and the
/// address names a `&'static str` as well as its text does: hashing the text of the claim
/// for each lookup cost more than the rest of the lookup. Two copies of one text at
/// different addresses are merely prepared twice.
type Statements = Vec<((usize, usize), postgres::Statement)>;

fn statement_key(sql: &'static str) -> (usize, usize) {
    (sql.as_ptr() as usize, sql.len())
}

impl Pool {
    pub(crate) fn new(url: &str, size: usize) -> Pool {
        Pool::with_setup(url, size, "")
    }

    /// A pool whose connections run `setup` (e.g. `SET` statements) when they open.
    pub(crate) fn with_setup(url: &str, size: usize, setup: &'static str) -> Pool {
        let (tx, rx) = bounded(size.max(1));
        for _ in 0..size.max(1) {
            tx.send(None).expect("the channel has room for every slot");
        }
        Pool { url: url.to_string(), setup, tx, rx, epoch: AtomicU64::new(0) }
    }

    fn open(&self) -> Result<Client, postgres::Error> {
        let mut c = connect(&self.url)?;
        if !self.setup.is_empty() {
            c.batch_execute(self.setup)?;
        }
        Ok(c)
    }

    /// Puts an already open connection into a free slot.
    pub(crate) fn seed(&self, mut client: Client) {
        if !self.setup.is_empty() && client.batch_execute(self.setup).is_err() {
            return;
        }
        if let Ok(None) = self.rx.try_recv() {
            let _ = self.tx.send(Some((client, Statements::new(), self.epoch.load(Ordering::SeqCst))));
        }
    }

    /// Checks out a connection, opening, probing or replacing it as needed.
    pub(crate) fn get(&self) -> Result<Conn<'_>, ApiError> {
        let m = &super::metrics::METRICS;
        let slot = match self.rx.try_recv() {
            Ok(slot) => slot,
            Err(_) => {
                m.db_pool_waits.inc();
                let t0 = Instant::now();
                let got = self.rx.recv_timeout(CHECKOUT_TIMEOUT);
                m.db_pool_wait_micros.add(t0.elapsed().as_micros() as u64);
                got.map_err(|_| {
                    m.db_pool_timeouts.inc();
                    ApiError::Unavailable("every database connection is busy".into())
                })?
            }
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let usable = match slot {
            Some((mut c, st, seen)) if !c.is_closed() => {
                (seen == epoch || c.is_valid(Duration::from_secs(2)).is_ok()).then_some((c, st))
            }
            _ => None,
        };
        let (client, stmts) = match usable {
            Some(c) => c,
            None => match self.open() {
                Ok(c) => (c, Statements::new()),
                Err(e) => {
                    m.db_connect_errors.inc();
                    let _ = self.tx.send(None);
                    log::warn!("database {} unreachable: {}", redact(&self.url), crate::redact::text(&e.to_string()));
                    return Err(ApiError::Unavailable("the database is unreachable".into()));
                }
            },
        };
        Ok(Conn { client: Some(client), stmts, pool: self, epoch })
    }
}

/// A checked-out connection; it goes back to the pool when dropped.
pub(crate) struct Conn<'a> {
    client: Option<Client>,
    stmts: Statements,
    pool: &'a Pool,
    epoch: u64,
}

impl Conn<'_> {
    /// `sql` prepared on this connection, once.
    pub(crate) fn prepared(&mut self, sql: &'static str) -> Result<postgres::Statement, postgres::Error> {
        let key = statement_key(sql);
        if let Some((_, st)) = self.stmts.iter().find(|(k, _)| *k == key) {
            return Ok(st.clone());
        }
        let st = self.client.as_mut().expect("present until drop").prepare(sql)?;
        self.stmts.push((key, st.clone()));
        Ok(st)
    }
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let slot = match self.client.take() {
            Some(c) if !c.is_closed() => Some((c, std::mem::take(&mut self.stmts), self.epoch)),
            _ => {
                self.pool.epoch.fetch_add(1, Ordering::SeqCst);
                None
            }
        };
        let _ = self.pool.tx.send(slot);
    }
}

/// The numbered migrations of `schema.sql`.
pub(crate) fn migrations() -> Vec<(i32, &'static str)> {
    let text: &'static str = include_str!("../../schema.sql");
    let mut out: Vec<(i32, &'static str)> = Vec::new();
    let mut starts: Vec<(i32, usize)> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("-- migration ") {
            if let Some((n, _)) = rest.split_once(':') {
                if let Ok(n) = n.trim().parse() {
                    starts.push((n, pos));
                }
            }
        }
        pos += line.len();
    }
    for (i, (n, start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map(|s| s.1).unwrap_or(text.len());
        out.push((*n, &text[*start..end]));
    }
    out
}

/// Applies every pending migration and creates the admin user, in one transaction under an
/// advisory lock, so coordinators starting together on an empty database all come up.
/// `admin_hash` is the stored form of the admin's password (the caller hashes it, so that
/// this module needs nothing from the one that authenticates).
pub(crate) fn migrate(client: &mut Client, admin_user: &str, admin_hash: &str) -> Result<(), postgres::Error> {
    let run = |client: &mut Client| -> Result<(), postgres::Error> {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version    integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )?;
        let done: Vec<i32> =
            tx.query("SELECT version FROM schema_version", &[])?.iter().map(|r| r.get("version")).collect();
        for (n, sql) in migrations() {
            if !done.contains(&n) {
                log::info!("applying schema migration {n}");
                tx.batch_execute(sql)?;
                tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&n])?;
            }
        }
        if create_user(&mut tx, admin_user, admin_hash, true)?.is_some() {
            log::info!("created admin user {admin_user} and its group");
        }
        tx.commit()
    };
    run(client)
}

/// Creates a user with its personal group (where it is Admin), unless a user or group of
/// that name exists. Returns the new user's id.
pub(crate) fn create_user(
    tx: &mut impl postgres::GenericClient,
    username: &str,
    password_hash: &str,
    admin: bool,
) -> Result<Option<i64>, postgres::Error> {
    let row = tx.query_opt(
        "WITH u AS (
            INSERT INTO users (username, password_hash, admin)
            SELECT $1, $2, $3
            WHERE NOT EXISTS (SELECT 1 FROM groups WHERE group_name = $1)
            ON CONFLICT (username) DO NOTHING
            RETURNING id
        ), g AS (
            INSERT INTO groups (group_name, creator_id) SELECT $1, id FROM u RETURNING id, creator_id
        )
        INSERT INTO user_group (user_id, group_id, role) SELECT creator_id, id, $4::int FROM g
        RETURNING user_id",
        &[&username, &password_hash, &admin, &crate::api::UserGroupRole::Admin.code()],
    )?;
    Ok(row.map(|r| r.get("user_id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_splits_into_ordered_migrations() {
        let m = migrations();
        assert!(!m.is_empty());
        assert_eq!(m[0].0, 1);
        assert!(m[0].1.contains("CREATE TABLE users"));
        for w in m.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
