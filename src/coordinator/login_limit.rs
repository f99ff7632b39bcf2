//! Limits on password guessing at `POST /login` (and at password changes, which check the
//! old password): failed attempts are counted per user name and per client address within
//! a window; once either count reaches its limit, that name or address gets 429 with a
//! `Retry-After` for the block's length, whatever the password. A successful login clears
//! the user name's count (not the address's: an attacker's own account must not reset it).
//!
//! ```ignore
//! ctx.login_limit.check(&name, peer)?;            // 429 while blocked
//! match verify(...) {
//!     false => { ctx.login_limit.failed(&name, peer); return Err(WrongCredentials) }
//!     true => ctx.login_limit.succeeded(&name),
//! }
//! ```
//!
//! The counts live in this process: each coordinator replica limits on its own, so N
//! replicas behind a balancer allow up to N times the limit. The maps are bounded; when
//! full, expired entries go first, then the oldest.

use super::error::ApiError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names and addresses tracked at most, each; bounds memory under a flood of made-up names.
const MAX_TRACKED: usize = 65_536;
/// Longer names are not tracked per name (no user can have one; the address still counts),
/// so the table's memory stays bounded by [`MAX_TRACKED`] short keys.
const MAX_NAME_BYTES: usize = 255;

/// The settings, from the coordinator's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub per_user: usize,
    pub per_address: usize,
    pub window: Duration,
    pub block: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: usize,
    blocked_until: Option<Instant>,
}

struct Table<K> {
    map: HashMap<K, Failures>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { map: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    /// How long `key` stays blocked, if it is.
    fn blocked<Q: std::hash::Hash + Eq + ?Sized>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
    {
        let until = self.map.get(key)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts one failure; blocks `key` when the count reaches `limit`.
    fn fail(&mut self, key: &K, now: Instant, limit: usize, l: &Limits) {
        if !self.map.contains_key(key) && self.map.len() >= MAX_TRACKED {
            self.make_room(now, l);
        }
        let f = self.map.entry(key.clone()).or_insert(Failures { since: now, count: 0, blocked_until: None });
        let expired = now.duration_since(f.since) > l.window && !matches!(f.blocked_until, Some(u) if u > now);
        if expired {
            *f = Failures { since: now, count: 0, blocked_until: None };
        }
        f.count += 1;
        if f.count >= limit {
            // A new window starts with the block, so the next failure after it counts anew.
            *f = Failures { since: now, count: 0, blocked_until: Some(now + l.block) };
        }
    }

    fn make_room(&mut self, now: Instant, l: &Limits) {
        self.map.retain(|_, f| now.duration_since(f.since) <= l.window || f.blocked_until.is_some_and(|u| u > now));
        if self.map.len() >= MAX_TRACKED {
            if let Some(oldest) = self.map.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| k.clone()) {
                self.map.remove(&oldest);
            }
        }
    }
}

/// The failure counts of one coordinator.
pub(crate) struct LoginLimiter {
    limits: Limits,
    state: Mutex<(Table<String>, Table<IpAddr>)>,
}

impl LoginLimiter {
    pub(crate) fn new(limits: Limits) -> LoginLimiter {
        LoginLimiter { limits, state: Mutex::new((Table::default(), Table::default())) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Table<String>, Table<IpAddr>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// 429 while `user` or `addr` is blocked; call before checking the password.
    pub(crate) fn check(&self, user: &str, addr: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let st = self.lock();
        let by_name = if user.len() <= MAX_NAME_BYTES { st.0.blocked(user, now) } else { None };
        if let Some(left) = by_name {
            return Err(too_many(format!("too many failed logins for user {user}"), left));
        }
        if let Some(left) = addr.and_then(|a| st.1.blocked(&a, now)) {
            return Err(too_many("too many failed logins from this address".into(), left));
        }
        Ok(())
    }

    /// Counts a wrong password (or an unknown user name).
    pub(crate) fn failed(&self, user: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let l = self.limits;
        let mut st = self.lock();
        if user.len() <= MAX_NAME_BYTES {
            st.0.fail(&user.to_string(), now, l.per_user, &l);
        }
        if let Some(a) = addr {
            st.1.fail(&a, now, l.per_address, &l);
        }
    }

    /// Clears the user name's count after a correct password.
    pub(crate) fn succeeded(&self, user: &str) {
        self.lock().0.map.remove(user);
    }
}

fn too_many(why: String, left: Duration) -> ApiError {
    // Whole seconds, rounded up, so a client that waits as told is no longer blocked.
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    ApiError::TooManyRequests { msg: why, retry_after_secs: secs.max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_user: usize, per_address: usize, block_ms: u64) -> LoginLimiter {
        LoginLimiter::new(Limits {
            per_user,
            per_address,
            window: Duration::from_secs(60),
            block: Duration::from_millis(block_ms),
        })
    }

    #[test]
    fn a_user_is_blocked_after_the_limit_and_released_after_the_block() {
        let l = limiter(3, 100, 200);
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        for _ in 0..2 {
            l.failed("ann", a);
            assert!(l.check("ann", a).is_ok());
        }
        l.failed("ann", a);
        match l.check("ann", a) {
            Err(ApiError::TooManyRequests { retry_after_secs, .. }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
        assert!(l.check("bob", a).is_ok(), "another user from the same address");
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.check("ann", a).is_ok());
    }

    #[test]
    fn an_address_is_blocked_across_user_names_and_success_does_not_clear_it() {
        let l = limiter(100, 3, 60_000);
        let a: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        l.failed("x1", a);
        l.failed("x2", a);
        l.succeeded("x2");
        l.failed("x3", a);
        assert!(matches!(l.check("anyone", a), Err(ApiError::TooManyRequests { .. })));
        assert!(l.check("anyone", Some("10.0.0.3".parse().unwrap())).is_ok());
    }

    #[test]
    fn the_tables_stay_bounded() {
        let l = limiter(100, 1_000_000, 60_000);
        for i in 0..MAX_TRACKED + 10 {
            l.failed(&format!("u{i}"), None);
        }
        assert!(l.lock().0.map.len() <= MAX_TRACKED);
    }
}
