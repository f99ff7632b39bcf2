//! Whether the client of a parked request is still connected, asked without reading from
//! its connection.
//!
//! A long-poll fetch waits in the scheduler's list while no thread reads its connection;
//! if the worker dies meanwhile, its kernel closes the connection (FIN, or RST), and a
//! task claimed for that fetch would be answered to nobody. A non-blocking
//! `recv(MSG_PEEK)` sees that: 0 bytes means the peer closed its end, `ECONNRESET` that it
//! reset it, `EAGAIN` that it is there and quiet.
//!
//! tiny_http does not hand out a request's socket, so it is found once, when the fetch
//! parks, among this process's descriptors by its two addresses, and remembered with its
//! inode so a descriptor closed and reused meanwhile is never mistaken for it. tiny_http
//! holds two descriptors per connection (its reader thread closes its own when it reads
//! the end of the stream; the request keeps the writer's): all of them are kept, and any
//! one still open tells. When it
//! cannot be found, or the answer is unclear, the connection counts as alive: the claim
//! lease (README: Extensions, claim leases) covers what the peek cannot see (a host that vanished
//! without closing anything).
//!
//! ```ignore
//! let sock = peer::find(*req.remote_addr().unwrap(), 5000); // when parking
//! if sock.is_some_and(|s| s.closed()) { /* drop the fetch instead of claiming for it */ }
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

/// Descriptors looked at when searching; a process with more is not searched further
/// (the lease still applies).
const MAX_FDS: usize = 65_536;

/// The socket a parked request arrived on.
pub struct PeerSocket {
    /// Its descriptors, each with the (device, inode) of the socket when found.
    fds: Vec<(RawFd, (u64, u64))>,
}

/// Descriptors of one connection worth keeping (tiny_http has two).
const MAX_CLONES: usize = 4;

/// The connected socket whose remote end is `peer` and whose local port is `local_port`
/// (0: any local port).
pub fn find(peer: SocketAddr, local_port: u16) -> Option<PeerSocket> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut fds = Vec::new();
    for entry in dir.take(MAX_FDS).flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else { continue };
        if address(fd, Side::Peer) != Some(peer) {
            continue;
        }
        if local_port != 0 && address(fd, Side::Local).map(|a| a.port()) != Some(local_port) {
            continue;
        }
        if let Some(id) = identity(fd) {
            fds.push((fd, id));
            if fds.len() == MAX_CLONES {
                break;
            }
        }
    }
    (!fds.is_empty()).then_some(PeerSocket { fds })
}

impl PeerSocket {
    /// True only when the peer has closed or reset the connection.
    pub fn closed(&self) -> bool {
        self.fds.iter().any(|&(fd, id)| identity(fd) == Some(id) && peer_gone(fd))
    }
}

/// What a non-blocking peek says about the connection on `fd`.
fn peer_gone(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in the socket and
    // MSG_DONTWAIT never blocks.
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

fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: fstat fills a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

enum Side {
    Peer,
    Local,
}

fn address(fd: RawFd, side: Side) -> Option<SocketAddr> {
    // SAFETY: the kernel writes at most `len` bytes into storage we own, sized for any
    // address family; it is read back only as the family it reports.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
        let rc = match side {
            Side::Peer => libc::getpeername(fd, p, &mut len),
            Side::Local => libc::getsockname(fd, p, &mut len),
        };
        if rc != 0 {
            return None;
        }
        match ss.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(SocketAddr::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                let a = &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(SocketAddr::new(Ipv6Addr::from(a.sin6_addr.s6_addr).into(), u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_closed_peer_is_seen_and_a_quiet_one_is_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server_side, from) = l.accept().unwrap();
        let s = find(from, port).expect("the accepted socket is found");
        assert!(!s.closed(), "connected and quiet");
        client.write_all(b"").unwrap();
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !s.closed() {
            assert!(std::time::Instant::now() < deadline, "the close is seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(find(from, port.wrapping_add(1)).is_none(), "the local port must match");
    }
}
