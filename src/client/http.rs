//! Talking to the coordinator: JSON in, JSON (or text) out, and errors turned into one line
//! that says what failed and what the server said.
//!
//! ```ignore
//! use mito::client::http::Http;
//! let tls = mito::tls::Tls::new(None, |m| eprintln!("warning: {m}")).unwrap();
//! let mut h = Http::new("http://127.0.0.1:5000", &tls);
//! h.token = Some("...".into());
//! let groups = h.get("/users/groups").unwrap();
//! println!("{}", groups.json().unwrap());
//! ```

use super::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// Largest reply we read from the coordinator (batch download lists can be long).
const MAX_REPLY: u64 = 256 << 20;

/// Longest a request to the coordinator may take, answer included.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(120);

/// The client's one agent, for the coordinator and for object storage: a stalled connection
/// fails, but there is no overall deadline (a transfer may take hours); requests to the
/// coordinator add [`COORDINATOR_TIMEOUT`].
pub(crate) fn agent(tls: &crate::tls::Tls) -> ureq::Agent {
    tls.agent_builder()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(120))
        .timeout_write(Duration::from_secs(120))
        .build()
}

/// A handle on one coordinator, with the caller's token.
#[derive(Clone)]
pub(crate) struct Http {
    pub base: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

/// A successful reply.
pub(crate) struct Reply {
    /// What was asked ("POST /tasks"), for messages.
    what: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON; an empty body is `null`.
    pub(crate) fn json(&self) -> Result<Value, Error> {
        if self.body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|e| self.unexpected(e))
    }

    /// The body as a wire type.
    pub(crate) fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.body).map_err(|e| self.unexpected(e))
    }

    fn unexpected(&self, e: serde_json::Error) -> Error {
        Error::Failed(format!(
            "the coordinator's reply to {} is not what this client expects ({e}); are client and coordinator compatible versions?",
            self.what
        ))
    }
}

/// Parses a JSON value (already fetched) as a wire type, for output code.
pub(crate) fn typed<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T, Error> {
    T::deserialize(v)
        .map_err(|e| Error::Failed(format!("the coordinator's reply to {what} is not what this client expects ({e})")))
}

impl Http {
    pub(crate) fn new(base: &str, tls: &crate::tls::Tls) -> Http {
        Http { base: base.trim_end_matches('/').to_string(), token: None, agent: agent(tls) }
    }

    /// The agent, for transfers to and from object storage.
    pub(crate) fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    pub(crate) fn get(&self, path: &str) -> Result<Reply, Error> {
        self.send("GET", path, None::<&()>)
    }

    pub(crate) fn delete(&self, path: &str) -> Result<Reply, Error> {
        self.send("DELETE", path, None::<&()>)
    }

    pub(crate) fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Reply, Error> {
        self.send("POST", path, Some(body))
    }

    pub(crate) fn put<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Reply, Error> {
        self.send("PUT", path, Some(body))
    }

    /// One request. Non-2xx replies become `Error::Http` with the server's message.
    pub(crate) fn send<B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Reply, Error> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut req = self.agent.request(method, &format!("{}{path}", self.base)).timeout(COORDINATOR_TIMEOUT);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => {
                let text = serde_json::to_string(b)
                    .map_err(|e| Error::Failed(format!("cannot encode the request for {what}: {e}")))?;
                req.set("Content-Type", "application/json").send_string(&text)
            }
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(Reply { body: read_body(resp, &what)?, what }),
            Err(ureq::Error::Status(status, resp)) => {
                let reason = resp.status_text().to_string();
                let body = read_body(resp, &what).unwrap_or_default();
                Err(Error::Http { call: what, status, reason, message: server_message(&body) })
            }
            Err(ureq::Error::Transport(t)) => Err(Error::Transport(transport_message(&self.base, &t))),
        }
    }
}

impl Http {
    /// A request whose status the caller wants to see, whatever it is; only a failure to
    /// talk to the coordinator is an error.
    pub(crate) fn status_of(&self, method: &str, path: &str) -> Result<(u16, String), Error> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base)).timeout(COORDINATOR_TIMEOUT);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let what = format!("{method} {path}");
        match req.call() {
            Ok(r) => Ok((r.status(), read_body(r, &what)?)),
            Err(ureq::Error::Status(code, r)) => Ok((code, read_body(r, &what).unwrap_or_default())),
            Err(ureq::Error::Transport(t)) => Err(Error::Transport(transport_message(&self.base, &t))),
        }
    }
}

fn read_body(resp: ureq::Response, what: &str) -> Result<String, Error> {
    let mut s = String::new();
    resp.into_reader()
        .take(MAX_REPLY)
        .read_to_string(&mut s)
        .map_err(|e| Error::Transport(format!("reading the reply to {what}: {e}")))?;
    Ok(s)
}

/// `{"msg": ...}` bodies give their message; framework errors are plain text; empty says so.
pub(crate) fn server_message(body: &str) -> String {
    if let Ok(m) = serde_json::from_str::<crate::api::ErrorMsg>(body) {
        return m.msg;
    }
    let t = body.trim();
    if t.is_empty() {
        "(no message)".into()
    } else {
        t.chars().take(500).collect()
    }
}

/// A connection problem, with the coordinator's address and the likely fix.
pub(crate) fn transport_message(base: &str, t: &ureq::Transport) -> String {
    use ureq::ErrorKind;
    if let Some(m) = crate::tls::explain(t) {
        return format!("cannot talk to the coordinator: {m}");
    }
    let cause = std::error::Error::source(t).map(|e| e.to_string()).or_else(|| t.message().map(str::to_string));
    match t.kind() {
        ErrorKind::ConnectionFailed | ErrorKind::Dns => format!(
            "cannot connect to the coordinator at {base}: {}; is it running? (set the address with --coordinator or MITO_COORDINATOR_ADDR)",
            cause.unwrap_or_else(|| "connection failed".into())
        ),
        _ => format!("talking to the coordinator at {base}: {t}"),
    }
}

/// Percent-encodes a path segment (or a key whose `/` are kept as separators).
pub(crate) fn enc(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_json_or_text() {
        assert_eq!(server_message(r#"{"msg":"Task with uuid x not found"}"#), "Task with uuid x not found");
        assert_eq!(
            server_message("Header of type `authorization` was missing"),
            "Header of type `authorization` was missing"
        );
        assert_eq!(server_message(""), "(no message)");
    }

    #[test]
    fn keys_are_encoded_but_keep_their_slashes() {
        assert_eq!(enc("a b/c%d", true), "a%20b/c%25d");
        assert_eq!(enc("a/b", false), "a%2Fb");
    }
}
