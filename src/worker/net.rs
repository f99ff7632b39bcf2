//! Talking to the coordinator and to storage URLs, with retries: connection errors and 5xx
//! answers are retried with capped exponential backoff and jitter until the call succeeds,
//! its deadline passes or the worker stops; everything else goes back to the caller.
//!
//! ```ignore
//! let resp = net.call("heartbeat", None, |a| net.post(a, "/workers/heartbeat").call())?;
//! ```
//!
//! A 401 from the coordinator means this worker is gone (removed, or its lifetime ended):
//! callers turn [`CallError::Unauthorized`] into the worker's exit.

use super::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Delays that double from `base` up to `cap`, each drawn from `[d/2, d]` so that many
/// workers retrying at once spread out.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    next: Duration,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { next: base, base, cap: cap.max(base) }
    }

    /// The delay before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.cap);
        let half = d / 2;
        let jitter = (uuid::Uuid::new_v4().as_u128() % half.as_millis().max(1)) as u64;
        half + Duration::from_millis(jitter)
    }

    /// Starts again from the base delay (after a success).
    pub(super) fn reset(&mut self) {
        self.next = self.base;
    }
}

/// Why a call gave up.
#[derive(Debug)]
pub(crate) enum CallError {
    /// 401: the coordinator no longer knows this worker.
    Unauthorized,
    /// Another 4xx answer, with the server's message.
    Status(u16, String),
    /// The deadline passed while the far end was unreachable.
    Timeout(String),
    /// The worker is stopping.
    Stopped,
    /// The answer could not be read or parsed.
    Bad(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unauthorized => {
                f.write_str("the coordinator answered 401 (this worker was removed or its lifetime ended)")
            }
            CallError::Status(s, m) => write!(f, "answered {s}: {m}"),
            CallError::Timeout(last) => write!(f, "gave up after retrying until the deadline (last error: {last})"),
            CallError::Stopped => f.write_str("the worker is stopping"),
            CallError::Bad(m) => f.write_str(m),
        }
    }
}

/// The worker's one agent, for the coordinator and for object storage: every call has a
/// deadline (uploads set a longer one of their own).
pub(super) fn agent(tls: &crate::tls::Tls) -> ureq::Agent {
    tls.agent_builder().timeout_connect(Duration::from_secs(10)).timeout(Duration::from_secs(120)).build()
}

/// A ureq error, described without the URL (a presigned URL carries its signature).
pub(super) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(s, _) => format!("HTTP status {s}"),
        ureq::Error::Transport(t) => super::login::transport(t),
    }
}

/// [`describe`], plus the reason an error answer gives (e.g. which dependency is down, or
/// a full disk): what the operator reading a retry line needs.
pub(super) fn explain(e: ureq::Error) -> String {
    match e {
        ureq::Error::Status(s, r) => {
            let body = r.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<crate::api::ErrorMsg>(&body).map(|m| m.msg).unwrap_or(body);
            let msg: String = clip(msg.trim()).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            if msg.is_empty() {
                format!("HTTP status {s}")
            } else {
                format!("HTTP status {s}: {msg}")
            }
        }
        e => describe(&e),
    }
}

/// A URL without its user-info's password and its query string (and so any signature),
/// for logs.
pub(super) fn redact(url: &str) -> String {
    crate::redact::url(url)
}

/// The coordinator's address and this worker's token, plus the retry policy.
pub(crate) struct Net {
    pub agent: ureq::Agent,
    pub base: String,
    token: String,
    pub shutdown: Arc<Shutdown>,
    /// The longest pause between two retries.
    pub retry_cap: Duration,
}

impl Net {
    pub(crate) fn new(
        agent: ureq::Agent,
        base: &str,
        token: String,
        shutdown: Arc<Shutdown>,
        retry_cap: Duration,
    ) -> Net {
        Net { agent, base: base.to_string(), token, shutdown, retry_cap }
    }

    /// A request to the coordinator, with the worker token.
    pub(crate) fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    /// Runs `send` until it gets an answer that is neither a connection error nor 5xx,
    /// sleeping with backoff in between. `what` names the call in logs.
    pub(crate) fn call(
        &self,
        what: &str,
        deadline: Option<Instant>,
        send: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, CallError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), self.retry_cap);
        loop {
            if self.shutdown.is_set() {
                return Err(CallError::Stopped);
            }
            let err = match send() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, _)) => return Err(CallError::Unauthorized),
                Err(ureq::Error::Status(s, r)) if s < 500 => {
                    let body = r.into_string().unwrap_or_default();
                    let msg = serde_json::from_str::<crate::api::ErrorMsg>(&body).map(|m| m.msg).unwrap_or(body);
                    return Err(CallError::Status(s, msg));
                }
                Err(e) => explain(e),
            };
            let delay = backoff.next_delay();
            if let Some(d) = deadline {
                if Instant::now() + delay >= d {
                    return Err(CallError::Timeout(err));
                }
            }
            log::warn!("{what} failed ({err}); retrying in {:.1}s", delay.as_secs_f64());
            if self.shutdown.sleep(delay) {
                return Err(CallError::Stopped);
            }
        }
    }

    /// `call` for a JSON answer.
    pub(crate) fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        deadline: Option<Instant>,
        send: impl Fn() -> Result<ureq::Response, ureq::Error>,
    ) -> Result<T, CallError> {
        let resp = self.call(what, deadline, send)?;
        let text = resp.into_string().map_err(|e| CallError::Bad(format!("{what}: cannot read the answer: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| CallError::Bad(format!("{what}: unexpected answer ({e}): {}", clip(&text))))
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let mut maxes = vec![];
        for _ in 0..6 {
            let d = b.next_delay();
            maxes.push(d);
        }
        // Each delay lies in [d/2, d] of its nominal value: 100, 200, 400, 800, 800, 800.
        for (d, nominal) in maxes.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            assert!(
                *d >= Duration::from_millis(nominal / 2) && *d <= Duration::from_millis(nominal),
                "{d:?} vs {nominal}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn redact_drops_the_signature() {
        assert_eq!(redact("http://s/b/k?X-Amz-Signature=abc"), "http://s/b/k");
        assert_eq!(redact("http://s/b/k"), "http://s/b/k");
        assert_eq!(redact("http://u:pw@s/b/k"), "http://u:***@s/b/k");
    }
}
