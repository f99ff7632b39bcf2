//! The credentials file shared by the client and the worker: one `username:token` line per
//! user, lines joined by `\n` with no trailing newline (the mitosis format), written 0600.
//!
//! ```ignore
//! use std::path::Path;
//! let path = Path::new("/home/me/.config/mitosis/credentials");
//! mito::credentials::store(path, "alice", "dG9rZW4=").unwrap();
//! assert_eq!(mito::credentials::load(path, Some("alice")), Some(("alice".into(), "dG9rZW4=".into())));
//! // Without a user name, the first line wins.
//! assert!(mito::credentials::load(path, None).is_some());
//! ```
//!
//! A missing or unreadable file simply has no credentials; writing replaces the user's line
//! (or appends one), creates parent directories, and goes through a temporary file renamed
//! into place so a crash never leaves half a file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The cached token of `user`, or of the first line's user when `user` is None.
pub(crate) fn load(path: &Path, user: Option<&str>) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let found =
        entries(&text).find(|(u, _)| user.map_or(true, |want| *u == want)).map(|(u, t)| (u.to_string(), t.to_string()));
    found
}

/// Every well-formed `user:token` line; the split is at the first `:` (tokens are base64).
fn entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .filter(|(u, t)| !u.is_empty() && !t.is_empty())
}

/// Stores `user`'s token, replacing the user's previous line; the file ends up mode 0600.
pub(crate) fn store(path: &Path, user: &str, token: &str) -> std::io::Result<()> {
    if user.is_empty() || user.contains([':', '\n']) || token.contains('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a user name or token has a ':' or a newline",
        ));
    }
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in old.lines().filter(|l| !l.trim().is_empty()) {
        if line.split_once(':').map(|(u, _)| u) == Some(user) {
            if !replaced {
                lines.push(format!("{user}:{token}"));
                replaced = true;
            }
        } else {
            lines.push(line.to_string());
        }
    }
    if !replaced {
        lines.push(format!("{user}:{token}"));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Directories made here are the user's alone (the token file is 0600 inside).
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "credentials".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // The mode above only applies to new files; a stale temp file keeps its own.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(lines.join("\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mito-cred-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("sub").join("credentials")
    }

    #[test]
    fn store_creates_replaces_and_keeps_the_format() {
        let p = temp("fmt");
        store(&p, "alice", "t1").unwrap();
        store(&p, "bob", "t2").unwrap();
        store(&p, "alice", "t3").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "alice:t3\nbob:t2");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn load_picks_the_user_or_the_first_line() {
        let p = temp("load");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "garbage\nalice:tok:with:colons\nbob:b64==").unwrap();
        assert_eq!(load(&p, None), Some(("alice".into(), "tok:with:colons".into())));
        assert_eq!(load(&p, Some("bob")), Some(("bob".into(), "b64==".into())));
        assert_eq!(load(&p, Some("carol")), None);
        assert_eq!(load(&p.with_file_name("missing"), None), None);
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn store_tightens_an_existing_loose_file() {
        let p = temp("mode");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "old:x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        store(&p, "alice", "t").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old:x\nalice:t");
        assert!(store(&p, "a:b", "t").is_err());
        let _ = std::fs::remove_dir_all(p.parent().unwrap().parent().unwrap());
    }
}
