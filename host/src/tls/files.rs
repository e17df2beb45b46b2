//! A certificate and key from PEM files (certbot, a company CA, a secret
//! mounted by an orchestrator). Both files are re-read every `POLL`: simple,
//! and right however they are replaced (in place, by rename, through a
//! symlink swap). New contents are loaded once they read the same twice in a
//! row, so a pair still being written is not taken; a broken new pair keeps
//! the old one serving and is logged once.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{cert_info, provider, server_config, Acceptor, CertInfo, Status, Tls, TlsError};
use crate::config::CertFiles;

/// How often the files are re-read.
pub const POLL: Duration = Duration::from_secs(1);

/// Loads the pair (an error if it is missing or broken) and starts watching it.
pub async fn start(files: &CertFiles) -> Result<Tls, TlsError> {
    let pair = read(files).await?;
    let (key, info) = parse(files, &pair)?;
    tracing::info!(cert = %files.cert.display(), domains = ?info.domains, "TLS: serving the certificate from files");
    let current = Arc::new(Current(ArcSwap::from_pointee(key)));
    let status = Status::new("files", info.domains.clone());
    status.serving(info);
    let acceptor = Acceptor { config: server_config(current.clone())?, challenge: None };
    tokio::spawn(watch(files.clone(), pair, current, status.clone()));
    Ok(Tls { acceptor, status, http01: None })
}

/// The pair being served, swapped whole.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The two files' bytes, as read.
#[derive(Clone, PartialEq)]
struct Pair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn read(files: &CertFiles) -> Result<Pair, TlsError> {
    let one = |what, path: &std::path::Path| {
        let path = path.to_path_buf();
        async move { tokio::fs::read(&path).await.map_err(|e| TlsError::File { what, path, why: e.to_string() }) }
    };
    Ok(Pair { cert: one("certificate", &files.cert).await?, key: one("key", &files.key).await? })
}

fn parse(files: &CertFiles, pair: &Pair) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let cert_error = |why: String| TlsError::File { what: "certificate", path: files.cert.clone(), why };
    let chain = CertificateDer::pem_slice_iter(&pair.cert).collect::<Result<Vec<_>, _>>().map_err(|e| cert_error(e.to_string()))?;
    let leaf = chain.first().ok_or_else(|| cert_error("no CERTIFICATE block in it".into()))?;
    let info = cert_info(leaf).ok_or_else(|| cert_error("not a readable X.509 certificate".into()))?;
    let key_error = |why: String| TlsError::File { what: "key", path: files.key.clone(), why };
    let key = PrivateKeyDer::from_pem_slice(&pair.key).map_err(|e| key_error(e.to_string()))?;
    let key = provider().key_provider.load_private_key(key).map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok((certified, info)),
        Err(e) => Err(TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone(), why: e.to_string() }),
    }
}

/// Re-reads the files for the life of the runtime; swaps in a good new pair.
async fn watch(files: CertFiles, mut loaded: Pair, current: Arc<Current>, status: Arc<Status>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `pending`: new contents seen once; `rejected`: the last broken contents (or read error), logged once.
    let (mut pending, mut rejected): (Option<Pair>, Option<Result<Pair, String>>) = (None, None);
    loop {
        tick.tick().await;
        let now = match read(&files).await {
            Ok(now) => now,
            Err(e) => {
                if rejected.as_ref() != Some(&Err(e.to_string())) {
                    tracing::warn!("{e}; still serving the previous certificate");
                    rejected = Some(Err(e.to_string()));
                }
                continue;
            }
        };
        if now == loaded || rejected.as_ref() == Some(&Ok(now.clone())) {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        match parse(&files, &now) {
            Ok((key, info)) => {
                tracing::info!(cert = %files.cert.display(), domains = ?info.domains, "TLS: certificate files changed; serving the new certificate");
                current.0.store(Arc::new(key));
                status.serving(info);
                (loaded, rejected) = (now, None);
            }
            Err(e) => {
                tracing::warn!("{e}; still serving the previous certificate");
                rejected = Some(Ok(now));
            }
        }
    }
}
