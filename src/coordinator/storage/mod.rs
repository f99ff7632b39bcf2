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

// `local_url` for the tests, through `crate::testing`.
pub use local::local_url;
pub(crate) use local::{LocalStore, ObjectRequest};
pub(crate) use s3::S3Store;

use super::auth::Keys;
use super::error::ApiError;
use super::metrics::{Direction, METRICS};
use crate::config::CoordinatorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long an upload URL stays valid.
pub(crate) const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Longest object key, bucket prefix included (S3's limit).
pub(crate) const MAX_KEY_BYTES: usize = 1023;

/// Which of the two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    Artifacts,
    Attachments,
}

/// How long a download URL lasts: one second per MB, clamped to 1 h–24 h, at least `min`.
pub(crate) fn download_ttl(size: i64, min: Duration) -> Duration {
    let secs = (size.max(0) as u64 / 1_000_000).clamp(3600, 86_400);
    Duration::from_secs(secs).max(min)
}

/// Why an object key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// Longer than [`MAX_KEY_BYTES`]; the length in bytes.
    TooLong(usize),
    ControlCharacter,
    /// A leading, trailing or double `/`.
    EmptySegment,
    /// A `.` or `..` segment.
    DotSegment(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::TooLong(n) => write!(f, "the key is {n} bytes long; at most {MAX_KEY_BYTES} are allowed"),
            KeyError::ControlCharacter => f.write_str("the key contains a control character"),
            KeyError::EmptySegment => f.write_str("the key has an empty segment (a leading, trailing or double '/')"),
            KeyError::DotSegment(seg) => write!(f, "the key has a {seg:?} segment"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks an object key: at most [`MAX_KEY_BYTES`], no leading `/`, no empty, `.` or `..`
/// segment, no control characters.
pub(crate) fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    for seg in key.split('/') {
        match seg {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::DotSegment(seg.to_string())),
            _ => {}
        }
    }
    Ok(())
}

/// Why the object store cannot be set up at startup; the text says what to fix.
#[derive(Debug)]
pub(crate) enum StorageError {
    /// `key` (`artifacts_bucket` or `attachments_bucket`) is not a name S3 accepts.
    BadBucketName { key: &'static str, name: String },
    /// Both buckets have the same name.
    SameBuckets,
    /// `s3_url` cannot be used: `url` is shown without its password, `reason` says why.
    BadUrl { url: String, reason: String },
    /// A TLS handshake with S3 failed; `message` says why and what to do.
    Tls { message: String },
    /// `ca_file` cannot be used.
    CaFile(crate::tls::TlsError),
    /// The S3 service did not answer.
    Unreachable { endpoint: String, message: String },
    /// S3 answered `status` with the error code `code` when asked about `bucket`.
    Refused { endpoint: String, bucket: String, status: u16, code: String },
    /// S3 would not create the missing `bucket`.
    CreateBucket { endpoint: String, bucket: String, status: u16, code: String },
    /// A directory of the local store cannot be created.
    LocalDir { path: PathBuf, source: std::io::Error },
    /// A directory of the local store cannot be made private.
    LocalPrivate { path: PathBuf, source: std::io::Error },
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::BadBucketName { key, name } => write!(
                f,
                "invalid value for `{key}`: {name:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
            ),
            StorageError::SameBuckets => f.write_str("`artifacts_bucket` and `attachments_bucket` must differ"),
            StorageError::BadUrl { url, reason } => write!(f, "invalid value for `s3_url`: {url:?} {reason}"),
            StorageError::Tls { message } => write!(f, "{message}"),
            StorageError::CaFile(e) => write!(f, "{e}"),
            StorageError::Unreachable { endpoint, message } => write!(
                f,
                "cannot reach S3 at {endpoint}: {message}; is the service running and is `s3_url` right? \
                 (without `s3_url` the coordinator keeps objects in its own store under `data_dir`)"
            ),
            StorageError::Refused { endpoint, bucket, status: 403, code } => write!(
                f,
                "S3 at {endpoint} refused access to bucket {bucket} (403 {code}); \
                 check `s3_access_key`, `s3_secret_key` and `s3_region`"
            ),
            StorageError::Refused { endpoint, bucket, status, code } => {
                write!(f, "S3 at {endpoint} answered {status} {code} for bucket {bucket}")
            }
            StorageError::CreateBucket { endpoint, bucket, status, code } => write!(
                f,
                "S3 at {endpoint} could not create bucket {bucket} ({status} {code}); \
                 create it yourself or check the credentials"
            ),
            StorageError::LocalDir { path, source } => write!(
                f,
                "cannot create the local object store directory {}: {source}; set `data_dir` to a writable place",
                path.display()
            ),
            StorageError::LocalPrivate { path, source } => write!(
                f,
                "cannot make the local object store directory {} private (mode 0700): {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::LocalDir { source, .. } | StorageError::LocalPrivate { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The base of the local store's URLs: the `Host` the caller used to reach us (so the URL
/// works from wherever the caller is), else the bind address; `https` when a reverse proxy
/// that terminates TLS says so with `X-Forwarded-Proto` (the URL goes back only to the
/// caller who sent the header, so trusting it gives nobody anything).
pub(crate) fn origin(host: Option<&str>, forwarded_proto: Option<&str>, bind: SocketAddr) -> String {
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
pub(crate) enum Storage {
    S3(Box<S3Store>),
    Local(LocalStore),
}

impl Storage {
    /// S3 when `s3_url` is set, else the local store under `data_dir`.
    pub(crate) fn from_config(cfg: &CoordinatorConfig, keys: &Keys) -> Result<Storage, StorageError> {
        for (key, name) in
            [("artifacts_bucket", &cfg.artifacts_bucket), ("attachments_bucket", &cfg.attachments_bucket)]
        {
            if !valid_bucket_name(name) {
                return Err(StorageError::BadBucketName { key, name: name.clone() });
            }
        }
        if cfg.artifacts_bucket == cfg.attachments_bucket {
            return Err(StorageError::SameBuckets);
        }
        // Read even when unused, so a wrong path shows at the first start, not the day S3 is added.
        let tls = crate::tls::Tls::new(cfg.ca_file.as_deref(), |m| log::warn!("{m}")).map_err(StorageError::CaFile)?;
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
    pub(crate) fn ensure_buckets(&self) -> Result<(), StorageError> {
        match self {
            Storage::S3(s) => s.ensure_buckets(),
            Storage::Local(l) => l.ensure_dirs(),
        }
    }

    /// A URL that accepts one `PUT` of exactly `length` bytes at `key` until `ttl` passes.
    pub(crate) fn presign_put(
        &self,
        origin: &str,
        bucket: Bucket,
        key: &str,
        length: u64,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        check_key(key)?;
        METRICS.url_signed(Direction::Put);
        match self {
            Storage::S3(s) => Ok(s.presign_put(bucket, key, length, ttl)),
            Storage::Local(l) => l.presign(origin, "PUT", bucket, key, Some(length), ttl),
        }
    }

    /// A URL that serves `GET` of `key` until `ttl` passes.
    pub(crate) fn presign_get(
        &self,
        origin: &str,
        bucket: Bucket,
        key: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        check_key(key)?;
        METRICS.url_signed(Direction::Get);
        match self {
            Storage::S3(s) => Ok(s.presign_get(bucket, key, ttl)),
            Storage::Local(l) => l.presign(origin, "GET", bucket, key, None, ttl),
        }
    }

    /// Removes an object; a missing one counts as removed. Fails (503) when the store
    /// cannot be reached, so the caller can keep its row and try again later.
    pub(crate) fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        check_key(key)?;
        match self {
            Storage::S3(s) => s.delete(bucket, key),
            Storage::Local(l) => l.delete(bucket, key),
        }
    }

    /// Stops local transfers at their next chunk (shutdown).
    pub(crate) fn close(&self) {
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
