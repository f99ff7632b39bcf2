//! SIGINT / SIGTERM delivered as messages on a channel.
//!
//! ```ignore
//! let signals = mito::signal::listen();
//! let sig = signals.recv().unwrap(); // blocks until SIGINT or SIGTERM arrives
//! ```
//!
//! The handler only writes the signal number to a pipe (async-signal-safe); a named thread
//! reads the pipe and forwards each number. No signal mask is changed, so child processes
//! start with default signal handling.

use crossbeam_channel::{unbounded, Receiver};
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe { libc::write(fd, &b as *const u8 as *const libc::c_void, 1) };
    }
}

/// Starts listening for SIGINT and SIGTERM; each one received is sent on the channel.
/// Call once per process.
pub(crate) fn listen() -> Receiver<i32> {
    let (tx, rx) = unbounded();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: plain FFI calls with valid pointers; the handler only uses write(2).
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            log::error!("cannot create the signal pipe: {}", std::io::Error::last_os_error());
            return rx;
        }
        libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        PIPE_WRITE.store(fds[1], Ordering::Relaxed);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    let read_fd = fds[0];
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local buffer from our own pipe.
        let n = unsafe { libc::read(read_fd, &mut b as *mut u8 as *mut libc::c_void, 1) };
        if n == 1 {
            if tx.send(i32::from(b)).is_err() {
                return;
            }
        } else if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}");
    }
    rx
}

/// The conventional name of a signal number, for logs.
pub(crate) fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}
