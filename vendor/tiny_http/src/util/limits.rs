//! Per-connection limits (mito patch): how long a client may take, how much it may send
//! before a request is parsed, and what happens to a body the handler did not read.
//!
//! One `ConnState` is shared by the connection thread, the socket reader and the request
//! handed to the application. Access to the socket is already sequential (one reader at a
//! time), so the phase recorded here is the phase of whoever reads next.

use std::io::{Error as IoError, ErrorKind, Result as IoResult};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::body_budget::BodyBudget;

/// The limits a server applies to every connection.
#[derive(Debug, Clone)]
pub struct Limits {
    /// From the first socket read of a request to the end of its headers. An idle
    /// keep-alive connection is closed when this runs out.
    pub header_timeout: Duration,
    /// Longest wait for any progress while reading a body or writing a response.
    pub body_timeout: Duration,
    /// Open connections at once; beyond it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Longest request line and longest header line, CRLF excluded.
    pub max_line: usize,
    /// All header lines of one request together.
    pub max_header_bytes: usize,
    /// An unread body up to this size is skipped so the connection can be reused; a
    /// larger one (or an unfinished chunked body) closes the connection instead.
    pub drain_limit: usize,
    /// A body up to this size (by Content-Length, or a chunked body up to this size) is
    /// read on the connection's own thread before the request is handed out, so a slow
    /// client holds its connection thread and never the application's thread.
    pub prebuffer: usize,
    /// All bodies read ahead (see `prebuffer`) on all connections together, in bytes. A
    /// connection thread reserves a body's size before reading it and waits at most
    /// `body_timeout` for room; otherwise the request gets 503 and the connection is
    /// closed. Bodies over 64 KiB may use only seven eighths of it (the rest is kept for
    /// small requests), so it should be at least `prebuffer` × 8/7, or the largest bodies
    /// never fit.
    pub body_memory: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_line: 8 * 1024,
            max_header_bytes: 64 * 1024,
            drain_limit: 64 * 1024,
            prebuffer: 64 * 1024,
            body_memory: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading headers; the deadline starts at the first socket read.
    Header(Option<Instant>),
    Body,
}

/// What is left of the current request's body on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    Nothing,
    Bytes(usize),
    /// A chunked or upgraded body that was not read to its end.
    Unknown,
}

pub(crate) struct ConnState {
    pub(crate) limits: Limits,
    /// Shared by all connections of the server.
    pub(crate) budget: Arc<BodyBudget>,
    phase: Mutex<Phase>,
    unread: Mutex<Unread>,
    /// mito patch: the descriptor of the connection's write half, which every unanswered
    /// request of the connection keeps open through its response writer.
    #[cfg(unix)]
    peer_fd: std::sync::OnceLock<std::os::fd::RawFd>,
}

/// A poisoned lock only means another thread panicked while holding it; the plain data
/// inside is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnState {
    pub(crate) fn new(limits: Limits, budget: Arc<BodyBudget>) -> ConnState {
        ConnState {
            limits,
            budget,
            phase: Mutex::new(Phase::Header(None)),
            unread: Mutex::new(Unread::Nothing),
            #[cfg(unix)]
            peer_fd: std::sync::OnceLock::new(),
        }
    }

    #[cfg(unix)]
    pub(crate) fn set_peer_fd(&self, fd: std::os::fd::RawFd) {
        let _ = self.peer_fd.set(fd);
    }

    #[cfg(unix)]
    pub(crate) fn peer_fd(&self) -> Option<std::os::fd::RawFd> {
        self.peer_fd.get().copied()
    }

    pub(crate) fn start_header(&self) {
        *lock(&self.phase) = Phase::Header(None);
    }

    pub(crate) fn start_body(&self) {
        *lock(&self.phase) = Phase::Body;
    }

    /// Whether a body is being read (for the message of a timeout).
    pub(crate) fn in_body(&self) -> bool {
        matches!(*lock(&self.phase), Phase::Body)
    }

    /// The read timeout for the next socket read, or TimedOut once the header deadline
    /// has passed.
    pub(crate) fn read_timeout(&self) -> IoResult<Duration> {
        let mut phase = lock(&self.phase);
        match *phase {
            Phase::Body => Ok(self.limits.body_timeout),
            Phase::Header(None) => {
                *phase = Phase::Header(Some(Instant::now() + self.limits.header_timeout));
                Ok(self.limits.header_timeout)
            }
            Phase::Header(Some(deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(IoError::new(
                        ErrorKind::TimedOut,
                        "request headers took too long",
                    ))
                } else {
                    Ok(left)
                }
            }
        }
    }

    pub(crate) fn set_unread(&self, unread: Unread) {
        *lock(&self.unread) = unread;
    }

    pub(crate) fn take_unread(&self) -> Unread {
        std::mem::replace(&mut *lock(&self.unread), Unread::Nothing)
    }

    /// Whether the connection will be closed after the current response, because its
    /// body is left unread beyond what is worth skipping.
    pub(crate) fn closes_after_response(&self) -> bool {
        match *lock(&self.unread) {
            Unread::Nothing => false,
            Unread::Bytes(n) => n > self.limits.drain_limit,
            Unread::Unknown => true,
        }
    }
}
