//! Hot reload under load: plugins and models replaced while a client keeps
//! sending requests, broken versions included; and the admin API.
//!
//! Each test builds its own folder (config, plugins, model versions) so it
//! can change files freely, and serves it with the file watcher on.

mod faults;
mod settings;
mod swap;

use std::path::Path;
use std::time::{Duration, Instant};

pub use osprey_tests::site::{model_bytes, sha256_prefix, variant, Site, TOKEN};
use osprey_tests::TestServer;
use serde_json::Value;

/// One detection request: status, `x-osprey-chain` header and answer.
pub fn detect(server: &TestServer) -> (u16, String, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(server.url("/v1/detect/fast"))
        .header("content-type", "image/png")
        .body(osprey_tests::image("chelsea.png"))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let chain = resp.headers().get("x-osprey-chain").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, chain, resp.json().unwrap())
}

pub fn admin(server: &TestServer, method: reqwest::Method, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::blocking::Client::new().request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Polls `check` until it holds; returns how long that took.
pub fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not seen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}
