//! Certificates from an ACME CA (Let's Encrypt, or any RFC 8555 directory)
//! through rustls-acme: the account key and certificates persist in
//! `cache_dir`, so a restart serves the cached certificate without a new
//! order; rustls-acme orders again when a third of the lifetime is left, and
//! retries a failed order with exponential backoff (1 s, 2 s, 4 s ... ~18 h).
//! Its events are logged here, each failure with its cause and what to check.

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls_acme::acme::{AcmeError, Identifier, Problem};
use rustls_acme::caches::DirCache;
use rustls_acme::{AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, OrderError, ResolvesServerCertAcme, UseChallenge};

use super::{cert_info, client_config, server_config, Acceptor, Status, Tls, TlsError};
use crate::config::{AcmeSettings, Challenge};

/// Where the plain listener finds the answers to HTTP-01 challenges.
pub type Http01 = Arc<ResolvesServerCertAcme>;

/// Starts ordering (or loads the cached certificate) in a background task.
pub fn start(s: &AcmeSettings) -> Result<Tls, TlsError> {
    std::fs::create_dir_all(&s.cache_dir).map_err(|e| TlsError::Cache { path: s.cache_dir.clone(), why: e.to_string() })?;
    let seen = Seen::default();
    let cache = Observed { inner: DirCache::new(s.cache_dir.clone()), seen: seen.clone() };
    // ALWAYS an explicit directory: rustls-acme's own default is Let's Encrypt staging.
    let state = AcmeConfig::new_with_client_config(&s.domains, client_config(s.ca_root.as_deref())?)
        .directory(s.directory.url())
        .contact(&s.contact)
        .challenge_type(match s.challenge {
            Challenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
            Challenge::Http01 => UseChallenge::Http01,
        })
        .cache(cache)
        .state();
    let acceptor = Acceptor {
        config: server_config(state.resolver())?,
        challenge: (s.challenge == Challenge::TlsAlpn01).then(|| state.challenge_rustls_config()),
    };
    let http01 = (s.challenge == Challenge::Http01).then(|| state.resolver());
    let status = Status::new("acme", s.domains.clone());
    tracing::info!(domains = ?s.domains, directory = s.directory.url(), cache = %s.cache_dir.display(), "ACME: loading the cached certificate or ordering one");
    tokio::spawn(events(state, seen, status.clone(), s.domains.join(", ")));
    Ok(Tls { acceptor, status, http01 })
}

/// The last certificate PEM the cache loaded or stored: rustls-acme keeps the
/// one it serves to itself, and the status wants its expiry.
type Seen = Arc<Mutex<Option<Vec<u8>>>>;

struct Observed {
    inner: DirCache<std::path::PathBuf>,
    seen: Seen,
}

#[async_trait::async_trait]
impl CertCache for Observed {
    type EC = io::Error;
    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, io::Error> {
        let pem = self.inner.load_cert(domains, directory_url).await?;
        self.seen.lock().expect("seen lock").clone_from(&pem);
        Ok(pem)
    }
    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), io::Error> {
        *self.seen.lock().expect("seen lock") = Some(cert.to_vec());
        self.inner.store_cert(domains, directory_url, cert).await
    }
}

#[async_trait::async_trait]
impl AccountCache for Observed {
    type EA = io::Error;
    async fn load_account(&self, contact: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, io::Error> {
        self.inner.load_account(contact, directory_url).await
    }
    async fn store_account(&self, contact: &[String], directory_url: &str, account: &[u8]) -> Result<(), io::Error> {
        self.inner.store_account(contact, directory_url, account).await
    }
}

/// Drives rustls-acme for the life of the runtime, logging each event.
async fn events(mut state: AcmeState<io::Error>, seen: Seen, status: Arc<Status>, domains: String) {
    // rustls-acme waits 2^n s after the n-th failed order in a row (n <= 16).
    let mut failures = 0u32;
    while let Some(event) = state.next().await {
        match &event {
            Ok(EventOk::DeployedCachedCert) => tracing::info!("ACME: serving the cached certificate for {domains}"),
            Ok(EventOk::DeployedNewCert) => tracing::info!("ACME: obtained a new certificate for {domains}"),
            Ok(EventOk::CertCacheStore) => tracing::info!("ACME: certificate for {domains} stored in the cache"),
            Ok(EventOk::AccountCacheStore) => tracing::info!("ACME: new account key stored in the cache"),
            Err(e @ EventError::Order(_)) => {
                let retry = 1u64 << failures.min(16);
                failures += 1;
                // At renewal the certificate in hand is still served until it expires.
                let keeping = match status.cert().not_after.map(|t| t.duration_since(std::time::SystemTime::now())) {
                    Some(Ok(left)) => format!("; still serving the current certificate, which expires in {:.1} days", left.as_secs_f64() / 86_400.0),
                    Some(Err(_)) => "; the current certificate has EXPIRED".to_string(),
                    None => String::new(),
                };
                let why = describe(e);
                tracing::error!("ACME: no certificate for {domains}: {why}; retrying in {retry} s{keeping}");
                status.order_failed(why, std::time::Duration::from_secs(retry));
            }
            Err(e) => tracing::error!("ACME: {}", describe(e)),
        }
        if matches!(event, Ok(EventOk::DeployedNewCert)) {
            failures = 0;
            status.order_done();
        }
        if matches!(event, Ok(EventOk::DeployedCachedCert | EventOk::CertCacheStore) | Err(EventError::CertCacheStore(_))) {
            let pem = seen.lock().expect("seen lock").clone();
            if let Some(info) = pem.as_deref().and_then(|p| CertificateDer::pem_slice_iter(p).next()?.ok()).and_then(|leaf| cert_info(&leaf)) {
                status.serving(info);
            }
        }
    }
}

/// One line: what went wrong, and where to look.
pub fn describe(e: &EventError<io::Error, io::Error>) -> String {
    match e {
        EventError::Order(o) => order(o),
        EventError::CachedCertParse(p) => format!("the cached certificate is unreadable ({p}); ordering a new one"),
        EventError::CertCacheLoad(e) | EventError::AccountCacheLoad(e) => format!("cannot read the cache folder ({e}); check its permissions"),
        EventError::CertCacheStore(e) | EventError::AccountCacheStore(e) => {
            format!("cannot write the cache folder ({e}); serving anyway, but the next start orders again: check its permissions")
        }
        EventError::NewCertParse(p) => format!("the CA sent a certificate osprey cannot read ({p})"),
    }
}

fn order(o: &OrderError) -> String {
    match o {
        // rustls-acme does not export its HTTP error type: its text is what there is.
        OrderError::Acme(AcmeError::HttpRequest(e)) => http_failure(&e.to_string()),
        OrderError::BadAuth(auth) => {
            let Identifier::Dns(domain) = &auth.identifier;
            let why: Vec<String> = auth.challenges.iter().filter_map(|c| c.error.as_ref()).map(|p| p.detail.clone().unwrap_or_default()).collect();
            format!(
                "the CA could not validate {domain} ({}); check that {domain} resolves to this host and that the CA reaches osprey \
                 (port 443 for tls-alpn-01, port 80 via http_listen for http-01)",
                if why.is_empty() { "no reason given".into() } else { why.join("; ") }
            )
        }
        OrderError::TooManyAttemptsAuth(domain) => format!("validation of {domain} stayed pending too long; check that the CA reaches osprey"),
        other => other.to_string(),
    }
}

/// A refusal from the CA (`non 2xx http status: CODE "BODY"`), or no answer at all.
fn http_failure(text: &str) -> String {
    let refused = text.strip_prefix("non 2xx http status: ").and_then(|rest| rest.split_once(' '));
    match refused.and_then(|(code, body)| Some((code.parse().ok()?, body))) {
        // The body is printed as a quoted Rust string, which JSON reads for ASCII bodies.
        Some((status, body)) => problem(status, &serde_json::from_str::<String>(body).unwrap_or_else(|_| body.to_string())),
        None => format!("cannot reach the CA ({text}); check the directory URL, DNS and outbound HTTPS (and `ca_root` for a private CA)"),
    }
}

/// An RFC 7807 problem from the CA, rate limits called out.
fn problem(status: u16, body: &str) -> String {
    let p: Option<Problem> = serde_json::from_str(body).ok();
    let typ = p.as_ref().and_then(|p| p.typ.clone()).unwrap_or_default();
    let detail = p.and_then(|p| p.detail).unwrap_or_else(|| body.chars().take(200).collect());
    if typ.ends_with(":rateLimited") || status == 429 {
        format!("the CA is rate-limiting this account or domain (HTTP {status}: {detail}); use \"letsencrypt-staging\" while testing")
    } else {
        format!("the CA refused the request (HTTP {status}, {typ}: {detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::http_failure;

    /// What rustls-acme's error prints for a refusal.
    fn refused(status: u16, body: &str) -> String {
        format!("non 2xx http status: {status} {body:?}")
    }

    #[test]
    fn a_rate_limit_is_named_with_the_cas_words() {
        let body = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates already issued for example.com"}"#;
        let line = http_failure(&refused(429, body));
        assert!(line.contains("rate-limiting") && line.contains("too many certificates already issued for example.com"), "{line}");
    }

    #[test]
    fn another_refusal_keeps_its_type_and_detail() {
        let line = http_failure(&refused(403, r#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"no"}"#));
        assert!(line.contains("HTTP 403, urn:ietf:params:acme:error:unauthorized: no"), "{line}");
    }

    #[test]
    fn an_unreachable_ca_says_what_to_check() {
        let line = http_failure("io error: Os { code: 111, kind: ConnectionRefused }");
        assert!(line.starts_with("cannot reach the CA") && line.contains("ConnectionRefused"), "{line}");
    }
}
