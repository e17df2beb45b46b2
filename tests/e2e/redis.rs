//! Hosts sharing one Redis (Debian's redis-server, started here on
//! 127.0.0.1): an answer cached by one is a hit on the other, and a client's
//! token bucket is the same bucket on both. Then two gateways (real
//! `osprey serve` processes in front of one node) under load while Redis is
//! killed and started again on its port: no request fails, the buckets still
//! limit, `/readyz` and `/metrics` say where the state is, and both gateways
//! share through Redis again once it is back.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osprey_tests::process::{Osprey, ANY_PORT};
use osprey_tests::TestServer;
use serde_json::Value;

use super::client;

/// A redis-server of our own, stopped when dropped.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port is only free until someone takes it: between our probe and
/// redis-server's bind, another test's listener may. Then redis-server exits
/// and another port is tried; a PING proves the one that answers is ours.
fn start_redis() -> (Redis, u16) {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if let Some(redis) = redis_on(port) {
            return (redis, port);
        }
    }
    panic!("redis-server exited on 5 ports in a row (is it installed and runnable?)");
}

/// A redis-server on `port`, once it answers; `None` if it exited (the port was taken).
fn redis_on(port: u16) -> Option<Redis> {
    let mut redis = Redis(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; `make test-deps` installs it)"),
    );
    let started = Instant::now();
    while redis.0.try_wait().unwrap().is_none() {
        if pong(port) {
            return Some(redis);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 7];
    tcp.write_all(b"PING\r\n").is_ok() && tcp.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// An in-process host; `redis` adds lines to its `[redis]` table.
fn host(dir: &Path, name: &str, port: u16, redis: &str) -> TestServer {
    let config = format!(
        r#"
[redis]
url = "redis://127.0.0.1:{port}"
{redis}

{CLASSIFIER}

[[routes]]
path = "/classify"
cache_ttl_s = 60
rate_limit = {{ rate = 0.01, burst = 3 }}
{STAGES}
"#,
        CLASSIFIER = classifier()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    osprey_tests::start(&path)
}

fn post(server: &TestServer, image: &str) -> (u16, String) {
    let resp = client().post(server.url("/classify")).header("content-type", "image/png").body(osprey_tests::image(image)).send().unwrap();
    (resp.status().as_u16(), resp.headers().get("x-osprey-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default())
}

#[test]
fn two_hosts_share_the_cache_and_the_buckets_through_redis() {
    let (_redis, port) = start_redis();
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-redis"));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (host(&dir, "a", port, ""), host(&dir, "b", port, ""));
    // Host a computes and stores; host b finds the answer.
    assert_eq!(post(&a, "astronaut.png"), (200, "miss".into()));
    assert_eq!(post(&b, "astronaut.png"), (200, "hit".into()));
    // Three tokens for this client across both hosts (the burst), then 429 on either.
    assert_eq!(post(&b, "coffee.png").0, 200);
    let refused = client().post(a.url("/classify")).header("content-type", "image/png").body(osprey_tests::image("coffee.png")).send().unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}

/// A Redis that stops answering but closes nothing (SIGSTOP: the kernel
/// still accepts its connections) costs the first request one `timeout_ms`,
/// and the requests after it nothing: the host is down and does not ask.
#[test]
fn a_blackholed_redis_costs_one_request_its_timeout_then_nothing() {
    let (redis, port) = start_redis();
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-redis-blackhole"));
    std::fs::create_dir_all(&dir).unwrap();
    let timeout = Duration::from_millis(1000);
    let server = host(&dir, "blackhole", port, "timeout_ms = 1000\nrecheck_ms = 600_000");
    assert_eq!(post(&server, "chelsea.png"), (200, "miss".into()));
    signal(&redis, "-STOP");
    let started = Instant::now();
    // Redis kept the answer, but cannot give it: the host computes it again.
    assert_eq!(post(&server, "chelsea.png"), (200, "miss".into()));
    assert!(started.elapsed() >= timeout, "the first request did not wait for Redis at all: {:?}", started.elapsed());
    let ready: Value = client().get(server.url("/readyz")).send().unwrap().json().unwrap();
    assert_eq!(ready["redis"]["state"], "down", "{ready}");
    // Then the host's own cache answers, and its own bucket (3 tokens, one
    // taken above) limits; none of them waits on Redis.
    for expected in [200, 200, 429] {
        let started = Instant::now();
        let (status, cache) = post(&server, "chelsea.png");
        assert_eq!(status, expected);
        if status == 200 {
            assert_eq!(cache, "hit", "the host's own cache answers");
        }
        assert!(started.elapsed() < timeout, "a request waited on the stopped Redis: {:?}", started.elapsed());
    }
    signal(&redis, "-CONT");
}

fn signal(redis: &Redis, which: &str) {
    let status = Command::new("kill").args([which, &redis.0.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {which} redis-server");
}

/// The classification model and the plugins of `STAGES`, on every host that runs them.
fn classifier() -> String {
    format!(
        r#"[models.classifier]
file = "{repo}/models/efficientnet_lite3/model.onnx"
labels = "{repo}/models/efficientnet_lite3/labels.txt"
instances = 1
threads = 1

[plugins.image-prep]
file = "{repo}/target/wasm32-wasip2/plugin/image_prep.wasm"

[plugins.classify]
file = "{repo}/target/wasm32-wasip2/plugin/classify.wasm"
"#,
        repo = osprey_tests::repo().display()
    )
}

/// The stages of every route that classifies here (the in-process hosts', the node's).
const STAGES: &str = r#"stages = [
  { plugin = "image-prep", settings = { width = 280, height = 280, fit = "stretch", dtype = "u8" } },
  { plugin = "classify", settings = { model = "classifier", top = 2 } },
]"#;

/// A node with the model, caching nothing and limiting nobody: what the
/// gateways answer from their cache and refuse by their buckets is theirs.
fn node_config(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
[admin]
watch = false

{CLASSIFIER}

[[routes]]
path = "/classify"
cache_ttl_s = 0
{STAGES}

[[routes]]
path = "/limited"
cache_ttl_s = 0
{STAGES}
"#,
        CLASSIFIER = classifier()
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A gateway: Redis checked again every 200 ms once down, clients told apart by a key.
fn gateway_config(dir: &Path, redis_port: u16, node: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
api_key_header = "x-api-key"

[admin]
watch = false

[redis]
url = "redis://127.0.0.1:{redis_port}"
timeout_ms = 200
recheck_ms = 200

[upstreams.gpu]
nodes = ["{node}"]

[[routes]]
path = "/classify"
upstream = "gpu"
cache_ttl_s = 60
rate_limit = {{ rate = 1000, burst = 1000 }}

[[routes]]
path = "/limited"
upstream = "gpu"
cache_ttl_s = 60
rate_limit = {{ rate = 0.01, burst = 3 }}
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// POSTs an image as client `key`: status and the cache's word (hit/miss).
fn send(gateway: &Osprey, path: &str, image: &str, key: &str) -> (u16, String) {
    let resp = client()
        .post(gateway.url(path))
        .header("content-type", if image.ends_with(".png") { "image/png" } else { "image/jpeg" })
        .header("x-api-key", key)
        .body(osprey_tests::image(image))
        .send()
        .unwrap();
    let cache = resp.headers().get("x-osprey-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    if resp.status().as_u16() == 429 {
        assert!(resp.headers().contains_key("retry-after"), "a 429 without retry-after");
    }
    (resp.status().as_u16(), cache)
}

fn redis_state(gateway: &Osprey) -> Value {
    let ready = client().get(gateway.url("/readyz")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 200, "/readyz must stay 200: the gateway serves from local state");
    ready.json::<Value>().unwrap()["redis"].clone()
}

/// The value of the metric line starting with `name` (labels included), if any.
fn metric(gateway: &Osprey, name: &str) -> Option<f64> {
    let text = client().get(gateway.url("/metrics")).send().unwrap().text().unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

/// Waits (at most `limit`) until both gateways say Redis is `state`; how long it took.
fn until_both(gateways: &[&Osprey], state: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !gateways.iter().all(|g| redis_state(g)["state"] == state) {
        let states: Vec<Value> = gateways.iter().map(|g| redis_state(g)).collect();
        assert!(started.elapsed() < limit, "gateways did not see redis {state} within {limit:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Clients posting to both gateways in turn until stopped; every status kept.
struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(urls: [String; 2]) -> Load {
        let (stop, statuses) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let threads = (0..3)
            .map(|i| {
                let (stop, statuses, urls) = (stop.clone(), statuses.clone(), urls.clone());
                std::thread::spawn(move || {
                    let images = ["astronaut.png", "chelsea.png", "coffee.png"];
                    let bodies: Vec<Vec<u8>> = images.iter().map(|i| osprey_tests::image(i)).collect();
                    let mut n = i;
                    while !stop.load(Ordering::Relaxed) {
                        let resp = client()
                            .post(format!("{}/classify", urls[n % 2]))
                            .header("content-type", "image/png")
                            .header("x-api-key", format!("load-{i}"))
                            .body(bodies[n % 3].clone())
                            .send();
                        // A connection error is a failure too: 0.
                        statuses.lock().unwrap().push(resp.map_or(0, |r| r.status().as_u16()));
                        n += 1;
                    }
                })
            })
            .collect();
        Load { stop, statuses, threads }
    }

    fn count(&self) -> usize {
        self.statuses.lock().unwrap().len()
    }

    /// Waits (bounded) until `more` requests beyond `from` were answered.
    fn pass(&self, from: usize, more: usize) {
        let started = Instant::now();
        while self.count() < from + more {
            assert!(started.elapsed() < Duration::from_secs(60), "load stalled at {} requests", self.count());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().for_each(|t| t.join().unwrap());
        Arc::try_unwrap(self.statuses).unwrap().into_inner().unwrap()
    }
}

#[test]
fn two_gateways_keep_serving_while_redis_is_killed_and_restarted_under_load() {
    let (redis, port) = start_redis();
    let dir = std::env::temp_dir().join(osprey_tests::unique_name("osprey-redis-gateways"));
    std::fs::create_dir_all(&dir).unwrap();
    let node = Osprey::start(&node_config(&dir), ANY_PORT);
    let config = gateway_config(&dir, port, &node.url(""));
    let (a, b) = (Osprey::start(&config, ANY_PORT), Osprey::start(&config, ANY_PORT));
    let up = format!("osprey_redis_up{{url=\"redis://127.0.0.1:{port}\"}}");

    // Shared while Redis answers: a miss on one is a hit on the other; one bucket across both.
    assert_eq!(redis_state(&a)["state"], "up");
    assert_eq!(send(&a, "/classify", "dog.jpg", "up"), (200, "miss".into()));
    assert_eq!(send(&b, "/classify", "dog.jpg", "up"), (200, "hit".into()));
    assert_eq!(send(&a, "/limited", "person.jpg", "up").0, 200);
    assert_eq!(send(&b, "/limited", "person.jpg", "up").0, 200);
    assert_eq!(send(&a, "/limited", "person.jpg", "up").0, 200);
    assert_eq!(send(&b, "/limited", "person.jpg", "up").0, 429, "the bucket of 3 drains across both gateways");

    let load = Load::start([a.url(""), b.url("")]);
    load.pass(0, 30);

    // Redis killed under load: both gateways notice, say so, and keep answering.
    drop(redis);
    let before = load.count();
    until_both(&[&a, &b], "down", Duration::from_secs(10));
    load.pass(before, 30);
    for g in [&a, &b] {
        let state = redis_state(g);
        assert_eq!(state["url"], format!("redis://127.0.0.1:{port}"));
        assert!(state["down_since"].as_u64().is_some(), "{state}");
        assert_eq!(metric(g, &up), Some(0.0));
        assert!(metric(g, "osprey_redis_local_total{used=\"cache\"}").is_some_and(|n| n > 0.0), "no cache lookups counted as local");
        // The buckets still limit, locally: a new client gets its burst on each gateway, then 429.
        let limited: Vec<u16> = (0..4).map(|_| send(g, "/limited", "person.jpg", "down").0).collect();
        assert_eq!(limited, [200, 200, 200, 429]);
        assert!(metric(g, "osprey_redis_local_total{used=\"ratelimit\"}").is_some_and(|n| n > 0.0));
    }

    // Started again on its port: both gateways are back on Redis within a few seconds.
    let down_served = load.count() - before;
    let _redis = redis_on(port).expect("redis-server restarted on its port");
    let back = until_both(&[&a, &b], "up", Duration::from_secs(5));
    eprintln!("both gateways back on redis {back:?} after it answered again");
    let before = load.count();
    load.pass(before, 30);
    assert_eq!(send(&a, "/classify", "horses.jpg", "back"), (200, "miss".into()));
    assert_eq!(send(&b, "/classify", "horses.jpg", "back"), (200, "hit".into()));
    assert_eq!((metric(&a, &up), metric(&b, &up)), (Some(1.0), Some(1.0)));

    let statuses = load.stop();
    eprintln!("{} requests under load, {} of them after redis was killed and before it was back", statuses.len(), down_served);
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests under load failed: {failed:?}", failed.len(), statuses.len());
}
