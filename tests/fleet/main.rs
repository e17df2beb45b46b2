//! A gateway in front of a pool of nodes, each a real `osprey serve` process
//! on loopback with the real models: the gateway forwards uploads to the least
//! busy healthy node and names it, passes the node's answer on as it is,
//! retries a request the node never answered on another node, takes a dead
//! node out without failing a request and puts a restarted one back.
//!
//! `tunnel`: the same with nodes that dial out to the gateway.
//! `remote`: a front whose model runs on the nodes (Open Inference Protocol).

mod remote;
mod tunnel;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osprey_tests::process::{free_addr, Osprey, ANY_PORT};
use reqwest::blocking::{Client, Response};
use serde_json::Value;

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn read(resp: Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let node = resp.headers().get("x-osprey-node").map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().unwrap();
    (status, node, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn post(url: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    read(client().post(url).header("content-type", "image/jpeg").body(body).send().unwrap())
}

/// A gateway config of upstream routes only: no models, no plugins.
fn gateway_config(test: &str, nodes: &[String], extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(osprey_tests::unique_name(&format!("osprey-fleet-{test}")));
    std::fs::create_dir_all(&dir).unwrap();
    let list = nodes.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let text = format!(
        r#"
[admin]
watch = false

[upstreams.gpu]
nodes = [{list}]
{extra}

[[routes]]
path = "/v1/detect/fast"
upstream = "gpu"
cache_ttl_s = 0

[[routes]]
path = "/v1/detect"
upstream = "gpu"
cache_ttl_s = 0
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn node_config() -> PathBuf {
    osprey_tests::repo().join("config/osprey.toml")
}

/// Two nodes and a gateway, for the cases that stop none of them.
struct Fleet {
    nodes: Vec<Osprey>,
    gateway: Osprey,
}

/// One test owns the fleet (a static would outlive the test process's
/// handles and leave the servers running), and runs its cases in turn.
#[test]
fn a_gateway_in_front_of_two_nodes() {
    let nodes: Vec<Osprey> = (0..2).map(|_| Osprey::start(&node_config(), ANY_PORT)).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    let gateway = Osprey::start(&gateway_config("shared", &urls, "health_interval_ms = 200"), ANY_PORT);
    let f = Fleet { nodes, gateway };
    forwards_to_a_node_and_names_it(&f);
    concurrent_requests_spread_over_the_nodes(&f);
    a_nodes_refusal_reaches_the_client_as_the_node_gave_it(&f);
    a_node_works_no_longer_than_the_time_the_gateway_gave_it(&f);
    readyz_and_metrics_show_each_node(&f);
    a_refused_connection_is_retried_on_another_node(&f);
}

/// The dog photo with bytes after its end that no decoder reads: a new
/// upload every time, which no cache on the way has seen.
fn fresh_dog() -> Vec<u8> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = osprey_tests::image("dog.jpg");
    bytes.extend_from_slice(format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).as_bytes());
    bytes
}

fn forwards_to_a_node_and_names_it(f: &Fleet) {
    let (status, node, body) = post(&f.gateway.url("/v1/detect/fast"), fresh_dog());
    assert_eq!(status, 200, "{body}");
    assert!(body["detections"].as_array().unwrap().iter().any(|d| d["label"] == "dog"), "{body}");
    let node = node.expect("x-osprey-node on a forwarded answer");
    assert!(f.nodes.iter().any(|n| n.url("") == node), "{node} is not a node of the pool");
}

fn concurrent_requests_spread_over_the_nodes(f: &Fleet) {
    let url = f.gateway.url("/v1/detect");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, fresh_dog()))
        })
        .collect();
    let mut used: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).map(|(s, n, b)| {
        assert_eq!(s, 200, "{b}");
        n.unwrap()
    }).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 2, "eight concurrent requests went to one node only: {used:?}");
}

fn a_nodes_refusal_reaches_the_client_as_the_node_gave_it(f: &Fleet) {
    let (status, node, body) = post(&f.gateway.url("/v1/detect/fast"), b"not a photo".to_vec());
    assert_eq!((status, &body["error"]["code"]), (415, &Value::from("unsupported_media_type")), "{body}");
    assert!(node.is_some(), "the refusal names the node that gave it");
    // Parameters are the node's to check: one its route does not take is refused there.
    let (status, _, body) = post(&f.gateway.url("/v1/detect/fast?nonsense=1"), fresh_dog());
    assert_eq!((status, &body["error"]["code"]), (400, &Value::from("bad_param")), "{body}");
    let (status, _, body) = post(&f.gateway.url("/v1/detect/fast?conf=0.9"), fresh_dog());
    assert_eq!(status, 200, "{body}");
}

fn a_node_works_no_longer_than_the_time_the_gateway_gave_it(f: &Fleet) {
    let resp = client().post(f.nodes[0].url("/v1/detect")).header("content-type", "image/jpeg").header("x-osprey-deadline-ms", "1").body(fresh_dog()).send().unwrap();
    let (status, _, body) = read(resp);
    assert_eq!((status, &body["error"]["code"]), (504, &Value::from("deadline_exceeded")), "{body}");
}

fn readyz_and_metrics_show_each_node(f: &Fleet) {
    assert_eq!(post(&f.gateway.url("/v1/detect/fast"), fresh_dog()).0, 200);
    let ready: Value = client().get(f.gateway.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["upstreams"]["gpu"]["healthy"], 2, "{ready}");
    let text = client().get(f.gateway.url("/metrics")).send().unwrap().text().unwrap();
    for family in ["osprey_upstream_requests_total{", "osprey_upstream_duration_seconds_bucket{", "osprey_upstream_in_flight{", "osprey_upstream_healthy{"] {
        assert!(text.contains(family), "/metrics has no {family}");
    }
    let node = f.nodes[0].url("");
    assert!(text.contains(&format!("osprey_upstream_healthy{{upstream=\"gpu\",node=\"{node}\"}} 1")), "{text}");
}

fn a_refused_connection_is_retried_on_another_node(f: &Fleet) {
    // Nothing listens at the first node; checks are rare, so only the refusal takes it out.
    let dead = format!("http://{}", free_addr());
    let config = gateway_config("retry", &[dead.clone(), f.nodes[1].url("")], "health_interval_ms = 60000");
    let gateway = Osprey::start(&config, ANY_PORT);
    let (status, node, body) = post(&gateway.url("/v1/detect/fast"), fresh_dog());
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.as_deref(), Some(f.nodes[1].url("").as_str()));
    let ready: Value = client().get(gateway.url("/readyz")).send().unwrap().json().unwrap();
    let nodes = ready["upstreams"]["gpu"]["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["node"], dead.as_str());
    assert_eq!(nodes[0]["healthy"], false, "a refused node leaves the pool at once: {ready}");
}

#[test]
fn no_healthy_node_is_a_503_with_retry_after() {
    let dead = format!("http://{}", free_addr());
    let gateway = Osprey::start(&gateway_config("none", &[dead], "health_interval_ms = 100"), ANY_PORT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client().post(gateway.url("/v1/detect/fast")).header("content-type", "image/jpeg").body(fresh_dog()).send().unwrap();
        let retry = resp.headers().get("retry-after").is_some();
        let (status, _, body) = read(resp);
        if status == 503 {
            assert_eq!(body["error"]["code"], "no_healthy_node", "{body}");
            assert!(retry, "503 without Retry-After");
            break;
        }
        assert_eq!(status, 502, "a dead node's first request fails as a bad gateway or 503: {body}");
        assert!(Instant::now() < deadline, "the dead node never left the pool");
    }
}

/// Requests in a loop on `threads` threads until `stop`; every status seen.
fn load(url: String, threads: usize, stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<Vec<(u16, String)>>> {
    (0..threads)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, body) = post(&url, fresh_dog());
                    seen.push((status, body.to_string()));
                }
                seen
            })
        })
        .collect()
}

#[test]
fn a_node_killed_under_load_fails_no_request_and_comes_back_when_restarted() {
    let mut nodes: Vec<Osprey> = (0..2).map(|_| Osprey::start(&node_config(), ANY_PORT)).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url("")).collect();
    // The default health interval (1 s): what an operator gets.
    let gateway = Osprey::start(&gateway_config("failover", &urls, ""), ANY_PORT);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(gateway.url("/v1/detect/fast"), 4, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    nodes[0].kill();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<(u16, String)> = running.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(seen.len() > 20, "the load ran: {} requests", seen.len());
    assert!(failed.is_empty(), "{} of {} requests failed while a node died: {:?}", failed.len(), seen.len(), &failed[..failed.len().min(3)]);

    // Back on its address, it serves again within 2 s of listening.
    nodes[0] = Osprey::start(&node_config(), addrs[0]);
    let listening = Instant::now();
    loop {
        // Alone in flight, the first node of the list is the least busy.
        let (status, node, body) = post(&gateway.url("/v1/detect/fast"), fresh_dog());
        assert_eq!(status, 200, "{body}");
        if node.as_deref() == Some(urls[0].as_str()) {
            break;
        }
        assert!(listening.elapsed() < Duration::from_secs(2), "the restarted node was not back within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}
