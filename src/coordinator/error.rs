//! `ApiError`: every way a request can fail. The one place that maps each to an HTTP
//! status and body is [`ApiError::reply`], in [`super::http`]:
//!
//! ```ignore
//! use mito::coordinator::error::ApiError;
//! let r = ApiError::NotFound("Task with uuid 1".into()).reply();
//! assert_eq!(r.status, 404);
//! assert_eq!(r.body, br#"{"msg":"Task with uuid 1 not found"}"#);
//! ```

#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    /// The token is not one we issued, or it is garbled or expired.
    InvalidToken,
    /// 401 without usable credentials where a route says what it takes (`WWW-Authenticate`).
    Unauthenticated(String),
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
    TooManyRequests {
        msg: String,
        retry_after_secs: u64,
    },
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
    pub(crate) fn bad(msg: impl std::fmt::Display) -> Self {
        ApiError::InvalidRequest(msg.to_string())
    }
}

impl From<postgres::Error> for ApiError {
    fn from(e: postgres::Error) -> Self {
        use std::error::Error;
        super::metrics::METRICS.db_statement_errors.inc();
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

/// Why the coordinator could not start (or had to stop): logged, and the exit status is 1.
/// Each layer's own error says what to fix; this one says which step failed.
#[derive(Debug)]
pub(crate) enum StartError {
    Keys(super::auth::KeyError),
    Redis(super::redis::RedisError),
    Storage(super::storage::StorageError),
    /// The admin password could not be hashed (a bug: argon2 refuses only bad parameters).
    HashAdminPassword(ApiError),
    /// The schema migrations failed.
    Schema(postgres::Error),
    /// The listening socket could not be opened; `source` says why (often: in use).
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The `metrics_bind` socket could not be opened.
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// `metrics_token_file` cannot be read or holds no usable token.
    MetricsToken {
        path: std::path::PathBuf,
        message: String,
    },
    /// The HTTP server could not start on the opened socket.
    Serve {
        addr: std::net::SocketAddr,
        message: String,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Keys(e) => write!(f, "{e}"),
            StartError::Redis(e) => write!(f, "{e}"),
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::HashAdminPassword(e) => write!(f, "cannot hash the admin password: {e:?}"),
            StartError::Schema(e) => write!(f, "cannot apply schema.sql: {e}"),
            StartError::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}; is another process using it? (change --bind)")
            }
            StartError::MetricsListen { addr, source } => write!(
                f,
                "cannot listen on {addr} for metrics: {source}; is another process using it? (change metrics_bind)"
            ),
            StartError::MetricsToken { path, message } => {
                write!(f, "the metrics token file {}: {message}; check metrics_token_file", path.display())
            }
            StartError::Serve { addr, message } => write!(f, "cannot serve on {addr}: {message}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Keys(e) => Some(e),
            StartError::Redis(e) => Some(e),
            StartError::Storage(e) => Some(e),
            StartError::Schema(e) => Some(e),
            StartError::Listen { source, .. } | StartError::MetricsListen { source, .. } => Some(source),
            StartError::HashAdminPassword(_) | StartError::Serve { .. } | StartError::MetricsToken { .. } => None,
        }
    }
}

impl From<super::auth::KeyError> for StartError {
    fn from(e: super::auth::KeyError) -> Self {
        StartError::Keys(e)
    }
}

impl From<super::redis::RedisError> for StartError {
    fn from(e: super::redis::RedisError) -> Self {
        StartError::Redis(e)
    }
}

impl From<super::storage::StorageError> for StartError {
    fn from(e: super::storage::StorageError) -> Self {
        StartError::Storage(e)
    }
}

/// The module documentation's example, run (doc tests see only the public API).
#[cfg(test)]
mod doc_example {
    #[test]
    fn runs() {
        use crate::coordinator::error::ApiError;
        let r = ApiError::NotFound("Task with uuid 1".into()).reply();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, br#"{"msg":"Task with uuid 1 not found"}"#);
    }
}
