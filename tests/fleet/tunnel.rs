//! Nodes that dial out (`[gateway]`): a gateway with no listed nodes, and
//! nodes, each a real `osprey serve` process with the real models, that open
//! a connection to it over loopback and serve its pool over that connection.
//! Refusals (wrong token, unknown pool), a node killed, restarted and
//! stopped (SIGTERM) under load, and the gateway restarted under its nodes.
//! Loopback stands in for a NAT here: the gateway is never told an address
//! of a node's, only the connections the nodes open reach it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osprey_tests::process::{Osprey, ANY_PORT};
use serde_json::Value;

use super::{client, fresh_dog, load, post};

const TOKEN: &str = "tunnel-token-0123456789abcdef";
const GATEWAY_ENV: &str = "OSPREY_TUNNEL_TOKEN_GPU";

fn test_dir() -> PathBuf {
    let dir = osprey_tests::repo().join("target/test-configs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway whose pool `gpu` takes nodes that dial in, and a pool `listed`
/// of one listed node (nothing listens there) that takes none.
fn gateway_config() -> PathBuf {
    let text = format!(
        r#"
[admin]
watch = false

[upstreams.gpu]
tunnel_token_env = "{GATEWAY_ENV}"

[upstreams.listed]
nodes = ["http://127.0.0.1:9"]

[[routes]]
path = "/v1/detect/fast"
upstream = "gpu"
cache_ttl_s = 0
"#
    );
    let path = test_dir().join(format!("{}.toml", osprey_tests::unique_name("tunnel-gateway")));
    std::fs::write(&path, text).unwrap();
    path
}

fn start_gateway(config: &Path, listen: SocketAddr) -> Osprey {
    Osprey::start_env(config, listen, &[(GATEWAY_ENV, TOKEN)])
}

/// The default config (models and routes, paths made absolute) plus
/// `[gateway]`; `models = false` leaves the models out, for nodes that are
/// only refused.
fn node_config(gateway: &Osprey, pool: &str, name: &str, models: bool) -> PathBuf {
    let repo = osprey_tests::repo();
    let base = if models { std::fs::read_to_string(repo.join("config/osprey.toml")).unwrap().replace("\"../", &format!("\"{}/", repo.display())) } else { String::new() };
    let text = format!("{base}\n[admin]\nwatch = false\n\n[gateway]\nconnect = \"{}\"\npool = \"{pool}\"\nname = \"{name}\"\n", gateway.url(""));
    let path = test_dir().join(format!("{}.toml", osprey_tests::unique_name(&format!("tunnel-{name}"))));
    std::fs::write(&path, text).unwrap();
    path
}

fn start_node(gateway: &Osprey, name: &str) -> Osprey {
    Osprey::start_env(&node_config(gateway, "gpu", name, true), ANY_PORT, &[("OSPREY_GATEWAY_TOKEN", TOKEN)])
}

fn ready(gateway: &Osprey) -> Value {
    client().get(gateway.url("/readyz")).send().unwrap().json().unwrap()
}

/// Waits until the pool has `n` tunnels, all healthy; the time it took.
fn wait_for_tunnels(gateway: &Osprey, n: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = ready(gateway);
        if r["upstreams"]["gpu"]["tunnels"] == n && r["upstreams"]["gpu"]["healthy"] == n {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not {n} tunnels within {limit:?}: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tunnel://NAME@127.0.0.1:PORT`: the node's name and the address its connection came from.
fn named(label: &str, name: &str) -> bool {
    label.starts_with(&format!("tunnel://{name}@127.0.0.1:"))
}

/// Requests two at a time (the second goes to the other node when both
/// are free) until `name` answers one; how long that took.
fn until_served_by(gateway: &Osprey, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let url = gateway.url("/v1/detect/fast");
    loop {
        let pair: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || post(&url, fresh_dog()))
            })
            .collect();
        for (status, node, body) in pair.into_iter().map(|t| t.join().unwrap()) {
            assert_eq!(status, 200, "{body}");
            if named(node.as_deref().unwrap_or(""), name) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < limit, "{name} answered nothing within {limit:?}");
    }
}

/// `seconds` of load on four clients while `during` runs after one second;
/// every request that did not answer 200.
fn under_load(gateway: &Osprey, seconds: f64, during: impl FnOnce()) -> (usize, Vec<(u16, String)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(gateway.url("/v1/detect/fast"), 4, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    during();
    std::thread::sleep(Duration::from_secs_f64(seconds).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(u16, String)> = running.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let total = seen.len();
    (total, seen.into_iter().filter(|(s, _)| *s != 200).collect())
}

/// One gateway and two nodes that dial in, through the cases in turn (each
/// node start loads the real models: a fleet per case would cost minutes).
#[test]
fn nodes_behind_nat_dial_out_and_serve_the_gateways_pool() {
    let config = gateway_config();
    let mut gateway = start_gateway(&config, ANY_PORT);
    let mut nodes = vec![start_node(&gateway, "node-a"), start_node(&gateway, "node-b")];
    wait_for_tunnels(&gateway, 2, Duration::from_secs(10));

    // Answers name the tunnel node that served them.
    let url = gateway.url("/v1/detect/fast");
    let running: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, fresh_dog()))
        })
        .collect();
    let answers: Vec<_> = running.into_iter().map(|t| t.join().unwrap()).collect();
    for (status, node, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{body}");
        let node = node.as_deref().unwrap();
        assert!(named(node, "node-a") || named(node, "node-b"), "{node}");
    }
    for name in ["node-a", "node-b"] {
        assert!(answers.iter().any(|(_, n, _)| named(n.as_deref().unwrap(), name)), "eight concurrent requests, none to {name}");
    }
    let metrics = client().get(gateway.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("osprey_upstream_tunnels{upstream=\"gpu\"} 2"), "{metrics}");
    assert!(nodes[0].log("tunnel open").len() == 1, "the node logs its tunnel: {:?}", nodes[0].log("gateway"));

    // A node killed (no goodbye) under load: its requests are retried on the other.
    let (total, failed) = under_load(&gateway, 4.0, || nodes[0].kill());
    assert!(total > 20, "the load ran: {total} requests");
    assert!(failed.is_empty(), "{} of {total} requests failed while a node died: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    wait_for_tunnels(&gateway, 1, Duration::from_secs(5));

    // Restarted, it dials back and serves within 2 s of listening.
    nodes[0] = start_node(&gateway, "node-a");
    let back = until_served_by(&gateway, "node-a", Duration::from_secs(2));
    eprintln!("restarted node served again {} ms after it listened (busy machine)", back.as_millis());

    // SIGTERM under load: GOAWAY, its requests finish, nothing fails.
    let mut exit = None;
    let (total, failed) = under_load(&gateway, 3.0, || exit = Some(nodes[1].terminate()));
    assert_eq!(exit.unwrap().code(), Some(0), "exit status after SIGTERM");
    assert!(failed.is_empty(), "{} of {total} requests failed while a node left: {:?}", failed.len(), &failed[..failed.len().min(3)]);
    assert_eq!(nodes[1].log("left the gateway").len(), 1, "the node says it left cleanly");
    wait_for_tunnels(&gateway, 1, Duration::from_secs(5));

    // The gateway restarted under its nodes: both dial back.
    nodes[1] = start_node(&gateway, "node-b");
    wait_for_tunnels(&gateway, 2, Duration::from_secs(10));
    let addr = gateway.addr;
    gateway.kill();
    gateway = start_gateway(&config, addr);
    let again = wait_for_tunnels(&gateway, 2, Duration::from_secs(35));
    eprintln!("both nodes dialled back {} ms after the restarted gateway listened (busy machine)", again.as_millis());
    for node in &nodes {
        assert!(node.wait_for_log("dialling again in", 1, Duration::from_secs(1)), "each reconnect attempt is logged");
    }
    let (status, node, body) = post(&gateway.url("/v1/detect/fast"), fresh_dog());
    assert_eq!(status, 200, "{body}");
    assert!(node.unwrap().starts_with("tunnel://node-"));
}

/// A raw `GET /v1/tunnel` asking to dial in: the status and the error code.
fn ask_tunnel(gateway: &Osprey, pool: &str, token: &str, upgrade: &str) -> (u16, String) {
    let mut s = TcpStream::connect(gateway.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /v1/tunnel HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: {upgrade}\r\nauthorization: Bearer {token}\r\nx-osprey-pool: {pool}\r\nx-osprey-node-name: probe\r\n\r\n",
        gateway.addr
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then the body its content-length announces.
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed the connection: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end].lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())).unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = text[9..12].parse().unwrap();
                let body: Value = serde_json::from_str(&text[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return (status, body["error"]["code"].as_str().unwrap_or("").to_string());
            }
        }
    }
}

#[test]
fn a_wrong_token_or_a_pool_without_tunnels_is_refused() {
    let gateway = start_gateway(&gateway_config(), ANY_PORT);
    assert_eq!(ask_tunnel(&gateway, "gpu", "not-the-token-0123456789", "osprey-tunnel"), (401, "unauthorized".into()));
    assert_eq!(ask_tunnel(&gateway, "nope", TOKEN, "osprey-tunnel"), (404, "unknown_pool".into()));
    assert_eq!(ask_tunnel(&gateway, "listed", TOKEN, "osprey-tunnel"), (404, "unknown_pool".into()), "a pool without tunnel_token_env");
    assert_eq!(ask_tunnel(&gateway, "gpu", TOKEN, "websocket"), (400, "bad_tunnel_request".into()));

    // Real nodes refused: each logs why and keeps trying, and the pool stays empty.
    let wrong = Osprey::start_env(&node_config(&gateway, "gpu", "wrong", false), ANY_PORT, &[("OSPREY_GATEWAY_TOKEN", "not-the-token-0123456789")]);
    let unknown = Osprey::start_env(&node_config(&gateway, "nope", "lost", false), ANY_PORT, &[("OSPREY_GATEWAY_TOKEN", TOKEN)]);
    assert!(wrong.wait_for_log("the gateway refused the tunnel: 401 Unauthorized wrong tunnel token for pool 'gpu'", 3, Duration::from_secs(10)), "{:?}", wrong.log("gateway"));
    assert!(unknown.wait_for_log("the gateway refused the tunnel: 404 Not Found no pool 'nope'", 3, Duration::from_secs(10)), "{:?}", unknown.log("gateway"));
    let r = ready(&gateway);
    assert_eq!((&r["upstreams"]["gpu"]["tunnels"], &r["upstreams"]["gpu"]["healthy"]), (&Value::from(0), &Value::from(0)), "{r}");
    let (status, _, body) = post(&gateway.url("/v1/detect/fast"), fresh_dog());
    assert_eq!((status, &body["error"]["code"]), (503, &Value::from("no_healthy_node")), "{body}");
}
