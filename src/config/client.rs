//! The client's settings: `[client]` keys, their defaults and their checks.

use super::{default_credential_path, ConfigError, Layers, DEFAULT_COORDINATOR_ADDR};
use std::path::PathBuf;

/// The client's settings (`[client]`), with mitosis' defaults.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    /// The coordinator's base URL, scheme included.
    pub coordinator_addr: String,
    /// Where cached tokens live (`username:token` lines).
    pub credential_path: PathBuf,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Log in without signing this user out of their other sessions.
    pub retain: bool,
    /// A PEM file of CA certificates trusted besides the system's, for `https` servers.
    pub ca_file: Option<PathBuf>,
}

impl ClientConfig {
    /// Every key of `[client]`.
    pub(crate) const KEYS: &'static [&'static str] =
        &["coordinator_addr", "credential_path", "user", "password", "retain", "ca_file"];

    /// Builds the settings from merged layers, applying defaults and checking every value.
    pub(crate) fn from_layers(l: &Layers) -> Result<Self, ConfigError> {
        let addr = l.string("coordinator_addr")?.unwrap_or_else(|| DEFAULT_COORDINATOR_ADDR.into());
        let addr = addr.trim().trim_end_matches('/').to_string();
        if !(addr.starts_with("http://") || addr.starts_with("https://")) || addr.len() <= "https://".len() {
            return Err(ConfigError::Invalid {
                key: "coordinator_addr".into(),
                from: l.source("coordinator_addr").cloned(),
                reason: format!("{addr:?} is not a URL; write it with the scheme, e.g. http://127.0.0.1:5000"),
            });
        }
        let credential_path = match l.path("credential_path")? {
            Some(p) => p,
            None => default_credential_path().ok_or(ConfigError::NoDirectory {
                what: "a config directory for the credentials file",
                key: "credential_path",
            })?,
        };
        Ok(ClientConfig {
            coordinator_addr: addr,
            credential_path,
            user: l.string("user")?.filter(|s| !s.is_empty()),
            password: l.string("password")?.filter(|s| !s.is_empty()),
            retain: l.bool("retain")?.unwrap_or(false),
            ca_file: l.path("ca_file")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    #[test]
    fn client_defaults_and_url_check() {
        let c = ClientConfig::from_layers(&Layers::default()).unwrap();
        assert_eq!(c.coordinator_addr, "http://127.0.0.1:5000");
        assert!(!c.retain && c.user.is_none());
        let mut l = Layers::default();
        l.set("coordinator_addr", toml::Value::String("127.0.0.1:5000".into()), Source::Cli("-c".into()));
        let e = ClientConfig::from_layers(&l).unwrap_err().to_string();
        assert!(e.contains("coordinator_addr") && e.contains("-c") && e.contains("http://"), "{e}");
        l.set("coordinator_addr", toml::Value::String("http://h:1/".into()), Source::Cli("-c".into()));
        assert_eq!(ClientConfig::from_layers(&l).unwrap().coordinator_addr, "http://h:1");
    }
}
