//! Layered configuration for every role (`[coordinator]`, `[worker]`, `[client]`).
//!
//! Each key takes the value of the last layer that sets it:
//! built-in defaults ← `$XDG_CONFIG_HOME/mitosis/config.toml` (else `~/.config/...`) ←
//! the `--config` file (which must exist) or else `./config.toml` if present ←
//! `MITO_<KEY>` environment variables ← command-line flags.
//!
//! ```no_run
//! # use mito::config::{Layers, CliValue};
//! let layers = Layers::load("coordinator", &["bind"], None, vec![]).unwrap();
//! let bind: Option<String> = layers.string("bind").unwrap();
//! ```
//!
//! Relative paths written in a file resolve against that file's directory; from the
//! environment or the command line, against the current directory. A bad value names the
//! key, where it came from and what was expected.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(String),
    Cli(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Cli(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// A configuration problem, with a message meant for the person who wrote the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One value given on the command line: the config key it sets, the flag as typed, the value.
#[derive(Debug, Clone)]
pub struct CliValue {
    pub key: &'static str,
    pub flag: String,
    pub value: toml::Value,
}

#[derive(Debug, Clone)]
struct Entry {
    value: toml::Value,
    source: Source,
}

/// The merged layers of one role's configuration.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    entries: BTreeMap<String, Entry>,
    /// Things worth a warning once logging is up (unknown keys and the like).
    pub warnings: Vec<String>,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
}

/// `$XDG_CONFIG_HOME` or `~/.config`.
pub fn config_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_CACHE_HOME` or `~/.cache`.
pub fn cache_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_DATA_HOME` or `~/.local/share`.
pub fn data_dir() -> Option<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share")
}

fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(fallback)),
    }
}

impl Layers {
    /// Reads every layer for `role`, considering only `keys`.
    pub fn load(
        role: &str,
        keys: &[&str],
        config_flag: Option<&Path>,
        cli: Vec<CliValue>,
    ) -> Result<Layers, ConfigError> {
        let mut layers = Layers::default();
        if let Some(global) = config_dir().map(|d| d.join("mitosis").join("config.toml")) {
            if global.is_file() {
                layers.merge_file(role, keys, &global)?;
            }
        }
        match config_flag {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist (given with --config); check the path or leave --config out",
                        path.display()
                    )));
                }
                layers.merge_file(role, keys, path)?;
            }
            None => {
                let local = Path::new("config.toml");
                if local.is_file() {
                    layers.merge_file(role, keys, local)?;
                }
            }
        }
        for key in keys {
            let var = format!("MITO_{}", key.to_ascii_uppercase());
            if let Ok(v) = std::env::var(&var) {
                layers.set(key, toml::Value::String(v), Source::Env(var));
            }
        }
        for c in cli {
            layers.set(c.key, c.value, Source::Cli(c.flag));
        }
        Ok(layers)
    }

    fn merge_file(&mut self, role: &str, keys: &[&str], path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(format!("config file {} is not valid TOML: {}", path.display(), e.message()))
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.files.push(abs.clone());
        let Some(section) = doc.get(role) else { return Ok(()) };
        let Some(table) = section.as_table() else {
            return Err(ConfigError(format!("config file {}: [{role}] must be a table", path.display())));
        };
        for (k, v) in table {
            if keys.contains(&k.as_str()) {
                self.set(k, v.clone(), Source::File(abs.clone()));
            } else {
                self.warnings.push(format!("config file {}: unknown key `{k}` in [{role}] is ignored", path.display()));
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: toml::Value, source: Source) {
        self.entries.insert(key.to_string(), Entry { value, source });
    }

    /// Where `key` was set, if anywhere.
    pub fn source(&self, key: &str) -> Option<&Source> {
        self.entries.get(key).map(|e| &e.source)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&toml::Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(e) = self.entries.get(key) else { return Ok(None) };
        parse(&e.value).map(Some).ok_or_else(|| {
            ConfigError(format!("invalid value for `{key}` from {}: {} is not {expected}", e.source, show(&e.value)))
        })
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A value parsed with `FromStr`; `expected` describes the format for error messages.
    pub fn parsed<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.typed(key, expected, |v| v.as_str().and_then(|s| s.trim().parse().ok()))
    }

    /// A positive integer, from a TOML integer or a string.
    pub fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.typed(key, "a positive whole number", |v| match v {
            toml::Value::Integer(i) if *i > 0 => Some(*i as usize),
            toml::Value::String(s) => s.trim().parse().ok().filter(|n| *n > 0),
            _ => None,
        })
    }

    /// A boolean: TOML true/false, or the strings true/false/1/0/yes/no.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        self.typed(key, "a boolean (true or false)", |v| match v {
            toml::Value::Boolean(b) => Some(*b),
            toml::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        })
    }

    /// A humantime duration such as "600s", "7d" or "1h 30m".
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.typed(key, "a duration (for example \"600s\", \"5m\" or \"7d\")", |v| {
            v.as_str().and_then(|s| humantime::parse_duration(s.trim()).ok())
        })
    }

    /// A path; relative paths from a file resolve against that file's directory.
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = self.typed(key, "a path", |v| v.as_str().map(PathBuf::from))? else {
            return Ok(None);
        };
        if p.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "invalid value for `{key}` from {}: the path is empty",
                self.source(key).expect("typed found it")
            )));
        }
        match self.source(key) {
            Some(Source::File(file)) if p.is_relative() => Ok(Some(file.parent().unwrap_or(Path::new(".")).join(p))),
            _ => Ok(Some(p)),
        }
    }

    /// A list: a TOML array of strings, or one comma-separated string.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.typed(key, "a list of strings", |v| match v {
            toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            toml::Value::String(s) => {
                Some(s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect())
            }
            _ => None,
        })
    }
}

/// The coordinator's settings (`[coordinator]`), with the defaults of the seed.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub bind: std::net::SocketAddr,
    pub db_url: String,
    /// None: the embedded local object store under `data_dir`.
    pub s3_url: Option<String>,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_region: String,
    pub s3_force_path_style: bool,
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
    /// Open connections at once; one thread each. Beyond it, 503 and close.
    pub max_connections: usize,
    /// Bytes of request bodies read ahead on all connection threads together. Without it
    /// `max_connections` clients sending `body_limit` bytes each could make the coordinator
    /// hold their product (8 GiB by default); a body that finds no room within
    /// `body_timeout` gets 503.
    pub body_memory_limit: usize,
}

/// Upper bound of `header_timeout` and `body_timeout`: a stalled client holds a thread
/// and a file descriptor at most this long.
const MAX_IO_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upper bound of `max_connections` (each is a thread and a file descriptor).
const MAX_CONNECTIONS: usize = 1_000_000;
/// Upper bound of `body_memory_limit`: beyond it the budget no longer protects a machine.
const MAX_BODY_MEMORY: usize = 64 << 30;

impl CoordinatorConfig {
    /// Every key of `[coordinator]`.
    pub const KEYS: &'static [&'static str] = &[
        "bind",
        "db_url",
        "s3_url",
        "s3_access_key",
        "s3_secret_key",
        "s3_region",
        "s3_force_path_style",
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
    ];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let string =
            |k: &str, d: &str| -> Result<String, ConfigError> { Ok(l.string(k)?.unwrap_or_else(|| d.to_string())) };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let cfg = CoordinatorConfig {
            bind: l
                .parsed("bind", "an address like 127.0.0.1:5000")?
                .unwrap_or_else(|| "127.0.0.1:5000".parse().expect("valid default")),
            db_url: string("db_url", "postgres://mitosis:mitosis@localhost/mitosis")?,
            s3_url: l.string("s3_url")?.filter(|s| !s.is_empty()),
            s3_access_key: string("s3_access_key", "mitosis_access")?,
            s3_secret_key: string("s3_secret_key", "mitosis_secret")?,
            s3_region: string("s3_region", "mitosis")?,
            s3_force_path_style: l.bool("s3_force_path_style")?.unwrap_or(false),
            artifacts_bucket: string("artifacts_bucket", "mitosis-artifacts")?,
            attachments_bucket: string("attachments_bucket", "mitosis-attachments")?,
            redis_url: l.string("redis_url")?.filter(|s| !s.is_empty()),
            redis_worker_password: l.string("redis_worker_password")?,
            redis_client_password: l.string("redis_client_password")?,
            redis_skip_acl_rules: l.bool("redis_skip_acl_rules")?.unwrap_or(false),
            admin_user: string("admin_user", "mitosis_admin")?,
            admin_password: string("admin_password", "mitosis_admin")?,
            access_token_private_path: l
                .path("access_token_private_path")?
                .unwrap_or_else(|| PathBuf::from("private.pem")),
            access_token_public_path: l
                .path("access_token_public_path")?
                .unwrap_or_else(|| PathBuf::from("public.pem")),
            access_token_expires_in: l.duration("access_token_expires_in")?.unwrap_or(Duration::from_secs(7 * 86_400)),
            heartbeat_timeout: l.duration("heartbeat_timeout")?.unwrap_or(Duration::from_secs(600)),
            claim_lease: l.duration("claim_lease")?.unwrap_or(Duration::from_secs(10)),
            log_path: l.path("log_path")?,
            file_log: l.bool("file_log")?.unwrap_or(false),
            data_dir: match l.path("data_dir")? {
                Some(p) => p,
                None => data_dir()
                    .map(|d| d.join("mitosis").join("coordinator"))
                    .ok_or_else(|| ConfigError("cannot find a data directory: set `data_dir` or $HOME".into()))?,
            },
            http_threads: l.count("http_threads")?.unwrap_or((2 * cores).max(4)),
            body_limit: l.count("body_limit")?.unwrap_or(2 * 1024 * 1024),
            login_failure_limit: l.count("login_failure_limit")?.unwrap_or(5),
            login_address_failure_limit: l.count("login_address_failure_limit")?.unwrap_or(20),
            login_failure_window: l.duration("login_failure_window")?.unwrap_or(Duration::from_secs(300)),
            login_block: l.duration("login_block")?.unwrap_or(Duration::from_secs(60)),
            header_timeout: l.duration("header_timeout")?.unwrap_or(Duration::from_secs(10)),
            body_timeout: l.duration("body_timeout")?.unwrap_or(Duration::from_secs(30)),
            max_connections: l.count("max_connections")?.unwrap_or(4096),
            body_memory_limit: l.count("body_memory_limit")?.unwrap_or(256 << 20),
        };
        for (key, d) in [("header_timeout", cfg.header_timeout), ("body_timeout", cfg.body_timeout)] {
            if d.is_zero() || d > MAX_IO_TIMEOUT {
                return Err(ConfigError(format!(
                    "invalid value for `{key}`: {} is not between 1ms and {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_IO_TIMEOUT)
                )));
            }
        }
        if cfg.max_connections > MAX_CONNECTIONS {
            return Err(ConfigError(format!(
                "invalid value for `max_connections`: {} is more than {MAX_CONNECTIONS}",
                cfg.max_connections
            )));
        }
        // Twice body_limit: the largest body must fit beside the eighth of the budget that
        // large bodies leave to small requests.
        let min_body_memory = cfg.body_limit.saturating_mul(2);
        if cfg.body_memory_limit < min_body_memory || cfg.body_memory_limit > MAX_BODY_MEMORY {
            return Err(ConfigError(format!(
                "invalid value for `body_memory_limit`: {} is not between {min_body_memory} (twice `body_limit`) \
                 and {MAX_BODY_MEMORY} bytes; raise it or lower `body_limit`",
                cfg.body_memory_limit
            )));
        }
        if !crate::api::valid_name(&cfg.admin_user) {
            return Err(ConfigError(format!(
                "invalid value for `admin_user`: {:?} must be 1 to 255 letters, digits, '-' or '_'",
                cfg.admin_user
            )));
        }
        if cfg.admin_password.is_empty() || cfg.admin_password.len() > 255 {
            return Err(ConfigError("invalid value for `admin_password`: it must be 1 to 255 bytes".into()));
        }
        for (key, d) in [
            ("access_token_expires_in", cfg.access_token_expires_in),
            ("heartbeat_timeout", cfg.heartbeat_timeout),
            ("claim_lease", cfg.claim_lease),
            ("login_failure_window", cfg.login_failure_window),
            ("login_block", cfg.login_block),
        ] {
            if d.is_zero() {
                return Err(ConfigError(format!("invalid value for `{key}`: it must be longer than 0s")));
            }
            crate::api::time::check_max(key, d).map_err(|e| ConfigError(format!("invalid value for `{key}`: {e}")))?;
        }
        Ok(cfg)
    }
}

/// The client's settings (`[client]`), with mitosis' defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The coordinator's base URL, scheme included.
    pub coordinator_addr: String,
    /// Where cached tokens live (`username:token` lines).
    pub credential_path: PathBuf,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Log in without signing this user out of their other sessions.
    pub retain: bool,
}

impl ClientConfig {
    /// Every key of `[client]`.
    pub const KEYS: &'static [&'static str] = &["coordinator_addr", "credential_path", "user", "password", "retain"];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let addr = l.string("coordinator_addr")?.unwrap_or_else(|| "http://127.0.0.1:5000".into());
        let addr = addr.trim().trim_end_matches('/').to_string();
        if !(addr.starts_with("http://") || addr.starts_with("https://")) || addr.len() <= "https://".len() {
            let from = l.source("coordinator_addr").map(|s| format!(" from {s}")).unwrap_or_default();
            return Err(ConfigError(format!(
                "invalid value for `coordinator_addr`{from}: {addr:?} is not a URL; write it with the scheme, e.g. http://127.0.0.1:5000"
            )));
        }
        let credential_path = match l.path("credential_path")? {
            Some(p) => p,
            None => default_credential_path().ok_or_else(|| {
                ConfigError(
                    "cannot find a config directory for the credentials file: set `credential_path` or $HOME".into(),
                )
            })?,
        };
        Ok(ClientConfig {
            coordinator_addr: addr,
            credential_path,
            user: l.string("user")?.filter(|s| !s.is_empty()),
            password: l.string("password")?.filter(|s| !s.is_empty()),
            retain: l.bool("retain")?.unwrap_or(false),
        })
    }
}

/// `$XDG_CONFIG_HOME/mitosis/credentials` (or `~/.config/...`), shared by client and worker.
pub fn default_credential_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join("mitosis").join("credentials"))
}

/// The worker's settings (`[worker]`), with the defaults of the seed.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Base URL of the coordinator, without a trailing slash.
    pub coordinator_addr: String,
    /// Fallback fetch interval against a coordinator without long-poll.
    pub polling_interval: Duration,
    pub heartbeat_interval: Duration,
    /// None: `$XDG_CONFIG_HOME/mitosis/credentials`.
    pub credential_path: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (first line), kept off the command line and environment.
    pub password_file: Option<PathBuf>,
    /// Read the password from the first line of stdin.
    pub password_stdin: bool,
    /// The user tasks run as when the worker starts as root.
    pub run_as: Option<String>,
    /// `name` or `name:role` entries, sent as given.
    pub groups: Vec<String>,
    pub tags: Vec<String>,
    pub labels: Vec<String>,
    pub log_path: Option<PathBuf>,
    pub file_log: bool,
    pub shared_log: bool,
    /// None: the coordinator's token lifetime.
    pub lifetime: Option<Duration>,
    /// Keep other sessions' tokens valid when logging in.
    pub retain: bool,
    pub skip_redis: bool,
}

impl WorkerConfig {
    /// Every key of `[worker]`.
    pub const KEYS: &'static [&'static str] = &[
        "coordinator_addr",
        "polling_interval",
        "heartbeat_interval",
        "credential_path",
        "user",
        "password",
        "password_file",
        "password_stdin",
        "run_as",
        "groups",
        "tags",
        "labels",
        "log_path",
        "file_log",
        "shared_log",
        "lifetime",
        "retain",
        "skip_redis",
    ];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let addr = l.string("coordinator_addr")?.unwrap_or_else(|| "http://127.0.0.1:5000".into());
        let cfg = WorkerConfig {
            coordinator_addr: check_base_url(&addr, l.source("coordinator_addr"))?,
            polling_interval: l.duration("polling_interval")?.unwrap_or(Duration::from_secs(180)),
            heartbeat_interval: l.duration("heartbeat_interval")?.unwrap_or(Duration::from_secs(300)),
            credential_path: l.path("credential_path")?,
            user: l.string("user")?.filter(|s| !s.is_empty()),
            password: l.string("password")?.filter(|s| !s.is_empty()),
            password_file: l.path("password_file")?,
            password_stdin: l.bool("password_stdin")?.unwrap_or(false),
            run_as: l.string("run_as")?.filter(|s| !s.is_empty()),
            groups: l.list("groups")?.unwrap_or_default(),
            tags: l.list("tags")?.unwrap_or_default(),
            labels: l.list("labels")?.unwrap_or_default(),
            log_path: l.path("log_path")?,
            file_log: l.bool("file_log")?.unwrap_or(false),
            shared_log: l.bool("shared_log")?.unwrap_or(false),
            lifetime: l.duration("lifetime")?,
            retain: l.bool("retain")?.unwrap_or(false),
            skip_redis: l.bool("skip_redis")?.unwrap_or(false),
        };
        for (key, d) in [("polling_interval", cfg.polling_interval), ("heartbeat_interval", cfg.heartbeat_interval)] {
            if d.is_zero() {
                return Err(ConfigError(format!("invalid value for `{key}`: it must be longer than 0s")));
            }
            crate::api::time::check_max(key, d).map_err(|e| ConfigError(format!("invalid value for `{key}`: {e}")))?;
        }
        if let Some(d) = cfg.lifetime {
            crate::api::time::check_max("lifetime", d)
                .map_err(|e| ConfigError(format!("invalid value for `lifetime`: {e}")))?;
        }
        let sources = [cfg.password.is_some(), cfg.password_file.is_some(), cfg.password_stdin];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError(
                "more than one of `password`, `password_file` and `password_stdin` is set; give the password one way only".into(),
            ));
        }
        if let Some(u) = &cfg.user {
            if !crate::api::valid_name(u) {
                return Err(ConfigError(format!(
                    "invalid value for `user`: {u:?} must be 1 to 255 letters, digits, '-' or '_'"
                )));
            }
        }
        Ok(cfg)
    }
}

/// Checks a coordinator address: an http(s) URL with a host; returns it without a trailing slash.
pub fn check_base_url(addr: &str, source: Option<&Source>) -> Result<String, ConfigError> {
    let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
    let trimmed = addr.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(ConfigError(format!(
            "invalid value for `coordinator_addr`{from}: {addr:?} is not a URL like http://127.0.0.1:5000 (the scheme is required)"
        ))),
    }
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers_from(toml_text: &str, dir: &Path) -> Layers {
        let path = dir.join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        let mut l = Layers::default();
        l.merge_file("coordinator", &["bind", "heartbeat_timeout", "log_path", "file_log"], &path).unwrap();
        l
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mito-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let d = tempdir("rel");
        let l = layers_from("[coordinator]\nlog_path = \"logs/c.log\"\n", &d);
        let p = l.path("log_path").unwrap().unwrap();
        assert!(p.starts_with(std::path::absolute(&d).unwrap()), "{}", p.display());
        assert!(p.ends_with("logs/c.log"));
    }

    #[test]
    fn bad_values_name_key_source_and_expectation() {
        let d = tempdir("bad");
        let l = layers_from("[coordinator]\nheartbeat_timeout = \"soon\"\nfile_log = 3\n", &d);
        let e = l.duration("heartbeat_timeout").unwrap_err().0;
        assert!(e.contains("heartbeat_timeout") && e.contains("c.toml") && e.contains("duration"), "{e}");
        let e = l.bool("file_log").unwrap_err().0;
        assert!(e.contains("file_log") && e.contains("boolean"), "{e}");
    }

    #[test]
    fn unknown_keys_warn_and_other_roles_are_ignored() {
        let d = tempdir("unknown");
        let l = layers_from("[coordinator]\nbnd = \"x\"\n[worker]\nbind = \"y\"\n", &d);
        assert_eq!(l.string("bind").unwrap(), None);
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("bnd"));
    }

    #[test]
    fn later_layers_win() {
        let d = tempdir("order");
        let mut l = layers_from("[coordinator]\nbind = \"127.0.0.1:1\"\n", &d);
        l.set("bind", toml::Value::String("127.0.0.1:2".into()), Source::Cli("--bind".into()));
        assert_eq!(l.string("bind").unwrap().as_deref(), Some("127.0.0.1:2"));
    }

    #[test]
    fn client_defaults_and_url_check() {
        let c = ClientConfig::from_layers(&Layers::default()).unwrap();
        assert_eq!(c.coordinator_addr, "http://127.0.0.1:5000");
        assert!(!c.retain && c.user.is_none());
        let mut l = Layers::default();
        l.set("coordinator_addr", toml::Value::String("127.0.0.1:5000".into()), Source::Cli("-c".into()));
        let e = ClientConfig::from_layers(&l).unwrap_err().0;
        assert!(e.contains("coordinator_addr") && e.contains("-c") && e.contains("http://"), "{e}");
        l.set("coordinator_addr", toml::Value::String("http://h:1/".into()), Source::Cli("-c".into()));
        assert_eq!(ClientConfig::from_layers(&l).unwrap().coordinator_addr, "http://h:1");
    }

    #[test]
    fn worker_defaults_follow_the_seed() {
        let c = WorkerConfig::from_layers(&Layers::default()).unwrap();
        assert_eq!(c.coordinator_addr, "http://127.0.0.1:5000");
        assert_eq!(c.polling_interval, Duration::from_secs(180));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(300));
        assert!(c.groups.is_empty() && c.tags.is_empty() && c.lifetime.is_none() && !c.file_log);
    }

    #[test]
    fn coordinator_addr_needs_a_scheme() {
        assert_eq!(check_base_url("http://h:1/", None).unwrap(), "http://h:1");
        let e = check_base_url("127.0.0.1:5000", Some(&Source::Cli("-c".into()))).unwrap_err().0;
        assert!(e.contains("-c") && e.contains("scheme"), "{e}");
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let mut l = Layers::default();
        l.set("data_dir", toml::Value::String("/tmp/mito-x".into()), Source::Cli("--data-dir".into()));
        let c = CoordinatorConfig::from_layers(&l).unwrap();
        assert_eq!(
            (c.header_timeout, c.body_timeout, c.max_connections),
            (Duration::from_secs(10), Duration::from_secs(30), 4096)
        );
        assert_eq!(c.body_memory_limit, 256 << 20);
        for (key, value) in [
            ("header_timeout", "2h"),
            ("body_timeout", "0s"),
            ("max_connections", "2000000"),
            ("body_memory_limit", "4194303"),
            ("body_memory_limit", "100000000000"),
        ] {
            let mut l = l.clone();
            l.set(key, toml::Value::String(value.into()), Source::Cli(format!("--{key}")));
            let e = CoordinatorConfig::from_layers(&l).unwrap_err().0;
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn lists_come_from_arrays_or_commas() {
        let mut l = Layers::default();
        l.set("tags", toml::Value::String("a, b,,c".into()), Source::Env("MITO_TAGS".into()));
        assert_eq!(l.list("tags").unwrap().unwrap(), vec!["a", "b", "c"]);
    }
}
