//! Hiding secrets that travel inside URLs before they reach a log or an error message.
//!
//! A URL can carry a password in its user-info (`s3_url`, `db_url`, `redis_url`, a
//! coordinator address) and a presigned object URL carries its signature in the query
//! string: whoever reads the log could use either. [`url`] shows the scheme, the user name,
//! the host and the path, and hides the rest; [`text`] does the same for every URL inside
//! a free-form message (library errors quote the URL they failed on).
//!
//! ```ignore
//! use mito::redact;
//! assert_eq!(redact::url("http://key:secret@s3:9000/b/k?X-Amz-Signature=abc"), "http://key:***@s3:9000/b/k");
//! assert_eq!(redact::text("GET http://s/b/k?sig=1: refused"), "GET http://s/b/k: refused");
//! ```

/// `url` without the password of its user-info (a user-info without a password, which may
/// be a token, is hidden whole), its query string and its fragment.
pub(crate) fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return strip_query(url).to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let rest = strip_query(rest);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    format!("{scheme}{authority}{path}")
}

fn strip_query(s: &str) -> &str {
    s.split(['?', '#']).next().unwrap_or(s)
}

/// A PostgreSQL connection string (a URL, or `key=value` pairs) with its password hidden.
pub(crate) fn conninfo(s: &str) -> String {
    if s.contains("://") {
        return url(s);
    }
    s.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `message` with every URL in it passed through [`url`].
pub(crate) fn text(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters, digits, '+', '-' and '.' right before "://".
        let start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || "+-.".contains(*c))
            .last()
            .map(|(i, _)| i)
            .unwrap_or(at);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "\"'<>`()[]{}".contains(c))
            .map(|i| at + i)
            .unwrap_or(rest.len());
        // A trailing ',' ';' or ':' belongs to the sentence, not the URL.
        let mut url_end = end;
        while url_end > at + 3 && rest[..url_end].ends_with([',', ';', ':', '.']) {
            url_end -= 1;
        }
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..url_end]));
        out.push_str(&rest[url_end..end]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_passwords_and_queries() {
        assert_eq!(url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("postgres://h/db"), "postgres://h/db");
        assert_eq!(url("redis://:adminpw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(url("http://token@h:1/x"), "http://***@h:1/x");
        assert_eq!(url("http://s/b/k?X-Amz-Signature=abc"), "http://s/b/k");
        assert_eq!(url("http://s/b/k#frag"), "http://s/b/k");
        assert_eq!(url("http://a:b@h?x=1"), "http://a:***@h");
        assert_eq!(url("http://h/p@q"), "http://h/p@q", "an '@' in the path is no user-info");
    }

    #[test]
    fn conninfo_hides_the_password_pair() {
        assert_eq!(conninfo("host=/run/pg user=m password=pw dbname=d"), "host=/run/pg user=m password=*** dbname=d");
        assert_eq!(conninfo("postgres://m:pw@h/d"), "postgres://m:***@h/d");
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        assert_eq!(
            text("http://k:s@127.0.0.1:9/b?X-Amz-Signature=1: Connection Failed: refused"),
            "http://k:***@127.0.0.1:9/b: Connection Failed: refused"
        );
        assert_eq!(text("cannot reach \"http://a:b@h/x?y\", retrying"), "cannot reach \"http://a:***@h/x\", retrying");
        assert_eq!(text("two: http://h/1?a and https://u:p@h/2."), "two: http://h/1 and https://u:***@h/2.");
        assert_eq!(text("no url here"), "no url here");
        assert_eq!(text("odd ://x?y"), "odd ://x");
    }
}

/// The module documentation's example, run (doc tests see only the public API).
#[cfg(test)]
mod doc_example {
    #[test]
    fn runs() {
        use crate::redact;
        assert_eq!(redact::url("http://key:secret@s3:9000/b/k?X-Amz-Signature=abc"), "http://key:***@s3:9000/b/k");
        assert_eq!(redact::text("GET http://s/b/k?sig=1: refused"), "GET http://s/b/k: refused");
    }
}
