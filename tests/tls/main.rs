//! HTTPS end to end: certificates from a real ACME CA (Debian's pebble, on
//! loopback), a restart that serves from the cache without a new order,
//! certificate files replaced while serving, and the failures that must be
//! logged with their cause while the plain side keeps answering.

mod acme;
mod files;
mod pebble;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use osprey_tests::Running;

/// The admin token of the test configs.
pub const TOKEN: &str = "tls-test-admin-token-0123456789";

/// The default config (real models and routes) with `extra` appended.
pub fn config(extra: &str) -> osprey::config::Config {
    let path = osprey_tests::repo().join("config/osprey.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = format!("{text}\n[admin]\ntoken = \"{TOKEN}\"\nwatch = false\n\n{extra}");
    osprey::config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}\n(run `make setup` first)"))
}

/// A listener on a free loopback port, bound before the server starts.
pub fn bind() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// An HTTPS client that trusts only `root_pem` and finds `domain` at `addr`.
pub fn client(root_pem: &str, domain: &str, addr: SocketAddr, http1: bool) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .resolve(domain, addr)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The leaf certificate (DER) the server presented.
pub fn served_cert(resp: &reqwest::blocking::Response) -> Vec<u8> {
    resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate()).expect("a TLS answer").to_vec()
}

/// `POST /v1/detect` with dog.jpg: a dog must be found; returns the served certificate.
pub fn detect(client: &reqwest::blocking::Client, domain: &str, port: u16, version: reqwest::Version) -> Vec<u8> {
    let resp = client
        .post(format!("https://{domain}:{port}/v1/detect"))
        .header("content-type", "image/jpeg")
        .body(osprey_tests::image("dog.jpg"))
        .send()
        .unwrap();
    assert_eq!(resp.version(), version);
    assert_eq!(resp.status(), 200);
    let cert = served_cert(&resp);
    let answer: serde_json::Value = resp.json().unwrap();
    assert!(answer["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{answer}");
    cert
}

/// `/admin/status`'s `tls` object.
pub fn tls_status(client: &reqwest::blocking::Client, domain: &str, port: u16) -> serde_json::Value {
    let resp = client.get(format!("https://{domain}:{port}/admin/status")).bearer_auth(TOKEN).send().unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<serde_json::Value>().unwrap()["tls"].clone()
}

/// Polls `done` every 50 ms until it holds, failing after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "gave up after {limit:?} waiting for {what}\nlog:\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the server's first certificate.
pub fn wait_for_cert(server: &Running) {
    wait_until(Duration::from_secs(90), "a certificate", || server.shared.tls.get().is_some_and(|s| s.cert().not_after.is_some()));
}

/// Everything osprey logged in this test process (also echoed to stderr).
pub fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the log capture once per test process.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt().with_writer(|| Capture).with_ansi(false).with_env_filter("osprey=info").try_init();
    });
}

/// A folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(osprey_tests::unique_name(&format!("osprey-tls-{what}")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
