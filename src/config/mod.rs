//! Layered configuration for every role (`[coordinator]`, `[worker]`, `[client]`).
//!
//! Each key takes the value of the last layer that sets it:
//! built-in defaults ← `$XDG_CONFIG_HOME/mitosis/config.toml` (else `~/.config/...`) ←
//! the `--config` file (which must exist) or else `./config.toml` if present ←
//! `MITO_<KEY>` environment variables ← command-line flags.
//!
//! ```ignore
//! # use mito::config::{Layers, CliValue};
//! let layers = Layers::load("coordinator", &["bind"], None, vec![]).unwrap();
//! let bind: Option<String> = layers.string("bind").unwrap();
//! ```
//!
//! Relative paths written in a file resolve against that file's directory; from the
//! environment or the command line, against the current directory. A bad value names the
//! key, where it came from and what was expected.
//!
//! This module is the layering machinery; each role's keys, defaults and checks live in
//! [`coordinator`], [`worker`] and [`client`]. Every default that `--help` quotes is a named
//! constant there, and the help text is built from it with `concat_str!`, so the two
//! cannot drift apart.

pub(crate) mod client;
pub(crate) mod coordinator;
pub(crate) mod worker;

pub(crate) use client::ClientConfig;
pub(crate) use coordinator::CoordinatorConfig;
pub(crate) use worker::WorkerConfig;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Joins `&str` constants at compile time into one `&'static str`. `concat!` takes only
/// literals; this lets a help string in an option table quote a default constant.
macro_rules! concat_str {
    ($($part:expr),+ $(,)?) => {{
        const PARTS: &[&str] = &[$($part),+];
        const LEN: usize = $crate::config::joined_len(PARTS);
        const BYTES: [u8; LEN] = $crate::config::join(PARTS);
        match ::std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => panic!("pieces of valid UTF-8 join into valid UTF-8"),
        }
    }};
}
pub(crate) use concat_str;

/// The total length of `parts`, for [`concat_str!`].
pub(crate) const fn joined_len(parts: &[&str]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < parts.len() {
        len += parts[i].len();
        i += 1;
    }
    len
}

/// `parts` one after another, for [`concat_str!`]; `N` is their total length.
pub(crate) const fn join<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            out[at] = bytes[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(at == N, "N is the joined length");
    out
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
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
#[derive(Debug)]
pub(crate) enum ConfigError {
    /// `--config` names a file that does not exist.
    MissingFile(PathBuf),
    /// A config file exists but cannot be read.
    Read { path: PathBuf, source: std::io::Error },
    /// A config file is not TOML; `message` is the parser's.
    Toml { path: PathBuf, message: String },
    /// The role's section (`[coordinator]`...) is not a table.
    NotTable { path: PathBuf, role: String },
    /// `key` has a value that is refused: `reason` says why, `from` where it was set.
    Invalid { key: String, from: Option<Source>, reason: String },
    /// More than one of the ways to give the worker's password is set.
    PasswordTwice,
    /// No default location for `what` (no $HOME): the key `key` must be set.
    NoDirectory { what: &'static str, key: &'static str },
}

impl ConfigError {
    /// An invalid value for `key`, without saying where it came from.
    pub(crate) fn invalid(key: &str, reason: impl fmt::Display) -> Self {
        ConfigError::Invalid { key: key.to_string(), from: None, reason: reason.to_string() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingFile(p) => write!(
                f,
                "config file {} does not exist (given with --config); check the path or leave --config out",
                p.display()
            ),
            ConfigError::Read { path, source } => write!(f, "cannot read config file {}: {source}", path.display()),
            ConfigError::Toml { path, message } => {
                write!(f, "config file {} is not valid TOML: {message}", path.display())
            }
            ConfigError::NotTable { path, role } => {
                write!(f, "config file {}: [{role}] must be a table", path.display())
            }
            ConfigError::Invalid { key, from, reason } => {
                write!(f, "invalid value for `{key}`")?;
                if let Some(from) = from {
                    write!(f, " from {from}")?;
                }
                write!(f, ": {reason}")
            }
            ConfigError::PasswordTwice => f.write_str(
                "more than one of `password`, `password_file` and `password_stdin` is set; give the password one way only",
            ),
            ConfigError::NoDirectory { what, key } => write!(f, "cannot find {what}: set `{key}` or $HOME"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One value given on the command line: the config key it sets, the flag as typed, the value.
#[derive(Debug, Clone)]
pub(crate) struct CliValue {
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
pub(crate) struct Layers {
    entries: BTreeMap<String, Entry>,
    /// Things worth a warning once logging is up (unknown keys and the like).
    pub warnings: Vec<String>,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
}

/// The coordinator URL that worker, client and bench use when none is given: the
/// coordinator's own default bind address.
pub(crate) const DEFAULT_COORDINATOR_ADDR: &str = concat_str!("http://", coordinator::DEFAULT_BIND);

/// `$XDG_CONFIG_HOME` or `~/.config`.
pub(crate) fn config_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_CACHE_HOME` or `~/.cache`.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    xdg_dir("XDG_CACHE_HOME", ".cache")
}

/// `$XDG_DATA_HOME` or `~/.local/share`.
pub(crate) fn data_dir() -> Option<PathBuf> {
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
    pub(crate) fn load(
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
                    return Err(ConfigError::MissingFile(path.to_path_buf()));
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
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.files.push(abs.clone());
        let Some(section) = doc.get(role) else { return Ok(()) };
        let Some(table) = section.as_table() else {
            return Err(ConfigError::NotTable { path: path.to_path_buf(), role: role.to_string() });
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
    pub(crate) fn source(&self, key: &str) -> Option<&Source> {
        self.entries.get(key).map(|e| &e.source)
    }

    fn typed<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&toml::Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(e) = self.entries.get(key) else { return Ok(None) };
        parse(&e.value).map(Some).ok_or_else(|| ConfigError::Invalid {
            key: key.to_string(),
            from: Some(e.source.clone()),
            reason: format!("{} is not {expected}", show(&e.value)),
        })
    }

    /// A string value.
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// A value parsed with `FromStr`; `expected` describes the format for error messages.
    pub(crate) fn parsed<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, ConfigError> {
        self.typed(key, expected, |v| v.as_str().and_then(|s| s.trim().parse().ok()))
    }

    /// A positive integer, from a TOML integer or a string.
    pub(crate) fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        self.typed(key, "a positive whole number", |v| match v {
            toml::Value::Integer(i) if *i > 0 => Some(*i as usize),
            toml::Value::String(s) => s.trim().parse().ok().filter(|n| *n > 0),
            _ => None,
        })
    }

    /// A boolean: TOML true/false, or the strings true/false/1/0/yes/no.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
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
    pub(crate) fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        self.typed(key, "a duration (for example \"600s\", \"5m\" or \"7d\")", |v| {
            v.as_str().and_then(|s| humantime::parse_duration(s.trim()).ok())
        })
    }

    /// A path; relative paths from a file resolve against that file's directory.
    pub(crate) fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = self.typed(key, "a path", |v| v.as_str().map(PathBuf::from))? else {
            return Ok(None);
        };
        if p.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: key.to_string(),
                from: self.source(key).cloned(),
                reason: "the path is empty".into(),
            });
        }
        match self.source(key) {
            Some(Source::File(file)) if p.is_relative() => Ok(Some(file.parent().unwrap_or(Path::new(".")).join(p))),
            _ => Ok(Some(p)),
        }
    }

    /// A list: a TOML array of strings, or one comma-separated string.
    pub(crate) fn list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.typed(key, "a list of strings", |v| match v {
            toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            toml::Value::String(s) => {
                Some(s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect())
            }
            _ => None,
        })
    }
}

impl Layers {
    /// A list whose items may hold commas: a TOML array of strings, or one string taken whole.
    pub(crate) fn entries(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.typed(key, "a list of strings", |v| match v {
            toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
            toml::Value::String(s) => Some(vec![s.clone()]),
            _ => None,
        })
    }
}

/// `$XDG_CONFIG_HOME/mitosis/credentials` (or `~/.config/...`), shared by client and worker.
pub(crate) fn default_credential_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join("mitosis").join("credentials"))
}

/// A default duration constant, parsed; the tests build the defaults, so a typo fails them.
fn default_duration(text: &str) -> Duration {
    humantime::parse_duration(text).expect("a valid default duration")
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

    #[test]
    fn concat_str_joins_constants() {
        const A: &str = "a:";
        const JOINED: &str = concat_str!(A, "bé", "");
        assert_eq!(JOINED, "a:bé");
        assert_eq!(DEFAULT_COORDINATOR_ADDR, "http://127.0.0.1:5000");
    }

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
    fn invalid_values_say_where_they_came_from_when_known() {
        let from = Some(Source::Cli("--bind".into()));
        let e = ConfigError::Invalid { key: "bind".into(), from, reason: r#""x" is not an address"#.into() };
        assert_eq!(e.to_string(), r#"invalid value for `bind` from command-line flag --bind: "x" is not an address"#);
        assert_eq!(ConfigError::invalid("user", "it is empty").to_string(), "invalid value for `user`: it is empty");
    }

    #[test]
    fn bad_values_name_key_source_and_expectation() {
        let d = tempdir("bad");
        let l = layers_from("[coordinator]\nheartbeat_timeout = \"soon\"\nfile_log = 3\n", &d);
        let e = l.duration("heartbeat_timeout").unwrap_err().to_string();
        assert!(e.contains("heartbeat_timeout") && e.contains("c.toml") && e.contains("duration"), "{e}");
        let e = l.bool("file_log").unwrap_err().to_string();
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
    fn lists_come_from_arrays_or_commas() {
        let mut l = Layers::default();
        l.set("tags", toml::Value::String("a, b,,c".into()), Source::Env("MITO_TAGS".into()));
        assert_eq!(l.list("tags").unwrap().unwrap(), vec!["a", "b", "c"]);
    }
}
