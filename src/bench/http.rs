//! The bench's HTTP client: a hand-written HTTP/1.1 keep-alive connection ([`Wire`]) and
//! the shared connection the bench's own setup calls go through ([`Http`]).

use super::error::BenchError;
use std::time::Duration;

/// The bench's own calls (setup, submits, cleanup), over one [`Wire`].
pub(super) struct Http {
    wire: std::sync::Mutex<Wire>,
}

impl Http {
    pub(super) fn new(base: &str) -> Result<Http, BenchError> {
        Ok(Http { wire: std::sync::Mutex::new(Wire::new(base)?) })
    }

    /// A call with a JSON body (or none) and a token (or "" for none); the answer as text.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, BenchError> {
        let body = body.map(serde_json::to_vec).transpose().map_err(BenchError::Encode)?;
        let answer = self.send(method, path, token, body.as_deref())?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// [`Wire::call`] on the bench's connection.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, BenchError> {
        let mut wire = self.wire.lock().map_err(|_| BenchError::Panicked("bench"))?;
        wire.call(method, path, token, body)
    }
}

/// A lean HTTP/1.1 keep-alive connection for the measured loops. The load runs on the same
/// cores as what it measures, so a simulated worker should cost about what a real one on
/// another machine costs the coordinator's host: nothing. ureq spent several times more
/// per request than this (URL parsing, header maps, pooling), which was taken from
/// the coordinator and PostgreSQL.
pub(super) struct Wire {
    addr: String,
    host: String,
    conn: Option<std::io::BufReader<std::net::TcpStream>>,
    out: Vec<u8>,
}

impl Wire {
    pub(super) fn new(base: &str) -> Result<Wire, BenchError> {
        let bad =
            |reason: &dyn std::fmt::Display| BenchError::Coordinator { base: base.into(), reason: reason.to_string() };
        let url = url::Url::parse(base).map_err(|e| bad(&e))?;
        if url.scheme() != "http" {
            return Err(bad(&"only http:// URLs can be measured"));
        }
        let host = url.host_str().ok_or_else(|| bad(&"no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Ok(Wire { host: addr.clone(), addr, conn: None, out: Vec::with_capacity(1024) })
    }

    /// Sends a request and returns the body of a 2xx answer; a connection the server closed
    /// while idle is reopened once.
    pub(super) fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, BenchError> {
        use std::io::Write;
        self.out.clear();
        let _ = write!(self.out, "{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !token.is_empty() {
            let _ = write!(self.out, "Authorization: Bearer {token}\r\n");
        }
        if let Some(b) = body {
            let _ = write!(self.out, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", b.len());
            self.out.extend_from_slice(b);
        } else {
            self.out.extend_from_slice(b"\r\n");
        }
        let fresh = self.conn.is_none();
        let call = || format!("{method} {path}");
        let answer = match self.exchange() {
            Err(_) if !fresh => self.exchange(),
            other => other,
        };
        match answer {
            Ok(Ok(body)) => Ok(body),
            Ok(Err((status, body))) => Err(BenchError::Status { call: call(), status, body }),
            Err(source) => Err(BenchError::Io { call: call(), source }),
        }
    }

    /// One request/response on the (re)opened connection: Ok(Err) for a non-2xx answer.
    fn exchange(&mut self) -> std::io::Result<Result<Vec<u8>, (u16, String)>> {
        use std::io::{BufRead, Read, Write};
        if self.conn.is_none() {
            let s = std::net::TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.conn = Some(std::io::BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("just opened");
        let result = (|| {
            conn.get_mut().write_all(&self.out)?;
            let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
            let mut line = String::new();
            if conn.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            let status: u16 =
                line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("bad status line"))?;
            let (mut length, mut chunked, mut close) = (None, false, false);
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.parse::<usize>().map_err(|_| bad("bad content-length"))?);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.eq_ignore_ascii_case("chunked");
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.eq_ignore_ascii_case("close");
                }
            }
            let mut body = Vec::new();
            if chunked {
                loop {
                    line.clear();
                    conn.read_line(&mut line)?;
                    let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| bad("bad chunk"))?;
                    let start = body.len();
                    body.resize(start + n, 0);
                    conn.read_exact(&mut body[start..])?;
                    line.clear();
                    conn.read_line(&mut line)?;
                    if n == 0 {
                        break;
                    }
                }
            } else if let Some(n) = length {
                body.resize(n, 0);
                conn.read_exact(&mut body)?;
            } else {
                conn.read_to_end(&mut body)?;
                close = true;
            }
            Ok((status, body, close))
        })();
        match result {
            Ok((status, body, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err((status, String::from_utf8_lossy(&body).into_owned()))
                })
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}
