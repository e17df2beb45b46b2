//! Test harness: starts a real Osprey on 127.0.0.1:0 in this process, on the
//! default config and the real models that `make setup` fetched, and finds the
//! test images.

pub mod site;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use osprey::plugin::{Engine, SandboxLimits};
use osprey::{config, server, snapshot::Snapshot};

/// A running server; it lives as long as the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Its shared state: tests reload through it and read its metrics.
    pub shared: Arc<server::Shared>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// One server on the default config, shared by the tests of a test binary.
pub fn default_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| start(&repo().join("config/osprey.toml")))
}

/// Loads the config, builds the snapshot and serves it on a free port.
pub fn start(config_path: &Path) -> TestServer {
    start_with(config_path, None)
}

/// Like `start`, with the token buckets on a clock the test moves.
pub fn start_with(config_path: &Path, clock: Option<Box<dyn osprey::ratelimit::Clock>>) -> TestServer {
    let config = config::load(config_path).unwrap_or_else(|e| panic!("{e}\n(run `make setup` first)"));
    let engine = Engine::new(SandboxLimits::from(&config.server)).expect("engine");
    let snapshot = Snapshot::build(config, &engine, None).unwrap_or_else(|e| panic!("{e}"));
    let path = config_path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let shared = match clock {
                None => server::Shared::new(snapshot, Some(path)).await.unwrap_or_else(|e| panic!("{e}")),
                Some(clock) => {
                    let cache = osprey::cache::Cache::memory(snapshot.config.cache_bytes);
                    server::Shared::with(snapshot, Some(path), cache, osprey::ratelimit::Limiter::memory(clock))
                }
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
            tx.send((listener.local_addr().expect("local addr"), shared.clone())).expect("send addr");
            server::run(listener, shared, std::future::pending()).await;
        });
    });
    let (addr, shared) = rx.recv().expect("server started");
    TestServer { addr, shared }
}

/// A test image fetched by `make setup` (`$OSPREY_CACHE/images/NAME`).
pub fn image(name: &str) -> Vec<u8> {
    let path = osprey::nn::runtime::cache_dir().join("images").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `make setup` first)", path.display()))
}
