//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;
pub use util::Limits;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
#[allow(dead_code)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, Limits::default())
    }

    /// mito patch: like `from_listener`, with explicit limits on time, sizes and
    /// connections.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: Limits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let accept_thread = thread::Builder::new().name("http-accept".into());
        accept_thread.spawn(move || {
            // a tasks pool is used to dispatch the connections into threads
            let tasks_pool = Arc::new(util::TaskPool::new());
            let open = Arc::new(AtomicUsize::new(0));
            // mito patch: one read-ahead memory budget for all connections.
            let budget = util::BodyBudget::new(limits.body_memory);
            let mut failures: u32 = 0;

            log::debug!("Running accept thread");
            while !inside_close_trigger.load(Relaxed) {
                // mito patch: nothing that goes wrong with one connection (a panic
                // included) stops the loop; only closing the server does.
                let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    accept_one(
                        &server,
                        &ssl,
                        &limits,
                        &budget,
                        &open,
                        &tasks_pool,
                        &inside_messages,
                        &inside_close_trigger,
                    )
                }));
                match step {
                    Ok(Ok(())) => {
                        if failures > 0 {
                            log::warn!(
                                "accepting connections again after {} failed attempts",
                                failures
                            );
                            failures = 0;
                        }
                    }
                    Ok(Err(e)) => {
                        // EMFILE/ENFILE and the like: the pending connection stays in the
                        // backlog; wait for resources to come back instead of spinning or
                        // giving up.
                        if failures == 0 {
                            log::error!(
                                "cannot accept a connection: {}; retrying with back-off",
                                e
                            );
                        }
                        failures = failures.saturating_add(1);
                        thread::sleep(Duration::from_millis(10u64 << failures.min(5)));
                    }
                    Err(_) => {
                        log::error!("the accept loop panicked; it carries on");
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            log::debug!("Terminating accept thread");
        })?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

#[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
type SslContext = ();
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
type SslContext = crate::ssl::SslContextImpl;

/// mito patch: the rest of the connections beyond `max_connections` get this and are closed.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 53\r\n\r\ntoo many open connections; try again in a little while";

/// Counts an open connection until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// mito patch: accepts one connection and hands it to a connection thread, under the
/// connection cap and with the connection's timeouts set.
fn accept_one(
    server: &Listener,
    ssl: &Option<SslContext>,
    limits: &Limits,
    budget: &Arc<util::BodyBudget>,
    open: &Arc<AtomicUsize>,
    tasks_pool: &Arc<util::TaskPool>,
    messages: &Arc<MessagesQueue<Message>>,
    close: &AtomicBool,
) -> IoResult<()> {
    let (sock, _) = server.accept()?;
    if close.load(Relaxed) {
        return Ok(());
    }
    if open.load(Relaxed) >= limits.max_connections {
        refuse_overloaded(sock);
        return Ok(());
    }
    let counted = OpenConnection(open.clone());
    open.fetch_add(1, Relaxed);
    // Writes wait at most body_timeout for progress; reads set their own timeout per phase.
    sock.set_write_timeout(Some(limits.body_timeout)).ok();
    let state = Arc::new(util::ConnState::new(limits.clone(), budget.clone()));

    use util::RefinedTcpStream;
    let (read_closable, write_closable) = match ssl {
        None => match RefinedTcpStream::try_new(sock, Some(state.clone())) {
            Ok(halves) => halves,
            Err(e) => {
                log::warn!("cannot set up a connection: {}", e);
                return Ok(());
            }
        },
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        Some(ref ssl) => {
            // trying to apply SSL over the connection
            // if an error occurs, we just close the socket and resume listening
            let sock = match ssl.accept(sock) {
                Ok(s) => s,
                Err(_) => return Ok(()),
            };
            match RefinedTcpStream::try_new(sock, Some(state.clone())) {
                Ok(halves) => halves,
                Err(_) => return Ok(()),
            }
        }
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        Some(ref _ssl) => unreachable!(),
    };

    let client = ClientConnection::new(write_closable, read_closable, state);
    let messages = messages.clone();
    let mut client = Some((client, counted));
    let pool = Arc::downgrade(tasks_pool);
    tasks_pool.spawn(Box::new(move || {
        if let Some((client, counted)) = client.take() {
            // Synchronization is needed for HTTPS requests to avoid a deadlock
            if client.secure() {
                let _counted = counted;
                let (sender, receiver) = mpsc::channel();
                for rq in client {
                    messages.push(rq.with_notify_sender(sender.clone()).into());
                    if receiver.recv().is_err() {
                        break;
                    }
                }
            } else {
                serve_next(client, counted, messages.clone(), pool.clone());
            }
        }
    }));
    Ok(())
}

/// mito patch: reads the connection's next request and hands it out; the connection goes
/// on (this function again, as a task of the pool) only once that request is over. No
/// thread is held while a request waits: a long poll parked by the application for
/// minutes costs its connection's buffers, not a thread with its stack. Without a pool
/// (the server is gone) the connection ends after its request.
fn serve_next(
    mut client: ClientConnection,
    counted: OpenConnection,
    messages: Arc<MessagesQueue<Message>>,
    pool: std::sync::Weak<util::TaskPool>,
) {
    let Some(rq) = client.next() else { return };
    let queue = messages.clone();
    let then = move || {
        if let Some(p) = pool.upgrade() {
            let mut rest = Some((client, counted, messages, pool));
            p.spawn(Box::new(move || {
                if let Some((client, counted, messages, pool)) = rest.take() {
                    serve_next(client, counted, messages, pool);
                }
            }));
        }
    };
    queue.push(rq.with_then(Box::new(then)).into());
}

/// Answers 503 without blocking the accept loop (a fresh socket's send buffer takes the
/// few bytes at once), then closes.
fn refuse_overloaded(sock: Connection) {
    use std::io::{Read, Write};
    let mut sock = sock;
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    // What the client already sent is read first, so closing does not reset the
    // connection before the answer is read.
    let mut sink = [0u8; 4096];
    let _ = sock.read(&mut sink);
    let _ = sock.write(OVERLOADED);
    let _ = sock.shutdown(Shutdown::Write);
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
