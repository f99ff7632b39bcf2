//! Object storage for artifacts and attachments: signed, expiring URLs that let workers and
//! clients move bytes without the coordinator in between, plus deletes and bucket setup.
//!
//! ```ignore
//! let storage = Storage::from_config(&cfg, &keys)?;
//! storage.ensure_buckets()?;                                  // at startup
//! let origin = origin(call.header("Host"), cfg.bind);
//! let put = storage.presign_put(&origin, Bucket::Attachments, "lab/data.bin", 1024, UPLOAD_TTL)?;
//! // the client: `PUT <put>` with `Content-Length: 1024`
//! let get = storage.presign_get(&origin, Bucket::Attachments, "lab/data.bin", download_ttl(1024, 3600))?;
//! storage.delete(Bucket::Attachments, "lab/data.bin")?;
//! ```
//!
//! Two backends, one interface (this file):
//! - [`Storage::S3`] (`s3.rs`): any S3-compatible service, with SigV4 presigned URLs.
//! - [`Storage::Local`] (`local.rs`): the default when no `s3_url` is set; the coordinator
//!   keeps the objects under `data_dir` and serves its own signed URLs.

mod local;
mod s3;

pub use local::{local_url, LocalStore, ObjectRequest};
pub use s3::S3Store;

use super::auth::Keys;
use super::error::ApiError;
use crate::config::CoordinatorConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// How long an upload URL stays valid.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Longest object key, bucket prefix included (S3's limit).
pub const MAX_KEY_BYTES: usize = 1023;

/// Which of the two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Artifacts,
    Attachments,
}

/// How long a download URL lasts: one second per MB, clamped to 1 h–24 h, at least `min`.
pub fn download_ttl(size: i64, min: Duration) -> Duration {
    let secs = (size.max(0) as u64 / 1_000_000).clamp(3600, 86_400);
    Duration::from_secs(secs).max(min)
}

/// Checks an object key: at most [`MAX_KEY_BYTES`], no leading `/`, no empty, `.` or `..`
/// segment, no control characters. The message says what is wrong.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("the key is {} bytes long; at most {MAX_KEY_BYTES} are allowed", key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err("the key contains a control character".into());
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err("the key has an empty segment (a leading, trailing or double '/')".into()),
            "." | ".." => return Err(format!("the key has a {seg:?} segment")),
            _ => {}
        }
    }
    Ok(())
}

/// The base of the local store's URLs: the `Host` the caller used to reach us (so the URL
/// works from wherever the caller is), else the bind address; `https` when a reverse proxy
/// that terminates TLS says so with `X-Forwarded-Proto` (the URL goes back only to the
/// caller who sent the header, so trusting it gives nobody anything).
pub fn origin(host: Option<&str>, forwarded_proto: Option<&str>, bind: SocketAddr) -> String {
    let plausible = |h: &str| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let scheme = match forwarded_proto.map(str::trim) {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    match host.map(str::trim) {
        Some(h) if plausible(h) => format!("{scheme}://{h}"),
        _ if bind.ip().is_unspecified() => format!("http://127.0.0.1:{}", bind.port()),
        _ => format!("http://{bind}"),
    }
}

/// The object store.
pub enum Storage {
    S3(Box<S3Store>),
    Local(LocalStore),
}

impl Storage {
    /// S3 when `s3_url` is set, else the local store under `data_dir`.
    pub fn from_config(cfg: &CoordinatorConfig, keys: &Keys) -> Result<Storage, String> {
        for (key, name) in
            [("artifacts_bucket", &cfg.artifacts_bucket), ("attachments_bucket", &cfg.attachments_bucket)]
        {
            if !valid_bucket_name(name) {
                return Err(format!(
                    "invalid value for `{key}`: {name:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
                ));
            }
        }
        if cfg.artifacts_bucket == cfg.attachments_bucket {
            return Err("`artifacts_bucket` and `attachments_bucket` must differ".into());
        }
        // Read even when unused, so a wrong path shows at the first start, not the day S3 is added.
        let tls = crate::tls::Tls::new(cfg.ca_file.as_deref(), |m| log::warn!("{m}")).map_err(|e| e.0)?;
        match &cfg.s3_url {
            Some(url) => S3Store::new(cfg, url, &tls).map(|s| Storage::S3(Box::new(s))),
            None => {
                if cfg.ca_file.is_some() {
                    log::warn!("`ca_file` is set but unused: it is for an https `s3_url`, and there is none");
                }
                Ok(Storage::Local(LocalStore::new(cfg, keys.clone())))
            }
        }
    }

    /// Creates the buckets (or directories) that are missing; the error says what to fix.
    pub fn ensure_buckets(&self) -> Result<(), String> {
        match self {
            Storage::S3(s) => s.ensure_buckets(),
            Storage::Local(l) => l.ensure_dirs(),
        }
    }

    /// A URL that accepts one `PUT` of exactly `length` bytes at `key` until `ttl` passes.
    pub fn presign_put(
        &self,
        origin: &str,
        bucket: Bucket,
        key: &str,
        length: u64,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        check_key(key)?;
        match self {
            Storage::S3(s) => Ok(s.presign_put(bucket, key, length, ttl)),
            Storage::Local(l) => l.presign(origin, "PUT", bucket, key, Some(length), ttl),
        }
    }

    /// A URL that serves `GET` of `key` until `ttl` passes.
    pub fn presign_get(&self, origin: &str, bucket: Bucket, key: &str, ttl: Duration) -> Result<String, ApiError> {
        check_key(key)?;
        match self {
            Storage::S3(s) => Ok(s.presign_get(bucket, key, ttl)),
            Storage::Local(l) => l.presign(origin, "GET", bucket, key, None, ttl),
        }
    }

    /// Removes an object; a missing one counts as removed. Fails (503) when the store
    /// cannot be reached, so the caller can keep its row and try again later.
    pub fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        check_key(key)?;
        match self {
            Storage::S3(s) => s.delete(bucket, key),
            Storage::Local(l) => l.delete(bucket, key),
        }
    }

    /// Stops local transfers at their next chunk (shutdown).
    pub fn close(&self) {
        if let Storage::Local(l) = self {
            l.close();
        }
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    validate_key(key).map_err(|e| ApiError::bad(format!("Invalid object key {key:?}: {e}")))
}

/// S3's bucket naming rule (the subset every S3 implementation accepts).
fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for ok in ["a", "a/b.txt", "g/x y/z", "..a/b..", "a/.hidden"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/./b", "a/..", "../x", "a/../b", "a\0b", "a\nb"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_key(&"a".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(validate_key(&"a".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn download_lifetimes_follow_size() {
        let min = Duration::from_secs(3600);
        assert_eq!(download_ttl(0, min).as_secs(), 3600);
        assert_eq!(download_ttl(7_200_000_000, min).as_secs(), 7200);
        assert_eq!(download_ttl(i64::MAX, min).as_secs(), 86_400);
        assert_eq!(download_ttl(0, Duration::from_secs(86_400)).as_secs(), 86_400);
    }

    #[test]
    fn bucket_names() {
        assert!(valid_bucket_name("mitosis-artifacts"));
        assert!(!valid_bucket_name("ab"));
        assert!(!valid_bucket_name("Upper"));
        assert!(!valid_bucket_name("a..b"));
        assert!(!valid_bucket_name("../x"));
        assert!(!valid_bucket_name("-ab"));
    }

    #[test]
    fn origins_prefer_the_host_header() {
        let bind: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        assert_eq!(origin(Some("coord.lan:5000"), None, bind), "http://coord.lan:5000");
        assert_eq!(origin(Some("[::1]:5000"), None, bind), "http://[::1]:5000");
        assert_eq!(origin(Some("evil/path?x"), None, bind), "http://127.0.0.1:5000");
        assert_eq!(origin(None, None, "10.0.0.1:80".parse().unwrap()), "http://10.0.0.1:80");
    }

    #[test]
    fn a_proxy_that_terminates_tls_makes_the_origin_https() {
        let bind: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(origin(Some("mito.example.org"), Some("https"), bind), "https://mito.example.org");
        assert_eq!(origin(Some("mito.example.org"), Some("http"), bind), "http://mito.example.org");
        assert_eq!(origin(Some("mito.example.org"), Some("gopher"), bind), "http://mito.example.org");
    }
}
