//! Test harness: starts a real Osprey on 127.0.0.1:0 in this process, on the
//! default config and the real models that `make setup` fetched, finds the
//! test images, and makes shared fixture files race-free (`fixture`,
//! `unique_name`: tests are threads of one process, and test processes run
//! side by side). `process` runs `osprey serve` as a child; `netns` makes a
//! network of Linux namespaces for the multi-host tests.

pub mod netns;
pub mod proc;
pub mod process;
pub mod site;
pub mod streams;

#[cfg(test)]
mod one_build;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use osprey::plugin::Engine;
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
    let engine = Engine::for_server(&config.server).expect("engine");
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
    let engine = Engine::for_server(&config.server).expect("engine");
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

/// `PREFIX-PID-N`: a name no other caller gets, in this process (N counts up)
/// or in another (PID). The process id alone is not enough: tests are threads.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Makes the file at `path` unless it exists: `make` writes a temporary file
/// of this caller's own, which is then renamed into place. Threads asking for
/// the same path wait for one of them to make it; processes side by side may
/// each make it, and the last rename wins, whole. Nobody sees half a file.
pub fn fixture(path: &Path, make: impl FnOnce(&Path)) -> PathBuf {
    static MAKING: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> = Mutex::new(BTreeMap::new());
    let lock = MAKING.lock().unwrap_or_else(PoisonError::into_inner).entry(path.to_path_buf()).or_default().clone();
    // A poisoned lock is a `make` that panicked: its test failed; try again.
    let _making = lock.lock().unwrap_or_else(PoisonError::into_inner);
    if !path.exists() {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let tmp = Removed(path.with_file_name(format!(".{}.part", unique_name(&name))));
        make(&tmp.0);
        std::fs::rename(&tmp.0, path).unwrap_or_else(|e| panic!("{} -> {}: {e}", tmp.0.display(), path.display()));
    }
    path.to_path_buf()
}

/// A path removed when dropped (if it is still there): no `.part` is left
/// behind by a `make` that panicked.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    use super::*;

    /// Issue 16: `video::a_job_nobody_follows_is_cancelled` panicked at
    /// `rename` with NotFound. Two tests made the same video at once through
    /// one temporary file named by the process id: one renamed it away, and
    /// the other's rename found nothing. Sixteen threads ask at once here.
    #[test]
    fn fixture_made_by_tests_at_once_rename_not_found() {
        let dir = std::env::temp_dir().join(unique_name("osprey-fixture-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("video.mp4");
        let (made, start) = (AtomicUsize::new(0), Barrier::new(16));
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    start.wait();
                    let got = fixture(&path, |tmp| {
                        made.fetch_add(1, Ordering::SeqCst);
                        std::fs::write(tmp, b"half").unwrap();
                        std::thread::sleep(Duration::from_millis(50)); // ffmpeg at work
                        std::fs::write(tmp, b"the whole video").unwrap();
                    });
                    assert_eq!(std::fs::read(got).unwrap(), b"the whole video");
                });
            }
        });
        assert_eq!(made.load(Ordering::SeqCst), 1, "made once per process");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["video.mp4"], "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_make_that_panics_leaves_nothing_and_the_next_caller_makes_it() {
        let dir = std::env::temp_dir().join(unique_name("osprey-fixture-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("photo.jpg");
        let failed = std::thread::scope(|s| {
            s.spawn(|| fixture(&path, |tmp| {
                std::fs::write(tmp, b"half").unwrap();
                panic!("ffmpeg failed");
            }))
            .join()
        });
        assert!(failed.is_err());
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing left behind");
        fixture(&path, |tmp| std::fs::write(tmp, b"photo").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"photo");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
