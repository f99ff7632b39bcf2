//! `WorkerError`: why a worker could not start (or stopped for good). Each is logged as one
//! line that says what to fix, and the worker exits with status 1.

use super::login::CredError;
use super::net::CallError;
use std::path::PathBuf;

#[derive(Debug)]
pub(crate) enum WorkerError {
    /// The password file cannot be opened.
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The password could not be read from `from` (the file or stdin, as shown).
    PasswordRead {
        from: String,
        source: std::io::Error,
    },
    /// The first line of `from` is longer than `max` bytes.
    PasswordTooLong {
        from: String,
        max: u64,
    },
    PasswordNotUtf8 {
        from: String,
    },
    PasswordEmpty {
        from: String,
    },
    /// `ca_file` cannot be used.
    CaFile(crate::tls::TlsError),
    /// `run_as` is set but the worker is not root.
    RunAsNeedsRoot,
    /// `run_as` names no user (`source`: the lookup's own error, if any).
    NoSuchUser {
        name: String,
        source: Option<std::io::Error>,
    },
    RunAsNul {
        name: String,
    },
    RunAsRoot {
        name: String,
    },
    /// The task user cannot pass through `dir` (mode `mode`) to the working directory `root`.
    Untraversable {
        dir: PathBuf,
        mode: u32,
        root: PathBuf,
    },
    /// No default credentials file (no $HOME).
    NoCredentialsPath,
    /// No user token: a wrong password, or none to log in with.
    Credentials(CredError),
    /// `POST /workers` failed for good.
    Registration(CallError),
    /// No cache directory (no $XDG_CACHE_HOME or $HOME).
    NoCacheDir,
    /// The directory above the working directories cannot be made private.
    CacheDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The working directory cannot be emptied or created.
    WorkDir(std::io::Error),
    /// A thread the worker needs did not start.
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::PasswordFile { path, source } => {
                write!(f, "cannot read the password file {}: {source}; check password_file", path.display())
            }
            WorkerError::PasswordRead { from, source } => write!(f, "cannot read the password from {from}: {source}"),
            WorkerError::PasswordTooLong { from, max } => {
                write!(f, "the password in {from} is longer than {max} bytes; put the password alone on the first line")
            }
            WorkerError::PasswordNotUtf8 { from } => write!(f, "the password in {from} is not UTF-8"),
            WorkerError::PasswordEmpty { from } => write!(f, "{from} holds no password on its first line"),
            WorkerError::CaFile(e) => write!(f, "{e}"),
            WorkerError::RunAsNeedsRoot => f.write_str(
                "run_as needs the worker to start as root (it switches to that user for each task); \
                 start it as root or leave run_as out",
            ),
            WorkerError::NoSuchUser { name, source } => {
                write!(f, "run_as: no user {name:?} on this machine")?;
                if let Some(e) = source {
                    write!(f, " ({e})")?;
                }
                f.write_str("; create it (useradd) or name an existing one")
            }
            WorkerError::RunAsNul { name } => write!(f, "run_as {name:?} has a NUL byte"),
            WorkerError::RunAsRoot { name } => write!(f, "run_as: {name:?} is root; name an unprivileged user"),
            WorkerError::Untraversable { dir, mode, root } => write!(
                f,
                "run_as: the task user cannot pass through {} (mode {mode:o}), above the working directory {}; \
                 set XDG_CACHE_HOME to a directory every user can traverse (e.g. /var/cache/mito) or open up {}",
                dir.display(),
                root.display(),
                dir.display()
            ),
            WorkerError::NoCredentialsPath => {
                f.write_str("cannot find the credentials file: set credential_path or $HOME")
            }
            WorkerError::Credentials(e) => write!(f, "{e}"),
            WorkerError::Registration(e) => write!(f, "registration refused: {e}"),
            WorkerError::NoCacheDir => {
                f.write_str("cannot find a cache directory for the working files: set $XDG_CACHE_HOME or $HOME")
            }
            WorkerError::CacheDir { path, source } => {
                write!(f, "cannot create {} with mode 0700: {source}", path.display())
            }
            WorkerError::WorkDir(e) => write!(f, "cannot prepare the working directory: {e}"),
            WorkerError::Thread { name, source } => write!(f, "cannot start the {name} thread: {source}"),
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::PasswordFile { source, .. }
            | WorkerError::PasswordRead { source, .. }
            | WorkerError::CacheDir { source, .. }
            | WorkerError::WorkDir(source)
            | WorkerError::Thread { source, .. } => Some(source),
            WorkerError::NoSuchUser { source, .. } => source.as_ref().map(|e| e as _),
            WorkerError::CaFile(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_names_the_lookup_error_only_when_there_is_one() {
        let e = WorkerError::NoSuchUser { name: "nobody2".into(), source: None };
        assert_eq!(
            e.to_string(),
            r#"run_as: no user "nobody2" on this machine; create it (useradd) or name an existing one"#
        );
        let e =
            WorkerError::NoSuchUser { name: "x".into(), source: Some(std::io::Error::from_raw_os_error(libc::EIO)) };
        assert!(e.to_string().starts_with(r#"run_as: no user "x" on this machine (Input/output error"#), "{e}");
    }
}
