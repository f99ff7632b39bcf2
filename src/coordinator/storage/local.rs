//! The coordinator's own object store, used when no `s3_url` is set. Objects live under
//! `<data_dir>/objects/<bucket>/`, and the coordinator serves `GET`/`PUT /objects/...` on
//! URLs signed with its Ed25519 key, with S3's presigned-URL semantics: expiry, an exact
//! `Content-Length` on PUT, no listing, and keys that cannot leave the directory.
//! Transfers stream on their own threads, so a large file neither fills memory nor holds an
//! API handler thread.

use super::{validate_key, Bucket, StorageError};
use crate::config::CoordinatorConfig;
use crate::coordinator::auth::Keys;
use crate::coordinator::error::ApiError;
use crate::coordinator::http::{respond, Reply};
use crate::coordinator::metrics::{Direction, METRICS};
use ct_codecs::{Base64UrlSafeNoPadding, Decoder, Encoder};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Concurrent local-store transfers; more get 503 so a flood cannot exhaust threads.
const MAX_TRANSFERS: usize = 64;
/// Temp files older than this are leftovers of a crash and removed at startup.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);
/// The longest segment the local store accepts (file names are limited to 255 bytes).
const MAX_LOCAL_SEGMENT: usize = 250;

/// Objects under `<data_dir>/objects`, served by the coordinator itself.
#[derive(Clone)]
pub(crate) struct LocalStore {
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
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_TRANSFERS).then_some(n + 1))
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
pub(crate) struct ObjectRequest {
    pub bucket: String,
    pub key: String,
}

impl LocalStore {
    pub(super) fn new(cfg: &CoordinatorConfig, keys: Keys) -> LocalStore {
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

    /// Stops transfers at their next chunk (shutdown).
    pub(super) fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join(".tmp")
    }

    pub(super) fn ensure_dirs(&self) -> Result<(), StorageError> {
        let dirs = [
            self.tmp_dir(),
            self.inner.root.join(&self.inner.artifacts),
            self.inner.root.join(&self.inner.attachments),
        ];
        // Only the coordinator's user may read the objects (every group's attachments and
        // artifacts): directories 0700, files 0600. Directories an older version made
        // 0755 are tightened too.
        for d in &dirs {
            crate::private_files::create_dir_all(d)
                .map_err(|source| StorageError::LocalDir { path: d.clone(), source })?;
        }
        for d in dirs.iter().chain([&self.inner.root]) {
            crate::private_files::restrict_dir(d)
                .map_err(|source| StorageError::LocalPrivate { path: d.to_path_buf(), source })?;
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

    pub(super) fn presign(
        &self,
        origin: &str,
        method: &str,
        bucket: Bucket,
        key: &str,
        length: Option<u64>,
        ttl: Duration,
    ) -> Result<String, ApiError> {
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
        let param =
            |name: &str| query.split('&').find_map(|p| p.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v));
        let expires: u64 =
            param("expires").and_then(|v| v.parse().ok()).ok_or_else(|| denied("the URL is not signed"))?;
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

    pub(super) fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
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
    pub(crate) fn serve(&self, mut req: tiny_http::Request, obj: ObjectRequest) {
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
                Some(len) => {
                    let r = store.receive(&mut req, &path, len);
                    let ok = matches!(&r, Ok(reply) if reply.status == 200);
                    METRICS.transfer(Direction::Put, ok, if ok { len } else { 0 });
                    r
                }
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
                let ct =
                    tiny_http::Header::from_bytes("Content-Type", "application/octet-stream").expect("static header");
                let resp =
                    tiny_http::Response::new(tiny_http::StatusCode(200), vec![ct], file, Some(len as usize), None);
                match req.respond(resp) {
                    Ok(()) => METRICS.transfer(Direction::Get, true, len),
                    Err(e) => {
                        METRICS.transfer(Direction::Get, false, 0);
                        log::debug!("download of {}/{} ended early: {e}", obj.bucket, obj.key);
                    }
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
                Err(e) => {
                    return Err(ApiError::bad(format!("the upload broke off after {got} of {length} bytes: {e}")))
                }
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
pub fn local_url(
    keys: &Keys,
    origin: &str,
    method: &str,
    bucket: &str,
    key: &str,
    length: Option<u64>,
    expires: u64,
) -> String {
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

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
