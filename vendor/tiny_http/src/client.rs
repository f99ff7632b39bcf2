use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use crate::common::{HTTPVersion, Method};
use crate::util::{ConnState, RefinedTcpStream, Unread};
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // mito patch: timeouts, size caps and what is left of the previous body
    state: Arc<ConnState>,

    // mito patch: disconnects when the previous request is dropped (answered)
    previous_done: Option<crate::util::handoff::Take<()>>,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
    /// mito patch: the request line is longer than `max_line` (414).
    RequestLineTooLong,
    /// mito patch: a header line is longer than `max_line`, or all headers together are
    /// larger than `max_header_bytes` (431).
    HeadersTooLarge(HTTPVersion),
    /// mito patch: ambiguous or malformed body framing (400).
    BadFraming(HTTPVersion, &'static str),
    /// mito patch: a transfer coding other than chunked (501).
    UnsupportedEncoding(HTTPVersion),
    /// mito patch: no room in the read-ahead memory budget within body_timeout (503).
    Busy(HTTPVersion),
    /// mito patch: end the connection without a word: it was idle past the header
    /// timeout, or the previous body cannot be skipped.
    Close,
}

/// Why reading a line stopped early.
enum LineError {
    Io(IoError),
    TooLong,
}

impl ClientConnection {
    /// mito patch: `state` carries the connection's limits.
    pub(crate) fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        state: Arc<ConnState>,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().expect("the builder always yields a reader");

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            state,
            previous_done: None,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads a line terminated by CRLF, of at most `max` bytes before the CRLF; `*got`
    /// is raised by the bytes read.
    ///
    /// mito patch: the line is searched for where the buffered reader holds it and
    /// copied in one piece; only the line and its CRLF are consumed. Reading it one byte
    /// a call through the reader chain cost some 50,000 instructions for the headers of a
    /// small request. What counts as a line, and when one is too long, are as before: a
    /// lone `\n` is part of the line, and the line may reach `max` bytes plus its CRLF.
    fn read_next_line(&mut self, max: usize, got: &mut usize) -> Result<AsciiString, LineError> {
        // Everything consumed of the line so far: at most `max` bytes, and a `\r` that
        // may start the CRLF.
        let mut buf: Vec<u8> = Vec::new();

        loop {
            let available = loop {
                match self.next_header_source.fill_buf() {
                    Ok(b) => break b,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(LineError::Io(e)),
                }
            };
            if available.is_empty() {
                return Err(LineError::Io(IoError::new(
                    ErrorKind::ConnectionAborted,
                    "Unexpected EOF",
                )));
            }

            // No line end lies beyond `max` bytes and a CRLF.
            let room = (max + 2).saturating_sub(buf.len());
            let scan = &available[..available.len().min(room)];
            let cr_before = buf.last() == Some(&b'\r');
            let end = scan
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i)
                .find(|&i| if i == 0 { cr_before } else { scan[i - 1] == b'\r' });
            let used = end.map_or(scan.len(), |i| i + 1);
            buf.extend_from_slice(&scan[..used]);
            self.next_header_source.consume(used);
            *got += used;

            if end.is_some() {
                buf.truncate(buf.len() - 2); // removing the CRLF
                return AsciiString::from_ascii(buf).map_err(|_| {
                    LineError::Io(IoError::new(
                        ErrorKind::InvalidInput,
                        "Header is not in ASCII",
                    ))
                });
            }
            // mito patch: a line without end no longer grows without bound ('\r' may
            // still be followed by the '\n' that ends the line, so it gets one byte more).
            if buf.len() > max + usize::from(buf.last() == Some(&b'\r')) {
                return Err(LineError::TooLong);
            }
        }
    }

    /// mito patch: waits until the previous request is answered (or dropped) and its body
    /// reader is gone. Only then does the header clock of the next request start (a
    /// parked long-poll may take longer than `header_timeout`), and only then does the
    /// connection leave the connection cap after its last request.
    fn wait_previous(&mut self) {
        if let Some(done) = self.previous_done.take() {
            // None once the giver is dropped with its request: the expected end.
            let _ = done.take();
        }
        self.next_header_source.wait_turn();
    }

    /// mito patch: before the next request, what the previous one left of its body is
    /// skipped through a small buffer (on this connection's own thread, never on the
    /// thread that answered), or the connection is closed when that is too much.
    fn skip_unread_body(&mut self) -> Result<(), ReadError> {
        let left = match self.state.take_unread() {
            Unread::Nothing => return Ok(()),
            Unread::Bytes(n) if n <= self.state.limits.drain_limit => n,
            Unread::Bytes(_) | Unread::Unknown => return Err(ReadError::Close),
        };
        self.state.start_body();
        let mut buf = [0u8; 4096];
        let mut left = left;
        while left > 0 {
            let want = left.min(buf.len());
            match self.next_header_source.read(&mut buf[..want]) {
                Ok(0) | Err(_) => return Err(ReadError::Close),
                Ok(n) => left -= n,
            }
        }
        Ok(())
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        self.wait_previous();
        self.skip_unread_body()?;
        self.state.start_header();
        let max_line = self.state.limits.max_line;
        let max_header_bytes = self.state.limits.max_header_bytes;

        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let mut got = 0;
                let line = match self.read_next_line(max_line, &mut got) {
                    Ok(line) => line,
                    Err(LineError::TooLong) => return Err(ReadError::RequestLineTooLong),
                    // Nothing of a request arrived: an idle connection ends quietly.
                    Err(LineError::Io(_)) if got == 0 => return Err(ReadError::Close),
                    Err(LineError::Io(e)) => return Err(ReadError::ReadIoError(e)),
                };

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                let mut total = 0;
                loop {
                    let line = match self.read_next_line(max_line, &mut total) {
                        Ok(line) => line,
                        Err(LineError::TooLong) => return Err(ReadError::HeadersTooLarge(version)),
                        Err(LineError::Io(e)) => return Err(ReadError::ReadIoError(e)),
                    };
                    if total > max_header_bytes {
                        return Err(ReadError::HeadersTooLarge(version));
                    }

                    if line.is_empty() {
                        break;
                    };
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        self.state.start_body();

        // building the writer for the request
        let writer = self
            .sink
            .next()
            .expect("the builder always yields a writer");

        // follow-up for next potential request
        let mut data_source = self
            .source
            .next()
            .expect("the builder always yields a reader");
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            // mito patch: a client gone before its address was read is no reason to panic
            self.remote_addr.as_ref().ok().copied().flatten(),
            data_source,
            writer,
            Some(self.state.clone()),
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version.clone())
                }
                request::RequestCreationError::BadFraming(why) => {
                    ReadError::BadFraming(version.clone(), why)
                }
                request::RequestCreationError::UnsupportedEncoding => {
                    ReadError::UnsupportedEncoding(version.clone())
                }
                request::RequestCreationError::Busy => ReadError::Busy(version.clone()),
            }
        })?;

        let (done, previous_done) = crate::util::handoff::handoff();
        self.previous_done = Some(previous_done);

        // return the request
        Ok(request.with_done_sender(done))
    }

    /// mito patch: answers a request that cannot be served and closes the connection.
    fn refuse(&mut self, status: u16, version: HTTPVersion, why: &str) {
        use crate::{Response, StatusCode};
        let writer = self
            .sink
            .next()
            .expect("the builder always yields a writer");
        let response = Response::from_string(format!("{}\n", why))
            .with_status_code(StatusCode(status))
            .closing();
        response.raw_print(writer, version, &[], false, None).ok();
    }
}

impl ClientConnection {
    /// mito patch: like `refuse` with 503 and a `Retry-After`, so well-behaved clients
    /// back off instead of retrying at once.
    fn refuse_busy(&mut self, version: HTTPVersion, why: &str) {
        use crate::{Header, Response, StatusCode};
        let writer = self
            .sink
            .next()
            .expect("the builder always yields a writer");
        let mut response = Response::from_string(format!("{}\n", why))
            .with_status_code(StatusCode(503))
            .closing();
        if let Ok(h) = Header::from_bytes(&b"Retry-After"[..], &b"1"[..]) {
            response.add_header(h);
        }
        response.raw_print(writer, version, &[], false, None).ok();
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            // mito patch: the connection (its thread, and its place under the connection
            // cap) lasts until its last request is answered, so requests that close their
            // connection cannot pile up in the queue beyond the cap.
            self.wait_previous();
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    self.refuse(
                        400,
                        HTTPVersion(1, 1),
                        "the request line is not METHOD PATH HTTP/1.x",
                    );
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    self.refuse(400, ver, "a header line is not NAME: VALUE");
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::RequestLineTooLong) => {
                    let why = format!(
                        "the request line is longer than {} bytes; shorten the URL",
                        self.state.limits.max_line
                    );
                    self.refuse(414, HTTPVersion(1, 1), &why);
                    return None;
                }

                Err(ReadError::HeadersTooLarge(ver)) => {
                    let why = format!(
                        "request headers are limited to {} bytes a line and {} bytes in all",
                        self.state.limits.max_line, self.state.limits.max_header_bytes
                    );
                    self.refuse(431, ver, &why);
                    return None;
                }

                Err(ReadError::BadFraming(ver, why)) => {
                    self.refuse(
                        400,
                        ver,
                        &format!(
                            "{}: send one Content-Length, or Transfer-Encoding: chunked alone",
                            why
                        ),
                    );
                    return None;
                }

                Err(ReadError::UnsupportedEncoding(ver)) => {
                    self.refuse(501, ver, "only Transfer-Encoding: chunked is supported");
                    return None;
                }

                Err(ReadError::Busy(ver)) => {
                    // mito patch: the read-ahead memory budget stayed full for
                    // body_timeout; the body is left unread, so the connection ends.
                    let why = format!(
                        "the server is short of memory for request bodies (the {} bytes of \
                         read-ahead for all connections are in use); try again in a little while",
                        self.state.limits.body_memory
                    );
                    self.refuse_busy(ver, &why);
                    return None;
                }

                Err(ReadError::Close) => return None,

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout
                    let why = if self.state.in_body() {
                        format!(
                            "the request body made no progress for {:?}",
                            self.state.limits.body_timeout
                        )
                    } else {
                        format!(
                            "the request headers did not arrive within {:?}",
                            self.state.limits.header_timeout
                        )
                    };
                    self.refuse(408, HTTPVersion(1, 1), &why);
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self
                        .sink
                        .next()
                        .expect("the builder always yields a writer");
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self
                    .sink
                    .next()
                    .expect("the builder always yields a writer");
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
