//! HTTPS: where the certificate comes from, and the TLS handshake in front of
//! hyper. ALPN offers `h2` and `http/1.1`; hyper-util's auto builder then
//! speaks whichever the client picked.
//!
//! - `acme`: certificates ordered from an ACME CA by rustls-acme, cached, renewed.
//! - `files`: a certificate and key from PEM files, re-read when they change.
//! - `redirect`: the plain HTTP listener (308 to HTTPS, HTTP-01 answers).
//!
//! With ACME and no cached certificate, osprey starts anyway: the HTTPS port
//! must be up for TLS-ALPN-01 to prove the domain. Until the first certificate
//! arrives, handshakes fail (logged at debug) and the order's progress and
//! failures are logged. With `files`, a missing or broken pair at start is an
//! error: there is nothing to serve and nothing will fix itself.

pub mod acme;
pub mod files;
pub mod redirect;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::ResolvesServerCert;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{TlsMode, TlsSettings};

/// Errors of the TLS layer: each names the file or setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {why}")]
    File { what: &'static str, path: PathBuf, why: String },
    #[error("TLS certificate {cert} and key {key} do not belong together ({why}); reissue them as a pair")]
    Mismatch { cert: PathBuf, key: PathBuf, why: String },
    #[error("ACME cache folder {path}: {why} (osprey must be able to create and write it)")]
    Cache { path: PathBuf, why: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, named explicitly so no other provider can sneak in.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's trust: the Web PKI roots, plus `ca_root` (a private or test CA)
/// when set. The ACME client and a gateway's TLS connections to its nodes use it.
pub fn client_config(ca_root: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_root {
        let file_error = |why: String| TlsError::File { what: "ca_root", path: path.to_path_buf(), why };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| file_error(e.to_string()))?;
        let mut added = 0;
        for cert in certs {
            roots.add(cert.map_err(|e| file_error(e.to_string()))?).map_err(|e| file_error(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(file_error("no CERTIFICATE block in it".into()));
        }
    }
    let config = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?.with_root_certificates(roots).with_no_client_auth();
    Ok(Arc::new(config))
}

/// Certificates resolved per handshake by `resolver`; ALPN h2 then http/1.1.
fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// HTTPS as configured: the handshake, what the admin API shows, and the
/// HTTP-01 answers the plain listener gives.
pub struct Tls {
    pub acceptor: Acceptor,
    pub status: Arc<Status>,
    pub http01: Option<acme::Http01>,
}

/// Sets up `[tls]`; `None` when it is off. Spawns the ACME task or the
/// certificate file watcher, so it must run inside the tokio runtime.
pub async fn start(settings: &TlsSettings) -> Result<Option<Tls>, TlsError> {
    match &settings.mode {
        TlsMode::Off => Ok(None),
        TlsMode::Files(files) => files::start(files).await.map(Some),
        TlsMode::Acme(acme) => acme::start(acme).map(Some),
    }
}

/// The TLS handshake of one connection.
pub struct Acceptor {
    config: Arc<ServerConfig>,
    /// The TLS-ALPN-01 config; `None` outside ACME.
    challenge: Option<Arc<ServerConfig>>,
}

impl Acceptor {
    /// The client's stream after the handshake, or `None` for a TLS-ALPN-01
    /// validation, which ends with the handshake.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        if let Some(challenge) = &self.challenge {
            if rustls_acme::is_tls_alpn_challenge(&start.client_hello()) {
                tracing::info!("answering a TLS-ALPN-01 validation");
                start.into_stream(challenge.clone()).await?;
                return Ok(None);
            }
        }
        start.into_stream(self.config.clone()).await.map(Some)
    }
}

/// What `/admin/status` shows under `tls`, and the expiry gauge.
#[derive(Debug)]
pub struct Status {
    mode: &'static str,
    cert: Mutex<CertInfo>,
    orders: Mutex<Orders>,
}

/// Failed ACME orders since the last certificate was deployed: while the CA
/// is away the served certificate stays, and this is what says so.
#[derive(Debug, Clone, Default)]
pub struct Orders {
    /// Failed orders in a row (0 once one succeeds).
    pub failures: u32,
    pub last_error: Option<String>,
    /// When rustls-acme orders again.
    pub retry_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    pub domains: Vec<String>,
    pub not_after: Option<SystemTime>,
}

impl Status {
    fn new(mode: &'static str, domains: Vec<String>) -> Arc<Self> {
        Arc::new(Status { mode, cert: Mutex::new(CertInfo { domains, not_after: None }), orders: Mutex::default() })
    }

    /// Records the certificate now served.
    fn serving(&self, info: CertInfo) {
        let unix = info.not_after.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs() as i64);
        crate::metrics::global().tls_cert_expiry.set(unix);
        *self.cert.lock().expect("status lock") = info;
    }

    /// An order failed; the next is `retry` away.
    fn order_failed(&self, why: String, retry: Duration) {
        let mut orders = self.orders.lock().expect("status lock");
        orders.failures += 1;
        orders.last_error = Some(why);
        orders.retry_at = Some(SystemTime::now() + retry);
        let m = crate::metrics::global();
        m.tls_order_failures.inc();
        m.tls_order_failing.set(i64::from(orders.failures));
    }

    /// A certificate was deployed (new or from the cache): orders are not failing.
    fn order_done(&self) {
        *self.orders.lock().expect("status lock") = Orders::default();
        crate::metrics::global().tls_order_failing.set(0);
    }

    pub fn cert(&self) -> CertInfo {
        self.cert.lock().expect("status lock").clone()
    }

    pub fn orders(&self) -> Orders {
        self.orders.lock().expect("status lock").clone()
    }

    pub fn to_json(&self) -> Value {
        let unix = |t: Option<SystemTime>| t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
        let (cert, orders) = (self.cert(), self.orders());
        json!({
            "mode": self.mode, "domains": cert.domains, "not_after": unix(cert.not_after),
            "orders": {"failures": orders.failures, "last_error": orders.last_error, "retry_at": unix(orders.retry_at)},
        })
    }
}

/// The leaf certificate's DNS names and expiry.
pub fn cert_info(leaf_der: &[u8]) -> Option<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf_der).ok()?;
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).ok()?);
    let domains = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().filter_map(|n| if let GeneralName::DNSName(d) = n { Some(d.to_string()) } else { None }).collect())
        .unwrap_or_default();
    Some(CertInfo { domains, not_after: Some(not_after) })
}
