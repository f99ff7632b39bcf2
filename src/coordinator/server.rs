//! The HTTP server: a fixed pool of named handler threads on one tiny_http listener.
//!
//! ```text
//! handler thread:  recv ─▶ route (404/405) ─▶ authenticate ─▶ read body (413) ─▶ handler ─▶ respond
//! ```
//!
//! Handlers are plain functions that take the context and a [`Call`] and return a
//! [`Reply`] or an [`ApiError`]; errors become responses in exactly one place
//! ([`ApiError::reply`], in [`super::http`] with the rest of what handlers need from HTTP).
//! This module only runs the accept loop and its threads.

use super::error::ApiError;
use super::http::{percent_decode, respond, Call, Reply};
use super::metrics::METRICS;
use super::routes;
use super::Ctx;
use std::io::Read;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Starts `threads` handler threads on `server`; they stop once `ctx` is shutting down.
pub(super) fn spawn_handlers(ctx: Arc<Ctx>, server: Arc<tiny_http::Server>, threads: usize) -> Vec<JoinHandle<()>> {
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

/// Starts the thread of the `metrics_bind` listener: `GET /metrics` without
/// authentication (the address is the access control), 404 for anything else.
pub(super) fn spawn_metrics(ctx: Arc<Ctx>, server: Arc<tiny_http::Server>) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            while !ctx.shutdown.is_set() {
                match server.recv_timeout(Duration::from_millis(500)) {
                    Ok(Some(req)) => {
                        let path = path_of(req.url());
                        let reply = match (req.method(), path) {
                            (tiny_http::Method::Get, "/metrics") => {
                                caught(|| Ok(super::metrics::scrape(&ctx))).unwrap_or_else(|e| e.reply())
                            }
                            (_, "/metrics") => ApiError::MethodNotAllowed.reply(),
                            _ => ApiError::NoRoute.reply(),
                        };
                        respond(req, reply);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::warn!("accepting a metrics request failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .map_err(|e| log::error!("cannot start the metrics thread: {e}"))
        .ok()
}

fn handler_loop(ctx: &Ctx, server: &tiny_http::Server) {
    while !ctx.shutdown.is_set() {
        match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(req)) => {
                // A panic past `process` (in answering, or in handing tasks to parked
                // fetches) must not end this thread either; the request, if still
                // unanswered, gets tiny_http's 500 as it drops.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(ctx, req))).is_err() {
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
    let mut route = None;
    let reply = match caught(|| process(ctx, &mut req, &url, &mut route)) {
        Ok(routes::Outcome::Reply(r)) => r,
        Ok(routes::Outcome::Park(how)) => {
            log::debug!("{method} {} parked until a task is ready", path_of(&url));
            // Counted in the request metrics when the scheduler answers it.
            ctx.scheduler.park(req, how, started, route);
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
    let status = reply.status;
    respond(req, reply);
    METRICS.request(route, status, started.elapsed());
    // Tasks this request made ready go to parked fetches now, from this thread.
    ctx.scheduler.deliver_wakes(ctx);
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

/// Serves one request; `route` learns the endpoint's index as soon as it is known.
fn process(
    ctx: &Ctx,
    req: &mut tiny_http::Request,
    url: &str,
    route: &mut Option<usize>,
) -> Result<routes::Outcome, ApiError> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let raw = path.strip_prefix('/').ok_or(ApiError::NoRoute)?;
    let segments: Vec<String> = raw
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::BadPath(e.to_string()))?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    if *req.method() == tiny_http::Method::Options {
        return Ok(routes::Outcome::Reply(cors_preflight()));
    }
    let endpoint = routes::resolve(req.method(), &segs)?;
    *route = Some(endpoint.index());
    if let routes::Endpoint::Object(obj) = endpoint {
        // The body may be far larger than body_limit; the store streams it.
        return Ok(routes::Outcome::Object(obj));
    }
    let mut call = Call::new(
        req.remote_addr().copied(),
        // Copied as plain strings (`to_string` would run each through the formatter).
        req.headers().iter().map(|h| (h.field.as_str().as_str().to_owned(), h.value.as_str().to_owned())).collect(),
        query.to_string(),
    );
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
    fn a_panicking_handler_becomes_an_internal_error() {
        let r: Result<(), ApiError> = caught(|| panic!("boom"));
        match r {
            Err(ApiError::Internal(d)) => assert!(d.contains("boom"), "{d}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(caught(|| Ok(3)).unwrap(), 3);
        let reply = caught::<()>(|| panic!("x")).unwrap_err().reply();
        assert_eq!(reply.status, 500);
        assert_eq!(reply.content_type, Some("application/json"));
    }
}
