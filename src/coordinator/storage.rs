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
//! Two backends, one interface:
//! - [`Storage::S3`]: any S3-compatible service. rusty-s3 computes SigV4 presigned URLs
//!   (the PUT signs its `Content-Length`); ureq sends the few requests the coordinator makes
//!   itself (bucket check and creation, DeleteObject).
//! - [`Storage::Local`]: the default when no `s3_url` is set. Objects live under
//!   `<data_dir>/objects/<bucket>/`, and the coordinator serves `GET`/`PUT /objects/...`
//!   on URLs signed with its Ed25519 key, with S3's presigned-URL semantics: expiry, an
//!   exact `Content-Length` on PUT, no listing, and keys that cannot leave the directory.
//!   Transfers stream on their own threads, so a large file neither fills memory nor holds
//!   an API handler thread.

use super::auth::Keys;
use super::error::ApiError;
use super::http::{respond, Reply};
use crate::config::CoordinatorConfig;
use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
use rusty_s3::{Credentials, S3Action, UrlStyle};
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an upload URL stays valid.
pub const UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Longest object key, bucket prefix included (S3's limit).
pub const MAX_KEY_BYTES: usize = 1023;
/// Concurrent local-store transfers; more get 503 so a flood cannot exhaust threads.
const MAX_TRANSFERS: usize = 64;
/// Temp files older than this are leftovers of a crash and removed at startup.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);
/// The longest segment the local store accepts (file names are limited to 255 bytes).
const MAX_LOCAL_SEGMENT: usize = 250;

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
/// works from wherever the caller is), else the bind address.
pub fn origin(host: Option<&str>, bind: SocketAddr) -> String {
    let plausible = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    match host.map(str::trim) {
        Some(h) if plausible(h) => format!("http://{h}"),
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
        for (key, name) in [("artifacts_bucket", &cfg.artifacts_bucket), ("attachments_bucket", &cfg.attachments_bucket)] {
            if !valid_bucket_name(name) {
                return Err(format!(
                    "invalid value for `{key}`: {name:?} is not a bucket name (3 to 63 lowercase letters, digits, '-' or '.')"
                ));
            }
        }
        if cfg.artifacts_bucket == cfg.attachments_bucket {
            return Err("`artifacts_bucket` and `attachments_bucket` must differ".into());
        }
        match &cfg.s3_url {
            Some(url) => S3Store::new(cfg, url).map(|s| Storage::S3(Box::new(s))),
            None => Ok(Storage::Local(LocalStore::new(cfg, keys.clone()))),
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
    pub fn presign_put(&self, origin: &str, bucket: Bucket, key: &str, length: u64, ttl: Duration) -> Result<String, ApiError> {
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
            l.inner.closing.store(true, Ordering::SeqCst);
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

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------- S3

/// An S3-compatible service.
pub struct S3Store {
    creds: Credentials,
    artifacts: rusty_s3::Bucket,
    attachments: rusty_s3::Bucket,
    agent: ureq::Agent,
    /// The endpoint, for messages, without the user-info's password.
    endpoint: String,
}

impl S3Store {
    fn new(cfg: &CoordinatorConfig, url: &str) -> Result<S3Store, String> {
        // The URL may carry credentials in its user-info: messages show it redacted.
        let shown = crate::redact::url(url);
        let endpoint = url::Url::parse(url)
            .map_err(|e| format!("invalid value for `s3_url`: {shown:?} is not a URL ({e}); e.g. http://127.0.0.1:9000"))?;
        let host = endpoint.host().ok_or_else(|| format!("invalid value for `s3_url`: {shown:?} has no host"))?;
        if endpoint.scheme() == "https" {
            // The coordinator itself talks to S3 (buckets, deletes) with ureq, built without TLS.
            return Err(format!(
                "`s3_url` {shown:?} uses https, but this mito is built without TLS; \
                 use an http:// endpoint (e.g. a TLS-terminating proxy on the same host)"
            ));
        }
        // Virtual-host style needs DNS names under the endpoint; an IP address or localhost
        // endpoint (MinIO, Garage, a test server) can only be addressed by path.
        let by_ip = matches!(host, url::Host::Ipv4(_) | url::Host::Ipv6(_)) || endpoint.host_str() == Some("localhost");
        let style = if cfg.s3_force_path_style || by_ip { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = |name: &str| {
            rusty_s3::Bucket::new(endpoint.clone(), style, name.to_string(), cfg.s3_region.clone())
                .map_err(|e| format!("invalid value for `s3_url` {shown:?}: {}", crate::redact::text(&e.to_string())))
        };
        Ok(S3Store {
            creds: Credentials::new(cfg.s3_access_key.clone(), cfg.s3_secret_key.clone()),
            artifacts: bucket(&cfg.artifacts_bucket)?,
            attachments: bucket(&cfg.attachments_bucket)?,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build(),
            endpoint: shown.clone(),
        })
    }

    fn bucket(&self, b: Bucket) -> &rusty_s3::Bucket {
        match b {
            Bucket::Artifacts => &self.artifacts,
            Bucket::Attachments => &self.attachments,
        }
    }

    fn presign_put(&self, bucket: Bucket, key: &str, length: u64, ttl: Duration) -> String {
        let mut action = self.bucket(bucket).put_object(Some(&self.creds), key);
        // Signed, so the service refuses a body of any other length.
        action.headers_mut().insert("content-length", length.to_string());
        action.sign(ttl).to_string()
    }

    fn presign_get(&self, bucket: Bucket, key: &str, ttl: Duration) -> String {
        self.bucket(bucket).get_object(Some(&self.creds), key).sign(ttl).to_string()
    }

    /// Sends one signed request; Ok(status) for any HTTP answer.
    fn send(&self, method: &str, url: &url::Url) -> Result<(u16, String), String> {
        let result = match method {
            "PUT" => self.agent.request_url(method, url).send_bytes(&[]),
            _ => self.agent.request_url(method, url).call(),
        };
        match result {
            Ok(r) => Ok((r.status(), String::new())),
            Err(ureq::Error::Status(code, r)) => {
                let mut body = String::new();
                let _ = r.into_reader().take(2048).read_to_string(&mut body);
                Ok((code, s3_error_code(&body)))
            }
            // ureq quotes the URL it failed on: a presigned one, with its signature.
            Err(e) => Err(crate::redact::text(&e.to_string())),
        }
    }

    fn unreachable(&self, e: &str) -> String {
        format!(
            "cannot reach S3 at {}: {e}; is the service running and is `s3_url` right? \
             (without `s3_url` the coordinator keeps objects in its own store under `data_dir`)",
            self.endpoint
        )
    }

    fn ensure_buckets(&self) -> Result<(), String> {
        for b in [&self.artifacts, &self.attachments] {
            let head = b.head_bucket(Some(&self.creds)).sign(Duration::from_secs(60));
            let (status, code) = self.send("HEAD", &head).map_err(|e| self.unreachable(&e))?;
            match status {
                200 => continue,
                404 => {}
                403 => {
                    return Err(format!(
                        "S3 at {} refused access to bucket {} (403 {code}); check `s3_access_key`, `s3_secret_key` and `s3_region`",
                        self.endpoint,
                        b.name()
                    ))
                }
                s => return Err(format!("S3 at {} answered {s} {code} for bucket {}", self.endpoint, b.name())),
            }
            let create = b.create_bucket(&self.creds).sign(Duration::from_secs(60));
            let (status, code) = self.send("PUT", &create).map_err(|e| self.unreachable(&e))?;
            // 409: another coordinator created it meanwhile.
            if !(status == 200 || status == 409) {
                return Err(format!(
                    "S3 at {} could not create bucket {} ({status} {code}); create it yourself or check the credentials",
                    self.endpoint,
                    b.name()
                ));
            }
            log::info!("created bucket {} on {}", b.name(), self.endpoint);
        }
        Ok(())
    }

    fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        let url = self.bucket(bucket).delete_object(Some(&self.creds), key).sign(Duration::from_secs(60));
        match self.send("DELETE", &url) {
            Ok((200 | 204 | 404, _)) => Ok(()),
            Ok((status, code)) => {
                log::error!("S3 at {} refused to delete an object in {bucket:?} ({status} {code})", self.endpoint);
                Err(ApiError::Unavailable(format!("the object store refused the delete ({status} {code})")))
            }
            Err(e) => {
                log::warn!("{}", self.unreachable(&e));
                Err(ApiError::Unavailable("the object store is unreachable".into()))
            }
        }
    }
}

/// The `<Code>` of an S3 XML error body, for messages.
fn s3_error_code(body: &str) -> String {
    match (body.find("<Code>"), body.find("</Code>")) {
        (Some(a), Some(b)) if b > a + 6 => body[a + 6..b].chars().take(64).collect(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------- local store

/// Objects under `<data_dir>/objects`, served by the coordinator itself.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    root: PathBuf,
    keys: Keys,
    artifacts: String,
    attachments: String,
    transfers: AtomicUsize,
    closing: AtomicBool,
}

/// One of the [`MAX_TRANSFERS`] transfer slots, given back when dropped, so no path out of
/// a transfer thread (an early return, a panic, a failed spawn) can leak it.
struct TransferSlot(Arc<LocalInner>);

impl TransferSlot {
    fn take(inner: &Arc<LocalInner>) -> Option<TransferSlot> {
        inner
            .transfers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_TRANSFERS).then_some(n + 1)
            })
            .ok()
            .map(|_| TransferSlot(inner.clone()))
    }
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        self.0.transfers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request for an object URL, as the route table found it.
#[derive(Debug, Clone)]
pub struct ObjectRequest {
    pub bucket: String,
    pub key: String,
}

impl LocalStore {
    fn new(cfg: &CoordinatorConfig, keys: Keys) -> LocalStore {
        LocalStore {
            inner: Arc::new(LocalInner {
                root: cfg.data_dir.join("objects"),
                keys,
                artifacts: cfg.artifacts_bucket.clone(),
                attachments: cfg.attachments_bucket.clone(),
                transfers: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
            }),
        }
    }

    fn bucket_name(&self, b: Bucket) -> &str {
        match b {
            Bucket::Artifacts => &self.inner.artifacts,
            Bucket::Attachments => &self.inner.attachments,
        }
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join(".tmp")
    }

    fn ensure_dirs(&self) -> Result<(), String> {
        let dirs = [self.tmp_dir(), self.inner.root.join(&self.inner.artifacts), self.inner.root.join(&self.inner.attachments)];
        // Only the coordinator's user may read the objects (every group's attachments and
        // artifacts): directories 0700, files 0600. Directories an older version made
        // 0755 are tightened too.
        for d in &dirs {
            crate::private_files::create_dir_all(d).map_err(|e| {
                format!("cannot create the local object store directory {}: {e}; set `data_dir` to a writable place", d.display())
            })?;
        }
        for d in dirs.iter().chain([&self.inner.root]) {
            crate::private_files::restrict_dir(d).map_err(|e| {
                format!("cannot make the local object store directory {} private (mode 0700): {e}", d.display())
            })?;
        }
        if let Ok(entries) = std::fs::read_dir(self.tmp_dir()) {
            for e in entries.flatten() {
                let stale = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if stale.is_some_and(|age| age > STALE_TEMP) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        log::info!("local object store in {}", self.inner.root.display());
        Ok(())
    }

    /// Where an object lives. Directories get a `d_` prefix and files an `f_` prefix, so
    /// keys `a` and `a/b` can both exist, as they can in S3.
    fn path(&self, bucket: &str, key: &str) -> Result<PathBuf, ApiError> {
        validate_key(key).map_err(ApiError::bad)?;
        let mut p = self.inner.root.join(bucket);
        let segs: Vec<&str> = key.split('/').collect();
        for (i, seg) in segs.iter().enumerate() {
            if seg.len() > MAX_LOCAL_SEGMENT || seg.contains('\0') {
                return Err(ApiError::bad(format!(
                    "the local object store takes key segments of at most {MAX_LOCAL_SEGMENT} bytes"
                )));
            }
            let prefix = if i + 1 == segs.len() { "f_" } else { "d_" };
            p.push(format!("{prefix}{seg}"));
        }
        Ok(p)
    }

    fn presign(&self, origin: &str, method: &str, bucket: Bucket, key: &str, length: Option<u64>, ttl: Duration) -> Result<String, ApiError> {
        let bucket = self.bucket_name(bucket);
        self.path(bucket, key)?;
        let expires = now_secs().saturating_add(ttl.as_secs());
        Ok(local_url(&self.inner.keys, origin, method, bucket, key, length, expires))
    }

    /// Checks a request's signature and expiry; returns the signed length for a PUT.
    fn verify(&self, method: &str, obj: &ObjectRequest, query: &str) -> Result<Option<u64>, ApiError> {
        let denied = |why: &str| ApiError::Forbidden(why.to_string());
        if obj.bucket != self.inner.artifacts && obj.bucket != self.inner.attachments {
            return Err(ApiError::NoRoute);
        }
        let param = |name: &str| {
            query.split('&').find_map(|p| p.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
        };
        let expires: u64 = param("expires").and_then(|v| v.parse().ok()).ok_or_else(|| denied("the URL is not signed"))?;
        let length: Option<u64> = match method {
            "PUT" => Some(param("length").and_then(|v| v.parse().ok()).ok_or_else(|| denied("the URL is not signed"))?),
            _ => None,
        };
        let sig = param("signature")
            .and_then(|s| Base64UrlSafeNoPadding::decode_to_vec(s, None).ok())
            .ok_or_else(|| denied("the URL is not signed"))?;
        let msg = string_to_sign(method, &obj.bucket, &obj.key, expires, length);
        if !self.inner.keys.verify_bytes(&msg, &sig) {
            return Err(denied("the URL's signature does not match (was it changed, or issued for another method?)"));
        }
        if expires < now_secs() {
            return Err(denied("the URL has expired; ask the coordinator for a new one"));
        }
        Ok(length)
    }

    fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        let bucket_name = self.bucket_name(bucket);
        let path = self.path(bucket_name, key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                log::error!("cannot delete {}: {e}", path.display());
                return Err(ApiError::Unavailable("the local object store cannot delete the object".into()));
            }
        }
        // Drop directories left empty (remove_dir refuses non-empty ones).
        let top = self.inner.root.join(bucket_name);
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != top && d.starts_with(&top)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    /// Serves a `GET` or `PUT` on an object URL, streaming on a transfer thread.
    pub fn serve(&self, mut req: tiny_http::Request, obj: ObjectRequest) {
        let method = req.method().as_str().to_string();
        let query = req.url().split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default();
        let checked = self.verify(&method, &obj, &query).and_then(|length| {
            let path = self.path(&obj.bucket, &obj.key)?;
            Ok((length, path))
        });
        let (length, path) = match checked {
            Ok(x) => x,
            Err(e) => return respond(req, e.reply()),
        };
        let Some(slot) = TransferSlot::take(&self.inner) else {
            return respond(req, ApiError::Unavailable("too many transfers at once; try again shortly".into()).reply());
        };
        let store = self.clone();
        let name = if method == "PUT" { "object-put" } else { "object-get" };
        // A stalled client cannot hold the slot forever: every socket read and write of the
        // transfer times out after `body_timeout` without progress.
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            // Given back however the thread ends, a panic included.
            let _slot = slot;
            let reply = match length {
                Some(len) => store.receive(&mut req, &path, len),
                None => return store.send_file(req, &path, &obj),
            };
            respond(req, reply.unwrap_or_else(|e| e.reply()));
        });
        if let Err(e) = spawned {
            log::error!("cannot start a transfer thread: {e}");
        }
    }

    fn send_file(&self, req: tiny_http::Request, path: &Path, obj: &ObjectRequest) {
        let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len())));
        match opened {
            Ok((file, len)) => {
                let ct = tiny_http::Header::from_bytes("Content-Type", "application/octet-stream").expect("static header");
                let resp = tiny_http::Response::new(tiny_http::StatusCode(200), vec![ct], file, Some(len as usize), None);
                if let Err(e) = req.respond(resp) {
                    log::debug!("download of {}/{} ended early: {e}", obj.bucket, obj.key);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                respond(req, ApiError::NotFound(format!("Object {}", obj.key)).reply())
            }
            Err(e) => {
                log::error!("cannot read {}: {e}", path.display());
                respond(req, ApiError::Internal(String::new()).reply())
            }
        }
    }

    /// Writes the body to a temp file, then renames it into place: a reader sees the old
    /// object or the whole new one, never a part.
    fn receive(&self, req: &mut tiny_http::Request, path: &Path, length: u64) -> Result<Reply, ApiError> {
        match req.body_length() {
            None => return Ok(Reply::error_json(411, &format!("Content-Length: {length} is required"))),
            Some(n) if n as u64 != length => {
                return Err(ApiError::bad(format!(
                    "this URL accepts exactly {length} bytes; the request announces {n} (Content-Length)"
                )))
            }
            Some(_) => {}
        }
        let tmp = self.tmp_dir().join(uuid::Uuid::new_v4().simple().to_string());
        let result = self.copy_body(req, &tmp, length).and_then(|()| place(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| Reply::ok())
    }

    fn copy_body(&self, req: &mut tiny_http::Request, tmp: &Path, length: u64) -> Result<(), ApiError> {
        let io_err = |what: &str, e: std::io::Error| {
            log::error!("local object store: {what} {}: {e}", tmp.display());
            store_error(&e)
        };
        let mut file = crate::private_files::create_new(tmp).map_err(|e| io_err("cannot create", e))?;
        let reader = req.as_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        while got < length {
            if self.inner.closing.load(Ordering::SeqCst) {
                return Err(ApiError::Unavailable("the coordinator is shutting down".into()));
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ApiError::bad(format!("the upload broke off after {got} of {length} bytes: {e}"))),
            };
            file.write_all(&buf[..n]).map_err(|e| io_err("cannot write", e))?;
            got += n as u64;
        }
        if got != length {
            return Err(ApiError::bad(format!("the upload ended after {got} of {length} bytes")));
        }
        file.sync_data().map_err(|e| io_err("cannot sync", e))
    }
}

fn string_to_sign(method: &str, bucket: &str, key: &str, expires: u64, length: Option<u64>) -> Vec<u8> {
    let length = length.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
    format!("mito object url v1\n{method}\n{bucket}\n{key}\n{expires}\n{length}").into_bytes()
}

/// A local-store URL for `method` (`GET`, or `PUT` of exactly `length` bytes) on `key` in
/// `bucket`, valid until `expires` (Unix seconds). The Ed25519 signature covers all of
/// them, so changing any part of the URL voids it.
pub fn local_url(keys: &Keys, origin: &str, method: &str, bucket: &str, key: &str, length: Option<u64>, expires: u64) -> String {
    let sig = keys.sign_bytes(&string_to_sign(method, bucket, key, expires, length));
    let sig = Base64UrlSafeNoPadding::encode_to_string(sig).unwrap_or_default();
    let mut url = format!("{origin}/objects/{bucket}/{}?expires={expires}", encode_path(key));
    if let Some(l) = length {
        url.push_str(&format!("&length={l}"));
    }
    url.push_str(&format!("&signature={sig}"));
    url
}

/// Moves a finished temp file to `path`, creating directories; retried because a
/// concurrent delete may remove an emptied directory in between.
fn place(tmp: &Path, path: &Path) -> Result<(), ApiError> {
    let parent = path.parent().ok_or_else(|| ApiError::Internal("object path without parent".into()))?;
    let mut last = None;
    for _ in 0..3 {
        if let Err(e) = crate::private_files::create_dir_all(parent) {
            last = Some(e);
            continue;
        }
        match std::fs::rename(tmp, path) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| std::io::Error::other("no attempt made"));
    log::error!("local object store: cannot move an upload to {}: {e}", path.display());
    Err(store_error(&e))
}

/// What the uploader hears when the local store cannot write: a full disk is named as
/// such (507), since only the operator can fix it; other write errors are 503.
fn store_error(e: &std::io::Error) -> ApiError {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ApiError::InsufficientStorage(
            "the coordinator's local object store is out of disk space (its operator has to free space under `data_dir`)".into(),
        ),
        _ => ApiError::Unavailable("the local object store cannot store the object".into()),
    }
}

/// Percent-encodes a key for a URL path, keeping `/` and unreserved characters.
fn encode_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        assert_eq!(origin(Some("coord.lan:5000"), bind), "http://coord.lan:5000");
        assert_eq!(origin(Some("[::1]:5000"), bind), "http://[::1]:5000");
        assert_eq!(origin(Some("evil/path?x"), bind), "http://127.0.0.1:5000");
        assert_eq!(origin(None, "10.0.0.1:80".parse().unwrap()), "http://10.0.0.1:80");
    }

    #[test]
    fn a_full_disk_is_named_and_other_write_errors_are_503() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let r = store_error(&std::io::Error::from_raw_os_error(errno)).reply();
            assert_eq!(r.status, 507);
            assert!(String::from_utf8_lossy(&r.body).contains("out of disk space"));
        }
        assert_eq!(store_error(&std::io::Error::from_raw_os_error(libc::EIO)).reply().status, 503);
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(encode_path("g/a b/c%d"), "g/a%20b/c%25d");
    }

    #[test]
    fn s3_error_codes_are_extracted() {
        assert_eq!(s3_error_code("<Error><Code>NoSuchBucket</Code></Error>"), "NoSuchBucket");
        assert_eq!(s3_error_code("garbage"), "");
    }
}
