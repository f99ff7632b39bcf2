//! `BenchError`: why a bench run stopped; printed after `mito bench: ` (exit status 1).

/// Why a bench run stopped.
#[derive(Debug)]
pub(super) enum BenchError {
    /// A flag's value is refused; `expected` says what it should be.
    Flag { flag: String, value: String, expected: String },
    /// `--coordinator` cannot be measured; `reason` says why.
    Coordinator { base: String, reason: String },
    /// `call` (`POST /tasks`) got a non-2xx answer with this body.
    Status { call: String, status: u16, body: String },
    /// `call` failed on the connection.
    Io { call: String, source: std::io::Error },
    /// An answer (`what`: "answer" or "fetch answer") is not what the bench expects.
    Unexpected { what: &'static str, body: String, source: serde_json::Error },
    /// A request body could not be encoded.
    Encode(serde_json::Error),
    /// The login as `user` failed.
    Login { user: String, source: Box<BenchError> },
    /// The bench's own group could not be created.
    CreateGroup(Box<BenchError>),
    /// Some tasks of a batch were refused.
    PartialBatch { ok: usize, of: usize },
    /// A task of the end-to-end run was refused.
    SubmitFailed,
    /// A task submitted in the latency run did not reach a worker within 30 s.
    NeverFetched,
    /// The latency run's worker got another task than the one just submitted.
    WrongTask,
    /// The end-to-end run took more than 10 minutes.
    TooSlow,
    /// A thread (`worker` or `bench`) panicked.
    Panicked(&'static str),
    /// An outside tool (callgrind_control, callgrind_annotate) failed; `reason` says how.
    Tool { tool: &'static str, reason: String },
    /// Reading the database's statistics (`--db`) failed; `what` says what was tried.
    Database { what: &'static str, source: postgres::Error },
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Flag { flag, value, expected } => write!(f, "{flag} {value:?}: {expected}"),
            BenchError::Coordinator { base, reason } => write!(f, "--coordinator {base:?}: {reason}"),
            BenchError::Status { call, status, body } => write!(f, "{call}: {status} {body}"),
            BenchError::Io { call, source } => write!(f, "{call}: {source}"),
            BenchError::Unexpected { what, body, source } => write!(f, "unexpected {what} {body:?}: {source}"),
            BenchError::Encode(e) => write!(f, "cannot encode a request: {e}"),
            BenchError::Login { user, source } => write!(f, "login as {user}: {source}"),
            BenchError::CreateGroup(e) => write!(f, "{e} (the bench needs a user who may create one more group)"),
            BenchError::PartialBatch { ok, of } => write!(f, "batch submit: only {ok} of {of} succeeded"),
            BenchError::SubmitFailed => f.write_str("end-to-end run: submit failed"),
            BenchError::NeverFetched => f.write_str("a submitted task was never fetched"),
            BenchError::WrongTask => f.write_str("latency run: fetched another task than the one submitted"),
            BenchError::TooSlow => f.write_str("end-to-end run took more than 10 minutes"),
            BenchError::Panicked(which) => write!(f, "a {which} thread panicked"),
            BenchError::Tool { tool, reason } => write!(f, "{tool}: {reason}"),
            BenchError::Database { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Io { source, .. } => Some(source),
            BenchError::Unexpected { source, .. } | BenchError::Encode(source) => Some(source),
            BenchError::Login { source, .. } | BenchError::CreateGroup(source) => Some(source.as_ref()),
            BenchError::Database { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_keep_the_inner_message() {
        let refused = BenchError::Status { call: "POST /groups".into(), status: 403, body: "no".into() };
        assert_eq!(
            BenchError::CreateGroup(Box::new(refused)).to_string(),
            "POST /groups: 403 no (the bench needs a user who may create one more group)"
        );
        let flag = BenchError::Flag {
            flag: "--workers".into(),
            value: "0".into(),
            expected: "expected a positive number".into(),
        };
        assert_eq!(flag.to_string(), r#"--workers "0": expected a positive number"#);
    }
}
