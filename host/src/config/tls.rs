//! `[tls]`: off, certificates from files, or certificates from an ACME CA.
//! The validated types, and the step that checks the raw table against the
//! mode it names (a key of another mode is an error where it stands).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diag::Diagnostics;
use super::raw::{RawChallenge, RawTls, RawTlsMode};

/// How the listener speaks: plain HTTP, or HTTPS with a certificate from somewhere.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// A plain HTTP listener that redirects to HTTPS (and answers HTTP-01 challenges).
    pub http_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// Plain HTTP/1.1 and h2c on `[server] listen`.
    #[default]
    Off,
    /// A certificate and key in PEM files, re-read when they change.
    Files(CertFiles),
    /// Certificates ordered from an ACME CA, cached, renewed before expiry.
    Acme(AcmeSettings),
}

impl TlsMode {
    pub fn name(&self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Files(_) => "files",
            TlsMode::Acme(_) => "acme",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` URLs the CA may write to about expiry and problems.
    pub contact: Vec<String>,
    /// Where the account key and the certificates persist across restarts.
    pub cache_dir: PathBuf,
    pub directory: Directory,
    pub challenge: Challenge,
    /// A CA root (PEM) trusted, besides the Web PKI, for the directory's HTTPS.
    pub ca_root: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Directory {
    LetsEncrypt,
    LetsEncryptStaging,
    Url(String),
}

impl Directory {
    pub fn url(&self) -> &str {
        match self {
            Directory::LetsEncrypt => "https://acme-v02.api.letsencrypt.org/directory",
            Directory::LetsEncryptStaging => "https://acme-staging-v02.api.letsencrypt.org/directory",
            Directory::Url(u) => u,
        }
    }
}

/// How the CA checks that we hold the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// On the HTTPS port itself (needs port 443 to reach osprey, TLS untouched).
    TlsAlpn01,
    /// On the plain HTTP port (`http_listen`), for a TLS-terminating proxy in front.
    Http01,
}

pub fn compile(raw: &RawTls, server_listen: SocketAddr, base: &Path, d: &mut Diagnostics<'_>) -> TlsSettings {
    let mode = raw.mode.as_ref().map_or(RawTlsMode::Off, |m| *m.get_ref());
    let mode_name = match mode {
        RawTlsMode::Acme => "acme",
        RawTlsMode::Files => "files",
        RawTlsMode::Off => "off",
    };
    // Keys that the chosen mode does not read: most likely a forgotten `mode`.
    let acme_keys = [("domains", raw.domains.as_ref().map(|v| v.span())), ("contact", raw.contact.as_ref().map(|v| v.span()))]
        .into_iter()
        .chain([("cache_dir", &raw.cache_dir), ("directory", &raw.directory), ("ca_root", &raw.ca_root)].map(|(k, v)| (k, v.as_ref().map(|v| v.span()))))
        .chain([("challenge", raw.challenge.as_ref().map(|v| v.span()))]);
    let file_keys = [("cert", &raw.cert), ("key", &raw.key)].map(|(k, v)| (k, v.as_ref().map(|v| v.span())));
    let stray: Vec<_> = match mode {
        RawTlsMode::Acme => file_keys.into_iter().collect(),
        RawTlsMode::Files => acme_keys.collect(),
        RawTlsMode::Off => acme_keys.chain(file_keys).chain([("http_listen", raw.http_listen.as_ref().map(|v| v.span()))]).collect(),
    };
    for (key, span) in stray {
        if let Some(span) = span {
            let hint = if mode == RawTlsMode::Off { "set mode = \"acme\" or mode = \"files\" in [tls]" } else { "remove it, or change `mode`" };
            d.error(span, format!("[tls] {key} has no effect with mode = \"{mode_name}\""), Some(hint.into()));
        }
    }
    let http_listen = raw.http_listen.as_ref().and_then(|l| match l.get_ref().parse::<SocketAddr>() {
        Ok(a) if a == server_listen => {
            d.error(l.span(), format!("http_listen = \"{a}\" is also [server] listen"), Some("the plain listener needs its own port, usually 80".into()));
            None
        }
        Ok(a) => Some(a),
        Err(e) => {
            d.error(l.span(), format!("http_listen = \"{}\": {e}", l.get_ref()), Some("an IP and port, e.g. \"0.0.0.0:80\"".into()));
            None
        }
    });
    let mode = match mode {
        RawTlsMode::Off => TlsMode::Off,
        RawTlsMode::Files => files(raw, base, d).map_or(TlsMode::Off, TlsMode::Files),
        RawTlsMode::Acme => acme(raw, http_listen.is_some(), base, d).map_or(TlsMode::Off, TlsMode::Acme),
    };
    TlsSettings { mode, http_listen }
}

fn files(raw: &RawTls, base: &Path, d: &mut Diagnostics<'_>) -> Option<CertFiles> {
    let mut file = |v: &Option<Spanned<String>>, key: &str| match v {
        Some(p) => d.existing(base, p, &format!("[tls] {key}"), "a PEM file; see README \"Deploy with TLS\""),
        None => {
            d.error(mode_span(raw), format!("mode = \"files\" needs `{key}`"), Some(format!("{key} = \"path/to/{key}.pem\"")));
            None
        }
    };
    let cert = file(&raw.cert, "cert");
    let key = file(&raw.key, "key");
    Some(CertFiles { cert: cert?, key: key? })
}

fn acme(raw: &RawTls, has_http_listen: bool, base: &Path, d: &mut Diagnostics<'_>) -> Option<AcmeSettings> {
    let before = d.list.len();
    let domains: Vec<String> = raw.domains.as_ref().map_or(vec![], |v| v.get_ref().iter().filter_map(|n| domain(n, d)).collect());
    if raw.domains.as_ref().is_none_or(|v| v.get_ref().is_empty()) {
        let span = raw.domains.as_ref().map_or(mode_span(raw), |v| v.span());
        d.error(span, "mode = \"acme\" needs at least one domain", Some("domains = [\"osprey.example.com\"]".into()));
    }
    let contact = raw.contact.as_ref().map_or(vec![], |v| v.get_ref().iter().filter_map(|c| contact(c, d)).collect());
    let cache_dir = match &raw.cache_dir {
        Some(p) => base.join(p.get_ref()),
        None => {
            d.error(mode_span(raw), "mode = \"acme\" needs `cache_dir`", Some("a folder that survives restarts, e.g. cache_dir = \"/var/lib/osprey/acme\"".into()));
            PathBuf::new()
        }
    };
    let directory = match raw.directory.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        Some(("letsencrypt", _)) => Directory::LetsEncrypt,
        Some(("letsencrypt-staging", _)) => Directory::LetsEncryptStaging,
        Some((u, span)) => match url::Url::parse(u) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => Directory::Url(u.to_string()),
            _ => {
                d.error(span, format!("directory = \"{u}\" is neither a known CA nor an https:// URL"), Some("\"letsencrypt\", \"letsencrypt-staging\" or the https:// URL of an ACME directory".into()));
                Directory::LetsEncryptStaging
            }
        },
        None => {
            d.error(mode_span(raw), "mode = \"acme\" needs `directory`", Some("\"letsencrypt\" for real certificates, \"letsencrypt-staging\" while trying things out".into()));
            Directory::LetsEncryptStaging
        }
    };
    let challenge = match raw.challenge.as_ref().map(|c| (*c.get_ref(), c.span())) {
        None | Some((RawChallenge::TlsAlpn01, _)) => Challenge::TlsAlpn01,
        Some((RawChallenge::Http01, span)) => {
            if !has_http_listen {
                d.error(span, "challenge = \"http-01\" needs `http_listen`", Some("the CA asks on port 80: http_listen = \"0.0.0.0:80\"".into()));
            }
            Challenge::Http01
        }
    };
    let ca_root = raw.ca_root.as_ref().and_then(|p| d.existing(base, p, "[tls] ca_root", "a PEM file with the CA's root certificate"));
    (d.list.len() == before).then_some(AcmeSettings { domains, contact, cache_dir, directory, challenge, ca_root })
}

fn mode_span(raw: &RawTls) -> std::ops::Range<usize> {
    raw.mode.as_ref().map_or(0..0, |m| m.span())
}

/// A DNS name a CA will issue for: no wildcard (TLS-ALPN-01 and HTTP-01 cannot prove one), no IP.
fn domain(n: &Spanned<String>, d: &mut Diagnostics<'_>) -> Option<String> {
    let s = n.get_ref().to_ascii_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let ok = s.len() <= 253 && s.contains('.') && s.split('.').all(label_ok) && s.parse::<std::net::IpAddr>().is_err();
    if ok {
        Some(s)
    } else {
        d.error(n.span(), format!("domain \"{}\" is not a DNS name a CA can issue for", n.get_ref()), Some("a full name like \"osprey.example.com\": no wildcard, no IP address, no port".into()));
        None
    }
}

/// An e-mail address, with or without `mailto:`.
fn contact(c: &Spanned<String>, d: &mut Diagnostics<'_>) -> Option<String> {
    let s = c.get_ref();
    let addr = s.strip_prefix("mailto:").unwrap_or(s);
    match addr.split_once('@') {
        Some((user, host)) if !user.is_empty() && host.contains('.') && !addr.contains([' ', ',']) => Some(format!("mailto:{addr}")),
        _ => {
            d.error(c.span(), format!("contact \"{s}\" is not an e-mail address"), Some("like \"mailto:ops@example.com\"".into()));
            None
        }
    }
}
