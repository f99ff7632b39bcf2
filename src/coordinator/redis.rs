//! Redis, when configured: the coordinator only sets up two ACL users and hands out URLs.
//! Workers publish live task states under `task:{uuid}`; clients read and subscribe.
//!
//! ```ignore
//! # use mito::coordinator::redis::setup;
//! let urls = setup("redis://:admin@127.0.0.1:6379", None, None, false, None).unwrap();
//! println!("{}", urls.client); // redis://mitosis_client:<password>@127.0.0.1:6379/?protocol=resp3
//! ```

/// The URLs handed to workers (read/write on `task:*`) and clients (read and subscribe).
#[derive(Debug, Clone)]
pub(crate) struct RedisUrls {
    pub worker: String,
    pub client: String,
}

/// Why the Redis ACL users could not be set up. URLs are shown without their password;
/// `at` is "redis at host:port".
#[derive(Debug)]
pub(crate) enum RedisError {
    NoScheme {
        url: String,
    },
    NoHost {
        url: String,
    },
    BadUrl {
        at: String,
        message: String,
    },
    Connect {
        at: String,
        message: String,
    },
    GenPass {
        at: String,
        source: redis::RedisError,
    },
    /// `ACL SETUSER` for `user` was refused.
    AclUser {
        user: &'static str,
        at: String,
        source: redis::RedisError,
    },
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::NoScheme { url } => {
                write!(f, "redis_url {url:?} has no scheme; expected redis://[:password@]host[:port]")
            }
            RedisError::NoHost { url } => write!(f, "redis_url {url:?} has no host"),
            RedisError::BadUrl { at, message } => write!(f, "invalid redis_url ({at}): {message}"),
            RedisError::Connect { at, message } => write!(f, "cannot connect to {at}: {message}"),
            RedisError::GenPass { at, source } => write!(f, "ACL GENPASS on {at} failed: {source}"),
            RedisError::AclUser { user, at, source } => write!(
                f,
                "cannot create the Redis ACL user {user} on {at}: {source} \
                 (the redis_url user needs ACL rights, or set redis_skip_acl_rules)"
            ),
        }
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisError::GenPass { source, .. } | RedisError::AclUser { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn host_port(url: &str) -> Result<String, RedisError> {
    let shown = || crate::redact::url(url);
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(|| RedisError::NoScheme { url: shown() })?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hp = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if hp.is_empty() {
        return Err(RedisError::NoHost { url: shown() });
    }
    Ok(hp.to_string())
}

/// Checks `url` the way [`setup`] reads it, without connecting; returns where it points.
pub(crate) fn check_url(url: &str) -> Result<String, RedisError> {
    let hp = host_port(url)?;
    redis::Client::open(url).map_err(|e| RedisError::BadUrl {
        at: format!("redis at {hp}"),
        message: crate::redact::text(&e.to_string()),
    })?;
    Ok(hp)
}

/// Connects with the admin URL, creates (unless `skip_acl`) the `mitosis_worker` and
/// `mitosis_client` users, and returns the URLs for each. A password not given is derived
/// from the coordinator's signing key (`derived`), so replicas sharing a key, and restarts,
/// agree on it instead of revoking each other's URLs; without one, `ACL GENPASS` makes it.
pub(crate) fn setup(
    url: &str,
    worker_password: Option<&str>,
    client_password: Option<&str>,
    skip_acl: bool,
    derived: Option<(String, String)>,
) -> Result<RedisUrls, RedisError> {
    let (dw, dc) = match derived {
        Some((w, c)) => (Some(w), Some(c)),
        None => (None, None),
    };
    let worker_password = worker_password.or(dw.as_deref());
    let client_password = client_password.or(dc.as_deref());
    let hp = host_port(url)?;
    let shown = format!("redis at {hp}");
    let client = redis::Client::open(url)
        .map_err(|e| RedisError::BadUrl { at: shown.clone(), message: crate::redact::text(&e.to_string()) })?;
    let mut con = client
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| RedisError::Connect { at: shown.clone(), message: crate::redact::text(&e.to_string()) })?;
    let mut password = |given: Option<&str>| -> Result<String, RedisError> {
        match given {
            Some(p) => Ok(p.to_string()),
            None => redis::cmd("ACL")
                .arg("GENPASS")
                .query::<String>(&mut con)
                .map_err(|source| RedisError::GenPass { at: shown.clone(), source }),
        }
    };
    let worker_pw = password(worker_password)?;
    let client_pw = password(client_password)?;
    if !skip_acl {
        for (user, pw, perms) in [
            ("mitosis_worker", &worker_pw, &["+@read", "+@write", "+@connection", "+@pubsub", "-@dangerous"][..]),
            ("mitosis_client", &client_pw, &["+@read", "+@pubsub", "+@connection", "-@dangerous"][..]),
        ] {
            let mut c = redis::cmd("ACL");
            c.arg("SETUSER").arg(user).arg("reset").arg("on").arg(format!(">{pw}")).arg("~task:*").arg("&task:*");
            for p in perms {
                c.arg(*p);
            }
            c.query::<()>(&mut con).map_err(|source| RedisError::AclUser { user, at: shown.clone(), source })?;
        }
    }
    let mk = |user: &str, pw: &str| format!("redis://{user}:{pw}@{hp}/?protocol=resp3");
    Ok(RedisUrls { worker: mk("mitosis_worker", &worker_pw), client: mk("mitosis_client", &client_pw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_ignores_credentials_and_path() {
        assert_eq!(host_port("redis://:pw@localhost:6380/0").unwrap(), "localhost:6380");
        assert_eq!(host_port("redis://127.0.0.1").unwrap(), "127.0.0.1");
        assert!(host_port("localhost").is_err());
    }
}
