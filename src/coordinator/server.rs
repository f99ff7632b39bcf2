//! The HTTP server: a fixed pool of named handler threads on one tiny_http listener.
//!
//! ```text
//! handler thread:  recv ─▶ route (404/405) ─▶ authenticate ─▶ read body (413) ─▶ handler ─▶ respond
//! ```
//!
//! Handlers are plain functions that take the context and a [`Call`] and return a
//! [`Reply`] or an [`ApiError`]; errors become responses in exactly one place
//! ([`ApiError::reply`]).

use super::error::ApiError;
use super::routes;
use super::Ctx;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// Further headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

const JSON: &str = "application/json";

impl Reply {
    /// 200 with a JSON body.
    pub fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status: 200, content_type: Some(JSON), body, headers: Vec::new() },
            Err(e) => ApiError::Internal(format!("cannot serialize a response: {e}")).reply(),
        }
    }

    /// 200 with the JSON body `null`.
    pub fn null() -> Reply {
        Reply { status: 200, content_type: Some(JSON), body: b"null".to_vec(), headers: Vec::new() }
    }

    /// 200 with no body.
    pub fn ok() -> Reply {
        Reply::empty(200)
    }

    pub fn empty(status: u16) -> Reply {
        Reply { status, content_type: None, body: Vec::new(), headers: Vec::new() }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply { status, content_type: Some("text/plain; charset=utf-8"), body: text.as_bytes().to_vec(), headers: Vec::new() }
    }

    pub fn error_json(status: u16, msg: &str) -> Reply {
        let body = serde_json::to_vec(&crate::api::ErrorMsg { msg: msg.to_string() }).unwrap_or_default();
        Reply { status, content_type: Some(JSON), body, headers: Vec::new() }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// What a handler sees of a request.
pub struct Call {
    pub peer: Option<SocketAddr>,
    headers: Vec<(String, String)>,
    query: String,
    pub body: Vec<u8>,
}

impl Call {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON of type `T`: 415 without a JSON content type, 400 for a syntax
    /// error, 422 when the JSON does not have the expected shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let ct = self.header("Content-Type").unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let is_json = mime == JSON || (mime.starts_with("application/") && mime.ends_with("+json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => ApiError::JsonShape(e.to_string()),
                _ => ApiError::BadJson(e.to_string()),
            }
        })
    }

    /// Every value of a repeated query key (`users=a&users=b`).
    pub fn query_all(&self, key: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for (k, v) in query_pairs(&self.query)? {
            if k == key {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The last value of a query key.
    pub fn query_one(&self, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.query_all(key)?.pop())
    }
}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(|| format!("truncated escape in {s:?}"))?;
                let hex = std::str::from_utf8(hex).map_err(|_| format!("bad escape in {s:?}"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {s:?}"))?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

fn query_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((
                percent_decode(k, true).map_err(ApiError::BadQuery)?,
                percent_decode(v, true).map_err(ApiError::BadQuery)?,
            ))
        })
        .collect()
}

/// Starts `threads` handler threads on `server`; they stop once `ctx` is shutting down.
pub fn spawn_handlers(ctx: Arc<Ctx>, server: Arc<tiny_http::Server>, threads: usize) -> Vec<JoinHandle<()>> {
    (0..threads)
        .filter_map(|i| {
            let ctx = ctx.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handler_loop(&ctx, &server))
                .map_err(|e| log::error!("cannot start handler thread {i}: {e}"))
                .ok()
        })
        .collect()
}

fn handler_loop(ctx: &Ctx, server: &tiny_http::Server) {
    while !ctx.shutdown.is_set() {
        match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(req)) => {
                // A panic past `process` (in answering, or in handing tasks to parked
                // fetches) must not end this thread either; the request, if still
                // unanswered, gets tiny_http's 500 as it drops.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(ctx, req)))
                    .is_err()
                {
                    log::error!("a request handler panicked after its request was processed; the thread carries on");
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::warn!("accepting a request failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A request or answer body this large leaves freed memory worth handing back at once (a
/// batch of ten thousand tasks passes through some 20 MB of buffers and structures, which
/// glibc would otherwise keep in the handler thread's arena).
const BIG_BODY: usize = 256 * 1024;

fn handle(ctx: &Ctx, mut req: tiny_http::Request) {
    let started = Instant::now();
    let method = req.method().clone();
    let url = req.url().to_string();
    let big_request = req.body_length().is_some_and(|n| n > BIG_BODY);
    let reply = match caught(|| process(ctx, &mut req)) {
        Ok(routes::Outcome::Reply(r)) => r,
        Ok(routes::Outcome::Park(how)) => {
            log::debug!("{method} {} parked until a task is ready", path_of(&url));
            ctx.scheduler.park(req, how);
            return;
        }
        Ok(routes::Outcome::Object(obj)) => {
            log::debug!("{method} {} -> object store", path_of(&url));
            return match &ctx.storage {
                super::storage::Storage::Local(store) => store.serve(req, obj),
                super::storage::Storage::S3(_) => respond(req, ApiError::NoRoute.reply()),
            };
        }
        Err(e) => {
            if let ApiError::Internal(detail) = &e {
                log::error!("{method} {} failed: {detail}", path_of(&url));
            }
            e.reply()
        }
    };
    log::debug!("{method} {} -> {} in {:?}", path_of(&url), reply.status, started.elapsed());
    let big = big_request || reply.body.len() > BIG_BODY;
    respond(req, reply);
    // Tasks this request made ready go to parked fetches now, from this thread.
    ctx.scheduler.offer_pending(ctx);
    if big {
        super::release_freed_memory();
    }
}

/// Runs `f`, turning a panic into an internal error (a 500 with a JSON message, logged):
/// one bad request must not take a handler thread with it.
fn caught<T>(f: impl FnOnce() -> Result<T, ApiError>) -> Result<T, ApiError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(ApiError::Internal(format!("the handler panicked: {what}")))
    })
}

/// The path without the query string (which may hold secrets).
fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Sends a reply on a request, logging (not failing) when the peer has gone away.
pub fn respond(req: tiny_http::Request, reply: Reply) {
    let mut resp = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    if let Some(ct) = reply.content_type {
        resp.add_header(header("Content-Type", ct));
    }
    resp.add_header(header("Access-Control-Allow-Origin", "*"));
    for (name, value) in &reply.headers {
        match tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(h) => resp.add_header(h),
            Err(()) => log::error!("dropped an invalid {name} header from a response"),
        }
    }
    if let Err(e) = req.respond(resp) {
        log::debug!("could not send a response: {e}");
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn process(ctx: &Ctx, req: &mut tiny_http::Request) -> Result<routes::Outcome, ApiError> {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let raw = path.strip_prefix('/').ok_or(ApiError::NoRoute)?;
    let segments: Vec<String> = raw
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect::<Result<_, _>>()
        .map_err(ApiError::BadPath)?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    if *req.method() == tiny_http::Method::Options {
        return Ok(routes::Outcome::Reply(cors_preflight()));
    }
    let endpoint = routes::resolve(req.method(), &segs)?;
    if let routes::Endpoint::Object(obj) = endpoint {
        // The body may be far larger than body_limit; the store streams it.
        return Ok(routes::Outcome::Object(obj));
    }
    let mut call = Call {
        peer: req.remote_addr().copied(),
        headers: req.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect(),
        query: query.to_string(),
        body: Vec::new(),
    };
    let principal = routes::authenticate(ctx, &endpoint, &call)?;
    call.body = read_body(req, ctx.cfg.body_limit)?;
    routes::dispatch(ctx, endpoint, &call, principal)
}

fn cors_preflight() -> Reply {
    // Permissive CORS, as the peer has; the allow headers are added by respond().
    Reply::empty(200)
}

fn read_body(req: &mut tiny_http::Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    if req.body_length().is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = Vec::with_capacity(req.body_length().unwrap_or(0).min(limit));
    req.as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::BadJson(format!("cannot read the request body: {e}")))?;
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%zz", false).is_err());
        assert!(percent_decode("%4", false).is_err());
    }

    #[test]
    fn a_panicking_handler_becomes_an_internal_error() {
        let r: Result<(), ApiError> = caught(|| panic!("boom"));
        match r {
            Err(ApiError::Internal(d)) => assert!(d.contains("boom"), "{d}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(caught(|| Ok(3)).unwrap(), 3);
        let reply = caught::<()>(|| panic!("x")).unwrap_err().reply();
        assert_eq!(reply.status, 500);
        assert_eq!(reply.content_type, Some(JSON));
    }

    #[test]
    fn repeated_query_keys() {
        let c = Call { peer: None, headers: vec![], query: "users=a&users=b%20c&x=1".into(), body: vec![] };
        assert_eq!(c.query_all("users").unwrap(), vec!["a", "b c"]);
        assert_eq!(c.query_one("x").unwrap().as_deref(), Some("1"));
        assert!(c.query_all("none").unwrap().is_empty());
    }

    #[test]
    fn json_bodies_classify_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: u32,
        }
        let mk = |ct: &str, body: &str| Call {
            peer: None,
            headers: vec![("content-type".into(), ct.into())],
            query: String::new(),
            body: body.as_bytes().to_vec(),
        };
        assert!(matches!(mk("text/plain", r#"{"a":1}"#).json::<T>(), Err(ApiError::UnsupportedMediaType)));
        assert!(matches!(mk(JSON, "{").json::<T>(), Err(ApiError::BadJson(_))));
        assert!(matches!(mk(JSON, r#"{"a":"x"}"#).json::<T>(), Err(ApiError::JsonShape(_))));
        assert!(matches!(mk(JSON, r#"{}"#).json::<T>(), Err(ApiError::JsonShape(_))));
        assert!(mk("application/json; charset=utf-8", r#"{"a":1}"#).json::<T>().is_ok());
    }
}
