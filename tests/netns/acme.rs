//! Seed 000's whole topology with osprey alone: the gateway gets its
//! certificate from an ACME CA (Debian's pebble, and pebble-challtestsrv as
//! its DNS, both in the public namespace), nodes behind NAT dial
//! `https://NAME:PORT` trusting that CA's root, and a client of the public
//! side gets its answer over HTTPS.
//!
//! Needs namespaces: the nodes find the gateway by its name through their
//! own hosts file (`Host::resolve`), and pebble's validation reaches the
//! gateway at the public address. On loopback the name would have to go in
//! the machine's own /etc/hosts, which a test leaves alone; there it is
//! skipped and says so (`tests/tls/` covers ACME on loopback, and
//! `tests/fleet/tunnel.rs` the tunnel over plain HTTP).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use super::*;

/// The gateway's name: pebble's DNS and the nodes' hosts files resolve it
/// to the public address.
const DOMAIN: &str = "gw.osprey.test";
/// Pebble's ports on the public namespace's loopback: the test owns them.
const ACME_PORT: u16 = 14000;
const MANAGEMENT_PORT: u16 = 15000;
const DNS_PORT: u16 = 8053;
const DNS_MANAGEMENT_PORT: u16 = 8055;

/// What a `Topology` needs for a gateway with ACME TLS.
pub struct GatewayTls {
    /// The gateway's `[tls]` table.
    pub section: String,
    pub domain: String,
    /// The root that signs what pebble issues: clients trust it, nodes get it as `ca_root`.
    pub root_pem: String,
    pub root_file: PathBuf,
}

impl GatewayTls {
    /// Waits (90 s at most: pebble validates over TLS-ALPN-01 on the
    /// gateway's port) until the gateway answers HTTPS with a certificate
    /// that chains to pebble's root.
    pub fn wait_for_certificate(&self, fleet: &Fleet) {
        let (url, client, started) = (fleet.url(0, "/healthz"), fleet.client(), Instant::now());
        let error = fleet.net.public().run(move || {
            let client = client.build();
            loop {
                match client.get(&url).send() {
                    Ok(r) if r.status() == 200 => return None,
                    Ok(r) if started.elapsed() > Duration::from_secs(90) => return Some(format!("{}", r.status())),
                    Err(e) if started.elapsed() > Duration::from_secs(90) => return Some(format!("{e:?}")),
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        assert!(error.is_none(), "no certificate from pebble within 90 s: {error:?}\ngateway: {:?}", fleet.gateways[0].log("ACME"));
        eprintln!("the gateway served its ACME certificate {} ms after it listened", started.elapsed().as_millis());
    }
}

/// pebble and its DNS as processes of the public namespace, killed when dropped.
struct Pebble {
    children: Vec<Child>,
    host: Host,
    dir: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Validations go to `tls_port` on the address a name resolves to;
    /// names not added resolve to 127.0.0.2, where nothing listens.
    fn start(host: &Host, dir: &Path, tls_port: u16) -> Pebble {
        for tool in ["pebble", "pebble-challtestsrv"] {
            assert!(Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success()), "{tool} not installed: run `make test-services`");
        }
        let (api_cert, api_key) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(&api_cert, cert.cert.pem()).unwrap();
        std::fs::write(&api_key, cert.key_pair.serialize_pem()).unwrap();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{ACME_PORT}"), "managementListenAddress": format!("127.0.0.1:{MANAGEMENT_PORT}"),
            "certificate": api_cert, "privateKey": api_key, "httpPort": 80, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let dns = host
            .command("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{DNS_PORT}"), "-management", &format!("127.0.0.1:{DNS_MANAGEMENT_PORT}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-defaultIPv4", "127.0.0.2", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let ca = host
            .command("pebble")
            .args(["-config", config_path.to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{DNS_PORT}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        let mut pebble = Pebble { children: vec![dns, ca], host: host.clone(), dir: dir.to_path_buf() };
        for port in [ACME_PORT, MANAGEMENT_PORT, DNS_MANAGEMENT_PORT] {
            pebble.wait_for_port(port);
        }
        pebble
    }

    /// Waits (20 s at most) for `port` on the namespace's loopback to open.
    fn wait_for_port(&mut self, port: u16) {
        let started = Instant::now();
        while !self.host.run(move || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()) {
            let exited = self.children.iter_mut().any(|c| c.try_wait().unwrap().is_some());
            assert!(!exited && started.elapsed() < Duration::from_secs(20), "pebble's port {port} did not open; {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Makes `name` resolve to `ip` for the CA's validations.
    fn add_a(&self, name: &str, ip: Ipv4Addr) {
        let body = serde_json::json!({"host": format!("{name}."), "addresses": [ip.to_string()]}).to_string();
        let url = format!("http://127.0.0.1:{DNS_MANAGEMENT_PORT}/add-a");
        self.host.run(move || reqwest::blocking::Client::new().post(url).body(body).send().unwrap().error_for_status().unwrap());
    }

    /// The root that signs the certificates it issues (new at every start).
    fn root_pem(&self) -> String {
        let (api_cert, url) = (self.dir.join("pebble-cert.pem"), format!("https://127.0.0.1:{MANAGEMENT_PORT}/roots/0"));
        self.host.run(move || {
            let api = reqwest::blocking::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&api_cert).unwrap()).unwrap())
                .build()
                .unwrap();
            api.get(url).send().unwrap().error_for_status().unwrap().text().unwrap()
        })
    }

    /// A gateway on `PORT` of the public address with a certificate for `domain`.
    fn gateway_tls(&self, domain: &str, public: Ipv4Addr) -> GatewayTls {
        self.add_a(domain, public);
        let root_pem = self.root_pem();
        let root_file = self.dir.join("pebble-root.pem");
        std::fs::write(&root_file, &root_pem).unwrap();
        let section = format!(
            "[tls]\nmode = \"acme\"\ndomains = [\"{domain}\"]\ncontact = [\"mailto:ops@osprey.test\"]\ncache_dir = \"{}\"\n\
             directory = \"https://127.0.0.1:{ACME_PORT}/dir\"\nca_root = \"{}\"\n",
            self.dir.join("acme-cache").display(),
            self.dir.join("pebble-cert.pem").display()
        );
        GatewayTls { section, domain: domain.into(), root_pem, root_file }
    }
}

/// Issue 13's "gateway with ACME (pebble) in front of tunnelled nodes".
#[test]
fn a_gateway_with_an_acme_certificate_serves_https_from_nodes_that_dial_it_over_tls() {
    let net = Network::new();
    if !net.namespaces() {
        eprintln!("netns: skipped (on loopback the nodes could only find the gateway's name in the machine's /etc/hosts)");
        return;
    }
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-netns-pebble"));
    std::fs::create_dir_all(&dir).unwrap();
    let pebble = Pebble::start(net.public(), &dir, PORT);
    let tls = pebble.gateway_tls(DOMAIN, net.public().ip);
    let fleet = Topology::pool(2).tunnel().tls(tls).start_on(net, "acme");

    // Over HTTPS, trusting only pebble's root, from the public side: both nodes answer.
    let load = Load::start(&fleet, "/v1/detect/fast", 4);
    load.pass(8);
    let answers = load.stop();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{}", a.body);
    }
    for (i, host) in fleet.hosts.iter().enumerate() {
        let label = format!("tunnel://node{i}@{}:", host.ip);
        assert!(answers.iter().any(|a| a.node.as_deref().is_some_and(|n| n.starts_with(&label))), "no answer from {label}");
        let opened = fleet.nodes[i].log("tunnel open");
        assert!(opened.len() == 1 && opened[0].contains(&format!("https://{DOMAIN}:{PORT}")), "node{i} dialled the gateway's name over TLS: {opened:?}");
    }
    drop(fleet);
    drop(pebble);
}
