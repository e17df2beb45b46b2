//! Measurement shared by the serving and peers benches: the time window,
//! latency statistics, a real `osprey serve` child process, and an HTTP/1.1
//! load generator.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Warm-up then a fixed measuring window. A request counts when it *ends*
/// inside the window: at c=32 a YOLO request can take longer than the window
/// is long, so counting only those that also started inside it would
/// undercount throughput; the warm-up keeps cold starts out.
#[derive(Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

impl Window {
    /// `OSPREY_BENCH_SECS` (default 5) seconds measured after 1 s of warm-up.
    pub fn from_env() -> Window {
        let secs = std::env::var("OSPREY_BENCH_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(5.0);
        Window { warmup: Duration::from_secs(1), measure: Duration::from_secs_f64(secs) }
    }
}

/// Times of one worker, relative to a shared start.
pub struct Clock {
    from: Instant,
    to: Instant,
}

impl Clock {
    pub fn new(w: Window) -> Clock {
        let from = Instant::now() + w.warmup;
        Clock { from, to: from + w.measure }
    }

    pub fn running(&self) -> bool {
        Instant::now() < self.to
    }

    /// The latency of a call begun at `start`, if it ended inside the window.
    pub fn keep(&self, start: Instant) -> Option<Duration> {
        let end = Instant::now();
        (end >= self.from && end <= self.to).then(|| end - start)
    }
}

/// Throughput and latency of one (route, mode, concurrency) cell.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    pub fn of(mut latencies: Vec<Duration>, w: Window) -> Stats {
        latencies.sort();
        let pick = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest latency at or above the q quantile.
            let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i].as_secs_f64() * 1e3
        };
        Stats { per_sec: latencies.len() as f64 / w.measure.as_secs_f64(), p50_ms: pick(0.50), p99_ms: pick(0.99) }
    }
}

/// A real `osprey serve` on a free loopback port; killed when dropped.
pub struct Server {
    osprey: osprey_tests::process::Osprey,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the release binary and waits for its "listening on" line.
    pub fn start(binary: &Path, config: &Path) -> Server {
        let osprey = osprey_tests::process::Osprey::start_binary(binary, config, osprey_tests::process::ANY_PORT);
        Server { addr: osprey.addr, osprey }
    }

    /// Peak resident memory of the server so far (VmHWM), in MiB.
    #[allow(dead_code)] // used by serving.rs; peers.rs sums over a process tree
    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.osprey.pid())
    }

    /// The server's process id, for readings of its own in /proc.
    #[allow(dead_code)] // used by peers.rs, not by serving.rs
    pub fn pid(&self) -> u32 {
        self.osprey.pid()
    }
}

/// VmHWM of a process from /proc, in MiB (NaN where /proc has no answer).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

/// `concurrency` keep-alive connections, each POSTing `body` in a loop for
/// the window. One client thread: the 2-core machine has the server to run.
#[allow(dead_code)] // used by peers.rs; serving.rs sends distinct bodies only
pub fn http(url: &str, content_type: &str, body: &[u8], concurrency: usize, w: Window) -> Stats {
    load(url, content_type, body, concurrency, w, false)
}

/// As [`http`], but no two requests send the same bytes: each body is the
/// photo with a few bytes of its own after the image's end (after JPEG's
/// end-of-image marker or PNG's IEND chunk, where decoders stop reading), so
/// a result cache keyed by the body never hits.
pub fn http_distinct(url: &str, content_type: &str, body: &[u8], concurrency: usize, w: Window) -> Stats {
    load(url, content_type, body, concurrency, w, true)
}

fn load(url: &str, content_type: &str, body: &[u8], concurrency: usize, w: Window, distinct: bool) -> Stats {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let latencies = runtime.block_on(async {
        let clock = std::sync::Arc::new(Clock::new(w));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(connection(url.to_string(), content_type.to_string(), body.to_vec(), distinct, clock.clone())))
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("load worker"));
        }
        all
    });
    Stats::of(latencies, w)
}

/// Requests sent with distinct bodies by this process, all loads together.
static DISTINCT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One connection's loop; every answer must be a 200. When `distinct`, each
/// body ends in `\n<number>` after the image, a number no other request had.
async fn connection(url: String, content_type: String, body: Vec<u8>, distinct: bool, clock: std::sync::Arc<Clock>) -> Vec<Duration> {
    // A client of its own, with one idle connection: one keep-alive connection per worker.
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).http1_only().build().expect("client");
    let mut kept = Vec::new();
    while clock.running() {
        let mut bytes = body.clone();
        if distinct {
            let n = DISTINCT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes.extend_from_slice(format!("\n{n}").as_bytes());
        }
        let start = Instant::now();
        let resp = client.post(&url).header("content-type", &content_type).body(bytes).send().await;
        let resp = resp.unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status();
        let answer = resp.bytes().await.unwrap_or_else(|e| panic!("POST {url}: body: {e}"));
        assert_eq!(status, 200, "POST {url}: {}", String::from_utf8_lossy(&answer));
        kept.extend(clock.keep(start));
    }
    kept
}

/// One request's answer, to show where the server says its time went.
pub fn one(client: &reqwest::blocking::Client, url: &str, content_type: &str, body: &[u8]) -> serde_json::Value {
    let resp = client
        .post(url)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert_eq!(resp.status(), 200, "POST {url}");
    resp.json().expect("a JSON answer")
}

/// The median wall time of `runs` calls of `f`, in milliseconds.
#[allow(dead_code)] // each bench uses what it measures
pub fn median_ms(runs: usize, f: &mut dyn FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
