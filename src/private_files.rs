//! Files only their owner may read: the local object store (other users' attachments and
//! artifacts) and the log file (which holds the shutdown secret) are created with mode
//! 0700 for directories and 0600 for files, whatever the umask.
//!
//! ```ignore
//! use mito::private_files;
//! private_files::create_dir_all("/tmp/store/a/b".as_ref()).unwrap(); // new ones are 0700
//! let f = private_files::append("/tmp/store/log".as_ref()).unwrap(); // 0600
//! ```

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;

/// `mkdir -p` with 0700 for every directory it creates (existing ones are left alone).
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
}

/// Sets 0700 on a directory this program owns (one an older version created 0755).
pub(crate) fn restrict_dir(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// A new file for writing, 0600 (fails if it exists).
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

/// A file opened for appending, created 0600; an existing one is set to 0600 too, since
/// whatever is appended next may be secret.
pub(crate) fn append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new().create(true).append(true).mode(FILE_MODE).open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

/// The first line of a secret file (without its line ending), reading at most `max` bytes:
/// a token or password kept out of command lines and configuration files.
pub(crate) fn read_first_line(path: &Path, max: usize) -> io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    File::open(path)?.take(max as u64 + 1).read_to_end(&mut buf)?;
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("its first line is longer than {max} bytes")));
    }
    String::from_utf8(line.to_vec()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}
