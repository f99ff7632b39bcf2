//! `mito coordinator --check-config`: what [`super::run`] reads before it starts anything,
//! checked without starting. It connects to nothing and creates nothing, so a service
//! manager can run it before the database is up (the systemd unit's `ExecStartPre`), and a
//! mistake is reported in one message instead of in a coordinator that retries forever.
//!
//! Checked: the configuration (already parsed by the caller), the key pair (readable, PEM,
//! a pair), the syntax of the database and Redis URLs, the object store's settings and,
//! for the local store, that `data_dir` could be created or written.

use super::{auth, db, redis, storage};
use crate::config::CoordinatorConfig;
use std::path::Path;

/// Checks `cfg`; returns a short report of what the coordinator would use, or what is wrong.
pub fn check(cfg: &CoordinatorConfig) -> Result<String, String> {
    let keys = auth::Keys::load(&cfg.access_token_private_path, &cfg.access_token_public_path)?;
    let shown_db = db::redact(&cfg.db_url);
    let _: postgres::Config = cfg.db_url.parse().map_err(|e: postgres::Error| {
        format!(
            "invalid value for `db_url` {shown_db:?}: {}; e.g. postgres://user:password@host/database",
            crate::redact::text(&e.to_string())
        )
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
fn writable(dir: &Path) -> Result<(), String> {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if !at.is_dir() {
        return Err(format!(
            "`data_dir` {} cannot be created: {} is not a directory; set `data_dir` to a directory this user may write",
            dir.display(),
            at.display()
        ));
    }
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("`data_dir` {} contains a NUL byte", dir.display()))?;
    // SAFETY: access() reads a NUL-terminated path we own; it changes nothing.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "`data_dir` {} is not writable ({}: {e}); set `data_dir` to a directory this user may write",
            dir.display(),
            at.display()
        ));
    }
    Ok(())
}
