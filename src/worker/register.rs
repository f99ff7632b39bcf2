//! Getting a place at the coordinator: the user's token (cached, or from a login), then the
//! worker's registration with it.

use super::error::WorkerError;
use super::login::{self, CredError};
use super::net::{Backoff, CallError, Net};
use super::shared::Shutdown;
use crate::api::{RegisterWorkerReq, RegisterWorkerResp};
use crate::config::WorkerConfig;
use std::sync::Arc;
use std::time::Duration;

/// Logs in and registers, retrying while the coordinator is unreachable or signs the token
/// out. Returns the user's name and the registration; None when stopped by a signal.
pub(super) fn log_in_and_register(
    agent: &ureq::Agent,
    cfg: &WorkerConfig,
    shutdown: &Arc<Shutdown>,
    retry_cap: Duration,
) -> Result<Option<(String, RegisterWorkerResp)>, WorkerError> {
    // Another login of the same user (a client, a worker starting beside this one) signs
    // out the token this one just got or loaded: the registration is then refused with
    // 401, and the answer is to log in again (or take the token that login saved), after a
    // pause so two such workers do not keep signing each other out. Only a wrong password
    // (or none to log in with) ends the start.
    let mut backoff = Backoff::new(Duration::from_millis(200), retry_cap.max(Duration::from_secs(1)));
    let mut refused: Option<String> = None;
    loop {
        let Some((user, user_token)) = obtain_credentials(agent, cfg, shutdown, retry_cap, refused.as_deref())? else {
            return Ok(None);
        };
        match register(agent, cfg, &user_token, shutdown, retry_cap)? {
            Registered::Yes(reg) => return Ok(Some((user, reg))),
            Registered::Stopped => return Ok(None),
            Registered::SignedOut => {
                let d = backoff.next_delay();
                log::warn!(
                    "registration refused with 401: the token of {user} was signed out (another login of the same user?); \
                     logging in again in {:.1}s",
                    d.as_secs_f64()
                );
                if shutdown.sleep(d) {
                    return Ok(None);
                }
                refused = Some(user_token);
            }
        }
    }
}

/// The user's token: cached and still valid, or from a fresh login; retried while the
/// coordinator is unreachable. None when stopped by a signal. `refused`: a token the
/// coordinator just refused, not worth trying again.
fn obtain_credentials(
    agent: &ureq::Agent,
    cfg: &WorkerConfig,
    shutdown: &Shutdown,
    cap: Duration,
    refused: Option<&str>,
) -> Result<Option<(String, String)>, WorkerError> {
    let path = match &cfg.credential_path {
        Some(p) => p.clone(),
        None => login::default_path().ok_or(WorkerError::NoCredentialsPath)?,
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), cap);
    // After a sign-out, log in again keeping the current signature: signing the others out
    // once was the point of a login without `retain`; doing it again would sign out the
    // login that just signed this one out (two workers starting together would take turns).
    let retain = cfg.retain || refused.is_some();
    loop {
        match login::obtain(
            agent,
            &cfg.coordinator_addr,
            &path,
            cfg.user.as_deref(),
            cfg.password.as_deref(),
            retain,
            refused,
        ) {
            Ok(c) => return Ok(Some(c)),
            Err(e @ CredError::Fatal(_)) => return Err(WorkerError::Credentials(e)),
            Err(CredError::Unreachable(m)) => {
                let d = backoff.next_delay();
                log::warn!("{m}; retrying in {:.1}s", d.as_secs_f64());
                if shutdown.sleep(d) {
                    return Ok(None);
                }
            }
            // The coordinator is limiting failed logins for this user or address; the
            // password may well be right, so wait as asked instead of giving up.
            Err(CredError::RateLimited(wait, m)) => {
                log::warn!("{m}; retrying after {:.0}s as the coordinator asks (Retry-After)", wait.as_secs_f64());
                if shutdown.sleep(wait) {
                    return Ok(None);
                }
            }
        }
    }
}

/// How a registration ended, when it did not fail for good.
enum Registered {
    Yes(RegisterWorkerResp),
    /// Stopped by a signal.
    Stopped,
    /// 401: the user token is no longer valid.
    SignedOut,
}

fn register(
    agent: &ureq::Agent,
    cfg: &WorkerConfig,
    user_token: &str,
    shutdown: &Arc<Shutdown>,
    cap: Duration,
) -> Result<Registered, WorkerError> {
    let net = Net::new(agent.clone(), &cfg.coordinator_addr, user_token.to_string(), shutdown.clone(), cap);
    let body = RegisterWorkerReq {
        tags: cfg.tags.iter().cloned().collect(),
        labels: cfg.labels.iter().cloned().collect(),
        groups: cfg.groups.iter().cloned().collect(),
        lifetime: cfg.lifetime,
    };
    match net.call_json("registering", None, || {
        net.request("POST", "/workers").set(crate::api::CONFIRMS_CLAIMS_HEADER, "true").send_json(&body)
    }) {
        Ok(r) => Ok(Registered::Yes(r)),
        Err(CallError::Stopped) => Ok(Registered::Stopped),
        Err(CallError::Unauthorized) => Ok(Registered::SignedOut),
        Err(e) => Err(WorkerError::Registration(e)),
    }
}
