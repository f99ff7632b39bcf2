//! The terminal, for the prompts of the worker and the client: reading a line with echo
//! off, and echo back on however the read ends.
//!
//! ```ignore
//! let password = terminal::prompt_line("Password: ", true)?;
//! ```

use std::io::{BufRead, Write};
use std::os::fd::RawFd;

/// Terminal echo switched off on a descriptor until dropped: the settings come back on every
/// way out of a prompt (a read error, an early return, a panic), not only the happy one.
pub(crate) struct EchoOff {
    fd: RawFd,
    saved: libc::termios,
}

impl EchoOff {
    /// Turns echo off on `fd`; None when `fd` is not a terminal (there is nothing to hide
    /// and nothing to restore).
    pub(crate) fn on(fd: RawFd) -> Option<EchoOff> {
        // SAFETY: tcgetattr fills the zeroed struct or fails; tcsetattr reads the struct
        // it was given. Neither keeps a pointer.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff { fd, saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `on`, on the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Prints `label` on stderr and reads one line from stdin, without echo when `hidden` (and
/// then ends the prompt's line on stderr, since the user's Enter was not echoed either).
/// Returns the line without its line ending; None at the end of input.
pub(crate) fn prompt_line(label: &str, hidden: bool) -> std::io::Result<Option<String>> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let guard = if hidden { EchoOff::on(libc::STDIN_FILENO) } else { None };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if guard.is_some() {
        drop(guard);
        let _ = writeln!(err);
    }
    if read? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal pair: (controller, terminal side).
    fn pty() -> (RawFd, RawFd) {
        let (mut controller, mut term) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the given ints; the other pointers may be null.
        let r = unsafe {
            libc::openpty(&mut controller, &mut term, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        (controller, term)
    }

    fn echo_is_on(fd: RawFd) -> bool {
        // SAFETY: tcgetattr fills the zeroed struct.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(fd, &mut t), 0);
            t.c_lflag & libc::ECHO != 0
        }
    }

    #[test]
    fn echo_is_off_while_the_guard_lives_and_back_after() {
        let (controller, term) = pty();
        assert!(echo_is_on(term), "a new pseudo-terminal echoes");
        let guard = EchoOff::on(term).expect("a pseudo-terminal is a terminal");
        assert!(!echo_is_on(term));
        drop(guard);
        assert!(echo_is_on(term));
        // A panic while the guard lives (an error path) restores it too.
        let r = std::panic::catch_unwind(|| {
            let _guard = EchoOff::on(term);
            assert!(!echo_is_on(term));
            panic!("reading failed");
        });
        assert!(r.is_err());
        assert!(echo_is_on(term));
        // SAFETY: closing the two descriptors opened above.
        unsafe {
            libc::close(term);
            libc::close(controller);
        }
    }

    #[test]
    fn no_guard_on_what_is_not_a_terminal() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(EchoOff::on(std::os::fd::AsRawFd::as_raw_fd(&file)).is_none());
    }
}
