//! TLS for the HTTP requests mito sends: workers and clients to `https://` coordinators,
//! everyone to `https://` object storage. Pure Rust (rustls with *ring*, through ureq), so
//! a static build stays static.
//!
//! ```ignore
//! use mito::tls::Tls;
//! let tls = Tls::new(Some(std::path::Path::new("/etc/mito/ca.pem")), |m| eprintln!("warning: {m}")).unwrap();
//! let agent = tls.agent_builder().timeout_connect(std::time::Duration::from_secs(10)).build();
//! ```
//!
//! Server certificates are checked against the system's roots (`/etc/ssl/certs`, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`), read at the first `https` connection, so a process
//! that only speaks `http` never reads them; a host without any gets the Mozilla roots
//! built into mito instead, and is told so. `ca_file` adds a private CA's certificates (PEM,
//! one or more); it is read at start-up, so a wrong path stops the process at once.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use ureq::rustls::pki_types::pem::PemObject;
use ureq::rustls::pki_types::CertificateDer;
use ureq::rustls::{self, ClientConfig, RootCertStore};

/// Largest CA file read: a bundle of every public root is about 200 KiB.
const MAX_CA_FILE: u64 = 16 << 20;

/// The three ways to name a CA file, quoted by messages that need one.
pub(crate) const CA_FILE_SETTINGS: &str = "ca_file / --ca-file / MITO_CA_FILE";

/// A CA file that cannot be used; the message names the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The certificates a process trusts, to build its ureq agents from. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: Arc<Connector>,
}

/// Builds the rustls configuration at the first `https` connection and hands every
/// connection to it.
struct Connector {
    /// Certificates from `ca_file`, already checked.
    extra: Vec<CertificateDer<'static>>,
    /// Says that the system store was empty (a log line, or stderr for the client).
    warn: fn(&str),
    config: OnceLock<Arc<ClientConfig>>,
}

impl Tls {
    /// The system's roots plus, with `ca_file`, the certificates in that PEM file. `warn`
    /// reports a system without roots, when the first `https` connection finds out.
    pub(crate) fn new(ca_file: Option<&Path>, warn: fn(&str)) -> Result<Tls, TlsError> {
        let extra = match ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        Ok(Tls { connector: Arc::new(Connector { extra, warn, config: OnceLock::new() }) })
    }

    /// An agent builder whose `https` connections use these certificates.
    pub(crate) fn agent_builder(&self) -> ureq::AgentBuilder {
        ureq::AgentBuilder::new().tls_connector(self.connector.clone())
    }
}

impl ureq::TlsConnector for Connector {
    fn connect(&self, dns_name: &str, io: Box<dyn ureq::ReadWrite>) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let config = self.config.get_or_init(|| Arc::new(client_config(&self.extra, self.warn)));
        ureq::TlsConnector::connect(config, dns_name, io)
    }
}

/// The system's roots (or the built-in ones when it has none) and `extra`.
fn client_config(extra: &[CertificateDer<'static>], warn: fn(&str)) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    let (system, problem) = match rustls_native_certs::load_native_certs() {
        Ok(certs) => (certs, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let (added, _unusable) = roots.add_parsable_certificates(system);
    if added == 0 {
        let why = problem.map(|e| format!(" ({e})")).unwrap_or_default();
        warn(&format!(
            "no CA certificates found in this system's store{why}; trusting the Mozilla roots built into mito \
             instead (install ca-certificates, or point SSL_CERT_FILE at a PEM bundle)"
        ));
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    // Checked when the file was read.
    roots.add_parsable_certificates(extra.iter().cloned());
    ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let fix = format!("{CA_FILE_SETTINGS} must name a PEM file holding your CA's certificate");
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| TlsError(format!("cannot read the CA file {shown}: {e}; {fix}")))?;
    if bytes.len() as u64 > MAX_CA_FILE {
        return Err(TlsError(format!("the CA file {shown} is larger than {} MiB; {fix}", MAX_CA_FILE >> 20)));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("the CA file {shown} is not valid PEM ({e}); {fix}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "the CA file {shown} holds no certificate (no -----BEGIN CERTIFICATE----- block); {fix}"
        )));
    }
    let n = certs.len();
    for (i, cert) in certs.iter().enumerate() {
        RootCertStore::empty().add(cert.clone()).map_err(|e| {
            TlsError(format!("certificate {} of {n} in the CA file {shown} cannot be used as a CA ({e}); {fix}", i + 1))
        })?;
    }
    Ok(certs)
}

/// When `t` is a failed TLS handshake: what went wrong and what to do, naming the server by
/// scheme, host and port only (a presigned URL's query holds its signature).
pub(crate) fn explain(t: &ureq::Transport) -> Option<String> {
    let err = rustls_error(t)?;
    let server = t.url().map(|u| u.origin().ascii_serialization()).unwrap_or_else(|| "the server".into());
    use rustls::CertificateError;
    Some(match err {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => format!(
            "the certificate of {server} is not valid for that name ({err}); use an address the certificate names"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "the certificate of {server} is outside its validity period ({err}); check the certificate and this machine's clock"
        ),
        rustls::Error::InvalidCertificate(_) => format!(
            "the certificate of {server} is not trusted ({err}); if a private CA signed it, set {CA_FILE_SETTINGS} to that CA's PEM file"
        ),
        rustls::Error::InvalidMessage(_) => {
            format!("{server} does not speak TLS ({err}); if it serves plain HTTP, write the address with http://")
        }
        other => format!("TLS with {server} failed: {other}"),
    })
}

/// The rustls error somewhere in `t`'s causes (ureq wraps it in an `io::Error`).
fn rustls_error(t: &ureq::Transport) -> Option<&rustls::Error> {
    let mut cause = std::error::Error::source(t);
    while let Some(e) = cause {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(r) = r.downcast_ref::<rustls::Error>() {
                return Some(r);
            }
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("mito-tls-{name}-{}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn unusable_ca_files_are_refused_with_the_file_and_the_fix() {
        let missing = Path::new("/nonexistent/mito-ca.pem");
        let e = Tls::new(Some(missing), |_| {}).err().unwrap().0;
        assert!(e.contains("/nonexistent/mito-ca.pem") && e.contains("--ca-file") && e.contains("No such file"), "{e}");
        let empty = temp("empty", b"not a certificate\n");
        let e = Tls::new(Some(&empty), |_| {}).err().unwrap().0;
        assert!(e.contains("holds no certificate"), "{e}");
        let garbage = temp("garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let e = Tls::new(Some(&garbage), |_| {}).err().unwrap().0;
        assert!(e.contains("cannot be used as a CA"), "{e}");
        let broken = temp("broken", b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n");
        let e = Tls::new(Some(&broken), |_| {}).err().unwrap().0;
        assert!(e.contains("not valid PEM"), "{e}");
        for p in [empty, garbage, broken] {
            let _ = std::fs::remove_file(p);
        }
    }
}
