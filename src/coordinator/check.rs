//! `mito coordinator --check-config`: what [`super::run`] reads before it starts anything,
//! checked without starting. It connects to nothing and creates nothing, so a service
//! manager can run it before the database is up (the systemd unit's `ExecStartPre`), and a
//! mistake is reported in one message instead of in a coordinator that retries forever.
//!
//! Checked: the configuration (already parsed by the caller), the key pair (readable, PEM,
//! a pair), the metrics token file, the syntax of the database and Redis URLs, the object
//! store's settings (`ca_file` included) and, for the local store, that `data_dir` could
//! be created or written.

use super::error::StartError;
use super::{auth, db, redis, storage};
use crate::config::CoordinatorConfig;
use std::path::{Path, PathBuf};

/// Why the configuration would not start a coordinator.
#[derive(Debug)]
pub(super) enum CheckError {
    /// What start-up itself would refuse: the keys, the metrics token, the Redis URL, the
    /// object store settings.
    Start(StartError),
    /// `db_url` does not parse; `url` is shown without its password.
    DbUrl { url: String, message: String },
    /// `data_dir` cannot be created or written: `at` is the directory that stops it.
    DataDir { dir: PathBuf, at: PathBuf, problem: String },
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Start(e) => write!(f, "{e}"),
            CheckError::DbUrl { url, message } => {
                write!(f, "invalid value for `db_url` {url:?}: {message}; e.g. postgres://user:password@host/database")
            }
            CheckError::DataDir { dir, at, problem } => write!(
                f,
                "`data_dir` {} cannot be used: {} {problem}; set `data_dir` to a directory this user may write",
                dir.display(),
                at.display()
            ),
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::Start(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: Into<StartError>> From<E> for CheckError {
    fn from(e: E) -> CheckError {
        CheckError::Start(e.into())
    }
}

/// Checks `cfg`; returns a short report of what the coordinator would use, or what is wrong.
pub(super) fn check(cfg: &CoordinatorConfig) -> Result<String, CheckError> {
    let keys = auth::Keys::load(&cfg.access_token_private_path, &cfg.access_token_public_path)?;
    super::load_metrics_token(&mut cfg.clone())?;
    let shown_db = db::redact(&cfg.db_url);
    let _: postgres::Config = cfg.db_url.parse().map_err(|e: postgres::Error| CheckError::DbUrl {
        url: shown_db.clone(),
        message: crate::redact::text(&e.to_string()),
    })?;
    let redis = match &cfg.redis_url {
        Some(url) => format!("redis at {}", redis::check_url(url)?),
        None => "none".to_string(),
    };
    storage::Storage::from_config(cfg, &keys)?;
    let objects = match &cfg.s3_url {
        Some(url) => format!("S3 at {}", crate::redact::url(url)),
        None => {
            writable(&cfg.data_dir)?;
            format!("local store under {}", cfg.data_dir.join("objects").display())
        }
    };
    Ok(format!(
        "configuration OK (nothing was connected to)\n\
         bind      {}\n\
         database  {shown_db}\n\
         keys      {} and {}\n\
         objects   {objects}\n\
         redis     {redis}\n",
        cfg.bind,
        cfg.access_token_private_path.display(),
        cfg.access_token_public_path.display(),
    ))
}

/// Whether `dir`, or the nearest ancestor that exists (where it would be created), may be
/// written by this process: a read-only mount (a unit's `ProtectSystem=strict` without the
/// directory in `StateDirectory=`) or a directory of another user fails here, not at the
/// first upload.
fn writable(dir: &Path) -> Result<(), CheckError> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    let refuse = |problem: String| CheckError::DataDir { dir: dir.to_path_buf(), at: at.to_path_buf(), problem };
    if !at.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    let c =
        std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|_| refuse("contains a NUL byte".into()))?;
    // SAFETY: access() reads a NUL-terminated path we own; it changes nothing.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(refuse(format!("is not writable ({})", std::io::Error::last_os_error())));
    }
    Ok(())
}
