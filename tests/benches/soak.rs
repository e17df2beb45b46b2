//! Soak: a real `osprey serve` on the default config, driven well past its
//! capacity on /v1/detect/fast for `OSPREY_SOAK_SECS` (default 600) over
//! loopback. Passes when every answer is a 2xx or a 429 and the server's RSS
//! at the end is within 10 % of its RSS after the first minute.
//!
//! Run by hand (not in CI): `cargo bench -p osprey-tests --bench soak`, or
//! `make soak`. Bodies are distinct so the result cache cannot absorb the load.

#[path = "serving/load.rs"]
#[allow(dead_code)] // the soak uses the server and RSS parts only
mod load;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections, each sending as fast as it is answered: more than the server
/// lets wait (`max_waiting`, 64), so the overload answers (429) are exercised.
const CONNECTIONS: usize = 96;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches for a list.
    }
    let secs: u64 = std::env::var("OSPREY_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let repo = osprey_tests::repo();
    let server = load::Server::start(&repo.join("target/release/osprey"), &repo.join("config/osprey.toml"));
    let url = format!("http://{}/v1/detect/fast", server.addr);
    let body = osprey_tests::image("chelsea.png");
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let serial = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let load = {
        let (statuses, stop, serial) = (statuses.clone(), stop.clone(), serial.clone());
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..CONNECTIONS)
                    .map(|_| tokio::spawn(connection(url.clone(), body.clone(), statuses.clone(), stop.clone(), serial.clone())))
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(10));
        let rss = rss_mib(server.pid());
        let counts = statuses.lock().unwrap().clone();
        eprintln!("soak {:>4}s  RSS {rss:.0} MiB  answers {counts:?}", started.elapsed().as_secs());
        samples.push((started.elapsed(), rss));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    report(&statuses.lock().unwrap(), &samples, server.peak_rss_mib(), secs);
}

async fn connection(url: String, body: Vec<u8>, statuses: Arc<Mutex<BTreeMap<u16, u64>>>, stop: Arc<AtomicBool>, serial: Arc<AtomicU64>) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).http1_only().build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let mut bytes = body.clone();
        bytes.extend_from_slice(format!("\n{}", serial.fetch_add(1, Ordering::Relaxed)).as_bytes());
        let status = match client.post(&url).header("content-type", "image/png").body(bytes).send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                let _ = resp.bytes().await;
                s
            }
            Err(_) => 0, // a transport error: counted as status 0, a failure
        };
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        if status == 429 {
            // A well-behaved client backs off a little before retrying.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn report(statuses: &BTreeMap<u16, u64>, samples: &[(Duration, f64)], peak: f64, secs: u64) {
    let total: u64 = statuses.values().sum();
    let bad: u64 = statuses.iter().filter(|(s, _)| !(200..300).contains(*s) && **s != 429).map(|(_, n)| n).sum();
    let after_warmup = samples.iter().find(|(t, _)| *t >= Duration::from_secs(60)).or(samples.first()).map_or(f64::NAN, |s| s.1);
    let end = samples.last().map_or(f64::NAN, |s| s.1);
    println!("| soak | value |\n|---|---|");
    println!("| duration | {secs} s, {CONNECTIONS} connections on /v1/detect/fast |");
    println!("| answers | {total} ({:.1}/s): {statuses:?} |", total as f64 / secs as f64);
    println!("| answers neither 2xx nor 429 | {bad} |");
    println!("| RSS after 1 min / at the end / peak | {after_warmup:.0} / {end:.0} / {peak:.0} MiB |");
    let flat = (end - after_warmup).abs() <= after_warmup * 0.10;
    println!("| verdict | {} |", if bad == 0 && flat { "pass" } else { "FAIL" });
    if bad > 0 || !flat {
        std::process::exit(1);
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(f64::NAN, |k| k / 1024.0)
}
