//! The coordinator's settings: `[coordinator]` keys, their defaults and their checks.

use super::{data_dir, default_duration, ConfigError, Layers};
use std::path::PathBuf;
use std::time::Duration;

// The defaults `mito coordinator --help` quotes, written only here; durations are in
// humantime's words so the help can show them as they are.
pub(crate) const DEFAULT_BIND: &str = "127.0.0.1:5000";
pub(crate) const DEFAULT_DB_URL: &str = "postgres://mitosis:mitosis@localhost/mitosis";
pub(crate) const DEFAULT_S3_REGION: &str = "mitosis";
pub(crate) const DEFAULT_ARTIFACTS_BUCKET: &str = "mitosis-artifacts";
pub(crate) const DEFAULT_ATTACHMENTS_BUCKET: &str = "mitosis-attachments";
pub(crate) const DEFAULT_ADMIN_USER: &str = "mitosis_admin";
pub(crate) const DEFAULT_ADMIN_PASSWORD: &str = "mitosis_admin";
pub(crate) const DEFAULT_ACCESS_TOKEN_PRIVATE_PATH: &str = "private.pem";
pub(crate) const DEFAULT_ACCESS_TOKEN_PUBLIC_PATH: &str = "public.pem";
pub(crate) const DEFAULT_ACCESS_TOKEN_EXPIRES_IN: &str = "7 days";
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: &str = "600 seconds";
pub(crate) const DEFAULT_CLAIM_LEASE: &str = "10s";

/// The coordinator's settings (`[coordinator]`), with mitosis' defaults.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorConfig {
    pub bind: std::net::SocketAddr,
    pub db_url: String,
    /// None: the embedded local object store under `data_dir`.
    pub s3_url: Option<String>,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_region: String,
    pub s3_force_path_style: bool,
    /// A PEM file of CA certificates trusted besides the system's, for an `https` `s3_url`.
    pub ca_file: Option<PathBuf>,
    pub artifacts_bucket: String,
    pub attachments_bucket: String,
    pub redis_url: Option<String>,
    pub redis_worker_password: Option<String>,
    pub redis_client_password: Option<String>,
    pub redis_skip_acl_rules: bool,
    pub admin_user: String,
    pub admin_password: String,
    pub access_token_private_path: PathBuf,
    pub access_token_public_path: PathBuf,
    pub access_token_expires_in: Duration,
    pub heartbeat_timeout: Duration,
    /// How long a task handed to a worker that confirms its claims may go unconfirmed
    /// before the reaper puts it back to Ready.
    pub claim_lease: Duration,
    pub log_path: Option<PathBuf>,
    pub file_log: bool,
    /// Where the local object store keeps its files.
    pub data_dir: PathBuf,
    /// Handler threads of the HTTP server (and PostgreSQL connections in the pool).
    pub http_threads: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Failed logins for one user name within `login_failure_window` before it is blocked.
    pub login_failure_limit: usize,
    /// Failed logins from one address within `login_failure_window` before it is blocked.
    pub login_address_failure_limit: usize,
    /// How far back failed logins count.
    pub login_failure_window: Duration,
    /// How long a blocked user name or address gets 429 at `POST /login`.
    pub login_block: Duration,
    /// Time a client has to send a request's headers (and an idle keep-alive connection
    /// stays open).
    pub header_timeout: Duration,
    /// Longest wait for progress while a body is read or a response written.
    pub body_timeout: Duration,
    /// Open connections at once (one per worker); two descriptors each, and a thread while
    /// a request is read. Beyond it, 503 and close.
    pub max_connections: usize,
    /// Bytes of request bodies read ahead on all connection threads together. Without it
    /// `max_connections` clients sending `body_limit` bytes each could make the coordinator
    /// hold their product (16 GiB by default); a body that finds no room within
    /// `body_timeout` gets 503.
    pub body_memory_limit: usize,
    /// A second listener serving only `GET /metrics`, without authentication.
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// A bearer token that may read `/metrics` on the main listener (besides admins').
    pub metrics_token: Option<String>,
    /// A file whose first line is that token.
    pub metrics_token_file: Option<PathBuf>,
}

/// Upper bound of `header_timeout` and `body_timeout`: a stalled client holds a thread
/// and a file descriptor at most this long.
const MAX_IO_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upper bound of `max_connections` (each is two file descriptors, and at times a thread).
const MAX_CONNECTIONS: usize = 1_000_000;
/// Upper bound of `body_memory_limit`: beyond it the budget no longer protects a machine.
const MAX_BODY_MEMORY: usize = 64 << 30;

impl CoordinatorConfig {
    /// Every key of `[coordinator]`.
    pub(crate) const KEYS: &'static [&'static str] = &[
        "bind",
        "db_url",
        "s3_url",
        "s3_access_key",
        "s3_secret_key",
        "s3_region",
        "s3_force_path_style",
        "ca_file",
        "artifacts_bucket",
        "attachments_bucket",
        "redis_url",
        "redis_worker_password",
        "redis_client_password",
        "redis_skip_acl_rules",
        "admin_user",
        "admin_password",
        "access_token_private_path",
        "access_token_public_path",
        "access_token_expires_in",
        "heartbeat_timeout",
        "claim_lease",
        "log_path",
        "file_log",
        "data_dir",
        "http_threads",
        "body_limit",
        "login_failure_limit",
        "login_address_failure_limit",
        "login_failure_window",
        "login_block",
        "header_timeout",
        "body_timeout",
        "max_connections",
        "body_memory_limit",
        "metrics_bind",
        "metrics_token",
        "metrics_token_file",
    ];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub(crate) fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let string =
            |k: &str, d: &str| -> Result<String, ConfigError> { Ok(l.string(k)?.unwrap_or_else(|| d.to_string())) };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let cfg = CoordinatorConfig {
            bind: l
                .parsed("bind", "an address like 127.0.0.1:5000")?
                .unwrap_or_else(|| DEFAULT_BIND.parse().expect("valid default")),
            db_url: string("db_url", DEFAULT_DB_URL)?,
            s3_url: l.string("s3_url")?.filter(|s| !s.is_empty()),
            s3_access_key: string("s3_access_key", "mitosis_access")?,
            s3_secret_key: string("s3_secret_key", "mitosis_secret")?,
            s3_region: string("s3_region", DEFAULT_S3_REGION)?,
            s3_force_path_style: l.bool("s3_force_path_style")?.unwrap_or(false),
            ca_file: l.path("ca_file")?,
            artifacts_bucket: string("artifacts_bucket", DEFAULT_ARTIFACTS_BUCKET)?,
            attachments_bucket: string("attachments_bucket", DEFAULT_ATTACHMENTS_BUCKET)?,
            redis_url: l.string("redis_url")?.filter(|s| !s.is_empty()),
            redis_worker_password: l.string("redis_worker_password")?,
            redis_client_password: l.string("redis_client_password")?,
            redis_skip_acl_rules: l.bool("redis_skip_acl_rules")?.unwrap_or(false),
            admin_user: string("admin_user", DEFAULT_ADMIN_USER)?,
            admin_password: string("admin_password", DEFAULT_ADMIN_PASSWORD)?,
            access_token_private_path: l
                .path("access_token_private_path")?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ACCESS_TOKEN_PRIVATE_PATH)),
            access_token_public_path: l
                .path("access_token_public_path")?
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ACCESS_TOKEN_PUBLIC_PATH)),
            access_token_expires_in: l
                .duration("access_token_expires_in")?
                .unwrap_or(default_duration(DEFAULT_ACCESS_TOKEN_EXPIRES_IN)),
            heartbeat_timeout: l.duration("heartbeat_timeout")?.unwrap_or(default_duration(DEFAULT_HEARTBEAT_TIMEOUT)),
            claim_lease: l.duration("claim_lease")?.unwrap_or(default_duration(DEFAULT_CLAIM_LEASE)),
            log_path: l.path("log_path")?,
            file_log: l.bool("file_log")?.unwrap_or(false),
            data_dir: match l.path("data_dir")? {
                Some(p) => p,
                None => data_dir()
                    .map(|d| d.join("mitosis").join("coordinator"))
                    .ok_or(ConfigError::NoDirectory { what: "a data directory", key: "data_dir" })?,
            },
            http_threads: l.count("http_threads")?.unwrap_or((2 * cores).max(4)),
            body_limit: l.count("body_limit")?.unwrap_or(2 * 1024 * 1024),
            login_failure_limit: l.count("login_failure_limit")?.unwrap_or(5),
            login_address_failure_limit: l.count("login_address_failure_limit")?.unwrap_or(20),
            login_failure_window: l.duration("login_failure_window")?.unwrap_or(Duration::from_secs(300)),
            login_block: l.duration("login_block")?.unwrap_or(Duration::from_secs(60)),
            header_timeout: l.duration("header_timeout")?.unwrap_or(Duration::from_secs(10)),
            body_timeout: l.duration("body_timeout")?.unwrap_or(Duration::from_secs(30)),
            max_connections: l.count("max_connections")?.unwrap_or(8192),
            body_memory_limit: l.count("body_memory_limit")?.unwrap_or(256 << 20),
            metrics_bind: match l.string("metrics_bind")?.filter(|s| !s.is_empty()) {
                Some(_) => l.parsed("metrics_bind", "an address like 127.0.0.1:9100")?,
                None => None,
            },
            metrics_token: l.string("metrics_token")?,
            metrics_token_file: l.path("metrics_token_file")?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks the values that each key's parser alone cannot: ranges, and keys that
    /// depend on one another.
    fn check(&self) -> Result<(), ConfigError> {
        let cfg = self;
        if cfg.metrics_token.is_some() && cfg.metrics_token_file.is_some() {
            return Err(ConfigError::invalid(
                "metrics_token",
                "`metrics_token_file` is set too; give the metrics token one way only",
            ));
        }
        if let Some(t) = &cfg.metrics_token {
            check_metrics_token(t).map_err(|e| ConfigError::invalid("metrics_token", e))?;
        }
        for (key, d) in [("header_timeout", cfg.header_timeout), ("body_timeout", cfg.body_timeout)] {
            if d.is_zero() || d > MAX_IO_TIMEOUT {
                return Err(ConfigError::invalid(
                    key,
                    format_args!(
                        "{} is not between 1ms and {}",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_IO_TIMEOUT)
                    ),
                ));
            }
        }
        if cfg.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError::invalid(
                "max_connections",
                format_args!("{} is more than {MAX_CONNECTIONS}", cfg.max_connections),
            ));
        }
        // Twice body_limit: the largest body must fit beside the eighth of the budget that
        // large bodies leave to small requests.
        let min_body_memory = cfg.body_limit.saturating_mul(2);
        if cfg.body_memory_limit < min_body_memory || cfg.body_memory_limit > MAX_BODY_MEMORY {
            return Err(ConfigError::invalid(
                "body_memory_limit",
                format_args!(
                    "{} is not between {min_body_memory} (twice `body_limit`) \
                     and {MAX_BODY_MEMORY} bytes; raise it or lower `body_limit`",
                    cfg.body_memory_limit
                ),
            ));
        }
        if !crate::api::valid_name(&cfg.admin_user) {
            return Err(ConfigError::invalid(
                "admin_user",
                format_args!("{:?} must be 1 to 255 letters, digits, '-' or '_'", cfg.admin_user),
            ));
        }
        if cfg.admin_password.is_empty() || cfg.admin_password.len() > 255 {
            return Err(ConfigError::invalid("admin_password", "it must be 1 to 255 bytes"));
        }
        for (key, d) in [
            ("access_token_expires_in", cfg.access_token_expires_in),
            ("heartbeat_timeout", cfg.heartbeat_timeout),
            ("claim_lease", cfg.claim_lease),
            ("login_failure_window", cfg.login_failure_window),
            ("login_block", cfg.login_block),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "it must be longer than 0s"));
            }
            crate::api::time::check_max(key, d).map_err(|e| ConfigError::invalid(key, e))?;
        }
        Ok(())
    }
}

/// Shortest metrics token accepted: a guessable one would open the metrics to anyone.
pub(crate) const MIN_METRICS_TOKEN: usize = 16;

/// Why a metrics token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetricsTokenError {
    /// Its length in bytes, outside `MIN_METRICS_TOKEN..=4096`.
    Length(usize),
    /// It holds spaces, control characters or non-ASCII.
    Characters,
}

impl std::fmt::Display for MetricsTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsTokenError::Length(n) => write!(f, "it must be {MIN_METRICS_TOKEN} to 4096 bytes, not {n}"),
            MetricsTokenError::Characters => {
                write!(f, "it must be printable ASCII without spaces (it travels in an HTTP header)")
            }
        }
    }
}

impl std::error::Error for MetricsTokenError {}

/// A metrics token must be long enough not to be guessed and fit in a header.
pub(crate) fn check_metrics_token(t: &str) -> Result<(), MetricsTokenError> {
    if t.len() < MIN_METRICS_TOKEN || t.len() > 4096 {
        return Err(MetricsTokenError::Length(t.len()));
    }
    if t.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii()) {
        return Err(MetricsTokenError::Characters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let mut l = Layers::default();
        l.set("data_dir", toml::Value::String("/tmp/mito-x".into()), Source::Cli("--data-dir".into()));
        let c = CoordinatorConfig::from_layers(&l).unwrap();
        assert_eq!(
            (c.header_timeout, c.body_timeout, c.max_connections),
            (Duration::from_secs(10), Duration::from_secs(30), 8192)
        );
        assert_eq!(c.body_memory_limit, 256 << 20);
        assert_eq!(
            (c.access_token_expires_in, c.heartbeat_timeout, c.claim_lease),
            (Duration::from_secs(7 * 86_400), Duration::from_secs(600), Duration::from_secs(10))
        );
        for (key, value) in [
            ("header_timeout", "2h"),
            ("body_timeout", "0s"),
            ("max_connections", "2000000"),
            ("body_memory_limit", "4194303"),
            ("body_memory_limit", "100000000000"),
        ] {
            let mut l = l.clone();
            l.set(key, toml::Value::String(value.into()), Source::Cli(format!("--{key}")));
            let e = CoordinatorConfig::from_layers(&l).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
