//! `ApiError`: every way a request can fail, and the one place that maps each to an HTTP
//! status and body.
//!
//! ```
//! use mito::coordinator::error::ApiError;
//! let r = ApiError::NotFound("Task with uuid 1".into()).reply();
//! assert_eq!(r.status, 404);
//! assert_eq!(r.body, br#"{"msg":"Task with uuid 1 not found"}"#);
//! ```
//!
//! Application errors have the peer's `{"msg": ...}` JSON body; request-format errors (bad
//! JSON, missing header, unknown route) are plain text or empty, as the peer's framework
//! answers them, so existing clients read them the same way.

use super::server::Reply;

#[derive(Debug, Clone)]
pub enum ApiError {
    /// The token is not one we issued, or it is garbled or expired.
    InvalidToken,
    /// The token was revoked, its user is gone, or a password was wrong.
    WrongCredentials,
    PermissionDenied,
    /// 403 with the reason, e.g. which role the caller lacks.
    Forbidden(String),
    InvalidRequest(String),
    AlreadyExists(String),
    NotFound(String),
    QuotaExceeded,
    /// 429: the caller must wait (e.g. too many failed logins); `Retry-After` says how long.
    TooManyRequests { msg: String, retry_after_secs: u64 },
    /// The database (or another dependency) is unreachable; the caller may retry.
    Unavailable(String),
    /// 507: the coordinator's own disk is full; the caller may retry once space is freed.
    InsufficientStorage(String),
    /// A bug or an unexpected failure; the detail goes to the log, not to the caller.
    Internal(String),
    MissingAuthHeader,
    BadAuthHeader,
    UnsupportedMediaType,
    PayloadTooLarge(usize),
    BadJson(String),
    JsonShape(String),
    BadPath(String),
    BadQuery(String),
    NoRoute,
    MethodNotAllowed,
}

impl ApiError {
    /// Shorthand for `InvalidRequest`.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::InvalidRequest(msg.into())
    }

    /// The message a caller sees (the `msg` of a JSON error, or the plain text).
    pub fn message(&self) -> String {
        let r = self.reply();
        match serde_json::from_slice::<crate::api::ErrorMsg>(&r.body) {
            Ok(m) => m.msg,
            Err(_) => String::from_utf8_lossy(&r.body).into_owned(),
        }
    }

    /// The HTTP answer for this error.
    pub fn reply(&self) -> Reply {
        use ApiError::*;
        let msg = |status: u16, text: String| Reply::error_json(status, &text);
        match self {
            InvalidToken => msg(401, "Authentication error: Invalid token".into()),
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
            UnsupportedMediaType => {
                Reply::text(415, "Expected request with `Content-Type: application/json`")
            }
            PayloadTooLarge(limit) => {
                Reply::text(413, &format!("Failed to buffer the request body: length limit of {limit} bytes exceeded"))
            }
            BadJson(e) => Reply::text(400, &format!("Failed to parse the request body as JSON: {e}")),
            JsonShape(e) => {
                Reply::text(422, &format!("Failed to deserialize the JSON body into the target type: {e}"))
            }
            BadPath(e) => Reply::text(400, &format!("Invalid URL: {e}")),
            BadQuery(e) => Reply::text(400, &format!("Failed to deserialize query string: {e}")),
            NoRoute => Reply::empty(404),
            MethodNotAllowed => Reply::empty(405),
        }
    }
}

impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        use std::error::Error;
        let io = e.source().is_some_and(|s| s.is::<std::io::Error>());
        // Class 08: connection exception; 57P0x: the server is shutting down or restarting.
        let sqlstate = e.code().map(|c| c.code()).unwrap_or("");
        let gone = sqlstate.starts_with("08") || sqlstate.starts_with("57P");
        if e.is_closed() || io || gone || e.to_string().starts_with("timeout") {
            ApiError::Unavailable(format!("the database is unreachable ({e})"))
        } else if sqlstate.starts_with("22") {
            // Data exception: the caller sent a value the database cannot hold (a NUL
            // character in a name, a number out of range).
            let detail = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
            ApiError::InvalidRequest(format!("a value in the request cannot be stored: {detail}"))
        } else {
            let detail = match e.as_db_error() {
                Some(d) => format!("{} ({})", d.message(), d.code().code()),
                None => e.to_string(),
            };
            ApiError::Internal(format!("database error: {detail}"))
        }
    }
}
