//! Two hosts sharing one Redis (Debian's redis-server, started here on
//! 127.0.0.1): an answer cached by one is a hit on the other, and a client's
//! token bucket is the same bucket on both.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use osprey_tests::TestServer;

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
                return (redis, port);
            }
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server exited on 5 ports in a row (is it installed and runnable?)");
}

fn pong(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = [0u8; 7];
    tcp.write_all(b"PING\r\n").is_ok() && tcp.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

fn host(dir: &std::path::Path, name: &str, port: u16) -> TestServer {
    let repo = osprey_tests::repo();
    let config = format!(
        r#"
[redis]
url = "redis://127.0.0.1:{port}"

[models.classifier]
file = "{repo}/models/efficientnet_lite3/model.onnx"
labels = "{repo}/models/efficientnet_lite3/labels.txt"
instances = 1
threads = 1

[plugins.image-prep]
file = "{repo}/target/wasm32-wasip2/plugin/image_prep.wasm"

[plugins.classify]
file = "{repo}/target/wasm32-wasip2/plugin/classify.wasm"

[[routes]]
path = "/classify"
cache_ttl_s = 60
rate_limit = {{ rate = 0.01, burst = 3 }}
stages = [
  {{ plugin = "image-prep", settings = {{ width = 280, height = 280, fit = "stretch", dtype = "u8" }} }},
  {{ plugin = "classify", settings = {{ model = "classifier", top = 2 }} }},
]
"#,
        repo = repo.display()
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
    let (a, b) = (host(&dir, "a", port), host(&dir, "b", port));
    // Host a computes and stores; host b finds the answer.
    assert_eq!(post(&a, "astronaut.png"), (200, "miss".into()));
    assert_eq!(post(&b, "astronaut.png"), (200, "hit".into()));
    // Three tokens for this client across both hosts (the burst), then 429 on either.
    assert_eq!(post(&b, "coffee.png").0, 200);
    let refused = client().post(a.url("/classify")).header("content-type", "image/png").body(osprey_tests::image("coffee.png")).send().unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}
