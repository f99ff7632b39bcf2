//! The S3 backend: rusty-s3 signs the URLs workers and clients use (SigV4, the PUT's
//! `Content-Length` included); ureq sends the few requests the coordinator makes itself
//! (bucket check and creation, DeleteObject).

use super::Bucket;
use crate::config::CoordinatorConfig;
use crate::coordinator::error::ApiError;
use rusty_s3::{Credentials, S3Action, UrlStyle};
use std::io::Read;
use std::time::Duration;

/// An S3-compatible service.
pub struct S3Store {
    creds: Credentials,
    artifacts: rusty_s3::Bucket,
    attachments: rusty_s3::Bucket,
    agent: ureq::Agent,
    /// The endpoint, for messages, without the user-info's password.
    endpoint: String,
}

impl S3Store {
    pub(super) fn new(cfg: &CoordinatorConfig, url: &str, tls: &crate::tls::Tls) -> Result<S3Store, String> {
        // The URL may carry credentials in its user-info: messages show it redacted.
        let shown = crate::redact::url(url);
        let endpoint = url::Url::parse(url).map_err(|e| {
            format!("invalid value for `s3_url`: {shown:?} is not a URL ({e}); e.g. http://127.0.0.1:9000")
        })?;
        let host = endpoint.host().ok_or_else(|| format!("invalid value for `s3_url`: {shown:?} has no host"))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(format!("invalid value for `s3_url`: {shown:?} is not an http:// or https:// URL"));
        }
        // Virtual-host style needs DNS names under the endpoint; an IP address or localhost
        // endpoint (MinIO, Garage, a test server) can only be addressed by path.
        let by_ip = matches!(host, url::Host::Ipv4(_) | url::Host::Ipv6(_)) || endpoint.host_str() == Some("localhost");
        let style = if cfg.s3_force_path_style || by_ip { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = |name: &str| {
            rusty_s3::Bucket::new(endpoint.clone(), style, name.to_string(), cfg.s3_region.clone())
                .map_err(|e| format!("invalid value for `s3_url` {shown:?}: {}", crate::redact::text(&e.to_string())))
        };
        Ok(S3Store {
            creds: Credentials::new(cfg.s3_access_key.clone(), cfg.s3_secret_key.clone()),
            artifacts: bucket(&cfg.artifacts_bucket)?,
            attachments: bucket(&cfg.attachments_bucket)?,
            agent: tls.agent_builder().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(30)).build(),
            endpoint: shown.clone(),
        })
    }

    fn bucket(&self, b: Bucket) -> &rusty_s3::Bucket {
        match b {
            Bucket::Artifacts => &self.artifacts,
            Bucket::Attachments => &self.attachments,
        }
    }

    pub(super) fn presign_put(&self, bucket: Bucket, key: &str, length: u64, ttl: Duration) -> String {
        let mut action = self.bucket(bucket).put_object(Some(&self.creds), key);
        // Signed, so the service refuses a body of any other length.
        action.headers_mut().insert("content-length", length.to_string());
        action.sign(ttl).to_string()
    }

    pub(super) fn presign_get(&self, bucket: Bucket, key: &str, ttl: Duration) -> String {
        self.bucket(bucket).get_object(Some(&self.creds), key).sign(ttl).to_string()
    }

    /// Sends one signed request; Ok(status) for any HTTP answer.
    fn send(&self, method: &str, url: &url::Url) -> Result<(u16, String), String> {
        let result = match method {
            "PUT" => self.agent.request_url(method, url).send_bytes(&[]),
            _ => self.agent.request_url(method, url).call(),
        };
        match result {
            Ok(r) => Ok((r.status(), String::new())),
            Err(ureq::Error::Status(code, r)) => {
                let mut body = String::new();
                let _ = r.into_reader().take(2048).read_to_string(&mut body);
                Ok((code, s3_error_code(&body)))
            }
            Err(ureq::Error::Transport(t)) => match crate::tls::explain(&t) {
                Some(m) => Err(m),
                // ureq quotes the URL it failed on: a presigned one, with its signature.
                None => Err(crate::redact::text(&t.to_string())),
            },
        }
    }

    fn unreachable(&self, e: &str) -> String {
        format!(
            "cannot reach S3 at {}: {e}; is the service running and is `s3_url` right? \
             (without `s3_url` the coordinator keeps objects in its own store under `data_dir`)",
            self.endpoint
        )
    }

    pub(super) fn ensure_buckets(&self) -> Result<(), String> {
        for b in [&self.artifacts, &self.attachments] {
            let head = b.head_bucket(Some(&self.creds)).sign(Duration::from_secs(60));
            let (status, code) = self.send("HEAD", &head).map_err(|e| self.unreachable(&e))?;
            match status {
                200 => continue,
                404 => {}
                403 => {
                    return Err(format!(
                        "S3 at {} refused access to bucket {} (403 {code}); check `s3_access_key`, `s3_secret_key` and `s3_region`",
                        self.endpoint,
                        b.name()
                    ))
                }
                s => return Err(format!("S3 at {} answered {s} {code} for bucket {}", self.endpoint, b.name())),
            }
            let create = b.create_bucket(&self.creds).sign(Duration::from_secs(60));
            let (status, code) = self.send("PUT", &create).map_err(|e| self.unreachable(&e))?;
            // 409: another coordinator created it meanwhile.
            if !(status == 200 || status == 409) {
                return Err(format!(
                    "S3 at {} could not create bucket {} ({status} {code}); create it yourself or check the credentials",
                    self.endpoint,
                    b.name()
                ));
            }
            log::info!("created bucket {} on {}", b.name(), self.endpoint);
        }
        Ok(())
    }

    pub(super) fn delete(&self, bucket: Bucket, key: &str) -> Result<(), ApiError> {
        let url = self.bucket(bucket).delete_object(Some(&self.creds), key).sign(Duration::from_secs(60));
        match self.send("DELETE", &url) {
            Ok((200 | 204 | 404, _)) => Ok(()),
            Ok((status, code)) => {
                log::error!("S3 at {} refused to delete an object in {bucket:?} ({status} {code})", self.endpoint);
                Err(ApiError::Unavailable(format!("the object store refused the delete ({status} {code})")))
            }
            Err(e) => {
                log::warn!("{}", self.unreachable(&e));
                Err(ApiError::Unavailable("the object store is unreachable".into()))
            }
        }
    }
}

/// The `<Code>` of an S3 XML error body, for messages.
fn s3_error_code(body: &str) -> String {
    match (body.find("<Code>"), body.find("</Code>")) {
        (Some(a), Some(b)) if b > a + 6 => body[a + 6..b].chars().take(64).collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_codes_are_extracted() {
        assert_eq!(s3_error_code("<Error><Code>NoSuchBucket</Code></Error>"), "NoSuchBucket");
        assert_eq!(s3_error_code("garbage"), "");
    }
}
