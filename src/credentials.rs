//! The credentials file shared by `mito worker` and `mito client`: one `username:token` line
//! per user, at `$XDG_CONFIG_HOME/mitosis/credentials` unless configured otherwise.
//!
//! ```no_run
//! use mito::credentials;
//! let path = credentials::default_path().unwrap();
//! credentials::store(&path, "alice", "eyJ...").unwrap();
//! assert_eq!(credentials::load(&path, Some("alice")).unwrap().1, "eyJ...");
//! ```
//!
//! [`obtain`] is the whole startup routine both roles use: reuse the cached token if the
//! coordinator still accepts it (`GET /auth`), otherwise log in (`POST /login`) with the
//! given password, or one asked for on the terminal, and remember the new token.
//! The file is written with mode 0600: a token is as good as the password.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `$XDG_CONFIG_HOME/mitosis/credentials` (or under `~/.config`).
pub fn default_path() -> Option<PathBuf> {
    crate::config::config_dir().map(|d| d.join("mitosis").join("credentials"))
}

/// The `(user, token)` line for `user`, or the first line when no user is given.
pub fn load(path: &Path, user: Option<&str>) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(u, t)| !u.is_empty() && !t.is_empty())
        .find(|(u, _)| user.map_or(true, |want| want == *u))
        .map(|(u, t)| (u.to_string(), t.to_string()))
}

/// Writes (or replaces) `user`'s line, creating parent directories; the file ends up 0600.
pub fn store(path: &Path, user: &str, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.trim().is_empty() && l.split_once(':').map(|(u, _)| u) != Some(user))
        .map(str::to_string)
        .collect();
    lines.push(format!("{user}:{token}"));
    // Write a sibling file and rename it, so a crash never leaves half a file behind.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(lines.join("\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Why no credential could be had.
#[derive(Debug)]
pub enum CredError {
    /// The coordinator could not be reached or answered 5xx: worth retrying later.
    Unreachable(String),
    /// Anything a retry will not fix (wrong password, no password and no terminal, ...).
    Fatal(String),
}

impl std::fmt::Display for CredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredError::Unreachable(m) | CredError::Fatal(m) => f.write_str(m),
        }
    }
}

/// Returns a valid `(user, token)`: the cached one if `GET /auth` accepts it, otherwise a
/// fresh login (stored back into `path`). Prompts only when stdin is a terminal.
pub fn obtain(
    base: &str,
    path: &Path,
    user: Option<&str>,
    password: Option<&str>,
    retain: bool,
) -> Result<(String, String), CredError> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    if let Some((u, token)) = load(path, user) {
        match agent.get(&format!("{base}/auth")).set("Authorization", &format!("Bearer {token}")).call() {
            Ok(r) => {
                if r.into_string().map(|b| b.trim() == u).unwrap_or(false) {
                    return Ok((u, token));
                }
            }
            Err(ureq::Error::Status(s, _)) if s >= 500 => {
                return Err(CredError::Unreachable(format!("{base}/auth answered {s}")));
            }
            Err(ureq::Error::Status(..)) => {}
            Err(ureq::Error::Transport(t)) => {
                return Err(CredError::Unreachable(format!("cannot reach the coordinator at {base}: {t}")));
            }
        }
        log::warn!("the stored token for {u} in {} is no longer valid; logging in again", path.display());
    }
    let (user, password) = ask_missing(user, password, path)?;
    let body = crate::api::UserLoginReq {
        username: user.clone(),
        md5_password: crate::api::md5_password(&password),
        retain,
    };
    let resp = agent.post(&format!("{base}/login")).send_json(&body);
    let token = match resp {
        Ok(r) => r
            .into_json::<crate::api::UserLoginResp>()
            .map_err(|e| CredError::Fatal(format!("{base}/login gave an unexpected answer: {e}")))?
            .token,
        Err(ureq::Error::Status(s, _)) if s >= 500 => {
            return Err(CredError::Unreachable(format!("{base}/login answered {s}")));
        }
        Err(ureq::Error::Status(s, r)) => {
            let msg = r.into_json::<crate::api::ErrorMsg>().map(|m| m.msg).unwrap_or_default();
            return Err(CredError::Fatal(format!("login as {user} failed ({s} {msg}); check the user name and password")));
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(CredError::Unreachable(format!("cannot reach the coordinator at {base}: {t}")));
        }
    };
    if let Err(e) = store(path, &user, &token) {
        log::warn!("cannot save the token to {}: {e}; the next start will log in again", path.display());
    }
    Ok((user, token))
}

fn ask_missing(user: Option<&str>, password: Option<&str>, path: &Path) -> Result<(String, String), CredError> {
    if let (Some(u), Some(p)) = (user, password) {
        return Ok((u.to_string(), p.to_string()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CredError::Fatal(format!(
            "no valid token in {} and no {} given; pass --user and --password (or MITO_USER and MITO_PASSWORD), \
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

/// Reads one line from the terminal, with echo off when `echo` is false.
fn prompt(label: &str, echo: bool) -> Result<String, CredError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on stdin with a zeroed, then kernel-filled struct.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if echo || libc::tcgetattr(fd, &mut t) != 0 {
            None
        } else {
            let old = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(old)
        }
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(old) = saved {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
        let _ = writeln!(err);
    }
    read.map_err(|e| CredError::Fatal(format!("cannot read from the terminal: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mito-cred-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("sub").join("credentials")
    }

    #[test]
    fn store_replaces_the_users_line_and_keeps_others() {
        let p = tmp("replace");
        store(&p, "alice", "t1").unwrap();
        store(&p, "bob", "t2").unwrap();
        store(&p, "alice", "t3").unwrap();
        assert_eq!(load(&p, Some("alice")), Some(("alice".into(), "t3".into())));
        assert_eq!(load(&p, Some("bob")), Some(("bob".into(), "t2".into())));
        assert_eq!(load(&p, None).unwrap().0, "bob", "the first line is the default");
        assert_eq!(load(&p, Some("carol")), None);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "bob:t2\nalice:t3");
    }

    #[test]
    fn a_missing_file_has_no_credential() {
        assert_eq!(load(Path::new("/nonexistent/mito/credentials"), None), None);
    }
}
