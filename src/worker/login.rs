//! Logging the worker's user in: reuse the token saved in the credentials file shared with
//! the client if the coordinator still accepts it (`GET /auth`), otherwise log in
//! (`POST /login`) with the configured password, or one asked for on the terminal, and save
//! the new token.
//!
//! ```ignore
//! let (user, token) = login::obtain(&agent, "http://127.0.0.1:5000", &path, Some("alice"), None, false, None)?;
//! ```
//!
//! Never prompts when stdin is not a terminal: it fails with a message saying what to pass.

use crate::credentials::{load, store};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `$XDG_CONFIG_HOME/mitosis/credentials` (or under `~/.config`).
pub(super) fn default_path() -> Option<PathBuf> {
    crate::config::config_dir().map(|d| d.join("mitosis").join("credentials"))
}

/// The longest a login call may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no credential could be had.
#[derive(Debug)]
pub(crate) enum CredError {
    /// The coordinator could not be reached or answered 5xx: worth retrying later.
    Unreachable(String),
    /// The coordinator refused to check the password for a while (429, too many failed
    /// logins): wait this long, then try again.
    RateLimited(Duration, String),
    /// Anything a retry will not fix (wrong password, no password and no terminal, ...).
    Fatal(String),
}

/// The longest wait a `Retry-After` may impose; a larger one is capped so a worker never
/// sleeps for days on a bad header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait a 429 asks for: its `Retry-After` seconds, 1 s to [`MAX_RETRY_AFTER`]; 30 s
/// without a readable header.
fn retry_after(r: &ureq::Response) -> Duration {
    r.header("Retry-After")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).clamp(Duration::from_secs(1), MAX_RETRY_AFTER))
        .unwrap_or(Duration::from_secs(30))
}

impl std::fmt::Display for CredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredError::Unreachable(m) | CredError::Fatal(m) | CredError::RateLimited(_, m) => f.write_str(m),
        }
    }
}

/// Returns a valid `(user, token)`: the cached one if `GET /auth` accepts it, otherwise a
/// fresh login (stored back into `path`). Prompts only when stdin is a terminal.
///
/// `refused` is a token the coordinator just refused (another login of the same user
/// signed it out): a file entry still holding it is not worth asking about, but one that
/// changed since (that other login saved its token there) is tried first.
pub(super) fn obtain(
    agent: &ureq::Agent,
    base: &str,
    path: &Path,
    user: Option<&str>,
    password: Option<&str>,
    retain: bool,
    refused: Option<&str>,
) -> Result<(String, String), CredError> {
    // The address may carry a password in its user-info; messages show it redacted, and
    // ureq's own errors quote the URL they failed on.
    let shown = crate::redact::url(base);
    if let Some(found) = stored_token(agent, base, &shown, path, user, refused)? {
        return Ok(found);
    }
    let (user, password) = ask_missing(user, password, path)?;
    let token = log_in(agent, base, &shown, &user, &password, retain)?;
    if let Err(e) = store(path, &user, &token) {
        log::warn!("cannot save the token to {}: {e}; the next start will log in again", path.display());
    }
    Ok((user, token))
}

/// The token stored in `path` for `user`, if the coordinator still accepts it.
fn stored_token(
    agent: &ureq::Agent,
    base: &str,
    shown: &str,
    path: &Path,
    user: Option<&str>,
    refused: Option<&str>,
) -> Result<Option<(String, String)>, CredError> {
    let mut refused = refused.map(str::to_string);
    // The entry is read again after each refusal: a concurrent login may just have
    // replaced it. A few rounds at most, so two processes signing each other out cannot
    // keep this loop going; the caller backs off between its own tries.
    for _ in 0..3 {
        let Some((u, token)) = load(path, user) else { break };
        if refused.as_deref() == Some(token.as_str()) {
            break;
        }
        match agent
            .get(&format!("{base}/auth"))
            .timeout(LOGIN_TIMEOUT)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => {
                if r.into_string().map(|b| b.trim() == u).unwrap_or(false) {
                    return Ok(Some((u, token)));
                }
            }
            Err(ureq::Error::Status(s, _)) if s >= 500 => {
                return Err(CredError::Unreachable(format!("{shown}/auth answered {s}")));
            }
            Err(ureq::Error::Status(..)) => {}
            Err(ureq::Error::Transport(t)) => return Err(unreachable(shown, &t)),
        }
        log::warn!("the stored token for {u} in {} is no longer valid; logging in again", path.display());
        refused = Some(token);
    }
    Ok(None)
}

/// Logs in with a password; returns the new token.
fn log_in(
    agent: &ureq::Agent,
    base: &str,
    shown: &str,
    user: &str,
    password: &str,
    retain: bool,
) -> Result<String, CredError> {
    let body = crate::api::UserLoginReq {
        username: user.to_string(),
        md5_password: crate::api::md5_password(password),
        retain,
    };
    let resp = agent.post(&format!("{base}/login")).timeout(LOGIN_TIMEOUT).send_json(&body);
    let token = match resp {
        Ok(r) => {
            r.into_json::<crate::api::UserLoginResp>()
                .map_err(|e| CredError::Fatal(format!("{shown}/login gave an unexpected answer: {e}")))?
                .token
        }
        Err(ureq::Error::Status(s, _)) if s >= 500 => {
            return Err(CredError::Unreachable(format!("{shown}/login answered {s}")));
        }
        Err(ureq::Error::Status(429, r)) => {
            let wait = retry_after(&r);
            let msg = r.into_json::<crate::api::ErrorMsg>().map(|m| m.msg).unwrap_or_default();
            return Err(CredError::RateLimited(wait, format!("login as {user} refused for now (429 {msg})")));
        }
        Err(ureq::Error::Status(s, r)) => {
            let msg = r.into_json::<crate::api::ErrorMsg>().map(|m| m.msg).unwrap_or_default();
            return Err(CredError::Fatal(format!(
                "login as {user} failed ({s} {msg}); check the user name and password"
            )));
        }
        Err(ureq::Error::Transport(t)) => return Err(unreachable(shown, &t)),
    };
    Ok(token)
}

/// A failure to reach the coordinator: final when TLS refused it (retrying will not
/// help), worth retrying otherwise.
fn unreachable(shown: &str, t: &ureq::Transport) -> CredError {
    if crate::tls::explain(t).is_some() {
        CredError::Fatal(format!("cannot reach the coordinator: {}", transport(t)))
    } else {
        CredError::Unreachable(format!("cannot reach the coordinator at {shown}: {}", transport(t)))
    }
}

/// A transport error without the URL it quotes (a failed TLS handshake names the server's
/// origin and the fix).
pub(super) fn transport(t: &ureq::Transport) -> String {
    if let Some(m) = crate::tls::explain(t) {
        return m;
    }
    match t.message() {
        Some(m) => format!("{}: {}", t.kind(), crate::redact::text(m)),
        None => t.kind().to_string(),
    }
}

fn ask_missing(user: Option<&str>, password: Option<&str>, path: &Path) -> Result<(String, String), CredError> {
    if let (Some(u), Some(p)) = (user, password) {
        return Ok((u.to_string(), p.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CredError::Fatal(format!(
            "no valid token in {} and no {} given; pass --user and --password-file (or --password-stdin, \
             or --password, which other local users can see), \
             or run once from a terminal to log in",
            path.display(),
            if user.is_none() { "user name and password" } else { "password" }
        )));
    }
    let user = match user {
        Some(u) => u.to_string(),
        None => prompt("Username: ", true)?,
    };
    let password = match password {
        Some(p) => p.to_string(),
        None => prompt("Password: ", false)?,
    };
    if user.is_empty() || password.is_empty() {
        return Err(CredError::Fatal("an empty user name or password was entered".into()));
    }
    Ok((user, password))
}

/// Reads one line from the terminal, with echo off when `echo` is false. The end of input
/// reads as an empty answer, which the caller refuses.
fn prompt(label: &str, echo: bool) -> Result<String, CredError> {
    let line = crate::terminal::prompt_line(label, !echo)
        .map_err(|e| CredError::Fatal(format!("cannot read from the terminal: {e}")))?;
    Ok(line.unwrap_or_default())
}
