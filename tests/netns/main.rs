//! Osprey as hosts of a real network on one machine (`tests/src/netns.rs`):
//! the gateways in a "public" network namespace, each node (and Redis) in a
//! namespace of its own on a bridge, every one a real `osprey serve` on the
//! real models, the clients in the public namespace. Where namespaces cannot
//! be made the same tests run on loopback and say so on stderr; the checks
//! of the network itself (NAT, a cut link, names resolved per host) need
//! namespaces and say they were skipped.
//!
//! Issue 13's cases, one `Topology` each:
//! - here: a listed node killed under load, then restarted;
//! - `harness`: the network's own promises (NAT, a cut link, clean-up);
//! - `tunnel`: nodes behind NAT (nftables) that dial out to the gateway, and
//!   one node's link cut and restored under load;
//! - `acme`: the gateway's certificate from pebble in the public namespace,
//!   the nodes dialling `https://` and trusting pebble's root;
//! - `redis`: two gateways sharing a Redis in its own namespace, which is
//!   killed and started again under load.

mod acme;
mod harness;
mod redis;
mod tunnel;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use osprey_tests::netns::{Host, Network, Reach};
use osprey_tests::process::Osprey;
use reqwest::blocking::Client;
use serde_json::Value;

/// The port every server takes in its namespace (on loopback: any); a
/// second gateway takes the next.
const PORT: u16 = 8080;
/// The pool's tunnel token: in the gateways' environment under
/// `GATEWAY_ENV`, in the nodes' under `[gateway]`'s default variable.
const TOKEN: &str = "netns-tunnel-token-0123456789abcdef";
const GATEWAY_ENV: &str = "OSPREY_TUNNEL_TOKEN_GPU";
const NODE_ENV: &str = "OSPREY_GATEWAY_TOKEN";

/// Gateways and their pool, made in one place: each case changes a few
/// lines (the nodes' reach, TLS, Redis, the route), not the wiring.
struct Topology {
    nodes: usize,
    reach: Reach,
    gateways: usize,
    redis: bool,
    tls: Option<acme::GatewayTls>,
    gateway_extra: String,
    route: String,
}

impl Topology {
    /// `nodes` reachable nodes on the default config, in a pool named `gpu`
    /// that one gateway lists; its route caches nothing.
    fn pool(nodes: usize) -> Topology {
        Topology { nodes, reach: Reach::Open, gateways: 1, redis: false, tls: None, gateway_extra: String::new(), route: "cache_ttl_s = 0".into() }
    }

    /// Nodes behind NAT: only their own connections reach the gateway, so
    /// each dials out to one (`[gateway] connect`, node i to gateway i mod n)
    /// and the pool takes tunnels (`tunnel_token_env`) instead of a list.
    fn tunnel(mut self) -> Topology {
        self.reach = Reach::OutboundOnly;
        self
    }

    /// `n` gateways on the public side, on ports `PORT`, `PORT + 1`...
    fn gateways(mut self, n: usize) -> Topology {
        self.gateways = n;
        self
    }

    /// A Redis in a namespace of its own, which every gateway shares.
    fn redis(mut self) -> Topology {
        self.redis = true;
        self
    }

    /// The gateway's `[tls]` (ACME from pebble): nodes dial `https://` and
    /// find the gateway by its name, clients trust pebble's root.
    fn tls(mut self, tls: acme::GatewayTls) -> Topology {
        self.tls = Some(tls);
        self
    }

    /// Lines added under `[upstreams.gpu]` (health interval...).
    fn gateway_extra(mut self, lines: &str) -> Topology {
        self.gateway_extra = lines.into();
        self
    }

    /// The route's lines after `upstream` (cache, deadline, rate limit).
    fn route(mut self, lines: &str) -> Topology {
        self.route = lines.into();
        self
    }

    fn start(self, test: &str) -> Fleet {
        self.start_on(Network::new(), test)
    }

    /// On a network the test made first (pebble running on its public side).
    fn start_on(self, mut net: Network, test: &str) -> Fleet {
        let dir = std::env::temp_dir().join(osprey_tests::unique_name(&format!("osprey-netns-{test}")));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts: Vec<Host> = (0..self.nodes).map(|i| net.add_host(&format!("node{i}"), self.reach)).collect();
        let redis = self.redis.then(|| redis::Redis::start(net.add_host("redis", Reach::Open)));
        let tunnel = self.reach == Reach::OutboundOnly;
        // Listed nodes must listen before a gateway checks them; tunnelled
        // ones need a gateway to dial.
        let mut nodes = Vec::new();
        if !tunnel {
            nodes = hosts.iter().map(|h| Osprey::start_in(h, &node_config(), h.listen_addr(PORT))).collect();
        }
        let pool = match tunnel {
            true => format!("tunnel_token_env = \"{GATEWAY_ENV}\""),
            false => format!("nodes = [{}]", nodes.iter().map(|n| format!("\"{}\"", n.url(""))).collect::<Vec<_>>().join(", ")),
        };
        let config = gateway_config(&dir, &self, &pool, redis.as_ref());
        let gateways: Vec<Osprey> = (0..self.gateways)
            .map(|i| Osprey::start_in_env(net.public(), &config, net.public().listen_addr(PORT + i as u16), &[(GATEWAY_ENV, TOKEN)]))
            .collect();
        let mut fleet = Fleet { gateways, nodes, redis, hosts, net, tls: self.tls, dir };
        if let Some(tls) = &fleet.tls {
            tls.wait_for_certificate(&fleet);
        }
        if tunnel {
            fleet.nodes = (0..self.nodes).map(|i| fleet.start_tunnel_node(i)).collect();
            for g in 0..self.gateways {
                let dialling = (0..self.nodes).filter(|i| i % self.gateways == g).count();
                fleet.wait_for_tunnels(g, dialling, Duration::from_secs(30));
            }
        }
        fleet
    }
}

/// A gateway config of upstream routes only: no models, no plugins.
fn gateway_config(dir: &Path, t: &Topology, pool: &str, redis: Option<&redis::Redis>) -> PathBuf {
    let redis = redis.map(|r| format!("[redis]\nurl = \"{}\"\ntimeout_ms = 200\nrecheck_ms = 200\n\n", r.url())).unwrap_or_default();
    let tls = t.tls.as_ref().map(|t| t.section.clone()).unwrap_or_default();
    let (extra, route) = (&t.gateway_extra, &t.route);
    let text = format!(
        "[admin]\nwatch = false\n\n{redis}{tls}\n[upstreams.gpu]\n{pool}\n{extra}\n\n\
         [[routes]]\npath = \"/v1/detect/fast\"\nupstream = \"gpu\"\n{route}\n"
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Fields drop in order: the servers before the network they run in.
struct Fleet {
    gateways: Vec<Osprey>,
    nodes: Vec<Osprey>,
    redis: Option<redis::Redis>,
    hosts: Vec<Host>,
    net: Network,
    tls: Option<acme::GatewayTls>,
    /// The configs written for this fleet.
    dir: PathBuf,
}

impl Fleet {
    /// Where a client reaches gateway `g`: `https://NAME:PORT` under TLS.
    fn url(&self, g: usize, path: &str) -> String {
        match &self.tls {
            Some(tls) => format!("https://{}:{}{path}", tls.domain, self.gateways[g].addr.port()),
            None => self.gateways[g].url(path),
        }
    }

    /// How a client of the public side is made (on the thread that uses it).
    fn client(&self) -> ClientSpec {
        ClientSpec { tls: self.tls.as_ref().map(|t| (t.root_pem.clone(), t.domain.clone(), self.gateways[0].addr.ip())) }
    }

    /// A POST to the first gateway from a client in the public namespace.
    fn post(&self, path: &str) -> (u16, Option<String>, Value) {
        let (url, client) = (self.url(0, path), self.client());
        self.net.public().run(move || post(&client.build(), &url, fresh_dog()))
    }

    /// A GET of `/readyz` on gateway `g`, from the public namespace.
    fn ready(&self, g: usize) -> Value {
        let (url, client) = (self.url(g, "/readyz"), self.client());
        self.net.public().run(move || client.build().get(&url).send().and_then(|r| r.json()).unwrap_or_else(|e| panic!("GET {url}: {e}")))
    }

    /// Node `i` behind NAT, dialling gateway `i mod n` with the pool's token.
    fn start_tunnel_node(&self, i: usize) -> Osprey {
        let host = &self.hosts[i];
        let gateway = &self.gateways[i % self.gateways.len()];
        let (connect, ca_root) = match &self.tls {
            Some(tls) => {
                host.resolve(&tls.domain, self.net.public().ip);
                (format!("https://{}:{}", tls.domain, gateway.addr.port()), format!("ca_root = \"{}\"\n", tls.root_file.display()))
            }
            None => (gateway.url(""), String::new()),
        };
        let repo = osprey_tests::repo();
        let base = std::fs::read_to_string(node_config()).unwrap().replace("\"../", &format!("\"{}/", repo.display()));
        let text = format!("{base}\n[admin]\nwatch = false\n\n[gateway]\nconnect = \"{connect}\"\npool = \"gpu\"\nname = \"node{i}\"\n{ca_root}");
        let path = self.dir.join(format!("node{i}.toml"));
        std::fs::write(&path, text).unwrap();
        Osprey::start_in_env(host, &path, host.listen_addr(PORT), &[(NODE_ENV, TOKEN)])
    }

    /// Waits until gateway `g`'s pool has `n` tunnels, all healthy; how long it took.
    fn wait_for_tunnels(&self, g: usize, n: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let r = self.ready(g);
            if r["upstreams"]["gpu"]["tunnels"] == n && r["upstreams"]["gpu"]["healthy"] == n {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "gateway {g}: not {n} tunnels within {limit:?}: {r}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A blocking client made on the thread that uses it (so in its namespace):
/// plain, or trusting only pebble's root and finding the gateway's name at
/// the public address (the test's threads see no namespace's hosts file).
#[derive(Clone)]
struct ClientSpec {
    tls: Option<(String, String, std::net::IpAddr)>,
}

impl ClientSpec {
    fn build(&self) -> Client {
        let mut b = Client::builder().timeout(Duration::from_secs(60));
        if let Some((root, domain, ip)) = &self.tls {
            // The port is the URL's: every gateway is on the public address.
            let root = reqwest::Certificate::from_pem(root.as_bytes()).unwrap();
            b = b.tls_built_in_root_certs(false).add_root_certificate(root).resolve(domain, SocketAddr::new(*ip, 0));
        }
        b.build().unwrap()
    }
}

/// What one request under load saw, and when its answer was complete.
struct Seen {
    done: Instant,
    took: Duration,
    status: u16,
    node: Option<String>,
    body: Value,
}

/// Clients posting fresh uploads in a loop from the public namespace until
/// stopped, client `c` to gateway `c mod n`; everything they saw kept.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(fleet: &Fleet, path: &str, clients: usize) -> Load {
        let (stop, seen) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let threads = (0..clients)
            .map(|c| {
                let (url, client) = (fleet.url(c % fleet.gateways.len(), path), fleet.client());
                let (stop, seen) = (stop.clone(), seen.clone());
                fleet.net.public().spawn(move || {
                    let client = client.build();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let (status, node, body) = post(&client, &url, fresh_dog());
                        seen.lock().unwrap().push(Seen { done: Instant::now(), took: started.elapsed(), status, node, body });
                    }
                })
            })
            .collect();
        Load { stop, seen, threads }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (at most a minute: a stalled load is a failure) for `more` answers.
    fn pass(&self, more: usize) {
        let (from, started) = (self.count(), Instant::now());
        while self.count() < from + more {
            assert!(started.elapsed() < Duration::from_secs(60), "the load stalled at {} requests", self.count());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `limit`) for an answer after `after` from a node whose
    /// label starts with `node`; when it was complete.
    fn until_served_by(&self, node: &str, after: Instant, limit: Duration) -> Option<Instant> {
        loop {
            let found = self.seen.lock().unwrap().iter().filter(|s| s.done > after && s.node.as_deref().is_some_and(|n| n.starts_with(node))).map(|s| s.done).min();
            if found.is_some() || after.elapsed() > limit {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().for_each(|t| t.join().unwrap());
        Arc::try_unwrap(self.seen).ok().expect("the clients are done").into_inner().unwrap()
    }
}

/// Every answer that was not a 200, printed three at most; the count of all.
fn failures(seen: &[Seen]) -> (usize, Vec<String>) {
    let failed: Vec<String> = seen.iter().filter(|s| s.status != 200).map(|s| format!("{} after {:?}: {}", s.status, s.took, s.body)).collect();
    (seen.len(), failed)
}

fn node_config() -> PathBuf {
    osprey_tests::repo().join("config/osprey.toml")
}

/// Status, the serving node (`x-osprey-node`) and the body; a request that
/// got no answer at all is status 0 with the error as its body.
fn post(client: &Client, url: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let resp = match client.post(url).header("content-type", "image/jpeg").body(body).send() {
        Ok(resp) => resp,
        Err(e) => return (0, None, Value::String(format!("POST {url}: {e:?}"))),
    };
    let status = resp.status().as_u16();
    let node = resp.headers().get("x-osprey-node").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().unwrap_or_else(|e| format!("the answer broke off: {e}"));
    (status, node, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The dog photo with bytes after its end: an upload no cache has seen.
fn fresh_dog() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut bytes = osprey_tests::image("dog.jpg");
    bytes.extend_from_slice(format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).as_bytes());
    bytes
}

/// Issue 13's case on a real network: a 4-client load through the gateway,
/// a node killed with SIGKILL (no goodbye) costs no request; the node
/// restarted on its address serves again within 2 s of listening.
#[test]
fn a_node_killed_under_load_fails_no_request_and_restarted_serves_within_2_s() {
    // The default health interval, written out: what an operator gets.
    let mut fleet = Topology::pool(2).gateway_extra("health_interval_ms = 1000").start("failover");
    let (status, node, body) = fleet.post("/v1/detect/fast");
    assert_eq!(status, 200, "{body}");
    assert!(body["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{body}");
    let node = node.expect("x-osprey-node on a forwarded answer");
    assert!(fleet.nodes.iter().any(|n| n.url("") == node), "{node} is none of the nodes");
    if fleet.net.namespaces() {
        assert!(node.starts_with("http://10.77.0."), "the node answered from its own namespace's address: {node}");
    }

    let load = Load::start(&fleet, "/v1/detect/fast", 4);
    std::thread::sleep(Duration::from_millis(1500));
    fleet.nodes[0].kill();
    std::thread::sleep(Duration::from_millis(2500));
    let (total, failed) = failures(&load.stop());
    assert!(total > 20, "the load ran: {total} requests");
    assert!(failed.is_empty(), "{} of {total} requests failed while a node died: {:?}", failed.len(), &failed[..failed.len().min(3)]);

    let (addr, url) = (fleet.nodes[0].addr, fleet.nodes[0].url(""));
    fleet.nodes[0] = Osprey::start_in(&fleet.hosts[0], &node_config(), addr);
    let listening = Instant::now();
    loop {
        // Alone in flight, the first node of the list is the least busy.
        let (status, node, body) = fleet.post("/v1/detect/fast");
        assert_eq!(status, 200, "{body}");
        if node.as_deref() == Some(url.as_str()) {
            break;
        }
        assert!(listening.elapsed() < Duration::from_secs(2), "the restarted node was not back within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `from` can open a TCP connection to `to` within `wait`.
fn connects(from: &Host, to: SocketAddr, wait: Duration) -> bool {
    from.run(move || TcpStream::connect_timeout(&to, wait).is_ok())
}
