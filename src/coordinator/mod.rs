//! `mito coordinator`: the HTTP API over PostgreSQL.
//!
//! ```text
//! mito coordinator --config coordinator.toml --bind 0.0.0.0:5000
//! ```
//!
//! Startup: config → logging → keys → object storage (S3 buckets or the local store's
//! directories) → PostgreSQL (retried while unreachable) → schema and admin user →
//! handler threads. SIGINT, SIGTERM or `POST /admin/shutdown` stop it: the
//! handlers finish what they are doing and the process exits 0.

pub(crate) mod auth;
pub(crate) mod authz;
mod check;
pub(crate) mod db;
pub(crate) mod error;
pub(crate) mod filter;
pub(crate) mod http;
pub(crate) mod limits;
pub(crate) mod login_limit;
pub(crate) mod metrics;
pub(crate) mod peer;
pub(crate) mod reaper;
pub(crate) mod redis;
mod routes;
pub(crate) mod scheduler;
mod server;
pub(crate) mod stats;
pub(crate) mod storage;
pub(crate) mod tasks;
mod ui;
pub(crate) mod workers;

use crate::config::coordinator::{
    DEFAULT_ACCESS_TOKEN_EXPIRES_IN, DEFAULT_ACCESS_TOKEN_PRIVATE_PATH, DEFAULT_ACCESS_TOKEN_PUBLIC_PATH,
    DEFAULT_ADMIN_PASSWORD, DEFAULT_ADMIN_USER, DEFAULT_ARTIFACTS_BUCKET, DEFAULT_ATTACHMENTS_BUCKET, DEFAULT_BIND,
    DEFAULT_CLAIM_LEASE, DEFAULT_DB_URL, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_S3_REGION,
};
use crate::config::{cache_dir, concat_str, CoordinatorConfig, Layers};
use crate::logging::{self, FileTarget};
use crate::opts::{help_text, parse_mode, OptSpec};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use error::StartError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const ABOUT: &str = "Run the mitosis coordinator";

const SPECS: &[OptSpec] = &[
    OptSpec::value("bind", Some('b'), "bind", "BIND", concat_str!("The address to bind to (default ", DEFAULT_BIND, ")")),
    OptSpec::value("db", None, "db_url", "DB_URL", concat_str!("The database URL (default ", DEFAULT_DB_URL, ")")),
    OptSpec::value("s3", None, "s3_url", "S3_URL", "The S3 URL; without one, objects are kept in the coordinator's own store under --data-dir"),
    OptSpec::value("s3-access-key", None, "s3_access_key", "S3_ACCESS_KEY", "The S3 access key"),
    OptSpec::value("s3-secret-key", None, "s3_secret_key", "S3_SECRET_KEY", "The S3 secret key"),
    OptSpec::value("s3-region", None, "s3_region", "S3_REGION", concat_str!("The S3 region (default ", DEFAULT_S3_REGION, ")")),
    OptSpec::switch("s3-force-path-style", None, "s3_force_path_style", "Address buckets as http://host/bucket instead of http://bucket.host"),
    OptSpec::value("ca-file", None, "ca_file", "CA_FILE", "A PEM file of CA certificates to trust besides the system's, for an https S3 URL"),
    OptSpec::value("artifacts-bucket", None, "artifacts_bucket", "ARTIFACTS_BUCKET", concat_str!("The bucket for task artifacts (default ", DEFAULT_ARTIFACTS_BUCKET, ")")),
    OptSpec::value("attachments-bucket", None, "attachments_bucket", "ATTACHMENTS_BUCKET", concat_str!("The bucket for group attachments (default ", DEFAULT_ATTACHMENTS_BUCKET, ")")),
    OptSpec::value("redis", None, "redis_url", "REDIS_URL", "The Redis URL, e.g. redis://:password@localhost (default: no Redis)"),
    OptSpec::value("redis-worker-password", None, "redis_worker_password", "REDIS_WORKER_PASSWORD", "The Redis worker password (default: generated)"),
    OptSpec::value("redis-client-password", None, "redis_client_password", "REDIS_CLIENT_PASSWORD", "The Redis client password (default: generated)"),
    OptSpec::switch("redis-skip-acl-rules", None, "redis_skip_acl_rules", "Do not create the Redis ACL users (they must exist already)"),
    OptSpec::value("admin-user", None, "admin_user", "ADMIN_USER", concat_str!("The admin username (default ", DEFAULT_ADMIN_USER, ")")),
    OptSpec::value("admin-password", None, "admin_password", "ADMIN_PASSWORD", concat_str!("The admin password (default ", DEFAULT_ADMIN_PASSWORD, ")")),
    OptSpec::value("access-token-private-path", None, "access_token_private_path", "ACCESS_TOKEN_PRIVATE_PATH", concat_str!("The path to the private key, default to `", DEFAULT_ACCESS_TOKEN_PRIVATE_PATH, "`")),
    OptSpec::value("access-token-public-path", None, "access_token_public_path", "ACCESS_TOKEN_PUBLIC_PATH", concat_str!("The path to the public key, default to `", DEFAULT_ACCESS_TOKEN_PUBLIC_PATH, "`")),
    OptSpec::value("access-token-expires-in", None, "access_token_expires_in", "ACCESS_TOKEN_EXPIRES_IN", concat_str!("The access token expiration time, default to ", DEFAULT_ACCESS_TOKEN_EXPIRES_IN)),
    OptSpec::value("heartbeat-timeout", None, "heartbeat_timeout", "HEARTBEAT_TIMEOUT", concat_str!("The heartbeat timeout, default to ", DEFAULT_HEARTBEAT_TIMEOUT)),
    OptSpec::value("claim-lease", None, "claim_lease", "CLAIM_LEASE", concat_str!("How long a task handed to a mito worker may go unconfirmed before it is requeued (default ", DEFAULT_CLAIM_LEASE, ")")),
    OptSpec::value("log-path", None, "log_path", "LOG_PATH", "The log file path. If not specified, then the default rolling log file path would be used. If specified, then the log file would be exactly at the path specified"),
    OptSpec::switch("file-log", None, "file_log", "Enable logging to file"),
    OptSpec::value("data-dir", None, "data_dir", "DATA_DIR", "Where the local object store keeps files (default $XDG_DATA_HOME/mitosis/coordinator)"),
    OptSpec::value("metrics-bind", None, "metrics_bind", "ADDR", "Also serve GET /metrics, without authentication, on this address (default: only on --bind, to admins and the metrics token)"),
    OptSpec::value("metrics-token-file", None, "metrics_token_file", "PATH", "A file whose first line is a bearer token that may read /metrics on --bind"),
    OptSpec::value("http-threads", None, "http_threads", "N", "Request handler threads (default 2 x cores, at least 4); the coordinator keeps 2 x N + 3 database connections"),
    OptSpec::flag("check-config", None, "Check the configuration, the keys and the data directory, print what would be used and exit (1 if something is wrong); connects to nothing"),
];

const FOOTER: &str = "\
Every option can also be set in the [coordinator] table of a config file (keys as in
config.example.toml, e.g. db_url) or as an environment variable MITO_<KEY> (MITO_DB_URL).
Later sources win: defaults, ~/.config/mitosis/config.toml, --config (or ./config.toml),
environment, command line. Durations are like \"600s\", \"5m\" or \"7d\".

Keys: openssl genpkey -algorithm ed25519 -out private.pem
      openssl pkey -in private.pem -pubout -out public.pem";

/// A one-shot stop signal shared by every thread.
pub(crate) struct Shutdown {
    flag: AtomicBool,
    tx: Sender<()>,
}

impl Shutdown {
    fn new() -> (Shutdown, Receiver<()>) {
        let (tx, rx) = bounded(1);
        (Shutdown { flag: AtomicBool::new(false), tx }, rx)
    }

    /// Asks every thread to stop.
    pub(crate) fn trigger(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            let _ = self.tx.try_send(());
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// What every handler can reach.
pub(crate) struct Ctx {
    pub cfg: CoordinatorConfig,
    pub pool: db::Pool,
    /// Connections for the workers' busiest calls (fetch, Finish, heartbeat); see
    /// [`db::QUEUE_SETUP`].
    pub queue_pool: db::Pool,
    pub keys: auth::Keys,
    /// Tokens whose signatures were already checked.
    pub tokens: auth::TokenCache,
    pub shutdown_secret: String,
    pub shutdown: Shutdown,
    /// Handed to clients by `GET /redis`.
    pub redis_client_url: Option<String>,
    /// Handed to workers at registration.
    pub redis_worker_url: Option<String>,
    pub scheduler: scheduler::Scheduler,
    /// Where artifacts and attachments live.
    pub storage: storage::Storage,
    /// Failed-login counts, for the limit on password guessing.
    pub login_limit: login_limit::LoginLimiter,
    /// The dashboard's Content-Security-Policy (it names the S3 endpoint, if any).
    pub ui_policy: String,
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Entry point of `mito coordinator`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito coordinator", SPECS, false, || {
        help_text(ABOUT, "mito coordinator [OPTIONS]", SPECS, FOOTER)
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let check_only = args.extra("check-config").is_some();
    let layers = match Layers::load("coordinator", CoordinatorConfig::KEYS, args.config.as_deref(), args.values) {
        Ok(l) => l,
        Err(e) => return crate::opts::config_error("mito coordinator", &e),
    };
    let cfg = match CoordinatorConfig::from_layers(&layers) {
        Ok(c) => c,
        Err(e) => return crate::opts::config_error("mito coordinator", &e),
    };
    if check_only {
        for w in &layers.warnings {
            eprintln!("mito coordinator: warning: {w}");
        }
        return match check::check(&cfg) {
            Ok(report) => {
                print!("{report}");
                0
            }
            Err(e) => {
                eprintln!("mito coordinator: {e}");
                1
            }
        };
    }
    if let Err(e) = logging::init(log_target(&cfg)) {
        eprintln!("mito coordinator: {e}");
        return 1;
    }
    crate::opts::run_logged(&layers.warnings, || run(cfg))
}

fn log_target(cfg: &CoordinatorConfig) -> Option<FileTarget> {
    if !cfg.file_log {
        return None;
    }
    match &cfg.log_path {
        Some(p) => Some(FileTarget::Exact(p.clone())),
        None => cache_dir().map(|d| FileTarget::Daily {
            dir: d.join("mitosis").join("coordinator"),
            prefix: format!("{}.log", cfg.bind),
        }),
    }
}

fn random_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Raises the soft limit of open files to the hard one: the connection budget needs
/// about two descriptors per connection (README: Connection budget), far above the usual
/// soft limit of 1024, while the hard limit is commonly much higher. Warns when even the
/// hard limit is below the budget, since `max_connections` cannot be reached then.
fn raise_fd_limit(cfg: &CoordinatorConfig) {
    let needed = (2 * cfg.max_connections + 2 * cfg.http_threads + 100) as libc::rlim_t;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    let got = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        lim.rlim_cur
    };
    if got < needed {
        log::warn!(
            "only {got} open files are allowed, and {} connections need about {needed}; raise the limit \
             (LimitNOFILE= in a systemd unit, ulimit -n in a shell) or lower max_connections",
            cfg.max_connections
        );
    }
}

/// Opens the listening socket with TCP_NODELAY (inherited by accepted connections on
/// Linux): without it, Nagle's algorithm and delayed ACKs stall small responses ~40 ms.
fn listen(cfg: &CoordinatorConfig) -> Result<tiny_http::Server, StartError> {
    raise_fd_limit(cfg);
    let bind = cfg.bind;
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind(bind).map_err(|source| StartError::Listen { addr: bind, source })?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!("cannot set TCP_NODELAY: {}", std::io::Error::last_os_error());
    }
    let limits = tiny_http::Limits {
        header_timeout: cfg.header_timeout,
        body_timeout: cfg.body_timeout,
        max_connections: cfg.max_connections,
        // Bodies the handlers read whole are read ahead on the connection thread, so a
        // slow client never holds a handler thread.
        prebuffer: cfg.body_limit,
        // ...within one budget for all of them, so many clients cannot multiply it.
        body_memory: cfg.body_memory_limit,
        ..tiny_http::Limits::default()
    };
    tiny_http::Server::from_listener_with_limits(listener, None, limits)
        .map_err(|e| StartError::Serve { addr: bind, message: e.to_string() })
}

/// Hands memory freed so far back to the system. Hashing the admin password (argon2id uses
/// ~19 MiB) raises glibc's mmap threshold, so without this the idle coordinator would keep
/// that memory resident forever.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs a background loop (`f` returns at shutdown) and restarts it after a panic, so a
/// bad moment (a resource running short, a bug hit by one row) never leaves the
/// coordinator without its reaper or dispatcher.
pub(crate) fn supervised(ctx: &Ctx, name: &str, f: impl Fn()) {
    while !ctx.shutdown.is_set() {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f)).is_ok() {
            return;
        }
        log::error!("the {name} thread panicked; restarting it in a second");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reads the metrics token from `metrics_token_file` (its first line) into `metrics_token`.
fn load_metrics_token(cfg: &mut CoordinatorConfig) -> Result<(), StartError> {
    let Some(path) = &cfg.metrics_token_file else { return Ok(()) };
    let bad = |message: String| StartError::MetricsToken { path: path.clone(), message };
    let text = crate::private_files::read_first_line(path, 4096).map_err(|e| bad(format!("cannot read it: {e}")))?;
    crate::config::coordinator::check_metrics_token(&text).map_err(|e| bad(format!("it is not usable: {e}")))?;
    cfg.metrics_token = Some(text);
    Ok(())
}

/// Opens the `metrics_bind` listener, if configured.
fn listen_metrics(cfg: &CoordinatorConfig) -> Result<Option<tiny_http::Server>, StartError> {
    let Some(addr) = cfg.metrics_bind else { return Ok(None) };
    let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::MetricsListen { addr, source })?;
    let limits = tiny_http::Limits {
        header_timeout: cfg.header_timeout,
        body_timeout: cfg.body_timeout,
        // Scrapers are few; a flood of connections must not cost thousands of threads.
        max_connections: 64,
        ..tiny_http::Limits::default()
    };
    tiny_http::Server::from_listener_with_limits(listener, None, limits)
        .map(Some)
        .map_err(|e| StartError::Serve { addr, message: e.to_string() })
}

/// Starts everything and blocks until shutdown.
pub(crate) fn run(mut cfg: CoordinatorConfig) -> Result<(), StartError> {
    load_metrics_token(&mut cfg)?;
    let signals = crate::signal::listen();
    let keys = auth::Keys::load(&cfg.access_token_private_path, &cfg.access_token_public_path)?;
    let (shutdown, stopped) = Shutdown::new();
    let redis_urls = set_up_redis(&cfg, &keys)?;

    let storage = storage::Storage::from_config(&cfg, &keys)?;
    storage.ensure_buckets()?;

    let stop_early = || signals.try_recv().is_ok();
    log::info!("connecting to the database {}", db::redact(&cfg.db_url));
    let Some(mut first) = db::connect_with_retry(&cfg.db_url, stop_early) else {
        log::info!("stopped by a signal before the database was reachable");
        return Ok(());
    };
    let admin_hash =
        auth::hash_password(&crate::api::md5_password(&cfg.admin_password)).map_err(StartError::HashAdminPassword)?;
    db::migrate(&mut first, &cfg.admin_user, &admin_hash).map_err(StartError::Schema)?;
    let pool = db::Pool::new(&cfg.db_url, cfg.http_threads);
    pool.seed(first);
    // The dispatcher claims for parked fetches besides the handlers.
    let queue_pool = db::Pool::with_setup(&cfg.db_url, cfg.http_threads + 1, db::QUEUE_SETUP);
    release_freed_memory();

    let server = listen(&cfg)?;
    let server = Arc::new(server);
    let metrics_server = listen_metrics(&cfg)?.map(Arc::new);
    let secret = random_secret();
    log::warn!("shutdown secret (for `mito client admin shutdown`): {secret}");
    let threads = cfg.http_threads;
    let bind = cfg.bind;
    // Made now, so the first login of an unknown user takes no longer than any other.
    auth::dummy_hash();
    let login_limit = login_limit::LoginLimiter::new(login_limit::Limits {
        per_user: cfg.login_failure_limit,
        per_address: cfg.login_address_failure_limit,
        window: cfg.login_failure_window,
        block: cfg.login_block,
    });
    let ui_policy = ui::content_security_policy(cfg.s3_url.as_deref().and_then(ui::origin_of).as_deref());
    let ctx = Arc::new(Ctx {
        cfg,
        pool,
        queue_pool,
        keys,
        tokens: auth::TokenCache::default(),
        shutdown_secret: secret,
        shutdown,
        redis_client_url: redis_urls.as_ref().map(|u| u.client.clone()),
        redis_worker_url: redis_urls.map(|u| u.worker),
        scheduler: scheduler::Scheduler::new(),
        storage,
        login_limit,
        ui_policy,
    });
    let mut background = scheduler::spawn(ctx.clone());
    background.extend(reaper::spawn(ctx.clone()));
    background.extend(metrics::spawn_refresher(ctx.clone()));
    let mut handlers = server::spawn_handlers(ctx.clone(), server.clone(), threads);
    log::info!("coordinator listening on http://{bind} with {threads} handler threads");
    if let Some(m) = &metrics_server {
        handlers.extend(server::spawn_metrics(ctx.clone(), m.clone()));
        if let Some(addr) = ctx.cfg.metrics_bind {
            log::info!("metrics on http://{addr}/metrics (no authentication)");
        }
    }
    handlers.extend(background);
    wait_for_stop(&ctx, &signals, &stopped, handlers);
    drop(server);
    drop(metrics_server);
    std::thread::sleep(Duration::from_millis(10));
    log::info!("coordinator stopped");
    Ok(())
}

/// Waits for a signal or `admin shutdown`, then stops every thread and waits for it.
fn wait_for_stop(ctx: &Ctx, signals: &Receiver<i32>, stopped: &Receiver<()>, threads: Vec<JoinHandle<()>>) {
    select! {
        recv(signals) -> sig => {
            log::info!("received {}; shutting down", crate::signal::name(sig.unwrap_or(0)));
        }
        recv(stopped) -> _ => {}
    }
    ctx.shutdown.trigger();
    ctx.storage.close();
    for h in threads {
        let _ = h.join();
    }
}

/// Creates the Redis ACL users for workers and clients (their passwords derived from the
/// token key unless configured); None without Redis.
fn set_up_redis(cfg: &CoordinatorConfig, keys: &auth::Keys) -> Result<Option<redis::RedisUrls>, StartError> {
    let Some(url) = &cfg.redis_url else { return Ok(None) };
    let urls = redis::setup(
        url,
        cfg.redis_worker_password.as_deref(),
        cfg.redis_client_password.as_deref(),
        cfg.redis_skip_acl_rules,
        Some((keys.derive_secret("redis mitosis_worker"), keys.derive_secret("redis mitosis_client"))),
    )?;
    log::info!("Redis ACL users ready for workers and clients");
    Ok(Some(urls))
}
