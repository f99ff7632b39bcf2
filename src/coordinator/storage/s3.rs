//! The S3 backend: rusty-s3 signs the URLs workers and clients use (SigV4, the PUT's
//! `Content-Length` included); ureq sends the few requests the coordinator makes itself
//! (bucket check and creation, DeleteObject).

use super::{Bucket, StorageError};
use crate::config::CoordinatorConfig;
use crate::coordinator::error::ApiError;
use rusty_s3::{Credentials, S3Action, UrlStyle};
use std::io::Read;
use std::time::Duration;

/// An S3-compatible service.
pub(crate) struct S3Store {
    creds: Credentials,
    artifacts: rusty_s3::Bucket,
    attachments: rusty_s3::Bucket,
    agent: ureq::Agent,
    /// The endpoint, for messages, without the user-info's password.
    endpoint: String,
}

impl S3Store {
    pub(super) fn new(cfg: &CoordinatorConfig, url: &str, tls: &crate::tls::Tls) -> Result<S3Store, StorageError> {
        // The URL may carry credentials in its user-info: messages show it redacted.
        let shown = crate::redact::url(url);
        let bad_url = |reason: String| StorageError::BadUrl { url: shown.clone(), reason };
        let endpoint =
            url::Url::parse(url).map_err(|e| bad_url(format!("is not a URL ({e}); e.g. http://127.0.0.1:9000")))?;
        let host = endpoint.host().ok_or_else(|| bad_url("has no host".into()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(bad_url("is not an http:// or https:// URL".into()));
        }
        // Virtual-host style needs DNS names under the endpoint; an IP address or localhost
        // endpoint (MinIO, Garage, a test server) can only be addressed by path.
        let by_ip = matches!(host, url::Host::Ipv4(_) | url::Host::Ipv6(_)) || endpoint.host_str() == Some("localhost");
        let style = if cfg.s3_force_path_style || by_ip { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = |name: &str| {
            rusty_s3::Bucket::new(endpoint.clone(), style, name.to_string(), cfg.s3_region.clone())
                .map_err(|e| bad_url(format!("is refused: {}", crate::redact::text(&e.to_string()))))
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

    /// Sends one signed request; Ok(status, S3 error code) for any HTTP answer.
    fn send(&self, method: &str, url: &url::Url) -> Result<(u16, String), StorageError> {
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
                Some(message) => Err(StorageError::Tls { message }),
                // ureq quotes the URL it failed on: a presigned one, with its signature.
                None => Err(self.unreachable(crate::redact::text(&t.to_string()))),
            },
        }
    }

    fn unreachable(&self, message: String) -> StorageError {
        StorageError::Unreachable { endpoint: self.endpoint.clone(), message }
    }

    pub(super) fn ensure_buckets(&self) -> Result<(), StorageError> {
        for b in [&self.artifacts, &self.attachments] {
            let head = b.head_bucket(Some(&self.creds)).sign(Duration::from_secs(60));
            let (status, code) = self.send("HEAD", &head)?;
            match status {
                200 => continue,
                404 => {}
                status => {
                    let (endpoint, bucket) = (self.endpoint.clone(), b.name().to_string());
                    return Err(StorageError::Refused { endpoint, bucket, status, code });
                }
            }
            let create = b.create_bucket(&self.creds).sign(Duration::from_secs(60));
            let (status, code) = self.send("PUT", &create)?;
            // 409: another coordinator created it meanwhile.
            if !(status == 200 || status == 409) {
                let (endpoint, bucket) = (self.endpoint.clone(), b.name().to_string());
                return Err(StorageError::CreateBucket { endpoint, bucket, status, code });
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
                log::warn!("{e}");
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
