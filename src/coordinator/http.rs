//! What handlers need from HTTP: the [`Reply`] they return, the [`Call`] they read, the one
//! mapping from [`ApiError`] to a response, [`respond`] for the few places that answer a
//! request themselves (parked fetches, the local object store), and percent-decoding.
//!
//! This module knows nothing of routes or threads, so handlers, the scheduler and the
//! object store can use it without importing the server that calls them.

use super::error::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// Further headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

const JSON: &str = "application/json";

impl Reply {
    /// 200 with a JSON body.
    pub(crate) fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status: 200, content_type: Some(JSON), body, headers: Vec::new() },
            Err(e) => ApiError::Internal(format!("cannot serialize a response: {e}")).reply(),
        }
    }

    /// 200 with the JSON body `null`.
    pub(crate) fn null() -> Reply {
        Reply { status: 200, content_type: Some(JSON), body: b"null".to_vec(), headers: Vec::new() }
    }

    /// 200 with no body.
    pub(crate) fn ok() -> Reply {
        Reply::empty(200)
    }

    pub(crate) fn empty(status: u16) -> Reply {
        Reply { status, content_type: None, body: Vec::new(), headers: Vec::new() }
    }

    pub(crate) fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: text.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn error_json(status: u16, msg: &str) -> Reply {
        let body = serde_json::to_vec(&crate::api::ErrorMsg { msg: msg.to_string() }).unwrap_or_default();
        Reply { status, content_type: Some(JSON), body, headers: Vec::new() }
    }

    /// The same reply with one more header.
    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// Application errors have the peer's `{"msg": ...}` JSON body; request-format errors (bad
/// JSON, missing header, unknown route) are plain text or empty, as the peer's framework
/// answers them, so existing clients read them the same way.
impl ApiError {
    /// The message a caller sees (the `msg` of a JSON error, or the plain text).
    pub(crate) fn message(&self) -> String {
        let r = self.reply();
        match serde_json::from_slice::<crate::api::ErrorMsg>(&r.body) {
            Ok(m) => m.msg,
            Err(_) => String::from_utf8_lossy(&r.body).into_owned(),
        }
    }

    /// The HTTP answer for this error.
    pub(crate) fn reply(&self) -> Reply {
        use ApiError::*;
        let msg = |status: u16, text: String| Reply::error_json(status, &text);
        match self {
            InvalidToken => msg(401, "Authentication error: Invalid token".into()),
            Unauthenticated(s) => {
                msg(401, format!("Authentication error: {s}")).with_header("WWW-Authenticate", "Bearer".into())
            }
            WrongCredentials => msg(401, "Authentication error: Wrong credentials".into()),
            PermissionDenied => msg(403, "Authentication error: Permission denied".into()),
            Forbidden(s) => msg(403, format!("Authentication error: Permission denied: {s}")),
            InvalidRequest(s) => msg(400, format!("Process request error: {s}")),
            AlreadyExists(s) => msg(409, format!("User or group with same name {s} already exists")),
            NotFound(s) => msg(404, format!("{s} not found")),
            QuotaExceeded => msg(403, "Resource quota exceeded".into()),
            TooManyRequests { msg: why, retry_after_secs } => {
                msg(429, format!("Too many requests: {why}; retry after {retry_after_secs}s"))
                    .with_header("Retry-After", retry_after_secs.to_string())
            }
            Unavailable(s) => msg(503, format!("Service unavailable: {s}; retry later")),
            InsufficientStorage(s) => msg(507, format!("Insufficient storage: {s}; retry later")),
            Internal(_) => msg(500, "Internal server error".into()),
            MissingAuthHeader => Reply::text(400, "Header of type `authorization` was missing"),
            BadAuthHeader => Reply::text(400, "invalid HTTP header (authorization): expected `Bearer <token>`"),
            UnsupportedMediaType => Reply::text(415, "Expected request with `Content-Type: application/json`"),
            PayloadTooLarge(limit) => {
                Reply::text(413, &format!("Failed to buffer the request body: length limit of {limit} bytes exceeded"))
            }
            BadJson(e) => Reply::text(400, &format!("Failed to parse the request body as JSON: {e}")),
            JsonShape(e) => Reply::text(422, &format!("Failed to deserialize the JSON body into the target type: {e}")),
            BadPath(e) => Reply::text(400, &format!("Invalid URL: {e}")),
            BadQuery(e) => Reply::text(400, &format!("Failed to deserialize query string: {e}")),
            NoRoute => Reply::empty(404),
            MethodNotAllowed => Reply::empty(405),
        }
    }
}

/// What a handler sees of a request.
pub(crate) struct Call {
    pub peer: Option<SocketAddr>,
    headers: Vec<(String, String)>,
    query: String,
    pub body: Vec<u8>,
}

impl Call {
    /// A call with no body yet: the server reads it only once the caller is authenticated.
    pub(crate) fn new(peer: Option<SocketAddr>, headers: Vec<(String, String)>, query: String) -> Call {
        Call { peer, headers, query, body: Vec::new() }
    }

    /// A header's value (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON of type `T`: 415 without a JSON content type, 400 for a syntax
    /// error, 422 when the JSON does not have the expected shape.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
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
    pub(crate) fn query_all(&self, key: &str) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for (k, v) in query_pairs(&self.query)? {
            if k == key {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The last value of a query key.
    pub(crate) fn query_one(&self, key: &str) -> Result<Option<String>, ApiError> {
        Ok(self.query_all(key)?.pop())
    }
}

/// Why a path segment or query part does not percent-decode; each holds the text given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A `%` without two characters after it.
    Truncated(String),
    /// A `%` not followed by two hex digits.
    BadEscape(String),
    NotUtf8(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated(s) => write!(f, "truncated escape in {s:?}"),
            DecodeError::BadEscape(s) => write!(f, "bad escape in {s:?}"),
            DecodeError::NotUtf8(s) => write!(f, "{s:?} does not decode to UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes `%XX` escapes (and `+` as space when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> Result<String, DecodeError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(|| DecodeError::Truncated(s.into()))?;
                let hex = std::str::from_utf8(hex).map_err(|_| DecodeError::BadEscape(s.into()))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| DecodeError::BadEscape(s.into()))?);
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
    String::from_utf8(out).map_err(|_| DecodeError::NotUtf8(s.into()))
}

fn query_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((
                percent_decode(k, true).map_err(|e| ApiError::BadQuery(e.to_string()))?,
                percent_decode(v, true).map_err(|e| ApiError::BadQuery(e.to_string()))?,
            ))
        })
        .collect()
}

/// Sends a reply on a request, logging (not failing) when the peer has gone away.
pub(crate) fn respond(req: tiny_http::Request, reply: Reply) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c", false).unwrap(), "a/b c");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%zz", false), Err(DecodeError::BadEscape("%zz".into())));
        assert_eq!(percent_decode("%4", false).unwrap_err().to_string(), r#"truncated escape in "%4""#);
    }

    #[test]
    fn repeated_query_keys() {
        let c = Call::new(None, vec![], "users=a&users=b%20c&x=1".into());
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
