//! The dashboard at `/ui/`: a few static files compiled into the binary, so it needs no
//! build step, no CDN and no internet. The page talks only to the coordinator's HTTP API
//! with the user's own token, so it can show and do exactly what that user may.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles only from
//! these files (no inline script, no third-party origin), and network requests only to
//! the coordinator and, when objects live in S3, to its endpoint (artifact and
//! attachment transfers go there on presigned URLs).

use super::error::ApiError;
use super::http::Reply;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("index.html") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("app.js") },
    Asset { name: "md5.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("md5.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("app.css") },
];

/// The policy for every dashboard answer; `object_origin` is the S3 endpoint's origin
/// (scheme, host, port) when objects live there.
pub(super) fn content_security_policy(object_origin: Option<&str>) -> String {
    let connect = match object_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The origin (`scheme://host[:port]`) of an S3 endpoint URL, for the page's policy.
pub(super) fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// `GET /ui/<path>`: one of the files; the empty path (and `/ui`) is the page itself.
pub(super) fn serve(path: &str, csp: &str) -> Result<Reply, ApiError> {
    let name = if path.is_empty() { "index.html" } else { path };
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or(ApiError::NoRoute)?;
    Ok(Reply { status: 200, content_type: Some(asset.content_type), body: asset.body.to_vec(), headers: Vec::new() }
        .with_header("Content-Security-Policy", csp.to_string())
        .with_header("X-Content-Type-Options", "nosniff".into())
        .with_header("X-Frame-Options", "DENY".into())
        .with_header("Referrer-Policy", "no-referrer".into())
        // Small files that change with the binary: always revalidate, so an upgraded
        // coordinator never serves a page with a stale script.
        .with_header("Cache-Control", "no-cache".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_the_policy() {
        for a in ASSETS {
            let r = serve(a.name, "x").unwrap();
            assert_eq!(r.content_type, Some(a.content_type));
            assert!(r.headers.iter().any(|(k, v)| *k == "Content-Security-Policy" && v == "x"));
            assert!(r.headers.iter().any(|(k, v)| *k == "X-Content-Type-Options" && v == "nosniff"));
        }
        assert_eq!(serve("", "x").unwrap().body, serve("index.html", "x").unwrap().body);
        assert!(matches!(serve("../Cargo.toml", "x"), Err(ApiError::NoRoute)));
        assert!(matches!(serve("nope.js", "x"), Err(ApiError::NoRoute)));
    }

    #[test]
    fn the_policy_names_only_self_and_the_object_store() {
        let p = content_security_policy(None);
        assert!(p.contains("script-src 'self';") && p.contains("connect-src 'self';"), "{p}");
        assert!(!p.contains("unsafe-inline"), "{p}");
        let p = content_security_policy(origin_of("https://s3.example.org/bucket?x=1").as_deref());
        assert!(p.contains("connect-src 'self' https://s3.example.org;"), "{p}");
        assert_eq!(origin_of("http://127.0.0.1:9000").as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(origin_of("http://[::1]:9000/b").as_deref(), Some("http://[::1]:9000"));
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for tag in html.split("<script").skip(1) {
            let open = &tag[..tag.find('>').unwrap()];
            assert!(open.contains("src="), "inline script in index.html: <script{open}>");
        }
        assert!(!html.contains("<style") && !html.contains("style="), "inline style in index.html");
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains("innerHTML") && !text.contains("eval("), "{} builds HTML from strings", a.name);
        }
    }
}
