//! Test harness: starts a real Osprey on 127.0.0.1:0 in this process, on the
//! default config and the real models that `make setup` fetched, and finds the
//! test images.

pub mod process;
pub mod site;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use osprey::plugin::{Engine, SandboxLimits};
use osprey::{config, server, snapshot::Snapshot, state};

/// A running server; it lives as long as the test process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Its shared state: tests reload through it and read its metrics.
    pub shared: Arc<state::Shared>,
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
                None => state::Shared::new(snapshot, Some(path)).await.unwrap_or_else(|e| panic!("{e}")),
                Some(clock) => {
                    let cache = osprey::cache::Cache::memory(snapshot.config.cache_bytes);
                    state::Shared::with(snapshot, Some(path), cache, osprey::ratelimit::Limiter::memory(clock))
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

/// A server on a config made by the test, on listeners the test bound
/// (their ports are known before it starts: a CA must be told them). It stops
/// when dropped, as a restarted process would.
pub struct Running {
    pub shared: Arc<state::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = self.thread.take().map(|t| t.join());
    }
}

/// Builds the snapshot and serves `config` (TLS included) on `listener`,
/// with `redirect` as the plain listener; an error starting TLS is returned.
pub fn serve(config: config::Config, listener: std::net::TcpListener, redirect: Option<std::net::TcpListener>) -> Result<Running, String> {
    let engine = Engine::new(SandboxLimits::from(&config.server)).expect("engine");
    let tls = config.tls.clone();
    let snapshot = Snapshot::build(config, &engine, None).unwrap_or_else(|e| panic!("{e}"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let shared = state::Shared::new(snapshot, None).await.unwrap_or_else(|e| panic!("{e}"));
            let tls = match osprey::tls::start(&tls).await {
                Ok(tls) => tls,
                Err(e) => return ready_tx.send(Err(e.to_string())).expect("send"),
            };
            let tokio_listener = |l: std::net::TcpListener| {
                l.set_nonblocking(true).expect("nonblocking");
                tokio::net::TcpListener::from_std(l).expect("tokio listener")
            };
            let endpoint = server::Endpoint { listener: tokio_listener(listener), tls, redirect: redirect.map(tokio_listener) };
            ready_tx.send(Ok(shared.clone())).expect("send");
            server::serve(endpoint, shared, async move { let _ = stopped.await; }).await;
        });
    });
    let shared = ready_rx.recv().expect("server thread")?;
    Ok(Running { shared, stop: Some(stop), thread: Some(thread) })
}
