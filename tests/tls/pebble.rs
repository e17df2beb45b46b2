//! Debian's `pebble` (a test ACME CA) and `pebble-challtestsrv` (its DNS),
//! started on free loopback ports for one test and killed when it ends.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

pub struct Pebble {
    pub directory: String,
    /// Pebble's own HTTPS certificate, for osprey's `ca_root`.
    pub api_cert: PathBuf,
    /// The root that signs the certificates pebble issues (new at every start).
    pub root_pem: String,
    dns_management: SocketAddr,
    log: PathBuf,
    children: Vec<Child>,
    _dir: TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Pebble {
    /// Validations go to `tls_port` (TLS-ALPN-01) and `http_port` (HTTP-01) on
    /// the address the name resolves to; names not added resolve to 127.0.0.2,
    /// where nothing listens.
    ///
    /// Its own four ports are probed free, then bound by pebble: another
    /// test's listener may take one in between, and pebble exits. Then it is
    /// started again on new ports.
    pub fn start(tls_port: u16, http_port: u16) -> Pebble {
        for tool in ["pebble", "pebble-challtestsrv"] {
            assert!(Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success()), "{tool} not installed: run `make test-services`");
        }
        for _ in 0..3 {
            if let Some(pebble) = Pebble::try_start(tls_port, http_port) {
                return pebble;
            }
        }
        panic!("pebble or pebble-challtestsrv exited at start three times in a row");
    }

    /// `None` when pebble or its DNS exits before its ports are open.
    fn try_start(tls_port: u16, http_port: u16) -> Option<Pebble> {
        let dir = TempDir::new("pebble");
        let (api_cert, api_key) = (dir.path().join("api-cert.pem"), dir.path().join("api-key.pem"));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(&api_cert, cert.cert.pem()).unwrap();
        std::fs::write(&api_key, cert.key_pair.serialize_pem()).unwrap();
        let (acme, management, dns, dns_management) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"), "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": api_cert, "privateKey": api_key, "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("pebble.log");
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.2", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let ca = Command::new("pebble")
            .args(["-config", config_path.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .expect("start pebble");
        let mut pebble = Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            api_cert,
            root_pem: String::new(),
            dns_management: ([127, 0, 0, 1], dns_management).into(),
            log,
            children: vec![dns_server, ca],
            _dir: dir,
        };
        for port in [acme, management, dns_management] {
            if !pebble.wait_for_port(port) {
                return None;
            }
        }
        let api = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&pebble.api_cert).unwrap()).unwrap())
            .build()
            .unwrap();
        pebble.root_pem = api.get(format!("https://127.0.0.1:{management}/roots/0")).send().unwrap().error_for_status().unwrap().text().unwrap();
        Some(pebble)
    }

    /// Waits for `port` to open; false if one of the processes exited first.
    fn wait_for_port(&mut self, port: u16) -> bool {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if self.children.iter_mut().any(|c| c.try_wait().unwrap().is_some()) {
                return false;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "port {port} did not open");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.children.iter_mut().all(|c| c.try_wait().unwrap().is_none())
    }

    /// Makes `host` resolve to `ip` for the CA's validations.
    pub fn add_a(&self, host: &str, ip: &str) {
        let body = serde_json::json!({"host": format!("{host}."), "addresses": [ip]});
        let url = format!("http://{}/add-a", self.dns_management);
        reqwest::blocking::Client::new().post(url).body(body.to_string()).send().unwrap().error_for_status().unwrap();
    }

    /// New orders the CA has received (its log names each request it serves).
    pub fn orders(&self) -> usize {
        let mut text = String::new();
        std::fs::File::open(&self.log).unwrap().read_to_string(&mut text).unwrap();
        text.lines().filter(|l| l.contains("/order-plz")).count()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}
