//! Whether the client of a parked request is still connected, asked without reading from
//! its connection.
//!
//! A long-poll fetch waits in the scheduler's list while no thread reads its connection;
//! if the worker dies meanwhile, its kernel closes the connection (FIN, or RST), and a
//! task claimed for that fetch would be answered to nobody. A non-blocking
//! `recv(MSG_PEEK)` sees that: 0 bytes means the peer closed its end, `ECONNRESET` that it
//! reset it, `EAGAIN` that it is there and quiet. The socket comes from the request itself
//! (a patch of the vendored tiny_http), which keeps it open while the request is
//! unanswered. When the answer is unclear, the connection counts as alive: the claim lease
//! covers what a peek cannot see (a host that vanished without closing anything).

/// True only when the client of the unanswered `req` has closed or reset its connection.
pub(crate) fn gone(req: &tiny_http::Request) -> bool {
    req.peer_socket_fd().is_some_and(peer_gone)
}

/// What a non-blocking peek says about the connection on `fd`.
fn peer_gone(fd: std::os::fd::RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: `fd` is open for as long as the caller holds the request it came from; the
    // buffer is ours; MSG_PEEK leaves any data in the socket and MSG_DONTWAIT never blocks.
    let n = unsafe { libc::recv(fd, byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ECONNRESET | libc::ENOTCONN | libc::EPIPE | libc::ETIMEDOUT)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_closed_peer_is_seen_and_a_quiet_one_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server_side, _) = l.accept().unwrap();
        assert!(!peer_gone(server_side.as_raw_fd()), "connected and quiet");
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !peer_gone(server_side.as_raw_fd()) {
            assert!(std::time::Instant::now() < deadline, "the close is seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
