//! The worker's settings: `[worker]` keys, their defaults and their checks.

use super::{default_duration, ConfigError, Layers, Source, DEFAULT_COORDINATOR_ADDR};
use std::path::PathBuf;
use std::time::Duration;

// The defaults `mito worker --help` quotes, written only here, in humantime's words.
pub(crate) const DEFAULT_POLLING_INTERVAL: &str = "3m";
pub(crate) const DEFAULT_HEARTBEAT_INTERVAL: &str = "5m";

/// The worker's settings (`[worker]`), with mitosis' defaults.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
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
    /// `NAME=VALUE` settings added to every task's environment (a task's own `envs` win).
    pub env: Vec<(String, String)>,
    /// A PEM file of CA certificates trusted besides the system's, for `https` coordinators
    /// and object storage.
    pub ca_file: Option<PathBuf>,
}

impl WorkerConfig {
    /// Every key of `[worker]`.
    pub(crate) const KEYS: &'static [&'static str] = &[
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
        "env",
        "ca_file",
    ];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub(crate) fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let addr = l.string("coordinator_addr")?.unwrap_or_else(|| DEFAULT_COORDINATOR_ADDR.into());
        let cfg = WorkerConfig {
            coordinator_addr: check_base_url(&addr, l.source("coordinator_addr"))?,
            polling_interval: l.duration("polling_interval")?.unwrap_or(default_duration(DEFAULT_POLLING_INTERVAL)),
            heartbeat_interval: l
                .duration("heartbeat_interval")?
                .unwrap_or(default_duration(DEFAULT_HEARTBEAT_INTERVAL)),
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
            env: parse_env(l.entries("env")?.unwrap_or_default(), l.source("env"))?,
            ca_file: l.path("ca_file")?,
        };
        for (key, d) in [("polling_interval", cfg.polling_interval), ("heartbeat_interval", cfg.heartbeat_interval)] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "it must be longer than 0s"));
            }
            crate::api::time::check_max(key, d).map_err(|e| ConfigError::invalid(key, e))?;
        }
        if let Some(d) = cfg.lifetime {
            crate::api::time::check_max("lifetime", d).map_err(|e| ConfigError::invalid("lifetime", e))?;
        }
        let sources = [cfg.password.is_some(), cfg.password_file.is_some(), cfg.password_stdin];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::PasswordTwice);
        }
        if let Some(u) = &cfg.user {
            if !crate::api::valid_name(u) {
                return Err(ConfigError::invalid(
                    "user",
                    format_args!("{u:?} must be 1 to 255 letters, digits, '-' or '_'"),
                ));
            }
        }
        Ok(cfg)
    }
}

/// Most `env` settings a worker takes, and the longest one: bounds on what a config can make
/// every task carry.
const MAX_ENV: usize = 256;
const MAX_ENV_LEN: usize = 32 * 1024;

/// `NAME=VALUE` items: a name of letters, digits and `_` not starting with a digit; the value
/// may be empty and may hold `=` and commas.
pub(crate) fn parse_env(items: Vec<String>, source: Option<&Source>) -> Result<Vec<(String, String)>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { key: "env".into(), from: source.cloned(), reason };
    if items.len() > MAX_ENV {
        return Err(invalid(format!("more than {MAX_ENV} settings")));
    }
    items
        .into_iter()
        .map(|item| {
            let bad = |why: &str| invalid(format!("{item:?} {why}"));
            let (name, value) = item.split_once('=').ok_or_else(|| bad("is not NAME=VALUE"))?;
            let name_ok = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                return Err(bad("needs a NAME of letters, digits and '_' (not starting with a digit)"));
            }
            if item.len() > MAX_ENV_LEN || value.contains('\0') {
                return Err(bad("is longer than 32 KiB or holds a NUL byte"));
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// Checks a coordinator address: an http(s) URL with a host; returns it without a trailing slash.
pub(crate) fn check_base_url(addr: &str, source: Option<&Source>) -> Result<String, ConfigError> {
    let trimmed = addr.trim().trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(ConfigError::Invalid {
            key: "coordinator_addr".into(),
            from: source.cloned(),
            reason: format!("{addr:?} is not a URL like http://127.0.0.1:5000 (the scheme is required)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_defaults_follow_mitosis() {
        let c = WorkerConfig::from_layers(&Layers::default()).unwrap();
        assert_eq!(c.coordinator_addr, "http://127.0.0.1:5000");
        assert_eq!(c.polling_interval, Duration::from_secs(180));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(300));
        assert!(c.groups.is_empty() && c.tags.is_empty() && c.lifetime.is_none() && !c.file_log);
    }

    #[test]
    fn env_settings_are_name_value_pairs_whose_values_keep_commas() {
        let env = parse_env(vec!["CUDA_VISIBLE_DEVICES=0,1".into(), "A=b=c".into(), "E=".into()], None).unwrap();
        assert_eq!(env[0], ("CUDA_VISIBLE_DEVICES".into(), "0,1".into()));
        assert_eq!(env[1], ("A".into(), "b=c".into()));
        assert_eq!(env[2], ("E".into(), String::new()));
        for bad in ["NOEQUALS", "=x", "1A=x", "A B=x"] {
            assert!(parse_env(vec![bad.into()], None).is_err(), "{bad}");
        }
    }

    #[test]
    fn coordinator_addr_needs_a_scheme() {
        assert_eq!(check_base_url("http://h:1/", None).unwrap(), "http://h:1");
        let e = check_base_url("127.0.0.1:5000", Some(&Source::Cli("-c".into()))).unwrap_err().to_string();
        assert!(e.contains("-c") && e.contains("scheme"), "{e}");
    }
}
